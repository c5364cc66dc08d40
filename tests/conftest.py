"""Numerics are checked in float64 (DESIGN: "check numerics in float64")."""

import os

import jax
import matplotlib.colors as mcolors
import numpy as np
import pytest

from wgflow.runtime import release_compiled_programs

jax.config.update("jax_enable_x64", True)
# no persistent compilation cache in the test process (nor in the runs it starts): tests compile
# fresh and write nothing into the user's ~/.cache
os.environ["WGFLOW_CACHE"] = "off"


@pytest.fixture(autouse=True)
def _bounded_memory_maps():
    """The suite compiles tens of thousands of programs in one process; each keeps memory maps, and
    at the kernel's limit (vm.max_map_count) XLA segfaulted in the middle of a compilation. Compiled
    programs are dropped between tests once a third of the limit is used."""
    release_compiled_programs(1 / 3)
    yield


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


# the smallest jko-vs-gd study (two rungs of each ladder, every reference) that still writes every table
TINY_JKO_STUDY = [
    "ladder=[{tau = 0.25, blur_over_tau = 0.8, solvers = ['newton']}, {tau = 0.125, blur_over_tau = 0.4, solvers = ['newton']}]",
    "fixed_temperature.temperature=0.2",
    "fixed_temperature.taus=[0.25, 0.125]",
    "compare.final_time=0.5",
    "compare.snapshots=3",
    "compare.sinkhorn_times=1",
    "gd.step_size=0.01",
    "gd.particles=200",
    "gd.implicit=false",
    "langevin.step_size=0.01",
    "langevin.particles=200",
    "langevin.seeds=2",
    "output.animation=false",
]


def artist_colour(artist):
    """The RGB colour an artist is drawn in (a line's colour, a collection's first face or edge colour)."""
    if hasattr(artist, "get_color") and not hasattr(artist, "get_facecolor"):
        return mcolors.to_rgb(artist.get_color())
    face = np.asarray(artist.get_facecolor())
    if face.size:
        return tuple(face.reshape(-1, 4)[0, :3])
    return tuple(np.asarray(artist.get_edgecolor()).reshape(-1, 4)[0, :3])


def legend_mismatches(fig) -> list[str]:
    """Every legend entry of ``fig`` whose handle's colour differs from an artist carrying its
    label, or that labels no drawn artist at all."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    artists = [a for ax in fig.axes for a in (*ax.lines, *ax.collections, *ax.patches)]
    bad = []
    for legend in legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            label = text.get_text()
            labelled = [a for a in artists if a.get_label() == label]
            if not labelled:
                bad.append(f"{label!r} labels no artist")
            for a in labelled:
                if not np.allclose(artist_colour(handle), artist_colour(a), atol=1e-6):
                    bad.append(f"{label!r}: legend {artist_colour(handle)} vs artist {artist_colour(a)}")
    return bad
