"""What the solve loop's monitor costs: the same runs with ``Monitor()`` and with ``monitor=None``.

``monitor=None`` is the bare loop (no finiteness, growth or rise check, no policy); the
default monitor adds the verdict of every step and the bookkeeping of its policy. Both run
the same steps, so the ratio bare / monitored is the monitor's cost (target ≥ 0.95: at most
5 % of a step). Measured in the same run, alternating A B A B, best of several rounds:

- ``explicit GD (1024, 4096, 20)``: one run of explicit particle GD, float32, 100 steps;
- ``sweep``: 10 seeds × widths 4, 5, 10, 100 (n = 100, d = 2) as one vmapped program of
  explicit GD, float32, 2000 steps — the shape of the Chizat–Bach experiment;
- ``backtrack``: the sweep under ``Monitor(policy="backtrack")`` at a stable step (no retake
  happens), against the bare loop: the price of keeping the last accepted state.

    wgflow bench --only loop [--quick]
"""

from __future__ import annotations

import time

import numpy as np

from wgflow.benchmarks.common import row


def _alternate(fa, fb, rounds: int) -> tuple[float, float]:
    """Best times of ``fa`` and ``fb`` over ``rounds`` alternating calls (after one warm-up each)."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t0)
    return float(min(ta)), float(min(tb))


def run(quick: bool = False) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from wgflow import make_objective
    from wgflow.data import teacher_student
    from wgflow.flows import Monitor, explicit_gd, explicit_gd_sweep
    from wgflow.init import initial_measure
    from wgflow.measure import Measure, stack_padded

    rows = []
    n, m, d = (512, 2048, 20) if quick else (1024, 4096, 20)
    steps = 20 if quick else 100
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    obj = make_objective(X, y, "lifted", lam=1e-3, reduction="mean")
    mu = Measure(jnp.asarray(rng.standard_normal((m, d + 1)).astype(np.float32) * 0.5), jnp.full((m,), 1.0 / m, jnp.float32))

    def one(monitor):
        return lambda: jax.block_until_ready(explicit_gd(obj, mu, 0.1, steps, monitor=monitor, block_size=steps).final.positions)

    t_mon, t_bare = _alternate(one(Monitor()), one(None), 3 if quick else 5)
    rows.append(
        row(
            f"explicit GD ({n}, {m}, {d}), {steps} steps: monitored vs bare loop",
            t_mon,
            t_bare,
            n=n,
            m=m,
            d=d,
            steps=steps,
            seconds_per_step=t_mon / steps,
            target="ratio ≥ 0.95",
        )
    )

    ds = teacher_student(jax.random.PRNGKey(0), 100, 2, 4, teacher_signs="positive", dtype=jnp.float32)
    sweep_obj = make_objective(ds.X, ds.y, "lifted", lam=1e-4, reduction="mean")
    widths, seeds = ([4, 100], range(3)) if quick else ([4, 5, 10, 100], range(10))
    batch = stack_padded([initial_measure(jax.random.PRNGKey(s), "lifted", w, 2, scale=0.1, dtype=jnp.float32) for w in widths for s in seeds])
    K = 500 if quick else 2000

    def sweep(monitor):
        return lambda: np.asarray(explicit_gd_sweep(sweep_obj, batch, 0.25, K, monitor=monitor, block_size=1000).objective).sum()

    t_mon, t_bare = _alternate(sweep(Monitor()), sweep(None), 3 if quick else 5)
    runs = batch.positions.shape[0]
    rows.append(
        row(f"sweep of {runs} runs, {K} steps: monitored vs bare loop", t_mon, t_bare, runs=runs, steps=K, seconds_per_step=t_mon / K, target="ratio ≥ 0.95")
    )
    t_back, t_bare = _alternate(sweep(Monitor(policy="backtrack")), sweep(None), 3 if quick else 5)
    rows.append(
        row(
            f"sweep of {runs} runs, {K} steps: backtracking (no retake) vs bare loop",
            t_back,
            t_bare,
            runs=runs,
            steps=K,
            seconds_per_step=t_back / K,
            target="for the record",
        )
    )
    return rows
