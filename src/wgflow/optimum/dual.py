"""The dual certificate: a lower bound on the global minimum from any residual (docs/optimum.md §3).

With the square loss (no 1/2) and the regulariser weight β (β = 2λ for the
ℓ2 norm of ``lifted``/``signed``/``split``/``sphere``, β = λ for the ℓ1 norm of
``signed_square``), the convex program

    P* = min ‖Σ_D D X (u_D − v_D) − y‖² + β Σ_D (‖u_D‖ + ‖v_D‖),  u_D, v_D ∈ K_D

has the dual (Fenchel: the conjugate of f ↦ ‖f − y‖² is z ↦ z·y + ‖z‖²/4)

    P* ≥ D(z) = z·y − ‖z‖²/4   for every z with   M(z) = max_{‖g‖ ≤ 1} |zᵀ relu(X g)| ≤ β,

where ‖g‖ is the norm of the regulariser. Weak duality holds against every
network, not only against the convex program: for f = Σ sᵢ relu(X uᵢ),
‖f − y‖² ≥ z·y − z·f − ‖z‖²/4 (expand ‖f − y + z/2‖² ≥ 0) and
−z·f ≥ −β Σ ‖uᵢ‖ (definition of M). At the optimum z* = 2(y − f*).

From a residual r = y − f we take z = 2 s r with the best admissible s:
s ∈ [0, β / (2 M(r))] maximising 2 s r·y − s² ‖r‖².

M is a maximum over the chambers of the arrangement: on the closed cone K_D,
zᵀ relu(X g) = c_D·g with c_D = Xᵀ D z, so
``M(z) = max_D max(‖Π_{K_D} c_D‖, ‖Π_{K_D}(−c_D)‖)`` in ℓ2 (projection on the cone,
Moreau) and the maximum of ±c_D·g over the polytope K_D ∩ {‖g‖₁ ≤ 1} in ℓ1.
Both are solved exactly per cone for rank(X) ≤ 3 (:func:`pattern_dual_norms`).
Elsewhere (rank > 3, or a σ other than ReLU) M is estimated by sampling g and
local ascent (:func:`sampled_dual_norm`): an estimate from below, so the
scaled z may be infeasible and the "bound" may *exceed* the optimum. It is
then reported as a heuristic lower estimate, not a certificate.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.optimize import linprog

from wgflow.optimum.patterns import Patterns
from wgflow.units import Activation, get_activation

NORMS = ("l2", "l1")


@dataclasses.dataclass(frozen=True)
class DualBound:
    """A lower bound on the global minimum from one residual.

    ``value``: ``D(z)`` in the objective's own reduction (a certified lower bound when
    ``certified``; otherwise a heuristic lower *estimate* that may exceed the optimum).
    ``dual_norm``: M(r) = max over admissible neurons g of |rᵀσ(Xg)| / ‖g‖, exact or estimated.
    ``scale``: z = 2·scale·r. ``method``: ``"exact-patterns"`` or ``"sampled-ascent"``.
    ``n_evaluated``: chambers enumerated, or directions g tried.
    """

    value: float
    dual_norm: float
    scale: float
    certified: bool
    method: str
    n_evaluated: int
    note: str = ""


def best_scaled_dual(y: np.ndarray, r: np.ndarray, M: float, beta: float) -> tuple[float, float]:
    """max over s ∈ [0, β/(2M)] of D(2 s r) = 2 s r·y − s² ‖r‖²; returns (value, s)."""
    rr = float(r @ r)
    if rr == 0.0:
        return 0.0, 0.0
    s = float(r @ y) / rr
    if M > 0:
        s = min(s, beta / (2.0 * M)) if math.isfinite(M) else 0.0
    s = max(s, 0.0)
    return 2.0 * s * float(r @ y) - s * s * rr, s


# --------------------------------------------------------------------------- exact, per chamber


def _l2_cone_norms(pat: Patterns, C: np.ndarray, tol: float) -> np.ndarray:
    """‖Π_{K_i}(c_i)‖ for each pattern i, for c_i (rows of C) in the row space of X (reduced coordinates)."""
    P = C.shape[0]
    val = np.zeros(P)
    if P == 0:
        return val
    cr = np.sum(C[pat.ray_owner] * pat.rays, axis=1)  # c·ρ on every extreme ray
    np.maximum.at(val, pat.ray_owner, cr)
    if pat.pair_a.size:  # 2-D faces: projection on cone{ρ_a, ρ_b}
        ca, cb = cr[pat.pair_a], cr[pat.pair_b]
        rho = np.sum(pat.rays[pat.pair_a] * pat.rays[pat.pair_b], axis=1)
        den = 1.0 - rho * rho
        safe = np.where(den > 1e-14, den, 1.0)
        a = (ca - rho * cb) / safe
        b = (cb - rho * ca) / safe
        ok = (den > 1e-14) & (a >= -tol) & (b >= -tol)
        v = np.sqrt(np.maximum(a * ca + b * cb, 0.0))
        np.maximum.at(val, pat.ray_owner[pat.pair_a], np.where(ok, v, 0.0))
    # the interior: c itself when c ∈ K_i (sign test against every hyperplane)
    cn = np.linalg.norm(C, axis=1)
    inside = np.all(pat.signs * (C @ pat.normals.T) >= -tol * cn[:, None], axis=1)
    return np.where(inside, np.maximum(val, cn), val)


def _l1_cone_norms(pat: Patterns, C: np.ndarray, tol: float) -> np.ndarray:
    """max over g ∈ K_i, ‖g‖₁ ≤ 1 of c_i·g, for each pattern i (data coordinates, full rank).

    The maximum of a linear function over the polytope K ∩ B₁ is 0 or at a vertex on
    ‖g‖₁ = 1, whose ray is an extreme ray of K ∩ (orthant): an extreme ray of K, a
    coordinate axis inside K, or (d = 3) a 2-D face of K cut by a coordinate plane.
    """
    P, d = C.shape
    val = np.zeros(P)
    if P == 0:
        return val
    R = pat.rays
    np.maximum.at(val, pat.ray_owner, np.sum(C[pat.ray_owner] * R, axis=1) / np.sum(np.abs(R), axis=1))
    for i in range(d):
        for s in (1.0, -1.0):
            inside = np.all(pat.signs * (s * pat.normals[:, i])[None, :] >= -tol, axis=1)
            val = np.where(inside, np.maximum(val, s * C[:, i]), val)
    if d == 3 and pat.pair_a.size:
        ra, rb = R[pat.pair_a], R[pat.pair_b]
        nab = np.cross(ra, rb)
        rho = np.sum(ra * rb, axis=1)
        den = 1.0 - rho * rho
        owner = pat.ray_owner[pat.pair_a]
        for i in range(d):
            e = np.zeros(3)
            e[i] = 1.0
            q = np.cross(nab, e)
            qn = np.linalg.norm(q, axis=1)
            good = (qn > 1e-12) & (den > 1e-14)
            q = q / np.where(qn > 0, qn, 1.0)[:, None]
            qa, qb = np.sum(q * ra, axis=1), np.sum(q * rb, axis=1)
            safe = np.where(den > 1e-14, den, 1.0)
            a = (qa - rho * qb) / safe
            b = (qb - rho * qa) / safe
            l1 = np.sum(np.abs(q), axis=1)
            cq = np.sum(C[owner] * q, axis=1) / l1
            for sign in (1.0, -1.0):
                ok = good & (sign * a >= -tol) & (sign * b >= -tol)
                np.maximum.at(val, owner, np.where(ok, sign * cq, 0.0))
    return val


# HiGHS at its tightest tolerances: the LP's maximum is a certified quantity (an under-estimate of M
# makes the dual point infeasible and the "lower bound" too high); the defaults (1e-7) are too loose.
_LP_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
LP_MARGIN = 1e-8


def _l1_cone_norms_lp(pat: Patterns, C: np.ndarray) -> np.ndarray:
    """The same maximum by one small LP per pattern (used when X is rank-deficient)."""
    P, d = C.shape
    val = np.zeros(P)
    for i in range(P):
        G = pat.cone(i).T  # (d, p)
        p = G.shape[1]
        # variables (a ≥ 0, t ≥ 0): max cᵀG a  s.t.  −t ≤ G a ≤ t,  Σ t ≤ 1
        A = np.block([[G, -np.eye(d)], [-G, -np.eye(d)], [np.zeros((1, p)), np.ones((1, d))]])
        b = np.concatenate([np.zeros(2 * d), [1.0]])
        res = linprog(np.concatenate([-(C[i] @ G), np.zeros(d)]), A_ub=A, b_ub=b, bounds=(0, None), method="highs", options=_LP_OPTIONS)
        val[i] = max(0.0, -res.fun) if res.status == 0 else np.inf
    return val


def pattern_dual_norms(pat: Patterns, X: np.ndarray, z: np.ndarray, norm: str = "l2", tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """For each pattern i: max over g ∈ K_i with ‖g‖ ≤ 1 of +zᵀ D_i X g and of −zᵀ D_i X g.

    Exact up to rounding; the tolerance ``tol`` admits faces at most ``tol`` outside a
    cone, which can only over-estimate the maximum (the safe side for a lower bound).
    """
    C = (pat.D * z[None, :]) @ X  # c_i = Xᵀ D_i z
    if norm == "l2":
        Cr = C @ pat.basis  # c_i lies in the row space of X: nothing is lost
        return _l2_cone_norms(pat, Cr, tol), _l2_cone_norms(pat, -Cr, tol)
    if pat.rank == X.shape[1]:
        return _l1_cone_norms(pat, C, tol), _l1_cone_norms(pat, -C, tol)
    # rank-deficient X: one LP per cone, whose maximum was measured up to ~5e-10 relative below a
    # brute-force maximisation over the row space: inflated by LP_MARGIN, the safe side for a lower bound
    return _l1_cone_norms_lp(pat, C) * (1 + LP_MARGIN), _l1_cone_norms_lp(pat, -C) * (1 + LP_MARGIN)


def exact_dual_norm(pat: Patterns, X: np.ndarray, r: np.ndarray, norm: str = "l2") -> float:
    """M(r) = max over ‖g‖ ≤ 1 of |rᵀ relu(X g)|, exactly, by enumerating the chambers."""
    if pat.n_patterns == 0:
        return 0.0
    plus, minus = pattern_dual_norms(pat, X, np.asarray(r, np.float64), norm)
    return float(max(plus.max(), minus.max()))


# --------------------------------------------------------------------------- heuristic


def _gnorm(g: jax.Array, norm: str) -> jax.Array:
    return jnp.linalg.norm(g, axis=-1) if norm == "l2" else jnp.sum(jnp.abs(g), axis=-1)


@functools.partial(jax.jit, static_argnames=("sigma", "norm", "vary_scale", "num_ascent", "steps"))
def _sample_and_ascend(X, z, G, sigma, norm, vary_scale, num_ascent, steps):
    """max |zᵀσ(X g)|/‖g‖ over the rows of G, then Adam ascent from the ``num_ascent`` best."""

    def ratio(g):
        return (z @ sigma(X @ g)) / _gnorm(g, norm)

    vals = jax.vmap(ratio)(G)
    best = jnp.max(jnp.abs(vals))
    if steps == 0 or num_ascent == 0:
        return best
    top = jnp.argsort(-jnp.abs(vals))[:num_ascent]
    starts, signs = G[top], jnp.sign(vals[top])
    opt = optax.adam(1e-2 * jnp.mean(_gnorm(starts, norm)))

    def ascend(g0, s):
        def loss(g):
            return -s * ratio(g if vary_scale else g / _gnorm(g, norm))

        def body(carry, _):
            g, state, m = carry
            v, grad = jax.value_and_grad(loss)(g)
            upd, state = opt.update(grad, state)
            return (optax.apply_updates(g, upd), state, jnp.maximum(m, -v)), None

        (g, _, m), _ = jax.lax.scan(body, (g0, opt.init(g0), -loss(g0)), None, length=steps)
        return jnp.maximum(m, -loss(g))

    return jnp.maximum(best, jnp.max(jax.vmap(ascend)(starts, signs)))


def sampled_dual_norm(
    X,
    z,
    *,
    activation: str | Activation = "relu",
    norm: str = "l2",
    scale_free: bool = True,
    num_samples: int = 20_000,
    ascent_steps: int = 300,
    num_ascent: int = 64,
    key: jax.Array | int = 0,
) -> tuple[float, int]:
    """A lower estimate of M(z) = sup over admissible g of |zᵀσ(X g)| / ‖g‖, by sampling and ascent.

    Admissible g: any g ≠ 0 when ``scale_free`` (``lifted``, ``signed``, ``split``,
    ``signed_square``: a neuron of any scale, cost β‖g‖), only ‖g‖ = 1 otherwise
    (``sphere``). For a 1-homogeneous σ (ReLU) the ratio does not depend on the scale.
    ``num_samples`` random directions (radii log-uniform over six decades when the scale
    matters), then Adam ascent from the ``num_ascent`` best; plus the exact limit g → 0
    (|σ'(0)| ‖Xᵀz‖_*) when σ(0) = 0. If σ(0) ≠ 0 and Σ z ≠ 0 the supremum is +∞ (a tiny
    neuron is a free constant) and ``inf`` is returned.

    The maximisation is non-convex: the result is ≤ the true M(z), never above.
    Returns (estimate, number of directions tried).
    """
    sigma = get_activation(activation)
    X = jnp.asarray(X, jnp.float64)
    z = jnp.asarray(z, jnp.float64)
    n, d = X.shape
    vary_scale = scale_free and sigma.homogeneity != 1
    s0 = float(sigma(jnp.zeros(())))
    if vary_scale and s0 != 0.0 and abs(float(jnp.sum(z))) > 1e-12 * float(jnp.sum(jnp.abs(z)) + 1e-300):
        return math.inf, 0
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    k1, k2 = jax.random.split(key)
    G = jax.random.normal(k1, (num_samples, d), jnp.float64)
    G = G / _gnorm(G, norm)[:, None]
    if vary_scale:
        xs = float(jnp.median(jnp.linalg.norm(X, axis=1))) or 1.0
        G = G * (jnp.exp(jax.random.uniform(k2, (num_samples, 1), jnp.float64, -3 * math.log(10), 3 * math.log(10))) / xs)
    best = float(_sample_and_ascend(X, z, G, sigma, norm, vary_scale, min(num_ascent, num_samples), ascent_steps))
    if vary_scale and s0 == 0.0:  # g → 0: zᵀσ(Xg)/‖g‖ → σ'(0) zᵀX g/‖g‖
        slope = float(jax.grad(lambda t: sigma(t))(0.0))
        v = X.T @ z
        best = max(best, abs(slope) * float(jnp.linalg.norm(v) if norm == "l2" else jnp.max(jnp.abs(v))))
    return best, int(num_samples)


def sampled_bound(X, y, r, beta: float, **kwargs) -> DualBound:
    """:func:`best_scaled_dual` with M estimated by :func:`sampled_dual_norm` — not certified."""
    M, tried = sampled_dual_norm(X, 2.0 * np.asarray(r), **kwargs)
    M = M / 2.0
    value, s = best_scaled_dual(np.asarray(y), np.asarray(r), M, beta)
    return DualBound(
        value,
        M,
        s,
        False,
        "sampled-ascent",
        tried,
        "heuristic lower estimate: M(r) was maximised over sampled neurons and local ascent, which can only "
        "under-estimate it, so the scaled dual point may be infeasible and this number may exceed the true optimum",
    )
