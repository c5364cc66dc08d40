"""Sharded over 4 forced host devices against one device, in the same run (each in a fresh process,
since the device count is fixed at start-up): one explicit step at (n, m, d) = (4096, 65536, 20),
float32. This machine has 2 cores, so 4 host "devices" share them: the target is "no slower"."""

from __future__ import annotations

import os
import textwrap

from wgflow.benchmarks.common import row, run_fresh

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from wgflow import make_objective
    from wgflow.benchmarks.common import best_time
    from wgflow.flows.particle import explicit_step
    from wgflow.measure import Measure
    from wgflow import sharding
    n, m, d = {n}, {m}, {d}
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    obj = make_objective(X, rng.standard_normal(n).astype(np.float32), "lifted", lam=1e-3, reduction="mean")
    mu = Measure(jnp.asarray(rng.standard_normal((m, d + 1)).astype(np.float32)), jnp.full((m,), 1.0 / m, jnp.float32))
    if {shard}:
        mesh = sharding.atom_mesh()
        mu, _ = sharding.shard_measure(mu, mesh)
        obj = sharding.replicate(obj, mesh)
    step = jax.jit(lambda o, mu: explicit_step(o, mu, jnp.float32(0.1))[0])
    t = best_time(lambda: jax.block_until_ready(step(obj, mu)), 3)
    print(json.dumps({{"seconds": t, "devices": len(jax.devices())}}))
    """
)


def _time(shard: bool, devices: int, n: int, m: int, d: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    return run_fresh(SCRIPT.format(n=n, m=m, d=d, shard=shard), env=env, timeout=1800)


def run(quick: bool = False) -> list[dict]:
    n, m, d = (1024, 16384, 20) if quick else (4096, 65536, 20)
    single = _time(False, 1, n, m, d)
    sharded = _time(True, 4, n, m, d)
    return [
        row(
            f"step sharded over 4 host devices vs 1, n={n} m={m} d={d}",
            sharded["seconds"],
            single["seconds"],
            n=n,
            m=m,
            d=d,
            devices=sharded["devices"],
            target="ratio ≥ 1 (no slower); 2 physical cores",
        )
    ]
