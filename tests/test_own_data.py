"""Your own data end to end: the `fit` experiment on a small CSV, `wgflow optimum --run` on its folder,
refusals before compute, and `wgflow compare`."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wgflow.cli import app
from wgflow.optimum import global_minimum

runner = CliRunner()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the fit experiment

TINY_FIT = [
    "sweep.widths=[4, 16]",
    "sweep.seeds=2",
    "train.num_steps=300",
    "train.step_size=0.2",
    "output.checkpoint_every=150",
    "output.snapshots=8",
    "output.metrics_points=20",
    "model.lam=1e-2",
]


def _classes_csv(path: Path, n: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 2))
    y = (np.hypot(X[:, 0], X[:, 1]) < 1.3).astype(int) * 3 + 2  # classes 2 and 5: mapped to -1, +1
    lines = ["x1,x2,target"] + [f"{a:.5f},{b:.5f},{t}" for (a, b), t in zip(X, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    data = _classes_csv(tmp / "classes.csv")
    out = tmp / "run"
    args = ["run", "fit", "--out", str(out), "--set", f"data.path={data}", "--set", "model.loss=logistic"]
    for item in TINY_FIT:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, data, result.output


def test_fit_end_to_end(fit_run):
    out, data, output = fit_run
    assert "labels mapped to ±1 for the logistic loss: 2 → -1, 5 → +1" in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "fit"
    assert summary["data"]["labels"] == {"2": -1.0, "5": 1.0}
    assert summary["data"]["n_train"] == 32 and summary["data"]["n_test"] == 8 and summary["data"]["input_dim"] == 3
    # the certified optimum of the training objective (logistic loss, rank 3 with the bias) and every run's excess
    opt = summary["global_min"]["lifted"]
    assert opt["certified"] and opt["relative_gap"] < 1e-6 and opt["loss"] == "logistic"
    assert opt["width"] <= opt["unmerged_width"]
    assert len(summary["runs"]) == 4
    for r in summary["runs"]:
        assert {"test_loss", "test_accuracy", "train_accuracy", "excess", "relative_excess"} <= set(r)
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["test_loss"] > 0
        assert r["excess"] > -1e-9  # no network beats the certified optimum
    assert all("median_test_accuracy" in row for row in summary["table"])
    # the run keeps its data: standardised training inputs with the bias column, labels ±1
    with np.load(out / "results.npz") as f:
        X, y, X_test = f["X"], f["y"], f["X_test"]
    assert X.shape == (32, 3) and X_test.shape == (8, 3)
    np.testing.assert_allclose(X[:, :2].mean(axis=0), 0, atol=1e-12)
    assert set(np.unique(y)) == {-1.0, 1.0} and np.all(X[:, 2] == 1.0)
    # F* of the kept data, recomputed, is the summary's
    direct = global_minimum(X, y, 1e-2, reduction="mean", loss="logistic")
    assert direct.value == pytest.approx(opt["value"], rel=1e-8)
    # the config records the data file's absolute path
    assert str(data.resolve()) in (out / "config.toml").read_text()


def test_optimum_of_a_run_folder(fit_run):
    out, _, _ = fit_run
    result = runner.invoke(app, ["optimum", "--run", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    summary = json.loads((out / "summary.json").read_text())
    entry = report["optima"]["lifted"]
    assert entry["global_min"] == pytest.approx(summary["global_min"]["lifted"]["value"], rel=1e-8)
    assert entry["lam"] == 1e-2 and entry["reduction"] == "mean" and entry["loss"] == "logistic"
    assert entry["run_best_excess"] > -1e-9
    result = runner.invoke(app, ["optimum", "--run", str(out), "--lam", "1"])
    assert result.exit_code == 2 and "drop --lam" in result.output
    result = runner.invoke(app, ["optimum", "--run", str(out.parent)])
    assert result.exit_code == 2 and "not a finished wgflow run" in result.output


def test_fit_without_a_data_file_says_how_to_give_it(tmp_path):
    out = tmp_path / "never"
    result = runner.invoke(app, ["run", "fit", "--out", str(out)])
    assert result.exit_code == 2
    assert "data.path" in result.output and "--set data.path=" in result.output
    assert not out.exists()  # refused before the run folder was touched


def test_fit_with_a_bad_file_fails_before_compute(tmp_path):
    bad = _write(tmp_path / "bad.csv", "a,b,target\n1,2,0\n3,x,1\n")
    out = tmp_path / "never"
    result = runner.invoke(app, ["run", "fit", "--out", str(out), "--set", f"data.path={bad}"])
    assert result.exit_code == 2 and "'x' is not a number" in result.output and "bad.csv" in result.output
    assert not out.exists()
    three = _write(tmp_path / "three.csv", "a,target\n1,0\n2,1\n3,2\n4,1\n")
    result = runner.invoke(app, ["run", "fit", "--out", str(out), "--set", f"data.path={three}", "--set", "model.loss=logistic"])
    assert result.exit_code == 2 and "exactly two classes" in result.output
    assert not out.exists()


def test_compare_runs(fit_run, tmp_path):
    out, data, _ = fit_run
    other = tmp_path / "other"
    args = ["run", "fit", "--out", str(other), "--set", f"data.path={data}", "--set", "model.loss=logistic"]
    for item in [*TINY_FIT, "train.num_steps=150", "sweep.widths=[16]"]:
        args += ["--set", item]
    assert runner.invoke(app, args).exit_code == 0
    fig = tmp_path / "cmp.png"
    result = runner.invoke(app, ["compare", str(out), str(other), "--out", str(fig)])
    assert result.exit_code == 0, result.output
    assert fig.stat().st_size > 1000 and "median F" in result.output
    result = runner.invoke(app, ["compare", str(out), str(other), "--json"])
    table = json.loads(result.output)
    for words in ("run: median F", "other: median F", "run: rel. excess", "other: test acc."):
        assert words in table["columns"]
    by = {(r["parameterisation"], r["width"]): r for r in table["rows"]}
    assert set(by) == {("lifted", 4), ("lifted", 16)}
    assert "other: median F" not in by["lifted", 4] and by["lifted", 16]["other: median F"] > 0
    # the figure is never written over a file, and a folder that is not a run is refused
    before = fig.read_bytes()
    result = runner.invoke(app, ["compare", str(out), "--out", str(fig)])
    assert result.exit_code == 2 and "exists" in result.output and fig.read_bytes() == before
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished wgflow run" in result.output
