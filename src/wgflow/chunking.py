"""Chunked evaluation of F and ∇F': never the whole n × m unit matrix.

The unit matrix Φ (n data points × m neurons) of a large problem neither fits in
memory nor in cache. Evaluated in chunks, a step stores O((n + m)·D + chunk)
and keeps each chunk's temporaries in cache, which is also much faster than
streaming n × m temporaries through memory (docs/performance.md).

Two ways to cut the work:

- chunks of **neurons**: pass 1 accumulates the outputs f (n); pass 2 computes each
  chunk's gradient, recomputing its units. Works for any risk R.
- chunks of **data points**: one pass accumulating the gradient (m × D). Needs a
  separable risk R = reduce_j ℓ(f_j, y_j) — true of every wgflow loss — so that
  r_j = ∂ℓ/∂f(f_j, y_j) is known from the chunk alone.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError, require

AXES = ("auto", "neurons", "data", "none")


@dataclasses.dataclass(frozen=True)
class Chunking:
    """How F and ∇F' are evaluated: in one piece, or in chunks of neurons or of data points.

    - ``axis``: ``"auto"`` (once n·m ≥ ``min_work``: chunks of neurons when m ≥ n, of data
      otherwise), ``"neurons"``, ``"data"`` or ``"none"``.
    - ``size``: chunk length; None picks a cache-sized one (≈ 2¹⁶/n neurons or ≈ 2¹⁶/m
      data points, clipped to [32, 1024]).
    - ``memory_budget``: bytes allowed for one chunk's temporaries (≈ 4 · rows · cols ·
      itemsize); the chunk is shrunk to fit, and an error says so when not even one row fits.
    """

    axis: str = "auto"
    size: int | None = None
    memory_budget: int | None = None
    min_work: int = 2**20

    def __post_init__(self):
        require(self.axis in AXES, "chunking.axis", f"unknown axis {self.axis!r}", f"use one of {list(AXES)}")
        require(
            self.size is None or (isinstance(self.size, (int, np.integer)) and self.size > 0),
            "chunking.size",
            "must be a positive integer or None",
            value=self.size,
        )
        require(
            self.memory_budget is None or self.memory_budget > 0,
            "chunking.memory_budget",
            "must be a positive number of bytes",
            value=self.memory_budget,
        )

    def resolve(self, n: int, m: int, D: int, itemsize: int) -> tuple[str, int]:
        """(axis, size) for n data points and m neurons in R^D; axis "none" means unchunked."""
        axis = self.axis
        if axis == "auto":
            if n * m < self.min_work and self.memory_budget is None:
                return "none", 0
            axis = "neurons" if m >= n else "data"
        if axis == "none":
            return "none", 0
        other, length = (n, m) if axis == "neurons" else (m, n)
        if self.size is not None:
            size = int(self.size)
        else:
            target = 2**16  # measured on 2-core x86 with the closed-form step (docs/performance.md)
            size = int(min(max(2 ** round(np.log2(max(target / other, 1.0))), 32), 1024))
        if self.memory_budget is not None:
            per_row = 4 * other * itemsize + D * itemsize
            fits = int(self.memory_budget // per_row)
            if fits < 1:
                row = "neuron" if axis == "neurons" else "data point"
                raise InputError(
                    "chunking.memory_budget",
                    f"{self.memory_budget} bytes cannot hold a chunk of even one {row} "
                    f"(about {per_row} bytes against {other} {'data points' if axis == 'neurons' else 'neurons'})",
                    f"raise the budget to at least {per_row} bytes",
                )
            size = min(size, fits)
        return axis, int(min(size, length))


def blocks(rows: Array, weights: Array, size: int) -> tuple[Array, Array]:
    """``rows`` (L, ...) and ``weights`` (L,) cut into (B, size, ...) and (B, size); the last block
    is padded with copies of the first row carrying zero weight (they change nothing)."""
    L = rows.shape[0]
    n_blocks = -(-L // size)
    pad = n_blocks * size - L
    rows = jnp.concatenate([rows, jnp.repeat(rows[:1], pad, axis=0)])
    weights = jnp.concatenate([weights, jnp.zeros((pad,), weights.dtype)])
    return rows.reshape(n_blocks, size, *rows.shape[1:]), weights.reshape(n_blocks, size)
