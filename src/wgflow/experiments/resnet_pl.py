"""Barboni, Peyré & Vialard 2024's theorem on a ladder: does the conditional flow converge at the rate λ₀/N predicts?

Each case (N inputs, initialisation, δ) runs :func:`run_resnet_pl_case`:
near-identity targets y = x + δ g(x) (so L(μ₀) = δ²/2 with u = 0), a depth-S, width-M
mean-field ResNet, the conditional flow for ``train.steps`` steps. The ladder varies
one factor at a time around the base case (``ladder.mode = "one_at_a_time"``) or takes
every combination (``"product"``).

The PL inequality at u = 0 is ‖∇L‖² ≥ (2/N) λ₀ L (docs/resnet.md), so while the kernel
stays near its initial value L(μ_t) ≤ L(μ₀) e^{−2λ₀ t/N}: the predicted rate scale is
λ₀/N and the drawn slope is 2λ₀/N. ``summary.json`` ``table``: per case ``N``, ``init``,
``delta``, ``lambda0``, ``pl_min``, ``fitted_rate``, ``predicted_rate_scale``,
``rate_over_scale``, ``loss_ratio``, ``pl_bound``, ``pl_tightness``, ``status``.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from typing import Literal

import jax
import numpy as np
from jax import Array
from pydantic import Field, field_validator

from wgflow import plots
from wgflow.experiments.config import RunName, Section, dump_toml
from wgflow.experiments.rundir import Progress, RunDir, figure_files, fingerprint, run_part
from wgflow.experiments.sections import PLUGINS_HELP, ActivationName, PluginList
from wgflow.flows.conditional import conditional_flow, fitted_loss_rate, path_length
from wgflow.flows.schedules import Schedule
from wgflow.flows.solve import Monitor, SaveAt
from wgflow.metrics.resnet import PL_CONSTANT
from wgflow.models.resnet import _positive_int, init_resnet, make_resnet_objective
from wgflow.resources import Need

KIND = "resnet_pl"
INITS = ("gaussian", "heavy_tailed", "random_features")


class ModelSection(Section):
    d: int = Field(4, gt=0, description="dimension of inputs and states")
    depth: int = Field(8, gt=0, description="number of layers S")
    width: int = Field(128, gt=0, description="neurons per layer M")
    activation: ActivationName = Field("cos", description="activation σ (Barboni, Peyré & Vialard 2024: cos)")
    rho: float = Field(1.0, gt=0, description="Gaussian init: precision ρ, density ∝ exp(−ρ|w|²)")
    beta: float = Field(1.0, gt=0, description="heavy-tailed init: (1 + |w|²)^−(d/2+β)")


class LadderSection(Section):
    mode: Literal["one_at_a_time", "product"] = Field("one_at_a_time", description="vary one factor around the base case, or all combinations")
    N: list[int] = Field([8, 16, 32, 64], description="numbers of inputs N")
    init: list[Literal["gaussian", "heavy_tailed", "random_features"]] = Field(list(INITS), description="initialisations of w (u = 0, b ~ U[0, π])")
    delta: list[float] = Field([0.03, 0.1, 0.3, 1.0, 3.0], description="target offsets δ (L(μ₀) = δ²/2)")
    base_N: int = Field(16, gt=0, description="N of the base case")
    base_init: Literal["gaussian", "heavy_tailed", "random_features"] = Field("gaussian", description="init of the base case")
    base_delta: float = Field(0.1, gt=0, description="δ of the base case")

    @field_validator("N")
    @classmethod
    def _n(cls, v):
        if not v or min(v) <= 0:
            raise ValueError("every N must be a positive integer")
        return v

    @field_validator("delta")
    @classmethod
    def _delta(cls, v):
        if not v or min(v) <= 0:
            raise ValueError("every δ must be > 0")
        return v

    def cases(self) -> list[tuple[int, str, float]]:
        if self.mode == "product":
            return list(itertools.product(self.N, self.init, self.delta))
        base = (self.base_N, self.base_init, self.base_delta)
        out = [base]
        out += [(n, base[1], base[2]) for n in self.N if n != base[0]]
        out += [(base[0], i, base[2]) for i in self.init if i != base[1]]
        out += [(base[0], base[1], dl) for dl in self.delta if dl != base[2]]
        return out


class TrainSection(Section):
    steps: int = Field(2000, gt=0, description="flow steps")
    step_size: float = Field(1.0, gt=0, description="step size η (flow time per step)")
    dtype: Literal["float32", "float64"] = Field("float64", description="precision")
    seed: int = Field(0, description="PRNG seed (data and initialisation)")
    monitor: Literal["stop", "warn", "backtrack"] = Field(
        "backtrack",
        description="a step whose loss rises above its running minimum: 'stop' (status unstable), 'warn', "
        "or 'backtrack' (retake it as 2, 4, … substeps: the fitted rates are those of a monotone descent)",
    )
    rise_rtol: float = Field(1e-3, gt=0, lt=1, description="a rise of the loss above its running minimum by more than this (relative) counts")


class Config(Section):
    name: RunName = Field("resnet-pl", description="experiment name (the default output folder is runs/NAME)")
    kind: Literal["resnet_pl"] = Field(KIND, description="experiment kind")
    description: str = Field("", description="one line shown by `wgflow list`")
    plugins: PluginList = Field([], description=PLUGINS_HELP)
    model: ModelSection = Field(default_factory=ModelSection, description="the ResNet")
    ladder: LadderSection = Field(default_factory=LadderSection, description="the cases")
    train: TrainSection = Field(default_factory=TrainSection, description="the flow")


SCALARS = (
    "lambda0",
    "lambda_bar",
    "pl_min",
    "pl_init",
    "pl_bound",
    "pl_tightness",
    "fitted_rate",
    "fit_r2",
    "predicted_rate_scale",
    "rate_over_scale",
    "loss0",
    "loss_final",
    "loss_ratio",
    "dcot_final",
)


def _label(case) -> str:
    N, init, delta = case
    return f"N={N}, {init}, δ={delta:g}"


# --------------------------------------------------------------------------- the study driver


def _saved_list(sol) -> list[dict]:
    """The saved diagnostics of a conditional flow, one dict per save."""
    return [sol.saved_at(i) for i in range(len(sol.save_steps))]


def _save_every(steps: int, n_saves: int) -> SaveAt:
    return SaveAt(every=max(1, steps // max(1, n_saves)))


def run_resnet_pl_case(
    key: Array,
    N: int,
    d: int,
    S: int,
    M: int,
    init: str = "gaussian",
    delta: float = 0.05,
    steps: int = 2000,
    step_size: Schedule = 1.0,
    *,
    activation: str = "cos",
    rho: float = 1.0,
    beta: float = 1.0,
    feature_law: str = "gaussian",
    freeze_features: bool = False,
    n_features: int = 64,
    bandwidth: float = 1.0,
    inputs: str = "sphere",
    n_saves: int = 10,
    dcot_mode: str = "exact",
    rate_window: tuple[float, float] | None = None,
    monitor: Monitor | None = Monitor(policy="backtrack"),
    dtype=None,
) -> dict:
    """One run for the ``resnet-pl`` study: near-identity data, seed-003 init, the conditional flow.

    Data: :func:`wgflow.resnet_data.near_identity` (L(μ₀) = δ²/2). Returns a dict with
    scalars ``lambda0`` (at μ₀), ``lambda_bar`` (λ_min of the depth-averaged kernel at μ₀),
    ``loss0``, ``loss_final``, ``loss_ratio`` = L(μ_T)/L(μ₀), ``pl_init``, ``pl_min``
    (min over the run of ‖∇L‖²/L), ``pl_bound`` = (2/N)λ₀, ``pl_tightness`` = pl_init/pl_bound (≥ 1),
    ``fitted_rate`` (least squares on log L, ``rate_window``), ``predicted_rate_scale`` = λ₀/N,
    ``rate_over_scale`` = fitted/predicted, ``dcot_final``, ``path_length_final``, ``diverged``,
    ``status``, ``message``, ``retaken_steps``, ``max_relative_rise``, ``seconds``; per-step arrays ``time``, ``loss``, ``pl_ratio``,
    ``grad_sq``, ``path_length``; at save times ``save_times``, ``lambda0_t``, ``dcot_identity``,
    ``dcot_exact``; and ``config``. The key is split into (data, init). ``dtype``: float32 or float64
    (default: float64 when ``jax_enable_x64`` is on).
    """
    from wgflow.resnet_data import near_identity

    _positive_int(N, "N")
    _positive_int(d, "d")
    _positive_int(steps, "steps")
    kdata, kinit = jax.random.split(key)
    data = near_identity(kdata, N, d, delta, n_features=n_features, bandwidth=bandwidth, inputs=inputs)
    obj = make_resnet_objective(data.X, data.Y, activation, freeze_features=freeze_features, dtype=dtype)
    params0 = init_resnet(kinit, S, M, d, init=init, rho=rho, beta=beta, feature_law=feature_law, dtype=obj.X.dtype)
    sol = conditional_flow(obj, params0, step_size, steps, save=_save_every(steps, n_saves), dcot_mode=dcot_mode, monitor=monitor)
    diag = {k: np.array([v[k] for v in _saved_list(sol)]) for k in ("grad_sq", "lambda0", "lambda_bar", "dcot_identity", "dcot_exact")}
    loss = sol.objective
    grad_sq = sol.stats["grad_sq"]
    if len(grad_sq) < len(loss):  # a completed run: the last state's ‖∇L‖² is the last saved one
        grad_sq = np.append(grad_sq, diag["grad_sq"][-1])
    pl = grad_sq / loss
    lam0 = float(diag["lambda0"][0])
    fit = fitted_loss_rate(sol, rate_window)
    pred = lam0 / N
    pl_bound = PL_CONSTANT(N) * lam0
    path = path_length(sol)
    return {
        "lambda0": lam0,
        "lambda_bar": float(diag["lambda_bar"][0]),
        "loss0": float(loss[0]),
        "loss_final": float(loss[-1]),
        "loss_ratio": float(loss[-1] / loss[0]),
        "pl_init": float(pl[0]),
        "pl_min": float(np.nanmin(pl)),
        "pl_bound": pl_bound,
        "pl_tightness": float(pl[0] / pl_bound) if pl_bound > 0 else float("inf"),
        "fitted_rate": fit.rate,
        "fit_r2": fit.r2,
        "predicted_rate_scale": pred,
        "rate_over_scale": fit.rate / pred if pred > 0 else float("nan"),
        "dcot_final": float(diag["dcot_exact"][-1]) if dcot_mode == "exact" else float(diag["dcot_identity"][-1]),
        "path_length_final": float(path[-1]),
        "diverged": sol.status == "diverged",
        "status": sol.status,
        "message": sol.message,
        "retaken_steps": int(sol.loop.retakes),
        "max_relative_rise": float(sol.loop.max_rise),
        "seconds": sol.seconds,
        "time": sol.times,
        "loss": loss,
        "pl_ratio": pl,
        "grad_sq": grad_sq,
        "path_length": path,
        "save_times": sol.save_times,
        "lambda0_t": diag["lambda0"],
        "dcot_identity": diag["dcot_identity"],
        "dcot_exact": diag["dcot_exact"],
        "config": {
            "N": N,
            "d": d,
            "S": S,
            "M": M,
            "init": init,
            "delta": delta,
            "steps": steps,
            "step_size": step_size if not callable(step_size) else "schedule",
            "activation": activation,
            "rho": rho,
            "beta": beta,
            "feature_law": feature_law,
            "freeze_features": freeze_features,
            "n_features": n_features,
            "bandwidth": bandwidth,
            "inputs": inputs,
        },
    }


# --------------------------------------------------------------------------- the experiment


def outputs(cfg: Config) -> list[str]:
    """The files a run writes beside results.npz, summary.json and metrics.csv."""
    return figure_files("loss", "pl_ratio", "lambda0_vs_N")


def resnet_needs(N: int, d: int, S: int, M: int, steps: int, saves: int, item: int, *, dcot_exact: bool, fields: dict[str, str]) -> list[Need]:
    """Memory of one conditional-flow run by item. ``fields``: the config field (and its fix)
    behind ``N``, ``M``, ``S``, ``steps``, as ``{"N": ..., "M": ..., "S": ..., "steps": ...}``.

    Parameters (u, w, b) of S × M neurons in R^(2d+1): the state, its gradient, the trial step
    and the loop's copies (≈ 12 arrays); the forward and backward pass: states (S+1) × N × d
    and pre-activations S × N × M (≈ 4 copies); λ₀: S kernels N × N and their eigenvalues
    (≈ 3); each save keeps the parameters (× 2); the exact D_COT solves an M × M transport
    per layer in float64 (cost, plan and POT's copies: ≈ 4); per-step records (≈ 8 per step).
    """
    P = S * M * (2 * d + 1)
    size = {"N": N, "M": M, "S": S}
    fixes = {"N": f"use fewer inputs ({fields['N']})", "M": f"use a smaller {fields['M']}", "S": f"use fewer layers ({fields['S']})"}

    def need(item: str, nbytes: float, *factors: str) -> Need:  # named after its largest factor
        big = max(factors, key=lambda f: size[f])
        return Need(item, nbytes, fields[big], fixes[big])

    needs = [
        need(f"parameters of {S} layers × {M} neurons", 12.0 * P * item, "M", "S"),
        need(f"forward and backward passes of {N} inputs", 4.0 * S * N * (M + d) * item, "N", "M", "S"),
        need(f"λ₀ kernels ({S} × {N} × {N})", 3.0 * S * N * N * item, "N", "S"),
        need(f"{saves} saved states", 2.0 * saves * P * item, "M", "S"),
        Need(f"{steps} steps", 8.0 * 8 * steps, fields["steps"], f"use fewer {fields['steps']}"),
    ]
    if dcot_exact:
        needs.append(Need(f"exact D_COT ({M} × {M} transport per layer)", 4.0 * 8 * M * M, fields["M"], f"use a smaller {fields['M']}"))
    return needs


def estimate(cfg: Config) -> list[Need]:
    """Memory of the largest case (cases run one after another): :func:`resnet_needs`."""
    item = 8 if cfg.train.dtype == "float64" else 4
    N = max(N for N, _, _ in cfg.ladder.cases())
    fields = {"N": "ladder.N", "M": "model.width", "S": "model.depth", "steps": "train.steps"}
    return resnet_needs(N, cfg.model.d, cfg.model.depth, cfg.model.width, cfg.train.steps, 10, item, dcot_exact=True, fields=fields)


def run(cfg: Config, rd: RunDir, *, resume: bool = False, progress: bool | None = None) -> dict:
    import jax.numpy as jnp

    dtype = jnp.float64 if cfg.train.dtype == "float64" else jnp.float32
    cases = cfg.ladder.cases()
    start = time.perf_counter()
    table, results = [], {}
    with Progress(len(cases), cfg.name, enabled=progress) as bar:
        fp = fingerprint(dump_toml(cfg))
        for i, (N, init, delta) in enumerate(cases):
            # each case is a part of the run: checkpointed when done, read back by --resume
            out = run_part(
                rd,
                f"case{i}",
                lambda N=N, init=init, delta=delta: run_resnet_pl_case(
                    jax.random.PRNGKey(cfg.train.seed),
                    N,
                    cfg.model.d,
                    cfg.model.depth,
                    cfg.model.width,
                    init,
                    delta,
                    cfg.train.steps,
                    cfg.train.step_size,
                    activation=cfg.model.activation,
                    rho=cfg.model.rho,
                    beta=cfg.model.beta,
                    dtype=dtype,
                    monitor=Monitor(policy=cfg.train.monitor, rtol=cfg.train.rise_rtol),
                ),
                resume=resume,
                fingerprint=fp,
            )
            row = {"case": _label((N, init, delta)), "N": N, "init": init, "delta": delta}
            row.update({k: out[k] for k in SCALARS})
            row.update(
                status=out["status"],
                diverged=out["diverged"],
                retaken_steps=out["retaken_steps"],
                max_relative_rise=out["max_relative_rise"],
                message=out["message"],
            )
            table.append(row)
            for k in ("time", "loss", "pl_ratio"):
                results[f"{i}/{k}"] = np.asarray(out[k])
            bar.update(i + 1, row["case"])
    summary = {
        "experiment": cfg.name,
        "kind": KIND,
        "seconds": time.perf_counter() - start,
        "pl_constant": "2/N",
        "table": table,
        "print_columns": [
            "case",
            "lambda0",
            "pl_min",
            "pl_tightness",
            "fitted_rate",
            "predicted_rate_scale",
            "rate_over_scale",
            "loss_ratio",
            "retaken_steps",
            "status",
        ],
    }
    rd.save_npz("results.npz", **results)
    rd.write_json("summary.json", summary)
    rd.write_text("metrics.csv", metrics_csv(cases, results))
    draw(cfg, rd, results, summary)
    return summary


def metrics_csv(cases, results) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["N", "init", "delta", "step", "time", "loss", "pl_ratio"])
    for i, (N, init, delta) in enumerate(cases):
        t, L, pl = results[f"{i}/time"], results[f"{i}/loss"], results[f"{i}/pl_ratio"]
        stride = max(1, len(t) // 400)
        for k in range(0, len(t), stride):
            w.writerow([N, init, delta, k, f"{t[k]:.8g}", f"{L[k]:.10g}", f"{pl[k]:.6g}" if k < len(pl) else ""])
    return buf.getvalue()


def draw(cfg: Config, rd: RunDir, results: dict, summary: dict) -> None:
    table = summary["table"]
    curves, styles = {}, {}
    for i, row in enumerate(table):
        t, L = results[f"{i}/time"], results[f"{i}/loss"]
        color = plots.plt.cm.tab10(i % 10)
        curves[row["case"]] = (t[: len(L)], L)
        styles[row["case"]] = {"color": color}
        slope = f"{row['case']}: predicted e^(−2λ₀t/N)"
        curves[slope] = (t, L[0] * np.exp(-2 * row["lambda0"] * t / row["N"]))
        styles[slope] = {"color": color, "ls": ":", "lw": 1, "label": "_nolegend_"}
    fig = plots.lines(
        curves, ylabel=r"loss $L(\mu_t)$", styles=styles, title=f"{cfg.name}: loss (solid) and the PL prediction $L_0 e^{{-2\\lambda_0 t/N}}$ (dotted)"
    )
    fig.axes[0].legend(fontsize=6, ncol=2)
    rd.savefig(fig, "loss")
    plots.close(fig)

    curves, styles = {}, {}
    for i, row in enumerate(table):
        pl = results[f"{i}/pl_ratio"]
        t = results[f"{i}/time"][: len(pl)]
        color = plots.plt.cm.tab10(i % 10)
        curves[row["case"]] = (t, pl)
        styles[row["case"]] = {"color": color}
        curves[f"{row['case']} bound"] = (t, np.full(len(t), row["pl_bound"]))
        styles[f"{row['case']} bound"] = {"color": color, "ls": ":", "lw": 1, "label": "_nolegend_"}
    fig = plots.lines(
        curves,
        ylabel=r"PL ratio $\|\nabla L\|^2_{L^2(\mu_t)} / L(\mu_t)$",
        styles=styles,
        title=f"{cfg.name}: PL ratio (solid) and the bound $(2/N)\\lambda_0$ at $t = 0$ (dotted)",
    )
    fig.axes[0].legend(fontsize=6, ncol=2)
    rd.savefig(fig, "pl_ratio")
    plots.close(fig)

    rows = [r for r in table if r["init"] == cfg.ladder.base_init and r["delta"] == cfg.ladder.base_delta]
    rows.sort(key=lambda r: r["N"])
    Ns = np.array([r["N"] for r in rows], float)
    fig = plots.lines(
        {
            r"$\lambda_0$ (mean over layers of $\lambda_{\min}(K_s)$) at $t = 0$": (Ns, np.maximum([r["lambda0"] for r in rows], 1e-300)),
            "fitted rate of L": (Ns, np.maximum([r["fitted_rate"] for r in rows], 1e-300)),
            r"predicted scale $\lambda_0/N$": (Ns, np.maximum([r["predicted_rate_scale"] for r in rows], 1e-300)),
        },
        xlabel="number of inputs N",
        ylabel="value (flow time⁻¹ for the rates)",
        logx=True,
        logy=True,
        title=f"{cfg.name}: λ₀ and rates against N ({cfg.ladder.base_init}, δ = {cfg.ladder.base_delta:g})",
    )
    for line in fig.axes[0].lines:
        line.set_marker("o")
    fig.axes[0].set_xticks(Ns, [f"{n:g}" for n in Ns])
    fig.axes[0].minorticks_off()
    rd.savefig(fig, "lambda0_vs_N")
    plots.close(fig)


def report(cfg: Config, rd: RunDir) -> dict:
    summary = rd.read_json("summary.json")
    draw(cfg, rd, rd.load_npz("results.npz"), summary)
    return summary
