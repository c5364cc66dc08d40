"""wgflow: neural networks as measures over neurons, trained by Wasserstein gradient flows.

Conventions (scalings, time, parameterisations) are those of ``DESIGN.md`` §1:
a width-m network is the measure with masses ±1/m, and every flow runs in
mean-field time.
"""

from wgflow.errors import InputError
from wgflow.losses import LOSSES, Loss, get_loss, register_loss
from wgflow.measure import Measure, uniform_measure
from wgflow.objective import Objective, make_objective
from wgflow.units import (
    ACTIVATIONS,
    PARAMETERISATIONS,
    Activation,
    Parameterisation,
    PlainNetwork,
    get_activation,
    get_parameterisation,
    register_activation,
    register_parameterisation,
)

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "InputError",
    "LOSSES",
    "Loss",
    "Measure",
    "Objective",
    "PARAMETERISATIONS",
    "PlainNetwork",
    "Parameterisation",
    "get_activation",
    "get_loss",
    "get_parameterisation",
    "register_activation",
    "register_loss",
    "register_parameterisation",
    "make_objective",
    "uniform_measure",
]
