"""Training a deep mean-field ResNet on scikit-learn's digits with the conditional flow (Barboni, Peyré & Vialard 2024).

Inputs: the 8 × 8 images projected to R^d (PCA or a fixed random projection); targets:
class vectors in R^d; prediction: the class whose target is nearest to the last state
(linear read-out, :func:`wgflow.resnet_data.classify`; docs/resnet.md). ``summary.json``:
``final_train_accuracy``, ``final_test_accuracy``, ``lambda0``, ``loss0``, ``loss_final``,
``fitted_rate``, ``status``. Figures: ``loss`` (train and test) and ``accuracy``.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from pydantic import Field

from wgflow import plots
from wgflow.experiments.config import RunName, Section, dump_toml
from wgflow.experiments.rundir import Progress, RunDir, figure_files, fingerprint, interrupt_requested, run_segments
from wgflow.experiments.sections import PLUGINS_HELP, ActivationName, PluginList
from wgflow.flows.conditional import ConditionalFlow, conditional_flow, resnet_diagnostics
from wgflow.flows.schedules import Schedule
from wgflow.flows.solve import Monitor, SaveAt, initial_loop_state, result_name
from wgflow.metrics.resnet import fitted_rate
from wgflow.models.resnet import (
    init_resnet,
    make_resnet_objective,
    resnet_forward,
)
from wgflow.resources import Need

KIND = "resnet_digits"


class DataSection(Section):
    d: int = Field(16, gt=0, description="dimension the images are projected to (states live in R^d)")
    n_train: int = Field(500, gt=0, description="training images")
    n_test: int = Field(500, ge=0, description="held-out images")
    projection: Literal["pca", "random"] = Field("pca", description="how images are embedded in R^d")


class ModelSection(Section):
    depth: int = Field(16, gt=0, description="number of layers S")
    width: int = Field(128, gt=0, description="neurons per layer M")
    activation: ActivationName = Field("cos", description="activation σ")
    init: Literal["gaussian", "heavy_tailed", "random_features"] = Field("gaussian", description="initialisation of w")


class TrainSection(Section):
    steps: int = Field(2000, gt=0, description="flow steps")
    step_size: float = Field(1.0, gt=0, description="step size η (flow time per step)")
    dtype: Literal["float32", "float64"] = Field("float32", description="precision (float32 uses a fast vectorised cos)")
    seed: int = Field(0, description="PRNG seed")
    saves: int = Field(20, gt=1, description="times at which accuracy is measured")
    checkpoint_every: int = Field(500, gt=0, description="steps between checkpoints (a resumed run continues from the last)")
    monitor: Literal["stop", "warn", "backtrack"] = Field(
        "backtrack",
        description="a step whose loss rises above its running minimum: 'stop' (status unstable), 'warn', or 'backtrack' (retake it as 2, 4, … substeps)",
    )


class Config(Section):
    name: RunName = Field("resnet-digits", description="experiment name (the default output folder is runs/NAME)")
    kind: Literal["resnet_digits"] = Field(KIND, description="experiment kind")
    description: str = Field("", description="one line shown by `wgflow list`")
    plugins: PluginList = Field([], description=PLUGINS_HELP)
    data: DataSection = Field(default_factory=DataSection, description="digits")
    model: ModelSection = Field(default_factory=ModelSection, description="the ResNet")
    train: TrainSection = Field(default_factory=TrainSection, description="the flow")


# --------------------------------------------------------------------------- the study driver


SAVED = ("lambda0", "train_accuracy", "train_loss", "test_accuracy", "test_loss")


def digits_problem(key, d, S, M, n_train, n_test, projection, input_scale, target_scale, activation, init, rho, beta, dtype):
    """(objective, initial params, the SaveAt ``fn`` measuring λ₀ and both accuracies) of a run."""
    from wgflow.resnet_data import classify, digits

    kdata, kinit = jax.random.split(key)
    data = digits(kdata, d, n_train=n_train, n_test=n_test, projection=projection, input_scale=input_scale, target_scale=target_scale)
    obj = make_resnet_objective(data.X, data.Y, activation, dtype=dtype)
    params0 = init_resnet(kinit, S, M, d, init=init, rho=rho, beta=beta, dtype=obj.X.dtype)
    fwd = jax.jit(lambda p, X: resnet_forward(p, X, obj.activation))
    X_test = None if data.X_test is None or not len(data.X_test) else jnp.asarray(data.X_test, obj.X.dtype)
    base = resnet_diagnostics(params0, "none")

    def measure(t, params, objective):  # at each save, in the loop: λ₀ and both accuracies
        out = np.asarray(fwd(params, objective.X))
        row = {
            "lambda0": base(t, params, objective)["lambda0"],
            "train_accuracy": float(np.mean(classify(out, data.targets) == data.labels)),
            "train_loss": 0.5 * float(np.mean(np.sum((out - data.Y) ** 2, axis=1))),
            "test_accuracy": float("nan"),
            "test_loss": float("nan"),
        }
        if X_test is not None:
            out_t = np.asarray(fwd(params, X_test))
            row["test_accuracy"] = float(np.mean(classify(out_t, data.targets) == data.labels_test))
            row["test_loss"] = 0.5 * float(np.mean(np.sum((out_t - data.Y_test) ** 2, axis=1)))
        return row

    return obj, params0, measure


def digits_outputs(times, loss, grad_sq, save_times, rows) -> dict:
    """The per-step and per-save arrays and the scalars of a run, from its records."""
    saved = {k: np.array([float(r[k]) for r in rows]) for k in SAVED}
    return {
        "time": np.asarray(times),
        "loss": np.asarray(loss),
        "pl_ratio": np.asarray(grad_sq) / np.asarray(loss)[: len(grad_sq)],
        "save_times": np.asarray(save_times),
        "train_loss": saved["train_loss"],
        "test_loss": saved["test_loss"],
        "train_accuracy": saved["train_accuracy"],
        "test_accuracy": saved["test_accuracy"],
        "lambda0_t": saved["lambda0"],
        "lambda0": float(saved["lambda0"][0]),
        "final_train_accuracy": float(saved["train_accuracy"][-1]),
        "final_test_accuracy": float(saved["test_accuracy"][-1]),
        "loss0": float(loss[0]),
        "loss_final": float(loss[-1]),
        "fitted_rate": fitted_rate(times, loss).rate,
    }


def train_resnet_digits(
    key: Array,
    d: int = 16,
    S: int = 16,
    M: int = 128,
    steps: int = 2000,
    step_size: Schedule = 1.0,
    *,
    n_train: int = 500,
    n_test: int = 500,
    projection: str = "pca",
    input_scale: float = 1.0,
    target_scale: float = 1.0,
    activation: str = "cos",
    init: str = "gaussian",
    rho: float = 1.0,
    beta: float = 1.0,
    n_saves: int = 20,
    monitor: Monitor | None = Monitor(policy="backtrack"),
    dtype=None,
) -> dict:
    """Train the conditional flow on scikit-learn's digits embedded in R^d (``resnet-digits`` study).

    Data: :func:`wgflow.resnet_data.digits`. Returns per-step ``time``, ``loss``, ``pl_ratio``;
    at ``n_saves`` save times ``save_times``, ``train_loss``, ``test_loss``, ``train_accuracy``,
    ``test_accuracy`` (linear read-out :func:`wgflow.resnet_data.classify`), ``lambda0_t``;
    scalars ``lambda0``, ``final_train_accuracy``, ``final_test_accuracy``, ``loss0``,
    ``loss_final``, ``fitted_rate``, ``status``, ``message``, ``seconds``, ``config``.
    ``dtype``: float32 (fast: the vectorised cos) or float64 (default with ``jax_enable_x64``).
    """
    obj, params0, measure = digits_problem(key, d, S, M, n_train, n_test, projection, input_scale, target_scale, activation, init, rho, beta, dtype)
    every = max(1, steps // max(1, n_saves))
    sol = conditional_flow(obj, params0, step_size, steps, save=SaveAt(every=every, fn=measure), monitor=monitor)
    rows = [sol.saved_at(i) for i in range(len(sol.save_steps))]
    grad_sq = sol.stats["grad_sq"]
    out = digits_outputs(sol.times, sol.objective, grad_sq, sol.save_times, rows)
    return {
        **out,
        "status": sol.status,
        "message": sol.message,
        "retaken_steps": int(sol.loop.retakes),
        "seconds": sol.seconds,
        "config": {
            "d": d,
            "S": S,
            "M": M,
            "steps": steps,
            "step_size": step_size if not callable(step_size) else "schedule",
            "n_train": n_train,
            "n_test": n_test,
            "projection": projection,
            "input_scale": input_scale,
            "target_scale": target_scale,
            "activation": activation,
            "init": init,
            "rho": rho,
            "beta": beta,
        },
    }


# --------------------------------------------------------------------------- the experiment


def outputs(cfg: Config) -> list[str]:
    """The files a run writes beside results.npz, summary.json and metrics.csv."""
    return figure_files("loss", "accuracy")


def estimate(cfg: Config) -> list[Need]:
    """Memory of the run: :func:`wgflow.experiments.resnet_pl.resnet_needs` over the training
    and held-out images (both go through the network at each save)."""
    from wgflow.experiments.resnet_pl import resnet_needs

    item = 8 if cfg.train.dtype == "float64" else 4
    N = cfg.data.n_train + cfg.data.n_test
    fields = {"N": "data.n_train", "M": "model.width", "S": "model.depth", "steps": "train.steps"}
    return resnet_needs(N, cfg.data.d, cfg.model.depth, cfg.model.width, cfg.train.steps, cfg.train.saves, item, dcot_exact=False, fields=fields)


def run(cfg: Config, rd: RunDir, *, resume: bool = False, progress: bool | None = None) -> dict:
    """The flow in segments of ``train.checkpoint_every`` steps, each checkpointed (the loop state
    continues bit-identically: a resumed or signalled run gives the same numbers)."""
    start = time.perf_counter()
    dtype = jnp.float64 if cfg.train.dtype == "float64" else jnp.float32
    d, m = cfg.data, cfg.model
    obj, params0, measure = digits_problem(
        jax.random.PRNGKey(cfg.train.seed), d.d, m.depth, m.width, d.n_train, d.n_test, d.projection, 1.0, 1.0, m.activation, m.init, 1.0, 1.0, dtype
    )
    K, eta = cfg.train.steps, cfg.train.step_size
    every = max(1, K // max(1, cfg.train.saves))
    save_steps = np.asarray(sorted(set(range(0, K + 1, every)) | {K}))
    monitor = Monitor(policy=cfg.train.monitor)
    flow = ConditionalFlow()
    state0 = {"loop": initial_loop_state(flow, obj, params0, monitor=monitor)}
    wanted = set(save_steps.tolist())
    with Progress(K, cfg.name, enabled=progress) as bar:

        def advance(state, k0, k1):
            local = save_steps[(save_steps >= k0) & (save_steps <= k1)] - k0
            sol = conditional_flow(
                obj,
                state["loop"],
                eta,
                k1 - k0,
                save=SaveAt(steps=local.tolist(), fn=measure),
                monitor=monitor,
                callback=lambda k, _t, F: bar.update(k, f"L {float(F):.4g}"),
                pause=interrupt_requested,
            )
            k_end = k0 + int(sol.stop_step) if sol.paused else k1
            n = int(sol.stop_step)  # the steps taken (a run that stopped took fewer)
            at = int(np.asarray(sol.loop.step))  # where the run stands
            last = len(sol.save_steps) - 1
            keep = [
                (k0 + int(st), i)
                for i, st in enumerate(sol.save_steps)
                if k0 + int(st) <= at and (k0 + int(st) in wanted or (i == last and not bool(np.asarray(sol.loop.active))))
            ]
            records = {
                "time": sol.times[:n],
                "loss": sol.objective[:n],
                "grad_sq": sol.stats["grad_sq"][:n],
                "end": np.asarray([[sol.times[n], sol.objective[n]]]),
                "code": np.asarray([int(sol.codes)]),
                "message": np.asarray([sol.message]),
                "save_step": np.asarray([k for k, _ in keep], np.int64),
                **{f"saved/{key}": np.asarray([float(sol.saved_at(i)[key]) for _, i in keep]) for key in SAVED},
            }
            return {"loop": sol.loop}, records, k_end

        fp = fingerprint(dump_toml(cfg))
        state, records = run_segments(rd, "flow", K, cfg.train.checkpoint_every, state0, advance, resume=resume, fingerprint=fp)
        bar.update(K)
    loop = state["loop"]
    # each segment recorded the states before its steps; the last state's time and loss are its end
    times = np.append(records["time"], records["end"][-1, 0])
    loss = np.append(records["loss"], records["end"][-1, 1])
    rows_at: dict[int, dict] = {}
    for i, k in enumerate(records["save_step"]):  # a segment's first save is the last one's end: one per step
        rows_at[int(k)] = {key: records[f"saved/{key}"][i] for key in SAVED}
    steps_saved = sorted(rows_at)
    out = digits_outputs(times, loss, records["grad_sq"], times[steps_saved], [rows_at[k] for k in steps_saved])
    failed = np.flatnonzero(records["code"] != 0)  # the message of the segment that saw a failure, else the last
    out.update(
        status=result_name(int(np.asarray(loop.result))),
        message=str(records["message"][failed[0] if len(failed) else -1]),
        retaken_steps=int(np.asarray(loop.retakes)),
    )
    keys = ("time", "loss", "save_times", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "lambda0_t")
    results = {k: np.asarray(out[k]) for k in keys}
    summary = {
        "experiment": cfg.name,
        "kind": KIND,
        "seconds": time.perf_counter() - start,
        **{
            k: out[k]
            for k in ("final_train_accuracy", "final_test_accuracy", "lambda0", "loss0", "loss_final", "fitted_rate", "status", "message", "retaken_steps")
        },
        "table": [
            {"time": float(t), "train_loss": float(a), "test_loss": float(b), "train_accuracy": float(c), "test_accuracy": float(e)}
            for t, a, b, c, e in zip(results["save_times"], results["train_loss"], results["test_loss"], results["train_accuracy"], results["test_accuracy"])
        ],
    }
    rd.save_npz("results.npz", **results)
    rd.write_json("summary.json", summary)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["time", "train_loss", "test_loss", "train_accuracy", "test_accuracy"])
    for row in summary["table"]:
        w.writerow([f"{row[k]:.8g}" for k in ("time", "train_loss", "test_loss", "train_accuracy", "test_accuracy")])
    rd.write_text("metrics.csv", buf.getvalue())
    draw(cfg, rd, results)
    return summary


def draw(cfg: Config, rd: RunDir, results: dict) -> None:
    ts = results["save_times"]
    fig = plots.lines(
        {"train (every step)": (results["time"][: len(results["loss"])], results["loss"]), "test": (ts, results["test_loss"])},
        ylabel=r"loss $\frac{1}{2N}\sum_i |x^i(1) - y^i|^2$",
        logx=True,
        title=f"{cfg.name}: S = {cfg.model.depth}, M = {cfg.model.width}, d = {cfg.data.d}",
    )
    rd.savefig(fig, "loss")
    plots.close(fig)
    fig = plots.lines(
        {"train": (ts, 100 * results["train_accuracy"]), "test": (ts, 100 * results["test_accuracy"])},
        ylabel="accuracy (%)",
        logy=False,
        logx=True,
        title=f"{cfg.name}: nearest class target read-out",
        styles={"train": {"marker": "o"}, "test": {"marker": "s"}},
    )
    rd.savefig(fig, "accuracy")
    plots.close(fig)


def report(cfg: Config, rd: RunDir) -> dict:
    draw(cfg, rd, rd.load_npz("results.npz"))
    return rd.read_json("summary.json")
