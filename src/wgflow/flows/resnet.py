"""Infinitely deep and wide mean-field ResNets and their conditional Wasserstein gradient flow.

Barboni, Peyré & Vialard (seed 003; DESIGN §2 "Conditional flow"). Conventions
(all restated with derivations in ``docs/resnet.md``):

- A neuron is ω = (u, w, b) ∈ R^d × R^d × R; the residual of a measure ν is
  ``F_ν(x) = ∫ u σ(w·x + b) dν``.
- :class:`ResNetParams` holds S layers of M neurons (masses 1/M): arrays
  ``U, W`` (S, M, d) and ``B`` (S, M). Layer k is the conditional measure
  μ(·|s) on ``s ∈ [k/S, (k+1)/S)`` (piecewise constant in depth).
- Discrete ResNet: ``x_0 = x``, ``x_{k+1} = x_k + (1/S) F_{μ_k}(x_k)``; the risk is
  ``L = (1/2N) Σᵢ |xⁱ_S − yⁱ|²``. This is the forward-Euler scheme, step 1/S, of the
  NODE ``dx/ds = F_{μ(·|s)}(x)`` (:func:`node_forward`, solved by diffrax).
- Adjoint states ``pⁱ_k = N ∂L/∂xⁱ_k`` (so ``pⁱ_S = xⁱ_S − yⁱ``), computed backward:
  ``p_k = p_{k+1} + (1/S) (∂F_{μ_k}/∂x (x_k))ᵀ p_{k+1}``.
- Adjoint gradient of seed 003 at layer k (x at the layer's input, p at its output):
  ``∇L[μ](s_k, ω) = (1/N) Σᵢ (σ(zⁱ) pⁱ_{k+1}, σ'(zⁱ)(u·pⁱ_{k+1}) xⁱ_k, σ'(zⁱ)(u·pⁱ_{k+1}))``,
  ``zⁱ = w·xⁱ_k + b``. Exactly (tested to 1e-10): ``∇L[μ](s_k, ω_{k,m}) = S·M ∂L/∂ω_{k,m}``.
- Conditional flow: each neuron moves with ``−∇L[μ](s, ω)``; explicit steps
  ``ω ← ω − η ∇L[μ](s, ω)`` are plain gradient descent with learning rate ``η·S·M``.
  The clock is the flow's time t (Σ η), whatever S and M.
- ``‖∇L[μ]‖²_{L²(μ)} = (1/S) Σ_k (1/M) Σ_m |∇L[μ](s_k, ω_{k,m})|²`` and ``dL/dt = −‖∇L‖²``.
- ``λ₀ = (1/S) Σ_k λ_min(K_k)``, ``K_k(i, j) = (1/M) Σ_m σ(w_m·xⁱ_k + b_m) σ(w_m·xʲ_k + b_m)``.
- PL at initialisation (u = 0): ``‖∇L‖² ≥ (2/N) λ₀ L`` (:data:`PL_CONSTANT`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError, require, require_positive
from wgflow.flows.schedules import Schedule, step_sizes
from wgflow.flows.trajectory import SaveAt, Trajectory, integrate
from wgflow.init import gaussian as _gaussian
from wgflow.init import heavy_tailed as _heavy_tailed
from wgflow.init import uniform as _uniform
from wgflow.units import Activation, get_activation

INITS = ("gaussian", "heavy_tailed", "random_features")
FEATURE_LAWS = ("gaussian", "heavy_tailed")
INTERPOLATIONS = ("piecewise_constant", "linear")


def PL_CONSTANT(N: int) -> float:
    """The constant c of ``‖∇L‖²_{L²(μ₀)} ≥ c λ₀ L(μ₀)`` at an initialisation with u = 0: ``c = 2/N``."""
    return 2.0 / N


# --------------------------------------------------------------------------- parameters


class ResNetParams(eqx.Module):
    """S layers of M neurons ω = (u, w, b): ``U, W`` of shape (S, M, d), ``B`` of shape (S, M).

    Every neuron has mass 1/M in its layer; layer k is μ(·|s) for ``s ∈ [k/S, (k+1)/S)``.
    A stack of such records (leading axis: save index) is what a run's snapshots hold.
    """

    U: Array
    W: Array
    B: Array

    @property
    def depth(self) -> int:
        return self.U.shape[-3]

    @property
    def width(self) -> int:
        return self.U.shape[-2]

    @property
    def dim(self) -> int:
        return self.U.shape[-1]

    def positions(self) -> Array:
        """Neuron positions ω = (u, w, b) ∈ R^{2d+1}, shape (..., S, M, 2d+1)."""
        return jnp.concatenate([self.U, self.W, self.B[..., None]], axis=-1)

    @classmethod
    def from_positions(cls, positions: Array) -> "ResNetParams":
        """Inverse of :meth:`positions`."""
        D = positions.shape[-1]
        require(D % 2 == 1 and D >= 3, "positions", f"last axis must be 2d + 1, got {D}")
        d = (D - 1) // 2
        return cls(positions[..., :d], positions[..., d : 2 * d], positions[..., 2 * d])

    def layer(self, k: int) -> tuple[Array, Array, Array]:
        return self.U[k], self.W[k], self.B[k]

    def duplicate_width(self, times: int = 2) -> "ResNetParams":
        """Each neuron repeated ``times`` times in its layer: the same measure at width ``times·M``."""
        return ResNetParams(*(jnp.repeat(a, times, axis=1) for a in (self.U, self.W, self.B)))

    def duplicate_depth(self, times: int = 2) -> "ResNetParams":
        """Each layer repeated ``times`` times: the same μ(·|s) for every s, depth ``times·S``."""
        return ResNetParams(*(jnp.repeat(a, times, axis=0) for a in (self.U, self.W, self.B)))

    def astype(self, dtype) -> "ResNetParams":
        return ResNetParams(*(jnp.asarray(a, dtype) for a in (self.U, self.W, self.B)))

    def to_numpy(self) -> "ResNetParams":
        return ResNetParams(*(np.asarray(a) for a in (self.U, self.W, self.B)))


def _check_params(params: Any, d: int | None = None, field: str = "params") -> None:
    if not isinstance(params, ResNetParams):
        raise InputError(field, f"must be a ResNetParams, got {type(params).__name__}", "build it with init_resnet(...)")
    U, W, B = (np.shape(a) for a in (params.U, params.W, params.B))
    require(len(U) == 3 and U == W, f"{field}.U/W", f"must both have shape (S, M, d), got {U} and {W}")
    require(B == U[:2], f"{field}.B", f"must have shape (S, M) = {U[:2]}, got {B}")
    require(U[0] > 0 and U[1] > 0 and U[2] > 0, field, f"S, M and d must be >= 1, got shape {U}")
    if d is not None:
        require(
            U[2] == d,
            f"{field}.dim",
            f"the model acts on R^{U[2]} but the data live in R^{d}",
            f"initialise the model with d = {d} (or embed the data in R^{U[2]})",
        )
    for name in ("U", "W", "B"):
        require(bool(np.all(np.isfinite(np.asarray(getattr(params, name))))), f"{field}.{name}", "contains NaN/inf", "start from finite parameters")


def _positive_int(v, field: str) -> None:
    require(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0,
        field,
        "must be a positive integer",
        f"set {field} >= 1",
        v,
    )


def init_resnet(
    key: Array,
    S: int,
    M: int,
    d: int,
    *,
    init: str = "gaussian",
    rho: float = 1.0,
    beta: float = 1.0,
    feature_law: str = "gaussian",
    dtype=None,
) -> ResNetParams:
    """Initial measure of seed 003: ``u = 0``, ``b ~ U[0, π]`` and

    - ``"gaussian"``: w with density ∝ exp(−ρ|w|²), i.e. N(0, I/(2ρ)), drawn independently
      for every layer and neuron (M i.i.d. samples per layer approximate the law μ^w at each s);
    - ``"heavy_tailed"``: w with density ∝ (1 + |w|²)^{−(d/2+β)} (``wgflow.init.heavy_tailed``),
      independently per layer and neuron;
    - ``"random_features"``: M samples (w_m, b_m) drawn once from ``feature_law``
      (``"gaussian"`` with ρ or ``"heavy_tailed"`` with β) and shared by every layer, so that
      μ₀(·|s) = (1/M) Σ_m δ_{(0, w_m, b_m)} for all s — the finite-feature case of seed 003.
      The features still move under the flow unless ``freeze_features=True`` in the objective.
    """
    _positive_int(S, "S")
    _positive_int(M, "M")
    _positive_int(d, "d")
    require(init in INITS, "init", f"unknown initialisation {init!r}", f"use one of {list(INITS)}")
    require(feature_law in FEATURE_LAWS, "feature_law", f"unknown law {feature_law!r}", f"use one of {list(FEATURE_LAWS)}")
    require_positive(rho, "rho")
    require_positive(beta, "beta")
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    law = init if init != "random_features" else feature_law
    n = M if init == "random_features" else S * M
    w, b = _sample_features(key, 1.0 / math.sqrt(2.0 * rho), n, d, law, float(beta), dtype)
    if init == "random_features":
        W = jnp.broadcast_to(w[None], (S, M, d))
        B = jnp.broadcast_to(b[None], (S, M))
    else:
        W, B = w.reshape(S, M, d), b.reshape(S, M)
    return ResNetParams(jnp.zeros((S, M, d), dtype), jnp.asarray(W), jnp.asarray(B))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _sample_features(key: Array, std: Array, n: int, d: int, law: str, beta: float, dtype) -> tuple[Array, Array]:
    """n samples of (w, b): w from ``law`` (``wgflow.init`` samplers), b ~ U[0, π]; one compiled program."""
    kw, kb = jax.random.split(key)
    if law == "gaussian":
        w = _gaussian(kw, n, d, std=1.0, dtype=dtype) * std.astype(dtype)
    else:
        w = _heavy_tailed(kw, n, d, beta, dtype=dtype)
    return w, _uniform(kb, (n,), 0.0, math.pi, dtype=dtype)


# --------------------------------------------------------------------------- objective


class ResNetObjective(eqx.Module):
    """Training pairs ``X, Y`` (N, d) and the activation σ; build it with :func:`make_resnet_objective`.

    ``freeze_features=True`` keeps (w, b) fixed (only u moves): the random-features model.
    """

    X: Array
    Y: Array
    activation: Activation = eqx.field(static=True)
    freeze_features: bool = eqx.field(static=True, default=False)

    @property
    def N(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


def make_resnet_objective(X, Y, activation: str | Activation = "cos", *, freeze_features: bool = False, dtype=None) -> ResNetObjective:
    """Validated :class:`ResNetObjective`: X and Y are (N, d), finite, of one float dtype."""
    arrays = []
    for name, a in (("data.X", X), ("data.Y", Y)):
        try:
            a = np.asarray(a)
        except (TypeError, ValueError) as exc:
            raise InputError(name, f"cannot be read as a numeric array ({exc})") from None
        require(a.dtype.kind in "fiu", name, f"must be numeric, got dtype {a.dtype}")
        require(a.ndim == 2, name, f"must be a 2-D array (N, d), got shape {a.shape}", "reshape to (N, d)")
        require(a.shape[0] > 0 and a.shape[1] > 0, name, f"is empty (shape {a.shape})", "give at least one sample")
        bad = ~np.isfinite(a)
        if bad.any():
            idx = np.argwhere(bad)[0].tolist()
            raise InputError(name, f"contains {int(bad.sum())} NaN/inf values (first at index {idx})", "clean or drop those rows")
        arrays.append(a)
    X, Y = arrays
    require(
        X.shape == Y.shape,
        "data.Y",
        f"targets of shape {Y.shape} for inputs of shape {X.shape}; a ResNet maps R^d to R^d",
        "give one target in R^d per input (Y.shape == X.shape)",
    )
    sigma = get_activation(activation)
    if dtype is None:
        dtype = np.result_type(X.dtype, Y.dtype)
        if dtype.kind != "f":
            dtype = jnp.result_type(float)
    return ResNetObjective(jnp.asarray(X, dtype), jnp.asarray(Y, dtype), sigma, bool(freeze_features))


# --------------------------------------------------------------------------- activations on the hot path


def _cos_sin_f32(x: Array) -> tuple[Array, Array]:
    """cos and sin of a float32 array, vectorised: Cody–Waite reduction by π/2 and Cephes' minimax
    polynomials on [−π/4, π/4]. Max error ≈ 1e-7 for |x| ≤ 1e5 (tested). XLA's CPU cos/sin are
    not vectorised and cost ~10× the two matrix products of a layer; this is why it exists."""
    f = np.float32
    j = jnp.round(x * f(2 / np.pi))
    r = x - j * f(1.5703125)
    r = r - j * f(4.837512969970703125e-4)
    r = r - j * f(7.54978995489188216e-8)
    r2 = r * r
    sn = r + r * r2 * (f(-1.6666654611e-1) + r2 * (f(8.3321608736e-3) + r2 * f(-1.9515295891e-4)))
    cs = f(1) - f(0.5) * r2 + r2 * r2 * (f(4.166664568298827e-2) + r2 * (f(-1.388731625493765e-3) + r2 * f(2.443315711809948e-5)))
    q = j.astype(jnp.int32) & 3
    cos = jnp.where(q == 0, cs, jnp.where(q == 1, -sn, jnp.where(q == 2, -cs, sn)))
    sin = jnp.where(q == 0, sn, jnp.where(q == 1, cs, jnp.where(q == 2, -sn, -cs)))
    return cos, sin


@jax.custom_jvp
def _fast_cos(x: Array) -> Array:
    return _cos_sin_f32(x)[0]


@_fast_cos.defjvp
def _fast_cos_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    c, s = _cos_sin_f32(x)
    return c, -s * t


def _is_fast_cos(sigma: Activation, dtype) -> bool:
    return sigma.fn is jnp.cos and jnp.dtype(dtype) == jnp.float32


def _act(sigma: Activation, Z: Array) -> Array:
    """σ(Z); the registered cos in float32 takes the vectorised path."""
    return _fast_cos(Z) if _is_fast_cos(sigma, Z.dtype) else sigma(Z)


def _act_and_slope(sigma: Activation, Z: Array) -> tuple[Array, Array]:
    """(σ(Z), σ'(Z)) in one pass (σ' from JAX's derivative of σ, e.g. σ'(0) = 0 for ReLU)."""
    if _is_fast_cos(sigma, Z.dtype):
        c, s = _cos_sin_f32(Z)
        return c, -s
    return jax.jvp(sigma, (Z,), (jnp.ones_like(Z),))


# --------------------------------------------------------------------------- forward, adjoint


def _residual(sigma, U, W, B, x):
    """``F_ν(x) = (1/M) Σ_m u_m σ(w_m·x + b_m)`` for a layer of M neurons; x is (N, d)."""
    return _act(sigma, x @ W.T + B) @ U / U.shape[0]


@eqx.filter_jit
def resnet_states(params: ResNetParams, X: Array, activation: str | Activation = "cos") -> Array:
    """All states ``x_0 = X, …, x_S`` of the discrete ResNet, shape (S + 1, N, d)."""
    sigma = get_activation(activation)
    S = params.depth

    def body(x, layer):
        U, W, B = layer
        x_next = x + _residual(sigma, U, W, B, x) / S
        return x_next, x

    xS, xs = jax.lax.scan(body, X, (params.U, params.W, params.B))
    return jnp.concatenate([xs, xS[None]], axis=0)


@eqx.filter_jit
def resnet_forward(params: ResNetParams, X: Array, activation: str | Activation = "cos") -> Array:
    """``ResNet_μ(X) = x_S``, shape (N, d)."""
    return resnet_states(params, X, activation)[-1]


@eqx.filter_jit
def resnet_loss(params: ResNetParams, X: Array, Y: Array, activation: str | Activation = "cos") -> Array:
    """``L = (1/2N) Σᵢ |xⁱ_S − yⁱ|²`` (plain autograd-differentiable reference)."""
    r = resnet_forward(params, X, activation) - Y
    return 0.5 * jnp.sum(r * r) / X.shape[0]


class Adjoint(eqx.Module):
    """One forward–backward pass: the risk, the states x_k and adjoints p_k (S + 1, N, d), and
    ``gradient`` = ∇L[μ](s_k, ω_{k,m}) as a :class:`ResNetParams` (the velocity is its negative)."""

    loss: Array
    states: Array
    adjoints: Array
    gradient: ResNetParams


@eqx.filter_jit
def adjoint_gradient(objective: ResNetObjective, params: ResNetParams) -> Adjoint:
    """Seed 003's adjoint gradient by an explicit backward pass (not autograd).

    With ``pⁱ_k = N ∂L/∂xⁱ_k``: ``p_S = x_S − Y`` and, with ``A = σ'(Z) ⊙ (p_{k+1} Uᵀ)`` (N, M)
    and ``Z = x_k Wᵀ + b`` (computed transposed, see below), the layer Jacobian's transpose gives
    ``p_k = p_{k+1} + A W / (S M)``. The gradient per neuron is
    ``(σ(Z)ᵀ p_{k+1}, Aᵀ x_k, Σᵢ A) / N``.
    """
    sigma = objective.activation
    X, Y = objective.X, objective.Y
    N = X.shape[0]
    S, M = params.depth, params.width
    states = resnet_states(params, X, sigma)
    r = states[-1] - Y
    loss = 0.5 * jnp.sum(r * r) / N

    # Layouts (XLA:CPU runs a contraction over the lhs's first axis ~3× slower than the others):
    # activations neuron-major (M, N), adjoints transposed (d, N), Wᵀ precomputed (S, d, M);
    # then every product below is a plain or rhs-transposed contraction.
    def body(pt_next, xs):
        U, W, Wt, B, x = xs
        Zt = W @ x.T + B[:, None]  # Zᵀ, (M, N)
        s, ds = _act_and_slope(sigma, Zt)
        At = ds * (U @ pt_next)  # Aᵀ, (M, N)
        gU = s @ pt_next.T / N
        if objective.freeze_features:
            gW, gB = jnp.zeros_like(W), jnp.zeros_like(B)
        else:
            gW, gB = At @ x / N, jnp.sum(At, axis=1) / N
        pt = pt_next + (Wt @ At) / (S * M)  # (A W)ᵀ
        return pt, (pt_next, gU, gW, gB)

    Wt = jnp.swapaxes(params.W, 1, 2)
    pt0, (pts, gU, gW, gB) = jax.lax.scan(body, r.T, (params.U, params.W, Wt, params.B, states[:-1]), reverse=True)
    adjoints = jnp.swapaxes(jnp.concatenate([pt0[None], pts], axis=0), 1, 2)
    return Adjoint(loss, states, adjoints, ResNetParams(gU, gW, gB))


def grad_norm_sq(gradient: ResNetParams) -> Array:
    """``‖∇L[μ]‖²_{L²(μ)}``: the mean over layers and neurons of ``|∇L[μ](s_k, ω)|²``."""
    sq = jnp.sum(gradient.U**2, axis=-1) + jnp.sum(gradient.W**2, axis=-1) + gradient.B**2
    return jnp.mean(sq)


# --------------------------------------------------------------------------- kernels and λ₀


@eqx.filter_jit
def layer_kernels(params: ResNetParams, X: Array, activation: str | Activation = "cos", states: Array | None = None) -> Array:
    """``K_k(i, j) = (1/M) Σ_m σ(w_m·xⁱ_k + b_m) σ(w_m·xʲ_k + b_m)`` at the states x_k; shape (S, N, N)."""
    sigma = get_activation(activation)
    if states is None:
        states = resnet_states(params, X, sigma)

    def one(x, W, B):
        Phi = _act(sigma, x @ W.T + B)
        return Phi @ Phi.T / W.shape[0]

    return jax.vmap(one)(states[:-1], params.W, params.B)


@eqx.filter_jit
def layer_lambda_min(params: ResNetParams, X: Array, activation: str | Activation = "cos", states: Array | None = None) -> Array:
    """``λ_min(K_k)`` for each layer, shape (S,)."""
    return jnp.linalg.eigvalsh(layer_kernels(params, X, activation, states))[:, 0]


@eqx.filter_jit
def lambda0(params: ResNetParams, X: Array, activation: str | Activation = "cos") -> Array:
    """``λ₀ = ∫ λ_min(K_{μ(·|s)}(x(s))) ds = (1/S) Σ_k λ_min(K_k)`` (seed 003's theorem)."""
    return jnp.mean(layer_lambda_min(params, X, activation))


@eqx.filter_jit
def lambda_min_mean_kernel(params: ResNetParams, X: Array, activation: str | Activation = "cos") -> Array:
    """``λ_min((1/S) Σ_k K_k)`` ≥ λ₀: the rate of the linearised (lazy) flow is 2·this/N."""
    return jnp.linalg.eigvalsh(jnp.mean(layer_kernels(params, X, activation), axis=0))[0]


# --------------------------------------------------------------------------- conditional OT distance


@dataclasses.dataclass(frozen=True)
class DCOT:
    """``D_COT(μ, μ')`` with ``D² = (1/S) Σ_k W₂²(μ(·|s_k), μ'(·|s_k))``.

    ``identity``: the coupling that matches neurons by index (an upper bound, O(SM)).
    ``exact``: each layer's W₂² by POT's ``ot.emd2`` (exact for uniform particle measures);
    ``None`` if not asked for. ``per_layer_*``: the squared W₂ of each layer.
    """

    identity: float
    exact: float | None
    per_layer_identity: np.ndarray
    per_layer_exact: np.ndarray | None


def dcot(params: ResNetParams, reference: ResNetParams, *, exact: bool = True) -> DCOT:
    """Conditional OT distance between two particle ResNets of the same depth (widths may differ)."""
    _check_params(params, field="params")
    _check_params(reference, d=params.dim, field="reference")
    require(
        params.depth == reference.depth,
        "reference.depth",
        f"layers differ in number ({params.depth} vs {reference.depth}); D_COT compares μ(·|s) at the same s",
        "duplicate_depth() the shallower one to a common depth",
    )
    A = np.asarray(params.positions(), dtype=np.float64)
    B = np.asarray(reference.positions(), dtype=np.float64)
    if A.shape[1] == B.shape[1]:
        ident = np.mean(np.sum((A - B) ** 2, axis=-1), axis=1)
    else:  # widths differ: no index matching; the product coupling is still an upper bound
        ident = np.array([np.mean(np.sum((a[:, None] - b[None]) ** 2, axis=-1)) for a, b in zip(A, B)])
    ex = None
    if exact:
        import ot

        ex = np.empty(A.shape[0])
        for k in range(A.shape[0]):
            a = np.full(A.shape[1], 1.0 / A.shape[1])
            b = np.full(B.shape[1], 1.0 / B.shape[1])
            C = ot.dist(A[k], B[k])  # squared Euclidean
            ex[k] = ot.emd2(a, b, C, numItermax=10_000_000)
        ex = np.maximum(ex, 0.0)
    return DCOT(
        identity=float(np.sqrt(np.mean(ident))),
        exact=None if ex is None else float(np.sqrt(np.mean(ex))),
        per_layer_identity=ident,
        per_layer_exact=ex,
    )


# --------------------------------------------------------------------------- NODE (continuous depth)


def piecewise_constant(params: ResNetParams) -> Callable[[Array], tuple[Array, Array, Array]]:
    """Depth profile ``s ↦ layer ⌊sS⌋`` (clipped to [0, S−1]): μ(·|s) constant on [k/S, (k+1)/S)."""
    S = params.depth

    def profile(s):
        k = jnp.clip(jnp.floor(s * S).astype(jnp.int32), 0, S - 1)
        return params.U[k], params.W[k], params.B[k]

    return profile


def linear_interpolation(params: ResNetParams) -> Callable[[Array], tuple[Array, Array, Array]]:
    """Depth profile interpolating neuron positions linearly in s, neurons matched by index.

    Layer k sits at ``s_k = k/S`` (where the Euler step evaluates it); constant on
    ``[(S−1)/S, 1]``. μ(·|s) = (1/M) Σ_m δ_{(1−λ)ω_{k,m} + λω_{k+1,m}}.
    """
    S = params.depth

    def profile(s):
        t = s * S
        k0 = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, S - 1)
        k1 = jnp.minimum(k0 + 1, S - 1)
        lam = jnp.clip(t - k0, 0.0, 1.0).astype(params.U.dtype)
        mix = lambda a: (1 - lam) * a[k0] + lam * a[k1]  # noqa: E731
        return mix(params.U), mix(params.W), mix(params.B)

    return profile


def discretise(profile: Callable[[Array], tuple[Array, Array, Array]], S: int, dtype=None) -> ResNetParams:
    """Sample a depth profile ``s ↦ (U(s), W(s), B(s))`` at ``s_k = k/S``: the S-layer ResNet whose
    Euler scheme approximates the profile's NODE."""
    _positive_int(S, "S")
    s = jnp.arange(S, dtype=dtype or jnp.result_type(float)) / S
    U, W, B = jax.vmap(profile)(s)
    return ResNetParams(U, W, B)


def node_forward(
    model: ResNetParams | Callable[[Array], tuple[Array, Array, Array]],
    X: Array,
    activation: str | Activation = "cos",
    *,
    interpolation: str = "piecewise_constant",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    solver=None,
    max_steps: int | None = None,
    saveat_s: Array | None = None,
) -> Array:
    """Mean-field NODE ``dx/ds = F_{μ(·|s)}(x)``, x(0) = X, solved by diffrax on s ∈ [0, 1].

    ``model`` is a :class:`ResNetParams` (made continuous by ``interpolation``:
    ``"piecewise_constant"`` or ``"linear"``) or a depth profile ``s ↦ (U, W, B)`` of one layer.
    Adaptive Tsit5 by default; for piecewise-constant μ the layer boundaries k/S are passed
    to the step-size controller as jumps. Returns x(1) (N, d), or x at ``saveat_s``.
    """
    import diffrax

    sigma = get_activation(activation)
    jumps = None
    if isinstance(model, ResNetParams):
        require(interpolation in INTERPOLATIONS, "interpolation", f"unknown interpolation {interpolation!r}", f"use one of {list(INTERPOLATIONS)}")
        S = model.depth
        if interpolation == "piecewise_constant":
            profile = piecewise_constant(model)
            jumps = [k / S for k in range(1, S)] or None
        else:
            profile = linear_interpolation(model)
        max_steps = max_steps or 64 * S + 4096
    else:
        require(callable(model), "model", "must be ResNetParams or a depth profile s -> (U, W, B)")
        profile = model
        max_steps = max_steps or 16384

    X = jnp.asarray(X)
    ts = None if saveat_s is None else jnp.asarray(saveat_s, X.dtype)
    js = None if jumps is None else jnp.asarray(jumps, X.dtype)
    args = model if isinstance(model, ResNetParams) else None
    ys = _node_solve(args, X, js, ts, profile if args is None else interpolation, sigma, float(rtol), float(atol),
                     solver or diffrax.Tsit5(), int(max_steps))
    return ys[-1] if saveat_s is None else ys


@eqx.filter_jit
def _node_solve(params, X, jumps, ts, how, sigma, rtol, atol, solver, max_steps):
    """The diffrax solve, compiled once per shape and setting (``how``: an interpolation name or a profile)."""
    import diffrax

    if isinstance(how, str):
        profile = piecewise_constant(params) if how == "piecewise_constant" else linear_interpolation(params)
    else:
        profile = how

    def field(s, x, args):
        U, W, B = profile(s)
        return _residual(sigma, U, W, B, x)

    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    if jumps is not None:
        controller = diffrax.ClipStepSizeController(controller, jump_ts=jumps)
    save = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), solver, t0=0.0, t1=1.0, dt0=None, y0=X,
        stepsize_controller=controller, max_steps=max_steps, saveat=save,
    )
    return sol.ys


# --------------------------------------------------------------------------- the flow


def resnet_step(objective: ResNetObjective, params: ResNetParams, eta: Array, *, with_lambda0: bool = False):
    """One explicit step ``ω ← ω − η ∇L[μ](s, ω)``; returns (μ⁺, L(μ), diagnostics of μ).

    Diagnostics: ``grad_sq`` = ‖∇L[μ]‖²_{L²(μ)}, ``pl_ratio`` = grad_sq / L, and with
    ``with_lambda0`` ``lambda0`` (S eigenvalue problems of size N per step).
    """
    adj = adjoint_gradient(objective, params)
    g = adj.gradient
    eta = jnp.asarray(eta, params.U.dtype)  # the schedule is float64 under x64; keep the state's dtype
    new = ResNetParams(params.U - eta * g.U, params.W - eta * g.W, params.B - eta * g.B)
    gsq = grad_norm_sq(g)
    diag = {"grad_sq": gsq, "pl_ratio": gsq / adj.loss}
    if with_lambda0:
        K = layer_kernels(params, objective.X, objective.activation, adj.states)
        diag["lambda0"] = jnp.mean(jnp.linalg.eigvalsh(K)[:, 0])
    return new, adj.loss, diag


@dataclasses.dataclass(frozen=True)
class _Step:
    with_lambda0: bool = False

    def __call__(self, objective, params, eta):
        return resnet_step(objective, params, eta, with_lambda0=self.with_lambda0)


def _loss_value(objective: ResNetObjective, params: ResNetParams) -> Array:
    return resnet_loss(params, objective.X, objective.Y, objective.activation)


@eqx.filter_jit
def _grad_and_states(objective: ResNetObjective, params: ResNetParams) -> tuple[Array, Array]:
    adj = adjoint_gradient(objective, params)
    return grad_norm_sq(adj.gradient), adj.states


@eqx.filter_jit
def _one_kernel(sigma: Activation, x: Array, W: Array, B: Array) -> Array:
    Phi = _act(sigma, x @ W.T + B)
    return Phi @ Phi.T / W.shape[0]


def _lambda_stats(objective: ResNetObjective, params: ResNetParams, states: Array) -> tuple[float, float]:
    """(λ₀, λ_min of the depth-averaged kernel) on the host, one layer at a time: O(N²) memory,
    and LAPACK's symmetric eigensolver through numpy (faster than XLA's on the CPU)."""
    lmins, Kbar = [], 0.0
    for k in range(params.depth):
        K = np.asarray(_one_kernel(objective.activation, states[k], params.W[k], params.B[k]), dtype=np.float64)
        lmins.append(np.linalg.eigvalsh(K)[0])
        Kbar = Kbar + K
    return float(np.mean(lmins)), float(np.linalg.eigvalsh(Kbar / params.depth)[0])


@dataclasses.dataclass(frozen=True)
class RateFit:
    """Least-squares fit ``log L(t) ≈ a − rate·t`` over ``[t_start, t_end]`` (``n_points`` used)."""

    rate: float
    intercept: float
    t_start: float
    t_end: float
    n_points: int
    r2: float


def fitted_rate(times, loss, window: tuple[float, float] | None = None, *, floor: float | None = None) -> RateFit:
    """Fitted exponential rate of ``L(t)``: least squares on ``log L`` against t.

    ``window = (t_start, t_end)`` in flow time (default: the whole run). Points with a
    non-finite loss or ``L ≤ floor`` (default ``1e-12·L(0)``, below which float64 rounding
    dominates) are left out. ``rate`` is NaN with fewer than 2 points.
    """
    t = np.asarray(times, dtype=np.float64)
    L = np.asarray(loss, dtype=np.float64)
    require(t.shape == L.shape and t.ndim == 1, "times/loss", f"must be 1-D of equal length, got {t.shape} and {L.shape}")
    if floor is None:
        floor = 1e-12 * (abs(L[0]) if len(L) and np.isfinite(L[0]) else 1.0)
    t0, t1 = (t[0], t[-1]) if window is None else window
    keep = np.isfinite(L) & (L > floor) & (t >= t0) & (t <= t1)
    if keep.sum() < 2:
        return RateFit(float("nan"), float("nan"), float(t0), float(t1), int(keep.sum()), float("nan"))
    tt, yy = t[keep], np.log(L[keep])
    slope, intercept = np.polyfit(tt, yy, 1)
    resid = yy - (intercept + slope * tt)
    ss = np.sum((yy - yy.mean()) ** 2)
    r2 = 1.0 - np.sum(resid**2) / ss if ss > 0 else 1.0
    return RateFit(float(-slope), float(intercept), float(tt[0]), float(tt[-1]), int(keep.sum()), float(r2))


@dataclasses.dataclass(frozen=True)
class ResNetRun:
    """The record of a conditional flow.

    Per step k = 0..K (aligned with ``times``): ``loss`` L(μ_k), ``grad_sq`` ‖∇L[μ_k]‖²_{L²(μ_k)},
    ``pl_ratio`` grad_sq/L, ``path_length`` ∫₀^t ‖∇L‖ dt (Riemann sum of the explicit steps:
    an upper bound on the identity-coupling D_COT(μ_t, μ₀) of the discrete scheme),
    ``lambda0_steps`` (only with ``lambda0_every_step``).
    At save times: ``snapshots`` (ResNetParams stacked), ``lambda0``, ``lambda_bar``
    (λ_min of the depth-averaged kernel), ``dcot_identity``, ``dcot_exact`` (NaN if not computed).
    ``trajectory``: the underlying :class:`~wgflow.flows.trajectory.Trajectory`.
    """

    times: np.ndarray
    loss: np.ndarray
    grad_sq: np.ndarray
    pl_ratio: np.ndarray
    path_length: np.ndarray
    lambda0_steps: np.ndarray | None
    save_times: np.ndarray
    save_steps: np.ndarray
    snapshots: ResNetParams
    lambda0: np.ndarray
    lambda_bar: np.ndarray
    dcot_identity: np.ndarray
    dcot_exact: np.ndarray
    final: ResNetParams
    status: str
    message: str
    seconds: float
    trajectory: Trajectory

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def num_steps(self) -> int:
        return len(self.times) - 1

    def fitted_rate(self, window: tuple[float, float] | None = None) -> RateFit:
        return fitted_rate(self.times, self.loss, window)

    def snapshot(self, i: int) -> ResNetParams:
        return jax.tree_util.tree_map(lambda a: a[i], self.snapshots)


DCOT_MODES = ("exact", "identity", "none")


def conditional_flow(
    objective: ResNetObjective,
    params0: ResNetParams,
    step_size: Schedule,
    num_steps: int,
    *,
    save: SaveAt | None = None,
    lambda0_every_step: bool = False,
    dcot_mode: str = "exact",
    max_growth: float = 1e6,
    block_size: int = 256,
    callback: Callable[[int, float, float], None] | None = None,
) -> ResNetRun:
    """Explicit conditional Wasserstein gradient flow of the risk from ``params0``.

    ``step_size``: a float or a schedule ``k ↦ η_k`` (:mod:`wgflow.flows.schedules`), in flow
    time. ``save``: which states to keep (start and end always); λ₀, λ_bar and D_COT to μ₀
    (``dcot_mode``: ``"exact"`` with POT, ``"identity"`` only, or ``"none"``) are computed there.
    A diverging run (NaN, loss grown by ``max_growth``) stops with ``status="diverged"``
    and keeps what was computed.
    """
    if not isinstance(objective, ResNetObjective):
        raise InputError("objective", f"must be a ResNetObjective, got {type(objective).__name__}", "build it with make_resnet_objective(X, Y)")
    _check_params(params0, d=objective.d, field="params0")
    require(dcot_mode in DCOT_MODES, "dcot_mode", f"unknown mode {dcot_mode!r}", f"use one of {list(DCOT_MODES)}")
    etas = step_sizes(step_size, num_steps)
    params0 = params0.astype(objective.X.dtype)
    traj = integrate(
        _Step(bool(lambda0_every_step)), _loss_value, objective, params0, etas, save=save,
        max_growth=max_growth, block_size=block_size, callback=callback, name="conditional flow",
    )
    final = ResNetParams(*(jnp.asarray(a) for a in (traj.final.U, traj.final.W, traj.final.B)))
    snaps = traj.snapshots
    n_save = len(traj.save_times)
    # the saved states and the last one (so that per-step arrays align with `times`), in one program
    gsq_all, lam_all, lbar_all = [], [], []
    for q in [ResNetParams(*(jnp.asarray(a[i]) for a in (snaps.U, snaps.W, snaps.B))) for i in range(n_save)] + [final]:
        gsq, xs = _grad_and_states(objective, q)
        lam, lbar_q = _lambda_stats(objective, q, xs)
        gsq_all.append(float(gsq))
        lam_all.append(lam)
        lbar_all.append(lbar_q)
    gsq_all, lam_all, lbar_all = np.array(gsq_all), np.array(lam_all), np.array(lbar_all)
    grad_sq = np.append(traj.diagnostics["grad_sq"], gsq_all[-1])
    loss = traj.objective.copy()
    pl = grad_sq / loss
    K = len(traj.times) - 1
    path = np.concatenate([[0.0], np.cumsum(etas[:K] * np.sqrt(grad_sq[:K]))])
    lam_steps = np.append(traj.diagnostics["lambda0"], lam_all[-1]) if lambda0_every_step else None

    lam0, lbar = lam_all[:n_save].astype(np.float64), lbar_all[:n_save].astype(np.float64)
    d_id, d_ex = np.full(n_save, np.nan), np.full(n_save, np.nan)
    for i in range(n_save):
        p = ResNetParams(*(jnp.asarray(a[i]) for a in (snaps.U, snaps.W, snaps.B)))
        if dcot_mode != "none":
            dc = dcot(p, params0, exact=dcot_mode == "exact")
            d_id[i] = dc.identity
            d_ex[i] = np.nan if dc.exact is None else dc.exact
    return ResNetRun(
        times=traj.times, loss=loss, grad_sq=grad_sq, pl_ratio=pl, path_length=path, lambda0_steps=lam_steps,
        save_times=traj.save_times, save_steps=traj.save_steps, snapshots=ResNetParams(snaps.U, snaps.W, snaps.B),
        lambda0=lam0, lambda_bar=lbar, dcot_identity=d_id, dcot_exact=d_ex, final=final.to_numpy(),
        status=traj.status, message=traj.message, seconds=traj.seconds, trajectory=traj,
    )


# --------------------------------------------------------------------------- study helpers


def _save_every(steps: int, n_saves: int) -> SaveAt:
    return SaveAt(every=max(1, steps // max(1, n_saves)))


def run_resnet_pl_case(
    key: Array,
    N: int,
    d: int,
    S: int,
    M: int,
    init: str = "gaussian",
    delta: float = 0.05,
    steps: int = 2000,
    step_size: Schedule = 1.0,
    *,
    activation: str = "cos",
    rho: float = 1.0,
    beta: float = 1.0,
    feature_law: str = "gaussian",
    freeze_features: bool = False,
    n_features: int = 64,
    bandwidth: float = 1.0,
    inputs: str = "sphere",
    n_saves: int = 10,
    dcot_mode: str = "exact",
    rate_window: tuple[float, float] | None = None,
    max_growth: float = 1e6,
    dtype=None,
) -> dict:
    """One run for the ``resnet-pl`` study: near-identity data, seed-003 init, the conditional flow.

    Data: :func:`wgflow.resnet_data.near_identity` (L(μ₀) = δ²/2). Returns a dict with
    scalars ``lambda0`` (at μ₀), ``lambda_bar`` (λ_min of the depth-averaged kernel at μ₀),
    ``loss0``, ``loss_final``, ``loss_ratio`` = L(μ_T)/L(μ₀), ``pl_init``, ``pl_min``
    (min over the run of ‖∇L‖²/L), ``pl_bound`` = (2/N)λ₀, ``pl_tightness`` = pl_init/pl_bound (≥ 1),
    ``fitted_rate`` (least squares on log L, ``rate_window``), ``predicted_rate_scale`` = λ₀/N,
    ``rate_over_scale`` = fitted/predicted, ``dcot_final``, ``path_length_final``, ``diverged``,
    ``status``, ``message``, ``seconds``; per-step arrays ``time``, ``loss``, ``pl_ratio``,
    ``grad_sq``, ``path_length``; at save times ``save_times``, ``lambda0_t``, ``dcot_identity``,
    ``dcot_exact``; and ``config``. The key is split into (data, init). ``dtype``: float32 or float64
    (default: float64 when ``jax_enable_x64`` is on).
    """
    from wgflow.resnet_data import near_identity

    _positive_int(N, "N")
    _positive_int(d, "d")
    _positive_int(steps, "steps")
    kdata, kinit = jax.random.split(key)
    data = near_identity(kdata, N, d, delta, n_features=n_features, bandwidth=bandwidth, inputs=inputs)
    obj = make_resnet_objective(data.X, data.Y, activation, freeze_features=freeze_features, dtype=dtype)
    params0 = init_resnet(kinit, S, M, d, init=init, rho=rho, beta=beta, feature_law=feature_law, dtype=obj.X.dtype)
    run = conditional_flow(obj, params0, step_size, steps, save=_save_every(steps, n_saves), dcot_mode=dcot_mode, max_growth=max_growth)
    lam0 = float(run.lambda0[0])
    fit = run.fitted_rate(rate_window)
    pred = lam0 / N
    pl_bound = PL_CONSTANT(N) * lam0
    pl = run.pl_ratio
    return dict(
        lambda0=lam0,
        lambda_bar=float(run.lambda_bar[0]),
        loss0=float(run.loss[0]),
        loss_final=float(run.loss[-1]),
        loss_ratio=float(run.loss[-1] / run.loss[0]),
        pl_init=float(pl[0]),
        pl_min=float(np.nanmin(pl)),
        pl_bound=pl_bound,
        pl_tightness=float(pl[0] / pl_bound) if pl_bound > 0 else float("inf"),
        fitted_rate=fit.rate,
        fit_r2=fit.r2,
        predicted_rate_scale=pred,
        rate_over_scale=fit.rate / pred if pred > 0 else float("nan"),
        dcot_final=float(run.dcot_exact[-1]) if dcot_mode == "exact" else float(run.dcot_identity[-1]),
        path_length_final=float(run.path_length[-1]),
        diverged=run.status == "diverged",
        status=run.status,
        message=run.message,
        seconds=run.seconds,
        time=run.times,
        loss=run.loss,
        pl_ratio=pl,
        grad_sq=run.grad_sq,
        path_length=run.path_length,
        save_times=run.save_times,
        lambda0_t=run.lambda0,
        dcot_identity=run.dcot_identity,
        dcot_exact=run.dcot_exact,
        config=dict(N=N, d=d, S=S, M=M, init=init, delta=delta, steps=steps, step_size=step_size if not callable(step_size) else "schedule",
                    activation=activation, rho=rho, beta=beta, feature_law=feature_law, freeze_features=freeze_features,
                    n_features=n_features, bandwidth=bandwidth, inputs=inputs),
    )


def train_resnet_digits(
    key: Array,
    d: int = 16,
    S: int = 16,
    M: int = 128,
    steps: int = 2000,
    step_size: Schedule = 1.0,
    *,
    n_train: int = 500,
    n_test: int = 500,
    projection: str = "pca",
    input_scale: float = 1.0,
    target_scale: float = 1.0,
    activation: str = "cos",
    init: str = "gaussian",
    rho: float = 1.0,
    beta: float = 1.0,
    n_saves: int = 20,
    max_growth: float = 1e6,
    dtype=None,
) -> dict:
    """Train the conditional flow on scikit-learn's digits embedded in R^d (``resnet-digits`` study).

    Data: :func:`wgflow.resnet_data.digits`. Returns per-step ``time``, ``loss``, ``pl_ratio``;
    at ``n_saves`` save times ``save_times``, ``train_loss``, ``test_loss``, ``train_accuracy``,
    ``test_accuracy`` (linear read-out :func:`wgflow.resnet_data.classify`), ``lambda0_t``;
    scalars ``lambda0``, ``final_train_accuracy``, ``final_test_accuracy``, ``loss0``,
    ``loss_final``, ``fitted_rate``, ``status``, ``message``, ``seconds``, ``config``.
    ``dtype``: float32 (fast: the vectorised cos) or float64 (default with ``jax_enable_x64``).
    """
    from wgflow.resnet_data import classify, digits

    kdata, kinit = jax.random.split(key)
    data = digits(kdata, d, n_train=n_train, n_test=n_test, projection=projection, input_scale=input_scale, target_scale=target_scale)
    obj = make_resnet_objective(data.X, data.Y, activation, dtype=dtype)
    params0 = init_resnet(kinit, S, M, d, init=init, rho=rho, beta=beta, dtype=obj.X.dtype)
    run = conditional_flow(obj, params0, step_size, steps, save=_save_every(steps, n_saves), dcot_mode="none", max_growth=max_growth)
    fwd = jax.jit(lambda p, X: resnet_forward(p, X, obj.activation))
    tr_acc, te_acc, tr_loss, te_loss = ([] for _ in range(4))
    for i in range(len(run.save_times)):
        p = ResNetParams(*(jnp.asarray(a[i]) for a in (run.snapshots.U, run.snapshots.W, run.snapshots.B)))
        out = np.asarray(fwd(p, obj.X))
        tr_acc.append(float(np.mean(classify(out, data.targets) == data.labels)))
        tr_loss.append(0.5 * float(np.mean(np.sum((out - data.Y) ** 2, axis=1))))
        if data.X_test is not None and len(data.X_test):
            out_t = np.asarray(fwd(p, jnp.asarray(data.X_test, obj.X.dtype)))
            te_acc.append(float(np.mean(classify(out_t, data.targets) == data.labels_test)))
            te_loss.append(0.5 * float(np.mean(np.sum((out_t - data.Y_test) ** 2, axis=1))))
        else:
            te_acc.append(float("nan"))
            te_loss.append(float("nan"))
    return dict(
        time=run.times, loss=run.loss, pl_ratio=run.pl_ratio, save_times=run.save_times,
        train_loss=np.array(tr_loss), test_loss=np.array(te_loss),
        train_accuracy=np.array(tr_acc), test_accuracy=np.array(te_acc),
        lambda0_t=run.lambda0, lambda0=float(run.lambda0[0]),
        final_train_accuracy=tr_acc[-1], final_test_accuracy=te_acc[-1],
        loss0=float(run.loss[0]), loss_final=float(run.loss[-1]), fitted_rate=run.fitted_rate().rate,
        status=run.status, message=run.message, seconds=run.seconds,
        config=dict(d=d, S=S, M=M, steps=steps, step_size=step_size if not callable(step_size) else "schedule",
                    n_train=n_train, n_test=n_test, projection=projection, input_scale=input_scale,
                    target_scale=target_scale, activation=activation, init=init, rho=rho, beta=beta),
    )


__all__ = [
    "Adjoint", "DCOT", "INITS", "PL_CONSTANT", "RateFit", "ResNetObjective", "ResNetParams", "ResNetRun",
    "adjoint_gradient", "conditional_flow", "dcot", "discretise", "fitted_rate", "grad_norm_sq", "init_resnet",
    "lambda0", "lambda_min_mean_kernel", "layer_kernels", "layer_lambda_min", "linear_interpolation",
    "make_resnet_objective", "node_forward", "piecewise_constant", "resnet_forward", "resnet_loss",
    "resnet_states", "resnet_step", "run_resnet_pl_case", "train_resnet_digits",
]
