"""Particles (and grid points) sharded over all JAX devices (DESIGN §5 "Scale").

A measure's atoms are split along a one-axis :class:`jax.sharding.Mesh` named
``"atoms"``; the data are replicated. The flows' compiled steps are unchanged:
XLA partitions them (the outputs f = Φp become a sum across devices). The same
code runs on one CPU, several GPUs, or several hosts after
``jax.distributed.initialize()`` (docs/scaling.md). On one CPU, test it with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wgflow.measure import Measure

AXIS = "atoms"


def atom_mesh(devices=None) -> Mesh:
    """A one-axis mesh over ``devices`` (default: all devices of all processes)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (AXIS,))


def pad_to_multiple(mu: Measure, k: int) -> tuple[Measure, int]:
    """``mu`` padded with zero-mass copies of its first atom to a width divisible by ``k``
    (zero-mass atoms change neither F nor any other atom's velocity); returns (measure, m)."""
    m = mu.width
    pad = (-m) % k
    if pad == 0:
        return mu, m
    pos = jnp.concatenate([mu.positions, jnp.repeat(mu.positions[:1], pad, axis=0)])
    masses = jnp.concatenate([mu.masses, jnp.zeros((pad,), mu.masses.dtype)])
    return Measure(pos, masses), m


def shard_measure(mu: Measure, mesh: Mesh | None = None) -> tuple[Measure, int]:
    """Place the atoms of ``mu`` across the mesh (padded as needed); returns (sharded measure, true width)."""
    mesh = mesh or atom_mesh()
    mu, m = pad_to_multiple(mu, mesh.size)
    pos = jax.device_put(mu.positions, NamedSharding(mesh, P(AXIS, None)))
    masses = jax.device_put(mu.masses, NamedSharding(mesh, P(AXIS)))
    return Measure(pos, masses), m


def replicate(tree, mesh: Mesh | None = None):
    """Every array leaf of ``tree`` (e.g. an Objective's data) copied to all devices of the mesh."""
    mesh = mesh or atom_mesh()
    rep = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, rep) if isinstance(x, jax.Array) else x, tree)
