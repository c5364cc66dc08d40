"""Experiments and the command line: files written, config errors, resume, overrides, sweeps."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY, legend_mismatches  # TINY: the smallest chizat-bach-relu run that still exercises every file
from wgflow import experiments, make_objective
from wgflow.cli import app
from wgflow.data import teacher_student
from wgflow.experiments.config import ConfigError
from wgflow.experiments.rundir import INTERRUPT_ENV, RunDir, SimulatedInterrupt
from wgflow.flows import explicit_gd
from wgflow.flows.particle import explicit_gd_sweep
from wgflow.init import initial_measure
from wgflow.measure import Measure

runner = CliRunner()


@pytest.fixture
def figure_labels(monkeypatch):
    """Record the axis labels of every figure a run saves."""
    seen = {}
    original = RunDir.savefig

    def savefig(self, fig, stem):
        # colour bars carry one label (their quantity and unit), plot axes two
        seen[stem] = [
            (ax.get_xlabel() or ax.get_ylabel(), ax.get_ylabel() or ax.get_xlabel())
            if getattr(ax, "_colorbar", None) is not None
            else (ax.get_xlabel(), ax.get_ylabel())
            for ax in fig.axes
            if ax.get_visible()
        ]
        return original(self, fig, stem)

    monkeypatch.setattr(RunDir, "savefig", savefig)
    return seen


@pytest.fixture
def saved_figures(monkeypatch):
    """For every figure a run saves: its legend entries whose colour differs from their artists'
    (see conftest.legend_mismatches), and the x data of each panel's lines."""
    seen = {}
    original = RunDir.savefig

    def savefig(self, fig, stem):
        seen[stem] = {
            "legend_mismatches": legend_mismatches(fig),
            "lines_x": [[np.asarray(line.get_xdata(), float) for line in ax.lines] for ax in fig.axes],
        }
        return original(self, fig, stem)

    monkeypatch.setattr(RunDir, "savefig", savefig)
    return seen


def _files(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if not p.name.startswith(".")}


def _check_figures(path: Path, stems, labels):
    for stem in stems:
        for ext in ("png", "pdf"):
            assert (path / f"{stem}.{ext}").stat().st_size > 1000
        Image.open(path / f"{stem}.png").verify()
        assert labels[stem], stem
        for xl, yl in labels[stem]:
            assert xl.strip() and yl.strip(), (stem, xl, yl)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["chizat-bach-relu", "chizat-bach-sigmoid", "chizat-bach-angles", "parameterisations", "jko-vs-gd", "resnet-pl", "resnet-digits"]
)
def test_named_experiment_quick_writes_every_file(name, tmp_path, figure_labels, saved_figures):
    out = tmp_path / name
    result = runner.invoke(app, ["run", name, "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for stem, fig in saved_figures.items():
        assert fig["legend_mismatches"] == [], (name, stem)
    files = _files(out)
    assert {"wgflow-run.json", "config.toml", "summary.json", "metrics.csv", "results.npz"} <= files
    # every kind checkpoints (steps, or parts when done)
    assert "checkpoints" in files, files
    summary = json.loads((out / "summary.json").read_text())
    assert summary["table"]
    # what the kind declares up front (checked against the folder before a run) is what it wrote
    from wgflow.experiments import load, output_files
    from wgflow.experiments.rundir import RESERVED

    module, cfg = load(name, quick=True)
    assert {f for f in files if "/" not in f and f not in RESERVED} - {"checkpoints"} == set(output_files(module, cfg)), files
    if name == "chizat-bach-angles":
        _check_figures(out, ["success_map"], figure_labels)
        assert len(summary["table"]) == len(summary["angles"]) * len(summary["widths"])
        assert len(summary["runs"]) == len(summary["table"]) * 3
        assert all(t["global_min"]["lifted"] > 0 for t in summary["teachers"])
    elif name.startswith("chizat"):
        assert "particles.gif" in files
        _check_figures(out, ["paths", "objective", "final_vs_width"], figure_labels)
        assert len(summary["runs"]) == len(summary["table"]) * 3
        assert all({"final_objective", "converged", "width", "seed"} <= set(r) for r in summary["runs"])
        gif = Image.open(out / "particles.gif")
        assert gif.size[0] >= 1000 and gif.n_frames >= 20, (gif.size, gif.n_frames)
        if name == "chizat-bach-relu":
            # --quick shows the headline: the widest lifted student succeeds, the narrowest fails
            rows = {(r["parameterisation"], r["width"]): r for r in summary["table"]}
            widths = sorted({w for _, w in rows})
            assert rows["lifted", widths[-1]]["success_fraction"] == 1.0
            assert rows["lifted", widths[0]]["success_fraction"] < 1.0
    elif name == "parameterisations":
        _check_figures(out, ["objective", "output_distance"], figure_labels)
        rows = {r["parameterisation"]: r for r in summary["table"]}
        assert rows["lifted"]["same_flow_as_plain_gd"] and not rows["sphere"]["same_flow_as_plain_gd"]
    elif name == "jko-vs-gd":
        assert "jko_vs_gd.gif" in files
        _check_figures(out, ["objective", "distance", "ladder", "densities"], figure_labels)
        # the distance axes are logarithmic: they start after t = 0 (where every flow starts from one measure)
        assert all(x.size and x.min() > 0 for panel in saved_figures["distance"]["lines_x"] for x in panel)
        rows = summary["table"]
        keys = {"parameterisation", "reference", "ladder", "tau", "blur", "temperature", "grid", "solver", "distance_to_gd", "objective_gap", "seconds"}
        assert all(keys <= set(r) for r in rows)
        assert all(r["status"] == "successful" and r["max_mass_error"] < 1e-10 for r in rows)
        for space in ("split", "signed", "lifted", "sphere"):  # every space on at least two rungs, against both references
            sel = [r for r in rows if r["parameterisation"] == space]
            assert len({(r["tau"], r["blur"]) for r in sel}) >= 2 and {r["reference"] for r in sel} == {"gd", "langevin"}, space
        by = {(r["parameterisation"], r["ladder"], r["reference"], r["tau"]): r for r in rows}
        assert by["split", "to_gd", "gd", 0.1]["distance_to_gd"] < by["split", "to_gd", "gd", 0.2]["distance_to_gd"]
        assert by["split", "to_gd", "gd", 0.1]["final_objective"] == by["signed", "to_gd", "gd", 0.1]["final_objective"]
        # F ≥ F*: the certified optimum is a lower bound for every measure, grid or particles
        assert all(r["excess"] > -1e-9 for r in rows) and all(g["excess"] > -1e-9 for g in summary["gd"].values() if isinstance(g, dict))
    elif name == "resnet-pl":
        _check_figures(out, ["loss", "pl_ratio", "lambda0_vs_N"], figure_labels)
        for row in summary["table"]:
            assert {"lambda0", "pl_min", "fitted_rate", "predicted_rate_scale", "loss_ratio"} <= set(row)
    else:
        _check_figures(out, ["loss", "accuracy"], figure_labels)
        assert summary["final_train_accuracy"] > 0.5


def test_tiny_run_report_and_overrides(tmp_path, figure_labels):
    out = tmp_path / "tiny"
    args = ["run", "chizat-bach-relu", "--out", str(out)] + [a for s in TINY for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = (out / "config.toml").read_text()
    assert "widths = [\n    3,\n    6,\n]" in cfg or "widths = [3, 6]" in cfg  # the override reached the resolved config
    summary = json.loads((out / "summary.json").read_text())
    assert sorted({r["width"] for r in summary["runs"]}) == [3, 6]
    assert sorted({r["seed"] for r in summary["runs"]}) == [0, 1]
    assert summary["num_steps"] == 300
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header == "parameterisation,width,seed,step,time,objective,grad_norm"
    _check_figures(out, ["paths", "objective", "final_vs_width"], figure_labels)
    for f in out.glob("*.png"):
        f.unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "paths.png").exists() and "signed_square" in result.output


def test_tiny_run_snapshots_are_log_spaced_and_legends_match(tmp_path, saved_figures):
    """The saved states (paths figure, animation) are log-spaced in time from t = 0, and every
    legend entry of every figure has its artists' colour."""
    out = tmp_path / "tiny"
    sets = [s for s in TINY if not s.startswith("output.animation")]
    sets += ["sweep.widths=[3]", "train.schedule=constant", "train.num_steps=1000", "output.checkpoint_every=1000", "output.snapshots=14"]
    experiments.run("chizat-bach-relu", sets, out, progress=False)
    t = RunDir(out).load_npz("results.npz")["snapshot_times"]
    eta = 0.25
    steps = np.round(t / eta).astype(int)
    assert t[0] == 0 and steps[-1] == 1000 and len(np.unique(steps)) == len(steps) == 14
    ratios = steps[2:][steps[1:-1] >= 10] / steps[1:-1][steps[1:-1] >= 10]  # where rounding to integers no longer shows
    assert len(ratios) >= 5
    assert ratios.max() / ratios.min() < 1.25, ratios  # a constant ratio: log-spaced
    assert t[1] <= 1e-3 * t[-1]  # the first frame is in the early descent, not after it
    assert set(saved_figures) == {"paths", "objective", "final_vs_width"}
    for stem, fig in saved_figures.items():
        assert fig["legend_mismatches"] == [], stem
    gif = Image.open(out / "particles.gif")
    assert gif.size[0] >= 1000 and gif.n_frames == 14


@pytest.mark.parametrize(
    "override,field",
    [
        ("train.stepsize=0.1", "train.stepsize"),  # typo: unknown key
        ("train.num_steps='many'", "train.num_steps"),  # wrong type
        ("sweep.widths=[4, 0]", "sweep.widths"),  # width 0
        ("train.step_size=-0.1", "train.step_size"),  # negative step
        ("model.parameterisations=['polar']", "model.parameterisations"),
    ],
)
def test_config_errors_name_the_field_before_compute(override, field, tmp_path):
    with pytest.raises(ConfigError) as exc:
        experiments.load("chizat-bach-relu", [override])
    assert field in str(exc.value)
    result = runner.invoke(app, ["run", "chizat-bach-relu", "--set", override, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and field in result.output
    assert not (tmp_path / "x").exists()  # nothing computed or written


@pytest.mark.parametrize(
    "override,words",
    [
        ("compare.final_time=0.95", ["ladder[0].tau", "does not divide"]),  # the flows would not meet at the same times
        ("compare.snapshots=12", ["ladder[0].tau", "comparison interval"]),  # τ = 0.2 would miss the comparison times
        ("data.d=3", ["data", "d = 2"]),
        ("grid.init_std=0.6", ["grid.init_std", "larger half_width"]),
        ("ladder=[]", ["ladder", "at least one rung"]),
        ("ladder=[{cells = 40, tau = 0.1, blur_over_tau = -1}]", ["blur_over_tau"]),
        ("ladder=[{cells = 40, tau = 0.1, solvers = ['sinkhorn']}]", ["solvers"]),
    ],
)
def test_jko_vs_gd_config_errors(override, words):
    with pytest.raises(ConfigError) as exc:
        experiments.load("jko-vs-gd", [override])
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_unknown_key_error_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"train.stepsize: unknown key; allowed keys here: \[.*'step_size'"):
        experiments.load("chizat-bach-relu", ["train.stepsize=0.1"])


def test_resume_after_interruption_is_bit_identical(tmp_path, monkeypatch):
    sets = TINY
    full = tmp_path / "full"
    experiments.run("chizat-bach-relu", sets, full, progress=False)
    part = tmp_path / "part"
    monkeypatch.setenv(INTERRUPT_ENV, "2")  # killed after 2 of the 3 segments of the first group
    with pytest.raises(SimulatedInterrupt):
        experiments.run("chizat-bach-relu", sets, part, progress=False)
    assert not (part / "summary.json").exists()
    assert not list(part.glob(".*.tmp"))  # no half-written file left behind
    monkeypatch.delenv(INTERRUPT_ENV)
    experiments.run("chizat-bach-relu", sets, part, resume=True, progress=False)
    a, b = RunDir(full).load_npz("results.npz"), RunDir(part).load_npz("results.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (full / "metrics.csv").read_text() == (part / "metrics.csv").read_text()


def test_resume_with_a_different_config_is_refused(tmp_path, monkeypatch):
    part = tmp_path / "part"
    monkeypatch.setenv(INTERRUPT_ENV, "1")
    with pytest.raises(SimulatedInterrupt):
        experiments.run("chizat-bach-relu", TINY, part, progress=False)
    monkeypatch.delenv(INTERRUPT_ENV)
    with pytest.raises(Exception, match="different config"):
        experiments.run("chizat-bach-relu", TINY + ["model.lam=0.01"], part, resume=True, progress=False)


def test_vectorised_sweep_equals_separate_runs():
    ds = teacher_student(jax.random.PRNGKey(0), 30, 2, 3)
    obj = make_objective(ds.X, ds.y, "signed_square", lam=1e-3, reduction="mean")
    mus = [initial_measure(jax.random.PRNGKey(s), "signed_square", 7, 2, scale=0.3) for s in range(4)]
    batch = Measure(jnp.stack([m.positions for m in mus]), jnp.stack([m.masses for m in mus]))
    bt = explicit_gd_sweep(obj, batch, 0.1, 250)
    for s, mu in enumerate(mus):
        single = explicit_gd(obj, mu, 0.1, 250)
        assert bt.status[s] == single.status and bt.run(s).stop_step == single.stop_step
        np.testing.assert_allclose(bt.run(s).objective, single.objective, rtol=1e-13)
        np.testing.assert_allclose(bt.final.positions[s], single.final.positions, atol=1e-13)


@pytest.mark.parametrize("quick", [False, True])
def test_every_named_config_validates(quick):
    for name in experiments.named():
        module, cfg = experiments.load(name, quick=quick)
        assert cfg.kind == module.KIND and cfg.description, name


def test_cli_list_and_config():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    for name in ["chizat-bach-relu", "chizat-bach-sigmoid", "parameterisations", "jko-vs-gd", "jko-vs-gd-long", "resnet-pl"]:
        assert name in result.output
    result = runner.invoke(app, ["config", "chizat-bach-relu", "--set", "sweep.seeds=3"])
    assert result.exit_code == 0 and "seeds = [\n    0,\n    1,\n    2,\n]" in result.output
    result = runner.invoke(app, ["config", "chizat-bach-relu", "--describe"])
    assert result.exit_code == 0 and "train.step_size" in result.output and "step size" in result.output
    # the values shown are this experiment's (its TOML and --set), not the schema's defaults
    result = runner.invoke(app, ["config", "jko-vs-gd", "--describe", "--set", "gd.particles=123"], env={"COLUMNS": "400"})
    rows = {line.split()[0]: line.split()[1] for line in result.output.splitlines() if len(line.split()) > 1}
    assert rows["data.n"] == "30" and rows["gd.particles"] == "123"
    result = runner.invoke(app, ["config", "no-such-experiment"])
    assert result.exit_code == 2 and "no named experiment" in result.output


def test_padding_with_zero_mass_atoms_changes_nothing():
    """Widths padded into one program: the padded runs equal the unpadded ones step for step,
    even where a zero-mass copy would blow up if it moved (signed_square is 2-homogeneous)."""
    from wgflow.measure import stack_padded

    ds = teacher_student(jax.random.PRNGKey(0), 100, 2, 4, teacher_signs="positive")
    obj = make_objective(ds.X, ds.y, "signed_square", lam=1e-4, reduction="mean")
    mus = [initial_measure(jax.random.fold_in(jax.random.PRNGKey(s), 4), "signed_square", 4, 2, scale=0.1) for s in range(3)]
    a = explicit_gd_sweep(obj, stack_padded(mus), 0.25, 1500)
    b = explicit_gd_sweep(obj, stack_padded(mus + [initial_measure(jax.random.PRNGKey(9), "signed_square", 50, 2)]), 0.25, 1500)
    assert b.status[:3] == a.status
    np.testing.assert_allclose(b.objective[:3], a.objective, rtol=1e-12)
    np.testing.assert_allclose(b.final.positions[:3, :4], a.final.positions, rtol=1e-12, atol=1e-12)
