"""Every benchmark of wgflow, each a ratio against a baseline measured in the same run.

``wgflow bench [--quick] [--json FILE] [--markdown FILE] [--only NAME]`` runs them. A
benchmark module has ``run(quick: bool) -> list[dict]``; each row has ``name``,
``seconds``, ``baseline_seconds``, ``ratio`` (= baseline / wgflow: > 1 means wgflow is
faster), ``fraction_of_peak`` (of this machine's float32 matmul rate, for the
compute-bound ones) and the sizes.
"""

from __future__ import annotations

import importlib
import platform
import time

BENCHMARKS = {
    "particle": "wgflow.benchmarks.particle",
    "loop": "wgflow.benchmarks.loop",
    "scale": "wgflow.benchmarks.scale",
    "sweep": "wgflow.benchmarks.sweep",
    "sharded": "wgflow.benchmarks.sharded",
    "optimum": "wgflow.benchmarks.optimum",
    "resnet": "wgflow.benchmarks.resnet",
    "jko": "wgflow.benchmarks.jko",
}


def register(name: str, module: str) -> None:
    BENCHMARKS[name] = module


def run_all(quick: bool = False, only: list[str] | None = None, echo=print) -> list[dict]:
    names = only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        from wgflow.errors import InputError

        raise InputError("--only", f"unknown benchmark(s) {unknown}", f"use some of {', '.join(BENCHMARKS)}")
    rows = []
    for name in names:
        t0 = time.perf_counter()
        echo(f"running {name} ...")
        module = importlib.import_module(BENCHMARKS[name])
        try:
            out = module.run(quick)
        except Exception as exc:  # a failing benchmark is reported, the others still run
            out = [{"name": name, "seconds": None, "baseline_seconds": None, "ratio": None, "fraction_of_peak": None, "error": repr(exc)[:500]}]
        for r in out:
            r["benchmark"] = name
        rows.extend(out)
        echo(f"  {name}: {time.perf_counter() - t0:.1f} s")
    return rows


def machine() -> str:
    import os

    import jax

    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, jax {jax.__version__}, devices {jax.devices()}"


def markdown(rows: list[dict]) -> str:
    def fmt(v, spec=".4g"):
        return "—" if v is None else format(v, spec)

    lines = [
        "| benchmark | case | wgflow (s) | baseline (s) | ratio | % of matmul peak | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        frac = r.get("fraction_of_peak")
        ratio = r.get("ratio")
        lines.append(
            f"| {r.get('benchmark', '')} | {r['name']} | {fmt(r.get('seconds'))} | {fmt(r.get('baseline_seconds'))} | "
            f"{'—' if ratio is None else f'{ratio:.2f}×'} | {'—' if frac is None else f'{100 * frac:.1f}%'} | "
            f"{'; '.join(str(v) for v in (r.get('target', r.get('error', '')), r.get('note')) if v)} |"
        )
    return "\n".join(lines)
