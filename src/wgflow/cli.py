"""The ``wgflow`` command line: list, config, run, report, compare (and optimum, bench)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Wasserstein gradient flows of neural networks: run, inspect and report experiments.")


def _x64():
    import jax

    from wgflow.runtime import enable_persistent_cache

    jax.config.update("jax_enable_x64", True)
    enable_persistent_cache()


PLUGIN_HELP = (
    "import this module first (from the current directory or sys.path, or a .py path) so that the names it registers work in the config and --set (repeatable)"
)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(2)


@app.command("list")
def list_experiments() -> None:
    """The named experiments, one line each."""
    from wgflow import experiments
    from wgflow.experiments.config import load_toml

    for name, path in experiments.named().items():
        desc = load_toml(path).get("description", "")
        typer.echo(f"{name:24s} {desc}")


@app.command("config")
def show_config(
    name: str = typer.Argument(..., help="a named experiment or a TOML file"),
    quick: bool = typer.Option(False, "--quick", help="the --quick version"),
    set_: List[str] = typer.Option([], "--set", help="override: section.key=value (repeatable)"),
    describe: bool = typer.Option(False, "--describe", help="list every field with its value in this experiment and its description"),
    plugin: List[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
) -> None:
    """Print a named experiment's full resolved config (TOML)."""
    from wgflow import experiments
    from wgflow.errors import InputError
    from wgflow.experiments.config import describe as describe_fields
    from wgflow.experiments.config import dump_toml

    try:
        module, cfg = experiments.load(name, set_, quick, plugins=plugin)
    except InputError as exc:
        _fail(exc)
    if describe:
        for key, value, desc in describe_fields(module.Config, values=cfg):
            typer.echo(f"{key:32s} {value:24s} {desc}")
    else:
        typer.echo(dump_toml(cfg), nl=False)


@app.command("run")
def run(
    name: str = typer.Argument("chizat-bach-relu", help="a named experiment (wgflow list) or a TOML file"),
    set_: List[str] = typer.Option([], "--set", help="override a config field: section.key=value (repeatable)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/NAME)"),
    quick: bool = typer.Option(False, "--quick", help="a small version of the same experiment (well under a minute)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in --out"),
    plugin: List[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
) -> None:
    """Run an experiment; writes config, summary.json, metrics.csv, checkpoints and figures to one folder."""
    _x64()
    from wgflow import experiments
    from wgflow.errors import InputError

    try:
        rd, summary = experiments.run(name, set_, out, quick, resume, plugins=plugin)
    except InputError as exc:
        _fail(exc)
    _print_summary(summary)
    typer.echo(f"\nwrote {rd.path}/: " + ", ".join(sorted(p.name for p in rd.path.iterdir() if not p.name.startswith("."))))


@app.command("report")
def report(directory: Path = typer.Argument(..., help="the folder of a finished run")) -> None:
    """Re-draw the figures of a finished run and print its summary."""
    _x64()
    from wgflow import experiments
    from wgflow.errors import InputError

    try:
        summary = experiments.report(directory)
    except InputError as exc:
        _fail(exc)
    _print_summary(summary)


@app.command("optimum")
def optimum(
    data: Optional[Path] = typer.Option(None, "--data", help=".npz file with arrays X (n, d) and y (n,), or a .csv (target: column 'target' or the last)"),
    lam: Optional[float] = typer.Option(None, "--lam", help="weight decay λ > 0 (F = R + λ Σ(|w|² + α²)); with --data"),
    bias: bool = typer.Option(False, "--bias", help="append the constant input 1 (a bias); with --data"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object"),
    norm: str = typer.Option("l2", "--norm", help="l2: weight decay (lifted, signed, split, sphere); l1: signed_square; with --data"),
    reduction: str = typer.Option("mean", "--reduction", help="mean over the data (as the experiments) or sum (seed 001's loss); with --data"),
    loss: str = typer.Option("square", "--loss", help="square: (f − y)²; logistic: log(1 + e^(−y f)), labels ±1; with --data"),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="a run folder: its own training data, λ, loss and reduction, for each of its parameterisations"),
) -> None:
    """Certified global minimum of a two-layer ReLU network with weight decay (convex program + dual certificate).

    Exit code 0: certified to a relative gap ≤ 1e-6; 1: solved, gap larger; 2: bad input."""
    _x64()
    from wgflow.optimum import optimum_command
    from wgflow.optimum.api import optimum_run_command

    if (data is None) == (run_dir is None):
        typer.secho("error: give either --data FILE --lam λ (your data) or --run DIR (a run folder)", fg="red", err=True)
        raise typer.Exit(2)
    if run_dir is not None:
        given = [
            flag
            for flag, v, default in (
                ("--lam", lam, None),
                ("--bias", bias, False),
                ("--norm", norm, "l2"),
                ("--reduction", reduction, "mean"),
                ("--loss", loss, "square"),
            )
            if v != default
        ]
        if given:
            typer.secho(f"error: --run takes the data, λ, loss, reduction and parameterisations from the run; drop {', '.join(given)}", fg="red", err=True)
            raise typer.Exit(2)
        raise typer.Exit(optimum_run_command(run_dir, json_output))
    raise typer.Exit(optimum_command(data, lam, bias, json_output, norm=norm, reduction=reduction, loss=loss))  # type: ignore[arg-type]  # data is set here


@app.command("compare")
def compare(
    runs: List[Path] = typer.Argument(..., help="finished run folders (teacher_student or fit kinds)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the figure of objective curves here (.png, .pdf or .svg)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the --out file if it exists"),
    json_output: bool = typer.Option(False, "--json", help="print the table as JSON (one object per row)"),
) -> None:
    """Several runs side by side: one table of medians per (parameterisation, width), one figure of objective curves."""
    from wgflow.errors import InputError
    from wgflow.experiments.compare import compare as compare_runs
    from wgflow.experiments.rundir import to_jsonable

    try:
        rows, cols, path = compare_runs(runs, out, overwrite=overwrite)
    except InputError as exc:
        _fail(exc)
    if json_output:
        typer.echo(json.dumps(to_jsonable({"columns": cols, "rows": rows, "figure": str(path) if path else None}), indent=2))
        return
    _print_summary(
        {"experiment": f"compare: {len(runs)} runs", "seconds": 0.0, "table": rows, "print_columns": cols}, timing=False, width=max(140, 14 * len(cols))
    )
    typer.echo(f"\nwrote {path}" if path else "\n(--out FILE.png draws the objective curves)")


@app.command("bench")
def bench(
    quick: bool = typer.Option(False, "--quick", help="small sizes (a few minutes)"),
    json_file: Optional[Path] = typer.Option(None, "--json", help="write the rows as JSON"),
    markdown_file: Optional[Path] = typer.Option(None, "--markdown", help="write the Markdown table"),
    only: List[str] = typer.Option([], "--only", help="run only this benchmark (repeatable)"),
) -> None:
    """Run every benchmark (each a ratio against a baseline measured in the same run) and print a table."""
    from wgflow import benchmarks
    from wgflow.errors import InputError
    from wgflow.experiments.rundir import to_jsonable

    try:
        rows = benchmarks.run_all(quick, only or None, echo=lambda msg: typer.echo(msg, err=True))
    except InputError as exc:
        _fail(exc)
    table = benchmarks.markdown(rows)
    typer.echo(f"machine: {benchmarks.machine()}\n")
    typer.echo(table)
    if json_file:
        json_file.write_text(json.dumps(to_jsonable(rows), indent=2) + "\n")
    if markdown_file:
        markdown_file.write_text(f"machine: {benchmarks.machine()}\n\n{table}\n")


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_summary(summary: dict, timing: bool = True, width: int = 140) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=width)
    took = f"{summary.get('seconds', 0):.1f} s"
    if "compile_seconds" in summary:
        took += f", of which compiling {summary['compile_seconds']:.1f} s"
    console.print(f"[bold]{summary.get('experiment')}[/bold]" + (f"  ({took})" if timing else ""))
    table_rows = summary.get("table") or []
    if table_rows:
        cols = summary.get("print_columns") or list(table_rows[0].keys())
        t = Table(*cols)
        for row in table_rows:
            t.add_row(*[_fmt(row.get(c)) for c in cols])
        console.print(t)
    opt = summary.get("global_min")
    if opt:
        for k, v in opt.items():
            if v:
                console.print(f"certified global minimum for {k}: F* = {v['value']:.8g} (bounds [{v['lower_bound']:.8g}, {v['upper_bound']:.8g}])")
    for note in summary.get("notes") or []:
        console.print(note, markup=False)


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
