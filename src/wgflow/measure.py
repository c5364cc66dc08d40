"""Measures over neurons: ``μ = Σ_k p_k δ_{θ_k}`` (conventions: ``docs/conventions.md``).

A :class:`Measure` is a JAX pytree of positions ``θ_k`` (shape ``(m, D)``) and
masses ``p_k`` (shape ``(m,)``). The same record holds a width-``m`` network
in the mean-field scaling (``p_k = ±1/m``), a weighted particle cloud, or the
masses of a grid of neurons (the grid's points as positions). Masses may be
negative for the parameterisations whose output sign is carried by the mass
(``signed``, ``split``, ``signed_square``; see :mod:`wgflow.units`).

:meth:`Measure.save` / :meth:`Measure.load` (and :func:`load_measure`, which also returns
what was recorded) keep a measure in an ``.npz`` file with its parameterisation's name and a
format version; the round trip is bit-identical in float32 and float64.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError

FORMAT = "wgflow.measure"
FORMAT_VERSION = 1


class Measure(eqx.Module):
    """Positions ``(m, D)`` and masses ``(m,)`` of an atomic measure over neurons."""

    positions: Array
    masses: Array

    def __check_init__(self):  # runs on construction, not under tracing of leaves
        pos, mass = self.positions, self.masses
        if hasattr(pos, "ndim") and hasattr(mass, "ndim") and pos.ndim >= 2 and mass.ndim >= 1:
            if pos.shape[:-1] != mass.shape:
                raise InputError(
                    "measure.masses",
                    f"shape {tuple(mass.shape)} does not match positions {tuple(pos.shape)}",
                    "give one mass per position: masses.shape == positions.shape[:-1]",
                )

    @property
    def width(self) -> int:
        """Number of atoms ``m``."""
        return self.positions.shape[-2]

    @property
    def dim(self) -> int:
        """Dimension ``D`` of the neuron space Θ (as embedded in R^D)."""
        return self.positions.shape[-1]

    @property
    def signs(self) -> Array:
        """Sign of each mass; an atom of zero mass counts as positive."""
        return jnp.where(self.masses < 0, -1.0, 1.0).astype(self.positions.dtype)

    def total_variation(self) -> Array:
        """``Σ_k |p_k|``."""
        return jnp.sum(jnp.abs(self.masses), axis=-1)

    def replace_positions(self, positions: Array) -> "Measure":
        return Measure(positions, self.masses)

    def duplicate(self, times: int = 2) -> "Measure":
        """Each atom split into ``times`` copies of equal mass: the same measure, width ``times·m``."""
        pos = jnp.repeat(self.positions, times, axis=-2)
        mass = jnp.repeat(self.masses, times, axis=-1) / times
        return Measure(pos, mass)

    def to_numpy(self) -> "Measure":
        return Measure(np.asarray(self.positions), np.asarray(self.masses))  # type: ignore[arg-type]  # a host copy: numpy leaves

    def save(self, path: str | Path, parameterisation: str, *, activation: str | None = None, metadata: dict | None = None, overwrite: bool = False) -> Path:
        """Write this measure to ``path`` (an ``.npz`` archive, the name kept exactly as given).

        Stored: ``positions`` and ``masses`` in their own dtype (float32 or float64, bit for
        bit), the ``parameterisation`` name (a registered one: it says what a position means),
        optionally the ``activation`` name and a JSON-able ``metadata`` dict, and the format and
        its version. An existing file is never replaced unless ``overwrite``; the file is
        written to a temporary name and renamed, so it is never left half-written.
        """
        return save_measure(self, path, parameterisation, activation=activation, metadata=metadata, overwrite=overwrite)

    @staticmethod
    def load(path: str | Path, *, dtype: Any = None) -> "Measure":
        """The measure saved by :meth:`save` (bit-identical); :func:`load_measure` also gives its
        parameterisation and metadata. ``dtype`` converts (e.g. ``"float32"``); a float64 file
        needs ``jax_enable_x64`` unless converted."""
        return load_measure(path, dtype=dtype).measure


def uniform_measure(positions: Array, signs: Array | None = None) -> Measure:
    """The mean-field measure of a width-``m`` network: masses ``±1/m``."""
    positions = jnp.asarray(positions)
    m = positions.shape[-2]
    masses = jnp.full(positions.shape[:-1], 1.0 / m, dtype=positions.dtype)
    if signs is not None:
        masses = masses * jnp.asarray(signs, dtype=positions.dtype)
    return Measure(positions, masses)


def stack_padded(measures: list[Measure]) -> Measure:
    """A batch (R, m_max, D) of measures of different widths, each padded with zero-mass copies
    of its first atom (they change neither F nor any velocity): one vmapped sweep over widths."""
    m_max = max(mu.width for mu in measures)
    pos, mass = [], []
    for mu in measures:
        pad = m_max - mu.width
        pos.append(jnp.concatenate([mu.positions, jnp.repeat(mu.positions[:1], pad, axis=0)]))
        mass.append(jnp.concatenate([mu.masses, jnp.zeros((pad,), mu.masses.dtype)]))
    return Measure(jnp.stack(pos), jnp.stack(mass))


# --------------------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class SavedMeasure:
    """What :func:`load_measure` read: the measure, its parameterisation (and activation) names,
    the file's format version and the metadata saved with it."""

    measure: Measure
    parameterisation: str
    activation: str | None
    version: int
    metadata: dict


def save_measure(
    mu: Measure, path: str | Path, parameterisation: str, *, activation: str | None = None, metadata: dict | None = None, overwrite: bool = False
) -> Path:
    """:meth:`Measure.save` as a function."""
    from wgflow.units import PARAMETERISATIONS

    path = Path(path)
    if not isinstance(mu, Measure):
        raise InputError("measure", f"must be a wgflow Measure, got {type(mu).__name__}")
    if not isinstance(parameterisation, str) or parameterisation not in PARAMETERISATIONS:
        raise InputError(
            "parameterisation",
            f"unknown parameterisation {parameterisation!r}",
            f"give the name of the measure's parameterisation, one of {sorted(PARAMETERISATIONS)} (register_parameterisation adds one)",
        )
    if path.exists() and not overwrite:
        raise InputError("path", f"{str(path)!r} exists; a measure is never written over a file", "choose another path, or pass overwrite=True")
    positions, masses = np.asarray(mu.positions), np.asarray(mu.masses)
    if positions.dtype.kind != "f" or masses.dtype.kind != "f":
        raise InputError("measure", f"positions and masses must be floating point, got {positions.dtype} and {masses.dtype}")
    extra = PARAMETERISATIONS[parameterisation].extra_dims
    if positions.ndim < 2 or positions.shape[-1] - extra < 1:
        raise InputError("measure.positions", f"shape {positions.shape} is not (…, m, D) with D ≥ {extra + 1} for {parameterisation!r}")
    try:
        meta = json.dumps(metadata or {})
    except TypeError as exc:
        raise InputError("metadata", f"must be JSON-serialisable ({exc})", "give numbers, strings, lists and dicts") from None
    buf = io.BytesIO()
    np.savez(
        buf,
        positions=positions,
        masses=masses,
        format=np.asarray(FORMAT),
        version=np.asarray(FORMAT_VERSION),
        parameterisation=np.asarray(parameterisation),
        activation=np.asarray(activation or ""),
        metadata=np.asarray(meta),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        if path.exists() and not overwrite:  # appeared meanwhile
            raise InputError("path", f"{str(path)!r} exists; a measure is never written over a file", "choose another path, or pass overwrite=True")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_measure(path: str | Path, *, dtype: Any = None) -> SavedMeasure:
    """A measure saved by :meth:`Measure.save`, with its parameterisation, activation, version and metadata.

    The arrays come back as JAX arrays of the saved dtype, bit for bit (``dtype`` converts).
    A float64 file with ``jax_enable_x64`` off is refused rather than silently rounded."""
    path = Path(path)
    fix = "give a file written by Measure.save"
    if not path.is_file():
        raise InputError("path", f"measure file {str(path)!r} does not exist", fix)
    if not zipfile.is_zipfile(path):
        raise InputError("path", f"{path} is not an .npz archive", fix)
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise InputError("path", f"{path} cannot be read ({exc})", fix) from None
    if str(data.get("format", "")) != FORMAT or not {"positions", "masses", "parameterisation", "version"} <= set(data):
        raise InputError("path", f"{path} is not a wgflow measure file (it has {sorted(data)})", fix)
    version = int(data["version"])
    if version > FORMAT_VERSION:
        raise InputError("path", f"{path} has format version {version}; this wgflow reads up to {FORMAT_VERSION}", "upgrade wgflow")
    positions, masses = data["positions"], data["masses"]
    if dtype is not None:
        positions, masses = positions.astype(dtype), masses.astype(dtype)
    if (positions.dtype == np.float64 or masses.dtype == np.float64) and not jax.config.jax_enable_x64:  # type: ignore[attr-defined]  # a JAX config flag
        raise InputError(
            "dtype",
            f"{path} holds float64 arrays and float64 is off in JAX (they would be rounded to float32)",
            "call jax.config.update('jax_enable_x64', True) first, or load with dtype='float32'",
        )
    activation = str(data.get("activation", "")) or None
    metadata = json.loads(str(data.get("metadata", "{}")))
    return SavedMeasure(Measure(jnp.asarray(positions), jnp.asarray(masses)), str(data["parameterisation"]), activation, version, metadata)
