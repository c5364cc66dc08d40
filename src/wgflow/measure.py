"""Measures over neurons: ``μ = Σ_k p_k δ_{θ_k}`` (DESIGN §1).

A :class:`Measure` is a JAX pytree of positions ``θ_k`` (shape ``(m, D)``) and
masses ``p_k`` (shape ``(m,)``). The same record holds a width-``m`` network
in the mean-field scaling (``p_k = ±1/m``), a weighted particle cloud, or the
masses of a grid of neurons (the grid's points as positions). Masses may be
negative for the parameterisations whose output sign is carried by the mass
(``signed``, ``split``, ``signed_square``; see :mod:`wgflow.units`).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError


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
