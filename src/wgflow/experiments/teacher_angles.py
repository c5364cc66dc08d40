"""Success against the student's width and the teacher's smallest angle (Chizat & Bach 2018, §4).

Chizat & Bach report, for a ReLU teacher in the plane, failure of gradient descent at width
m = 5 and success at m = 10 and 100. Whether a narrow student succeeds depends on the
teacher: it must send one particle to each teacher direction from a small random start,
and close directions compete for the same particles. This study maps that dependence.

The teachers: k = ``data.teacher_width`` ReLU neurons in the plane with positive output
weights, two of them θ apart and the other k − 2 spread evenly over the rest of the circle,
so that θ is the smallest angle between two teacher directions (θ ≤ 360°/k; at θ = 360°/k
the directions are evenly spaced). For every θ of ``angles.degrees`` the teacher–student
sweep of :mod:`wgflow.experiments.teacher_student` runs (every width × seed, the same
training and monitor) against the certified optimum of that teacher's objective.

The run folder gets ``summary.json`` (per (θ, parameterisation, width): success fraction,
counts of each result, median relative excess; per teacher: F*), ``metrics.csv`` (one row
per run: its final objective, relative excess and status), ``results.npz`` (the maps) and
the figure ``success_map`` (PNG + PDF). Checkpoints are per θ and width, so ``--resume``
continues where the run stopped.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Literal

import jax.numpy as jnp
import numpy as np
from pydantic import Field, field_validator, model_validator

from wgflow import plots
from wgflow.experiments import teacher_student
from wgflow.experiments.config import RunName, Section, dump_toml
from wgflow.experiments.rundir import RunDir, figure_files, fingerprint
from wgflow.experiments.sections import PLUGINS_HELP, InitSection, OutputSection, PluginList, SweepSection
from wgflow.resources import Need

KIND = "teacher_angles"


class TeacherSection(Section):
    """The teachers: k ReLU neurons in the plane, two of them θ apart, the rest spread evenly."""

    n: int = Field(100, gt=0, description="number of training inputs (uniform on the unit circle)")
    teacher_width: int = Field(4, ge=2, description="number of teacher neurons k")
    teacher_signs: Literal["random", "positive"] = Field("positive", description="teacher output weights: all +1, or random ±1")
    rotation: float = Field(30.0, description="direction of the first teacher neuron, in degrees")
    seed: int = Field(0, description="PRNG seed of the inputs (the same inputs for every teacher)")


class AnglesSection(Section):
    """The smallest teacher angles θ mapped."""

    degrees: list[float] = Field([5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0], description="smallest angles θ between two teacher neurons, in degrees")

    @field_validator("degrees")
    @classmethod
    def _positive(cls, v):
        if not v or any(not (0 < a < 360) for a in v):
            raise ValueError(f"every angle must be in (0, 360) degrees, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"angles must be distinct, got {v}")
        return sorted(v)


class Config(Section):
    name: RunName = Field("teacher-angles", description="experiment name (the default output folder is runs/NAME)")
    kind: Literal["teacher_angles"] = Field(KIND, description="experiment kind (which runner reads this file)")
    description: str = Field("", description="one line shown by `wgflow list`")
    plugins: PluginList = Field([], description=PLUGINS_HELP)
    data: TeacherSection = Field(default_factory=TeacherSection, description="the teachers and their inputs")
    angles: AnglesSection = Field(default_factory=AnglesSection, description="the smallest teacher angles mapped")
    model: teacher_student.ModelSection = Field(default_factory=teacher_student.ModelSection, description="the student")
    init: InitSection = Field(default_factory=InitSection, description="initial measures")
    sweep: SweepSection = Field(default_factory=SweepSection, description="widths × seeds (every teacher)")
    train: teacher_student.TrainSection = Field(default_factory=teacher_student.TrainSection, description="gradient descent")
    output: OutputSection = Field(default_factory=lambda: OutputSection(animation=False, snapshots=2), description="files written")

    @model_validator(mode="after")
    def _smallest(self):
        k = self.data.teacher_width
        too_wide = [a for a in self.angles.degrees if a > 360.0 / k + 1e-9]
        if too_wide:
            raise ValueError(
                f"angles.degrees: {too_wide} exceed 360°/k = {360.0 / k:g}° for k = {k} teacher neurons, so they would not be the smallest angle; "
                f"use angles up to {360.0 / k:g}° (or fewer teacher neurons)"
            )
        if self.model.activation != "relu":
            raise ValueError("model.activation: the teacher study compares against the certified optimum of a ReLU network; use 'relu'")
        return self


def teacher_directions(theta: float, k: int, rotation: float = 0.0) -> list[float]:
    """Directions (degrees) of k neurons: ``rotation``, ``rotation + θ``, then k − 2 more evenly
    spaced over the remaining 360° − θ. θ ≤ 360°/k makes θ the smallest angle between two of them."""
    gap = (360.0 - theta) / (k - 1)
    return [float((rotation + a) % 360.0) for a in [0.0, theta, *(theta + gap * i for i in range(1, k - 1))]]


def smallest_angle(directions_deg) -> float:
    """The smallest angle (degrees) between two of the given directions on the circle."""
    a = np.sort(np.mod(np.asarray(directions_deg, float), 360.0))
    gaps = np.diff(np.concatenate([a, a[:1] + 360.0]))
    return float(gaps.min())


def sweep_config(cfg: Config, theta: float) -> teacher_student.Config:
    """The teacher–student sweep of one teacher (smallest angle ``theta``)."""
    k = cfg.data.teacher_width
    data = {
        "n": cfg.data.n,
        "d": 2,
        "teacher_width": k,
        "activation": "relu",
        "bias": False,
        "inputs": "sphere",
        "teacher_signs": cfg.data.teacher_signs,
        "seed": cfg.data.seed,
        "teacher_angles": teacher_directions(theta, k, cfg.data.rotation),
    }
    return teacher_student.Config(
        name=f"{cfg.name}-{_angle_key(theta)}",
        data=data,
        model=cfg.model,
        init=cfg.init,
        sweep=cfg.sweep,
        train=cfg.train,
        output=cfg.output,
    )


def _angle_key(theta: float) -> str:
    return f"angle{theta:g}"


class _Prefixed:
    """A view of a :class:`RunDir` whose checkpoints carry a prefix, so that each teacher's sweep
    checkpoints under its own names in the one run folder, stamped with the fingerprint of the
    whole study's config (the one ``--resume`` checks: it covers every teacher's settings)."""

    def __init__(self, rd: RunDir, prefix: str, fingerprint: str):
        self._rd, self._prefix, self._fingerprint = rd, prefix, fingerprint

    def save_checkpoint(self, key, state, records, step, fingerprint):
        return self._rd.save_checkpoint(self._prefix + key, state, records, step, self._fingerprint)

    def load_checkpoint(self, key, like_state, fingerprint):
        return self._rd.load_checkpoint(self._prefix + key, like_state, self._fingerprint)

    def checkpoint_path(self, key):
        return self._rd.checkpoint_path(self._prefix + key)

    def __getattr__(self, name):
        return getattr(self._rd, name)


# --------------------------------------------------------------------------- resources


def outputs(cfg: Config) -> list[str]:
    """The files a run writes beside results.npz, summary.json and metrics.csv."""
    return figure_files("success_map")


def estimate(cfg: Config) -> list[Need]:
    """The largest sweep's memory: the teachers run one after another."""
    return teacher_student.estimate(sweep_config(cfg, cfg.angles.degrees[0]))


def work(cfg: Config) -> float:
    return len(cfg.angles.degrees) * teacher_student.work(sweep_config(cfg, cfg.angles.degrees[0]))


# --------------------------------------------------------------------------- run


def run(cfg: Config, rd: RunDir, *, resume: bool = False, progress: bool | None = None) -> dict:
    dtype = jnp.float64 if cfg.model.dtype == "float64" else jnp.float32
    start = time.perf_counter()
    per_angle = []
    for theta in cfg.angles.degrees:
        sub = sweep_config(cfg, theta)
        ds = sub.data.make(dtype)
        view = _Prefixed(rd, _angle_key(theta) + "-", fingerprint(dump_toml(cfg)))
        results, optima, seconds, messages = teacher_student.train(sub, view, ds, resume=resume, progress=progress)
        summary = teacher_student.summarise(sub, results, optima, seconds, messages)
        per_angle.append((theta, sub, summary))
    summary = summarise(cfg, per_angle, time.perf_counter() - start)
    maps = success_maps(cfg, summary)
    rd.save_npz("results.npz", **maps)
    rd.write_json("summary.json", summary)
    rd.write_text("metrics.csv", metrics_csv(summary))
    draw(cfg, rd, maps)
    return summary


def summarise(cfg: Config, per_angle: list, seconds: float) -> dict:
    """One table row per (θ, parameterisation, width), the runs with their θ, and F* per teacher."""
    table, runs, teachers = [], [], []
    for theta, sub, s in per_angle:
        directions = sub.data.teacher_angles
        teachers.append(
            {
                "smallest_angle": theta,
                "directions": directions,
                "global_min": {p: (o["value"] if o else None) for p, o in s["global_min"].items()},
                "certificate_gap": {p: (o["gap"] if o else None) for p, o in s["global_min"].items()},
            }
        )
        for row in s["table"]:
            table.append({"smallest_angle": theta, **row})
        for row in s["runs"]:
            runs.append({"smallest_angle": theta, **row})
    cols = ["smallest_angle", "parameterisation", "width", "seeds", "successful", "unstable", "success_fraction", "median_relative_excess"]
    return {
        "experiment": cfg.name,
        "kind": KIND,
        "final_time": per_angle[0][2]["final_time"],
        "num_steps": cfg.train.num_steps,
        "seconds": seconds,
        "success_tol": cfg.train.success_tol,
        "teacher_width": cfg.data.teacher_width,
        "angles": list(cfg.angles.degrees),
        "widths": list(cfg.sweep.widths),
        "teachers": teachers,
        "print_columns": cols,
        "table": table,
        "runs": runs,
        "notes": map_lines(cfg, table),
    }


def success_maps(cfg: Config, summary: dict) -> dict[str, np.ndarray]:
    """Per parameterisation, (angles × widths) arrays: success fraction and median relative excess."""
    angles, widths = list(cfg.angles.degrees), list(cfg.sweep.widths)
    out: dict[str, np.ndarray] = {"angles": np.asarray(angles, float), "widths": np.asarray(widths)}
    for param in cfg.model.parameterisations:
        frac = np.full((len(angles), len(widths)), np.nan)
        med = np.full_like(frac, np.nan)
        for row in summary["table"]:
            if row["parameterisation"] == param:
                i, j = angles.index(row["smallest_angle"]), widths.index(row["width"])
                frac[i, j] = row.get("success_fraction", np.nan)
                med[i, j] = row.get("median_relative_excess") if row.get("median_relative_excess") is not None else np.nan
        out[f"{param}/success_fraction"] = frac
        out[f"{param}/median_relative_excess"] = med
    return out


def map_lines(cfg: Config, table: list[dict]) -> list[str]:
    """The map as text: one line per θ, the successes out of the seeds at each width."""
    lines = []
    for param in cfg.model.parameterisations:
        lines.append(f"{param}: successes / seeds — rows: smallest teacher angle θ; columns: width m = " + ", ".join(map(str, cfg.sweep.widths)))
        for theta in cfg.angles.degrees:
            cells = {r["width"]: r for r in table if r["parameterisation"] == param and r["smallest_angle"] == theta}
            text = "  ".join(f"{round(cells[m].get('success_fraction', 0) * cells[m]['seeds']):>2d}/{cells[m]['seeds']}" for m in cfg.sweep.widths)
            lines.append(f"  θ = {theta:>5g}°: {text}")
    return lines


def metrics_csv(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["smallest_angle", "parameterisation", "width", "seed", "status", "final_objective", "relative_excess", "success", "final_grad_norm", "stop_time"]
    w.writerow(cols)
    for r in summary["runs"]:
        w.writerow([r.get(c, "") if not isinstance(r.get(c), float) else f"{r[c]:.12g}" for c in cols])
    return buf.getvalue()


# --------------------------------------------------------------------------- figures


def draw(cfg: Config, rd: RunDir, maps: dict) -> None:
    panels = [{"values": maps[f"{p}/success_fraction"], "title": p} for p in cfg.model.parameterisations if f"{p}/success_fraction" in maps]
    fig = plots.success_map(
        panels,
        widths=maps["widths"],
        angles=maps["angles"],
        seeds=len(cfg.sweep.seeds),
        title=(
            f"{cfg.name}: success (relative excess < {cfg.train.success_tol:g} over the certified F*), "
            f"{cfg.data.teacher_width} teacher neurons, t = {float(np.sum(cfg.train.etas())):.3g}"
        ),
    )
    rd.savefig(fig, "success_map")
    plots.close(fig)


def report(cfg: Config, rd: RunDir) -> dict:
    draw(cfg, rd, rd.load_npz("results.npz"))
    return rd.read_json("summary.json")


__all__ = ["Config", "teacher_directions", "smallest_angle", "sweep_config", "run", "report"]
