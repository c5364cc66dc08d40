"""The certified global optimum as the experiments use it: F* when an exact program exists, else None."""

from __future__ import annotations

from wgflow.errors import InputError
from wgflow.objective import Objective
from wgflow.optimum import GlobalOptimum, excess, global_minimum_for

__all__ = ["global_minimum", "excess", "describe"]


def global_minimum(objective: Objective) -> GlobalOptimum | None:
    """The certified optimum of ``objective``, or None where no exact program exists
    (non-ReLU σ, logistic loss, λ = 0, rank(X) > 3)."""
    try:
        return global_minimum_for(objective)
    except InputError:
        return None


def describe(optimum: GlobalOptimum) -> dict:
    return {
        "value": float(optimum.value),
        "lower_bound": float(optimum.lower_bound),
        "upper_bound": float(optimum.upper_bound),
        "gap": float(optimum.gap),
        "relative_gap": float(optimum.relative_gap),
        "certified": bool(optimum.certified),
        "n_patterns": int(optimum.n_patterns),
        "norm": optimum.norm,
        "seconds": float(optimum.seconds),
    }
