"""Two processes × two host devices over jax.distributed (gloo on 127.0.0.1), float64.

Each flow, run sharded over the 4 devices of the 2 processes, equals the same flow run in
one process on one device (computed in the same script, unsharded) to 1e-10, on every
process; ``wgflow run --processes 2`` writes its folder once and its results equal a
single-process run's. The processes get timeouts, so a hang fails instead of blocking.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from wgflow.distributed import free_port

SRC = str(Path(__file__).resolve().parents[1] / "src")
TIMEOUT = 600  # seconds per job: the CI machine is small, and two processes compile everything twice

FLOWS = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    import numpy as np
    from wgflow import make_objective
    from wgflow.data import teacher_student
    from wgflow.flows import SaveAt, explicit_gd, explicit_gd_sweep, langevin_gd
    from wgflow.flows.jko import jko
    from wgflow.grid import box_grid, initial_grid_density
    from wgflow.init import initial_measure
    from wgflow.measure import stack_padded

    assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
    ds = teacher_student(jax.random.PRNGKey(0), 64, 3, 4, noise=0.1)
    obj = make_objective(ds.X, ds.y, "lifted", lam=1e-3, reduction="mean")
    mu = initial_measure(jax.random.PRNGKey(1), "lifted", 30, obj.d, scale=0.5)  # 30 atoms: padded to 32

    one = explicit_gd(obj, mu, 0.05, 200, save=SaveAt(every=50))
    many = explicit_gd(obj, mu, 0.05, 200, save=SaveAt(every=50), shard=True)
    assert many.final.positions.shape == one.final.positions.shape
    close(many.objective, one.objective); close(many.final.positions, one.final.positions); close(many.saved.positions, one.saved.positions)
    print("explicit", float(np.abs(many.final.positions - one.final.positions).max()), flush=True)

    one = langevin_gd(obj, mu, 0.05, 100, temperature=1e-3, key=jax.random.PRNGKey(5))
    many = langevin_gd(obj, mu, 0.05, 100, temperature=1e-3, key=jax.random.PRNGKey(5), shard=True)
    close(many.objective, one.objective); close(many.final.positions, one.final.positions)
    assert float(np.abs(one.final.positions - explicit_gd(obj, mu, 0.05, 100).final.positions).max()) > 1e-4  # the noise acted
    print("langevin", float(np.abs(many.final.positions - one.final.positions).max()), flush=True)

    mus = stack_padded([initial_measure(jax.random.PRNGKey(s), "lifted", w, obj.d, scale=0.5) for s, w in [(1, 5), (2, 7), (3, 9)]])
    one = explicit_gd_sweep(obj, mus, 0.05, 100, save=SaveAt(every=50), shard=False)
    many = explicit_gd_sweep(obj, mus, 0.05, 100, save=SaveAt(every=50))  # several processes: the runs are split by default
    assert many.num_runs == 3 and many.message == one.message
    close(many.objective, one.objective); close(many.final.positions, one.final.positions); close(many.saved.positions, one.saved.positions)
    print("sweep", float(np.abs(many.final.positions - one.final.positions).max()), flush=True)

    ds = teacher_student(jax.random.PRNGKey(0), 20, 2, 2)
    obj = make_objective(ds.X, ds.y, "split", lam=1e-2)
    grid = box_grid(-3.0, 3.0, (12, 12))
    p0 = initial_grid_density(grid, "gaussian", std=0.5, components=2)
    one = jko(obj, p0, 0.05, 1, grid=grid, blur=0.01)
    many = jko(obj, p0, 0.05, 1, grid=grid, blur=0.01, shard=True)
    assert one.ok and many.ok, (one.message, many.message)
    close(many.objective, one.objective); close(many.final.masses, one.final.masses)
    print("jko", float(np.abs(np.asarray(many.final.masses) - np.asarray(one.final.masses)).max()), flush=True)
    print("OK", flush=True)
    """
)


def _env(**extra):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", **extra}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_flows_over_two_processes_equal_one_process(tmp_path):
    script = tmp_path / "flows.py"
    script.write_text(FLOWS)
    address = f"127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen([sys.executable, str(script), address, str(i)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and "OK" in out, out[-3000:]
        assert all(word in out for word in ("explicit", "langevin", "sweep", "jko"))


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """The TINY run in one process on one device: the reference of the runs over two processes."""
    one = tmp_path_factory.mktemp("one") / "one"
    cmd = [sys.executable, "-m", "wgflow.cli", "run", "chizat-bach-relu", "--out", str(one), *[a for s in TINY for a in ("--set", s)]]
    out = subprocess.run(cmd, env=_env(XLA_FLAGS=""), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    return one


def _written_once_and_equal(many: Path, one: Path) -> None:
    manifest = json.loads((many / "wgflow-run.json").read_text())
    assert manifest["state"] == "finished" and manifest["pid"] is None
    files = manifest["files"]
    assert len(files) == len(set(files))  # each file listed once
    on_disk = {str(p.relative_to(many)) for p in many.rglob("*") if p.is_file()} - {"wgflow-run.json"}
    assert on_disk == set(files), (on_disk, files)  # nothing unlisted (no temporaries, no second copy)
    assert {"config.toml", "summary.json", "metrics.csv", "results.npz"} <= set(files)
    a, b = np.load(many / "results.npz"), np.load(one / "results.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        if a[key].dtype.kind == "f":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-12, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
def test_run_folder_written_once_by_two_processes(tmp_path, one_process_run):
    sets = [a for s in TINY for a in ("--set", s)]
    many = tmp_path / "many"
    cmd = [sys.executable, "-m", "wgflow.cli", "run", "chizat-bach-relu", "--out", str(many), *sets, "--processes", "2"]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.count("wrote ") == 1  # process 0 reports, the other stays quiet
    _written_once_and_equal(many, one_process_run)


def _cluster_env(launcher: str, task: int, port: int) -> dict:
    """The variables ``srun -n 2`` (SLURM) or ``mpirun -n 2`` (Open MPI) give task ``task`` on one
    node, as jax.distributed.initialize() reads them: the coordinator's port is derived from
    the job id, so the job id is chosen to give a free ``port`` (≥ 61440)."""
    if launcher == "srun":
        return {
            "SLURM_JOB_ID": str(port - 61440),
            "SLURM_STEP_NODELIST": "127.0.0.1",
            "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(task),
            "SLURM_LOCALID": str(task),
        }
    return {
        "OMPI_MCA_orte_hnp_uri": f"{(port - 61440) * 4096}.0;tcp://127.0.0.1:1",
        "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": str(task),
        "OMPI_COMM_WORLD_LOCAL_RANK": str(task),
    }


def _free_port_from(low: int) -> int:
    import socket

    for port in range(low, 65536):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in [{low}, 65535]")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_plain_wgflow_run_under_a_cluster_launcher_is_one_job(launcher, tmp_path, one_process_run):
    """``srun -n 2 wgflow run ...`` / ``mpirun -n 2 wgflow run ...`` on one node, emulated by the
    environment each launcher gives its tasks (no cluster here): the two tasks join one job with
    no wgflow option, write the folder once, and equal one process."""
    import random

    sets = [a for s in TINY for a in ("--set", s)]
    many = tmp_path / "many"
    port = _free_port_from(61440 + random.randrange(3000))
    cmd = [sys.executable, "-m", "wgflow.cli", "run", "chizat-bach-relu", "--out", str(many), *sets]
    procs = [subprocess.Popen(cmd, env=_env(**_cluster_env(launcher, i, port)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert outs[0][0].count("wrote ") == 1 and "wrote " not in outs[1][0]  # task 0 writes and reports
    _written_once_and_equal(many, one_process_run)


def test_launcher_strips_processes_and_reads_cluster_environment():
    from wgflow.cli import _without_processes
    from wgflow.distributed import cluster_tasks, initialize

    assert _without_processes(["run", "x", "--processes", "2", "--quick"]) == ["run", "x", "--quick"]
    assert _without_processes(["run", "--processes=3"]) == ["run"]
    assert cluster_tasks({"SLURM_NTASKS": "4"}) == 4 and cluster_tasks({"OMPI_COMM_WORLD_SIZE": "2"}) == 2 and cluster_tasks({}) == 1
    assert initialize({}) == "single" and initialize({"SLURM_NTASKS": "1"}) == "single"


@pytest.mark.slow
def test_bad_input_over_two_processes_is_one_error_and_writes_nothing(tmp_path):
    out = tmp_path / "bad"
    cmd = [sys.executable, "-m", "wgflow.cli", "run", "chizat-bach-relu", "--set", "train.num_steps=-3", "--out", str(out), "--processes", "2"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.count("error: train.num_steps") == 1, res.stderr  # process 0 says it; the other is stopped, not echoed
    assert not out.exists()
