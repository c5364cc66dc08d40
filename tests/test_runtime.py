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
