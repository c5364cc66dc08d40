"""Step-size schedules in mean-field time.

A schedule is a float (constant step) or any callable ``k ↦ η_k`` (optax
schedules qualify). Step k advances mean-field time by ``η_k``; the times
``t_k = Σ_{i<k} η_i`` are the clock every flow reports.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np

from wgflow.errors import InputError, require

Schedule = Union[float, Callable[[int], float]]


def constant(eta: float) -> Callable[[int], float]:
    return lambda k: eta


def inverse_sqrt(eta: float, offset: int = 1) -> Callable[[int], float]:
    """``η_k = η / √(k + offset)``: Σ η_k diverges (the flow still reaches any time) while η_k → 0."""
    return lambda k: eta / math.sqrt(k + offset)


def polish(eta: float, steps: int, final_eta: float) -> Callable[[int], float]:
    """Constant ``eta`` for ``steps`` steps, then geometric decay towards ``final_eta`` over as many steps."""
    ratio = (final_eta / eta) ** (1.0 / max(steps, 1))
    return lambda k: eta if k < steps else max(final_eta, eta * ratio ** (k - steps))


def step_sizes(schedule: Schedule, num_steps: int, field: str = "step_size") -> np.ndarray:
    """The steps ``η_0 … η_{K-1}`` as a float64 array, each checked to be finite and > 0."""
    require(
        isinstance(num_steps, (int, np.integer)) and num_steps > 0,
        "num_steps",
        "must be a positive integer",
        "set num_steps >= 1",
        num_steps,
    )
    if callable(schedule):
        etas = np.array([float(schedule(k)) for k in range(num_steps)], dtype=np.float64)
    else:
        etas = np.full(num_steps, float(schedule), dtype=np.float64)
    bad = ~(np.isfinite(etas) & (etas > 0))
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(field, f"step {k} has size {etas[k]!r}; every step must be finite and > 0", f"use a positive {field}")
    return etas


def times(etas: np.ndarray) -> np.ndarray:
    """Mean-field times ``t_0 = 0, t_k = Σ_{i<k} η_i`` (length K + 1)."""
    return np.concatenate([[0.0], np.cumsum(etas)])
