"""Numerics are checked in float64 (DESIGN: "check numerics in float64")."""

import jax

jax.config.update("jax_enable_x64", True)


# the smallest chizat-bach-relu run (--set items) that still writes every file
TINY = [
    "sweep.widths=[3, 6]",
    "sweep.seeds=2",
    "train.num_steps=300",
    "output.checkpoint_every=100",
    "output.snapshots=10",
    "output.metrics_points=20",
    "output.animation=false",
]
