"""One initial network, trained by plain GD and by every parameterisation's flow.

All parameterisations start from the same function (the exact maps of
:mod:`wgflow.units`); they differ in the metric on Θ, hence in the flow. Plain
gradient descent is written out here independently (``jax.grad`` of the
weight-decayed square loss on (W, α)). The run folder gets ``summary.json`` (per parameterisation: the
final objective and the distance of its outputs to plain GD's), ``metrics.csv``,
``results.npz`` and the figures ``objective`` and ``output_distance``.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field

from wgflow import plots
from wgflow.experiments.config import RunName, Section, dump_toml
from wgflow.experiments.rundir import Progress, RunDir, figure_files, fingerprint, run_part
from wgflow.experiments.sections import PLUGINS_HELP, DataSection, ParamName, PluginList, ScheduleSection
from wgflow.flows.particle import explicit_gd
from wgflow.flows.schedules import times as schedule_times
from wgflow.flows.solve import Monitor, SaveAt
from wgflow.objective import make_objective
from wgflow.resources import Need
from wgflow.units import PlainNetwork

KIND = "parameterisations"


class ModelSection(Section):
    parameterisations: list[ParamName] = Field(["lifted", "signed", "split", "sphere", "signed_square"], description="parameterisations compared with plain GD")
    width: int = Field(20, gt=0, description="width m of the initial plain network")
    lam: float = Field(1e-3, ge=0, description="weight decay λ")
    reduction: Literal["sum", "mean"] = Field("mean", description="R = Σ_j (f − y)² ('sum') or the mean")
    init_scale: float = Field(0.5, gt=0, description="standard deviation of the initial plain weights W and α")
    init_seed: int = Field(1, description="PRNG seed of the initial network")


class TrainSection(ScheduleSection):
    step_size: float = Field(0.05, gt=0, description="step size η (the same for plain GD and every flow)")
    num_steps: int = Field(4000, gt=0, description="number of steps")
    schedule: Literal["constant", "inverse_sqrt", "polish"] = Field("constant", description="step schedule")
    snapshots: int = Field(200, gt=1, description="number of saved times for the output distance")


class Config(Section):
    name: RunName = Field("parameterisations", description="experiment name (the default output folder is runs/NAME)")
    kind: Literal["parameterisations"] = Field(KIND, description="experiment kind")
    description: str = Field("", description="one line shown by `wgflow list`")
    plugins: PluginList = Field([], description=PLUGINS_HELP)
    data: DataSection = Field(default_factory=lambda: DataSection(teacher_signs="positive"), description="teacher–student data (ReLU)")
    model: ModelSection = Field(default_factory=ModelSection, description="networks compared")
    train: TrainSection = Field(default_factory=TrainSection, description="gradient descent")


def plain_loss(W, alpha, X, y, lam, reduction):
    """The plain network's loss, written out: Σ_j (Σ_i relu(w_i·x_j) α_i − y_j)² + λ Σ_i (|w_i|² + α_i²) (or the mean over j)."""
    residual = jax.nn.relu(X @ W.T) @ alpha - y
    data = jnp.sum(residual**2) if reduction == "sum" else jnp.mean(residual**2)
    return data + lam * (jnp.sum(W**2) + jnp.sum(alpha**2))


def plain_gd(net: PlainNetwork, X, y, lam, reduction, etas: np.ndarray, save_steps: np.ndarray):
    """Plain gradient descent on (W, α); returns the objective per step and the outputs at ``save_steps``."""
    X, y = jnp.asarray(X), jnp.asarray(y)
    vg = jax.jit(jax.value_and_grad(plain_loss, argnums=(0, 1)), static_argnums=5)

    @jax.jit
    def many(W, a, etas):
        def body(carry, eta):
            W, a = carry
            F, (gW, ga) = vg(W, a, X, y, lam, reduction)
            return (W - eta * gW, a - eta * ga), F

        return jax.lax.scan(body, (W, a), etas)

    W, a = jnp.asarray(net.W), jnp.asarray(net.alpha)
    objective, outputs, k = [], [PlainNetwork(W, a).outputs(X)], 0
    for s in save_steps[1:]:
        (W, a), F = many(W, a, jnp.asarray(etas[k:s]))
        objective.append(np.asarray(F))
        outputs.append(PlainNetwork(W, a).outputs(X))
        k = s
    objective.append(np.asarray([vg(W, a, X, y, lam, reduction)[0]]))
    return np.concatenate(objective), np.stack([np.asarray(o) for o in outputs])


def outputs(cfg: Config) -> list[str]:
    """The files a run writes beside results.npz, summary.json and metrics.csv."""
    return figure_files("objective", "output_distance")


def estimate(cfg: Config) -> list[Need]:
    """Memory by item: the widest flow's particles (state, velocity, trial step, the loop's
    copies: ≈ 12 arrays m × D) and unit outputs (≈ 4 arrays n × m), the saved outputs of plain
    GD and one flow (× 3), the per-step arrays, and the data."""
    n, m, K, S = cfg.data.n, cfg.model.width, cfg.train.num_steps, cfg.train.snapshots
    d_in = cfg.data.d + int(cfg.data.bias)
    return [
        Need(f"{m} particles in R^{d_in + 2}", 12.0 * m * (d_in + 2) * 8, "model.width", "use a smaller model.width"),
        Need(f"unit outputs ({n} data points × {m} particles)", 4.0 * min(n * m, 2**20) * 8, "data.n", "use fewer data points (data.n)"),
        Need(f"{S} saved outputs of {n} data points", 3.0 * min(S, K + 1) * n * 8, "train.snapshots", "keep fewer states (train.snapshots)"),
        Need(f"{K} steps", 8.0 * 8 * K, "train.num_steps", "use fewer train.num_steps"),
        Need(f"the data ({n} × {d_in})", 4.0 * n * d_in * 8, "data.n", "use fewer data points (data.n)"),
    ]


def run(cfg: Config, rd: RunDir, *, resume: bool = False, progress: bool | None = None) -> dict:
    ds = cfg.data.make()
    etas = cfg.train.etas()
    K = len(etas)
    t = schedule_times(etas)
    save_steps = np.unique(np.linspace(0, K, cfg.train.snapshots).round().astype(int))
    k1, k2 = jax.random.split(jax.random.PRNGKey(cfg.model.init_seed))
    net = PlainNetwork(
        cfg.model.init_scale * jax.random.normal(k1, (cfg.model.width, ds.d)),
        cfg.model.init_scale * jax.random.normal(k2, (cfg.model.width,)),
    )
    start = time.perf_counter()
    fp = fingerprint(dump_toml(cfg))
    results = {"times": t, "save_times": t[save_steps]}
    with Progress(len(cfg.model.parameterisations) + 1, cfg.name, enabled=progress) as bar:

        def plain():
            F, outputs = plain_gd(net, ds.X, ds.y, cfg.model.lam, cfg.model.reduction, etas, save_steps)
            return {"objective": np.asarray(F), "outputs": np.asarray(outputs)}

        # each flow is a part of the run: checkpointed when done, read back by --resume
        part = run_part(rd, "plain", plain, resume=resume, fingerprint=fp)
        F_plain, out_plain = part["objective"], part["outputs"]
        results["plain/objective"], results["plain/outputs"] = F_plain, out_plain
        bar.update(1, "plain GD")
        rows = {}
        for i, param in enumerate(cfg.model.parameterisations):

            def flow(param=param):
                obj = make_objective(ds.X, ds.y, param, "relu", "square", cfg.model.lam, cfg.model.reduction)
                mu0 = obj.unit.from_plain(net)
                # the same steps as plain GD's, rises recorded but not acted on: the flows are compared as they are
                traj = explicit_gd(
                    obj, mu0, lambda k: etas[k], K, save=SaveAt(steps=save_steps.tolist(), fn=lambda t, mu, o: o.outputs(mu)), monitor=Monitor(policy="warn")
                )
                outs = np.asarray(traj.saved)
                n_saved = len(outs)
                dist = np.linalg.norm(outs - out_plain[:n_saved], axis=1) / np.maximum(np.linalg.norm(out_plain[:n_saved], axis=1), 1e-300)
                return {
                    "objective": np.asarray(traj.objective),
                    "distance": dist,
                    "final_objective": traj.final_objective,
                    "status": traj.status,
                    "max_relative_rise": float(traj.loop.max_rise),
                }

            part = run_part(rd, param, flow, resume=resume, fingerprint=fp)
            dist = part["distance"]
            results[f"{param}/objective"] = part["objective"]
            results[f"{param}/distance"] = dist
            rows[param] = {
                "parameterisation": param,
                "final_objective": part["final_objective"],
                "status": part["status"],
                "max_relative_rise": part["max_relative_rise"],
                "initial_output_distance": float(dist[0]),
                "final_output_distance": float(dist[-1]),
                "max_output_distance": float(np.max(dist)),
                "same_flow_as_plain_gd": bool(np.max(dist) < 1e-8),
            }
            bar.update(i + 2, param)
    seconds = time.perf_counter() - start
    summary = {
        "experiment": cfg.name,
        "kind": KIND,
        "width": cfg.model.width,
        "final_time": float(t[-1]),
        "plain_gd_final_objective": float(F_plain[-1]),
        "seconds": seconds,
        "table": list(rows.values()),
    }
    rd.save_npz("results.npz", **results)
    rd.write_json("summary.json", summary)
    rd.write_text("metrics.csv", metrics_csv(cfg, results))
    draw(cfg, rd, results)
    return summary


def metrics_csv(cfg: Config, results: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "step", "time", "objective"])
    for name in ["plain", *cfg.model.parameterisations]:
        for k, (tt, F) in enumerate(zip(results["times"], results[f"{name}/objective"])):
            w.writerow([name if name != "plain" else "plain_gd", k, f"{tt:.10g}", f"{F:.12g}"])
    return buf.getvalue()


def draw(cfg: Config, rd: RunDir, results: dict) -> None:
    t = results["times"]
    curves = {"plain GD on (W, α)": (t, results["plain/objective"])}
    styles = {"plain GD on (W, α)": {"color": "k", "lw": 3, "alpha": 0.35}}
    for p in cfg.model.parameterisations:
        F = results[f"{p}/objective"]
        curves[p] = (t[: len(F)], F)
        styles[p] = {"ls": "--" if p == "lifted" else "-"}
    fig = plots.lines(curves, title=f"{cfg.name}: width {cfg.model.width}, one initial network, step η = {cfg.train.step_size:g}", styles=styles, logx=True)
    rd.savefig(fig, "objective")
    plots.close(fig)
    ts = results["save_times"]
    dist = {p: (ts[1 : len(results[f"{p}/distance"])], np.maximum(results[f"{p}/distance"][1:], 1e-17)) for p in cfg.model.parameterisations}
    fig = plots.lines(
        dist,
        ylabel=r"$\|f_{\mathrm{flow}}(t) - f_{\mathrm{plain}}(t)\|_2 / \|f_{\mathrm{plain}}(t)\|_2$ on the data",
        title=f"{cfg.name}: distance of each flow's outputs to plain GD's",
        logx=True,
    )
    rd.savefig(fig, "output_distance")
    plots.close(fig)


def report(cfg: Config, rd: RunDir) -> dict:
    draw(cfg, rd, rd.load_npz("results.npz"))
    return rd.read_json("summary.json")
