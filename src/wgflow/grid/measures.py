"""Masses on a grid, and the way from grid masses to a :class:`~wgflow.measure.Measure`.

:class:`GridMeasure` holds the masses ``(C, N)`` with a sign per component;
:func:`to_measure` gives the measure the objective and the metrics evaluate;
:func:`bin_measure` is the way back from a particle measure (cloud-in-cell), and
:func:`mass_outside` says how much of a particle measure a grid's box misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from wgflow.errors import InputError, require
from wgflow.grid.geometry import Grid
from wgflow.measure import Measure

# --------------------------------------------------------------------------- measures on a grid


class GridMeasure(eqx.Module):
    """Masses ``(C, N)`` on a :class:`Grid`, component ``c`` carrying the sign ``signs[c]``.

    :meth:`to_measure` gives the :class:`~wgflow.measure.Measure` the objective and the
    metrics evaluate: the grid points (once per component) with signed masses. The masses
    stay what they were given as (NumPy or JAX); a 1-D array is one component.
    """

    grid: Grid = eqx.field(static=True)
    masses: Any
    signs: tuple = eqx.field(static=True, default=(1.0,))

    def __init__(self, grid: Grid, masses, signs: Sequence[float] = (1.0,)):
        require(isinstance(grid, Grid), "grid", "must be a wgflow.grid.Grid", value=grid)
        if not isinstance(masses, jax.Array):
            masses = np.asarray(masses)
        if masses.ndim == 1:
            masses = masses[None]
        self.grid = grid
        self.masses = masses
        self.signs = tuple(float(s) for s in signs)
        require(
            tuple(masses.shape) == (len(self.signs), grid.size),
            "grid_measure.masses",
            f"must have shape (C, N) = ({len(self.signs)}, {grid.size}), got {tuple(masses.shape)}",
        )

    @property
    def total_masses(self) -> np.ndarray:
        return np.asarray(self.masses).sum(axis=-1)

    def to_measure(self) -> Measure:
        """The :class:`Measure` of these masses (:func:`to_measure`)."""
        return to_measure(self.grid, self.masses, self.signs)


def to_measure(grid: Grid, masses, signs: Sequence[float] = (1.0,), *, points=None) -> Measure:
    """The :class:`Measure` of grid masses ``(C, N)`` (or ``(N,)``): positions θ of the grid points,
    repeated for each component, and masses ``signs[c] · masses[c]``. This is the one way from
    grid masses to a Measure; ``points`` (N, dim) passes the grid's positions when they are
    at hand already (a compiled flow keeps them as an input rather than a constant)."""
    masses = jnp.asarray(masses)
    if masses.ndim == 1:
        masses = masses[None]
    C = masses.shape[0]
    require(len(signs) == C, "signs", f"need one sign per component ({C}), got {len(signs)}")
    pts = jnp.asarray(grid.points() if points is None else points, masses.dtype)
    s = jnp.asarray(signs, masses.dtype)
    return Measure(jnp.tile(pts, (C, 1)), (s[:, None] * masses).reshape(-1))


def bin_measure(grid: Grid, mu: Measure, signs: Sequence[float] = (1.0,), *, field: str = "p0", outside: str = "error") -> np.ndarray:
    """Masses ``(C, N)`` on a single-block ``grid`` of a particle measure ``mu`` (cloud-in-cell).

    Each atom's mass is shared between the 2^D nearest grid points with multilinear
    weights (which keeps the mean on a uniform grid); a negative mass goes to the
    component of sign −1. An atom outside the box raises :class:`InputError`
    (``outside="error"``), or goes to the nearest boundary points (``outside="clip"``;
    :func:`mass_outside` says how much that moves).
    """
    require(outside in ("error", "clip"), "outside", f"must be 'error' or 'clip', got {outside!r}")
    require(isinstance(mu, Measure), field, "must be a Measure or grid masses")
    require(len(grid.blocks) == 1, "grid", "binning a particle measure needs a single-block grid")
    pos = np.asarray(mu.positions, np.float64)
    mass = np.asarray(mu.masses, np.float64)
    require(pos.ndim == 2 and pos.shape[1] == grid.dim, f"{field}.positions", f"must be (m, {grid.dim}) for this grid, got {pos.shape}")
    xi = grid.to_coords(pos)
    out = ~grid.contains(xi) & (mass != 0)
    if out.any() and outside == "error":
        b = grid.bounds()
        lo, hi = xi.min(axis=0), xi.max(axis=0)
        raise InputError(
            field,
            f"{int(out.sum())} atoms carrying {np.abs(mass[out]).sum():.3g} of the mass {np.abs(mass).sum():.3g} lie outside "
            f"the grid's box {b.tolist()} (the atoms span {np.stack([lo, hi], 1).tolist()})",
            "enlarge the box so that it contains the initial measure",
        )
    signs = tuple(float(s) for s in signs)
    require(set(signs) <= {1.0, -1.0}, "signs", "must be ±1")
    if len(signs) == 1:
        require(bool(np.all(mass * signs[0] >= 0)), f"{field}.masses", f"all masses must have the sign {signs[0]:+g} of the single component")
    axes = grid.blocks[0]
    idx_w = []
    for k, ax in enumerate(axes):
        x = xi[:, k]
        pts = ax.points
        if ax.period is not None:
            ext = np.concatenate([[pts[-1] - ax.period], pts, [pts[0] + ax.period]])
            j = np.clip(np.searchsorted(ext, x, side="right") - 1, 0, len(ext) - 2)
            w = (x - ext[j]) / (ext[j + 1] - ext[j])
            idx_w.append(((j - 1) % ax.size, j % ax.size, w))
        else:
            j = np.clip(np.searchsorted(pts, x, side="right") - 1, 0, ax.size - 1)
            j1 = np.minimum(j + 1, ax.size - 1)
            gap = np.where(j1 > j, pts[j1] - pts[j], 1.0)
            w = np.clip(np.where(j1 > j, (x - pts[j]) / gap, 0.0), 0.0, 1.0)
            idx_w.append((j, j1, w))
    shape = grid.shapes[0]
    C = len(signs)
    result = np.zeros((C, grid.size))
    sgn = np.where(mass >= 0, 1.0, -1.0)
    comp = np.full(len(mass), -1)
    for c, s in enumerate(signs):
        comp[sgn == s] = c
    require(bool(np.all(comp >= 0)), f"{field}.masses", "has masses of a sign that no component carries")
    for corner in range(2**grid.ndim):
        weight = np.abs(mass).copy()
        index = []
        for k, (j0, j1, w) in enumerate(idx_w):
            hi = (corner >> k) & 1
            index.append(j1 if hi else j0)
            weight *= w if hi else (1.0 - w)
        flat = np.ravel_multi_index(tuple(index), shape)
        np.add.at(result, (comp, flat), weight)
    return result


def mass_outside(grid: Grid, mu: Measure) -> float:
    """The fraction of ``|mu|``'s mass on atoms outside ``grid``'s box."""
    mass = np.abs(np.asarray(mu.masses, np.float64))
    out = ~grid.contains(grid.to_coords(np.asarray(mu.positions, np.float64)))
    return float(mass[out].sum() / max(mass.sum(), 1e-300))
