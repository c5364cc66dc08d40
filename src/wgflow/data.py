"""Data: teacher–student generators, a user's X, y from ``.npz`` / ``.csv``, and preparing them.

:func:`load_data` reads a user's file (:func:`load_csv`, :func:`load_npz`) with one clear
error per problem; :func:`split`, :func:`standardise` and :func:`classes_to_pm1` prepare it
the way ``wgflow run fit`` does (docs/own-data.md).

A bias is an extra input coordinate fixed to 1: :func:`with_bias`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import zipfile
from pathlib import Path
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

from wgflow.errors import InputError, as_int, as_real, require
from wgflow.init import on_sphere, random_signs
from wgflow.objective import validate_data
from wgflow.units import PlainNetwork, get_activation


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Inputs ``X`` (n, d), labels ``y`` (n,), and the teacher that made them, if any.

    ``bias`` says whether the last column of ``X`` is the constant 1 of a bias.
    """

    X: np.ndarray
    y: np.ndarray
    teacher: PlainNetwork | None = None
    bias: bool = False
    noise: float = 0.0
    source: str | None = None  # the file it was read from, if any
    feature_names: tuple[str, ...] | None = None  # the CSV header's input columns
    target_name: str | None = None  # the CSV header's target column

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


def with_bias(X) -> np.ndarray:
    """Append the constant coordinate 1 to every input."""
    X = np.asarray(X)
    return np.concatenate([X, np.ones((X.shape[0], 1), X.dtype)], axis=1)


INPUTS = ("sphere", "gaussian")


def teacher_student(
    key,
    n: int,
    d: int,
    m0: int,
    *,
    activation: str = "relu",
    bias: bool = False,
    inputs: str = "sphere",
    teacher_signs: str = "random",
    teacher_scale: float = 1.0,
    noise: float = 0.0,
    teacher_angles=None,
    dtype=None,
) -> Dataset:
    """Labels from a teacher ``f*(x) = Σᵢ αᵢ σ(wᵢ·x)`` with ``m0`` neurons.

    Inputs are uniform on the unit sphere of R^d (``inputs="sphere"``) or N(0, I_d).
    Teacher neurons have ``wᵢ`` uniform on the sphere of radius ``teacher_scale`` of the
    (bias-augmented) input space and ``αᵢ = ±1`` (``teacher_signs`` ``random`` or ``positive``);
    ``noise`` adds N(0, noise²) to the labels. ``teacher_angles`` (degrees, one per neuron;
    plane inputs without a bias only) places the teacher neurons at
    ``teacher_scale · (cos φᵢ, sin φᵢ)`` instead of drawing them. ``dtype`` defaults to float64
    when ``jax_enable_x64`` is on, float32 otherwise.
    """
    n = as_int(n, "data.n")
    d = as_int(d, "data.d")
    m0 = as_int(m0, "data.teacher_width")
    require(inputs in INPUTS, "data.inputs", f"unknown input law {inputs!r}", f"use one of {list(INPUTS)}")
    require(teacher_signs in ("random", "positive"), "data.teacher_signs", "must be 'random' or 'positive'", value=teacher_signs)
    noise = as_real(noise, "data.noise", allow_zero=True)
    teacher_scale = as_real(teacher_scale, "data.teacher_scale")
    sigma = get_activation(activation)
    dtype = dtype or jnp.result_type(float)
    kx, kw, ka, kn = jax.random.split(key, 4)
    X_draw = on_sphere(kx, n, d, 1.0, dtype) if inputs == "sphere" else jax.random.normal(kx, (n, d), dtype)
    X = np.asarray(X_draw)
    if bias:
        X = with_bias(X)
    if teacher_angles is None:
        W = on_sphere(kw, m0, X.shape[1], teacher_scale, dtype)
    else:
        phi = np.radians(np.asarray(teacher_angles, dtype=float))
        require(
            d == 2 and not bias,
            "data.teacher_angles",
            f"places neurons in the plane, but the inputs are in R^{X.shape[1]}",
            "use data.d = 2 and data.bias = false, or drop data.teacher_angles",
        )
        require(
            phi.shape == (m0,), "data.teacher_angles", f"gives {phi.size} angles for data.teacher_width = {m0} neurons", "give one angle per teacher neuron"
        )
        W = jnp.asarray(teacher_scale * np.stack([np.cos(phi), np.sin(phi)], axis=1), dtype)
    alpha = random_signs(ka, m0, dtype) if teacher_signs == "random" else jnp.ones((m0,), dtype)
    teacher = PlainNetwork(np.asarray(W), np.asarray(alpha))
    y = np.asarray(teacher.outputs(jnp.asarray(X), sigma))
    if noise > 0:
        y = y + noise * np.asarray(jax.random.normal(kn, (n,), dtype))
    return Dataset(X, y, teacher, bias, noise)


def _file_error(field: str, path: Path, problem: str, fix: str) -> InputError:
    return InputError(field, f"{path}: {problem}", fix)


def _existing_file(path: str | Path, kind: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError("data.path", f"file {str(path)!r} does not exist", f"give the path of a {kind} file (relative to the current directory)")
    if path.is_dir():
        raise InputError("data.path", f"{str(path)!r} is a folder, not a {kind} file", f"give the path of a {kind} file")
    if not path.is_file():
        raise InputError("data.path", f"{str(path)!r} is not a file", f"give the path of a {kind} file")
    return path


def _bad_rows(path: Path, X: np.ndarray, y: np.ndarray, lines: list[int] | None = None) -> None:
    """An error naming the rows (or the file's ``lines``) where X or y is missing, NaN or inf."""
    bad_x = ~np.all(np.isfinite(X), axis=1)
    bad_y = ~np.isfinite(y)
    bad = bad_x | bad_y
    if bad.any():
        idx = np.flatnonzero(bad).tolist()
        rows = "rows" if lines is None else "lines"
        if lines is not None:
            idx = [lines[i] for i in idx]
        shown = ", ".join(map(str, idx[:8])) + (", …" if len(idx) > 8 else "")
        raise _file_error(
            "data.X" if bad_x.any() else "data.y",
            path,
            f"{len(idx)} of {len(bad)} rows have missing, NaN or infinite values ({rows} {shown})",
            "drop or fill those rows before training",
        )


def load_npz(path: str | Path, x_key: str = "X", y_key: str = "y", bias: bool = False) -> Dataset:
    """X (n, d) and y (n,) from an ``.npz`` file (keys ``X`` and ``y`` unless told otherwise).

    Every problem — not an npz archive, a missing key, arrays of Python objects or strings,
    wrong shapes, NaN/inf rows — is one :class:`InputError` naming the file and the fix,
    raised before any compute.
    """
    path = _existing_file(path, ".npz")
    fix_save = f"save it with numpy.savez({str(path)!r}, {x_key}=X, {y_key}=y), X of shape (n, d) and y of shape (n,), both numeric"
    if not zipfile.is_zipfile(path):
        raise _file_error("data.path", path, "is not an .npz archive (not a zip file)", fix_save)
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _file_error("data.path", path, f"is not a readable .npz archive ({exc})", fix_save) from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise _file_error("data.path", path, "holds a single array (.npy), not an archive of X and y", fix_save)
    with f:
        arrays = {}
        for key in (x_key, y_key):
            if key not in f.files:
                raise _file_error("data.path", path, f"has no array {key!r} (it has {f.files})", fix_save)
            try:
                arrays[key] = f[key]
            except ValueError as exc:  # object arrays need pickle, which is never enabled
                raise _file_error("data.path", path, f"array {key!r} holds Python objects, not numbers ({exc})", fix_save) from None
    X, y = arrays[x_key], arrays[y_key]
    for key, a in ((x_key, X), (y_key, y)):
        if a.dtype.kind not in "biuf":
            raise _file_error("data.path", path, f"array {key!r} has dtype {a.dtype}, not a real number type", fix_save)
    if X.ndim == 1:
        raise _file_error("data.X", path, f"array {x_key!r} is 1-D (shape {X.shape})", f"save one row per sample: {x_key}.reshape(-1, 1) for a single feature")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise _file_error("data.X", path, f"array {x_key!r} has shape {X.shape}, expected (n, d) with n, d ≥ 1", fix_save)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise _file_error(
            "data.y",
            path,
            f"array {y_key!r} has shape {y.shape} for {X.shape[0]} rows of {x_key!r}",
            f"save one label per row: {y_key} of shape ({X.shape[0]},)",
        )
    X, y = X.astype(np.float64), y.astype(np.float64)
    _bad_rows(path, X, y)
    X, y = validate_data(X, y)
    return Dataset(with_bias(X) if bias else X, y, None, bias, source=str(path))


MISSING = ("", "nan", "na", "n/a", "null", "none", "?")


def load_csv(
    path: str | Path,
    target: int | str | None = None,
    bias: bool = False,
    delimiter: str = ",",
    header: bool | None = None,
) -> Dataset:
    """X and y from a ``.csv`` file: one row per sample, one number per cell.

    ``header``: whether the first row names the columns (None: detected — a first row with
    a cell that is not a number). ``target``: the column of y, a header name or an index
    (None: the column named ``target`` if the header has one, else the last column).
    Empty cells and NA/NaN count as missing. A ragged row, a cell that is not a number, a
    missing value or an unknown column is one :class:`InputError` naming the file, the
    line and the fix, raised before any compute.
    """
    path = _existing_file(path, ".csv")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [(i + 1, row) for i, row in enumerate(csv.reader(fh, delimiter=delimiter)) if any(c.strip() for c in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _file_error("data.path", path, f"is not a readable text table ({exc})", "give a comma-separated text file, one row per sample") from None
    if not rows:
        raise _file_error("data.path", path, "is empty", "give one row per sample (and optionally a header row)")

    def number(cell: str) -> float | None:
        c = cell.strip()
        if c.lower() in MISSING:
            return math.nan
        try:
            return float(c)
        except ValueError:
            return None

    first = rows[0][1]
    if header is None:
        header = any(number(c) is None for c in first)
    names = [c.strip() for c in first] if header else [f"column {i}" for i in range(len(first))]
    body = rows[1:] if header else rows
    ncol = len(first)
    if not body:
        raise _file_error("data.path", path, "has a header but no data rows", "give one row per sample below the header")
    if ncol < 2:
        raise _file_error(
            "data.path", path, f"has {ncol} column; X and y need at least two", f"put the inputs and the target in separate columns (delimiter {delimiter!r})"
        )
    table = np.empty((len(body), ncol))
    for r, (line, row) in enumerate(body):
        if len(row) != ncol:
            raise _file_error(
                "data.path",
                path,
                f"line {line} has {len(row)} cells, the {'header' if header else 'first row'} has {ncol}",
                "give every row the same number of cells",
            )
        for c, cell in enumerate(row):
            v = number(cell)
            if v is None:
                raise _file_error(
                    "data.path",
                    path,
                    f"line {line}, column {names[c]!r}: {cell.strip()!r} is not a number",
                    "give one number per cell (encode a category as numbers, drop text columns)"
                    + ("" if header or r > 0 else "; a header row must come first"),
                )
            table[r, c] = v
    if target is None:
        t = names.index("target") if header and "target" in names else ncol - 1
    elif isinstance(target, str):
        if not header or target not in names:
            raise _file_error(
                "data.target",
                path,
                f"has no column named {target!r}" + (f" (its columns: {names})" if header else " (it has no header row)"),
                "give one of its column names, or a column index (0-based; -1: the last)",
            )
        t = names.index(target)
    else:
        if not (-ncol <= int(target) < ncol):
            raise _file_error("data.target", path, f"column {target} is out of range for {ncol} columns", f"give an index in [-{ncol}, {ncol - 1}]")
        t = int(target) % ncol
    X = np.delete(table, t, axis=1)
    y = table[:, t]
    _bad_rows(path, X, y, lines=[line for line, _ in body])
    X, y = validate_data(X, y)
    features = tuple(n for i, n in enumerate(names) if i != t)
    return Dataset(with_bias(X) if bias else X, y, None, bias, source=str(path), feature_names=features, target_name=names[t])


def load_data(path: str | Path, *, target: int | str | None = None, bias: bool = False, delimiter: str | None = None, header: bool | None = None) -> Dataset:
    """X and y from a user's file, by its suffix: ``.csv`` / ``.txt`` / ``.tsv`` (:func:`load_csv`) or ``.npz`` (:func:`load_npz`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        require(target is None, "data.target", "is for CSV files; an .npz file gives its arrays X and y", "leave data.target unset")
        return load_npz(path, bias=bias)
    if suffix in (".csv", ".txt", ".tsv"):
        return load_csv(path, target=target, bias=bias, delimiter=delimiter or ("\t" if suffix == ".tsv" else ","), header=header)
    raise InputError(
        "data.path", f"{str(path)!r} is neither a .csv nor an .npz file", "give a CSV table (header optional) or an .npz archive with arrays X and y"
    )


# --------------------------------------------------------------------------- preparing a user's data


def split(ds: Dataset, test_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """(train, test): a random ``test_fraction`` of the rows held out (None when it is 0).

    At least one row on each side; a fraction that leaves no training row is refused."""
    require(0 <= test_fraction < 1, "data.test_fraction", "must be in [0, 1)", value=test_fraction)
    n = ds.n
    n_test = int(round(test_fraction * n))
    if test_fraction > 0:
        n_test = max(n_test, 1)
    require(n - n_test >= 1, "data.test_fraction", f"leaves no training row of the {n}", "use a smaller fraction or more data")
    if n_test == 0:
        return ds, None
    perm = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    pick = lambda idx: dataclasses.replace(ds, X=ds.X[idx], y=ds.y[idx])
    return pick(train), pick(test)


def standardise(train: Dataset, test: Dataset | None = None) -> tuple[Dataset, Dataset | None, np.ndarray, np.ndarray]:
    """Each input column centred and scaled to unit variance with the *training* mean and standard
    deviation (applied to both sides; a constant column is only centred). A bias column is left alone.
    Returns (train, test, mean, std)."""
    cols = train.X.shape[1] - int(train.bias)
    mean = np.zeros(train.X.shape[1])
    std = np.ones(train.X.shape[1])
    mean[:cols] = train.X[:, :cols].mean(axis=0)
    sd = train.X[:, :cols].std(axis=0)
    std[:cols] = np.where(sd > 0, sd, 1.0)

    def apply(ds: Dataset | None) -> Dataset | None:
        return None if ds is None else dataclasses.replace(ds, X=((ds.X - mean) / std).astype(ds.X.dtype))

    return cast(Dataset, apply(train)), apply(test), mean[:cols], std[:cols]


def classes_to_pm1(y: np.ndarray, field: str = "data.y") -> tuple[np.ndarray, dict[float, float]]:
    """Labels of two classes as −1 and +1 (the smaller value → −1), for a loss that needs ±1.

    Returns (labels, mapping from each original value to ±1). More or fewer than two distinct
    values is an :class:`InputError`."""
    values = np.unique(y)
    if values.size != 2:
        shown = values[:6].tolist()
        raise InputError(
            field,
            f"a classification loss needs exactly two classes, the target has {values.size} distinct value(s) {shown}{' …' if values.size > 6 else ''}",
            "use the square loss for a real-valued target (model.loss = 'square'), or give a target with two classes",
        )
    lo, hi = float(values[0]), float(values[1])
    return np.where(y == hi, 1.0, -1.0).astype(y.dtype), {lo: -1.0, hi: 1.0}
