"""One explicit particle-GD step (lifted, ReLU, square loss), float32, against plain baselines.

Baselines measured in the same run: (a) a plain NumPy step with manual gradients,
(b) the same step in plain PyTorch with autograd (if torch is installed). Also
this machine's float32 matmul rate, so each step's GFLOP/s can be read as a
fraction of peak. FLOPs per step are counted as 4·n·m·(d+1).

    wgflow bench --only particle [--quick]
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from wgflow.benchmarks.common import best_time, matmul_gflops, missing_baseline

SIZES = [(1024, 4096, 20), (4096, 16384, 20), (1024, 100000, 20), (256, 4096, 2), (10000, 1000, 100)]
QUICK_SIZES = [(1024, 4096, 20), (256, 4096, 2)]


def numpy_step(X, y, W, a, lam, eta):
    """Plain NumPy: H = X Wᵀ, manual gradients of (1/n)Σ(f − y)² + λ(|W|² + |a|²), plain units."""
    n = X.shape[0]
    H = X @ W.T
    A = np.maximum(H, 0)
    f = A @ a
    r = (2.0 / n) * (f - y)
    ga = A.T @ r + 2 * lam * a
    G = (r[:, None] * a[None, :]) * (H > 0)
    gW = G.T @ X + 2 * lam * W
    return W - eta * gW, a - eta * ga


def torch_step_fn(X, y, W, a, lam, eta):
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    Wt = torch.from_numpy(W.copy()).requires_grad_(True)
    at = torch.from_numpy(a.copy()).requires_grad_(True)

    def step():
        f = torch.relu(Xt @ Wt.T) @ at
        loss = torch.mean((f - yt) ** 2) + lam * ((Wt**2).sum() + (at**2).sum())
        gW, ga = torch.autograd.grad(loss, (Wt, at))
        with torch.no_grad():
            return Wt - eta * gW, at - eta * ga

    return step


def wgflow_step_fn(X, y, W, a, lam, eta, chunking=None):
    import jax
    import jax.numpy as jnp

    from wgflow import make_objective
    from wgflow.flows.particle import explicit_step

    obj = make_objective(X, y, "lifted", "relu", "square", lam, "mean", chunking=chunking)
    m = W.shape[0]
    from wgflow.measure import Measure

    mu = Measure(jnp.sqrt(m) * jnp.concatenate([jnp.asarray(W), jnp.asarray(a)[:, None]], axis=1), jnp.full((m,), 1.0 / m, jnp.float32))
    step = jax.jit(lambda o, mu: explicit_step(o, mu, jnp.float32(eta))[0])
    compiled = step.lower(obj, mu).compile()
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    return (lambda: jax.block_until_ready(step(obj, mu))), temp


def run(quick: bool = False) -> list[dict]:
    peak = matmul_gflops(1024 if quick else 2048)
    rows = []
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    for n, m, d in QUICK_SIZES if quick else SIZES:
        rng = np.random.default_rng(0)
        X = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        W = (0.5 * rng.standard_normal((m, d))).astype(np.float32)
        a = (0.5 * rng.standard_normal(m)).astype(np.float32)
        lam, eta = 1e-3, 0.1
        flops = 4 * n * m * (d + 1)
        reps = 3 if n * m > 1e8 else 10
        t_np = best_time(lambda: numpy_step(X, y, W, a, lam, eta), reps)
        tracemalloc.start()
        numpy_step(X, y, W, a, lam, eta)
        np_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        t_torch = best_time(torch_step_fn(X, y, W, a, lam, eta), reps) if have_torch else None
        fn, temp = wgflow_step_fn(X, y, W, a, lam, eta)
        t_wg = best_time(fn, reps)
        baseline = min(t for t in (t_np, t_torch) if t is not None)
        rows.append(
            {
                "name": f"particle_step n={n} m={m} d={d}",
                "n": n,
                "m": m,
                "d": d,
                "seconds": t_wg,
                "baseline_seconds": baseline,
                "numpy_seconds": t_np,
                "torch_seconds": t_torch,
                **({} if have_torch else {"note": missing_baseline("torch") + "; baseline: NumPy only"}),
                "ratio": baseline / t_wg,
                "gflops": flops / t_wg / 1e9,
                "fraction_of_peak": flops / t_wg / 1e9 / peak,
                "numpy_fraction_of_peak": flops / t_np / 1e9 / peak,
                "matmul_peak_gflops": peak,
                "wgflow_temp_bytes": temp,
                "numpy_peak_bytes": np_peak,
                "n_by_m_float32_bytes": 4 * n * m,
                "target": "ratio ≥ 1 (≥ 1.5 at the three largest); temp ≤ one n×m float32",
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| size (n, m, d) | wgflow s/step | NumPy s/step | torch s/step | ratio vs faster | % of matmul peak | wgflow temp / (n·m·4 B) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        torch_s = f"{r['torch_seconds']:.4g}" if r["torch_seconds"] is not None else "—"
        temp = f"{r['wgflow_temp_bytes'] / r['n_by_m_float32_bytes']:.2f}" if r["wgflow_temp_bytes"] is not None else "—"
        lines.append(
            f"| ({r['n']}, {r['m']}, {r['d']}) | {r['seconds']:.4g} | {r['numpy_seconds']:.4g} | {torch_s} | "
            f"{r['ratio']:.2f}× | {100 * r['fraction_of_peak']:.1f}% (NumPy {100 * r['numpy_fraction_of_peak']:.1f}%) | {temp} |"
        )
    return "\n".join(lines)
