"""The command line's surface: --version, a --help that loads no JAX, --describe's allowed values
and columns, bench --only's names, the progress line, tables that fit the terminal."""

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import wgflow
from wgflow.cli import _columns, _print_summary, app, main
from wgflow.experiments.rundir import Progress

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "equinox", "optax", "diffrax", "matplotlib", "cvxpy", "scipy", "numpy", "ott", "torch", "sklearn")
runner = CliRunner()


def _python(code: str) -> str:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"wgflow {version('wgflow')}"
    assert wgflow.__version__ == version("wgflow")
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "wgflow", "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"wgflow {version('wgflow')}"


def test_help_imports_no_heavy_module():
    """``wgflow --help`` and every subcommand's ``--help`` run without importing JAX & co."""
    commands = [[]] + [[name] for name in typer.main.get_command(app).commands]  # type: ignore[attr-defined]
    code = (
        "import contextlib, io, json, sys\n"
        "from wgflow.cli import main\n"
        "out = {}\n"
        f"for args in {commands!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        rc = main(args + ['--help'])\n"
        f"    out[' '.join(args)] = [rc, sorted(m for m in {HEAVY!r} if m in sys.modules)]\n"
        "print(json.dumps(out))\n"
    )
    result = json.loads(_python(code))
    assert set(result) == {" ".join(c) for c in commands}
    for command, (rc, heavy) in result.items():
        assert rc == 0 and heavy == [], (command, heavy)


def test_package_top_level_is_lazy_and_complete():
    """``import wgflow`` loads no JAX; every name of ``wgflow.__all__`` still resolves."""
    heavy = json.loads(_python(f"import json, sys, wgflow; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"))
    assert heavy == []
    names = json.loads(_python("import json, wgflow; print(json.dumps({n: type(getattr(wgflow, n)).__name__ for n in wgflow.__all__}))"))
    assert set(names) == set(wgflow.__all__) and len(wgflow.__all__) >= 18
    from wgflow import Measure, make_objective  # noqa: F401  (the usual imports work)
    from wgflow.measure import Measure as M

    assert wgflow.Measure is M and set(wgflow.__all__) <= set(dir(wgflow))
    with pytest.raises(AttributeError):
        wgflow.no_such_name  # noqa: B018


def test_describe_lists_allowed_values():
    result = runner.invoke(app, ["config", "chizat-bach-relu", "--describe"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "logistic | square" in rows["model.loss"]
    assert "gaussian | sphere | heavy_tailed" in rows["init.distribution"]
    assert "sphere | gaussian" in rows["data.inputs"]
    assert "constant | inverse_sqrt | polish" in rows["train.schedule"]
    assert "lifted | signed | signed_square | sphere | split" in rows["model.parameterisations"]
    assert "in (0, 1)" in rows["train.polish_fraction"] and "integer > 0" in rows["train.num_steps"]
    assert "true | false" in rows["data.bias"]


def test_describe_lists_names_registered_by_a_plugin(tmp_path, monkeypatch):
    (tmp_path / "softplus_plugin.py").write_text(
        "import jax\nfrom wgflow.units import Activation, register_activation\nregister_activation(Activation('softplus_for_describe', jax.nn.softplus))\n"
    )
    monkeypatch.chdir(tmp_path)
    from wgflow.units import ACTIVATIONS

    try:
        result = runner.invoke(app, ["config", "chizat-bach-relu", "--describe", "--plugin", "softplus_plugin"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        rows = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
        assert "softplus_for_describe" in rows["model.activation"]
    finally:
        ACTIVATIONS.pop("softplus_for_describe", None)
        sys.modules.pop("softplus_plugin", None)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_describe_columns_are_aligned_and_fit(width):
    result = runner.invoke(app, ["config", "jko-vs-gd", "--describe"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= width
    header = lines[0]
    starts = [header.index(word) for word in ("value", "allowed", "description")]
    for line in lines[1:]:
        for start in starts:  # every column begins where its header does: no cell runs into the next one
            assert start == 0 or line[start - 1 : start] in (" ", ""), (line, start)
    first = next(line for line in lines if line.startswith("data.n "))
    assert first[starts[0] :].split()[0] == "30"


def test_columns_wrap_the_widest_cells_first():
    rows = [("field", "value", "allowed", "description"), ("a.b", "1", "integer > 0", "a long description " * 10)]
    text = _columns(rows, 60)
    assert max(len(line) for line in text.splitlines()) <= 60
    assert "integer > 0" in text.splitlines()[1]  # the short column is kept whole


def test_bench_only_lists_the_names(capsys):
    from wgflow.benchmarks import BENCHMARKS

    assert main(["bench", "--only"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in BENCHMARKS)
    result = runner.invoke(app, ["bench", "--only", "no-such-benchmark"])
    assert result.exit_code == 2 and all(name in result.output for name in BENCHMARKS)
    result = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert all(name in result.output for name in BENCHMARKS)


def test_progress_time_left_is_the_average_since_the_first_update():
    bar = Progress(1000, "exp", enabled=False)
    assert bar.time_left(0, now=0.0) is None
    bar.update(0, now=0.0)
    bar.update(100, now=10.0)
    assert bar.time_left(100, now=10.0) == pytest.approx(90.0)
    # a fast stretch (a cheaper group) moves it by the average, not by the last speed
    assert bar.time_left(400, now=12.0) == pytest.approx(600 * 12.0 / 400)
    resumed = Progress(1000, "exp", enabled=False)
    resumed.update(500, now=0.0)  # a resumed run starts part-way: those steps took no time here
    assert resumed.time_left(600, now=10.0) == pytest.approx(400 * 10.0 / 100)
    assert Progress.clock(3725) == "1:02:05"


def test_progress_names_the_group():
    bar = Progress(10, "chizat-bach-relu", enabled=True)
    try:
        bar.update(3, "F median 0.1", group="lifted m=4,5")
        task = bar._bar.tasks[0]
        assert task.description == "chizat-bach-relu · lifted m=4,5" and task.completed == 3
    finally:
        bar.close()


def test_summary_table_folds_to_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    cols = ["parameterisation", "width", "relative_excess_median", "success_fraction", "final_objective_median"]
    summary = {"experiment": "x", "seconds": 1.0, "table": [{c: 0.123456 for c in cols}], "print_columns": cols}
    _print_summary(summary)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 60
    assert "…" not in out  # headers are wrapped or folded, never cut
    header_lines = [line for line in out.splitlines() if line.startswith("┃")]
    cells = [[cell.strip() for cell in line.strip("┃").split("┃")] for line in header_lines]
    assert ["".join(column) for column in zip(*cells)] == cols  # each header whole, read down its column
