"""The losses of the convex program and their Fenchel duals (docs/optimum.md §3, §6).

The reformulation of Pilanci & Ergen (2020) holds for any convex loss: balancing the
neurons and merging those of one activation cone and sign never looks at ℓ. What
depends on ℓ is the data term of the program and the dual bound. For a data term
L(f) = Σ_j ℓ(f_j, y_j) and the regulariser β Σ‖u‖,

    P* ≥ D(z) = −Σ_j ℓ*(−z_j; y_j)   for every z with M(z) = max_{‖g‖ ≤ 1} |zᵀ relu(X g)| ≤ β,

(weak duality: L(f) ≥ −z·f − L*(−z) and −z·f ≥ −β Σ‖uᵢ‖), with equality at z* = −∇L(f*).

======== ====================== ===================== ======================================
loss     ℓ(f, y)                z* = −∂ℓ/∂f           D(z)
======== ====================== ===================== ======================================
square   (f − y)²               2 (y − f)             z·y − ‖z‖²/4
logistic log(1 + e^{−y f}),     y σ(−y f)             Σ_j H(z_j y_j), H(t) = −t log t − (1 − t) log(1 − t),
         y = ±1                                       defined for z_j y_j ∈ [0, 1]
======== ====================== ===================== ======================================

The square loss keeps its own closed forms in :mod:`wgflow.optimum.dual`; this module
holds the logistic one (cvxpy's ``logistic`` atom is an exponential cone, which Clarabel
solves).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import entr, expit, log1p

CONVEX_LOSSES = ("square", "logistic")


def logistic_value(f: np.ndarray, y: np.ndarray) -> float:
    """Σ_j log(1 + exp(−y_j f_j)), computed stably."""
    t = -y * f
    return float(np.sum(np.maximum(t, 0.0) + log1p(np.exp(-np.abs(t)))))


def logistic_dual_point(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z = −∇L(f) = y σ(−y f): the optimal dual point when f is the optimal fit."""
    return y * expit(-y * f)


def logistic_dual_value(z: np.ndarray, y: np.ndarray) -> float:
    """D(z) = Σ_j H(z_j y_j) (binary entropy, nats); −inf when some z_j y_j ∉ [0, 1]."""
    t = z * y
    if np.any(t < 0.0) or np.any(t > 1.0):
        return -math.inf
    return float(np.sum(entr(t) + entr(1.0 - t)))


def logistic_best_scaled(y: np.ndarray, z0: np.ndarray, M: float, beta: float) -> tuple[float, float, np.ndarray]:
    """The best dual point on the ray {s z0}: max over s ∈ [0, s_max] of D(s z0), s_max = min(β/M(z0), 1/max_j z0_j y_j).

    ``z0`` is first moved into the domain (each z0_j y_j clipped to [0, 1]); ``M`` must be
    M(z0) of the clipped point (see :func:`clip_to_domain`). D(s z0) = Σ H(s t_j) is concave
    in s with derivative Σ t_j log((1 − s t_j)/(s t_j)), decreasing from +∞: the maximiser is
    s_max or the root of the derivative. Returns (D, s, z = s z0).
    """
    t = z0 * y
    tmax = float(t.max()) if t.size else 0.0
    if tmax <= 0.0:
        return 0.0, 0.0, np.zeros_like(z0)
    s_max = 1.0 / tmax
    if M > 0:
        s_max = min(s_max, beta / M) if math.isfinite(M) else 0.0
    if s_max <= 0.0:
        return 0.0, 0.0, np.zeros_like(z0)
    active = t > 0

    def slope(s: float) -> float:
        u = s * t[active]
        return float(np.sum(t[active] * (np.log1p(-np.minimum(u, 1.0 - 1e-300)) - np.log(u))))

    lo = s_max * 1e-12
    if slope(s_max) >= 0.0:
        s = s_max
    elif slope(lo) <= 0.0:
        s = lo
    else:
        s = float(brentq(slope, lo, s_max, xtol=1e-15 * s_max, rtol=4e-16, maxiter=500))
    z = s * z0
    return logistic_dual_value(z, y), float(s), z


def clip_to_domain(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z with each z_j y_j clipped to [0, 1] (the domain of the logistic dual)."""
    return y * np.clip(z * y, 0.0, 1.0)
