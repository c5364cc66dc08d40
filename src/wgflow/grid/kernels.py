"""The grid's cost and its separable Gibbs kernels (Peyré 2015).

The cost between two points of a :class:`~wgflow.grid.geometry.Grid` is separable,

    c(ξ, ξ') = Σ_k c_k(ξ_k, ξ'_k),   c_k(s, t) = (s − t)²  or, on a periodic axis, the wrapped (s − t)²,

so the Gibbs kernel ``K̃_ij = v_i exp(−c(ξ_i, ξ_j)/ε) v_j`` (``v`` the cell volumes,
see below) is a Kronecker product of ``D`` matrices of size ``N_k × N_k`` and is
applied axis by axis: ``N·Σ_k N_k`` work and ``O(N)`` memory, never ``N × N``.
:func:`log_kernel` applies it in the log domain (an exact log-sum-exp per axis,
chunked so that its buffers stay small), :func:`kernel` in the standard domain
(one BLAS product per axis; fast, but under/overflows for small ε), and
:func:`stabilised_log_kernel` computes what :func:`log_kernel` computes with the speed of
:func:`kernel` (below). All three are also methods of the grid:
:meth:`Grid.apply_lse_kernel <wgflow.grid.geometry.Grid.apply_lse_kernel>`,
:meth:`Grid.apply_kernel <wgflow.grid.geometry.Grid.apply_kernel>` and
:meth:`Grid.apply_stabilised_kernel <wgflow.grid.geometry.Grid.apply_stabilised_kernel>`.

Stabilised scaling (Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy
regularized transport problems"; Peyré 2015). The vector is carried in the log domain, as a
dual potential. Before each per-axis product its row maximum ``m_r`` (a row: all the other
coordinates fixed) is absorbed into a log offset, so the scaling ``exp(x − m_r)`` is ≤ 1 and
never overflows; the product with ``exp(−c_k/ε)`` is then a plain matrix product (BLAS, in
the vector's dtype: float32 on the fast path), and ``m_r + log`` of it is exact to rounding
wherever the sum is not made of underflowed terms. Schmitzer absorbs the potentials into
the kernel when the scalings pass a threshold; a separable kernel cannot hold a
non-separable potential, so here the absorption is per row and at every product (threshold
zero), which costs one max and one exp per entry, little beside the product. Where a sum is
so small that the terms lost to underflow could matter (``S < n_in · tiny / eps_mach``), the
chunk of rows holding it is recomputed by the exact log-sum-exp of :func:`log_kernel`: the
log domain only where the scaling would underflow (small ε, far from the mass).

Why hand-written: OTT-JAX's ``ott.geometry.grid.Grid.apply_kernel`` is the plain
standard-domain product (no absorption, no fallback: it underflows for small ε), and its
grid has neither cell volumes (non-uniform axes), nor signed vectors (the Newton Hessian),
nor multi-block grids.

Reference measure. The cell volumes ``v_i`` enter the kernel so that the discrete
entropy ``Σ π_ij (log(π_ij / (v_i v_j)) − 1)`` is the Riemann sum of the continuous
``∫ π (log π − 1)``: results do not depend on the grid spacing, and non-uniform
axes (:meth:`Axis.symlog <wgflow.grid.geometry.Axis.symlog>`) carry no spurious entropic
drift towards their fine parts. On a uniform grid ``v`` is a constant and only shifts potentials.

This module needs only the grid's attributes (``blocks``, ``shapes``, ``coverage``, …),
never the :mod:`~wgflow.grid.geometry` module at import time, so that the grid can
carry the kernel as a method without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import require

if TYPE_CHECKING:
    from wgflow.grid.geometry import Axis, Grid

#: Elements of the (rows × N_out × N_in) buffer of one chunk of the per-axis log-sum-exp.
LSE_CHUNK_ELEMENTS = 2**20

#: The kernel paths of the solvers: ``"stabilised"`` (:func:`stabilised_log_kernel`) and ``"log"`` (:func:`log_kernel`).
KERNEL_PATHS = ("stabilised", "log")

# --------------------------------------------------------------------------- cost


def axis_cost(a: np.ndarray | Array, b: np.ndarray | Array, period: float | None, xp=jnp):
    """``c_k(a_i, b_j)``: squared distance, wrapped on a periodic axis; shape ``(len(a), len(b))``."""
    d = a[:, None] - b[None, :]
    if period is not None:
        d = xp.remainder(d, period)
        d = xp.minimum(d, period - d)
    return d * d


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


def _lse_axis_pair(v: Array, s: Array | None, ax_out: Axis, ax_in: Axis, eps):
    return _lse_axis(v, s, _axis_log_kernel(ax_out, ax_in, eps, v.dtype))


def _stabilised_axis(v: Array, s: Array | None, ax_out: Axis, ax_in: Axis, eps):
    """:func:`_lse_axis_pair` by absorption and a matrix product, the exact LSE for underflowed chunks."""
    dtype = v.dtype
    R, n_in = v.shape
    n_out = len(ax_out.points)
    a = jnp.asarray(ax_out.points, dtype)
    b = jnp.asarray(ax_in.points, dtype)
    K = jnp.exp(-axis_cost(a, b, ax_out.period) / eps)  # (n_out, n_in), entries ≤ 1
    lw_in = jnp.asarray(np.log(ax_in.widths), dtype)
    lw_out = jnp.asarray(np.log(ax_out.widths), dtype)
    x = v + lw_in[None, :]
    m = jnp.max(x, axis=1, keepdims=True)
    live = jnp.isfinite(m)  # a row of −inf (zero vector) gives −inf
    m = jnp.where(live, m, 0.0)
    E = jnp.exp(x - m)
    if s is not None:
        E = E * s
    S = jnp.dot(E, K.T, precision=jax.lax.Precision.HIGHEST)
    A = jnp.abs(S)
    out = jnp.log(A) + m + lw_out[None, :]
    sign = None if s is None else jnp.sign(S)
    fi = jnp.finfo(dtype)
    thr = n_in * float(fi.tiny) / float(fi.eps)  # below this, the terms lost to underflow may exceed the rounding
    bad = (A < thr) & live
    L = _axis_log_kernel(ax_out, ax_in, eps, dtype)
    rows = max(1, LSE_CHUNK_ELEMENTS // max(1, n_out * n_in))

    def exact(_):
        if n_out * n_in > LSE_CHUNK_ELEMENTS:  # a huge 1-D axis: the chunked log-sum-exp of every row
            return _lse_axis(v, s, L)
        # the rows holding an underflowed sum first, then the exact log-sum-exp of as many chunks of
        # rows as they fill: the cost is that of the rows that need it
        row_bad = jnp.any(bad, axis=1)
        order = jnp.argsort(~row_bad, stable=True)
        rows_c = min(rows, R)
        pad = (-R) % rows_c
        order = jnp.concatenate([order, order[:pad]])  # repeats: a row recomputed twice is the same row
        n_chunks = (jnp.sum(row_bad) + rows_c - 1) // rows_c
        sv = jnp.zeros_like(v) if s is None else s

        def body(c, acc):
            o, g = acc
            idx = jax.lax.dynamic_slice_in_dim(order, c * rows_c, rows_c)
            lo, sg = _lse_rows(v[idx], None if s is None else sv[idx], L)
            return o.at[idx].set(lo), (g if s is None else g.at[idx].set(sg))

        g0 = out if sign is None else sign
        o2, g2 = jax.lax.fori_loop(0, n_chunks, body, (out, g0))
        return o2, (None if s is None else g2)

    return jax.lax.cond(jnp.any(bad), exact, lambda _: (out, sign), None)


def _apply_block_log(x: Array, s: Array | None, axes_out, axes_in, eps, lead: int, axis_fn=_lse_axis_pair):
    """Separable log-kernel from one block to another on ``x`` of shape (lead..., *shape_in)."""
    for k, (ax_o, ax_i) in enumerate(zip(axes_out, axes_in)):
        n_out = len(ax_o.points)
        kk = lead + k
        xm = jnp.moveaxis(x, kk, -1)
        head = xm.shape[:-1]
        sm = None if s is None else jnp.moveaxis(s, kk, -1).reshape(-1, xm.shape[-1])
        y, sy = axis_fn(xm.reshape(-1, xm.shape[-1]), sm, ax_o, ax_i, eps)
        x = jnp.moveaxis(y.reshape(head + (n_out,)), -1, kk)
        s = None if sy is None else jnp.moveaxis(sy.reshape(head + (n_out,)), -1, kk)
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
    return _separable_log(grid, log_v, eps, sign, _lse_axis_pair)


def stabilised_log_kernel(grid: Grid, log_v: Array, eps, sign: Array | None = None):
    """:func:`log_kernel` computed by stabilised scaling: the same result, to rounding, much faster.

    Per axis, the row maxima of the log vector are absorbed into offsets and the kernel is a
    plain matrix product (see the module docstring); rows whose sums would be spoiled by
    underflow are recomputed by the exact log-sum-exp. Same arguments and results as
    :func:`log_kernel` (signed too), in the dtype of ``log_v``.
    """
    return _separable_log(grid, log_v, eps, sign, _stabilised_axis)


def log_kernel_path(name: str):
    """The kernel function of a solver's ``kernel`` option: ``"stabilised"`` or ``"log"``."""
    require(name in KERNEL_PATHS, "kernel", f"unknown kernel path {name!r}", "use kernel='stabilised' or kernel='log'")
    return stabilised_log_kernel if name == "stabilised" else log_kernel


def _separable_log(grid: Grid, log_v: Array, eps, sign, axis_fn):
    lead_shape = log_v.shape[:-1]
    lead = len(lead_shape)
    multi = len(grid.blocks) > 1
    if multi:  # the per-point coverage correction of the volumes is a diagonal scaling on both sides
        log_cover = jnp.asarray(np.log(grid.coverage), log_v.dtype)
        log_v = log_v - log_cover
    parts_in = _split_flat(grid, log_v)
    signs_in = None if sign is None else _split_flat(grid, sign)
    outs = []
    for axes_out in grid.blocks:
        acc_l, acc_s = None, None
        for b, axes_in in enumerate(grid.blocks):
            lk, s = _apply_block_log(parts_in[b], None if signs_in is None else signs_in[b], axes_out, axes_in, eps, lead, axis_fn)
            if acc_l is None:
                acc_l, acc_s = lk, s
            elif sign is None:
                acc_l = jnp.logaddexp(acc_l, lk)
            else:
                acc_l, acc_s = _signed_logaddexp(acc_l, acc_s, lk, s)
        outs.append((cast(Array, acc_l).reshape(lead_shape + (-1,)), None if acc_s is None else acc_s.reshape(lead_shape + (-1,))))
    out_l = jnp.concatenate([o[0] for o in outs], axis=-1)
    if multi:
        out_l = out_l - log_cover
    if sign is None:
        return out_l
    return out_l, jnp.concatenate([cast(Array, o[1]) for o in outs], axis=-1)  # signed: every block has a sign


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
        acc: Array | float = 0.0
        for b, axes_in in enumerate(grid.blocks):
            x = parts[b]
            for k, (ax_o, ax_i) in enumerate(zip(axes_out, axes_in)):
                Kk = jnp.exp(_axis_log_kernel(ax_o, ax_i, eps, x.dtype))
                x = jnp.moveaxis(jnp.tensordot(x, Kk, axes=([lead + k], [1])), -1, lead + k)
            acc = acc + x
        outs.append(cast(Array, acc).reshape(lead_shape + (-1,)))  # grid.blocks is never empty
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
