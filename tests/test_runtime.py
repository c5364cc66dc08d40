"""The guard against running out of memory maps: compiled programs hold maps, and dropping them gives the maps back."""

import sys

import jax
import jax.numpy as jnp
import pytest

from wgflow.runtime import _memory_maps, release_compiled_programs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory maps are read from /proc")
def test_dropping_compiled_programs_returns_their_memory_maps():
    before = _memory_maps()[0]
    for i in range(60):  # 60 programs of their own shapes: each compiled once and kept by JAX
        jax.jit(lambda x, i=i: jnp.sin(x) * i + jnp.cos(x) ** 2)(jnp.ones(7 + i)).block_until_ready()
    held = _memory_maps()[0]
    assert held > before + 60, (before, held)
    assert not release_compiled_programs(fraction=1.0)  # far below the kernel's limit: nothing dropped
    assert _memory_maps()[0] > held - 20  # (a few maps come and go with threads)
    assert release_compiled_programs(fraction=0.0)
    assert _memory_maps()[0] < held - 60, (held, _memory_maps()[0])


def test_compilations_in_threads_at_once_count_once_in_the_compile_time():
    """CompileTimer counts the wall time during which something compiled: overlapping
    compilations (threads) once, and a timer of one thread only that thread's."""
    import threading
    import time

    from wgflow.runtime import CompileTimer, _covered

    assert _covered([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)], 0.5, 5.5) == 2.5 + 0.5
    assert _covered([], 0.0, 1.0) == 0.0
    barrier = threading.Barrier(2)
    inner = {}

    def compile_shapes(offset):
        barrier.wait()
        with CompileTimer(this_thread=True) as own:
            for i in range(8):  # programs of their own shapes: each one compiles
                jax.jit(lambda x, i=i: jnp.tanh(x) * i + jnp.exp(-(x**2)))(jnp.ones(300 + offset + i)).block_until_ready()
        inner[offset] = own.compile_seconds

    with CompileTimer() as whole:
        threads = [threading.Thread(target=compile_shapes, args=(k * 100,)) for k in (1, 2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        time.sleep(0.05)
    assert 0 < whole.compile_seconds <= whole.seconds
    assert all(0 < c <= whole.compile_seconds + 1e-9 for c in inner.values()), (inner, whole.compile_seconds)
    assert whole.compile_seconds <= sum(inner.values()) + 1e-9
