"""Teacher–student sweeps over widths and seeds (Chizat & Bach 2018, §4).

For each parameterisation and width m, all seeds run as one vmapped program of
explicit particle gradient descent in mean-field time, checkpointed every
``output.checkpoint_every`` steps. The run folder gets:

- ``summary.json``: per run (parameterisation, width, seed) the final objective,
  the final ‖∇F'‖_{L²(μ)} and whether the run converged; per (parameterisation,
  width) the table of medians and success fractions (see docs/experiments.md);
- ``metrics.csv``: objective and ‖∇F'‖ at log-spaced steps for every run;
- ``results.npz``: what the figures are drawn from (``wgflow report`` re-draws them);
- figures ``paths``, ``objective``, ``final_vs_width`` (PNG + PDF), ``particles.gif``.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import threading
import time
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field

from wgflow import plots
from wgflow.experiments import optimum_support
from wgflow.experiments.config import RunName, Section, dump_toml
from wgflow.experiments.rundir import Progress, RunDir, figure_files, file_digest, fingerprint, interrupt_requested, run_concurrently, run_segments
from wgflow.experiments.sections import (
    PLUGINS_HELP,
    ActivationName,
    DataSection,
    InitSection,
    LossName,
    OutputSection,
    ParamName,
    PluginList,
    ScheduleSection,
    SweepSection,
    recorded_steps,
)
from wgflow.flows.particle import ExplicitGD, explicit_gd_sweep
from wgflow.flows.schedules import times as schedule_times
from wgflow.flows.solve import Monitor, SaveAt, initial_loop_state, result_name
from wgflow.init import initial_measure
from wgflow.measure import Measure, stack_padded
from wgflow.objective import Objective, make_objective
from wgflow.resources import Need
from wgflow.runtime import processes_in_job, release_compiled_programs
from wgflow.units import Parameterisation

KIND = "teacher_student"


class ModelSection(Section):
    """The student: parameterisations (each is its own sweep), activation, loss, weight decay."""

    parameterisations: list[ParamName] = Field(
        ["signed_square", "lifted"], description="parameterisations to train (registered names: lifted, signed, split, sphere, signed_square, …)"
    )
    activation: ActivationName = Field("relu", description="the student's activation σ, a registered name (relu, sigmoid, tanh, cos, …)")
    loss: LossName = Field("square", description="pointwise loss ℓ, a registered name (square: (f − y)², no 1/2; logistic: labels ±1)")
    lam: float = Field(1e-3, ge=0, description="weight decay λ (F = R + λ ∫ V d|μ|)")
    reduction: Literal["sum", "mean"] = Field("mean", description="R = Σ_j ℓ ('sum') or its mean over j")
    dtype: Literal["float64", "float32"] = Field("float64", description="floating-point precision of the run")


class TrainSection(ScheduleSection):
    """Explicit particle gradient descent, under the solve loop's monitor."""

    grad_tol: float = Field(1e-4, gt=0, description="a run has converged when its final ‖∇F'‖_{L²(|μ|)} is below this")
    success_tol: float = Field(1e-3, gt=0, description="success: relative excess (F − F*)/F* below this (ReLU, certified F*)")
    monitor: Literal["stop", "warn", "backtrack"] = Field(
        "stop",
        description="a step whose F rises above its running minimum: 'stop' the run (status unstable), 'warn' and go on, "
        "or 'backtrack' (retake it as 2, 4, … substeps, so that every run is a monotone descent; a batch then runs at the "
        "substeps its most demanding run needs)",
    )
    rise_rtol: float = Field(1e-3, gt=0, lt=1, description="a rise of F above its running minimum by more than this (relative to it) counts as unstable")
    max_growth: float = Field(1e6, gt=1, description="a run whose objective grows by this factor is stopped as diverged")

    def make_monitor(self) -> Monitor:
        return Monitor(policy=self.monitor, rtol=self.rise_rtol, max_growth=self.max_growth)


class Config(Section):
    name: RunName = Field("teacher-student", description="experiment name (the default output folder is runs/NAME)")
    kind: Literal["teacher_student"] = Field(KIND, description="experiment kind (which runner reads this file)")
    description: str = Field("", description="one line shown by `wgflow list`")
    plugins: PluginList = Field([], description=PLUGINS_HELP)
    data: DataSection = Field(default_factory=DataSection, description="teacher–student data")
    model: ModelSection = Field(default_factory=ModelSection, description="the student")
    init: InitSection = Field(default_factory=InitSection, description="initial measures")
    sweep: SweepSection = Field(default_factory=SweepSection, description="widths × seeds")
    train: TrainSection = Field(default_factory=TrainSection, description="gradient descent")
    output: OutputSection = Field(default_factory=OutputSection, description="files written")


# --------------------------------------------------------------------------- helpers


def plane_coordinates(unit: Parameterisation, positions: np.ndarray, masses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each particle as the point ``|c(θ)| v(θ)`` of input space and a sign, where
    ``φ_θ(x) = c(θ) σ(v(θ)·x)``: for ReLU the particle's unit is ``±relu(u·x)`` with this u,
    the 2-homogeneous representative Chizat & Bach draw (for ``lifted``, ``u = |α| w``).
    The sign is that of the particle's output weight times its mass. ``positions`` may
    carry leading axes (e.g. saved times): (..., m, D) with masses (m,)."""
    pos = np.asarray(positions)
    flat = pos.reshape(-1, pos.shape[-1])
    c = np.broadcast_to(np.asarray(unit.output_weight(flat)), flat.shape[:1]).reshape(pos.shape[:-1])
    v = np.asarray(unit.direction(flat)).reshape(*pos.shape[:-1], -1)
    return np.abs(c)[..., None] * v, np.where(c * np.asarray(masses) < 0, -1.0, 1.0)


def _initial_batch(cfg: Config, unit_name: str, widths: list[int], d: int, dtype) -> Measure:
    """The initial measures of every (width, seed) of a group, padded to one batch (zero-mass atoms)."""
    mus = [
        initial_measure(
            jax.random.fold_in(jax.random.PRNGKey(seed), m),
            unit_name,
            m,
            d,
            distribution=cfg.init.distribution,
            scale=cfg.init.scale,
            beta=cfg.init.beta,
            output=cfg.init.output,
            signs=cfg.init.signs,
            dtype=dtype,
        )
        for m in widths
        for seed in cfg.sweep.seeds
    ]
    return stack_padded(mus)


def width_groups(cfg: Config, n: int) -> list[list[int]]:
    """Widths run as one vmapped program each group: by default, consecutive widths (in the
    config's order) padded to the largest of their group while the padded batch stays small
    (R · width · n ≤ 2¹⁷ units: there a step costs about the same whatever its width, so
    padding wastes little, and each group saves a compilation and a step's fixed cost);
    ``sweep.one_program`` True: all in one group, False: one per width."""
    widths, R = cfg.sweep.widths, len(cfg.sweep.seeds)
    if cfg.sweep.one_program is True:
        return [list(widths)]
    if cfg.sweep.one_program is False:
        return [[m] for m in widths]
    groups: list[list[int]] = []
    for m in widths:
        if groups and (len(groups[-1]) + 1) * R * max(*groups[-1], m) * n <= 2**17:
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


@jax.jit
def _final_diagnostics(objective: Objective, mus: Measure):
    def one(mu):
        F, v = objective.value_and_velocity(mu)
        return F, jnp.sqrt(jnp.sum(jnp.abs(mu.masses) * jnp.sum(v * v, axis=-1)))

    return jax.vmap(one)(mus)


def _group_key(param: str, m: int) -> str:
    return f"{param}/m{m}"


def snapshot_steps(num_steps: int, count: int) -> np.ndarray:
    """``count`` distinct saved steps (fewer only when ``num_steps + 1 < count``): step 0, then
    log-spaced integers up to ``num_steps``, so that the early descent and the late convergence
    are both in the paths figure and the animation (consecutive ratios constant where the
    integers allow it; the first few steps are 1, 2, 3, … when ``count`` is large against log K)."""
    count = min(count, num_steps + 1)
    if count <= 2:
        return np.asarray([0, num_steps])
    # take more log-spaced points until rounding leaves ``count - 1`` distinct positive steps
    points = count - 1
    while True:
        steps = np.unique(np.geomspace(1, num_steps, points).round().astype(int))
        if len(steps) >= count - 1 or points > 64 * count:
            break
        points += 1
    extra = len(steps) - (count - 1)
    if extra > 0:  # the first steps are consecutive integers 1, 2, 3, …: drop from those (step 1 stays)
        steps = np.delete(steps, np.arange(1, 1 + extra))
    return np.concatenate([[0], steps])


# --------------------------------------------------------------------------- resources


def estimate(cfg: Config) -> list[Need]:
    """Memory of the largest groups of runs that train at once (:func:`group_workers` of them;
    a group: one parameterisation, consecutive widths), by item.

    Particles: state, previous state, velocity, trial step and the loop's copies (≈ 12
    arrays R × m × D); unit outputs: ≈ 4 arrays n × m per run, chunked beyond 2²⁰
    (:mod:`wgflow.chunking`); snapshots: each kept state, saved, recorded and gathered
    (× 3); per-step arrays: the schedule (K) and a segment's records (R × segment × ≈ 6).
    """
    from wgflow.units import get_parameterisation

    item = 8 if cfg.model.dtype == "float64" else 4
    n, K = cfg.data.n, cfg.train.num_steps
    d_in = cfg.data.d + int(cfg.data.bias)
    D = max(get_parameterisation(p).dim(d_in) for p in cfg.model.parameterisations)
    S = len(cfg.sweep.seeds)
    sizes = [(len(ws) * S, max(ws)) for _ in cfg.model.parameterisations for ws in width_groups(cfg, n)]
    # as group_workers, read from the launcher's environment: the estimate runs before JAX starts
    workers = 1 if processes_in_job() > 1 else requested_workers(cfg, len(sizes))
    at_once = sorted(sizes, key=lambda rm: rm[0] * rm[1], reverse=True)[:workers]
    R, M = at_once[0]
    runs = sum(r for r, _ in at_once)  # Σ R over the groups at once, Σ R·m, Σ R·min(n·m, 2²⁰)
    atoms = sum(r * m for r, m in at_once)
    units = sum(r * min(n * m, 2**20) for r, m in at_once)
    what = f"{R} runs × {M} particles" if len(at_once) == 1 else f"{len(at_once)} groups at once ({runs} runs, {atoms} particles)"
    big_d = d_in > M
    particle_field = "data.d" if big_d else "sweep.widths"
    particle_fix = "use a smaller data.d" if big_d else "use smaller sweep.widths or fewer sweep.seeds (or model.dtype = 'float32')"
    if len(at_once) > 1:
        particle_fix += ", or train fewer groups at once (sweep.workers)"
    snaps = min(cfg.output.snapshots, K + 1)
    points = min(cfg.output.metrics_points, K + 1)
    many_snaps = snaps > 1000  # else the particles make the snapshots large
    return [
        Need(f"{what} in R^{D}", 12.0 * atoms * D * item, particle_field, particle_fix),
        Need(f"unit outputs ({n} data points × {M} particles × {runs} runs)", 4.0 * units * item, "data.n", "use fewer data points (data.n)"),
        Need(
            f"{snaps} snapshots of {what}",
            3.0 * snaps * atoms * D * item,
            "output.snapshots" if many_snaps else particle_field,
            "keep fewer states (output.snapshots)" if many_snaps else particle_fix + ", or keep fewer states (output.snapshots)",
        ),
        Need(
            f"{K} steps",
            3.0 * K * 8 * len(at_once) + 6.0 * runs * min(K, cfg.output.checkpoint_every) * 8 + 4.0 * runs * points * 8,
            "train.num_steps",
            "use fewer train.num_steps, or a smaller output.checkpoint_every",
        ),
        Need(f"the data ({n} × {d_in})", 4.0 * n * d_in * item, "data.n", "use fewer data points (data.n)"),
    ]


def work(cfg: Config) -> float:
    """Unit evaluations φ_θ(x_j) of the whole run (forward and backward count once): Σ over
    groups of runs × padded width × n × steps. A rough clock: wall time ∝ this."""
    n, K = cfg.data.n, cfg.train.num_steps
    S = len(cfg.sweep.seeds)
    per_param = sum(len(ws) * S * max(ws) for ws in width_groups(cfg, n)) * n * K
    return float(per_param * len(cfg.model.parameterisations))


# --------------------------------------------------------------------------- run


def outputs(cfg) -> list[str]:
    """The files a run writes beside results.npz, summary.json and metrics.csv (checked up front
    against what a folder already holds)."""
    return figure_files("paths", "objective", "final_vs_width") + (["particles.gif"] if cfg.output.animation else [])


def run(cfg: Config, rd: RunDir, *, resume: bool = False, progress: bool | None = None) -> dict:
    ds = cfg.data.make(jnp.float64 if cfg.model.dtype == "float64" else jnp.float32)
    results, optima, seconds, messages = train(cfg, rd, ds, resume=resume, progress=progress)
    rd.save_npz("results.npz", **results)
    summary = summarise(cfg, results, optima, seconds, messages)
    rd.write_json("summary.json", summary)
    rd.write_text("metrics.csv", metrics_csv(cfg, results))
    draw(cfg, rd, results, summary)
    return summary


def checkpoint_fingerprint(cfg) -> str:
    """What a checkpoint of ``cfg`` must match to be resumed: the resolved config and, for a
    user's data file (``data.path``), its bytes (a resumed run must see the same numbers, not
    only the same path)."""
    fp = fingerprint(dump_toml(cfg))
    path = getattr(getattr(cfg, "data", None), "path", None)
    if path:
        fp = fingerprint(fp + (file_digest(Path(path)) or "unreadable"))
    return fp


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def requested_workers(cfg, groups: int) -> int:
    """Groups to train at once on one CPU process: ``sweep.workers`` (at most ``groups``), by
    default two per CPU core, at most one per group. A group alternates its compiled blocks of
    steps with host work (compiling, saving, checkpointing), so two per core keep the cores
    busy: the main job on 2 cores took 94 s with 2 at once and 76 s with 4 (docs/performance.md)."""
    return max(1, min(cfg.sweep.workers or 2 * usable_cores(), groups))


def group_workers(cfg, groups: int) -> int:
    """How many groups of runs :func:`train` trains at once: :func:`requested_workers`, but 1
    under several processes (their sweeps' collectives must run in the same order on every
    process) and off the CPU (one device runs one program at a time)."""
    if jax.process_count() > 1 or jax.default_backend() != "cpu":
        return 1
    return requested_workers(cfg, groups)


def train(cfg, rd: RunDir, ds, *, resume: bool = False, progress: bool | None = None) -> tuple[dict, dict, float, dict]:
    """Every (parameterisation, width, seed) of ``cfg`` trained on the dataset ``ds`` (checkpointed in ``rd``).

    Returns (results, optima, seconds, messages): the arrays of results.npz — the training
    data ``X``, ``y`` included, and each run's final measure (``{param}/m{m}/final_positions``,
    ``/masses``) — the certified optimum per parameterisation (or None), the wall time
    and each run's message. ``cfg`` needs the sections model, init, sweep, train, output.
    The groups of runs (:func:`width_groups`, per parameterisation) train :func:`group_workers`
    at a time in threads (:func:`~wgflow.experiments.rundir.run_concurrently`); each group's
    numbers are those of a run alone.
    """
    dtype = jnp.float64 if cfg.model.dtype == "float64" else jnp.float32
    etas = cfg.train.etas()
    K = len(etas)
    t = schedule_times(etas)
    rec = recorded_steps(K, cfg.output.metrics_points)
    snaps = snapshot_steps(K, cfg.output.snapshots)
    fp = checkpoint_fingerprint(cfg)
    monitor = cfg.train.make_monitor()
    groups = [(p, ws) for p in cfg.model.parameterisations for ws in width_groups(cfg, ds.n)]
    results: dict[str, np.ndarray] = {"times": t[rec], "steps": rec, "snapshot_times": t[snaps], "seeds": np.asarray(cfg.sweep.seeds)}
    results["X"], results["y"] = np.asarray(ds.X), np.asarray(ds.y)  # the training data, as the objective saw it
    start = time.perf_counter()
    n_seeds = len(cfg.sweep.seeds)
    objectives = {
        p: make_objective(ds.X, ds.y, p, cfg.model.activation, cfg.model.loss, cfg.model.lam, cfg.model.reduction) for p in cfg.model.parameterisations
    }
    optima = {p: optimum_support.global_minimum(objectives[p]) for p in cfg.model.parameterisations}
    release_compiled_programs()  # here, not in the threads: no program is dropped while another runs
    with Progress(len(groups) * K, cfg.name, enabled=progress) as bar:
        done = [0] * len(groups)  # steps done by each group, for the bar
        shown, bar_lock = [0], threading.Lock()
        running: dict[int, str] = {}

        def train_group(gi: int, param: str, widths: list[int]) -> tuple[dict, dict]:
            label = f"{param} m={','.join(map(str, widths))}"
            running[gi] = label
            objective = objectives[param]
            mus = _initial_batch(cfg, param, widths, objective.d, dtype)
            state0 = {"loop": initial_loop_state(ExplicitGD(), objective, mus, monitor=monitor, batched=True)}
            said: dict[int, str] = {}  # each run's message from the segment that saw its failure

            def advance(state, k0, k1):
                segment_snaps = snaps[(snaps > k0) & (snaps <= k1)]

                def cb(k, _t, F):
                    done[gi] = k
                    labels = dict(running)  # a copy: other threads add and remove their groups
                    with bar_lock:
                        shown[0] = max(shown[0], sum(done))
                        bar.update(shown[0], f"F median {np.nanmedian(F):.4g}", group=" + ".join(labels[i] for i in sorted(labels)))

                sol = explicit_gd_sweep(
                    objective,
                    state["loop"],
                    lambda k: etas[k0 + k],
                    k1 - k0,
                    save=SaveAt(steps=(segment_snaps - k0).tolist()),
                    monitor=monitor,
                    block_size=1000,
                    callback=cb,
                    pause=interrupt_requested,
                )
                # a signal ends the segment at the block it reached (paused: every run's code unchanged)
                k_end = k0 + int(np.max(sol.stop_step)) if sol.paused else k1
                local_rec = rec[(rec >= k0) & (rec < k_end)]
                local_snap = segment_snaps[segment_snaps <= k_end]
                for r, (code, message) in enumerate(zip(sol.codes, sol.message)):
                    if code != 0 and r not in said:
                        said[r] = message
                # the saved state at each snapshot step; once every run has stopped the loop saves no
                # more, and a run's state after its stop is its last one: the last save before it
                at = [int(np.searchsorted(sol.save_steps, s - k0, side="right")) - 1 for s in local_snap]
                out = {
                    "objective": sol.objective[:, local_rec - k0],
                    "speed": sol.stats["speed"][:, local_rec - k0],
                    "snap_positions": np.asarray(sol.saved.positions)[:, at].swapaxes(0, 1) if len(at) else np.zeros((0, *mus.positions.shape)),
                }
                return {"loop": sol.loop}, out, k_end

            try:
                state, records = run_segments(
                    rd,
                    f"{param}-m{'-'.join(map(str, widths))}",
                    K,
                    cfg.output.checkpoint_every,
                    state0,
                    advance,
                    resume=resume,
                    fingerprint=fp,
                    concat_axis={"objective": 1, "speed": 1},
                )
            finally:
                running.pop(gi, None)
            done[gi] = K
            loop = state["loop"]
            final = Measure(jnp.asarray(loop.state.positions), jnp.asarray(loop.state.masses))
            F_end, speed_end = (np.asarray(a) for a in _final_diagnostics(objective, final))
            stop_step = np.asarray(loop.step)
            codes = np.asarray(loop.result)
            kept = stop_step >= K
            objective_all = np.concatenate([records["objective"], np.where(kept, F_end, np.nan)[:, None]], axis=1)
            speed_all = np.concatenate([records["speed"], np.where(kept, speed_end, np.nan)[:, None]], axis=1)
            snaps_all = np.concatenate([np.asarray(mus.positions)[None], records["snap_positions"]], axis=0)
            # the last values of a run that stopped early: F and ‖v‖ at its last state
            last_F = F_end
            out: dict[str, np.ndarray] = {}
            group_messages: dict[str, list[str]] = {}
            for i, m in enumerate(widths):  # split the group back into widths (and drop the padding)
                rows = slice(i * n_seeds, (i + 1) * n_seeds)
                key = _group_key(param, m)
                out[f"{key}/objective"] = objective_all[rows]
                out[f"{key}/speed"] = speed_all[rows]
                out[f"{key}/snapshots"] = snaps_all[:, rows, :m]
                out[f"{key}/masses"] = np.asarray(final.masses)[rows, :m]
                out[f"{key}/final_positions"] = np.asarray(final.positions)[rows, :m]
                out[f"{key}/stop_step"] = stop_step[rows]
                out[f"{key}/result"] = codes[rows]
                out[f"{key}/last_objective"] = last_F[rows]
                out[f"{key}/last_speed"] = speed_end[rows]
                out[f"{key}/stop_time"] = t[np.minimum(stop_step[rows], K)]
                out[f"{key}/retakes"] = np.asarray(loop.retakes)[rows]
                out[f"{key}/max_substeps"] = 2 ** np.asarray(loop.max_level)[rows]
                out[f"{key}/events"] = np.asarray(loop.events)[rows]
                out[f"{key}/max_rise"] = np.asarray(loop.max_rise)[rows]
                group_messages[key] = [
                    f"{param}, m = {m}, seed {seed}: " + said[i * n_seeds + r]
                    if i * n_seeds + r in said
                    else _run_message(param, m, seed, loop, i * n_seeds + r, K, t, monitor)
                    for r, seed in enumerate(cfg.sweep.seeds)
                ]
            return out, group_messages

        tasks = [functools.partial(train_group, gi, param, widths) for gi, (param, widths) in enumerate(groups)]
        messages: dict[str, list[str]] = {}
        costs = [len(ws) * n_seeds * max(ws) for _, ws in groups]  # the padded batch's atoms: a step's cost
        for out, group_messages in run_concurrently(tasks, group_workers(cfg, len(groups)), costs):
            results.update(out)
            messages.update(group_messages)
    seconds = time.perf_counter() - start
    for param, opt in optima.items():
        if opt is not None:
            results[f"{param}/global_min"] = np.asarray(opt.value)
    return results, optima, seconds, messages


def _run_message(param: str, m: int, seed: int, loop, r: int, K: int, t: np.ndarray, monitor: Monitor) -> str:
    """One run's message, as the solve loop words it, for the summary."""
    from wgflow.flows.solve import _host_loop, _message

    host = _host_loop(loop)
    host["time"] = np.asarray(t[np.minimum(np.asarray(loop.step), K)])
    return f"{param}, m = {m}, seed {seed}: " + _message("explicit GD", ExplicitGD(), None, host, r, K, monitor, None)


def _median(values: list[float]) -> float | None:
    finite = np.asarray(values, float)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else None


def summarise(cfg: Config, results: dict, optima: dict, seconds: float, messages: dict | None = None) -> dict:
    """Per run: final F and ‖v‖, result code, backtracking, excess and success; per (parameterisation,
    width): counts of each result, of backtracked runs, and the success fraction."""
    runs, table = [], []
    K = cfg.train.num_steps
    for param in cfg.model.parameterisations:
        opt = optima.get(param)
        for m in cfg.sweep.widths:
            key = _group_key(param, m)
            F = results[f"{key}/last_objective"]
            speed = results[f"{key}/last_speed"]
            codes = results[f"{key}/result"]
            retakes = results[f"{key}/retakes"]
            group = []
            for r, seed in enumerate(cfg.sweep.seeds):
                status = result_name(codes[r])
                row = {
                    "parameterisation": param,
                    "width": m,
                    "seed": seed,
                    "status": status,
                    "final_objective": F[r],
                    "final_grad_norm": speed[r],
                    "stop_step": int(results[f"{key}/stop_step"][r]),
                    "stop_time": float(results[f"{key}/stop_time"][r]),
                    "converged": bool(status == "successful" and speed[r] < cfg.train.grad_tol),
                    "retaken_steps": int(retakes[r]),
                    "max_substeps": int(results[f"{key}/max_substeps"][r]),
                    "flagged_steps": int(results[f"{key}/events"][r]),
                    "max_relative_rise": float(results[f"{key}/max_rise"][r]),
                }
                if messages is not None:
                    row["message"] = messages[key][r]
                if opt is not None:
                    ex, rel = optimum_support.excess(F[r], opt)
                    ok = status == "successful" and bool(np.isfinite(rel) and rel < cfg.train.success_tol)
                    row.update(excess=ex, relative_excess=rel, success=ok)
                group.append(row)
            runs.extend(group)
            # medians over the stable runs only: a stopped run's last objective is from an earlier time
            stable = [r for r in group if r["status"] == "successful"]
            Ff = np.array([r["final_objective"] for r in stable], float)
            entry = {
                "parameterisation": param,
                "width": m,
                "seeds": len(group),
                "successful": sum(r["status"] == "successful" for r in group),
                "unstable": sum(r["status"] == "unstable" for r in group),
                "diverged": sum(r["status"] == "diverged" for r in group),
                "backtracked": sum(r["retaken_steps"] > 0 for r in group),
                "converged": sum(r["converged"] for r in group),
                "median_final_objective": _median(Ff),
                "min_final_objective": float(np.nanmin(Ff)) if np.isfinite(Ff).any() else None,
            }
            if opt is not None:
                entry["success_fraction"] = float(np.mean([r["success"] for r in group]))
                entry["median_excess"] = _median([r["excess"] for r in stable])
                entry["median_relative_excess"] = _median([r["relative_excess"] for r in stable])
            table.append(entry)
    cols = ["parameterisation", "width", "seeds", "successful", "unstable", "diverged", "backtracked", "converged"]
    if any(optima.get(p) for p in cfg.model.parameterisations):
        cols += ["success_fraction", "median_relative_excess"]
    return {
        "experiment": cfg.name,
        "kind": KIND,
        "final_time": float(results["times"][-1]),
        "num_steps": K,
        "seconds": seconds,
        "monitor": {"policy": cfg.train.monitor, "rise_rtol": cfg.train.rise_rtol, "max_growth": cfg.train.max_growth},
        "global_min": {p: (optimum_support.describe(o) if o is not None else None) for p, o in optima.items()},
        "success_tol": cfg.train.success_tol,
        "print_columns": cols,
        "table": table,
        "runs": runs,
    }


def metrics_csv(cfg: Config, results: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["parameterisation", "width", "seed", "step", "time", "objective", "grad_norm"])
    steps, times = results["steps"], results["times"]
    for param in cfg.model.parameterisations:
        for m in cfg.sweep.widths:
            key = _group_key(param, m)
            F, S = results[f"{key}/objective"], results[f"{key}/speed"]
            for r, seed in enumerate(cfg.sweep.seeds):
                for i, (k, tt) in enumerate(zip(steps, times)):
                    w.writerow([param, m, seed, int(k), f"{tt:.10g}", f"{F[r, i]:.12g}", f"{S[r, i]:.6g}"])
    return buf.getvalue()


# --------------------------------------------------------------------------- figures


def draw(cfg: Config, rd: RunDir, results: dict, summary: dict) -> None:
    draw_runs(cfg, rd, results, summary, cfg.data.make().teacher, cfg.data.d + int(cfg.data.bias))


def draw_runs(cfg, rd: RunDir, results: dict, summary: dict, teacher, input_dim: int) -> None:
    """The figures of :func:`train`'s results: paths, objective, final_vs_width, the GIF.
    ``teacher``: a :class:`~wgflow.units.PlainNetwork` whose directions are drawn, or None."""
    from wgflow.units import get_parameterisation

    teacher_dirs = np.asarray(teacher.W)[:, :2] if teacher is not None else None
    teacher_signs = np.sign(np.asarray(teacher.alpha)) if teacher is not None else None
    seed0 = 0
    in_plane = input_dim == 2
    coord = "" if in_plane else " (first two coordinates)"
    panels, gif_panels = [], []
    for param in cfg.model.parameterisations:
        unit = get_parameterisation(param, cfg.model.activation)
        for m in cfg.sweep.widths:
            key = _group_key(param, m)
            snaps = results[f"{key}/snapshots"][:, seed0]
            masses = results[f"{key}/masses"][seed0]
            coords, signs = plane_coordinates(unit, snaps, masses)
            coords, signs = coords[..., :2], signs[-1]
            F_end = results[f"{key}/last_objective"][seed0]
            status = result_name(results[f"{key}/result"][seed0])
            note = "" if status == "successful" else f" ({status})"
            panel = {"paths": coords, "signs": signs, "title": f"{param}, m = {m}: F(μ_T) = {F_end:.3g}{note}"}
            panels.append(panel)
            gif_panels.append({**panel, "title": f"{param}, m = {m}"})
    xl, yl = r"$u_1 = |c(\theta)|\,v_1(\theta)$", r"$u_2 = |c(\theta)|\,v_2(\theta)$"
    fig = plots.particle_paths(
        panels,
        teacher_dirs if in_plane else None,
        teacher_signs,
        xlabel=xl + coord,
        ylabel=yl,
        title=f"{cfg.name}: particle paths (seed {cfg.sweep.seeds[seed0]}); unit of a particle: ±σ(u·x)",
    )
    rd.savefig(fig, "paths")
    plots.close(fig)

    optima = summary["global_min"]
    bands = []
    for param in cfg.model.parameterisations:
        fstar = (optima.get(param) or {}).get("value")
        curves = {}
        for m in cfg.sweep.widths:
            vals = results[f"{_group_key(param, m)}/objective"]
            curves[f"m = {m}"] = (results["times"], np.maximum(vals - fstar, 1e-12 * fstar) if fstar else vals)
        bands.append({"curves": curves, "title": param})
    ylabel = r"excess $F(\mu_t) - F^*$" if any(optima.get(p) for p in cfg.model.parameterisations) else r"objective $F(\mu_t)$"
    fig = plots.objective_bands(
        bands, ylabel=ylabel, logx=True, title=f"{cfg.name}: median (line) and interquartile range (band) over {len(cfg.sweep.seeds)} seeds"
    )
    rd.savefig(fig, "objective")
    plots.close(fig)

    series, failed = {}, {}
    any_opt = any(optima.get(p) for p in cfg.model.parameterisations)
    floor = 1e-12  # the certificate's own precision: a relative excess below it is "at the optimum"
    for param in cfg.model.parameterisations:
        fstar = (optima.get(param) or {}).get("value")
        finals = [results[f"{_group_key(param, m)}/last_objective"] for m in cfg.sweep.widths]
        if any_opt and fstar:
            finals = [np.maximum((v - fstar) / fstar, floor) for v in finals]
        series[param] = (np.asarray(cfg.sweep.widths), finals)
        failed[param] = [results[f"{_group_key(param, m)}/result"] != 0 for m in cfg.sweep.widths]
    fig = plots.final_vs_width(
        series,
        failed=failed,
        ylabel=r"final relative excess $(F(\mu_T) - F^*)/F^*$" if any_opt else r"final objective $F(\mu_T)$",
        title=f"{cfg.name}: at t = {results['times'][-1]:.4g}" + (" (values below 1e-12 drawn at 1e-12)" if any_opt else ""),
        threshold=cfg.train.success_tol if any_opt else None,
        threshold_label=f"success: relative excess < {cfg.train.success_tol:g}",
    )
    rd.savefig(fig, "final_vs_width")
    plots.close(fig)

    if cfg.output.animation and gif_panels:
        data = plots.particles_gif(
            gif_panels,
            results["snapshot_times"],
            teacher_dirs if in_plane else None,
            teacher_signs,
            xlabel=xl + coord,
            ylabel=yl,
            ncols=len(cfg.sweep.widths) if len(cfg.sweep.widths) <= 5 else None,
            title=f"{cfg.name} (seed {cfg.sweep.seeds[seed0]})",
        )
        rd.write_bytes("particles.gif", data)


def report(cfg: Config, rd: RunDir) -> dict:
    results = rd.load_npz("results.npz")
    summary = rd.read_json("summary.json")
    draw(cfg, rd, results, summary)
    return summary
