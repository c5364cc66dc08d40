"""Diagnostics of a deep mean-field ResNet measure: the layer kernels and λ₀, the PL constant, D_COT, fitted rates.

For the model of :mod:`wgflow.models.resnet` (Barboni, Peyré & Vialard; derivations in
``docs/resnet.md`` §3 and §5):

- ``λ₀ = (1/S) Σ_k λ_min(K_k)``, ``K_k(i, j) = (1/M) Σ_m σ(w_m·xⁱ_k + b_m) σ(w_m·xʲ_k + b_m)``.
- PL at initialisation (u = 0): ``‖∇L‖² ≥ (2/N) λ₀ L`` (:data:`PL_CONSTANT`).
- ``D_COT(μ, μ')² = (1/S) Σ_k W₂²(μ(·|s_k), μ'(·|s_k))`` (:func:`dcot`).
- :func:`fitted_rate`: the exponential rate of ``L(t)`` by least squares on ``log L``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import require
from wgflow.models.resnet import (
    ResNetObjective,
    ResNetParams,
    _act,
    _check_params,
    resnet_states,
)
from wgflow.units import Activation, get_activation


def PL_CONSTANT(N: int) -> float:
    """The constant c of ``‖∇L‖²_{L²(μ₀)} ≥ c λ₀ L(μ₀)`` at an initialisation with u = 0: ``c = 2/N``."""
    return 2.0 / N


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
    """``λ₀ = ∫ λ_min(K_{μ(·|s)}(x(s))) ds = (1/S) Σ_k λ_min(K_k)`` (the constant of Barboni, Peyré & Vialard 2024's theorem)."""
    return jnp.mean(layer_lambda_min(params, X, activation))


@eqx.filter_jit
def lambda_min_mean_kernel(params: ResNetParams, X: Array, activation: str | Activation = "cos") -> Array:
    """``λ_min((1/S) Σ_k K_k)`` ≥ λ₀: the rate of the linearised (lazy) flow is 2·this/N."""
    return jnp.linalg.eigvalsh(jnp.mean(layer_kernels(params, X, activation), axis=0))[0]


@eqx.filter_jit
def _one_kernel(sigma: Activation, x: Array, W: Array, B: Array) -> Array:
    Phi = _act(sigma, x @ W.T + B)
    return Phi @ Phi.T / W.shape[0]


def _lambda_stats(objective: ResNetObjective, params: ResNetParams, states: Array) -> tuple[float, float]:
    """(λ₀, λ_min of the depth-averaged kernel) on the host, one layer at a time: O(N²) memory,
    and LAPACK's symmetric eigensolver through numpy (faster than XLA's on the CPU)."""
    lmins: list[Any] = []
    Kbar: np.ndarray | float = 0.0
    for k in range(params.depth):
        K = np.asarray(_one_kernel(objective.activation, states[k], params.W[k], params.B[k]), dtype=np.float64)
        lmins.append(np.linalg.eigvalsh(K)[0])
        Kbar = Kbar + K
    return float(np.mean(lmins)), float(np.linalg.eigvalsh(Kbar / params.depth)[0])


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


DCOT_MODES = ("exact", "identity", "none")


# --------------------------------------------------------------------------- fitted rates


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


__all__ = [
    "DCOT",
    "DCOT_MODES",
    "PL_CONSTANT",
    "RateFit",
    "dcot",
    "fitted_rate",
    "lambda0",
    "lambda_min_mean_kernel",
    "layer_kernels",
    "layer_lambda_min",
]
