"""Infinitely deep and wide mean-field ResNets: the model, its forward pass, adjoint gradient and continuous-depth NODE.

Barboni, Peyré & Vialard, "Training infinitely deep and wide ResNets with Conditional
Optimal Transport". Conventions (all restated with
derivations in ``docs/resnet.md``):

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
- Adjoint gradient of Barboni, Peyré & Vialard at layer k (x at the layer's input, p at its output):
  ``∇L[μ](s_k, ω) = (1/N) Σᵢ (σ(zⁱ) pⁱ_{k+1}, σ'(zⁱ)(u·pⁱ_{k+1}) xⁱ_k, σ'(zⁱ)(u·pⁱ_{k+1}))``,
  ``zⁱ = w·xⁱ_k + b``. Exactly (tested to 1e-10): ``∇L[μ](s_k, ω_{k,m}) = S·M ∂L/∂ω_{k,m}``.

The flow that moves the neurons is :mod:`wgflow.flows.conditional`; λ₀, the PL constant,
D_COT and fitted rates are in :mod:`wgflow.metrics.resnet`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError, require, require_positive
from wgflow.init import gaussian as _gaussian
from wgflow.init import heavy_tailed as _heavy_tailed
from wgflow.init import uniform as _uniform
from wgflow.units import Activation, get_activation

INITS = ("gaussian", "heavy_tailed", "random_features")
FEATURE_LAWS = ("gaussian", "heavy_tailed")
INTERPOLATIONS = ("piecewise_constant", "linear")


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
    def from_positions(cls, positions: Array) -> ResNetParams:
        """Inverse of :meth:`positions`."""
        D = positions.shape[-1]
        require(D % 2 == 1 and D >= 3, "positions", f"last axis must be 2d + 1, got {D}")
        d = (D - 1) // 2
        return cls(positions[..., :d], positions[..., d : 2 * d], positions[..., 2 * d])

    def layer(self, k: int) -> tuple[Array, Array, Array]:
        return self.U[k], self.W[k], self.B[k]

    def duplicate_width(self, times: int = 2) -> ResNetParams:
        """Each neuron repeated ``times`` times in its layer: the same measure at width ``times·M``."""
        return ResNetParams(*(jnp.repeat(a, times, axis=1) for a in (self.U, self.W, self.B)))

    def duplicate_depth(self, times: int = 2) -> ResNetParams:
        """Each layer repeated ``times`` times: the same μ(·|s) for every s, depth ``times·S``."""
        return ResNetParams(*(jnp.repeat(a, times, axis=0) for a in (self.U, self.W, self.B)))

    def astype(self, dtype) -> ResNetParams:
        return ResNetParams(*(jnp.asarray(a, dtype) for a in (self.U, self.W, self.B)))

    def to_numpy(self) -> ResNetParams:
        return ResNetParams(*(np.asarray(a) for a in (self.U, self.W, self.B)))  # type: ignore[arg-type]  # a host copy: numpy leaves


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
    """Initial measure of Barboni, Peyré & Vialard 2024: ``u = 0``, ``b ~ U[0, π]`` and

    - ``"gaussian"``: w with density ∝ exp(−ρ|w|²), i.e. N(0, I/(2ρ)), drawn independently
      for every layer and neuron (M i.i.d. samples per layer approximate the law μ^w at each s);
    - ``"heavy_tailed"``: w with density ∝ (1 + |w|²)^{−(d/2+β)} (``wgflow.init.heavy_tailed``),
      independently per layer and neuron;
    - ``"random_features"``: M samples (w_m, b_m) drawn once from ``feature_law``
      (``"gaussian"`` with ρ or ``"heavy_tailed"`` with β) and shared by every layer, so that
      μ₀(·|s) = (1/M) Σ_m δ_{(0, w_m, b_m)} for all s — the finite-feature case of Barboni, Peyré & Vialard 2024.
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
    ``gradient`` = ``∇L[μ](s_k, ω_{k,m})`` as a :class:`ResNetParams` (the velocity is its negative)."""

    loss: Array
    states: Array
    adjoints: Array
    gradient: ResNetParams


@eqx.filter_jit
def adjoint_gradient(objective: ResNetObjective, params: ResNetParams) -> Adjoint:
    """Barboni, Peyré & Vialard 2024's adjoint gradient by an explicit backward pass (not autograd).

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
        mix = lambda a: (1 - lam) * a[k0] + lam * a[k1]
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
    ys = _node_solve(args, X, js, ts, profile if args is None else interpolation, sigma, float(rtol), float(atol), solver or diffrax.Tsit5(), int(max_steps))
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
        diffrax.ODETerm(field),
        solver,
        t0=0.0,
        t1=1.0,
        dt0=None,
        y0=X,
        stepsize_controller=controller,
        max_steps=max_steps,
        saveat=save,
    )
    return sol.ys


__all__ = [
    "FEATURE_LAWS",
    "INITS",
    "INTERPOLATIONS",
    "Adjoint",
    "ResNetObjective",
    "ResNetParams",
    "adjoint_gradient",
    "discretise",
    "grad_norm_sq",
    "init_resnet",
    "linear_interpolation",
    "make_resnet_objective",
    "node_forward",
    "piecewise_constant",
    "resnet_forward",
    "resnet_loss",
    "resnet_states",
]
