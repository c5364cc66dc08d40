"""Run folders: the manifest and what it owns, the lock, resume after SIGKILL / SIGTERM / SIGINT,
concurrent runs, and a group whose every run stops (a result, not a crash)."""

import hashlib
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, TINY_JKO_STUDY  # the smallest chizat-bach-relu run that still exercises every file
from wgflow import experiments
from wgflow.cli import main
from wgflow.experiments.rundir import MANIFEST, RunDir

# the subprocess runs: --quick with these (2 groups × 8 segments; about 15 s on 2 slow cores)
SUB = [
    "model.parameterisations=['signed_square', 'lifted']",
    "train.step_size=0.25",
    "sweep.widths=[3, 6]",
    "sweep.seeds=2",
    "train.num_steps=2000",
    "output.checkpoint_every=250",
    "output.snapshots=10",
    "output.metrics_points=20",
    "output.animation=false",
]


def sets(items):
    return [a for s in items for a in ("--set", s)]


def cli_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wgflow.cli", "run", "chizat-bach-relu", "--quick", *sets(SUB), "--out", str(out), *extra]


def files_of(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_same_results(a: Path, b: Path) -> None:
    ra, rb = RunDir(a).load_npz("results.npz"), RunDir(b).load_npz("results.npz")
    assert ra.keys() == rb.keys()
    for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the subprocess config (in this process)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    experiments.run("chizat-bach-relu", SUB, out, quick=True, progress=False)
    return out


# --------------------------------------------------------------------------- ownership


def test_force_and_overwrite_never_touch_foreign_files(tmp_path):
    out = tmp_path / "x"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "model.pt").write_text("keep")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not a wgflow run folder"):
        experiments.run("chizat-bach-relu", TINY, out, progress=False)
    experiments.run("chizat-bach-relu", TINY, out, force=True, progress=False)
    (out / "later.txt").write_text("added after the run")
    foreign = {k: v for k, v in files_of(out).items() if k in ("checkpoints/model.pt", "notes.txt", "later.txt")}
    assert len(foreign) == 3
    with pytest.raises(Exception, match="--overwrite"):
        experiments.run("chizat-bach-relu", TINY, out, progress=False)
    experiments.run("chizat-bach-relu", TINY + ["model.lam=0.001"], out, overwrite=True, progress=False)
    after = files_of(out)
    assert {k: after[k] for k in foreign} == foreign
    manifest = json.loads((out / MANIFEST).read_text())
    assert not set(foreign) & set(manifest["files"])
    assert "lam = 0.001" in (out / "config.toml").read_text()


def test_force_refuses_a_foreign_file_named_like_a_figure_before_any_compute(tmp_path, monkeypatch):
    """A foreign objective.png is refused before the run starts (no compute, no file changed),
    with --force into a foreign folder and also beside an earlier run made with --force."""
    from wgflow.experiments import teacher_student

    def no_compute(*a, **k):
        raise AssertionError("the run started")

    out = tmp_path / "x"
    out.mkdir()
    (out / "objective.png").write_bytes(b"mine")
    monkeypatch.setattr(teacher_student, "train", no_compute)
    with pytest.raises(Exception, match="objective.png"):
        experiments.run("chizat-bach-relu", TINY, out, force=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["objective.png"] and (out / "objective.png").read_bytes() == b"mine"
    monkeypatch.undo()
    (out / "objective.png").unlink()
    experiments.run("chizat-bach-relu", TINY, out, force=True, progress=False)
    (out / "objective.pdf").unlink()
    (out / "objective.pdf").write_bytes(b"mine")  # a foreign file where the run's was
    before = files_of(out)
    monkeypatch.setattr(teacher_student, "train", no_compute)
    with pytest.raises(Exception, match="objective.pdf"):
        experiments.run("chizat-bach-relu", TINY, out, overwrite=True, progress=False)
    assert files_of(out) == before


def test_links_folders_and_a_doctored_manifest_never_cost_a_users_file(tmp_path):
    """Found by a hostile review: a linked checkpoints/, a user's file in place of a checkpoint,
    a manifest listing paths outside the folder, a folder where a figure was: each refused
    before anything is deleted, and the user's files keep every byte."""
    done = tmp_path / "done"
    experiments.run("chizat-bach-relu", TINY, done, progress=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")

    def attempt(prepare, **flags):
        out = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        subprocess.run(["cp", "-a", str(done), str(out)], check=True)
        prepare(out)
        before = {**files_of(out), "victim": hashlib.sha256(victim.read_bytes()).hexdigest()}
        with pytest.raises(Exception) as info:
            experiments.run("chizat-bach-relu", TINY, out, progress=False, **({"overwrite": True} | flags))
        assert {**files_of(out), "victim": hashlib.sha256(victim.read_bytes()).hexdigest()} == before
        return str(info.value)

    def linked_checkpoints(out):
        user = tmp_path / "user_checkpoints"
        user.mkdir(exist_ok=True)
        for f in (out / "checkpoints").iterdir():
            (user / f.name).write_text("mine")
        subprocess.run(["rm", "-rf", str(out / "checkpoints")], check=True)
        (out / "checkpoints").symlink_to(user)

    def replaced_checkpoint(out):
        next((out / "checkpoints").glob("*.npz")).write_text("my notes")

    def outside(entry):
        def doctor(out):
            m = json.loads((out / MANIFEST).read_text())
            m["files"].append(entry)
            (out / MANIFEST).write_text(json.dumps(m))

        return doctor

    def folder_for_a_figure(out):
        (out / "objective.png").unlink()
        (out / "objective.png").mkdir()
        (out / "objective.png" / "a.txt").write_text("mine")

    assert "symbolic link" in attempt(linked_checkpoints)
    assert "changed since wgflow wrote" in attempt(replaced_checkpoint)
    for entry in ("../victim.txt", str(victim), ".", 5):
        assert "not a file inside the folder" in attempt(outside(entry)) or "damaged" in attempt(outside(entry))
    assert "objective.png" in attempt(folder_for_a_figure)


def test_every_file_a_run_writes_is_declared(tmp_path):
    """What a kind declares (``outputs(cfg)``, checked up front) covers what it writes."""
    from wgflow.experiments import output_files
    from wgflow.experiments.rundir import RESERVED

    rd, _ = experiments.run("chizat-bach-relu", [*TINY, "output.animation=true"], tmp_path / "a", progress=False)
    module, cfg = experiments.load("chizat-bach-relu", [*TINY, "output.animation=true"])
    written = {f for f in json.loads((rd.path / MANIFEST).read_text())["files"] if not f.startswith("checkpoints/")}
    assert written - set(RESERVED) == set(output_files(module, cfg))


def test_manifest_first_lists_every_file_and_the_default_folder_gets_a_fresh_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    original = RunDir.write_bytes

    def write_bytes(self, name, data):
        seen.append((name, (self.path / MANIFEST).exists()))
        return original(self, name, data)

    monkeypatch.setattr(RunDir, "write_bytes", write_bytes)
    rd1, _ = experiments.run("chizat-bach-relu", TINY, progress=False)
    assert seen and all(first for _, first in seen), seen  # the manifest exists before any file
    manifest = json.loads((rd1.path / MANIFEST).read_text())
    assert manifest["state"] == "finished" and manifest["pid"] is None and manifest["config_hash"] and manifest["wgflow"]
    first = files_of(rd1.path)
    assert set(manifest["files"]) == set(first) - {MANIFEST}
    notes = []
    rd2, _ = experiments.run("chizat-bach-relu", TINY, progress=False, echo=notes.append)
    assert rd1.path == Path("runs/chizat-bach-relu") and rd2.path == Path("runs/chizat-bach-relu-2")
    assert files_of(rd1.path) == first  # the first run is untouched
    assert any("runs/chizat-bach-relu-2" in n for n in notes)


def test_stale_lock_is_taken_over_with_a_notice_and_sigint_stops_after_a_checkpoint(tmp_path, monkeypatch, capsys):
    """SIGINT (in this process) stops the run after the segment's checkpoint: exit 130 and the
    resume command; a lock whose PID is gone is then taken over with a notice."""
    import threading

    out = tmp_path / "run"

    def interrupt_after_first_checkpoint():
        if _wait_for(lambda: (out / "checkpoints").exists() and any((out / "checkpoints").glob("*.npz"))):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_checkpoint, daemon=True).start()
    assert main(["run", "chizat-bach-relu", *sets(TINY), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "SIGINT: stopping" in err and f"Resume with:\n  wgflow run {out}/config.toml --resume --out {out}" in err, err
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["state"] == "interrupted" and not (out / "summary.json").exists()
    dead = subprocess.Popen(["true"])
    dead.wait()
    manifest.update(state="running", pid=dead.pid, pid_started=None)
    (out / MANIFEST).write_text(json.dumps(manifest))
    notes = []
    experiments.run("chizat-bach-relu", TINY, out, resume=True, progress=False, echo=notes.append)
    assert any(f"PID {dead.pid}" in n and "no longer running" in n for n in notes), notes
    assert any("from step" in n for n in notes), notes
    assert json.loads((out / MANIFEST).read_text())["state"] == "finished"


SEGMENTED = {  # kinds that checkpoint every so many steps: (experiment, --quick?, --set for one long segment)
    "teacher-student": ("chizat-bach-relu", False, [*TINY, "train.num_steps=5000", "output.checkpoint_every=5000"]),
    "resnet-digits": ("resnet-digits", True, ["train.checkpoint_every=300"]),
}


@pytest.mark.parametrize("kind", sorted(SEGMENTED))
def test_a_signal_checkpoints_at_the_block_in_progress_and_resumes_bit_identically(kind, tmp_path, capsys):
    """One segment (blocks of at most 1000 steps): SIGINT during it checkpoints at the end of
    the block in progress, not after the whole segment, and the resumed run equals an
    uninterrupted one bit for bit (records, snapshots, final measures)."""
    import threading

    from wgflow.experiments import rundir
    from wgflow.experiments.rundir import checkpoint_header

    name, quick, one_segment = SEGMENTED[kind]
    q = ["--quick"] if quick else []
    reference = tmp_path / "reference"
    experiments.run(name, one_segment, reference, quick=quick, progress=False)
    K = json.loads((reference / "summary.json").read_text()).get("num_steps") or 300
    out = tmp_path / "run"

    def interrupt_once_the_segment_runs():
        if _wait_for(lambda: bool(rundir._signals["segments"])):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_the_segment_runs, daemon=True).start()
    assert main(["run", name, *q, *sets(one_segment), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "at the end of the block of steps in progress" in err and "Resume with:" in err, err
    checkpoints = list((out / "checkpoints").glob("*.npz"))  # one per group of runs that had started
    assert checkpoints
    for checkpoint in checkpoints:
        _, step = checkpoint_header(checkpoint)
        assert 0 < step < K, (checkpoint.name, step)  # a block ends every 1000 steps (fewer for a ResNet) and at each save
    assert main(["run", name, *q, *sets(one_segment), "--resume", "--out", str(out)]) == 0
    assert_same_results(reference, out)


PARTS = {  # kinds whose parts (a flow, a case) are checkpointed when done: (experiment, --set, the second part's key)
    "resnet-pl": ("resnet-pl", ["ladder.N=[16]", "ladder.init=['gaussian']", "ladder.delta=[0.1, 1.0]", "model.width=16", "train.steps=60"], "case1"),
    "parameterisations": ("parameterisations", ["train.num_steps=200"], "lifted"),
    "jko-vs-gd": ("jko-vs-gd", ["spaces=['split']", *TINY_JKO_STUDY], "split-langevin-0.1"),
}


@pytest.mark.parametrize("kind", sorted(PARTS))
def test_a_signal_during_a_part_keeps_the_parts_done_and_resume_reads_them_back(kind, tmp_path, capsys):
    import threading

    from wgflow.experiments import rundir
    from wgflow.experiments.rundir import PART_DONE, checkpoint_header

    name, items, second = PARTS[kind]
    reference = tmp_path / "reference"
    experiments.run(name, items, reference, quick=True, progress=False)
    out = tmp_path / "run"

    def interrupt_in_the_second_part():
        if _wait_for(lambda: second in rundir._signals["segments"]):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_in_the_second_part, daemon=True).start()
    assert main(["run", name, "--quick", *sets(items), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"stopping once {second} is done and checkpointed" in err and "Resume with:" in err, err
    done = sorted(p.stem for p in (out / "checkpoints").glob("*.npz"))
    assert second in done and all(checkpoint_header(out / "checkpoints" / f"{k}.npz")[1] == PART_DONE for k in done)
    notes = []
    experiments.run(name, items, out, quick=True, resume=True, progress=False, echo=notes.append)
    assert any(f"{second} done" in n for n in notes), notes
    assert_same_results(reference, out)


def test_a_run_on_a_users_file_resumes_and_a_changed_file_is_refused(tmp_path, monkeypatch):
    """The checkpoints of a run on a data file carry the file's digest: the same file resumes
    bit-identically; an edited file is refused before anything is written."""
    from wgflow.experiments.rundir import INTERRUPT_ENV, SimulatedInterrupt

    data = tmp_path / "two.csv"
    data.write_text((Path(__file__).parents[1] / "examples" / "two_classes.csv").read_text())
    items = [f"data.path='{data}'", "train.num_steps=300", "output.checkpoint_every=100", "sweep.widths=[5]", "sweep.seeds=2", "output.animation=false"]
    reference = tmp_path / "reference"
    experiments.run("fit", items, reference, progress=False)
    out = tmp_path / "run"
    monkeypatch.setenv(INTERRUPT_ENV, "1")
    with pytest.raises(SimulatedInterrupt):
        experiments.run("fit", items, out, progress=False)
    monkeypatch.delenv(INTERRUPT_ENV)
    data.write_text(data.read_text().replace("1\n", "-1\n", 1))  # one label changed
    before = files_of(out)
    with pytest.raises(Exception, match="different config or data file"):
        experiments.run("fit", items, out, resume=True, progress=False)
    assert files_of(out) == before
    data.write_text((Path(__file__).parents[1] / "examples" / "two_classes.csv").read_text())
    experiments.run("fit", items, out, resume=True, progress=False)
    assert_same_results(reference, out)


# --------------------------------------------------------------------------- divergence is a result


def test_a_group_whose_every_run_stops_keeps_the_other_groups(tmp_path, capsys):
    """η = 0.4: every signed_square run is unstable within a few steps (all of its group stop in
    the first segment, before any snapshot: this once raised IndexError); lifted converges."""
    unstable = TINY + ["train.schedule='constant'", "train.step_size=0.4", "data.teacher_angles=[]"]  # the teacher drawn by the data seed
    out = tmp_path / "both"
    assert main(["run", "chizat-bach-relu", *sets(unstable), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: 4 of 8 runs did not end successful (unstable 4)" in err, err
    summary = json.loads((out / "summary.json").read_text())
    by = {p: [r for r in summary["runs"] if r["parameterisation"] == p] for p in ("signed_square", "lifted")}
    assert all(r["status"] == "unstable" and r["stop_step"] < 300 and "unstable at step" in r["message"] for r in by["signed_square"])
    assert all(r["status"] == "successful" and r["stop_step"] == 300 for r in by["lifted"])
    table = {(r["parameterisation"], r["width"]): r for r in summary["table"]}
    assert table["signed_square", 3]["unstable"] == 2 and table["lifted", 3]["successful"] == 2
    assert (out / "final_vs_width.png").stat().st_size > 1000
    # the healthy group's results are exactly those of a run of that group alone
    alone = tmp_path / "alone"
    experiments.run("chizat-bach-relu", unstable + ["model.parameterisations=['lifted']"], alone, progress=False)
    a, b = RunDir(out).load_npz("results.npz"), RunDir(alone).load_npz("results.npz")
    lifted = [k for k in b if k.startswith("lifted/")]
    assert lifted
    for k in lifted:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --------------------------------------------------------------------------- fault injection (subprocesses)


def _wait_for(predicate, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, reference):
    out = tmp_path / "run"
    rng = random.Random(2024)
    moments = [rng.uniform(0.0, 8.0) for _ in range(5)]  # seconds after the process took the folder

    def holds_the_lock(pid):
        try:
            return json.loads((out / MANIFEST).read_text()).get("pid") == pid
        except (OSError, ValueError):
            return False

    for delay in moments:
        resume = (out / MANIFEST).exists()
        proc = subprocess.Popen(cli_command(out, *(["--resume"] if resume else [])), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for(lambda: holds_the_lock(proc.pid) or proc.poll() is not None)  # a loaded machine imports slowly
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        else:  # finished before this moment: nothing left to interrupt
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
    assert main(["run", "chizat-bach-relu", "--quick", *sets(SUB), "--resume", "--out", str(out)]) == 0
    assert_same_results(reference, out)
    assert not list(out.rglob(".*.tmp")), "a killed writer's temporary was left behind"
    assert json.loads((out / MANIFEST).read_text())["state"] == "finished"


@pytest.mark.slow
def test_sigterm_checkpoints_prints_the_resume_command_and_resumes_bit_identically(tmp_path, reference):
    sig, code = signal.SIGTERM, 143
    out = tmp_path / "run"
    proc = subprocess.Popen(cli_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: any((out / "checkpoints").glob("*.npz")) if (out / "checkpoints").exists() else False)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "its checkpoints are kept" in err, err
    command = err.split("Resume with:")[1].strip().splitlines()[0]
    assert command.startswith("wgflow run ") and "--resume" in command
    assert json.loads((out / MANIFEST).read_text())["state"] == "interrupted"
    assert not (out / "summary.json").exists()
    assert main(shlex.split(command)[1:]) == 0
    assert_same_results(reference, out)


@pytest.mark.slow
def test_two_concurrent_runs_into_one_folder_one_refuses(tmp_path, reference):
    out = tmp_path / "run"
    procs = [subprocess.Popen(cli_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], (codes, errs)
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert "in use by a wgflow run in progress" in errs[loser] and f"PID {procs[winner].pid}" in errs[loser], errs[loser]
    assert "Traceback" not in errs[loser]
    assert_same_results(reference, out)
    assert json.loads((out / MANIFEST).read_text())["state"] == "finished"


def test_run_concurrently_keeps_the_order_and_raises_the_first_failure_after_stopping_the_others():
    """Results come back in the tasks' order; when a task fails, the running ones see
    interrupt_requested() (their pause hook) and stop, the queued ones never start, and the
    failure is what is raised — also with more tasks than workers."""
    import threading

    from wgflow.experiments import rundir

    started = threading.Barrier(2, timeout=30)

    def slow(i):
        def task():
            started.wait()
            time.sleep(0.05 * (3 - i))  # finish out of order
            return i

        return task

    assert rundir.run_concurrently([slow(1), slow(2)], workers=2) == [1, 2]
    assert rundir.run_concurrently([lambda: 1, lambda: 2, lambda: 3], workers=1) == [1, 2, 3]
    assert rundir.run_concurrently([lambda i=i: i for i in range(7)], workers=3, costs=[1, 5, 2, 7, 0, 3, 3]) == list(range(7))

    stopped, ran = threading.Event(), []

    def waits_for_a_stop():
        deadline = time.monotonic() + 30
        while not rundir.interrupt_requested():
            assert time.monotonic() < deadline, "never asked to stop"
            time.sleep(0.01)
        stopped.set()
        raise rundir._Aborted("stopped after its checkpoint")

    def fails():
        time.sleep(0.1)
        raise ValueError("group 2 failed")

    queued = [lambda: ran.append("queued") for _ in range(3)]
    with pytest.raises(ValueError, match="group 2 failed"):
        rundir.run_concurrently([waits_for_a_stop, fails, *queued], workers=2)
    assert stopped.is_set() and ran == []
    assert not rundir.interrupt_requested()  # the stop belonged to that call only
    assert rundir.run_concurrently([lambda: rundir.interrupt_requested(), lambda: 0], workers=2) == [False, 0]


def test_groups_trained_at_once_give_the_numbers_of_groups_trained_one_by_one(tmp_path):
    """sweep.workers = 2 (two groups of runs in threads) against 1: every array of results.npz
    and the metrics are bit-identical."""
    from wgflow.experiments.teacher_student import group_workers

    _, cfg = experiments.load("chizat-bach-relu", TINY + ["sweep.workers=2"])
    assert group_workers(cfg, 2) == 2 and group_workers(cfg, 1) == 1
    one, two = tmp_path / "one", tmp_path / "two"
    experiments.run("chizat-bach-relu", TINY + ["sweep.workers=1"], one, progress=False)
    experiments.run("chizat-bach-relu", TINY + ["sweep.workers=2"], two, progress=False)
    a, b = RunDir(one).load_npz("results.npz"), RunDir(two).load_npz("results.npz")
    assert list(a.keys()) == list(b.keys())
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (one / "metrics.csv").read_text() == (two / "metrics.csv").read_text()
