"""Particles (and grid points) sharded over all JAX devices.

A measure's atoms are split along a one-axis :class:`jax.sharding.Mesh` named
``"atoms"``; the data are replicated. The flows' compiled steps are unchanged:
XLA partitions them (the outputs f = Φp become a sum across devices). The same
code runs on one CPU, several GPUs, or several hosts after
``jax.distributed.initialize()`` (docs/scaling.md). On one CPU, test it with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.

Several processes (``jax.distributed``): every process runs the same program on the same
inputs. Global arrays are built from each process's copy of the input (:func:`put`, with
``jax.make_array_from_callback``: a process fills only its own devices' shards), and
arrays come back to the host through :func:`to_host`, which gathers an array spread over
other processes' devices (``multihost_utils.process_allgather``) — a collective, called by
every process at the same point of the same program. With one process both are
``jax.device_put`` and ``np.asarray``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, Sharding
from jax.sharding import PartitionSpec as P

from wgflow.measure import Measure

AXIS = "atoms"


def atom_mesh(devices=None) -> Mesh:
    """A one-axis mesh over ``devices`` (default: all devices of all processes)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (AXIS,))


def put(x, sharding: Sharding) -> jax.Array:
    """``x`` (the same value on every process) as a global array with ``sharding``: each process
    fills the shards of its own devices from its copy."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(to_host(x))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def is_global(x) -> bool:
    """Whether ``x`` is a JAX array with shards on other processes' devices."""
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def to_host(x, dtype=None) -> np.ndarray:
    """``np.asarray(x, dtype)``, gathering first an array that spans other processes' devices
    (every process must call it on the same array: it is a collective)."""
    if is_global(x) and not x.is_fully_replicated:
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x, dtype)


def gathered(tree):
    """``tree`` with every array that spans other processes' devices gathered to the host
    (NumPy); other leaves unchanged."""
    return jax.tree_util.tree_map(lambda x: to_host(x) if is_global(x) else x, tree)


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
    pos = put(mu.positions, NamedSharding(mesh, P(AXIS, None)))
    masses = put(mu.masses, NamedSharding(mesh, P(AXIS)))
    return Measure(pos, masses), m


def replicate(objective, mesh: Mesh | None = None):
    """The objective with its data copied to every device and its evaluation split over ``mesh``
    (:func:`sharded_value_and_velocity`)."""
    import dataclasses

    mesh = mesh or atom_mesh()
    objective = replicated(objective, mesh)
    return dataclasses.replace(objective, mesh=mesh)


def replicated(tree, mesh: Mesh):
    """``tree`` with every JAX array copied to every device of ``mesh``."""
    rep = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: put(x, rep) if isinstance(x, jax.Array) else x, tree)


def shard_runs(batch, mesh: Mesh):
    """A batch (a leading run axis on every array) split over ``mesh`` along its runs, padded
    with copies of the last run to a multiple of the device count; returns (batch, true count)."""
    leaves = jax.tree_util.tree_leaves(batch)
    R = int(np.shape(leaves[0])[0])
    pad = (-R) % mesh.size

    def place(x):
        x = np.asarray(to_host(x))
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        return put(x, NamedSharding(mesh, P(AXIS, *([None] * (x.ndim - 1)))))

    return jax.tree_util.tree_map(place, batch), R


def _local(objective):
    import dataclasses

    return dataclasses.replace(objective, mesh=None)


def sharded_outputs(objective, mu: Measure, X):
    """``f_μ(X)``: each device sums its own atoms (chunked as planned for its share), then ``psum``."""
    local = _local(objective)

    def body(pos, masses):
        return jax.lax.psum(local.outputs(Measure(pos, masses), X), AXIS)

    return jax.shard_map(body, mesh=objective.mesh, in_specs=(P(AXIS, None), P(AXIS)), out_specs=P(), check_vma=False)(mu.positions, mu.masses)


def sharded_value_and_velocity(objective, mu: Measure):
    """``F(μ)`` and the velocities with the atoms split over the mesh: the outputs are summed
    across devices, then each device pulls the data weights back through its own atoms only."""
    local = _local(objective)

    def body(pos, masses):
        m = Measure(pos, masses)
        f = jax.lax.psum(local.outputs(m), AXIS)
        R, r = jax.value_and_grad(local.risk)(f)
        penalty, g = local.pullback(m, r)
        F = R + local.lam * jax.lax.psum(penalty, AXIS)
        return F, local.unit.project_tangent(pos, -g)

    return jax.shard_map(body, mesh=objective.mesh, in_specs=(P(AXIS, None), P(AXIS)), out_specs=(P(), P(AXIS, None)), check_vma=False)(mu.positions, mu.masses)
