"""Seed 001's question, "is JKO similar to GD?", measured (docs/jko.md §10).

The two-layer ReLU teacher–student problem in d = 2 (no bias), parameterisation
``split`` (a signed measure as two nonnegative grids), seed 001's loss with weight
decay. One initial density N(0, s² I) on each sign; then

* **GD reference**: explicit particle GD (step ``gd.step_size`` ≪ every τ) started from
  the finest rung's grid density as weighted atoms (a quadrature of the density: the
  same initial measure as that rung, no sampling noise);
* **sampled GD**: explicit GD from ``gd.particles`` particles sampled from the same
  density (pictures; its distance to the reference is the sampling error of m particles);
* **implicit GD** with step τ of each rung (quadrature on a ``gd.implicit_cells`` grid);
* **JKO**: the entropic JKO flow on each rung's grid (cells per axis, τ, ε = ratio·τ),
  with each of the rung's solvers.

Compared at equal mean-field times: the relative L² distance of the outputs on the
data, |F − F_GD|, the Sinkhorn divergence S_b (blur b = ``compare.sinkhorn_blur``)
between the JKO grid measure and the GD reference binned on the same grid (cloud-in-
cell, so that all three Sinkhorn terms use the separable kernel; the binning error
shows as the value at t = 0), and the excess over the certified global optimum F*.
Fitted orders: slopes of log(distance) against log(τ) along the ladder.

Files: ``summary.json`` (``table``: one row per rung and solver with the keys ``tau``,
``blur``, ``grid``, ``solver``, ``distance_to_gd``, ``objective_gap``, ``seconds``, …;
``orders``; ``gd``; ``implicit``), ``metrics.csv``, ``results.npz``, figures
``objective``, ``distance``, ``ladder``, ``densities`` and ``jko_vs_gd.gif``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from typing import Literal

import jax
import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from wgflow import plots
from wgflow.experiments import optimum_support
from wgflow.experiments.config import RunName, Section
from wgflow.experiments.rundir import Progress, RunDir, figure_files
from wgflow.experiments.sections import PLUGINS_HELP, DataSection, PluginList
from wgflow.flows.jko import Dykstra, Linearised, SemiDualNewton, jko
from wgflow.flows.particle import explicit_gd, implicit_gd
from wgflow.flows.solve import Monitor, SaveAt, Solution
from wgflow.grid import GridMeasure, bin_measure, box_grid, initial_grid_density, mass_outside, memory_estimate, sample_from_grid
from wgflow.measure import Measure
from wgflow.metrics import sinkhorn_divergence
from wgflow.objective import make_objective
from wgflow.resources import Need

KIND = "jko_vs_gd"
SIGNS = (1.0, -1.0)
SolverName = Literal["newton", "linearised", "dykstra"]
SOLVERS = {"newton": SemiDualNewton, "linearised": Linearised, "dykstra": Dykstra}


class RungSection(Section):
    """One rung of the ladder: a grid, a step and a blur."""

    cells: int = Field(40, gt=1, description="grid cells per axis (h = 2·half_width / cells)")
    tau: float = Field(0.1, gt=0, description="JKO step τ (mean-field time)")
    blur_over_tau: float = Field(0.2, gt=0, description="ε/τ: the entropic blur ε is this times τ")
    solvers: list[SolverName] = Field(["newton", "linearised"], description="JKO step solvers run on this rung")


class ModelSection(Section):
    lam: float = Field(1e-3, gt=0, description="weight decay λ (V = 2|u| for split)")
    reduction: Literal["sum", "mean"] = Field("mean", description="R = Σ_j (f − y)² ('sum', seed 001) or the mean")


class GridSection(Section):
    half_width: float = Field(2.0, gt=0, description="the grid's box is [−half_width, half_width]² in u")
    init_std: float = Field(0.4, gt=0, description="standard deviation s of the initial density N(0, s² I) of each sign")
    positive_fraction: float = Field(0.5, gt=0, lt=1, description="share of the initial mass on the positive grid")

    @field_validator("init_std")
    @classmethod
    def _inside_the_box(cls, v, info: ValidationInfo):
        L = info.data.get("half_width")
        if L is not None and L / v < 4.5:  # beyond ~1e-5 of the mass outside [−L, L]²
            raise ValueError(f"init_std = {v:g} is too wide for the box [−{L:g}, {L:g}]²: use init_std ≤ {L / 4.5:.3g} or a larger half_width")
        return v


class GDSection(Section):
    step_size: float = Field(1e-3, gt=0, description="explicit GD step η (≪ every τ: the continuous-time reference)")
    particles: int = Field(16_000, ge=2, description="m, particles sampled from the initial density (sampled GD)")
    sample_seed: int = Field(5, description="PRNG seed of the sampled particles")
    implicit: bool = Field(True, description="also run implicit (proximal) GD with each rung's τ")
    implicit_cells: int = Field(40, gt=1, description="implicit GD starts from the quadrature of the density on this grid (cells per axis)")


class CompareSection(Section):
    final_time: float = Field(1.0, gt=0, description="T: every flow runs to this mean-field time")
    snapshots: int = Field(11, gt=1, description="number of equally spaced comparison times in [0, T]")
    sinkhorn_blur: float = Field(0.01, gt=0, description="blur b of the Sinkhorn divergence S_b (squared units of u)")
    sinkhorn_times: int = Field(6, gt=0, description="number of the comparison times (equally spaced, T included) at which S_b is computed")
    sinkhorn_tol: float = Field(1e-4, gt=0, description="marginal (L1) tolerance of the Sinkhorn iterations (1e-4 changes S by ~1e-9 against 1e-6)")


class OutputSection(Section):
    animation: bool = Field(True, description="write jko_vs_gd.gif (finest rung's density beside the sampled particles)")
    density_times: int = Field(4, gt=0, description="number of times shown in the densities figure")


class Config(Section):
    name: RunName = Field("jko-vs-gd", description="experiment name (the default output folder is runs/NAME)")
    kind: Literal["jko_vs_gd"] = Field(KIND, description="experiment kind")
    description: str = Field("", description="one line shown by `wgflow list`")
    plugins: PluginList = Field([], description=PLUGINS_HELP)
    data: DataSection = Field(default_factory=lambda: DataSection(n=30, teacher_width=2, seed=1), description="teacher–student data (ReLU, d = 2, no bias)")
    model: ModelSection = Field(default_factory=ModelSection, description="objective (parameterisation split)")
    grid: GridSection = Field(default_factory=GridSection, description="the box and the initial density")
    ladder: list[RungSection] = Field(
        default_factory=lambda: [
            RungSection(cells=40, tau=0.1, blur_over_tau=0.2, solvers=["newton", "linearised", "dykstra"]),
            RungSection(cells=80, tau=0.05, blur_over_tau=0.1),
            RungSection(cells=160, tau=0.025, blur_over_tau=0.05),
        ],
        description="rungs (grid, τ, ε/τ), coarse to fine",
    )
    gd: GDSection = Field(default_factory=GDSection, description="particle gradient descent")
    compare: CompareSection = Field(default_factory=CompareSection, description="comparison times and distances")
    output: OutputSection = Field(default_factory=OutputSection, description="figures")

    @field_validator("ladder")
    @classmethod
    def _ladder(cls, v):
        if not v:
            raise ValueError("the ladder needs at least one rung")
        return v

    @field_validator("compare")
    @classmethod
    def _steps_divide_the_final_time(cls, v, info: ValidationInfo):
        """Every step must divide T, so that all flows are compared at the same times."""
        T = v.final_time
        steps = [(f"ladder[{i}].tau", r.tau) for i, r in enumerate(info.data.get("ladder") or [])]
        if info.data.get("gd") is not None:
            steps.append(("gd.step_size", info.data["gd"].step_size))
        for field, step in steps:
            k = T / step
            if abs(k - round(k)) > 1e-9 * max(1.0, k):
                raise ValueError(f"{field} = {step:g} does not divide final_time = {T:g}: use a step T/k for an integer k")
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v):
        if v.d != 2 or v.bias or v.activation != "relu":
            raise ValueError("this study is the ReLU problem in d = 2 without bias: set data.d = 2, data.bias = false, data.activation = 'relu'")
        return v


def _relative_distance(f, g, y) -> float:
    """‖f − g‖ / ‖y‖ on the training inputs (relative to the labels: at t = 0 the outputs are ≈ 0)."""
    return float(np.linalg.norm(np.asarray(f) - np.asarray(g)) / max(float(np.linalg.norm(np.asarray(y))), 1e-300))


def _measures(sol: Solution) -> list[Measure]:
    return [sol.saved_at(s) for s in range(len(sol.save_steps))]


def fitted_order(tau: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(τ) (None with < 2 usable points)."""
    pts = [(math.log(t), math.log(v)) for t, v in zip(tau, values) if v is not None and v > 0 and np.isfinite(v)]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def estimate(cfg: Config) -> list[Need]:
    """Memory by item: the largest rung's JKO step (:func:`wgflow.grid.memory_estimate`, with its
    saved masses and binned GD references), the GD reference on the finest grid's atoms and the
    sampled GD (state, unit outputs chunked beyond 2²⁰, saved states), and the per-step arrays."""
    n, item, S = cfg.data.n, 8, cfg.compare.snapshots
    needs = []
    for i, rung in enumerate(cfg.ladder):
        grid = box_grid(-cfg.grid.half_width, cfg.grid.half_width, (rung.cells,) * 2)
        est = memory_estimate(grid, n, 2, np.float64, hessian="dykstra" in rung.solvers, snapshots=S + cfg.compare.sinkhorn_times)
        if est.get("hessian", 0) > est["total"] / 2:
            field, fix = (
                f"ladder[{i}].solvers",
                f"the Dykstra solver keeps an n × n matrix: remove 'dykstra' from ladder[{i}].solvers, or use fewer data points",
            )
        else:
            field, fix = f"ladder[{i}].cells", f"use fewer cells on rung {i} (memory grows like cells² · data.n)"
        needs.append(Need(f"JKO on rung {i} ({rung.cells}² cells)", est["total"], field, fix))
    grids = [needs.pop(needs.index(max(needs, key=lambda nd: nd.nbytes)))] if needs else []  # rungs run one after another
    atoms = 2 * max(r.cells for r in cfg.ladder) ** 2

    def particles(m: int) -> float:
        return (12.0 * m * 3 + 4.0 * min(n * m, 2**20) + 2.0 * S * m * 3) * item

    K = int(round(cfg.compare.final_time / cfg.gd.step_size))
    return grids + [
        Need(f"GD reference ({atoms} atoms)", particles(atoms), f"ladder[{len(cfg.ladder) - 1}].cells", "use fewer cells on the finest rung"),
        Need(f"sampled GD ({cfg.gd.particles} particles)", particles(cfg.gd.particles), "gd.particles", "sample fewer particles (gd.particles)"),
        Need(f"{K} GD steps", 12.0 * K * 8, "gd.step_size", "take a larger gd.step_size or a shorter compare.final_time"),
    ]


def outputs(cfg: Config) -> list[str]:
    """The files a run writes beside results.npz, summary.json and metrics.csv."""
    return figure_files("objective", "distance", "ladder", "densities") + (["jko_vs_gd.gif"] if cfg.output.animation else [])


def run(cfg: Config, rd: RunDir, *, resume: bool = False, progress: bool | None = None) -> dict:
    ds = cfg.data.make()
    obj = make_objective(ds.X, ds.y, "split", "relu", "square", cfg.model.lam, cfg.model.reduction)
    T, L = cfg.compare.final_time, cfg.grid.half_width
    times = np.linspace(0.0, T, cfg.compare.snapshots)
    save = SaveAt(times=times.tolist())
    density = dict(std=cfg.grid.init_std, components=2, positive_fraction=cfg.grid.positive_fraction)
    ladder = sorted(cfg.ladder, key=lambda r: r.cells)
    runs_total = 3 + sum(len(r.solvers) for r in ladder) + (len(ladder) if cfg.gd.implicit else 0)
    start = time.perf_counter()
    results: dict[str, np.ndarray] = {"times": times}
    with Progress(runs_total, cfg.name, enabled=progress) as bar:
        done = 0

        def tick(label):
            nonlocal done
            done += 1
            bar.update(done, label)

        optimum = optimum_support.global_minimum(obj)
        F_star = None if optimum is None else float(optimum.value)
        tick("global optimum")

        fine = box_grid(-L, L, (ladder[-1].cells,) * 2)
        p_fine = initial_grid_density(fine, "gaussian", **density)
        K = int(round(T / cfg.gd.step_size))
        gd = explicit_gd(obj, GridMeasure(fine, p_fine, SIGNS).to_measure(), cfg.gd.step_size, K, save=save)
        gd_mus = _measures(gd)
        gd_out = [np.asarray(obj.outputs(mu)) for mu in gd_mus]
        gd_F = [float(obj.value(mu)) for mu in gd_mus]
        results.update({"gd/times": gd.times, "gd/objective": gd.objective, "gd/save_times": gd.save_times})
        tick("GD reference")

        sampled0 = sample_from_grid(jax.random.PRNGKey(cfg.gd.sample_seed), fine, p_fine, cfg.gd.particles, signs=SIGNS)
        gs = explicit_gd(obj, sampled0, cfg.gd.step_size, K, save=save)
        gs_mus = _measures(gs)
        sampled_dist = [_relative_distance(obj.outputs(mu), f, ds.y) for mu, f in zip(gs_mus, gd_out)]
        results.update({"sampled/objective": gs.objective, "sampled/output_distance": np.array(sampled_dist)})
        tick("sampled GD")

        implicit_rows = []
        if cfg.gd.implicit:
            coarse = box_grid(-L, L, (cfg.gd.implicit_cells,) * 2)
            q0 = GridMeasure(coarse, initial_grid_density(coarse, "gaussian", **density), SIGNS).to_measure()
            for rung in ladder:
                k_steps = int(round(T / rung.tau))
                tr = implicit_gd(obj, q0, rung.tau, k_steps, save=save, monitor=Monitor(policy="warn"))
                f_T = np.asarray(obj.outputs(_measures(tr)[-1]))
                results[f"implicit/{rung.tau:g}/times"] = tr.times
                results[f"implicit/{rung.tau:g}/objective"] = tr.objective
                implicit_rows.append(
                    {
                        "tau": rung.tau,
                        "status": tr.status,
                        "final_objective": tr.final_objective,
                        "output_distance": _relative_distance(f_T, gd_out[-1], ds.y),
                        "objective_gap": abs(tr.final_objective - gd_F[-1]),
                        "excess": None if F_star is None else tr.final_objective - F_star,
                        "seconds": tr.seconds,
                    }
                )
                tick(f"implicit GD τ = {rung.tau:g}")

        # every flow saves at the same times (each step divides T); S_b at a few of them
        n_snap = len(gd_mus)
        with_S = set(np.linspace(0, n_snap - 1, min(cfg.compare.sinkhorn_times, n_snap)).round().astype(int).tolist())
        table, pictures = [], None
        for i, rung in enumerate(ladder):
            grid = box_grid(-L, L, (rung.cells,) * 2)
            p0 = initial_grid_density(grid, "gaussian", **density)
            blur = rung.blur_over_tau * rung.tau
            k_steps = int(round(T / rung.tau))
            # GD atoms that left the box go to its boundary (the fraction is reported)
            gd_binned = {s: GridMeasure(grid, bin_measure(grid, gd_mus[s], SIGNS, field="gd", outside="clip"), SIGNS) for s in with_S}
            outside = max(mass_outside(grid, mu) for mu in gd_mus)
            for name in rung.solvers:
                # inner failures are recorded (the row's status) and the run goes on
                traj = jko(
                    obj,
                    p0,
                    rung.tau,
                    k_steps,
                    grid=grid,
                    blur=blur,
                    solver=SOLVERS[name](),
                    monitor=Monitor(policy="warn"),
                    save=SaveAt(times=save.times, fn=lambda t, state, problem: state.masses),
                )
                S, out_d, gap, sk_its, sk_ok = [], [], [], 0, True
                for s, masses in enumerate(traj.saved):
                    mu = GridMeasure(grid, masses, SIGNS).to_measure()
                    out_d.append(_relative_distance(obj.outputs(mu), gd_out[s], ds.y))
                    gap.append(abs(float(obj.value(mu)) - gd_F[s]))
                    if s in with_S:
                        d = sinkhorn_divergence(GridMeasure(grid, masses, SIGNS), gd_binned[s], cfg.compare.sinkhorn_blur, tol=cfg.compare.sinkhorn_tol)
                        S.append(d.value)
                        sk_its, sk_ok = max(sk_its, d.iterations), sk_ok and d.converged
                    else:
                        S.append(np.nan)
                key = f"jko/{i}/{name}"
                results.update(
                    {
                        f"{key}/times": traj.times,
                        f"{key}/objective": traj.objective,
                        f"{key}/sinkhorn": np.array(S),
                        f"{key}/output_distance": np.array(out_d),
                        f"{key}/objective_gap": np.array(gap),
                        f"{key}/save_times": traj.save_times,
                    }
                )
                diag = traj.stats
                table.append(
                    {
                        "tau": rung.tau,
                        "blur": blur,
                        "blur_over_tau": rung.blur_over_tau,
                        "grid": rung.cells,
                        "h": 2 * L / rung.cells,
                        "points": 2 * rung.cells**2,
                        "solver": name,
                        "distance_to_gd": S[-1],
                        "distance_at_start": S[0],
                        "output_distance": out_d[-1],
                        "objective_gap": gap[-1],
                        "final_objective": traj.final_objective,
                        "excess": None if F_star is None else traj.final_objective - F_star,
                        "seconds": traj.seconds,
                        "status": traj.status,
                        "max_kkt": float(np.max(diag["kkt"])),
                        "mean_iterations": float(np.mean(diag["iterations"])),
                        "max_mass_error": float(np.max(diag["mass_error"])),
                        "gd_mass_outside_box": outside,
                        "sinkhorn_iterations": sk_its,
                        "sinkhorn_converged": sk_ok,
                    }
                )
                if i == len(ladder) - 1 and pictures is None:
                    pictures = (grid, np.asarray(traj.saved), np.asarray(traj.save_times))
                tick(f"JKO {rung.cells}², τ = {rung.tau:g}, {name}")
        if pictures is not None:
            g, snaps, st = pictures
            results.update({"pictures/masses": snaps, "pictures/save_times": st, "pictures/cells": np.array(g.shapes[0])})
        results.update(
            {
                "sampled/positions": np.stack([np.asarray(mu.positions) for mu in gs_mus]),
                "sampled/masses": np.asarray(gs_mus[0].masses),
                "teacher/W": np.asarray(ds.teacher.W),
                "teacher/alpha": np.asarray(ds.teacher.alpha),
            }
        )

    orders = {}
    for name in SOLVERS:
        rows = [r for r in table if r["solver"] == name]
        if len(rows) >= 2:
            taus = [r["tau"] for r in rows]
            orders[name] = {k: fitted_order(taus, [r[k] for r in rows]) for k in ("distance_to_gd", "output_distance", "objective_gap")}
    if len(implicit_rows) >= 2:
        orders["implicit_gd"] = {
            k: fitted_order([r["tau"] for r in implicit_rows], [r[k] for r in implicit_rows]) for k in ("output_distance", "objective_gap")
        }
    summary = {
        "experiment": cfg.name,
        "kind": KIND,
        "final_time": T,
        "parameterisation": "split",
        "sinkhorn_blur": cfg.compare.sinkhorn_blur,
        "global_min": {"split": None if optimum is None else optimum_support.describe(optimum)},
        "print_columns": ["grid", "tau", "blur", "solver", "distance_to_gd", "output_distance", "objective_gap", "excess", "status", "seconds"],
        "gd": {
            "step_size": cfg.gd.step_size,
            "start": f"quadrature of the initial density on the {ladder[-1].cells}² grid",
            "final_objective": gd.final_objective,
            "excess": None if F_star is None else gd.final_objective - F_star,
            "seconds": gd.seconds,
            "status": gd.status,
            "message": gd.message,
            "sampled_particles": cfg.gd.particles,
            "sampled_status": gd.status if gs is None else gs.status,
            "sampled_output_distance": sampled_dist[-1],
            "sampled_final_objective": gs.final_objective,
        },
        "implicit": implicit_rows,
        "table": table,
        "orders": orders,
        "wall_seconds": time.perf_counter() - start,
    }
    rd.save_npz("results.npz", **results)
    rd.write_json("summary.json", summary)
    rd.write_text("metrics.csv", metrics_csv(results))
    draw(cfg, rd, results, summary)
    return summary


def metrics_csv(results: dict) -> str:
    """Long format: flow, time, objective (every step), and at the comparison times the distances."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["flow", "time", "objective", "sinkhorn_to_gd", "output_distance_to_gd", "objective_gap_to_gd"])
    for t, F in zip(results["gd/times"], results["gd/objective"]):
        w.writerow(["gd", f"{t:.10g}", f"{F:.12g}", "", "", ""])
    for key in sorted(k for k in results if k.startswith("jko/") and k.endswith("/objective")):
        base = key[: -len("/objective")]
        marks = {round(float(t), 9): s for s, t in enumerate(results[f"{base}/save_times"])}
        for t, F in zip(results[f"{base}/times"], results[key]):
            s = marks.get(round(float(t), 9))
            extra = (
                ["", "", ""]
                if s is None
                else [f"{results[f'{base}/sinkhorn'][s]:.6g}", f"{results[f'{base}/output_distance'][s]:.6g}", f"{results[f'{base}/objective_gap'][s]:.6g}"]
            )
            w.writerow([base, f"{t:.10g}", f"{F:.12g}", *extra])
    return buf.getvalue()


def _rung_label(cfg: Config, i: int, name: str) -> str:
    r = sorted(cfg.ladder, key=lambda r: r.cells)[i]
    return f"JKO {name}, {r.cells}², τ={r.tau:g}, ε/τ={r.blur_over_tau:g}"


def draw(cfg: Config, rd: RunDir, results: dict, summary: dict) -> None:
    ladder = sorted(cfg.ladder, key=lambda r: r.cells)
    gmin = (summary.get("global_min") or {}).get("split")
    F_star = None if gmin is None else gmin["value"]
    shift = (lambda F: np.maximum(np.asarray(F) - F_star, 1e-16)) if F_star is not None else (lambda F: np.asarray(F))
    ylabel = r"excess $F(\mu_t) - F^\star$" if F_star is not None else r"objective $F(\mu_t)$"
    colors = plots.ordered_colors(len(ladder), top=0.85)
    dashes = {"newton": "-", "linearised": "--", "dykstra": ":"}
    curves = {"GD (reference)": (results["gd/times"], shift(results["gd/objective"]))}
    styles = {"GD (reference)": {"color": "k", "lw": 3, "alpha": 0.35}}
    curves[f"GD, m = {cfg.gd.particles} sampled"] = (results["gd/times"], shift(results["sampled/objective"]))
    styles[f"GD, m = {cfg.gd.particles} sampled"] = {"color": "0.5", "lw": 1}
    for i, r in enumerate(ladder):
        key = f"implicit/{r.tau:g}/objective"
        if key in results:
            curves[f"implicit GD, τ={r.tau:g}"] = (results[f"implicit/{r.tau:g}/times"], shift(results[key]))
            styles[f"implicit GD, τ={r.tau:g}"] = {"color": colors[i], "ls": "-.", "lw": 1, "marker": "x", "ms": 3}
        for name in r.solvers:
            base = f"jko/{i}/{name}"
            if f"{base}/objective" in results:
                label = _rung_label(cfg, i, name)
                curves[label] = (results[f"{base}/times"], shift(results[f"{base}/objective"]))
                styles[label] = {"color": colors[i], "ls": dashes[name]}
    fig = plots.lines(curves, ylabel=ylabel, title=f"{cfg.name}: objective (F* = {F_star:.6g})" if F_star is not None else cfg.name, styles=styles)
    rd.savefig(fig, "objective")
    plots.close(fig)

    b = cfg.compare.sinkhorn_blur
    S, D = {}, {}

    def after_start(t, v):  # t = 0 is where every flow starts from the same measure: a distance at round-off, off a log axis
        t, v = np.asarray(t, float), np.asarray(v, float)
        return t[t > 0], v[t > 0]

    for i, r in enumerate(ladder):
        for name in r.solvers:
            base = f"jko/{i}/{name}"
            if f"{base}/sinkhorn" in results:
                label = _rung_label(cfg, i, name)
                S[label] = after_start(results[f"{base}/save_times"], results[f"{base}/sinkhorn"])
                D[label] = after_start(results[f"{base}/save_times"], results[f"{base}/output_distance"])
                styles[label] = {"color": colors[i], "ls": dashes[name], "marker": "o", "ms": 3}
    D[f"GD, m = {cfg.gd.particles} sampled"] = after_start(results["gd/save_times"], results["sampled/output_distance"])
    fig = plots.panels(
        [
            {
                "ylabel": rf"Sinkhorn divergence $S_{{{b:g}}}(\mu^{{JKO}}_t, \mu^{{GD}}_t)$ (squared units of $u$)",
                "curves": S,
                "title": "measure distance (GD binned on each grid)",
            },
            {"ylabel": r"$\|f^{JKO}_t - f^{GD}_t\|_2 / \|y\|_2$ on the data", "curves": D, "title": "output distance"},
        ],
        styles=styles,
        title=f"{cfg.name}: distance to the GD reference over time (t > 0)",
    )
    rd.savefig(fig, "distance")
    plots.close(fig)

    table = summary["table"]
    orders = summary.get("orders", {})
    panel_defs = [
        ("distance_to_gd", rf"$S_{{{b:g}}}$ to GD at t = T"),
        ("output_distance", r"$\|f^{JKO}_T - f^{GD}_T\|_2 / \|y\|_2$"),
        ("objective_gap", r"$|F^{JKO}(T) - F^{GD}(T)|$"),
    ]
    panel_list = []
    for key, yl in panel_defs:
        cv = {}
        for name in SOLVERS:
            rows = [r for r in table if r["solver"] == name]
            if rows:
                order = orders.get(name, {}).get(key)
                label = f"JKO {name}" + (f" (order {order:.2f})" if order is not None else "")
                cv[label] = ([r["tau"] for r in rows], [r[key] for r in rows])
                styles[label] = {"ls": dashes[name], "marker": "o"}
        imp = summary.get("implicit") or []
        if key != "distance_to_gd" and imp:
            order = orders.get("implicit_gd", {}).get(key)
            label = "implicit GD" + (f" (order {order:.2f})" if order is not None else "")
            cv[label] = ([r["tau"] for r in imp], [r[key] for r in imp])
            styles[label] = {"color": "k", "ls": "-.", "marker": "x"}
        panel_list.append({"ylabel": yl, "curves": cv})
    fig = plots.panels(
        panel_list,
        xlabel=r"JKO step $\tau$ (h, ε/τ shrink with it)",
        logx=True,
        styles=styles,
        title=f"{cfg.name}: the ladder at t = T = {cfg.compare.final_time:g}",
    )
    rd.savefig(fig, "ladder")
    plots.close(fig)

    if "pictures/masses" in results:
        _draw_densities(cfg, rd, results)


def _draw_densities(cfg: Config, rd: RunDir, results: dict) -> None:
    L = cfg.grid.half_width
    n1, n2 = (int(c) for c in results["pictures/cells"])
    masses, st = results["pictures/masses"], results["pictures/save_times"]
    area = (2 * L / n1) * (2 * L / n2)
    dens = masses.reshape(len(masses), 2, n1, n2) / area
    pos, sm = results["sampled/positions"], results["sampled/masses"]
    W, alpha = results["teacher/W"], results["teacher/alpha"]
    finest = sorted(cfg.ladder, key=lambda r: r.cells)[-1]
    rows = [
        {
            "positive": dens[s, 0],
            "negative": dens[s, 1],
            "particles": pos[s],
            "signs": np.sign(sm),
            "time": float(st[s]),
            "grid_label": f"JKO {n1}², τ={finest.tau:g}",
            "particle_label": f"GD, m = {len(sm)}",
        }
        for s in range(len(st))
    ]
    extent = (-L, L, -L, L)
    pick = np.unique(np.linspace(0, len(rows) - 1, min(cfg.output.density_times, len(rows))).round().astype(int))
    fig = plots.density_vs_particles(
        [rows[s] for s in pick],
        extent,
        W,
        np.sign(alpha),
        title=f"{cfg.name}: the grid measure (mass per unit area, by sign) and the particles; grey rays: teacher neurons (dashed: output weight > 0, dotted: < 0)",
    )
    rd.savefig(fig, "densities")
    plots.close(fig)
    if cfg.output.animation:
        rd.write_bytes("jko_vs_gd.gif", plots.density_vs_particles_gif(rows, extent, W, np.sign(alpha)))


def report(cfg: Config, rd: RunDir) -> dict:
    summary = rd.read_json("summary.json")
    draw(cfg, rd, rd.load_npz("results.npz"), summary)
    return summary
