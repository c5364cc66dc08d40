"""The objective F(μ) = R(f_μ) + λ ∫ V d|μ|, its first variation F' and ∇F' (conventions: ``docs/conventions.md``).

Losses live in :mod:`wgflow.losses`; the risk's convex conjugate R* (for the JKO's dual) is built here from the loss's.

``R(f) = Σ_j ℓ(f(x_j), y_j)`` (``reduction="sum"``) or
its mean over j. The first variation at a neuron θ carrying a mass of sign s is

    F'(μ)(θ) = s Σ_j ∂ℓ(f_μ(x_j), y_j) φ_θ(x_j) + λ V(θ),

and a particle of the Wasserstein gradient flow moves with velocity −∇_θ F'(μ)(θ)
(projected on the tangent space when Θ is curved). For a width-m network
with masses ±1/m this is −m ∇_{θ_k} F: the mean-field clock.

The same code evaluates F on a particle cloud and on a grid of neurons: both
are a :class:`~wgflow.measure.Measure`.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.chunking import Chunking, blocks
from wgflow.errors import InputError, as_real, require
from wgflow.losses import Loss, get_loss
from wgflow.measure import Measure
from wgflow.units import Parameterisation, get_parameterisation

REDUCTIONS = ("sum", "mean")

# --------------------------------------------------------------------------- objective


class Objective(eqx.Module):
    """Data, unit, loss and weight decay: F, F', ∇F' on any :class:`Measure`.

    Build it with :func:`make_objective`, which validates the input.
    """

    X: Array
    y: Array
    lam: Array
    unit: Parameterisation = eqx.field(static=True)
    loss: Loss = eqx.field(static=True)
    reduction: str = eqx.field(static=True, default="sum")
    chunking: Chunking = eqx.field(static=True, default=Chunking())
    mesh: Any = eqx.field(static=True, default=None)  # a jax Mesh: atoms sharded over devices (wgflow.sharding)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    def outputs(self, mu: Measure, X: Array | None = None) -> Array:
        """``f_μ(x_j)`` for the training inputs (or for ``X``), in chunks as :attr:`chunking` says."""
        X = self.X if X is None else X
        if self.mesh is not None:
            from wgflow.sharding import sharded_outputs

            return sharded_outputs(self, mu, X)
        axis, size = self._plan(X.shape[0], mu)
        if axis == "neurons":
            pos, masses = blocks(mu.positions, mu.masses, size)

            def add(f, chunk):
                th, p = chunk
                return f + self._weighted_units(th, p, X), None

            return jax.lax.scan(add, jnp.zeros(X.shape[0], pos.dtype), (pos, masses))[0]
        if axis == "data":
            Xb, _ = blocks(X, jnp.zeros(X.shape[0], X.dtype), size)
            f = jax.lax.map(lambda Xc: self._weighted_units(mu.positions, mu.masses, Xc), Xb)
            return f.reshape(-1)[: X.shape[0]]
        return self._weighted_units(mu.positions, mu.masses, X)

    def _weighted_units(self, pos: Array, p: Array, X: Array) -> Array:
        """``Σ_k p_k φ_{θ_k}(x_j)`` for the rows x_j of X (neurons-first for the standard units, see
        :meth:`_activations`)."""
        if not self._closed_form():
            return self.unit.features(pos, X) @ p
        c = jnp.broadcast_to(jnp.asarray(self.unit.output_weight(pos), pos.dtype), p.shape)
        return (c * p) @ self.unit.activation(self.unit.direction(pos) @ X.T)

    def _plan(self, n: int, mu: Measure) -> tuple[str, int]:
        return self.chunking.resolve(n, mu.width, mu.dim, jnp.dtype(mu.positions.dtype).itemsize)

    def risk(self, f: Array) -> Array:
        """``R(f)`` for outputs ``f`` at the training inputs."""
        losses = self.loss(f, self.y)
        return jnp.sum(losses) if self.reduction == "sum" else jnp.mean(losses)

    def penalty(self, mu: Measure) -> Array:
        """``λ ∫ V d|μ|``."""
        return self.lam * jnp.sum(jnp.abs(mu.masses) * self.unit.regulariser(mu.positions))

    def value(self, mu: Measure) -> Array:
        """``F(μ)``."""
        return self.risk(self.outputs(mu)) + self.penalty(mu)

    def _scale(self) -> float:
        return 1.0 if self.reduction == "sum" else 1.0 / self.n

    def risk_conjugate(self, u: Array) -> Array:
        """``R*(u) = sup_f ⟨u, f⟩ − R(f) = c Σ_j ℓ*(u_j / c; y_j)`` (c = 1 for the sum, 1/n for the mean)."""
        c = self._scale()
        return c * jnp.sum(self.loss._conj()(u / c, self.y))

    def risk_conjugate_grad(self, u: Array) -> Array:
        """``∇R*(u)``: the outputs f at which u = ∇R(f)."""
        c = self._scale()
        return self.loss.conjugate_grad(u / c, self.y)

    def risk_conjugate_hess(self, u: Array) -> Array:
        """The diagonal of ``∇²R*(u)``."""
        c = self._scale()
        return self.loss.conjugate_hess(u / c, self.y) / c

    def risk_gap(self, f: Array, u: Array) -> Array:
        """``R(f) + R*(u) − ⟨u, f⟩ ≥ 0`` (zero iff u = ∇R(f))."""
        c = self._scale()
        return c * jnp.sum(self.loss.gap(f, u / c, self.y))

    def risk_gradient(self, mu: Measure) -> Array:
        """``r_j = ∂R/∂f(x_j)`` at ``f_μ``: the data weights of the first variation."""
        return jax.grad(self.risk)(self.outputs(mu))

    def first_variation(self, mu: Measure, points: Array, signs: Array | float = 1.0) -> Array:
        """``F'(μ)(θ)`` at ``points`` (K, D) for masses of the given sign(s)."""
        r = self.risk_gradient(mu)
        return signs * (r @ self.unit.features(points, self.X)) + self.lam * self.unit.regulariser(points)

    def first_variation_grad(self, mu: Measure, points: Array, signs: Array | float = 1.0) -> Array:
        """Euclidean ``∇_θ F'(μ)(θ)`` at ``points`` (K, D), with μ held fixed."""
        r = jax.lax.stop_gradient(self.risk_gradient(mu))
        signs = jnp.broadcast_to(jnp.asarray(signs, points.dtype), points.shape[:1])

        def potential(th):
            return jnp.sum(signs * (r @ self.unit.features(th, self.X))) + self.lam * jnp.sum(self.unit.regulariser(th))

        return jax.grad(potential)(points)

    def _closed_form(self) -> bool:
        """Whether the units are the standard ``c(θ) σ(v(θ)·x)`` (the unit does not override
        :meth:`~wgflow.units.Parameterisation.features` or ``preactivation``), so that their
        gradient has the closed form of :meth:`_unit_pull`."""
        cls = type(self.unit)
        return cls.features is Parameterisation.features and cls.preactivation is Parameterisation.preactivation

    def _activations(self, pos: Array, X: Array, need_value: bool = True) -> tuple[Array | None, Array]:
        """``σ(Zᵀ)`` (None unless ``need_value``) and ``σ'(Zᵀ)`` for ``Zᵀ = v(θ) Xᵀ`` (m × n: neurons
        first, so that a batch of runs stacks its neurons without a transpose, and every
        product below reads it in order), σ' as autodiff takes it (ReLU: σ'(0) = 0)."""
        Z = self.unit.direction(pos) @ X.T
        S, dS = jax.jvp(self.unit.activation.fn, (Z,), (jnp.ones_like(Z),))
        return (S if need_value else None), dS

    def _unit_pull(self, pos: Array, X: Array, S: Array | None, dS: Array, w: Array, signs: Array) -> Array:
        """``∇_θ s_k Σ_j w_j φ_{θ_k}(x_j)`` at each atom, in closed form from σ(Z) and σ'(Z):
        ``∂/∂v_k = s_k c_k Σ_j w_j σ'(z_jk) x_j`` and ``∂/∂c_k = s_k Σ_j w_j σ(z_jk)``, pulled back
        through θ ↦ (v(θ), c(θ)) (per atom, no n × m work). For a positively 1-homogeneous σ,
        ``σ(z) = z σ'(z)`` gives ``∂/∂c_k = s_k v_k · Σ_j w_j σ'(z_jk) x_j`` without σ(Z) (S may be None).
        Autodiff through Φ would build the n × m cotangent ``w sᵀ`` and reduce it twice; this is
        two products with X and one with w (tested against ``jax.grad`` in float64)."""
        unit = self.unit
        constant_c = type(unit).output_weight is Parameterisation.output_weight

        def vc(th):
            return unit.direction(th), jnp.broadcast_to(jnp.asarray(unit.output_weight(th), th.dtype), th.shape[:1])

        (V, c), pull = jax.vjp(vc, pos)
        Hv = (dS * w[None, :]) @ X  # (m, d): Σ_j w_j σ'(z_jk) x_j
        if constant_c:
            gc = jnp.zeros_like(c)
        elif unit.activation.homogeneity == 1 or S is None:
            gc = signs * jnp.sum(V * Hv, axis=1)
        else:
            gc = signs * (S @ w)
        return pull(((signs * c)[:, None] * Hv, gc))[0]

    def value_and_velocity(self, mu: Measure) -> tuple[Array, Array]:
        """``F(μ)`` and each particle's velocity ``−∇F'(μ)(θ_k)`` (tangent to Θ), in one pass.

        Unchunked: one forward pass through the unit matrix Φ (n × m) and one backward
        pass. Chunked (:class:`~wgflow.chunking.Chunking`): never the whole n × m matrix.
        """
        if self.mesh is not None:
            from wgflow.sharding import sharded_value_and_velocity

            return sharded_value_and_velocity(self, mu)
        axis, size = self._plan(self.n, mu)
        if axis == "neurons":
            R, r = jax.value_and_grad(self.risk)(self.outputs(mu))
            penalty, g = self.pullback(mu, r)
            return R + self.lam * penalty, self.unit.project_tangent(mu.positions, -g)
        if axis == "data":
            return self._value_and_velocity_data_chunks(mu, size)
        pos, p = mu.positions, mu.masses
        V, pull_reg = jax.vjp(self.unit.regulariser, pos)
        (g_reg,) = pull_reg(jnp.full_like(V, self.lam))
        s = mu.signs
        if self._closed_form():
            S, dS = self._activations(pos, self.X)
            assert S is not None  # asked for
            c = jnp.broadcast_to(jnp.asarray(self.unit.output_weight(pos), pos.dtype), p.shape)
            R, r = jax.value_and_grad(self.risk)((c * p) @ S)
            g_data = self._unit_pull(pos, self.X, S, dS, r, s)
        else:
            Phi, pull_features = jax.vjp(lambda th: self.unit.features(th, self.X), pos)
            R, r = jax.value_and_grad(self.risk)(Phi @ p)
            (g_data,) = pull_features(r[:, None] * s[None, :])
        F = R + self.lam * jnp.sum(jnp.abs(p) * V)
        return F, self.unit.project_tangent(pos, -(g_data + g_reg))

    def pullback(self, mu: Measure, r: Array) -> tuple[Array, Array]:
        """For fixed data weights r: (∫V d|μ|, ∇_θ[s_k Σ_j r_j φ_θ(x_j) + λ V(θ)] at each atom),
        in chunks as planned. With r = ∂R/∂f this is ∇F' at the atoms (before projection)."""
        axis, size = self._plan(self.n, mu)
        if axis == "none":
            pos, p = mu.positions, mu.masses
            if self._closed_form():
                S, dS = self._activations(pos, self.X, need_value=self.unit.activation.homogeneity != 1)
                g = self._unit_pull(pos, self.X, S, dS, r, mu.signs)
            else:
                _, pull = jax.vjp(lambda th: self.unit.features(th, self.X), pos)
                (g,) = pull(r[:, None] * mu.signs[None, :])
            V, pull_reg = jax.vjp(self.unit.regulariser, pos)
            (g_reg,) = pull_reg(jnp.full_like(V, self.lam))
            return jnp.sum(jnp.abs(p) * V), g + g_reg
        if axis == "data":
            pos, p = mu.positions, mu.masses
            Xb, weight = blocks(self.X, jnp.ones((self.n,), self.X.dtype), size)
            rb, _ = blocks(r, weight.reshape(-1)[: self.n], size)

            def block(g, chunk):
                Xc, rc, wc = chunk
                if self._closed_form():
                    S, dS = self._activations(pos, Xc, need_value=self.unit.activation.homogeneity != 1)
                    return g + self._unit_pull(pos, Xc, S, dS, wc * rc, mu.signs), None
                _, pull = jax.vjp(lambda th: self.unit.features(th, Xc), pos)
                return g + pull((wc * rc)[:, None] * mu.signs[None, :])[0], None

            g = jax.lax.scan(block, jnp.zeros_like(pos), (Xb, rb, weight))[0]
            V, pull_reg = jax.vjp(self.unit.regulariser, pos)
            return jnp.sum(jnp.abs(p) * V), g + pull_reg(jnp.full_like(V, self.lam))[0]
        pos, masses = blocks(mu.positions, mu.masses, size)

        def chunk_grad(chunk):
            th, p = chunk
            s = jnp.where(p < 0, -1.0, 1.0).astype(th.dtype)
            if self._closed_form():
                S, dS = self._activations(th, self.X, need_value=self.unit.activation.homogeneity != 1)
                V, pull_reg = jax.vjp(self.unit.regulariser, th)
                g = self._unit_pull(th, self.X, S, dS, r, s) + pull_reg(jnp.full_like(V, self.lam))[0]
                return g, jnp.sum(jnp.abs(p) * V)

            def potential(th):
                V = self.unit.regulariser(th)
                return jnp.sum(s * (r @ self.unit.features(th, self.X))) + self.lam * jnp.sum(V), V

            g, V = jax.grad(potential, has_aux=True)(th)
            return g, jnp.sum(jnp.abs(p) * V)

        g, penalties = jax.lax.map(chunk_grad, (pos, masses))
        return jnp.sum(penalties), g.reshape(-1, g.shape[-1])[: mu.width]

    def _value_and_velocity_data_chunks(self, mu: Measure, size: int) -> tuple[Array, Array]:
        """One pass over chunks of data, accumulating the gradient (R is separable: r_j needs
        only f_j). Memory O(size · m)."""
        pos, p = mu.positions, mu.masses
        Xb, weight = blocks(self.X, jnp.ones((self.n,), self.X.dtype), size)
        yb, _ = blocks(self.y, weight.reshape(-1)[: self.n], size)
        scale = 1.0 if self.reduction == "sum" else 1.0 / self.n
        s = mu.signs

        def block(g, chunk):
            Xc, yc, wc = chunk
            if self._closed_form():
                S, dS = self._activations(pos, Xc)
                assert S is not None  # asked for
                c = jnp.broadcast_to(jnp.asarray(self.unit.output_weight(pos), pos.dtype), p.shape)
                losses, dl = jax.vmap(jax.value_and_grad(self.loss.fn))((c * p) @ S, yc)
                return g + self._unit_pull(pos, Xc, S, dS, wc * dl * scale, s), jnp.sum(wc * losses) * scale
            Phi, pull = jax.vjp(lambda th: self.unit.features(th, Xc), pos)
            losses, dl = jax.vmap(jax.value_and_grad(self.loss.fn))(Phi @ p, yc)
            (gc,) = pull((wc * dl * scale)[:, None] * s[None, :])
            return g + gc, jnp.sum(wc * losses) * scale

        g, risks = jax.lax.scan(block, jnp.zeros_like(pos), (Xb, yb, weight))
        V, pull_reg = jax.vjp(self.unit.regulariser, pos)
        (g_reg,) = pull_reg(jnp.full_like(V, self.lam))
        F = jnp.sum(risks) + self.lam * jnp.sum(jnp.abs(p) * V)
        return F, self.unit.project_tangent(pos, -(g + g_reg))

    def velocity(self, mu: Measure) -> Array:
        return self.value_and_velocity(mu)[1]


def as_float_array(a, field: str, dtype=None) -> np.ndarray:
    try:
        out = np.asarray(a, dtype=dtype if dtype is not None else None)
    except (TypeError, ValueError) as exc:
        raise InputError(field, f"cannot be read as a numeric array ({exc})") from None
    if out.dtype.kind not in "fiu":
        raise InputError(field, f"must be numeric, got dtype {out.dtype}")
    if out.dtype.kind != "f":
        out = out.astype(np.float64 if jax.config.jax_enable_x64 else np.float32)  # type: ignore[attr-defined]  # a JAX config flag, set dynamically
    return out


def validate_data(X, y) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and finiteness of (X, y); returns float arrays of one dtype."""
    X = as_float_array(X, "data.X")
    y = as_float_array(y, "data.y")
    require(X.ndim == 2, "data.X", f"must be a 2-D array (n, d), got shape {X.shape}", "reshape X to (n, d)")
    require(X.shape[0] > 0 and X.shape[1] > 0, "data.X", f"is empty (shape {X.shape})", "give at least one sample")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    require(y.ndim == 1, "data.y", f"must be a 1-D array (n,), got shape {y.shape}", "give one scalar label per row of X")
    require(
        y.shape[0] == X.shape[0],
        "data.y",
        f"has {y.shape[0]} labels for {X.shape[0]} inputs",
        "give one label per row of X",
    )
    for name, a in (("data.X", X), ("data.y", y)):
        bad = ~np.isfinite(a)
        if bad.any():
            idx = np.argwhere(bad)[0].tolist()
            raise InputError(name, f"contains {int(bad.sum())} NaN/inf values (first at index {idx})", "clean or drop those rows")
    dtype = np.result_type(X.dtype, y.dtype)
    return X.astype(dtype), y.astype(dtype)


def make_objective(
    X,
    y,
    parameterisation: str | Parameterisation = "lifted",
    activation: str = "relu",
    loss: str | Loss = "square",
    lam: float = 0.0,
    reduction: str = "sum",
    chunking: Chunking | None = None,
) -> Objective:
    """Validated :class:`Objective`; errors name the bad field before any compute.

    ``chunking`` (default: automatic, see :class:`~wgflow.chunking.Chunking`) says how the
    n × m unit matrix is cut when it is large; the numbers do not depend on it (to rounding).
    """
    X, y = validate_data(X, y)
    unit = get_parameterisation(parameterisation, activation)
    loss = get_loss(loss)
    require(reduction in REDUCTIONS, "reduction", f"unknown reduction {reduction!r}", f"use one of {list(REDUCTIONS)}")
    lam = as_real(lam, "lam", allow_zero=True)
    if loss.labels == "pm1":
        require(
            bool(np.all(np.isin(y, (-1.0, 1.0)))),
            "data.y",
            f"the {loss.name} loss needs labels in {{-1, +1}}",
            "map the classes to -1 and +1",
        )
    chunking = Chunking() if chunking is None else chunking
    require(isinstance(chunking, Chunking), "chunking", "must be a wgflow.chunking.Chunking", value=chunking)
    return Objective(jnp.asarray(X), jnp.asarray(y), jnp.asarray(lam, dtype=X.dtype), unit, loss, reduction, chunking)
