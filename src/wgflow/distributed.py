"""Several processes, one job: joining ``jax.distributed`` and launching local processes.

A wgflow job over several processes is the same program in each (SPMD): every process
builds the same inputs from the same keys, the flows split their atoms, grid points or
runs over the devices of all processes (:mod:`wgflow.sharding`), every process gets the
whole results back, and only process 0 writes the run folder
(:func:`wgflow.experiments.rundir.writes_files`).

How a process joins the job (:func:`initialize`, called by ``wgflow run`` before any
other JAX call):

- launched by ``wgflow run ... --processes N`` (:func:`launch`): the launcher's
  coordinator address, process count and this process's index come in the environment
  (``WGFLOW_COORDINATOR``, ``WGFLOW_NUM_PROCESSES``, ``WGFLOW_PROCESS_ID``);
- under SLURM (``srun``) or Open MPI (``mpirun``) with more than one task:
  ``jax.distributed.initialize()`` with no arguments, which reads the cluster's
  environment;
- otherwise: nothing (one process).

CPU devices talk over gloo (``jax_cpu_collectives_implementation``); GPUs over NCCL as
JAX sets up. Hand-written because JAX starts no processes itself: :func:`launch` is a
small ``subprocess`` supervisor (a free port on 127.0.0.1, N children, the first failure
stops the others).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence

COORDINATOR_ENV, NUM_ENV, ID_ENV = "WGFLOW_COORDINATOR", "WGFLOW_NUM_PROCESSES", "WGFLOW_PROCESS_ID"


def cluster_tasks(env=None) -> int:
    """The number of tasks the cluster started (SLURM or Open MPI), 1 outside a cluster job."""
    env = os.environ if env is None else env
    for key in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        value = env.get(key)
        if value and value.isdigit():
            return int(value)
    return 1


def initialize(env=None) -> str:
    """Join the job this process belongs to (see the module docstring); returns how:
    ``"launched"``, ``"cluster"`` or ``"single"``. Call before any other JAX computation."""
    import jax

    env = os.environ if env is None else env
    launched = COORDINATOR_ENV in env
    cluster = not launched and cluster_tasks(env) > 1
    if not (launched or cluster):
        return "single"
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if launched:
        jax.distributed.initialize(coordinator_address=env[COORDINATOR_ENV], num_processes=int(env[NUM_ENV]), process_id=int(env[ID_ENV]))
        return "launched"
    jax.distributed.initialize()
    return "cluster"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch(args: Sequence[str], processes: int, *, timeout: float | None = None, poll: float = 0.2) -> int:
    """Run ``python -m wgflow.cli ARGS`` as ``processes`` local processes of one ``jax.distributed``
        job (coordinator on 127.0.0.1, a free port). Process 0 prints to this terminal; the others'
        output is shown only if one of them fails while process 0 does not. When a process fails,
    the others are stopped. Returns
        the first nonzero exit code, else 0."""
    port = free_port()
    logs, procs = [], []
    for i in range(processes):
        env = dict(os.environ, **{COORDINATOR_ENV: f"127.0.0.1:{port}", NUM_ENV: str(processes), ID_ENV: str(i)})
        log = None if i == 0 else tempfile.TemporaryFile()
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", "wgflow.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT if log else None))
    start, code = time.monotonic(), 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed or (timeout is not None and time.monotonic() - start > timeout):
                code = failed[0] if failed else 124
                break
            time.sleep(poll)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    code = code or next((p.returncode for p in procs if p.returncode), 0)
    if code and procs[0].returncode in (0, -15):  # process 0 did not say what failed: the others' output does
        for i, (p, log) in enumerate(zip(procs, logs)):
            if log is not None and p.returncode not in (0, None, -15):
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-20:]
                print(f"--- process {i} (exit {p.returncode}):", *tail, sep="\n", file=sys.stderr)
    for log in logs:
        if log is not None:
            log.close()
    return code


__all__ = ["cluster_tasks", "free_port", "initialize", "launch"]
