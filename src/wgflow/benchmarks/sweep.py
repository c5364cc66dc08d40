"""A sweep of 10 seeds × 4 widths (m ≤ 100, n = 100) as one vmapped program against the 40 runs
one after another (each a separate ``explicit_gd`` call), measured in the same run. Target ≥ 5×."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from wgflow.benchmarks.common import row


def _setup(quick: bool):
    from wgflow import make_objective
    from wgflow.data import teacher_student
    from wgflow.init import initial_measure

    ds = teacher_student(jax.random.PRNGKey(0), 100, 2, 4, teacher_signs="positive", dtype=jnp.float32)
    obj = make_objective(ds.X, ds.y, "lifted", lam=1e-4, reduction="mean")
    widths, seeds = ([4, 100], range(3)) if quick else ([4, 5, 10, 100], range(10))
    mus = [initial_measure(jax.random.PRNGKey(s), "lifted", m, 2, scale=0.1, dtype=jnp.float32) for m in widths for s in seeds]
    return obj, mus


def run(quick: bool = False) -> list[dict]:
    from wgflow.flows import explicit_gd
    from wgflow.flows.particle import explicit_gd_sweep
    from wgflow.measure import stack_padded

    obj, mus = _setup(quick)
    steps = 500 if quick else 2000
    batch = stack_padded(mus)
    explicit_gd_sweep(obj, batch, 0.25, 10)  # compile
    t0 = time.perf_counter()
    explicit_gd_sweep(obj, batch, 0.25, steps).objective.sum()
    t_sweep = time.perf_counter() - t0
    for m in {mu.width for mu in mus}:  # compile each width once, as a loop of runs would after its first run
        explicit_gd(obj, next(mu for mu in mus if mu.width == m), 0.25, 10)
    t0 = time.perf_counter()
    for mu in mus:
        explicit_gd(obj, mu, 0.25, steps)
    t_loop = time.perf_counter() - t0
    return [row(f"vmapped sweep of {len(mus)} runs ({steps} steps) vs a loop", t_sweep, t_loop, runs=len(mus), steps=steps, target="ratio ≥ 5")]
