"""Your own data: two-layer mean-field networks trained on a CSV or ``.npz`` file (docs/own-data.md).

The same sweep as the teacher–student experiments (:mod:`wgflow.experiments.teacher_student`:
parameterisations × widths × seeds, explicit particle gradient descent in mean-field time
under the solve loop's monitor, checkpoints), on the user's data:

- ``data.path``: a CSV (header optional; the target is the column ``target``, else the last
  one) or an ``.npz`` with arrays ``X`` and ``y``, read by :func:`wgflow.data.load_data`;
- a random held-out split (``data.test_fraction``), standardisation of the inputs with the
  training mean and standard deviation, then a bias column;
- for a loss that needs labels ±1 (the logistic loss), the two classes mapped to −1, +1
  (the smaller value to −1), said in the log and in ``summary.json``.

The summary has, besides the teacher–student keys, each run's test loss and (with two
classes) train and test accuracy, and the certified optimum F* of the training objective
with each run's excess wherever the exact program applies (ReLU, rank of the inputs ≤ 3 with
the bias counted; square or logistic loss). results.npz keeps the training and test data.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field

from wgflow.data import Dataset, classes_to_pm1, load_data, split, standardise, with_bias
from wgflow.errors import InputError
from wgflow.experiments import optimum_support, teacher_student
from wgflow.experiments.config import Section
from wgflow.experiments.rundir import RunDir
from wgflow.experiments.sections import PLUGINS_HELP, InitSection, OutputSection, PluginList, SweepSection
from wgflow.losses import get_loss
from wgflow.measure import Measure
from wgflow.objective import make_objective

KIND = "fit"

HOW_TO_GIVE = (
    "wgflow run fit --set data.path=my_data.csv (a CSV with a header row: the target is the column named 'target', "
    "else the last column; a CSV without header: the last column), or --set data.path=my_data.npz (arrays X of shape (n, d) "
    "and y of shape (n,)); try it with examples/two_classes.csv. See docs/own-data.md"
)


class FileDataSection(Section):
    """Your data: a file, how to read it, the held-out split and the preprocessing."""

    path: str | None = Field(None, description="the data file: .csv (header optional) or .npz with arrays X and y; recorded as an absolute path")
    target: str | int | None = Field(
        None, description="CSV: the target column, a header name or a 0-based index (default: 'target' if the header has it, else the last column)"
    )
    header: bool | None = Field(None, description="CSV: whether the first row names the columns (default: detected, a first row that is not all numbers)")
    delimiter: str | None = Field(None, description="CSV: the cell separator (default: ',', a tab for .tsv)")
    standardise: bool = Field(True, description="centre and scale each input column with the training rows' mean and standard deviation")
    bias: bool = Field(True, description="append the constant input 1 (a bias) after standardising")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="fraction of the rows held out for the test loss and accuracy (0: no test set)")
    split_seed: int = Field(0, description="seed of the random held-out split")


class Config(Section):
    name: str = Field("fit", description="experiment name")
    kind: Literal["fit"] = Field(KIND, description="experiment kind (which runner reads this file)")
    description: str = Field("", description="one line shown by `wgflow list`")
    plugins: PluginList = Field([], description=PLUGINS_HELP)
    data: FileDataSection = Field(default_factory=FileDataSection, description="your data file")
    model: teacher_student.ModelSection = Field(default_factory=teacher_student.ModelSection, description="the network")
    init: InitSection = Field(default_factory=InitSection, description="initial measures")
    sweep: SweepSection = Field(default_factory=SweepSection, description="widths × seeds")
    train: teacher_student.TrainSection = Field(default_factory=teacher_student.TrainSection, description="gradient descent")
    output: OutputSection = Field(default_factory=OutputSection, description="files written")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The data as the runs see it: ``train`` and ``test`` (None without a test set), and what was done."""

    train: Dataset
    test: Dataset | None
    info: dict
    notes: list[str]


def prepare(cfg: Config) -> Prepared:
    """Read, split, standardise and label the data of ``cfg`` (every check before any compute)."""
    if cfg.data.path is None:
        raise InputError("data.path", "the fit experiment trains on your data file, and none is given", HOW_TO_GIVE)
    ds = load_data(cfg.data.path, target=cfg.data.target, delimiter=cfg.data.delimiter, header=cfg.data.header)
    notes: list[str] = []
    info: dict = {"path": str(cfg.data.path), "rows": ds.n, "features": ds.d, "target": ds.target_name, "feature_names": ds.feature_names}
    loss = get_loss(cfg.model.loss)
    values = np.unique(ds.y)
    classes = [float(v) for v in values] if values.size == 2 else None
    if loss.labels == "pm1":
        y, mapping = classes_to_pm1(ds.y)
        classes = [-1.0, 1.0]
        info["labels"] = {_label(k): v for k, v in mapping.items()}
        if set(mapping) == {-1.0, 1.0}:
            notes.append(f"labels: already -1 and +1, as the {loss.name} loss needs")
        else:
            lo, hi = sorted(mapping)
            notes.append(f"labels mapped to ±1 for the {loss.name} loss: {_label(lo)} → -1, {_label(hi)} → +1")
        ds = dataclasses.replace(ds, y=y)
    info["classes"] = classes
    train, test = split(ds, cfg.data.test_fraction, cfg.data.split_seed)
    if cfg.data.standardise:
        constant = np.flatnonzero(np.ptp(train.X, axis=0) == 0).tolist()
        train, test, mean, std = standardise(train, test)
        info["standardised"] = {"mean": mean.tolist(), "std": std.tolist()}
        if constant:
            notes.append(f"input columns {constant} are constant on the training rows (centred, not scaled)")
    if cfg.data.bias:
        train = dataclasses.replace(train, X=with_bias(train.X), bias=True)
        test = dataclasses.replace(test, X=with_bias(test.X), bias=True) if test is not None else None
    dtype = np.float64 if cfg.model.dtype == "float64" else np.float32
    train = dataclasses.replace(train, X=train.X.astype(dtype), y=train.y.astype(dtype))
    test = dataclasses.replace(test, X=test.X.astype(dtype), y=test.y.astype(dtype)) if test is not None else None
    info.update(n_train=train.n, n_test=0 if test is None else test.n, input_dim=train.d, bias=cfg.data.bias)
    notes.append(
        f"data: {info['rows']} rows × {info['features']} features from {cfg.data.path}; {train.n} for training, "
        f"{info['n_test']} held out; inputs {'standardised' if cfg.data.standardise else 'as given'}{', plus a bias' if cfg.data.bias else ''}"
    )
    return Prepared(train, test, info, notes)


def _label(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def check(cfg: Config) -> None:
    """Before the run folder is touched: the data file is read and checked, and its path made absolute
    (so that ``--resume`` and ``wgflow optimum --run`` work from any directory)."""
    prepare(cfg)
    if cfg.data.path is not None:
        cfg.data.path = str(Path(cfg.data.path).resolve())


# --------------------------------------------------------------------------- run


checkpoint_fingerprint = teacher_student.checkpoint_fingerprint


def outputs(cfg: Config) -> list[str]:
    """The files a run writes beside results.npz, summary.json and metrics.csv."""
    return teacher_student.outputs(cfg)


def run(cfg: Config, rd: RunDir, *, resume: bool = False, progress: bool | None = None) -> dict:
    data = prepare(cfg)
    for note in data.notes:
        print(note, file=sys.stderr, flush=True)
    results, optima, seconds, messages = teacher_student.train(cfg, rd, data.train, resume=resume, progress=progress)
    if data.test is not None:
        results["X_test"], results["y_test"] = np.asarray(data.test.X), np.asarray(data.test.y)
    add_test_metrics(cfg, results, data)
    summary = summarise(cfg, results, optima, seconds, messages, data)
    rd.save_npz("results.npz", **results)
    rd.write_json("summary.json", summary)
    rd.write_text("metrics.csv", teacher_student.metrics_csv(cfg, results))
    teacher_student.draw_runs(cfg, rd, results, summary, None, data.train.d)
    return summary


@jax.jit
def _outputs(objective, mus: Measure):
    return jax.vmap(objective.outputs)(mus)


def _accuracy(f: np.ndarray, y: np.ndarray, classes: list[float] | None) -> np.ndarray | None:
    """Fraction of rows whose output is nearer to the right class (two classes only), per run."""
    if classes is None:
        return None
    lo, hi = classes
    pred = np.where(f > (lo + hi) / 2, hi, lo)
    return np.mean(pred == y[None, :], axis=1)


def add_test_metrics(cfg: Config, results: dict, data: Prepared) -> None:
    """Per (parameterisation, width): each run's train accuracy, test loss (mean ℓ, no penalty) and test accuracy."""
    classes = data.info.get("classes")
    for param in cfg.model.parameterisations:
        sides = [("train", data.train)] + ([("test", data.test)] if data.test is not None else [])
        for m in cfg.sweep.widths:
            key = teacher_student._group_key(param, m)
            mus = Measure(jnp.asarray(results[f"{key}/final_positions"]), jnp.asarray(results[f"{key}/masses"]))
            for side, ds in sides:
                obj = make_objective(ds.X, ds.y, param, cfg.model.activation, cfg.model.loss, 0.0, "mean")
                f = np.asarray(_outputs(obj, mus))
                loss = np.asarray(jax.vmap(lambda fi, obj=obj: jnp.mean(jax.vmap(obj.loss.fn)(fi, obj.y)))(jnp.asarray(f)))
                results[f"{key}/{side}_loss"] = loss
                acc = _accuracy(f, np.asarray(ds.y), classes)
                if acc is not None:
                    results[f"{key}/{side}_accuracy"] = acc


def _median(values) -> float | None:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def summarise(cfg: Config, results: dict, optima: dict, seconds: float, messages: dict | None, data: Prepared) -> dict:
    """The teacher–student summary, plus test metrics per run and per (parameterisation, width), the data's
    description and notes (label mapping, split, why there is no certified optimum where there is none)."""
    summary = teacher_student.summarise(cfg, results, optima, seconds, messages)
    summary["kind"] = KIND
    runs = iter(summary["runs"])
    extra_cols = []
    for entry in summary["table"]:
        key = teacher_student._group_key(entry["parameterisation"], entry["width"])
        group = [next(runs) for _ in cfg.sweep.seeds]
        for metric in ("train_accuracy", "test_loss", "test_accuracy"):
            if f"{key}/{metric}" not in results:
                continue
            values = results[f"{key}/{metric}"]
            for row, v in zip(group, values):
                row[metric] = float(v)
            entry[f"median_{metric}"] = _median([r[metric] for r in group if r["status"] == "successful"])
            if f"median_{metric}" not in extra_cols and metric != "train_accuracy":
                extra_cols.append(f"median_{metric}")
    summary["print_columns"] = summary["print_columns"] + extra_cols
    notes = list(data.notes)
    for param, opt in optima.items():
        if opt is None:
            objective = make_objective(data.train.X, data.train.y, param, cfg.model.activation, cfg.model.loss, cfg.model.lam, cfg.model.reduction)
            notes.append(f"{param}: no certified optimum — {optimum_support.unavailable(objective)}")
    summary["data"] = data.info
    summary["notes"] = notes
    return summary


def report(cfg: Config, rd: RunDir) -> dict:
    results = rd.load_npz("results.npz")
    summary = rd.read_json("summary.json")
    teacher_student.draw_runs(cfg, rd, results, summary, None, int(results["X"].shape[1]))
    return summary
