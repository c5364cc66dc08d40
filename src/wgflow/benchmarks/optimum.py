"""Benchmark of wgflow.optimum: the certified global minimum, fast formulations vs the plain program.

    wgflow bench --only optimum [--quick]

Data: n points uniform on the unit circle with a bias column (d = 3, rank 3,
n² − n + 2 chambers), labels of a width-3 ReLU teacher plus noise, λ = 0.1,
the weight-decayed square loss (reduction "sum", ℓ2). Every formulation is timed end to end
(pattern enumeration + program + certificate) in the same run, and the plain
form of Pilanci & Ergen's program — u_D, v_D with the 2n cone inequalities each, the fit as one
sparse matrix — is the baseline. ``ratio`` = baseline_seconds / seconds.
``--quick`` uses n = 30 (the plain form then takes seconds, not minutes).
"""

from __future__ import annotations

import time

import numpy as np

from wgflow.data import with_bias
from wgflow.optimum import ConvexSolver, global_minimum


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    X = with_bias(np.stack([np.cos(t), np.sin(t)], axis=1))
    W = rng.standard_normal((3, 3))
    y = np.maximum(X @ W.T, 0.0) @ np.array([1.0, -1.0, 0.5]) + 0.1 * rng.standard_normal(n)
    return X, y


def _time(X, y, lam, formulation, norm="l2"):
    t0 = time.perf_counter()
    opt = global_minimum(X, y, lam, norm=norm, solver=ConvexSolver(formulation=formulation))
    return time.perf_counter() - t0, opt


def run(quick: bool = False) -> list[dict]:
    """Rows with keys name, seconds, baseline_seconds, ratio, n, d, n_patterns, and the values found."""
    n = 30 if quick else 100
    lam = 0.1
    X, y = make_data(n)
    global_minimum(*make_data(8), lam)  # warm up JAX (the upper bound's Objective) outside the timings
    base_s, base = _time(X, y, lam, "plain")
    rows = []
    for f in ("cone", "working_set"):
        s, opt = _time(X, y, lam, f)
        rows.append(
            {
                "name": f"optimum/{f}-vs-plain/n={n}",
                "seconds": s,
                "baseline_seconds": base_s,
                "ratio": base_s / s,
                "n": n,
                "d": X.shape[1],
                "n_patterns": opt.n_patterns,
                "value": opt.value,
                "baseline_value": base.value,
                "relative_difference": abs(opt.value - base.value) / base.value,
                "relative_gap": opt.relative_gap,
                "baseline_relative_gap": base.relative_gap,
                "rounds": opt.rounds,
                "program_seconds": opt.timings.get("program"),
                "baseline_program_seconds": base.timings.get("program"),
            }
        )
    return rows
