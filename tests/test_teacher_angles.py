"""The teacher study (chizat-bach-angles): teachers, a tiny map end to end, resume, config errors."""

import csv
import io
import json

import numpy as np
import pytest

from conftest import legend_mismatches
from wgflow import experiments, make_objective
from wgflow.experiments import teacher_angles
from wgflow.experiments.config import ConfigError
from wgflow.experiments.rundir import INTERRUPT_ENV, RunDir, SimulatedInterrupt
from wgflow.optimum import global_minimum_for

TINY_MAP = [
    "angles.degrees=[20, 90]",
    "sweep.widths=[3, 6]",
    "sweep.seeds=2",
    "train.num_steps=300",
    "output.checkpoint_every=100",
    "output.metrics_points=10",
]


@pytest.mark.parametrize("k,theta", [(2, 10.0), (3, 40.0), (4, 5.0), (4, 90.0), (5, 72.0)])
def test_teacher_directions_have_the_asked_smallest_angle(k, theta):
    directions = teacher_angles.teacher_directions(theta, k, rotation=30.0)
    assert len(directions) == k
    assert teacher_angles.smallest_angle(directions) == pytest.approx(theta, abs=1e-9)
    assert directions[0] == pytest.approx(30.0)


def test_tiny_map_end_to_end(tmp_path, monkeypatch):
    saved = {}
    original = RunDir.savefig

    def savefig(self, fig, stem):
        saved[stem] = legend_mismatches(fig)
        return original(self, fig, stem)

    monkeypatch.setattr(RunDir, "savefig", savefig)
    out = tmp_path / "map"
    rd, summary = experiments.run("chizat-bach-angles", TINY_MAP, out, progress=False)
    files = {p.name for p in out.iterdir()}
    assert {"summary.json", "metrics.csv", "results.npz", "success_map.png", "success_map.pdf", "config.toml", "checkpoints"} <= files
    assert set(saved) == {"success_map"}
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["angles"] == [20.0, 90.0] and on_disk["widths"] == [3, 6]
    # one table row per (angle, parameterisation, width), one run per (angle, width, seed)
    assert len(on_disk["table"]) == 2 * 1 * 2
    assert len(on_disk["runs"]) == 2 * 2 * 2
    assert {(r["smallest_angle"], r["width"]) for r in on_disk["table"]} == {(a, m) for a in (20.0, 90.0) for m in (3, 6)}
    assert all(0.0 <= r["success_fraction"] <= 1.0 for r in on_disk["table"])
    # each teacher has its own certified optimum, and it is the optimum of that teacher's data
    teachers = on_disk["teachers"]
    assert [t["smallest_angle"] for t in teachers] == [20.0, 90.0]
    for t in teachers:
        assert teacher_angles.smallest_angle(t["directions"]) == pytest.approx(t["smallest_angle"])
        _, cfg = experiments.load("chizat-bach-angles", TINY_MAP)
        ds = teacher_angles.sweep_config(cfg, t["smallest_angle"]).data.make()
        obj = make_objective(ds.X, ds.y, "lifted", "relu", "square", cfg.model.lam, "mean")
        assert t["global_min"]["lifted"] == pytest.approx(float(global_minimum_for(obj).value), rel=1e-9)
    assert teachers[0]["global_min"]["lifted"] != teachers[1]["global_min"]["lifted"]
    # the relative excess of every run is against its own teacher's F*
    fstar = {t["smallest_angle"]: t["global_min"]["lifted"] for t in teachers}
    for r in on_disk["runs"]:
        assert r["relative_excess"] == pytest.approx((r["final_objective"] - fstar[r["smallest_angle"]]) / fstar[r["smallest_angle"]], rel=1e-9)
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    assert len(rows) == 8 and {"smallest_angle", "width", "seed", "relative_excess", "success"} <= set(rows[0])
    maps = RunDir(out).load_npz("results.npz")
    assert maps["lifted/success_fraction"].shape == (2, 2)
    assert np.array_equal(maps["angles"], [20.0, 90.0]) and np.array_equal(maps["widths"], [3, 6])
    assert any("θ =    20°" in line for line in on_disk["notes"])
    (out / "success_map.png").unlink()
    assert experiments.report(out)["angles"] == [20.0, 90.0] and (out / "success_map.png").stat().st_size > 1000


def test_tiny_map_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    sets = TINY_MAP + ["angles.degrees=[30, 90]", "sweep.widths=[3]"]
    full = tmp_path / "full"
    _, a = experiments.run("chizat-bach-angles", sets, full, progress=False)
    part = tmp_path / "part"
    monkeypatch.setenv(INTERRUPT_ENV, "2")  # stopped after 2 of the 3 segments of the first teacher's sweep
    with pytest.raises(SimulatedInterrupt):
        experiments.run("chizat-bach-angles", sets, part, progress=False)
    monkeypatch.delenv(INTERRUPT_ENV)
    _, b = experiments.run("chizat-bach-angles", sets, part, resume=True, progress=False)
    assert [r["final_objective"] for r in a["runs"]] == [r["final_objective"] for r in b["runs"]]


@pytest.mark.parametrize(
    "override,words",
    [
        ("angles.degrees=[100]", ["angles.degrees", "360°/k = 90°"]),
        ("angles.degrees=[0]", ["angles.degrees", "(0, 360)"]),
        ("model.activation='sigmoid'", ["model.activation", "relu"]),
    ],
)
def test_config_errors_name_the_field(override, words):
    with pytest.raises(ConfigError) as exc:
        experiments.load("chizat-bach-angles", [override])
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_teacher_angles_need_the_plane():
    from wgflow.experiments.sections import DataSection

    with pytest.raises(ConfigError, match="data.teacher_angles.*data.d = 2 and data.bias = false"):
        experiments.load("chizat-bach-relu", ["data.bias=true"])
    _, cfg = experiments.load("chizat-bach-relu", ["data.bias=true", "data.teacher_angles=[]"])
    assert cfg.data.teacher_angles is None  # drawn at random again
    W = DataSection(teacher_angles=[0.0, 90.0, 180.0, 270.0], teacher_scale=2.0).make().teacher.W
    np.testing.assert_allclose(W, [[2, 0], [0, 2], [-2, 0], [0, -2]], atol=1e-12)
