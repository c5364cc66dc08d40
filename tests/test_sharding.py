"""Sharded runs (4 forced host devices) equal single-device runs (float64, 1e-12)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from wgflow import make_objective
    from wgflow.chunking import Chunking
    from wgflow.data import teacher_student
    from wgflow.flows import SaveAt, explicit_gd
    from wgflow.init import initial_measure

    assert len(jax.devices()) == 4, jax.devices()
    ds = teacher_student(jax.random.PRNGKey(0), 64, 3, 4, noise=0.1)
    for param, chunking in [("lifted", Chunking("none")), ("sphere", Chunking("neurons", 8)), ("signed_square", Chunking("data", 16))]:
        obj = make_objective(ds.X, ds.y, param, lam=1e-3, reduction="mean", chunking=chunking)
        mu = initial_measure(jax.random.PRNGKey(1), param, 30, obj.d, scale=0.5)  # 30: not a multiple of 4
        single = explicit_gd(obj, mu, 0.05, 200, save=SaveAt(every=50))
        sharded = explicit_gd(obj, mu, 0.05, 200, save=SaveAt(every=50), shard=True)
        assert sharded.final.positions.shape == single.final.positions.shape
        np.testing.assert_allclose(sharded.objective, single.objective, rtol=1e-12)
        np.testing.assert_allclose(sharded.final.positions, single.final.positions, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sharded.saved.positions, single.saved.positions, rtol=1e-12, atol=1e-12)
        print(param, "max |Δθ| =", float(np.abs(sharded.final.positions - single.final.positions).max()))
    print("OK")
    """
)


def test_sharded_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr
