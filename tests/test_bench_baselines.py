"""The particle benchmark's baselines run in a child process with OpenBLAS's overrides unset."""

import os

from wgflow.benchmarks.common import BLAS_OVERRIDES, native_blas_env
from wgflow.benchmarks.particle import native_baselines


def test_numpy_baseline_runs_without_openblas_overrides(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    env = native_blas_env()
    assert not any(k in env for k in BLAS_OVERRIDES) and env.get("PATH") == os.environ.get("PATH")
    out = native_baselines([(32, 64, 2)])
    (row,) = out["rows"]
    assert row["numpy_seconds"] > 0 and row["numpy_peak_bytes"] > 0
    try:
        import torch  # noqa: F401
    except ImportError:
        assert out["torch"] == "not installed" and row["torch_seconds"] is None and row["torch_compile_seconds"] is None
    else:
        assert row["torch_seconds"] > 0
    # threadpoolctl saw the BLAS NumPy loaded in the child, with the kernel OpenBLAS chose there
    blas = out["blas"]
    assert blas and all("note" in b or b["num_threads"] >= 1 for b in blas)
    kernels = {b.get("architecture") for b in blas if b.get("internal_api") == "openblas"}
    assert "Haswell" not in kernels or os.cpu_count() is None or _native_kernel_is_haswell()


def _native_kernel_is_haswell() -> bool:
    """Whether OpenBLAS picks Haswell on this CPU by itself (then the check above says nothing)."""
    import subprocess
    import sys

    code = "import numpy, threadpoolctl; print([b.get('architecture') for b in threadpoolctl.threadpool_info() if b.get('internal_api') == 'openblas'])"
    out = subprocess.run([sys.executable, "-c", code], env=native_blas_env(), capture_output=True, text=True, timeout=60)
    return "Haswell" in out.stdout
