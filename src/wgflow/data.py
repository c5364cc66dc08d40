"""Data: teacher–student generators and loading X, y from ``.npz`` / ``.csv``.

A bias is an extra input coordinate fixed to 1 (DESIGN §1): :func:`with_bias`.
"""

from __future__ import annotations

import dataclasses
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
    dtype=None,
) -> Dataset:
    """Labels from a teacher ``f*(x) = Σᵢ αᵢ σ(wᵢ·x)`` with ``m0`` neurons.

    Inputs are uniform on the unit sphere of R^d (``inputs="sphere"``) or N(0, I_d).
    Teacher neurons have ``wᵢ`` uniform on the sphere of radius ``teacher_scale`` of the
    (bias-augmented) input space and ``αᵢ = ±1`` (``teacher_signs`` ``random`` or ``positive``);
    ``noise`` adds N(0, noise²) to the labels. ``dtype`` defaults to float64 when
    ``jax_enable_x64`` is on, float32 otherwise.
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
    W = on_sphere(kw, m0, X.shape[1], teacher_scale, dtype)
    alpha = random_signs(ka, m0, dtype) if teacher_signs == "random" else jnp.ones((m0,), dtype)
    teacher = PlainNetwork(np.asarray(W), np.asarray(alpha))
    y = np.asarray(teacher.outputs(jnp.asarray(X), sigma))
    if noise > 0:
        y = y + noise * np.asarray(jax.random.normal(kn, (n,), dtype))
    return Dataset(X, y, teacher, bias, noise)


def load_npz(path: str | Path, x_key: str = "X", y_key: str = "y", bias: bool = False) -> Dataset:
    """X and y from an ``.npz`` file (keys ``X`` and ``y`` unless told otherwise)."""
    path = Path(path)
    fix = f"give an .npz file with numeric arrays {x_key!r} (n, d) and {y_key!r} (n,), e.g. from np.savez(path, {x_key}=X, {y_key}=y)"
    require(path.exists(), "data.path", f"file {str(path)!r} does not exist", "give the path of an .npz file")
    require(not path.is_dir(), "data.path", f"{path} is a folder, not an .npz file", fix)
    with open(path, "rb") as fh:
        head = fh.read(6)
    require(head != b"\x93NUMPY", "data.path", f"{path} holds a single array (.npy), not an .npz archive of X and y", fix)
    require(head.startswith(b"PK"), "data.path", f"{path} is not an .npz file (not a zip archive)", fix)
    try:
        with np.load(path, allow_pickle=False) as f:
            files = list(f.files)
            missing = [key for key in (x_key, y_key) if key not in files]
            arrays = {key: f[key] for key in (x_key, y_key) if key in files}
    except ValueError as exc:  # an object array: numpy refuses to unpickle it
        raise InputError("data.path", f"{path} holds an array numpy cannot read without unpickling ({exc})", fix) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError("data.path", f"{path} is a damaged .npz file ({exc})", fix) from None
    require(
        not missing,
        "data.path",
        f"{path.name} has no array {missing[0] if missing else ''!r} (it has {files})",
        f"save X and y under the keys {x_key!r} and {y_key!r}",
    )
    X, y = validate_data(arrays[x_key], arrays[y_key])
    return Dataset(with_bias(X) if bias else X, y, None, bias)


def load_csv(path: str | Path, target: int | str = -1, bias: bool = False, delimiter: str = ",") -> Dataset:
    """X and y from a ``.csv`` file: one row per sample, the ``target`` column is y.

    A header line is detected (a first row that is not numeric) and skipped;
    ``target`` may be a column index or a header name.
    """
    path = Path(path)
    require(path.exists(), "data.path", f"file {str(path)!r} does not exist", "give the path of a .csv file")
    require(not path.is_dir(), "data.path", f"{path} is a folder, not a .csv file", "give the path of a .csv file")
    with path.open() as fh:
        first = fh.readline().strip().split(delimiter)
    try:
        [float(v) for v in first]
        header = None
    except ValueError:
        header = [h.strip() for h in first]
    try:
        table = np.loadtxt(path, delimiter=delimiter, skiprows=1 if header else 0, ndmin=2)
    except ValueError as exc:
        raise InputError("data.path", f"{path.name} is not a numeric table ({exc})", "give one number per cell") from None
    if isinstance(target, str):
        require(
            header is not None and target in header, "data.target", f"no column named {target!r}", f"use one of {header}" if header else "give a column index"
        )
        target = cast("list[str]", header).index(target)  # required above
    ncol = table.shape[1]
    require(-ncol <= target < ncol and ncol >= 2, "data.target", f"column {target} is out of range for {ncol} columns", "give a valid column index")
    t = target % ncol
    X = np.delete(table, t, axis=1)
    X, y = validate_data(X, table[:, t])
    return Dataset(with_bias(X) if bias else X, y, None, bias)
