"""One explicit particle-GD step (lifted, ReLU, square loss), float32, against plain baselines.

Baselines measured in the same run, in a child process whose environment lacks
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` (so that OpenBLAS runs the kernels of this
CPU; the kernel and thread count it ran are reported, from threadpoolctl): (a) a plain NumPy
step with manual gradients, (b) the same step in PyTorch eager with autograd and (c) under
``torch.compile``, when torch is installed (otherwise their columns say so). The fastest is
the baseline. Also this machine's float32 matmul rate, so each step's GFLOP/s can be read
as a fraction of peak. FLOPs per step are counted as 4·n·m·(d+1).

    wgflow bench --only particle [--quick]
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np

from wgflow.benchmarks.common import best_time, blas_info, matmul_gflops, missing_baseline, native_blas_env, run_fresh

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


def problem(n: int, m: int, d: int):
    """The arrays of one benchmark case (float32, seeded): X, y, W, a."""
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    W = (0.5 * rng.standard_normal((m, d))).astype(np.float32)
    a = (0.5 * rng.standard_normal(m)).astype(np.float32)
    return X, y, W, a


LAM, ETA = 1e-3, 0.1


def _reps(n: int, m: int) -> int:
    return 3 if n * m > 1e8 else 10


def baselines(sizes) -> dict:
    """In this process: the NumPy, torch eager and torch.compile step times per size (None
    where torch is missing or torch.compile fails, with the reason), NumPy's peak traced
    memory, and the BLAS it ran (threadpoolctl)."""
    try:
        import torch  # noqa: F401

        torch_note = None
    except ImportError:
        torch_note = "not installed"
    out: dict = {"rows": [], "torch": torch_note or "installed"}
    for n, m, d in sizes:
        X, y, W, a = problem(n, m, d)
        reps = _reps(n, m)
        r: dict = {"numpy_seconds": best_time(lambda: numpy_step(X, y, W, a, LAM, ETA), reps)}
        tracemalloc.start()
        numpy_step(X, y, W, a, LAM, ETA)
        r["numpy_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        r["torch_seconds"] = r["torch_compile_seconds"] = None
        if torch_note is None:
            r["torch_seconds"] = best_time(torch_step_fn(X, y, W, a, LAM, ETA), reps)
            try:
                r["torch_compile_seconds"] = best_time(torch_step_fn(X, y, W, a, LAM, ETA, compiled=True), reps)
            except Exception as exc:  # torch.compile needs a C compiler; say why it is missing
                r["torch_compile_note"] = f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        out["rows"].append(r)
    out["blas"] = blas_info()
    return out


def native_baselines(sizes) -> dict:
    """:func:`baselines` in a child process without the OpenBLAS overrides (see the module docstring)."""
    script = f"import json\nfrom wgflow.benchmarks.particle import baselines\nprint(json.dumps(baselines({json.dumps([list(s) for s in sizes])})))"
    return run_fresh(script, env=native_blas_env())


def blas_summary(blas: list[dict]) -> str:
    """One line: the BLAS library, its kernel and threads."""
    parts = [
        f"{b.get('internal_api')} {b.get('version')} kernel {b.get('architecture')}, {b.get('num_threads')} thread(s)" if "note" not in b else b["note"]
        for b in blas
    ]
    return "; ".join(parts) or "no BLAS library reported"


def torch_step_fn(X, y, W, a, lam, eta, compiled: bool = False):
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

    return torch.compile(step) if compiled else step


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
    sizes = QUICK_SIZES if quick else SIZES
    base = native_baselines(sizes)
    blas = blas_summary(base["blas"])
    rows = []
    for (n, m, d), b in zip(sizes, base["rows"]):
        X, y, W, a = problem(n, m, d)
        flops = 4 * n * m * (d + 1)
        fn, temp = wgflow_step_fn(X, y, W, a, LAM, ETA)
        t_wg = best_time(fn, _reps(n, m))
        candidates = {"NumPy": b["numpy_seconds"], "torch": b["torch_seconds"], "torch.compile": b["torch_compile_seconds"]}
        fastest = min((k for k, v in candidates.items() if v is not None), key=lambda k: candidates[k])
        baseline = candidates[fastest]
        notes = [f"NumPy ran {blas} (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset)"]
        if base["torch"] == "not installed":
            notes.append("torch, torch.compile: not installed (" + missing_baseline("torch") + ")")
        elif b.get("torch_compile_note"):
            notes.append(b["torch_compile_note"])
        rows.append(
            {
                "name": f"particle_step n={n} m={m} d={d}",
                "n": n,
                "m": m,
                "d": d,
                "seconds": t_wg,
                "baseline_seconds": baseline,
                "baseline": fastest,
                "numpy_seconds": b["numpy_seconds"],
                "torch_seconds": b["torch_seconds"],
                "torch_compile_seconds": b["torch_compile_seconds"],
                "torch": base["torch"],
                "blas": base["blas"],
                "note": "; ".join(notes),
                "ratio": baseline / t_wg,
                "gflops": flops / t_wg / 1e9,
                "fraction_of_peak": flops / t_wg / 1e9 / peak,
                "numpy_fraction_of_peak": flops / b["numpy_seconds"] / 1e9 / peak,
                "matmul_peak_gflops": peak,
                "wgflow_temp_bytes": temp,
                "numpy_peak_bytes": b["numpy_peak_bytes"],
                "n_by_m_float32_bytes": 4 * n * m,
                "target": "ratio ≥ 1 against the fastest baseline (≥ 1.5 at the three largest); temp ≤ one n×m float32",
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| size (n, m, d) | wgflow s/step | NumPy s/step | torch s/step | torch.compile s/step | ratio vs fastest | % of matmul peak | wgflow temp / (n·m·4 B) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        missing = "not installed" if r.get("torch") == "not installed" else "—"
        torch_s = f"{r['torch_seconds']:.4g}" if r["torch_seconds"] is not None else missing
        compile_s = f"{r['torch_compile_seconds']:.4g}" if r.get("torch_compile_seconds") is not None else missing
        temp = f"{r['wgflow_temp_bytes'] / r['n_by_m_float32_bytes']:.2f}" if r["wgflow_temp_bytes"] is not None else "—"
        lines.append(
            f"| ({r['n']}, {r['m']}, {r['d']}) | {r['seconds']:.4g} | {r['numpy_seconds']:.4g} | {torch_s} | {compile_s} | "
            f"{r['ratio']:.2f}× | {100 * r['fraction_of_peak']:.1f}% (NumPy {100 * r['numpy_fraction_of_peak']:.1f}%) | {temp} |"
        )
    return "\n".join(lines)
