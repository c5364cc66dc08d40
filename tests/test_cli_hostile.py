"""Hostile input to the command line: every case exits 2 with one message naming the field or the
path, prints no traceback, and leaves every byte of the folder it ran in as it was."""

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY  # the smallest chizat-bach-relu run that still exercises every file
from wgflow import experiments
from wgflow.cli import main
from wgflow.experiments.rundir import INTERRUPT_ENV, MANIFEST, SimulatedInterrupt


def sets(*items):
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished and an interrupted tiny run, copied into each case that needs one."""
    root = tmp_path_factory.mktemp("made")
    experiments.run("chizat-bach-relu", TINY, root / "finished", progress=False)
    os.environ[INTERRUPT_ENV] = "1"
    try:
        with pytest.raises(SimulatedInterrupt):
            experiments.run("chizat-bach-relu", TINY, root / "interrupted", progress=False)
    finally:
        del os.environ[INTERRUPT_ENV]
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the hash of its bytes ("dir" for a folder)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------- setups: (tmp, made) -> None


def copy_finished(tmp, made):
    shutil.copytree(made / "finished", tmp / "run")


def copy_interrupted(tmp, made):
    shutil.copytree(made / "interrupted", tmp / "run")


def foreign_checkpoints(tmp, made):
    (tmp / "x" / "checkpoints").mkdir(parents=True)
    (tmp / "x" / "checkpoints" / "model.pt").write_text("keep")


def foreign_config(tmp, made):
    (tmp / "x").mkdir()
    (tmp / "x" / "config.toml").write_text("# my own config\n")


def a_file(tmp, made):
    (tmp / "afile").write_text("not a folder")


def an_empty_folder(tmp, made):
    (tmp / "empty").mkdir()


def corrupt_checkpoint(tmp, made):
    copy_interrupted(tmp, made)
    next((tmp / "run" / "checkpoints").glob("*.npz")).write_bytes(b"garbage")


def corrupt_manifest(tmp, made):
    copy_finished(tmp, made)
    (tmp / "run" / MANIFEST).write_text("{not json")


def _edit_manifest(tmp, **changes):
    path = tmp / "run" / MANIFEST
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


def live_lock(tmp, made):
    copy_interrupted(tmp, made)
    _edit_manifest(tmp, state="running", pid=os.getpid(), pid_started=None, host=socket.gethostname())


def lock_elsewhere(tmp, made):
    copy_interrupted(tmp, made)
    _edit_manifest(tmp, state="running", pid=1, host="some-other-host")


def corrupt_results(tmp, made):
    copy_finished(tmp, made)
    (tmp / "run" / "results.npz").write_text("this is not an npz file")


def truncated_results(tmp, made):
    copy_finished(tmp, made)
    path = tmp / "run" / "results.npz"
    path.write_bytes(path.read_bytes()[:200])


def truncated_checkpoint(tmp, made):
    copy_interrupted(tmp, made)
    path = next((tmp / "run" / "checkpoints").glob("*.npz"))
    path.write_bytes(path.read_bytes()[:200])


def object_results(tmp, made):
    copy_finished(tmp, made)
    np.savez(tmp / "run" / "results.npz", times=np.array([object()], dtype=object))


def npy_results(tmp, made):
    copy_finished(tmp, made)
    with open(tmp / "run" / "results.npz", "wb") as fh:
        np.save(fh, np.zeros(3))


def missing_summary(tmp, made):
    copy_finished(tmp, made)
    (tmp / "run" / "summary.json").unlink()


def corrupt_summary(tmp, made):
    copy_finished(tmp, made)
    (tmp / "run" / "summary.json").write_text('{"table": [')


def plain_folder(tmp, made):
    (tmp / "plain").mkdir()
    (tmp / "plain" / "notes.txt").write_text("hello")


def bad_toml(tmp, made):
    (tmp / "bad.toml").write_text("name = [unclosed\n")


def unknown_kind_toml(tmp, made):
    (tmp / "kind.toml").write_text('name = "k"\nkind = "no_such_kind"\n')


def data_files(tmp, made):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 2)), rng.normal(size=20)
    (tmp / "text.npz").write_text("X,y\n1,2\n")
    np.save(tmp / "arr.npy", X)
    np.savez(tmp / "obj.npz", X=np.array([object(), object()], dtype=object), y=np.zeros(2))
    np.savez(tmp / "noy.npz", X=X)
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    np.savez(tmp / "nan.npz", X=X_nan, y=y)
    np.savez(tmp / "ok.npz", X=X, y=y)
    (tmp / "adir.npz").mkdir()
    big = rng.normal(size=(200_000, 2))  # rank 2: ~n² pairs and 2n patterns × n: terabytes
    np.savez(tmp / "big.npz", X=big, y=big[:, 0])


# --------------------------------------------------------------------------- the catalogue

RUN = ["run", "chizat-bach-relu"]
JKO = ["run", "jko-vs-gd"]
LADDER_TYPO = "ladder=[{cells = 40, tua = 0.1}]"

CASES = [
    # config values: NaN/inf, booleans, typos, names that leave runs/
    ("run-lam-inf", RUN + sets("model.lam=inf"), None, ["model.lam", "finite"]),
    ("run-lam-minus-inf", RUN + sets("model.lam=-inf"), None, ["model.lam", "finite"]),
    ("run-step-inf", RUN + sets("train.step_size=inf"), None, ["train.step_size", "finite"]),
    ("run-scale-inf", RUN + sets("init.scale=inf"), None, ["init.scale", "finite"]),
    ("run-scale-nan", RUN + sets("init.scale=nan"), None, ["init.scale", "finite"]),
    ("run-ladder-tau-inf", JKO + sets("ladder=[{cells = 40, tau = inf}]"), None, ["ladder[0].tau", "finite"]),
    ("run-n-true", RUN + sets("data.n=true"), None, ["data.n", "not a boolean"]),
    ("run-widths-bool", RUN + sets("sweep.widths=[true, 4]"), None, ["sweep.widths", "not a boolean"]),
    ("run-bias-number", RUN + sets("data.bias=1"), None, ["data.bias", "true or false"]),
    ("run-key-typo", RUN + sets("train.stepsize=0.1"), None, ["train.stepsize", "'step_size'"]),
    ("run-ladder-typo", JKO + sets(LADDER_TYPO), None, ["ladder[0].tua", "'tau'"]),
    ("run-wrong-type", RUN + sets("train.num_steps='many'"), None, ["train.num_steps"]),
    ("run-name-escapes", RUN + sets("name=../x"), None, ["name", "plain folder name"]),
    ("run-name-path", RUN + sets("name=a/b"), None, ["name", "plain folder name"]),
    ("run-set-no-equals", RUN + ["--set", "model.lam"], None, ["--set", "no '='"]),
    ("run-set-into-value", RUN + sets("data.n.x=3"), None, ["data.n.x", "not a section"]),
    # estimates before compute
    ("run-huge-width", RUN + sets("sweep.widths=[1000000000]"), None, ["sweep.widths", "of memory", "is available"]),
    ("run-huge-steps", RUN + sets("train.num_steps=100000000000"), None, ["train.num_steps", "of memory"]),
    ("run-huge-d", RUN + sets("data.d=100000000", "data.teacher_angles=[]"), None, ["data.d", "of memory"]),
    ("run-huge-n", RUN + sets("data.n=10000000000"), None, ["data.n", "of memory"]),
    (
        "run-huge-snapshots",
        RUN + sets("output.snapshots=100000000", "train.num_steps=1000000000", "sweep.widths=[1000]"),
        None,
        ["output.snapshots", "of memory"],
    ),
    ("run-jko-huge-grid", JKO + sets("ladder=[{cells = 100000, tau = 0.1}]"), None, ["ladder[0].cells", "of memory"]),
    ("run-jko-huge-particles", JKO + sets("gd.particles=10000000000"), None, ["gd.particles", "of memory"]),
    ("run-resnet-pl-huge-width", ["run", "resnet-pl", "--quick", *sets("model.width=10000000")], None, ["model.width", "of memory"]),
    ("run-resnet-pl-huge-N", ["run", "resnet-pl", "--quick", *sets("ladder.N=[10000000]", "ladder.base_N=10000000")], None, ["ladder.N", "of memory"]),
    ("run-resnet-digits-huge-depth", ["run", "resnet-digits", "--quick", *sets("model.depth=100000000")], None, ["model.depth", "of memory"]),
    ("run-parameterisations-huge-width", ["run", "parameterisations", "--quick", *sets("model.width=10000000000")], None, ["model.width", "of memory"]),
    # the experiment argument
    ("run-unknown-experiment", ["run", "no-such-experiment"], None, ["no named experiment"]),
    ("run-folder-as-experiment", ["run", "{tmp}/plain"], plain_folder, ["plain", "is a folder"]),
    ("run-bad-toml", ["run", "{tmp}/bad.toml"], bad_toml, ["bad.toml", "not valid TOML"]),
    ("run-unknown-kind", ["run", "{tmp}/kind.toml"], unknown_kind_toml, ["kind", "no_such_kind"]),
    # the output folder
    ("run-foreign-checkpoints", RUN + ["--quick", "--out", "{tmp}/x"], foreign_checkpoints, ["x", "not a wgflow run folder", "--force"]),
    ("run-force-over-foreign-file", RUN + ["--quick", "--force", "--out", "{tmp}/x"], foreign_config, ["config.toml", "not written by wgflow"]),
    ("run-out-is-a-file", RUN + ["--quick", "--out", "{tmp}/afile"], a_file, ["afile", "is a file"]),
    ("run-out-below-a-file", RUN + ["--quick", "--out", "{tmp}/afile/sub"], a_file, ["afile", "is a file"]),
    ("run-out-unwritable", RUN + ["--quick", "--out", "/proc/wgflow-test/out"], None, ["/proc/wgflow-test/out", "cannot"]),
    ("run-finished-no-overwrite", RUN + sets(*TINY) + ["--out", "{tmp}/run"], copy_finished, ["finished run", "--overwrite"]),
    ("run-interrupted-no-resume", RUN + sets(*TINY) + ["--out", "{tmp}/run"], copy_interrupted, ["unfinished run", "--resume"]),
    ("run-live-lock", RUN + sets(*TINY) + ["--resume", "--out", "{tmp}/run"], live_lock, ["in use", f"PID {os.getpid()}"]),
    ("run-lock-elsewhere", RUN + sets(*TINY) + ["--resume", "--out", "{tmp}/run"], lock_elsewhere, ["another host", "--force"]),
    ("run-corrupt-manifest", RUN + sets(*TINY) + ["--out", "{tmp}/run"], corrupt_manifest, [MANIFEST, "cannot be read"]),
    # resume
    ("resume-missing-folder", RUN + ["--resume", "--out", "{tmp}/nothere"], None, ["nothere", "never ran"]),
    ("resume-empty-folder", RUN + ["--resume", "--out", "{tmp}/empty"], an_empty_folder, ["empty", "never ran"]),
    ("resume-changed-config", RUN + sets(*TINY, "model.lam=0.01") + ["--resume", "--out", "{tmp}/run"], copy_interrupted, ["different config", "model.lam"]),
    ("resume-garbage-checkpoint", RUN + sets(*TINY) + ["--resume", "--out", "{tmp}/run"], corrupt_checkpoint, ["checkpoints", "not an .npz file"]),
    ("resume-truncated-checkpoint", RUN + sets(*TINY) + ["--resume", "--out", "{tmp}/run"], truncated_checkpoint, ["checkpoints", "cannot be read"]),
    # report
    ("report-missing", ["report", "{tmp}/nothere"], None, ["nothere", "does not exist"]),
    ("report-a-file", ["report", "{tmp}/afile"], a_file, ["afile", "is a file"]),
    ("report-not-a-run", ["report", "{tmp}/plain"], plain_folder, ["plain", "not a wgflow run folder"]),
    ("report-interrupted", ["report", "{tmp}/run"], copy_interrupted, ["did not finish", "--resume"]),
    ("report-text-results", ["report", "{tmp}/run"], corrupt_results, ["results.npz", "not an .npz file"]),
    ("report-truncated-results", ["report", "{tmp}/run"], truncated_results, ["results.npz", "cannot be read"]),
    ("report-object-results", ["report", "{tmp}/run"], object_results, ["results.npz", "Object arrays"]),
    ("report-npy-results", ["report", "{tmp}/run"], npy_results, ["results.npz", ".npy"]),
    ("report-missing-summary", ["report", "{tmp}/run"], missing_summary, ["summary.json", "missing"]),
    ("report-corrupt-summary", ["report", "{tmp}/run"], corrupt_summary, ["summary.json", "cannot be read"]),
    ("report-corrupt-manifest", ["report", "{tmp}/run"], corrupt_manifest, [MANIFEST, "cannot be read"]),
    # optimum
    ("optimum-missing-data", ["optimum", "--data", "{tmp}/none.npz", "--lam", "1e-3"], None, ["none.npz", "does not exist"]),
    ("optimum-data-folder", ["optimum", "--data", "{tmp}/adir.npz", "--lam", "1e-3"], data_files, ["adir.npz", "folder"]),
    ("optimum-text-as-npz", ["optimum", "--data", "{tmp}/text.npz", "--lam", "1e-3"], data_files, ["text.npz", "not an .npz"]),
    ("optimum-npy", ["optimum", "--data", "{tmp}/arr.npy", "--lam", "1e-3"], data_files, ["arr.npy", "nor an .npz"]),
    ("optimum-object-array", ["optimum", "--data", "{tmp}/obj.npz", "--lam", "1e-3"], data_files, ["obj.npz", "Python objects"]),
    ("optimum-no-y", ["optimum", "--data", "{tmp}/noy.npz", "--lam", "1e-3"], data_files, ["noy.npz", "'y'"]),
    ("optimum-nan-data", ["optimum", "--data", "{tmp}/nan.npz", "--lam", "1e-3"], data_files, ["data.X", "NaN"]),
    ("optimum-lam-inf", ["optimum", "--data", "{tmp}/ok.npz", "--lam", "inf"], data_files, ["lam", "finite"]),
    ("optimum-lam-zero", ["optimum", "--data", "{tmp}/ok.npz", "--lam", "0"], data_files, ["lam", "lam > 0"]),
    ("optimum-huge-n", ["optimum", "--data", "{tmp}/big.npz", "--lam", "1e-3"], data_files, ["data.X", "200,000", "of memory"]),
    # config
    ("config-unknown", ["config", "no-such-experiment"], None, ["no named experiment"]),
    ("config-nan", ["config", "chizat-bach-relu", "--set", "model.lam=nan"], None, ["model.lam", "finite"]),
    ("config-folder", ["config", "{tmp}/plain"], plain_folder, ["plain", "is a folder"]),
    ("config-ladder-typo", ["config", "jko-vs-gd", "--set", LADDER_TYPO], None, ["ladder[0].tua", "'cells'"]),
    ("config-bool", ["config", "chizat-bach-relu", "--set", "sweep.seeds=true"], None, ["sweep.seeds", "not a boolean"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_naming_it_and_changes_no_byte(case, made, tmp_path, monkeypatch, capsys):
    name, argv, setup, words = case
    if setup is not None:
        setup(tmp_path, made)
    monkeypatch.chdir(tmp_path)  # the default runs/ folder would land here
    before = snapshot(tmp_path)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    out, err = capsys.readouterr()
    text = out + err
    assert code == 2, text
    assert "Traceback" not in text
    assert text.count("error:") == 1, text  # one message
    for w in words:
        assert w in text, (w, text)
    assert snapshot(tmp_path) == before  # no file written, changed or deleted; no folder created


def test_field_is_named_once(capsys):
    assert main(["run", "chizat-bach-relu", "--set", "train.stepsize=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("train.stepsize") == 1, err


def test_memory_refusals_take_under_a_second(tmp_path):
    import time

    from wgflow.errors import InputError
    from wgflow.optimum import global_minimum

    t = time.perf_counter()
    with pytest.raises(InputError, match="sweep.widths"):
        experiments.run("chizat-bach-relu", ["sweep.widths=[1000000000]"], tmp_path / "w", progress=False)
    with pytest.raises(InputError, match="data.X"):
        X = np.random.default_rng(0).normal(size=(200_000, 2))
        global_minimum(X, X[:, 0], 1e-3)
    assert time.perf_counter() - t < 1.0
    assert not (tmp_path / "w").exists()


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    """A bug (not bad input) prints one line asking for a report (exit 70); WGFLOW_DEBUG=1 adds the traceback."""

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(experiments, "load", boom)
    assert main(["config", "chizat-bach-relu"]) == 70
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: a bug" in err and "please report" in err and "Traceback" not in err
    monkeypatch.setenv("WGFLOW_DEBUG", "1")
    assert main(["config", "chizat-bach-relu"]) == 70
    assert "Traceback" in capsys.readouterr().err
