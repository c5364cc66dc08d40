"""``wgflow compare RUN RUN ...``: several finished runs side by side (one figure, one table).

Reads, never writes, each run folder (``config.toml``, ``summary.json``, ``results.npz``) of
the kinds that sweep widths and seeds (``teacher_student``, ``fit``). The figure has one panel
per parameterisation: for every run and width, the median over seeds of the relative excess
(F(μ_t) − F*)/F* against mean-field time when every run has a certified F* for it, else of
F(μ_t). The table has one row per (parameterisation, width) and, per run, the median final
objective, the median relative excess and the success fraction where there is an F*, and the
median test accuracy (or test loss) of ``fit`` runs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tomllib
import warnings
from pathlib import Path

import numpy as np

from wgflow.errors import InputError, require

KINDS = ("teacher_student", "fit")
LINESTYLES = ("-", "--", ":", "-.")


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run, as read from its folder."""

    path: Path
    label: str
    kind: str
    config: dict
    summary: dict
    results: dict


def load_run(path: str | Path, label: str | None = None) -> Run:
    """A finished run folder of a kind that sweeps widths and seeds; one clear error otherwise."""
    path = Path(path)
    require(path.is_dir(), "RUN", f"{str(path)!r} is not a folder", "give the --out folders of finished runs")
    files = {name: path / name for name in ("config.toml", "summary.json", "results.npz")}
    missing = [n for n, p in files.items() if not p.is_file()]
    require(not missing, "RUN", f"{path} is not a finished wgflow run (missing {missing})", "give the --out folder of a run that completed")
    try:
        config = tomllib.loads(files["config.toml"].read_text())
        summary = json.loads(files["summary.json"].read_text())
        with np.load(files["results.npz"], allow_pickle=False) as f:
            results = {k: f[k] for k in f.files}
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, OSError, ValueError) as exc:
        raise InputError("RUN", f"{path} cannot be read ({exc})", "give the folder of a run that completed") from None
    kind = str(config.get("kind"))
    require(kind in KINDS, "RUN", f"{path} is a run of the kind {kind!r}; compare reads runs of the kinds {list(KINDS)}", "give teacher–student or fit runs")
    return Run(path, label or path.name, kind, config, summary, results)


def _labels(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


def _groups(run: Run) -> list[tuple[str, int]]:
    return [(row["parameterisation"], int(row["width"])) for row in run.summary.get("table", [])]


def _fstar(run: Run, param: str) -> float | None:
    opt = (run.summary.get("global_min") or {}).get(param)
    return float(opt["value"]) if opt else None


def table(runs: list[Run]) -> tuple[list[dict], list[str]]:
    """(rows, columns): one row per (parameterisation, width) of any run, per run its medians."""
    keys = list(dict.fromkeys(k for run in runs for k in _groups(run)))
    cols = ["parameterisation", "width"]
    rows = []
    for param, width in keys:
        row: dict = {"parameterisation": param, "width": width}
        for run in runs:
            entry = next((e for e in run.summary.get("table", []) if e["parameterisation"] == param and int(e["width"]) == width), None)
            if entry is None:
                continue
            row[f"{run.label}: median F"] = entry.get("median_final_objective")
            if "median_relative_excess" in entry:
                row[f"{run.label}: rel. excess"] = entry.get("median_relative_excess")
                row[f"{run.label}: success"] = entry.get("success_fraction")
            if "median_test_accuracy" in entry:
                row[f"{run.label}: test acc."] = entry.get("median_test_accuracy")
            elif "median_test_loss" in entry:
                row[f"{run.label}: test loss"] = entry.get("median_test_loss")
        rows.append(row)
    for run in runs:  # columns in run order
        for suffix in ("median F", "rel. excess", "success", "test acc.", "test loss"):
            c = f"{run.label}: {suffix}"
            if any(c in r for r in rows) and c not in cols:
                cols.append(c)
    return rows, cols


def figure(runs: list[Run]):
    """One panel per parameterisation: median curves of every run and width."""
    from wgflow import plots

    params = list(dict.fromkeys(p for run in runs for p, _ in _groups(run)))
    colors = plots.ordered_colors(len(runs), top=0.85)
    panel_list, styles = [], {}
    for param in params:
        with_fstar = all(_fstar(run, param) is not None for run in runs if any(p == param for p, _ in _groups(run)))
        curves = {}
        for color, run in zip(colors, runs):
            widths = [w for p, w in _groups(run) if p == param]
            fstar = _fstar(run, param)
            for i, width in enumerate(widths):
                values = np.asarray(run.results[f"{param}/m{width}/objective"], float)
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a time at which every run had stopped
                    med = np.nanmedian(values, axis=0)
                if with_fstar and fstar:
                    med = np.maximum((med - fstar) / fstar, 1e-12)
                label = f"{run.label}: m = {width}"
                curves[label] = (run.results["times"], med)
                styles[label] = {"color": color, "ls": LINESTYLES[i % len(LINESTYLES)]}
        ylabel = r"median relative excess $(F(\mu_t) - F^*)/F^*$" if with_fstar else r"median objective $F(\mu_t)$"
        panel_list.append({"ylabel": ylabel, "curves": curves, "title": param})
    return plots.panels(panel_list, logx=True, logy=True, styles=styles, title=f"{len(runs)} runs: median over seeds (colour: run, line style: width)")


def compare(paths: list[str | Path], out: str | Path | None = None, *, overwrite: bool = False) -> tuple[list[dict], list[str], Path | None]:
    """Read the runs, build the table and (with ``out``) write the figure there (PNG, PDF or SVG by
    its suffix; an existing file only with ``overwrite``). Returns (rows, columns, figure path)."""
    require(len(paths) >= 1, "RUN", "give at least one run folder", "wgflow compare runs/a runs/b")
    if out is not None:
        out = Path(out)
        require(out.suffix.lower() in (".png", ".pdf", ".svg"), "--out", f"{str(out)!r} has no figure suffix", "end it with .png, .pdf or .svg")
        require(not out.exists() or overwrite, "--out", f"{str(out)!r} exists; compare never writes over a file", "choose another name, or pass --overwrite")
    resolved = [Path(p) for p in paths]
    runs = [load_run(p, label) for p, label in zip(resolved, _labels(resolved))]
    rows, cols = table(runs)
    if out is None:
        return rows, cols, None
    from wgflow import plots
    from wgflow.experiments.rundir import atomic_write_bytes

    fig = figure(runs)
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix.lower()[1:], dpi=130, bbox_inches="tight")
    plots.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return rows, cols, out
