"""Timing helpers shared by the benchmarks: best-of-k wall time and this machine's matmul rate."""

from __future__ import annotations

import time

import numpy as np


def best_time(fn, repeats: int, min_seconds: float = 0.2, max_repeats: int = 50) -> float:
    """The fastest of at least ``repeats`` calls (after one warm-up call, which compiles)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def matmul_gflops(size: int = 2048) -> float:
    """float32 GFLOP/s of one (size × size) @ (size × size) matmul through XLA, best of 5."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    t = best_time(lambda: f(a).block_until_ready(), 5)
    return 2 * size**3 / t / 1e9


def row(name: str, seconds: float, baseline_seconds: float | None, **extra) -> dict:
    """A benchmark result: ``ratio`` = baseline_seconds / seconds (> 1: wgflow is faster)."""
    out = {"name": name, "seconds": seconds, "baseline_seconds": baseline_seconds}
    out["ratio"] = baseline_seconds / seconds if baseline_seconds else None
    out.setdefault("fraction_of_peak", None)
    out.update(extra)
    return out
