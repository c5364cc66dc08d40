"""Distances between measures over neurons: exact W₂ and the debiased Sinkhorn divergence.

Inputs are :class:`~wgflow.measure.Measure` (particles, or any atoms with masses) or
:class:`~wgflow.grid.GridMeasure` (masses on a grid). Both compare measures of
equal total mass; pass ``normalize=True`` to compare the probability measures instead.

**Signed measures** (``signed``, ``split``, ``signed_square``) are compared part by
part: the positive parts together and the negative parts together (a neuron's
sign is its output sign; transport between the two signs is not allowed). The
reported value combines the parts: ``W₂ = (W₂(μ⁺, ν⁺)² + W₂(μ⁻, ν⁻)²)^{1/2}`` and
``S_ε = S_ε(μ⁺, ν⁺) + S_ε(μ⁻, ν⁻)``; ``parts`` has each one.

**Cost.** ``c(θ, θ') = |θ − θ'|²`` between stored positions — except when a
:class:`GridMeasure` is involved: then the grid's coordinates and cost are used
(the squared geodesic distance on the angle of a ``sphere`` grid), the other
measure being mapped to grid coordinates. For a measure of total mass M,
``W₂²`` is M times the W₂² of the normalised measures (so it is the cost of the
optimal transport of the masses themselves).

**Sinkhorn divergence** with blur ε (the weight of the entropy, in the units of the
cost — the same ε as :func:`wgflow.flows.jko.jko`'s ``blur`` and OTT-JAX's ``epsilon``):

    OT_ε(α, β) = min_π ⟨C, π⟩ + ε KL(π | α ⊗ β),   S_ε = OT_ε(α, β) − ½ OT_ε(α, α) − ½ OT_ε(β, β)

(Feydy et al. 2019), ≥ 0, and → W₂² as ε → 0 (≈ W₂² + O(ε log(1/ε)) for small ε). Computed by log-domain
Sinkhorn with ε-scaling; a grid measure's self term uses the grid's separable kernel
(applied by stabilised scaling, ``kernel="stabilised"``, or by exact per-axis log-sum-exps,
``kernel="log"``), so a grid of 10⁵ points against a few thousand particles costs about N·m
per iteration.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
import ot

from wgflow.errors import InputError, require, require_positive
from wgflow.grid import Grid, GridMeasure, axis_cost, sample_from_grid
from wgflow.grid.kernels import log_kernel_path
from wgflow.measure import Measure

__all__ = ["DistanceResult", "GridMeasure", "sample_from_grid", "sinkhorn_divergence", "w2"]

AnyMeasure = Union[Measure, GridMeasure]

#: Elements of one chunk of the dense point-cloud log-sum-exp.
CHUNK_ELEMENTS = 2**22


@dataclasses.dataclass(frozen=True)
class DistanceResult:
    """A distance between two measures, with its parts.

    ``value``: the combined distance (see the module docstring). ``parts``: ``{"+": …, "-": …}``
    for each sign present (``W₂`` per part, or ``S_ε`` per part). ``masses``: per part,
    the two total masses compared. ``method``: ``"emd"`` or ``"sinkhorn"``; ``blur``: ε;
    ``iterations`` and ``marginal_error`` (Sinkhorn: the worst of the three problems), and
    ``converged`` (every marginal error ≤ tol; Sinkhorn converges slowly for small blur).
    """

    value: float
    parts: dict
    masses: dict
    method: str
    blur: float | None = None
    iterations: int = 0
    marginal_error: float = 0.0
    converged: bool = True


@dataclasses.dataclass(frozen=True)
class _Part:
    coords: np.ndarray  # (m, D) atoms with positive mass, in the comparison coordinates
    weights: np.ndarray  # (m,) > 0
    grid: Grid | None = None  # when the part is a grid component (all grid points, masses may be 0)
    grid_masses: np.ndarray | None = None


def _parts(mu: AnyMeasure, grid_frame: Grid | None, field: str) -> dict:
    """Split ``mu`` into its positive and negative parts, in comparison coordinates."""
    if isinstance(mu, GridMeasure):
        out = {}
        coords = mu.grid.coords() if grid_frame is not None else mu.grid.points()
        for c, s in enumerate(mu.signs):
            key = "+" if s > 0 else "-"
            m = np.asarray(mu.masses[c], np.float64)
            keep = m > 0
            out[key] = _Part(coords[keep], m[keep], mu.grid, m)
        return out
    if not isinstance(mu, Measure):
        raise InputError(field, "must be a Measure or a GridMeasure", "wrap grid masses as GridMeasure(grid, masses, signs)")
    pos = np.asarray(mu.positions, np.float64)
    mass = np.asarray(mu.masses, np.float64)
    require(pos.ndim == 2 and mass.shape == pos.shape[:1], field, "positions must be (m, D) and masses (m,)")
    require(bool(np.all(np.isfinite(pos))) and bool(np.all(np.isfinite(mass))), field, "contains NaN/inf")
    if grid_frame is not None:
        require(pos.shape[1] == grid_frame.dim, field, f"positions are in R^{pos.shape[1]}, the grid's in R^{grid_frame.dim}")
        pos = grid_frame.to_coords(pos)
    out = {}
    for key, sel in (("+", mass > 0), ("-", mass < 0)):
        if sel.any():
            out[key] = _Part(pos[sel], np.abs(mass[sel]))
    return out


def _frame(mu, nu) -> tuple[Grid | None, tuple]:
    """The grid whose coordinates and per-axis periods the comparison uses (or None: Euclidean)."""
    grids = [m.grid for m in (mu, nu) if isinstance(m, GridMeasure)]
    if not grids:
        return None, ()
    g = grids[0]
    for h in grids[1:]:
        require(h.ndim == g.ndim and h.periods == g.periods and h.embedding == g.embedding, "measures", "the two grids must have the same axes types")
    return g, g.periods


def _check_masses(pa: dict, pb: dict, normalize: bool) -> dict:
    keys = sorted(set(pa) | set(pb))
    masses = {}
    for k in keys:
        ma = float(pa[k].weights.sum()) if k in pa else 0.0
        mb = float(pb[k].weights.sum()) if k in pb else 0.0
        masses[k] = (ma, mb)
        if ma == 0.0 or mb == 0.0:
            require(
                ma == mb,
                "measures",
                f"the {'positive' if k == '+' else 'negative'} part has mass {ma:.6g} in one measure and {mb:.6g} in the other",
                "compare measures with the same signs (signed measures are compared part by part)",
            )
        elif not normalize:
            require(
                abs(ma - mb) <= 1e-8 * max(ma, mb),
                "measures",
                f"the {'positive' if k == '+' else 'negative'} parts have different total masses ({ma:.12g} vs {mb:.12g})",
                "pass normalize=True to compare the normalised measures",
            )
    return masses


def _cost_matrix(x: np.ndarray, y: np.ndarray, periods: tuple) -> np.ndarray:
    if not periods:
        return ot.dist(x, y, metric="sqeuclidean")
    C = np.zeros((len(x), len(y)))
    for k, p in enumerate(periods):
        C += axis_cost(x[:, k], y[:, k], p, xp=np)
    return C


def w2(mu: AnyMeasure, nu: AnyMeasure, *, normalize: bool = False, max_size: float = 4e7) -> DistanceResult:
    """Exact W₂ by POT's network simplex (``ot.emd2``), part by part for signed measures.

    Atoms of zero mass are dropped. ``max_size`` bounds the number of cost-matrix
    entries (atoms of μ × atoms of ν per part); beyond, use :func:`sinkhorn_divergence`.
    """
    grid, periods = _frame(mu, nu)
    pa, pb = _parts(mu, grid, "mu"), _parts(nu, grid, "nu")
    masses = _check_masses(pa, pb, normalize)
    parts, total = {}, 0.0
    for k, (ma, mb) in masses.items():
        if ma == 0.0:
            parts[k] = 0.0
            continue
        A, B = pa[k], pb[k]
        size = len(A.weights) * len(B.weights)
        require(
            size <= max_size,
            "measures",
            f"exact W₂ needs a {len(A.weights)} × {len(B.weights)} cost matrix ({size:.3g} entries > max_size = {max_size:.3g})",
            "use sinkhorn_divergence(...), or fewer atoms",
        )
        C = _cost_matrix(A.coords, B.coords, periods)
        a, b = A.weights / ma, B.weights / mb
        b = b * (a.sum() / b.sum())
        val, log = ot.emd2(a, b, C, numItermax=max(100000, 50 * size), log=True)
        if log.get("warning"):
            raise RuntimeError(f"ot.emd2 did not converge: {log['warning']}")
        scale = 1.0 if normalize else ma
        parts[k] = float(np.sqrt(max(float(val), 0.0) * scale))
        total += parts[k] ** 2
    return DistanceResult(float(np.sqrt(total)), parts, masses, "emd")


# --------------------------------------------------------------------------- Sinkhorn


def _softmin_dense(x: jax.Array, y: jax.Array, log_w: jax.Array, h: jax.Array, eps, periods: tuple):
    """``−ε log Σ_j exp(log w_j + (h_j − c(x_i, y_j))/ε)`` for all i, in row chunks."""
    m = y.shape[0]
    rows = max(1, min(x.shape[0], CHUNK_ELEMENTS // max(1, m)))
    pad = (-x.shape[0]) % rows
    xp = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, rows, x.shape[1])
    z = log_w + h / eps

    def chunk(xc):
        if periods:
            C = sum(axis_cost(xc[:, k], y[:, k], p) for k, p in enumerate(periods))
        else:
            C = jnp.sum(xc * xc, 1)[:, None] + jnp.sum(y * y, 1)[None, :] - 2 * xc @ y.T
            C = jnp.maximum(C, 0.0)
        return -eps * jax.nn.logsumexp(z[None, :] - C / eps, axis=1)

    return jax.lax.map(chunk, xp).reshape(-1)[: x.shape[0]]


def _softmin_grid(grid: Grid, log_w: jax.Array, h: jax.Array, eps, kernel: str):
    """The same on a grid's points with the separable kernel ``exp(−c/ε)`` (volumes removed),
    by the stabilised-scaling or the log-domain path of :mod:`wgflow.grid.kernels`."""
    lv = jnp.asarray(np.log(grid.volumes()), h.dtype)
    return -eps * (log_kernel_path(kernel)(grid, log_w + h / eps - lv, eps) - lv)


def _eps_schedule(diameter2: float, eps: float, stages: int = 24) -> np.ndarray:
    """ε-scaling: ``stages`` values decreasing geometrically from the squared diameter to ε
    (a fixed length, so that one compiled solver serves every ε)."""
    hi = max(diameter2, eps)
    return eps * (hi / eps) ** np.linspace(1.0, 0.0, stages)


def _softmin(x, y, grid, periods, kernel):
    """The softmin operator from the atoms ``y`` to ``x`` (the grid's separable kernel when both are its points)."""
    if grid is not None:
        return lambda lw, h, e: _softmin_grid(grid, lw, h, e, kernel)
    return lambda lw, h, e: _softmin_dense(x, y, lw, h, e, periods)


@partial(jax.jit, static_argnames=("grid", "periods", "max_iter", "kernel"))
def _ot_eps(xa, xb, la, lb, sched, tol, *, grid, periods, max_iter, kernel):
    """Balanced OT_ε(α, β) (KL(π | α⊗β) convention) by log-domain Sinkhorn with ε-scaling.

    ``sched``: the ε's of the annealing, ending with the target ε (one update each, then
    updates at the target until the a-marginal L1 error ≤ tol). Returns (value, iterations, error).
    """
    op_ab, op_ba = _softmin(xa, xb, grid, periods, kernel), _softmin(xb, xa, grid, periods, kernel)
    a = jnp.exp(la)
    eps = sched[-1]

    def anneal(c, e):
        f, g = c
        f = op_ab(lb, g, e)
        return (f, op_ba(la, f, e)), None

    (f, g), _ = jax.lax.scan(anneal, (jnp.zeros_like(la), jnp.zeros_like(lb)), sched[:-1])

    def cond(c):
        it, _, _, err = c
        return (it < max_iter) & (err > tol)

    def body(c):
        it, f, g, _ = c
        f_new = op_ab(lb, g, eps)
        err = jnp.sum(a * jnp.abs(jnp.expm1((f - f_new) / eps)))  # a-marginal error of (f, g)
        return it + 1, f_new, op_ba(la, f_new, eps), err

    it, f, g, err = jax.lax.while_loop(cond, body, (0, f, g, jnp.asarray(jnp.inf, la.dtype)))
    return jnp.dot(f, a) + jnp.dot(g, jnp.exp(lb)), it, err


@partial(jax.jit, static_argnames=("grid", "periods", "max_iter", "kernel"))
def _ot_self(x, la, sched, tol, *, grid, periods, max_iter, kernel):
    """OT_ε(α, α) by the symmetric (averaged) Sinkhorn iteration (Feydy et al. 2019, eq. 25)."""
    op = _softmin(x, x, grid, periods, kernel)
    a = jnp.exp(la)
    eps = sched[-1]
    f, _ = jax.lax.scan(lambda f, e: (0.5 * (f + op(la, f, e)), None), jnp.zeros_like(la), sched[:-1])

    def cond(c):
        it, _, err = c
        return (it < max_iter) & (err > tol)

    def body(c):
        it, f, _ = c
        Tf = op(la, f, eps)
        err = jnp.sum(a * jnp.abs(jnp.expm1((f - Tf) / eps)))
        return it + 1, 0.5 * (f + Tf), err

    it, f, err = jax.lax.while_loop(cond, body, (0, f, jnp.asarray(jnp.inf, la.dtype)))
    return 2 * jnp.dot(f, a), it, err


def sinkhorn_divergence(
    mu: AnyMeasure,
    nu: AnyMeasure,
    blur: float,
    *,
    normalize: bool = False,
    tol: float = 1e-7,
    max_iter: int = 2000,
    kernel: str = "stabilised",
) -> DistanceResult:
    """Debiased Sinkhorn divergence ``S_ε`` with ε = ``blur`` (module docstring), part by part.

    ``tol``: L1 error of the marginals (of the normalised measures) at which each of
    the three Sinkhorn problems stops. A :class:`GridMeasure`'s self term uses its
    grid's separable kernel; so does the cross term when both are on the same ``Grid``
    object (e.g. a particle measure binned with :func:`wgflow.grid.bin_measure`); other
    cross terms are dense, computed in chunks.

    ``kernel``: how a grid's separable kernel is applied — ``"stabilised"`` (the default:
    potentials absorbed, one matrix product per axis, the exact log-sum-exp only for rows that
    would underflow; Schmitzer 2019) or ``"log"`` (an exact log-sum-exp per axis: the reference,
    several times slower on 3-D grids). Both give the same divergence to rounding.
    """
    require_positive(blur, "blur")
    log_kernel_path(kernel)  # an unknown name is refused before any compute
    grid, periods = _frame(mu, nu)
    pa, pb = _parts(mu, grid, "mu"), _parts(nu, grid, "nu")
    masses = _check_masses(pa, pb, normalize)
    dtype = jnp.result_type(float)
    parts, total, its, worst = {}, 0.0, 0, 0.0
    for k, (ma, mb) in masses.items():
        if ma == 0.0:
            parts[k] = 0.0
            continue
        A, B = pa[k], pb[k]
        xa, la = _padded(A.coords, A.weights / ma, dtype)
        xb, lb = _padded(B.coords, B.weights / mb, dtype)
        allc = np.concatenate([A.coords, B.coords])
        span = allc.max(0) - allc.min(0)
        if periods:
            span = np.array([min(s, p / 2) if p else s for s, p in zip(span, periods)])
        sched = jnp.asarray(_eps_schedule(float(np.sum(span**2)), blur), dtype)
        kw = dict(periods=periods, max_iter=int(max_iter), kernel=kernel)
        if A.grid is not None and A.grid is B.grid:  # both on one grid: the cross term is separable too
            (ga, gla), (_, glb) = _self_args(A, xa, la, ma, dtype), _self_args(B, xb, lb, mb, dtype)
            v_ab, i1, e1 = _ot_eps(ga, ga, gla, glb, sched, tol, grid=A.grid, **kw)
        else:
            v_ab, i1, e1 = _ot_eps(xa, xb, la, lb, sched, tol, grid=None, **kw)
        v_aa, i2, e2 = _ot_self(*_self_args(A, xa, la, ma, dtype), sched, tol, grid=A.grid, **kw)
        v_bb, i3, e3 = _ot_self(*_self_args(B, xb, lb, mb, dtype), sched, tol, grid=B.grid, **kw)
        v_ab, v_aa, v_bb = float(v_ab), float(v_aa), float(v_bb)
        s = v_ab - 0.5 * (v_aa + v_bb)
        parts[k] = float(s if normalize else ma * s)
        total += parts[k]
        its = max(its, int(i1), int(i2), int(i3))
        worst = max(worst, float(e1), float(e2), float(e3))
    return DistanceResult(float(total), parts, masses, "sinkhorn", float(blur), its, worst, worst <= tol)


def _padded(x: np.ndarray, w: np.ndarray, dtype) -> tuple:
    """Atoms and log-weights padded with weightless atoms to a size bucket (≤ 25 % more), so that
    measures of nearby sizes share one compiled solver."""
    m = len(w)
    step = 2 ** max(0, int(np.log2(max(m, 1))) - 2)
    size = -(-m // step) * step
    xp = np.concatenate([x, np.repeat(x[:1], size - m, axis=0)])
    lw = np.concatenate([np.log(w), np.full(size - m, -np.inf)])
    return jnp.asarray(xp, dtype), jnp.asarray(lw, dtype)


def _self_args(P: _Part, x, log_w, mass, dtype) -> tuple:
    """(atoms, log weights) for a self term, and the keyword ``grid``: a grid part runs on all its
    points (zero masses included) with the separable kernel."""
    if P.grid is None:
        return x, log_w
    m = P.grid_masses / mass
    return jnp.asarray(P.grid.coords(), dtype), jnp.asarray(np.where(m > 0, np.log(np.where(m > 0, m, 1.0)), -np.inf), dtype)
