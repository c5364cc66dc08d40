"""Memory: what this process may still allocate, and what a JKO step on a grid needs.

:func:`check_memory` turns a step that cannot fit into an :class:`~wgflow.errors.InputError`
with the estimate, before anything is allocated.
"""

from __future__ import annotations

import jax.numpy as jnp

from wgflow.errors import InputError
from wgflow.grid import kernels
from wgflow.grid.geometry import Grid
from wgflow.resources import available_memory

__all__ = ["available_memory", "memory_estimate", "check_memory"]

# --------------------------------------------------------------------------- memory


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
        "kernel buffers": 4 * kernels.LSE_CHUNK_ELEMENTS * item * components,
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
