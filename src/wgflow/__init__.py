"""wgflow: neural networks as measures over neurons, trained by Wasserstein gradient flows.

Conventions (scalings, time, parameterisations) are those of ``docs/conventions.md``:
a width-m network is the measure with masses ±1/m, and every flow runs in
mean-field time.

The names below are imported on first use (PEP 562), so that ``import wgflow`` and the
command line's ``--help`` do not load JAX; ``from wgflow import Measure`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name → the module that defines it
_EXPORTS: dict[str, str] = {
    "InputError": "wgflow.errors",
    "LOSSES": "wgflow.losses",
    "Loss": "wgflow.losses",
    "get_loss": "wgflow.losses",
    "register_loss": "wgflow.losses",
    "Measure": "wgflow.measure",
    "uniform_measure": "wgflow.measure",
    "Objective": "wgflow.objective",
    "make_objective": "wgflow.objective",
    "ACTIVATIONS": "wgflow.units",
    "PARAMETERISATIONS": "wgflow.units",
    "Activation": "wgflow.units",
    "Parameterisation": "wgflow.units",
    "PlainNetwork": "wgflow.units",
    "get_activation": "wgflow.units",
    "get_parameterisation": "wgflow.units",
    "register_activation": "wgflow.units",
    "register_parameterisation": "wgflow.units",
}

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

if TYPE_CHECKING:
    __version__: str

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


def _version() -> str:
    """The installed distribution's version (``0+unknown`` in a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wgflow")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read on first use: importlib.metadata costs a tenth of a second
        globals()[name] = value = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wgflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
