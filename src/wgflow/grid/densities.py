"""Initial densities on a grid, and particles drawn from grid masses (the same initial measure for both flows)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError, require, require_positive
from wgflow.grid.geometry import Grid
from wgflow.measure import Measure


def initial_grid_density(
    grid: Grid,
    kind: str = "gaussian",
    *,
    mean=0.0,
    std=1.0,
    r_min: float = 0.0,
    r_max: float = 1.0,
    mass: float = 1.0,
    components: int = 1,
    positive_fraction: float = 0.5,
    max_outside: float = 1e-5,
) -> np.ndarray:
    """Initial masses ``(C, N)`` on ``grid``: the same shape on each component.

    - ``"gaussian"``: N(mean, std² I) in the grid coordinates of the non-periodic axes,
      uniform along periodic axes; cell masses are exact integrals of the density
      over the cells (per-axis erf differences), so the discrete law is the
      continuous one restricted to the box.
    - ``"annulus"``: uniform on ``r_min ≤ |ξ| ≤ r_max`` (non-periodic coordinates),
      by the midpoint rule on each cell.
    - ``"uniform"``: uniform over the grid's box.

    ``mass`` is the total mass; with ``components=2`` (signed measures) the positive
    grid gets ``positive_fraction`` of it. Raises :class:`InputError` when more than
    ``max_outside`` (relative) of the density lies outside the box.
    """
    from scipy.special import erf

    require_positive(mass, "init.mass")
    require(components in (1, 2), "init.components", "must be 1 or 2 (positive and negative grids)", value=components)
    require(0.0 <= positive_fraction <= 1.0, "init.positive_fraction", "must lie in [0, 1]", value=positive_fraction)
    flat_axes = [k for k, p in enumerate(grid.periods) if p is None]
    dens: np.ndarray  # set by every branch below
    outside_total = 0.0
    if kind == "gaussian":
        mean = np.broadcast_to(np.asarray(mean, np.float64), (grid.ndim,))
        std = np.broadcast_to(np.asarray(std, np.float64), (grid.ndim,))
        require(bool(np.all(std > 0)), "init.std", "must be > 0", value=std.tolist())
        if len(grid.blocks) == 1:  # exact cell integrals: per-axis erf differences
            factors = []
            for k, ax in enumerate(grid.blocks[0]):
                if ax.period is None:
                    cdf = 0.5 * (1 + erf((ax.edges - mean[k]) / (math.sqrt(2) * std[k])))
                    factors.append(np.diff(cdf))
                else:
                    factors.append(ax.widths / ax.period)
            mesh = np.meshgrid(*factors, indexing="ij")
            dens = np.prod(np.stack([m.ravel() for m in mesh]), axis=0)
        else:  # overlapping blocks: midpoint rule with the reference volumes
            xi = grid.coords()
            z = (xi[:, flat_axes] - mean[flat_axes]) / std[flat_axes]
            pdf = np.exp(-0.5 * np.sum(z * z, axis=1)) / np.prod(np.sqrt(2 * math.pi) * std[flat_axes])
            for p in grid.periods:
                if p is not None:
                    pdf = pdf / p
            dens = pdf * grid.volumes()
        if len(grid.blocks) == 1:
            outside_total = 1.0 - dens.sum()
        else:  # exact mass outside the union's bounding box (a two-scale grid covers that box)
            b = grid.bounds()
            inside = 1.0
            for k in flat_axes:
                z = (b[k] - mean[k]) / (math.sqrt(2) * std[k])
                inside *= 0.5 * (erf(z[1]) - erf(z[0]))
            outside_total = 1.0 - inside
    elif kind in ("annulus", "uniform"):
        xi = grid.coords()
        v = grid.volumes()
        if kind == "annulus":
            require(0 <= r_min < r_max, "init.r_min", f"need 0 <= r_min < r_max, got {r_min}, {r_max}")
            r = np.linalg.norm(xi[:, flat_axes], axis=1) if flat_axes else np.zeros(len(xi))
            in_annulus = (r >= r_min) & (r <= r_max)
            b = grid.bounds()
            reach = [min(-b[k, 0], b[k, 1]) for k in flat_axes]
            if flat_axes and min(reach) < r_max:
                raise InputError(
                    "init.r_max",
                    f"the annulus of radius {r_max} does not fit in the grid's box {b.tolist()}",
                    f"enlarge the box to at least ±{r_max} or reduce r_max",
                )
            dens = np.where(in_annulus, v, 0.0)
        else:
            dens = v.copy()
        require(dens.sum() > 0, "init", f"the {kind} density has no grid point; refine the grid")
        dens = dens / dens.sum()
    else:
        raise InputError("init.kind", f"unknown initial density {kind!r}", "use 'gaussian', 'annulus' or 'uniform'")
    if outside_total > max_outside:
        raise InputError(
            "grid",
            f"the box {grid.bounds().tolist()} does not contain the initial {kind} density: "
            f"{outside_total:.3g} of its mass lies outside (allowed: {max_outside:g})",
            "enlarge the box (or raise max_outside to accept the truncation)",
        )
    dens = dens / dens.sum()
    if components == 1:
        return mass * dens[None]
    return np.stack([mass * positive_fraction * dens, mass * (1 - positive_fraction) * dens])


def sample_from_grid(key: Array, grid: Grid, masses, m: int, *, signs: Sequence[float] = (1.0,), jitter: bool = True) -> Measure:
    """``m`` particles drawn from the grid's density: the same initial measure for particles.

    Component ``c`` gets ``m_c ≈ m · M_c / Σ M`` particles (``M_c`` its total mass), each with
    mass ``signs[c] · M_c / m_c``, so totals are exact. A particle sits at a grid point
    drawn with probability ∝ its mass, moved (``jitter=True``) uniformly within its cell:
    the particles then sample the piecewise-constant density of the grid masses.
    """
    masses = np.asarray(masses, np.float64)
    if masses.ndim == 1:
        masses = masses[None]
    C = masses.shape[0]
    require(masses.shape == (C, grid.size), "masses", f"must have shape (C, {grid.size}), got {masses.shape}")
    require(len(signs) == C, "signs", f"need one sign per component ({C})")
    require(isinstance(m, (int, np.integer)) and m >= C, "m", f"must be an integer >= {C}", value=m)
    require(bool(np.all(masses >= 0)) and bool(np.all(np.isfinite(masses))), "masses", "must be finite and >= 0")
    totals = masses.sum(axis=1)
    require(totals.sum() > 0, "masses", "are all zero")
    counts = np.floor(m * totals / totals.sum()).astype(int)
    counts[np.argmax(totals)] += m - counts.sum()
    counts = np.where((totals > 0) & (counts == 0), 1, counts)
    xi_all = grid.coords()
    block_of = np.concatenate([np.full(s, i) for i, s in enumerate(grid.block_sizes)])
    starts = np.concatenate([[0], np.cumsum(grid.block_sizes)])
    positions, out_mass = [], []
    keys = jax.random.split(key, 2 * C)
    for c in range(C):
        if counts[c] == 0:
            continue
        cdf = np.cumsum(masses[c] / totals[c])
        draws = np.asarray(jax.random.uniform(keys[2 * c], (int(counts[c]),), jnp.float32 if not jax.config.jax_enable_x64 else jnp.float64))  # type: ignore[attr-defined]  # a JAX config flag, set dynamically
        idx = np.minimum(np.searchsorted(cdf, draws * cdf[-1], side="right"), grid.size - 1)  # inverse CDF
        xi = xi_all[idx].copy()
        if jitter:
            u = np.asarray(jax.random.uniform(keys[2 * c + 1], xi.shape, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32))  # type: ignore[attr-defined]  # a JAX config flag, set dynamically
            for bi in range(len(grid.blocks)):
                sel = block_of[idx] == bi
                if not sel.any():
                    continue
                local = np.array(np.unravel_index(idx[sel] - starts[bi], grid.shapes[bi])).T
                for k, ax in enumerate(grid.blocks[bi]):
                    lo, hi = ax.edges[local[:, k]], ax.edges[local[:, k] + 1]
                    xi[sel, k] = ax.wrap(lo + u[sel, k] * (hi - lo))
        positions.append(grid.embed(xi))
        out_mass.append(np.full(int(counts[c]), signs[c] * totals[c] / counts[c]))
    dtype = jnp.result_type(float)
    return Measure(jnp.asarray(np.concatenate(positions), dtype), jnp.asarray(np.concatenate(out_mass), dtype))
