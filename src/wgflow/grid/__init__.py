"""Fixed grids of neurons for the entropic JKO (Peyré 2015), one concept per module:

- ``geometry``: axes, grids and boxes (:class:`Axis`, :class:`Grid`, :func:`box_grid`, …).
- ``kernels``: the separable cost and Gibbs kernels, log and standard domain, and stabilised scaling (:func:`log_kernel`, :func:`kernel`, :func:`stabilised_log_kernel`).
- ``measures``: masses on a grid and the way to a :class:`~wgflow.measure.Measure` (:class:`GridMeasure`, :func:`bin_measure`).
- ``densities``: initial densities on a grid and particles drawn from them (:func:`initial_grid_density`, :func:`sample_from_grid`).
- ``memory``: memory probing and the JKO-step memory estimate (:func:`check_memory`).
"""

from wgflow.grid.densities import initial_grid_density, sample_from_grid
from wgflow.grid.geometry import (
    EMBEDDINGS,
    Axis,
    Grid,
    box_grid,
    sphere_grid,
    symlog_grid,
    two_scale_grid,
)
from wgflow.grid.kernels import (
    KERNEL_PATHS,
    LSE_CHUNK_ELEMENTS,
    axis_cost,
    dense_log_kernel,
    kernel,
    log_kernel,
    stabilised_log_kernel,
)
from wgflow.grid.measures import GridMeasure, bin_measure, mass_outside, to_measure
from wgflow.grid.memory import available_memory, check_memory, memory_estimate

__all__ = [
    "EMBEDDINGS",
    "KERNEL_PATHS",
    "LSE_CHUNK_ELEMENTS",
    "Axis",
    "Grid",
    "GridMeasure",
    "available_memory",
    "axis_cost",
    "bin_measure",
    "box_grid",
    "check_memory",
    "dense_log_kernel",
    "initial_grid_density",
    "kernel",
    "log_kernel",
    "mass_outside",
    "memory_estimate",
    "sample_from_grid",
    "sphere_grid",
    "stabilised_log_kernel",
    "symlog_grid",
    "to_measure",
    "two_scale_grid",
]
