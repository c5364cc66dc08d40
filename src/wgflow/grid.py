"""Fixed grids of neurons and their separable Gibbs kernels (DESIGN §2, "Entropic JKO on a grid").

A :class:`Grid` is a tensor product of 1-D :class:`Axis` objects over a box of
grid coordinates ξ ∈ R^D (or a union of such *blocks*, for the two-scale grid of
seed 001 §2.3.1). The cost between two grid points is separable,

    c(ξ, ξ') = Σ_k c_k(ξ_k, ξ'_k),   c_k(s, t) = (s − t)²  or, on a periodic axis, the wrapped (s − t)²,

so the Gibbs kernel ``K̃_ij = v_i exp(−c(ξ_i, ξ_j)/ε) v_j`` (``v`` the cell volumes,
see below) is a Kronecker product of ``D`` matrices of size ``N_k × N_k`` and is
applied axis by axis: ``N·Σ_k N_k`` work and ``O(N)`` memory, never ``N × N``.
:func:`log_kernel` applies it in the log domain (an exact log-sum-exp per axis,
chunked so that its buffers stay small), :func:`kernel` in the standard domain
(one BLAS product per axis; fast, but under/overflows for small ε).

Reference measure. The cell volumes ``v_i`` enter the kernel so that the discrete
entropy ``Σ π_ij (log(π_ij / (v_i v_j)) − 1)`` is the Riemann sum of the continuous
``∫ π (log π − 1)``: results do not depend on the grid spacing, and non-uniform
axes (:meth:`Axis.symlog`) carry no spurious entropic drift towards their fine
parts. On a uniform grid ``v`` is a constant and only shifts potentials.

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
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError, require, require_positive
from wgflow.measure import Measure

#: Elements of the (rows × N_out × N_in) buffer of one chunk of the per-axis log-sum-exp.
LSE_CHUNK_ELEMENTS = 2**20

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
    def uniform(cls, lo: float, hi: float, n: int) -> "Axis":
        """``n`` cells tiling ``[lo, hi]``; points at the cell centres (spacing ``(hi − lo)/n``)."""
        _check_n(n)
        require(np.isfinite(lo) and np.isfinite(hi) and hi > lo, "grid.box", f"needs lo < hi, got [{lo}, {hi}]")
        edges = np.linspace(lo, hi, n + 1)
        return cls(0.5 * (edges[:-1] + edges[1:]), edges, None, "uniform")

    @classmethod
    def periodic(cls, n: int, period: float = 2 * math.pi, start: float = -math.pi) -> "Axis":
        """``n`` cells tiling the circle ``[start, start + period)``; the cost is the squared wrapped distance."""
        _check_n(n)
        require_positive(period, "grid.period")
        edges = start + period * np.arange(n + 1) / n
        return cls(0.5 * (edges[:-1] + edges[1:]), edges, float(period), "periodic")

    @classmethod
    def symlog(cls, half_width: float, n: int, linear_width: float) -> "Axis":
        """``n`` cells on ``[−half_width, half_width]``, fine near 0 and log-spaced beyond ``linear_width``.

        Edges ``e = linear_width · sinh(s)`` with ``s`` uniform: spacing ≈ ``2 linear_width S / n``
        near 0 (``S = asinh(half_width / linear_width)``) and growing geometrically outside
        ``|ξ| ≳ linear_width``: the radial-scale option of seed 001 §2.3.1.
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
    def from_points(cls, points, period: float | None = None) -> "Axis":
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

    def scaled(self, factor: float) -> "Axis":
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


def axis_cost(a: np.ndarray | Array, b: np.ndarray | Array, period: float | None, xp=jnp):
    """``c_k(a_i, b_j)``: squared distance, wrapped on a periodic axis; shape ``(len(a), len(b))``."""
    d = a[:, None] - b[None, :]
    if period is not None:
        d = xp.remainder(d, period)
        d = xp.minimum(d, period - d)
    return d * d


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
    """Seed 001 §2.3.1's fix: every grid point duplicated at a second, larger scale.

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


# --------------------------------------------------------------------------- kernels


def _axis_log_kernel(ax_out: Axis, ax_in: Axis, eps, dtype) -> Array:
    """``log w_i − c(ξ_i, ξ'_j)/ε + log w_j`` for one axis, ``(N_out, N_in)``."""
    a = jnp.asarray(ax_out.points, dtype)
    b = jnp.asarray(ax_in.points, dtype)
    c = axis_cost(a, b, ax_out.period)
    lw_out = jnp.asarray(np.log(ax_out.widths), dtype)
    lw_in = jnp.asarray(np.log(ax_in.widths), dtype)
    return lw_out[:, None] - c / eps + lw_in[None, :]


def _lse_rows(v: Array, s: Array | None, L: Array):
    """``out[r, i] = log Σ_j s[r, j] exp(L[i, j] + v[r, j])`` for a chunk of rows; with signs if ``s``."""
    T = v[:, None, :] + L[None, :, :]
    m = jnp.max(T, axis=-1)
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # a row of −inf (zero vector) gives −inf, not NaN
    E = jnp.exp(T - m[..., None])
    if s is None:
        return jnp.log(jnp.sum(E, axis=-1)) + m, None
    S = jnp.sum(E * s[:, None, :], axis=-1)
    return jnp.log(jnp.abs(S)) + m, jnp.sign(S)


def _lse_axis(v: Array, s: Array | None, L: Array):
    """Per-axis log-sum-exp over the last axis of ``v`` (R, N_in) → (R, N_out), in row chunks."""
    R, n_in = v.shape
    n_out = L.shape[0]
    rows = max(1, LSE_CHUNK_ELEMENTS // max(1, n_out * n_in))
    if rows >= R:
        return _lse_rows(v, s, L)
    if n_out * n_in > LSE_CHUNK_ELEMENTS:  # a huge 1-D axis: also chunk the outputs
        step = max(1, LSE_CHUNK_ELEMENTS // n_in)
        parts = [_lse_axis(v, s, L[i : i + step]) for i in range(0, n_out, step)]
        return jnp.concatenate([p[0] for p in parts], axis=1), (None if s is None else jnp.concatenate([p[1] for p in parts], axis=1))
    pad = (-R) % rows
    vp = jnp.pad(v, ((0, pad), (0, 0)), constant_values=-jnp.inf).reshape(-1, rows, n_in)
    if s is None:
        out = jax.lax.map(lambda x: _lse_rows(x, None, L)[0], vp)
        return out.reshape(-1, n_out)[:R], None
    sp = jnp.pad(s, ((0, pad), (0, 0))).reshape(-1, rows, n_in)
    out, sg = jax.lax.map(lambda xs: _lse_rows(xs[0], xs[1], L), (vp, sp))
    return out.reshape(-1, n_out)[:R], sg.reshape(-1, n_out)[:R]


def _apply_block_log(x: Array, s: Array | None, axes_out, axes_in, eps, lead: int):
    """Separable log-kernel from one block to another on ``x`` of shape (lead..., *shape_in)."""
    for k, (ax_o, ax_i) in enumerate(zip(axes_out, axes_in)):
        L = _axis_log_kernel(ax_o, ax_i, eps, x.dtype)
        kk = lead + k
        xm = jnp.moveaxis(x, kk, -1)
        head = xm.shape[:-1]
        sm = None if s is None else jnp.moveaxis(s, kk, -1).reshape(-1, xm.shape[-1])
        y, sy = _lse_axis(xm.reshape(-1, xm.shape[-1]), sm, L)
        x = jnp.moveaxis(y.reshape(head + (L.shape[0],)), -1, kk)
        s = None if sy is None else jnp.moveaxis(sy.reshape(head + (L.shape[0],)), -1, kk)
    return x, s


def _signed_logaddexp(l1, s1, l2, s2):
    m = jnp.maximum(l1, l2)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    S = s1 * jnp.exp(l1 - m) + s2 * jnp.exp(l2 - m)
    return jnp.log(jnp.abs(S)) + m, jnp.sign(S)


def log_kernel(grid: Grid, log_v: Array, eps, sign: Array | None = None):
    """``log (K̃ v)`` for ``v = exp(log_v)`` (shape ``(..., N)``), ``K̃_ij = v_i e^{−c_ij/ε} v_j``.

    Axis by axis, an exact log-sum-exp (no under/overflow whatever ε). With ``sign``
    (same shape, entries in {−1, 0, 1}) the vector is ``sign · exp(log_v)`` and the
    result is ``(log |K̃ v|, sign(K̃ v))``; without, only ``log K̃ v`` is returned.
    The kernel is symmetric, so this is also ``K̃ᵀ``.
    """
    lead_shape = log_v.shape[:-1]
    lead = len(lead_shape)
    multi = len(grid.blocks) > 1
    if multi:  # the per-point coverage correction of the volumes is a diagonal scaling on both sides
        log_cover = jnp.asarray(np.log(grid.coverage), log_v.dtype)
        log_v = log_v - log_cover
    parts_in = _split_flat(grid, log_v)
    signs_in = None if sign is None else _split_flat(grid, sign)
    outs = []
    for a, axes_out in enumerate(grid.blocks):
        acc_l, acc_s = None, None
        for b, axes_in in enumerate(grid.blocks):
            l, s = _apply_block_log(parts_in[b], None if sign is None else signs_in[b], axes_out, axes_in, eps, lead)
            if acc_l is None:
                acc_l, acc_s = l, s
            elif sign is None:
                acc_l = jnp.logaddexp(acc_l, l)
            else:
                acc_l, acc_s = _signed_logaddexp(acc_l, acc_s, l, s)
        outs.append((acc_l.reshape(lead_shape + (-1,)), None if acc_s is None else acc_s.reshape(lead_shape + (-1,))))
    out_l = jnp.concatenate([o[0] for o in outs], axis=-1)
    if multi:
        out_l = out_l - log_cover
    if sign is None:
        return out_l
    return out_l, jnp.concatenate([o[1] for o in outs], axis=-1)


def kernel(grid: Grid, v: Array, eps) -> Array:
    """``K̃ v`` in the standard domain: one ``N_k × N_k`` matrix product per axis (BLAS).

    Fast, but ``exp(−c/ε)`` underflows when ε is small compared with the squared box
    size, and ``v`` may overflow: use :func:`log_kernel` inside solvers.
    """
    lead_shape = v.shape[:-1]
    lead = len(lead_shape)
    cover = jnp.asarray(grid.coverage, v.dtype)
    parts = _split_flat(grid, v / cover)
    outs = []
    for axes_out in grid.blocks:
        acc = 0.0
        for b, axes_in in enumerate(grid.blocks):
            x = parts[b]
            for k, (ax_o, ax_i) in enumerate(zip(axes_out, axes_in)):
                Kk = jnp.exp(_axis_log_kernel(ax_o, ax_i, eps, x.dtype))
                x = jnp.moveaxis(jnp.tensordot(x, Kk, axes=([lead + k], [1])), -1, lead + k)
            acc = acc + x
        outs.append(acc.reshape(lead_shape + (-1,)))
    return jnp.concatenate(outs, axis=-1) / cover


def _split_flat(grid: Grid, x: Array) -> list:
    lead = x.shape[:-1]
    out, start = [], 0
    for shape, size in zip(grid.shapes, grid.block_sizes):
        out.append(x[..., start : start + size].reshape(lead + shape))
        start += size
    return out


def dense_log_kernel(grid: Grid, eps: float) -> np.ndarray:
    """The ``N × N`` matrix ``log K̃`` built point by point (for tests and small grids only)."""
    require(grid.size <= 20000, "grid", f"dense_log_kernel is for small grids (N = {grid.size} > 20000)")
    xi = grid.coords()
    C = np.zeros((grid.size, grid.size))
    for k, period in enumerate(grid.periods):
        C += axis_cost(xi[:, k], xi[:, k], period, xp=np)
    lv = np.log(grid.volumes())
    return lv[:, None] - C / eps + lv[None, :]


# --------------------------------------------------------------------------- memory


def available_memory() -> float:
    """Bytes of memory available to this process (``MemAvailable``; a cgroup limit if lower)."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = float(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = float("inf")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                raw = fh.read().strip()
            if raw.isdigit():
                avail = min(avail, float(raw))
        except OSError:
            pass
    return avail


def memory_estimate(grid: Grid, n: int, components: int, dtype, *, hessian: bool = False, snapshots: int = 2) -> dict:
    """Bytes a JKO step on ``grid`` needs, by item (see :func:`check_memory`).

    Φ (n × N), the positions (N × dim, twice), ≈ 16 work vectors of size C·N for
    the solver, the log-sum-exp chunk buffers (≈ 4 chunks) and the saved snapshots.
    """
    item = jnp.dtype(dtype).itemsize
    N = grid.size
    est = {
        "features": n * N * item,
        "positions": 2 * N * grid.dim * item,
        "work vectors": 16 * components * N * item,
        "kernel buffers": 4 * LSE_CHUNK_ELEMENTS * item * components,
        "snapshots": snapshots * components * N * item,
    }
    if hessian:
        est["hessian"] = 2 * n * n * item
    est["total"] = sum(est.values())
    return est


def check_memory(grid: Grid, n: int, components: int, dtype, *, limit: float | None = None, **kw) -> dict:
    """Raise :class:`InputError` with the estimate if a step on ``grid`` cannot fit in memory.

    ``limit``: bytes allowed (default: 80 % of the memory available now).
    """
    est = memory_estimate(grid, n, components, dtype, **kw)
    limit = 0.8 * available_memory() if limit is None else float(limit)
    if est["total"] > limit:
        parts = ", ".join(f"{k} {v / 2**30:.3g} GiB" for k, v in est.items() if k != "total")
        raise InputError(
            "grid",
            f"a JKO step on this grid (N = {grid.size} points, shapes {grid.shapes}, n = {n} data points, "
            f"{components} component(s), {jnp.dtype(dtype).name}) needs about {est['total'] / 2**30:.3g} GiB "
            f"({parts}) but only {limit / 2**30:.3g} GiB are allowed",
            "use a coarser grid, fewer data points, float32, or save fewer snapshots",
        )
    return est


# --------------------------------------------------------------------------- measures on a grid


@dataclasses.dataclass(frozen=True)
class GridMeasure:
    """Masses ``(C, N)`` on a :class:`Grid`, component ``c`` carrying the sign ``signs[c]``.

    :meth:`to_measure` gives the :class:`~wgflow.measure.Measure` the objective and the
    metrics evaluate: the grid points (once per component) with signed masses.
    """

    grid: Grid
    masses: np.ndarray
    signs: tuple = (1.0,)

    def __post_init__(self):
        m = np.asarray(self.masses)
        if m.ndim == 1:
            m = m[None]
        object.__setattr__(self, "masses", m)
        object.__setattr__(self, "signs", tuple(float(s) for s in self.signs))
        require(
            m.shape == (len(self.signs), self.grid.size),
            "grid_measure.masses",
            f"must have shape (C, N) = ({len(self.signs)}, {self.grid.size}), got {m.shape}",
        )

    @property
    def total_masses(self) -> np.ndarray:
        return np.asarray(self.masses).sum(axis=-1)

    def to_measure(self) -> Measure:
        return to_measure(self.grid, self.masses, self.signs)


def to_measure(grid: Grid, masses, signs: Sequence[float] = (1.0,)) -> Measure:
    """The :class:`Measure` of grid masses ``(C, N)`` (or ``(N,)``): positions θ of the grid points,
    repeated for each component, and masses ``signs[c] · masses[c]``."""
    masses = jnp.asarray(masses)
    if masses.ndim == 1:
        masses = masses[None]
    C = masses.shape[0]
    require(len(signs) == C, "signs", f"need one sign per component ({C}), got {len(signs)}")
    pts = jnp.asarray(grid.points(), masses.dtype)
    s = jnp.asarray(signs, masses.dtype)
    return Measure(jnp.tile(pts, (C, 1)), (s[:, None] * masses).reshape(-1))


def bin_measure(
    grid: Grid, mu: Measure, signs: Sequence[float] = (1.0,), *, field: str = "p0", outside: str = "error"
) -> np.ndarray:
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
    dens = []
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
            for k, p in enumerate(grid.periods):
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
            inside = (r >= r_min) & (r <= r_max)
            b = grid.bounds()
            reach = [min(-b[k, 0], b[k, 1]) for k in flat_axes]
            if flat_axes and min(reach) < r_max:
                raise InputError(
                    "init.r_max",
                    f"the annulus of radius {r_max} does not fit in the grid's box {b.tolist()}",
                    f"enlarge the box to at least ±{r_max} or reduce r_max",
                )
            dens = np.where(inside, v, 0.0)
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
        draws = np.asarray(jax.random.uniform(keys[2 * c], (int(counts[c]),), jnp.float32 if not jax.config.jax_enable_x64 else jnp.float64))
        idx = np.minimum(np.searchsorted(cdf, draws * cdf[-1], side="right"), grid.size - 1)  # inverse CDF
        xi = xi_all[idx].copy()
        if jitter:
            u = np.asarray(jax.random.uniform(keys[2 * c + 1], xi.shape, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32))
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
