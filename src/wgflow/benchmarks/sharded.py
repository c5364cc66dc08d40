"""One explicit step at (n, m, d) = (4096, 65536, 20), float32, split three ways in the same run
(each in fresh processes, since the device count is fixed at start-up): one process on one
device; one process sharded over 4 forced host devices; two processes of one ``jax.distributed``
job (gloo on 127.0.0.1) × 2 host devices each, the same 4 devices in all. On a machine of a few
cores the host "devices" share them: the targets are "no slower" (4 devices against 1, and two
processes against one process with the same 4 devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from wgflow.benchmarks.common import row, run_fresh, with_this_wgflow
from wgflow.distributed import free_port

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    if {processes} > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes={processes}, process_id=int(sys.argv[2]))
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
    # several processes make the same number of calls (each has collectives): no time-based repeats
    t = best_time(lambda: jax.block_until_ready(step(obj, mu)), 3, min_seconds=0.2 if {processes} == 1 else 0.0)
    print(json.dumps({{"seconds": t, "devices": len(jax.devices()), "processes": jax.process_count()}}))
    """
)


def _time(shard: bool, devices: int, n: int, m: int, d: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    return run_fresh(SCRIPT.format(n=n, m=m, d=d, shard=shard, processes=1), env=env, timeout=1800)


def _time_processes(processes: int, devices_each: int, n: int, m: int, d: int, timeout: float = 1800) -> dict:
    """The step sharded over ``processes`` local processes of one job × ``devices_each`` host devices; process 0's time."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}", JAX_PLATFORMS="cpu", WGFLOW_CACHE="off")
    script = with_this_wgflow(SCRIPT.format(n=n, m=m, d=d, shard=True, processes=processes))
    address = f"127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen([sys.executable, "-c", script, address, str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(processes)
    ]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(err[-2000:])
    return json.loads(outs[0][0].strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    n, m, d = (1024, 16384, 20) if quick else (4096, 65536, 20)
    single = _time(False, 1, n, m, d)
    sharded = _time(True, 4, n, m, d)
    two = _time_processes(2, 2, n, m, d)
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
        ),
        row(
            f"step over 2 processes x 2 host devices vs 1 process x 4, n={n} m={m} d={d}",
            two["seconds"],
            sharded["seconds"],
            n=n,
            m=m,
            d=d,
            devices=two["devices"],
            processes=two["processes"],
            target="ratio ≥ 1 (no slower); gloo over 127.0.0.1",
        ),
    ]
