"""Axes, grids and boxes: where the neurons of the entropic JKO sit (Peyré 2015).

A :class:`Grid` is a tensor product of 1-D :class:`Axis` objects over a box of
grid coordinates ξ ∈ R^D (or a union of such *blocks*, for the two-scale grid of
docs/jko.md §9). Its separable Gibbs kernel lives in :mod:`wgflow.grid.kernels`
and is also a method of the grid (:meth:`Grid.apply_lse_kernel`,
:meth:`Grid.apply_kernel`), as in OTT-JAX's ``Grid``.

Embedding. The objective sees a neuron as a position θ ∈ Θ ⊂ R^{D'}: for a flat
grid θ = ξ; for ``embedding="circle"`` (the ``sphere`` parameterisation in d = 2)
the first axis is an angle φ and θ = (cos φ, sin φ, ξ_2, …), so that the grid
cost is the squared geodesic distance on S¹ × R.

The grid's masses are stored flat, shape ``(C, N)``: ``C`` nonnegative
*components* (1, or 2 for the positive and negative parts of a signed measure),
points in block-major, C (row-major) order within a block.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import require, require_positive
from wgflow.grid import kernels as _kernels

EMBEDDINGS = ("identity", "circle")

# --------------------------------------------------------------------------- axes


@dataclasses.dataclass(frozen=True, eq=False)
class Axis:
    """One axis of a tensor grid: sorted cell centres, cell widths, optional period.

    Build with :meth:`uniform`, :meth:`periodic`, :meth:`symlog` or :meth:`from_points`.
    The cells ``[edges[k], edges[k+1]]`` tile the axis' interval (for a periodic
    axis: the circle of length ``period``).
    """

    points: np.ndarray
    edges: np.ndarray
    period: float | None = None
    kind: str = "custom"

    def __post_init__(self):
        pts, edges = np.asarray(self.points, np.float64), np.asarray(self.edges, np.float64)
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "edges", edges)
        require(pts.ndim == 1 and pts.size >= 1, "grid.axis", "needs a 1-D array of at least one point", value=pts.shape)
        require(edges.shape == (pts.size + 1,), "grid.axis.edges", f"must have {pts.size + 1} entries, one more than the points")
        require(bool(np.all(np.isfinite(pts))) and bool(np.all(np.isfinite(edges))), "grid.axis", "points and edges must be finite")
        require(bool(np.all(np.diff(edges) > 0)), "grid.axis.edges", "must be strictly increasing", "give sorted, distinct points")
        require(
            bool(np.all((pts >= edges[:-1]) & (pts <= edges[1:]))),
            "grid.axis",
            "each point must lie in its cell [edges[k], edges[k+1]]",
        )
        if self.period is not None:
            require_positive(self.period, "grid.axis.period")
            require(
                abs((edges[-1] - edges[0]) - self.period) <= 1e-9 * self.period,
                "grid.axis.period",
                f"the cells of a periodic axis must tile one period ({self.period}), they cover {edges[-1] - edges[0]}",
            )

    # -- constructors
    @classmethod
    def uniform(cls, lo: float, hi: float, n: int) -> Axis:
        """``n`` cells tiling ``[lo, hi]``; points at the cell centres (spacing ``(hi − lo)/n``)."""
        _check_n(n)
        require(np.isfinite(lo) and np.isfinite(hi) and hi > lo, "grid.box", f"needs lo < hi, got [{lo}, {hi}]")
        edges = np.linspace(lo, hi, n + 1)
        return cls(0.5 * (edges[:-1] + edges[1:]), edges, None, "uniform")

    @classmethod
    def periodic(cls, n: int, period: float = 2 * math.pi, start: float = -math.pi) -> Axis:
        """``n`` cells tiling the circle ``[start, start + period)``; the cost is the squared wrapped distance."""
        _check_n(n)
        require_positive(period, "grid.period")
        edges = start + period * np.arange(n + 1) / n
        return cls(0.5 * (edges[:-1] + edges[1:]), edges, float(period), "periodic")

    @classmethod
    def symlog(cls, half_width: float, n: int, linear_width: float) -> Axis:
        """``n`` cells on ``[−half_width, half_width]``, fine near 0 and log-spaced beyond ``linear_width``.

        Edges ``e = linear_width · sinh(s)`` with ``s`` uniform: spacing ≈ ``2 linear_width S / n``
        near 0 (``S = asinh(half_width / linear_width)``) and growing geometrically outside
        ``|ξ| ≳ linear_width``: the radial-scale option (docs/jko.md §9).
        """
        _check_n(n)
        require_positive(half_width, "grid.half_width")
        require_positive(linear_width, "grid.linear_width")
        S = math.asinh(half_width / linear_width)
        s = np.linspace(-S, S, n + 1)
        edges = linear_width * np.sinh(s)
        pts = linear_width * np.sinh(0.5 * (s[:-1] + s[1:]))
        return cls(pts, edges, None, "symlog")

    @classmethod
    def from_points(cls, points, period: float | None = None) -> Axis:
        """Arbitrary sorted points; cell edges halfway between neighbours (end cells symmetric)."""
        pts = np.asarray(points, np.float64)
        require(pts.ndim == 1 and pts.size >= 2, "grid.axis", "needs at least two points", value=pts.shape)
        require(bool(np.all(np.diff(pts) > 0)), "grid.axis", "points must be strictly increasing")
        mid = 0.5 * (pts[:-1] + pts[1:])
        if period is None:
            edges = np.concatenate([[pts[0] - (mid[0] - pts[0])], mid, [pts[-1] + (pts[-1] - mid[-1])]])
        else:
            gap = pts[0] + period - pts[-1]
            require(gap > 0, "grid.axis", f"periodic points must span less than one period ({period})")
            edges = np.concatenate([[pts[0] - gap / 2], mid, [pts[-1] + gap / 2]])
        return cls(pts, edges, period, "custom")

    # -- properties
    @property
    def size(self) -> int:
        return self.points.size

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.edges)

    @property
    def lo(self) -> float:
        return float(self.edges[0])

    @property
    def hi(self) -> float:
        return float(self.edges[-1])

    def scaled(self, factor: float) -> Axis:
        """The axis with every coordinate multiplied by ``factor`` (not for periodic axes)."""
        require(self.period is None, "grid.scale", "a periodic axis cannot be rescaled")
        return Axis(self.points * factor, self.edges * factor, None, self.kind)

    def wrap(self, x: np.ndarray) -> np.ndarray:
        """Coordinates brought into ``[lo, lo + period)`` on a periodic axis; unchanged otherwise."""
        if self.period is None:
            return x
        return self.lo + np.mod(x - self.lo, self.period)

    def __repr__(self) -> str:
        p = f", period={self.period:g}" if self.period else ""
        return f"Axis({self.kind}, n={self.size}, [{self.lo:g}, {self.hi:g}]{p})"


def _check_n(n) -> None:
    require(isinstance(n, (int, np.integer)) and n >= 1, "grid.shape", "each axis needs a positive integer number of points", value=n)


# --------------------------------------------------------------------------- grids


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """A tensor grid of neurons (or a union of tensor *blocks* with the same axis types).

    ``blocks``: one tuple of :class:`Axis` per block; all blocks have the same number
    of axes and the same periodic axes. ``embedding``: ``"identity"`` (θ = ξ) or
    ``"circle"`` (first axis is an angle, θ = (cos φ, sin φ, ξ_2, …)).

    Grids are static (hashable by identity): they are compiled into the programs
    that use them. Build with :func:`box_grid`, :func:`sphere_grid`,
    :func:`symlog_grid` or :func:`two_scale_grid`.
    """

    blocks: tuple
    embedding: str = "identity"

    def __post_init__(self):
        blocks = tuple(tuple(b) for b in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        require(len(blocks) >= 1, "grid", "needs at least one block of axes")
        D = len(blocks[0])
        require(1 <= D <= 4, "grid", f"supports 1 to 4 axes, got {D}", "use a grid of dimension 1–4")
        for b in blocks:
            require(len(b) == D, "grid.blocks", "all blocks must have the same number of axes")
            for ax, ax0 in zip(b, blocks[0]):
                require(isinstance(ax, Axis), "grid.axes", "must be Axis objects", "build them with Axis.uniform / periodic / symlog")
                require(ax.period == ax0.period, "grid.blocks", "all blocks must share the periodic axes and their periods")
        require(self.embedding in EMBEDDINGS, "grid.embedding", f"unknown embedding {self.embedding!r}", f"use one of {list(EMBEDDINGS)}")
        if self.embedding == "circle":
            ax = blocks[0][0]
            require(
                ax.period is not None and abs(ax.period - 2 * math.pi) < 1e-12,
                "grid.embedding",
                "'circle' needs a first axis periodic with period 2π (the angle)",
                "use sphere_grid(...) or Axis.periodic(n) as the first axis",
            )

    # -- sizes
    @property
    def ndim(self) -> int:
        """``D``, the number of grid axes."""
        return len(self.blocks[0])

    @property
    def dim(self) -> int:
        """Dimension of the embedded positions θ (``D``, or ``D + 1`` for the circle embedding)."""
        return self.ndim + (1 if self.embedding == "circle" else 0)

    @property
    def shapes(self) -> tuple:
        return tuple(tuple(ax.size for ax in b) for b in self.blocks)

    @property
    def shape(self) -> tuple:
        """The shape of a single-block grid (for reshaping masses into an image)."""
        require(len(self.blocks) == 1, "grid", "has several blocks; use grid.shapes and grid.split(masses)")
        return self.shapes[0]

    @property
    def block_sizes(self) -> tuple:
        return tuple(int(np.prod(s)) for s in self.shapes)

    @property
    def size(self) -> int:
        """``N``, the total number of grid points."""
        return int(sum(self.block_sizes))

    @property
    def periods(self) -> tuple:
        return tuple(ax.period for ax in self.blocks[0])

    @property
    def spacing(self) -> float:
        """The largest cell width over all axes: the grid's resolution."""
        return float(max(ax.widths.max() for b in self.blocks for ax in b))

    @property
    def min_spacing(self) -> float:
        return float(min(ax.widths.min() for b in self.blocks for ax in b))

    def bounds(self) -> np.ndarray:
        """``(D, 2)``: the smallest box (in grid coordinates) containing every block."""
        lo = np.min([[ax.lo for ax in b] for b in self.blocks], axis=0)
        hi = np.max([[ax.hi for ax in b] for b in self.blocks], axis=0)
        return np.stack([lo, hi], axis=1)

    # -- points
    def coords(self) -> np.ndarray:
        """Grid coordinates ``(N, D)`` of every point (block-major, row-major within a block)."""
        out = []
        for b in self.blocks:
            mesh = np.meshgrid(*[ax.points for ax in b], indexing="ij")
            out.append(np.stack([m.ravel() for m in mesh], axis=1))
        return np.concatenate(out, axis=0)

    def embed(self, coords):
        """Positions θ in Θ for grid coordinates ``(..., D)`` (numpy or jax)."""
        if self.embedding == "identity":
            return coords
        xp = jnp if isinstance(coords, jax.Array) else np
        phi = coords[..., :1]
        return xp.concatenate([xp.cos(phi), xp.sin(phi), coords[..., 1:]], axis=-1)

    def to_coords(self, positions) -> np.ndarray:
        """Grid coordinates of positions θ ``(m, dim)`` (the inverse of :meth:`embed`)."""
        positions = np.asarray(positions, np.float64)
        if self.embedding == "identity":
            return positions
        phi = np.arctan2(positions[:, 1], positions[:, 0])
        coords = np.concatenate([phi[:, None], positions[:, 2:]], axis=1)
        coords[:, 0] = self.blocks[0][0].wrap(coords[:, 0])
        return coords

    def points(self) -> np.ndarray:
        """Positions θ ``(N, dim)`` of every grid point: what the objective evaluates."""
        return self.embed(self.coords())

    @functools.cached_property
    def coverage(self) -> np.ndarray:
        """Number of blocks whose box contains each point (all ones for a single block)."""
        if len(self.blocks) == 1:
            return np.ones(self.size)
        xi = self.coords()
        cover = np.zeros(self.size)
        for b in self.blocks:
            inside = np.ones(self.size, bool)
            for k, ax in enumerate(b):
                if ax.period is None:
                    inside &= (xi[:, k] >= ax.lo) & (xi[:, k] <= ax.hi)
            cover += inside
        return cover

    def volumes(self) -> np.ndarray:
        """Cell volumes ``v_i`` (N,): products of the cell widths, divided by the number of
        blocks that cover the point (so that the reference measure Σ v_i δ_i is ≈ Lebesgue)."""
        vols = []
        for b in self.blocks:
            mesh = np.meshgrid(*[ax.widths for ax in b], indexing="ij")
            vols.append(np.prod(np.stack([m.ravel() for m in mesh]), axis=0))
        return np.concatenate(vols) / self.coverage

    def split(self, masses) -> list:
        """Flat ``(..., N)`` arrays as a list of per-block arrays ``(..., *block_shape)``."""
        masses = np.asarray(masses)
        out, start = [], 0
        for shape, size in zip(self.shapes, self.block_sizes):
            out.append(masses[..., start : start + size].reshape(masses.shape[:-1] + shape))
            start += size
        return out

    def contains(self, coords: np.ndarray) -> np.ndarray:
        """Whether each grid coordinate ``(m, D)`` lies in the union of the blocks' boxes."""
        inside = np.zeros(len(coords), bool)
        for b in self.blocks:
            ok = np.ones(len(coords), bool)
            for k, ax in enumerate(b):
                if ax.period is None:
                    ok &= (coords[:, k] >= ax.lo) & (coords[:, k] <= ax.hi)
            inside |= ok
        return inside

    # -- kernels (the kernel as a method of the geometry, as OTT-JAX's ``Grid.apply_lse_kernel``)
    def apply_lse_kernel(self, log_v: Array, eps, sign: Array | None = None):
        """``log (K̃ v)`` on this grid: exactly :func:`~wgflow.grid.kernels.log_kernel` ``(self, log_v, eps, sign)``.

        ``log_v`` has shape ``(..., N)``; the log-sum-exp is exact axis by axis (stable
        whatever ε). With ``sign`` (entries in {−1, 0, 1}) the vector is ``sign · exp(log_v)``
        and the result is ``(log |K̃ v|, sign(K̃ v))``. The arguments are wgflow's, not
        OTT-JAX's (no potentials ``f, g`` and no ``axis``: the kernel is symmetric).
        """
        return _kernels.log_kernel(self, log_v, eps, sign)

    def apply_stabilised_kernel(self, log_v: Array, eps, sign: Array | None = None):
        """:meth:`apply_lse_kernel` by stabilised scaling: exactly :func:`~wgflow.grid.kernels.stabilised_log_kernel`.

        The same result to rounding; per-axis matrix products with the row maxima absorbed,
        the exact log-sum-exp only for rows whose sums would underflow.
        """
        return _kernels.stabilised_log_kernel(self, log_v, eps, sign)

    def apply_kernel(self, v: Array, eps) -> Array:
        """``K̃ v`` in the standard domain on this grid: exactly :func:`~wgflow.grid.kernels.kernel` ``(self, v, eps)``.

        One BLAS product per axis; fast, but under/overflows for small ε: use
        :meth:`apply_lse_kernel` inside solvers.
        """
        return _kernels.kernel(self, v, eps)

    def __repr__(self) -> str:
        body = " ∪ ".join("×".join(repr(ax) for ax in b) for b in self.blocks)
        return f"Grid(N={self.size}, {body}, embedding={self.embedding})"


def box_grid(lo, hi, shape: Sequence[int], periodic: Sequence[bool] | None = None) -> Grid:
    """A uniform grid of ``shape`` cells over the box ``Π_k [lo_k, hi_k]`` (scalars broadcast).

    ``periodic[k]`` makes axis ``k`` a circle of length ``hi_k − lo_k``.
    """
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    D = len(shape)
    lo = np.broadcast_to(np.asarray(lo, np.float64), (D,))
    hi = np.broadcast_to(np.asarray(hi, np.float64), (D,))
    periodic = (False,) * D if periodic is None else tuple(periodic)
    require(len(periodic) == D, "grid.periodic", f"needs one flag per axis ({D})")
    axes = []
    for k in range(D):
        if periodic[k]:
            axes.append(Axis.periodic(shape[k], float(hi[k] - lo[k]), float(lo[k])))
        else:
            axes.append(Axis.uniform(float(lo[k]), float(hi[k]), shape[k]))
    return Grid((tuple(axes),))


def symlog_grid(half_width, shape: Sequence[int], linear_width) -> Grid:
    """A tensor grid whose axes are :meth:`Axis.symlog`: fine near 0, log-spaced out to ``half_width``."""
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    D = len(shape)
    hw = np.broadcast_to(np.asarray(half_width, np.float64), (D,))
    lw = np.broadcast_to(np.asarray(linear_width, np.float64), (D,))
    return Grid((tuple(Axis.symlog(float(hw[k]), shape[k], float(lw[k])) for k in range(D)),))


def sphere_grid(n_angle: int, a_axis: Axis | tuple) -> Grid:
    """The ``sphere`` parameterisation in d = 2: angle φ (periodic, ``n_angle`` cells) × the scale a.

    ``a_axis``: an :class:`Axis`, or ``(lo, hi, n)`` for a uniform one. Positions θ = (cos φ, sin φ, a).
    """
    if not isinstance(a_axis, Axis):
        a_axis = Axis.uniform(*a_axis)
    return Grid(((Axis.periodic(n_angle), a_axis),), embedding="circle")


def two_scale_grid(grid: Grid, factor: float, axes: Sequence[int] | None = None) -> Grid:
    """The two-scale fix of a grid that bounds the neuron's scale: every grid point duplicated at a second, larger scale.

    The result is the union of ``grid`` and a copy whose (non-periodic, or the listed)
    axes are multiplied by ``factor`` — the same number of points covering a box
    ``factor`` times larger. The kernel couples the two blocks exactly.
    """
    require(len(grid.blocks) == 1, "grid", "two_scale_grid needs a single-block grid")
    require_positive(factor, "grid.factor")
    require(factor != 1.0, "grid.factor", "must differ from 1")
    base = grid.blocks[0]
    axes = [k for k, ax in enumerate(base) if ax.period is None] if axes is None else list(axes)
    big = tuple(ax.scaled(factor) if k in axes else ax for k, ax in enumerate(base))
    return Grid((base, big), grid.embedding)
