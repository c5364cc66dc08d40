"""The ``wgflow`` command line: list, config, run, report, compare (and optimum, bench).

Exit codes: 0 done (a run whose runs diverged or stopped is a result: 0, with a warning line);
2 bad input or a file problem (one line naming the field or the path); 130 / 143 a run stopped
by SIGINT / SIGTERM (its checkpoints kept, the resume command printed); 70 an unexpected
error (one line; ``WGFLOW_DEBUG=1`` prints the traceback). ``wgflow optimum`` also returns 1
when the certificate does not close.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Iterator, List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Wasserstein gradient flows of neural networks: run, inspect and report experiments.")

DEBUG_ENV = "WGFLOW_DEBUG"
EXIT_BAD_INPUT, EXIT_INTERNAL = 2, 70


def _print_version(value: bool) -> None:
    if value:
        from wgflow import __version__

        typer.echo(f"wgflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="print the version of wgflow and exit"),
) -> None:
    """Wasserstein gradient flows of neural networks: run, inspect and report experiments."""


def _x64():
    import jax

    from wgflow.runtime import enable_persistent_cache

    jax.config.update("jax_enable_x64", True)
    enable_persistent_cache()


PLUGIN_HELP = (
    "import this module first (from the current directory or sys.path, or a .py path) so that the names it registers work in the config and --set (repeatable)"
)


def _fail(message: object, code: int = EXIT_BAD_INPUT) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _os_message(exc: OSError) -> str:
    where = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{where}: {exc.strerror or exc}" if where else str(exc)


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    """What reaches the user: bad input and file problems as one line (exit 2), an interrupted
    run with its resume command (128 + the signal), anything else as one line asking for a
    report (exit 70; the traceback with WGFLOW_DEBUG=1)."""
    from wgflow.errors import InputError
    from wgflow.experiments.rundir import RunInterrupted

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except InputError as exc:
        _fail(exc)
    except RunInterrupted as exc:
        hint = getattr(exc, "resume_command", None)
        kept = "its checkpoints are kept" if getattr(exc, "checkpoints", 0) else "no checkpoint was written yet (a resumed run starts from step 0)"
        typer.secho(f"interrupted: {exc}; {kept}" + (f". Resume with:\n  {hint}" if hint else ""), fg="yellow", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="yellow", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:
        _fail(_os_message(exc))
    except MemoryError as exc:
        _fail(f"out of memory ({exc or 'an allocation failed'}). Fix: make the run smaller (fewer widths, seeds, data points or steps)")
    except Exception as exc:
        if "RESOURCE_EXHAUSTED" in str(exc):
            _fail(f"out of memory: {str(exc).splitlines()[0]}. Fix: make the run smaller (fewer widths, seeds, data points or steps)")
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        typer.secho(
            f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} — this is a bug in wgflow, please report it"
            + ("" if os.environ.get(DEBUG_ENV) else f" (with the traceback: {DEBUG_ENV}=1 wgflow …)"),
            fg="red",
            err=True,
        )
        raise typer.Exit(EXIT_INTERNAL) from None


@app.command("list")
def list_experiments() -> None:
    """The named experiments, one line each."""
    from wgflow import experiments
    from wgflow.experiments.config import load_toml

    rows = [(name, load_toml(path).get("description", "")) for name, path in experiments.named().items()]
    typer.echo(_columns(rows, shutil.get_terminal_size((160, 24)).columns))


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
    from wgflow.experiments.config import describe as describe_fields
    from wgflow.experiments.config import dump_toml

    with _clean_errors():
        module, cfg = experiments.load(name, set_, quick, plugins=plugin)
    if describe:
        rows = [("field", "value", "allowed", "description"), *describe_fields(module.Config, values=cfg)]
        typer.echo(_columns(rows, shutil.get_terminal_size((160, 24)).columns, caps=(1.0, 0.22, 0.28)))
    else:
        typer.echo(dump_toml(cfg), nl=False)


@app.command("run")
def run(
    name: str = typer.Argument("chizat-bach-relu", help="a named experiment (wgflow list) or a TOML file"),
    set_: List[str] = typer.Option([], "--set", help="override a config field: section.key=value (repeatable)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/NAME, or runs/NAME-2, … when that one holds a run)"),
    quick: bool = typer.Option(False, "--quick", help="a small version of the same experiment (well under a minute)"),
    resume: bool = typer.Option(False, "--resume", help="continue the interrupted run in --out from its last checkpoints"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run in --out (only the files its manifest lists are deleted)"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty folder that is not a wgflow run (never over its files)"),
    plugin: List[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
    processes: Optional[int] = typer.Option(
        None,
        "--processes",
        min=1,
        help="run as N local processes of one jax.distributed job (process 0 writes the folder); without it, under srun or mpirun the cluster's processes join",
    ),
) -> None:
    """Run an experiment; writes config, summary.json, metrics.csv, checkpoints and figures to one folder."""
    from wgflow import distributed, experiments

    if processes is not None and processes > 1 and distributed.COORDINATOR_ENV not in os.environ:
        raise typer.Exit(distributed.launch(_without_processes(sys.argv[1:]), processes))
    with _clean_errors():
        distributed.initialize()
        _x64()
        rd, summary = experiments.run(name, set_, out, quick, resume, overwrite=overwrite, force=force, plugins=plugin)
        from wgflow.experiments.rundir import writes_files

        if not writes_files():  # process k > 0 of a job: process 0 reports
            return
    _print_summary(summary)
    typer.echo(f"\nwrote {rd.path}/: " + ", ".join(sorted(p.name for p in rd.path.iterdir() if not p.name.startswith("."))))
    _warn_unsuccessful(summary, rd.path)


def _without_processes(argv: List[str]) -> List[str]:
    """The command line with its ``--processes N`` (or ``--processes=N``) removed."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--processes":
            skip = True
        elif not a.startswith("--processes="):
            out.append(a)
    return out


def _warn_unsuccessful(summary: dict, path: Path) -> None:
    """One warning line when some runs diverged, were unstable or stopped (the exit code stays 0)."""
    from wgflow import experiments

    failed = experiments.unsuccessful(summary)
    if failed:
        rows = summary.get("runs") or summary.get("table") or []
        counts = ", ".join(f"{k} {v}" for k, v in sorted(failed.items()))
        typer.secho(
            f"warning: {sum(failed.values())} of {len(rows)} runs did not end successful ({counts}); "
            f"{path / 'summary.json'} says for each where it stopped and why",
            fg="yellow",
            err=True,
        )


@app.command("report")
def report(directory: Path = typer.Argument(..., help="the folder of a finished run")) -> None:
    """Re-draw the figures of a finished run and print its summary."""
    from wgflow import experiments

    with _clean_errors():
        _x64()
        summary = experiments.report(directory)
    _print_summary(summary)
    _warn_unsuccessful(summary, directory)


@app.command("optimum")
def optimum(
    data: Optional[Path] = typer.Option(None, "--data", help=".npz file with arrays X (n, d) and y (n,), or a .csv (target: column 'target' or the last)"),
    lam: Optional[float] = typer.Option(None, "--lam", help="weight decay λ > 0 (F = R + λ Σ(|w|² + α²)); with --data"),
    bias: bool = typer.Option(False, "--bias", help="append the constant input 1 (a bias); with --data"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object"),
    norm: str = typer.Option("l2", "--norm", help="l2: weight decay (lifted, signed, split, sphere); l1: signed_square; with --data"),
    reduction: str = typer.Option("mean", "--reduction", help="mean over the data (as the experiments) or sum (a plain sum of the losses); with --data"),
    loss: str = typer.Option("square", "--loss", help="square: (f − y)²; logistic: log(1 + e^(−y f)), labels ±1; with --data"),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="a run folder: its own training data, λ, loss and reduction, for each of its parameterisations"),
) -> None:
    """Certified global minimum of a two-layer ReLU network with weight decay (the convex program of Pilanci & Ergen 2020 + a dual certificate).

    Exit code 0: certified to a relative gap ≤ 1e-6; 1: solved, gap larger; 2: bad input."""
    with _clean_errors():
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
    from wgflow.experiments.compare import compare as compare_runs
    from wgflow.experiments.rundir import to_jsonable

    with _clean_errors():
        rows, cols, path = compare_runs(runs, out, overwrite=overwrite)
    if json_output:
        typer.echo(json.dumps(to_jsonable({"columns": cols, "rows": rows, "figure": str(path) if path else None}), indent=2))
        return
    _print_summary(
        {"experiment": f"compare: {len(runs)} runs", "seconds": 0.0, "table": rows, "print_columns": cols}, timing=False, width=max(140, 14 * len(cols))
    )
    typer.echo(f"\nwrote {path}" if path else "\n(--out FILE.png draws the objective curves)")


def _bench_names() -> list[str]:
    from wgflow.benchmarks import BENCHMARKS  # a table of module names: imports nothing heavy

    return list(BENCHMARKS)


@app.command("bench")
def bench(
    quick: bool = typer.Option(False, "--quick", help="small sizes (a few minutes)"),
    json_file: Optional[Path] = typer.Option(None, "--json", help="write the rows as JSON"),
    markdown_file: Optional[Path] = typer.Option(None, "--markdown", help="write the Markdown table"),
    only: List[str] = typer.Option([], "--only", help=f"run only this benchmark (repeatable): {', '.join(_bench_names())}"),
) -> None:
    """Run every benchmark (each a ratio against a baseline measured in the same run) and print a table."""
    from wgflow import benchmarks
    from wgflow.experiments.rundir import to_jsonable

    with _clean_errors():
        rows = benchmarks.run_all(quick, only or None, echo=lambda msg: typer.echo(msg, err=True))
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


def _columns(rows: list[tuple[str, ...]], width: int, caps: tuple[float, ...] = (), gap: int = 2, least: int = 10) -> str:
    """Rows as aligned columns within ``width`` characters: the first column whole, the others
    wrapped at word boundaries; column i at most ``caps[i]`` of the width, then the widest
    one narrowed first."""
    import textwrap

    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, cap in enumerate(caps):
        widths[i] = min(widths[i], max(least, int(cap * width)))
    while sum(widths) + gap * (len(widths) - 1) > width:
        i = max(range(1, len(widths)), key=lambda j: widths[j])
        if widths[i] <= least:
            break
        widths[i] -= 1
    lines = []
    for row in rows:
        cells = [[row[0]]] + [textwrap.wrap(text, w, break_on_hyphens=False) or [""] for text, w in zip(row[1:], widths[1:])]
        for k in range(max(len(c) for c in cells)):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(cells, widths)]
            lines.append((" " * gap).join(parts).rstrip())
    return "\n".join(lines)


def _console(fallback: int = 160):
    """A rich console on stdout as wide as the terminal (``fallback`` columns when stdout is not one)."""
    from rich.console import Console

    return Console(file=sys.stdout, width=shutil.get_terminal_size((fallback, 24)).columns, highlight=False)


def _print_summary(summary: dict, timing: bool = True, width: int = 140) -> None:
    """The run's headline and table, folded to the terminal's width (headers wrap, never cut)."""
    from rich.table import Table

    console = _console(width)
    took = f"{summary.get('seconds', 0):.1f} s"
    if "compile_seconds" in summary:
        took += f", of which compiling {summary['compile_seconds']:.1f} s"
    console.print(f"[bold]{summary.get('experiment')}[/bold]" + (f"  ({took})" if timing else ""))
    table_rows = summary.get("table") or []
    if table_rows:
        cols = summary.get("print_columns") or list(table_rows[0].keys())
        t = Table(*cols)
        for col in t.columns:
            col.overflow = "fold"  # a narrow terminal wraps a header or a cell, never cuts it
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


def main(argv: list[str] | None = None) -> int:
    """The console script: runs ``wgflow ARGV`` (default: the command line) and returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["bench"] and any(a == "--only" and (i + 1 == len(args) or args[i + 1].startswith("-")) for i, a in enumerate(args)):
        typer.secho(f"error: --only needs a benchmark's name: one of {', '.join(_bench_names())}", fg="red", err=True)
        return EXIT_BAD_INPUT
    try:
        app(args=args, prog_name="wgflow")
    except SystemExit as exc:  # every command ends by exiting; a usage error exits 2
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_BAD_INPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
