"""The certified global optimum as the experiments use it: F* when an exact program exists, else None."""

from __future__ import annotations

from wgflow.errors import InputError
from wgflow.objective import Objective
from wgflow.optimum import GlobalOptimum, excess, global_minimum_for

__all__ = ["global_minimum", "excess", "describe", "unavailable"]


def global_minimum(objective: Objective) -> GlobalOptimum | None:
    """The certified optimum of ``objective``, or None where no exact program exists
    (non-ReLU σ, a loss other than square and logistic, λ = 0, rank(X) > 3)."""
    try:
        return global_minimum_for(objective)
    except InputError:
        return None


def unavailable(objective: Objective) -> str | None:
    """Why ``objective`` has no exact program (the checks of :func:`global_minimum_for`, without solving), or None."""
    from wgflow.optimum.api import _require_exact_or_sampled, problem_of

    try:
        _require_exact_or_sampled(problem_of(objective), "exact")
    except InputError as exc:
        return str(exc)
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
        "loss": optimum.loss,
        "width": int(optimum.width),
        "unmerged_width": int(optimum.unmerged_width),
        "norm": optimum.norm,
        "seconds": float(optimum.seconds),
    }
