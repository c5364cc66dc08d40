"""The certified global optimum as the experiments use it: F* when it exists, else None.

Until ``wgflow.optimum`` is available, every experiment reports plain objectives.
"""

from __future__ import annotations

import math

from wgflow.objective import Objective


def global_minimum(objective: Objective):
    """The certified optimum of ``objective`` (a record with ``value``), or None where no exact program exists."""
    try:
        from wgflow.optimum import global_minimum_for  # noqa: F401
    except ImportError:
        return None
    from wgflow.errors import InputError

    try:
        return global_minimum_for(objective)
    except InputError:
        return None


def excess(value: float, optimum) -> tuple[float, float]:
    """(F − F*, (F − F*)/F*)."""
    ex = float(value) - float(optimum.value)
    rel = ex / float(optimum.value) if optimum.value != 0 else math.inf
    return ex, rel


def describe(optimum) -> dict:
    return {
        "value": float(optimum.value),
        "lower_bound": float(optimum.lower_bound),
        "upper_bound": float(optimum.upper_bound),
        "gap": float(optimum.upper_bound - optimum.lower_bound),
        "n_patterns": int(optimum.n_patterns),
    }
