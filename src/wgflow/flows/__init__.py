"""Flows of measures over neurons, all run by one loop (:func:`solve`).

``solve(flow, problem, x0, schedule, num_steps, *, saveat, monitor, batched)`` runs any
flow and returns a :class:`Solution` with a result code per run (:class:`RESULTS`). The
named functions are thin wrappers with one argument order (objective, initial state,
step size, number of steps, then keywords): :func:`explicit_gd`, :func:`implicit_gd`,
:func:`langevin_gd`, :func:`explicit_gd_sweep` (here), ``wgflow.flows.jko.jko`` (grids) and
``wgflow.flows.conditional.conditional_flow`` (deep ResNets).
"""

from wgflow.flows.particle import (
    ExplicitGD,
    ImplicitGD,
    LangevinGD,
    LangevinState,
    ProxSolver,
    explicit_gd,
    explicit_gd_sweep,
    implicit_gd,
    langevin_gd,
)
from wgflow.flows.schedules import constant, inverse_sqrt, polish
from wgflow.flows.solve import RESULTS, AbstractFlow, LoopState, Monitor, SaveAt, Solution, StepInfo, solve

__all__ = [
    "RESULTS",
    "AbstractFlow",
    "ExplicitGD",
    "ImplicitGD",
    "LangevinGD",
    "LangevinState",
    "LoopState",
    "Monitor",
    "ProxSolver",
    "SaveAt",
    "Solution",
    "StepInfo",
    "constant",
    "explicit_gd",
    "explicit_gd_sweep",
    "implicit_gd",
    "inverse_sqrt",
    "langevin_gd",
    "polish",
    "solve",
]
