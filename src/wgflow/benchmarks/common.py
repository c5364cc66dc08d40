"""Timing helpers shared by the benchmarks: best-of-k wall time and this machine's matmul rate."""

from __future__ import annotations

import json
import subprocess
import sys
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


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's, inherited at fork)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def with_this_wgflow(script: str) -> str:
    """``script`` preceded by this process's ``sys.path``, so that a child Python imports this wgflow."""
    return f"import sys\nsys.path[:0] = {sys.path!r}\n" + script


def run_fresh(script: str, *, env: dict | None = None, timeout: float = 3600) -> dict:
    """Run ``script`` in a fresh Python process that imports this wgflow, and return the JSON its
    last line of output prints. Raises RuntimeError with the end of its stderr if it fails."""
    proc = subprocess.run([sys.executable, "-c", with_this_wgflow(script)], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: variables that pin OpenBLAS to a kernel or a cache size other than the machine's own (an
#: environment may set OPENBLAS_CORETYPE=Haswell, which slows NumPy on newer CPUs)
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def native_blas_env() -> dict:
    """This environment without :data:`BLAS_OVERRIDES`: a NumPy baseline run in a child
    process with it uses the kernels OpenBLAS picks for this CPU."""
    import os

    return {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}


def blas_info() -> list[dict]:
    """The BLAS libraries this process loaded, with their kernel (``architecture``) and threads
    (threadpoolctl); ``[{"note": ...}]`` without threadpoolctl."""
    try:
        import threadpoolctl
    except ImportError:
        return [{"note": missing_baseline("threadpoolctl")}]
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer", "filepath")
    return [{k: lib.get(k) for k in keep} for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"]


BENCH_EXTRA = "pip install 'wgflow[bench]'"


def missing_baseline(package: str) -> str:
    """What a row says when the optional baseline ``package`` is not installed."""
    return f"skipped: {package} is not installed ({BENCH_EXTRA} installs the benchmark baselines)"
