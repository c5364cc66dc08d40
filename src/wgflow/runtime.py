"""Compilation: a persistent cache so repeated runs of the same shapes compile once, a timer that
separates compile time from run time in every summary, and a guard that drops compiled programs
before a long process runs out of memory maps."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import threading
import time
from pathlib import Path

import jax

# Lowering and XLA compilation (or loading from the cache); tracing is left out because its
# events nest (a jit traced inside another is counted twice) and it is small beside these.
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
    "/jax/compilation_cache/cache_retrieval_time_sec",
)
_lock = threading.Lock()
_intervals: list[tuple[float, float, int]] = []  # (start, end, thread) of each compilation while a timer is open
_open_timers = [0]
_registered = [False]


def _listener(event: str, duration: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        end = time.perf_counter()
        with _lock:
            if _open_timers[0]:
                _intervals.append((end - duration, end, threading.get_ident()))


def _covered(intervals: list[tuple[float, float]], t0: float, t1: float) -> float:
    """The length of the union of the intervals (start, end) within [t0, t1]."""
    total, reach = 0.0, t0
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, t1)
        if b > a:
            total += b - a
            reach = b
    return total


def default_cache_dir() -> Path:
    """``$WGFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/wgflow/jax`` (``~/.cache/wgflow/jax``)."""
    if os.environ.get("WGFLOW_CACHE_DIR"):
        return Path(os.environ["WGFLOW_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "wgflow" / "jax"


def processes_in_job() -> int:
    """How many processes this job has, from the launcher's environment (``--processes``, srun, mpirun)."""
    for key in ("WGFLOW_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        with contextlib.suppress(ValueError, TypeError):
            if key in os.environ:
                return int(os.environ[key])
    return 1


def enable_persistent_cache(path: str | Path | None = None, min_compile_seconds: float = 0.2) -> Path | None:
    """Store compiled programs on disk; a later run of the same shapes loads them instead of compiling.
    Returns the folder, or None if it cannot be created, the job has several processes or
    ``WGFLOW_CACHE=off`` (then nothing is cached). Programs compiled under other ``XLA_FLAGS`` (e.g. another host device
    count) live in another subfolder, so that one setting never reads another's programs."""
    if processes_in_job() > 1 or os.environ.get("WGFLOW_CACHE", "").lower() in ("0", "off", "no", "false"):
        return None
    folder = Path(path) if path is not None else default_cache_dir()
    folder = folder / ("flags-" + hashlib.sha256(os.environ.get("XLA_FLAGS", "").encode()).hexdigest()[:12])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def _memory_maps() -> tuple[int, int] | None:
    """(memory maps of this process, the kernel's limit ``vm.max_map_count``), or None off Linux."""
    try:
        with open("/proc/sys/vm/max_map_count") as fh:
            limit = int(fh.read())
        with open("/proc/self/maps", "rb") as fh:
            return sum(1 for _ in fh), limit
    except (OSError, ValueError):
        return None


def release_compiled_programs(fraction: float = 0.5) -> bool:
    """Drop JAX's in-memory compiled programs (``jax.clear_caches``) once this process holds more
    than ``fraction`` of the kernel's memory-map limit; True if it did.

    Every program XLA compiles for the CPU keeps a few memory maps of its machine code, and JAX
    keeps every program it compiled. A process that compiles tens of thousands of programs (the
    full test suite; a long study of many shapes) reaches ``vm.max_map_count`` (65530 by default),
    and XLA's next compilation or cache read then dies of a segmentation fault instead of an
    error. Called between parts of a run; dropped programs are compiled again when next used."""
    counts = _memory_maps()
    if counts is None or counts[0] <= fraction * counts[1]:
        return False
    drop_compiled_programs()
    return True


def drop_compiled_programs() -> None:
    """Drop JAX's in-memory compiled programs now (``jax.clear_caches``) and collect what they held.

    Compiled CPU programs also hold memory: a ``jko-vs-gd --quick`` run of four measure spaces peaked
    at 1.96 GiB keeping them and at 0.99 GiB dropping them between parts. A study calls this where
    the next programs will differ anyway (a new measure space)."""
    jax.clear_caches()
    gc.collect()


class CompileTimer:
    """``with CompileTimer() as t: ...`` then ``t.compile_seconds`` and ``t.seconds`` (wall time).

    ``compile_seconds`` is the wall time during which something was being lowered and compiled
    (or loaded from the cache): where threads compile at once (the groups of a sweep), their
    compilations count once, so that ``seconds − compile_seconds`` is the time spent on
    anything else. ``this_thread``: count only this thread's compilations (one solve call
    among others running in threads)."""

    def __init__(self, this_thread: bool = False):
        self.this_thread = this_thread

    def __enter__(self):
        with _lock:
            if not _registered[0]:
                jax.monitoring.register_event_duration_secs_listener(_listener)
                _registered[0] = True
            _open_timers[0] += 1
            self._first = len(_intervals)  # an interval is appended when it ends: only later ones can overlap
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        t1 = time.perf_counter()
        with _lock:
            me = threading.get_ident()
            mine = [(a, b) for a, b, thread in _intervals[self._first :] if not self.this_thread or thread == me]
            self.compile_seconds = _covered(mine, self._t0, t1)
            _open_timers[0] -= 1
            if not _open_timers[0]:
                _intervals.clear()
        self.seconds = t1 - self._t0
        return False
