"""Flows of measures over neurons; each module is one flow: ``step`` and ``run → Trajectory``."""

from wgflow.flows.particle import ProxSolver, explicit_gd, explicit_gd_sweep, implicit_gd
from wgflow.flows.schedules import constant, inverse_sqrt, polish
from wgflow.flows.trajectory import SaveAt, Trajectory

__all__ = [
    "ProxSolver", "SaveAt", "Trajectory", "constant", "explicit_gd", "explicit_gd_sweep", "implicit_gd",
    "inverse_sqrt", "polish",
]
# The other flows are modules of their own: wgflow.flows.jko (grids), wgflow.flows.resnet (deep ResNets).
