"""Config sections shared by several experiment kinds (every field: a default and a description)."""

from __future__ import annotations

from typing import Annotated, Literal

import jax
import numpy as np
from pydantic import AfterValidator, Field, field_validator

from wgflow.data import Dataset, teacher_student
from wgflow.experiments.config import Section
from wgflow.flows import schedules
from wgflow.losses import LOSSES
from wgflow.units import ACTIVATIONS, PARAMETERISATIONS

_REGISTRIES = {"activation": ACTIVATIONS, "parameterisation": PARAMETERISATIONS, "loss": LOSSES}


def registered(kind: str) -> AfterValidator:
    """A validator for a name of the registry ``kind``: checked when the config is read, so
    that a name registered by then (``register_activation``, …) works as a built-in one does."""
    table = _REGISTRIES[kind]

    def check(name: str) -> str:
        if name not in table:
            raise ValueError(f"unknown {kind} {name!r}: the registered ones are {sorted(table)} (register_{kind}(...) adds one)")
        return name

    check.registry = (kind, table)  # type: ignore[attr-defined]  # read by config.allowed (wgflow config --describe)
    return AfterValidator(check)


#: the top-level ``plugins`` key of every config (wgflow.experiments.plugins imports them before validation)
PluginList = list[str]
PLUGINS_HELP = "modules imported before the config is read, e.g. ['my_module'] for ./my_module.py (they may register activations, losses, parameterisations)"

#: names of registered activations, parameterisations and losses (checked against the registries)
ActivationName = Annotated[str, registered("activation")]
ParamName = Annotated[str, registered("parameterisation")]
LossName = Annotated[str, registered("loss")]


class DataSection(Section):
    """Teacher–student data."""

    n: int = Field(100, gt=0, description="number of training inputs")
    d: int = Field(2, gt=0, description="input dimension (without the bias coordinate)")
    teacher_width: int = Field(4, gt=0, description="number of teacher neurons m0")
    activation: ActivationName = Field("relu", description="the teacher's activation")
    bias: bool = Field(False, description="append the constant coordinate 1 to every input (a bias)")
    inputs: Literal["sphere", "gaussian"] = Field("sphere", description="inputs uniform on the unit sphere, or N(0, I)")
    teacher_signs: Literal["random", "positive"] = Field("random", description="teacher output weights: random ±1, or all +1")
    teacher_scale: float = Field(1.0, gt=0, description="norm of each teacher neuron's input weights")
    noise: float = Field(0.0, ge=0, description="standard deviation of Gaussian label noise")
    seed: int = Field(0, description="PRNG seed of the data")
    teacher_angles: list[float] | None = Field(
        None,
        description="directions of the teacher neurons in degrees, one per neuron (d = 2 without a bias); none or []: drawn uniformly on the sphere",
    )

    @field_validator("teacher_angles")
    @classmethod
    def _angles(cls, v, info):
        if not v:
            return None  # [] (e.g. --set data.teacher_angles=[]): the directions are drawn
        width = info.data.get("teacher_width")
        if width is not None and len(v) != width:
            raise ValueError(
                f"gives {len(v)} angles for teacher_width = {width}: give one angle per teacher neuron (and set data.teacher_width to their number)"
            )
        if info.data.get("d") != 2 or info.data.get("bias"):
            raise ValueError(
                "places the teacher neurons in the plane, so it needs data.d = 2 and data.bias = false: "
                "set those, or --set data.teacher_angles=[] to draw the directions at random"
            )
        return v

    def make(self, dtype=None) -> Dataset:
        return teacher_student(
            jax.random.PRNGKey(self.seed),
            self.n,
            self.d,
            self.teacher_width,
            activation=self.activation,
            bias=self.bias,
            inputs=self.inputs,
            teacher_signs=self.teacher_signs,
            teacher_scale=self.teacher_scale,
            noise=self.noise,
            teacher_angles=self.teacher_angles,
            dtype=dtype,
        )


class InitSection(Section):
    """Initial measure of each student (see wgflow.init.initial_measure)."""

    distribution: Literal["gaussian", "sphere", "heavy_tailed"] = Field("gaussian", description="law of the initial positions")
    scale: float = Field(0.1, gt=0, description="standard deviation (gaussian) or radius (sphere) of the initial positions")
    beta: float = Field(1.0, gt=0, description="tail exponent of the heavy_tailed law (1+|w|²)^-(d/2+β)")
    output: Literal["random", "zero"] = Field("random", description="'zero': zero output layer (lifted, sphere only)")
    signs: Literal["random", "alternating", "positive"] = Field("random", description="signs of the masses for signed parameterisations")


class ScheduleSection(Section):
    """Step sizes in mean-field time."""

    step_size: float = Field(0.25, gt=0, description="step size η (mean-field time per step)")
    num_steps: int = Field(100_000, gt=0, description="number of gradient steps")
    schedule: Literal["constant", "inverse_sqrt", "polish"] = Field(
        "polish", description="constant η; η/√(k+1); or 'polish': constant, then geometric decay over the last steps"
    )
    polish_fraction: float = Field(0.2, gt=0, lt=1, description="'polish': fraction of the steps spent decaying")
    final_step_size: float = Field(2.5e-3, gt=0, description="'polish': the step size reached at the end")

    def etas(self) -> np.ndarray:
        if self.schedule == "constant":
            sched = self.step_size
        elif self.schedule == "inverse_sqrt":
            sched = schedules.inverse_sqrt(self.step_size)
        else:
            decay = max(1, int(round(self.polish_fraction * self.num_steps)))
            sched = schedules.polish(self.step_size, self.num_steps - decay, self.final_step_size)
        return schedules.step_sizes(sched, self.num_steps, field="train.step_size")


class OutputSection(Section):
    """What a run writes besides summary, metrics and checkpoints."""

    animation: bool = Field(True, description="write an animated GIF of the particles moving")
    snapshots: int = Field(120, gt=1, description="number of saved states (paths, animation)")
    metrics_points: int = Field(400, gt=1, description="number of steps recorded per run in metrics.csv (log-spaced)")
    checkpoint_every: int = Field(10_000, gt=0, description="steps between checkpoints (a resumed run restarts there)")


def positive_list(v, field: str):
    if isinstance(v, int):
        v = [v]
    if not v:
        raise ValueError(f"{field} must list at least one value")
    return v


class SweepSection(Section):
    """Widths and seeds: every (width, seed) pair is one run; seeds of a width run as one vmapped program."""

    widths: list[int] = Field([4, 5, 10, 100], description="student widths m")
    seeds: list[int] = Field(list(range(10)), description="seeds of the initial measures (one run per seed)")
    one_program: bool | None = Field(
        None, description="run all widths as one vmapped program (padded); None: group consecutive widths while the padded batch is small"
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="groups of runs trained at once, each in a thread of its own (the results do not change); None: two per CPU core, at most one per group (always 1 under several processes or off the CPU)",
    )

    @field_validator("widths")
    @classmethod
    def _widths(cls, v):
        v = positive_list(v, "widths")
        bad = [w for w in v if w <= 0]
        if bad:
            raise ValueError(f"every width must be a positive integer, got {bad}")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v):
        if isinstance(v, int):
            if v <= 0:
                raise ValueError("an integer 'seeds' is a count and must be > 0")
            return list(range(v))
        return positive_list(v, "seeds")


def recorded_steps(num_steps: int, points: int) -> np.ndarray:
    """About ``points`` steps in 0..K, log-spaced (with 0 and K) so early and late times are both resolved."""
    steps = np.unique(np.concatenate([[0, num_steps], np.geomspace(1, num_steps, points - 1).round().astype(int)]))
    return steps[(steps >= 0) & (steps <= num_steps)]
