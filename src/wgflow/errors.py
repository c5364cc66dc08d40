"""Errors raised by wgflow.

Every check of user input raises :class:`InputError` *before* any compute, with
a message that names the offending field, the value received and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


class InputError(ValueError):
    """Bad input: names the field, the value received and what is allowed."""

    def __init__(self, field: str, problem: str, fix: str | None = None, value: Any = None):
        self.field = field
        self.value = value
        msg = f"{field}: {problem}"
        if value is not None:
            shown = repr(value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            msg += f" (got {shown})"
        if fix:
            msg += f". Fix: {fix}"
        super().__init__(msg)


def require(cond: bool | np.bool_, field: str, problem: str, fix: str | None = None, value: Any = None) -> None:
    """Raise :class:`InputError` unless ``cond`` holds."""
    if not cond:
        raise InputError(field, problem, fix, value)


def require_positive(value: float, field: str, *, allow_zero: bool = False) -> None:
    """``value > 0`` (or ``>= 0`` with ``allow_zero``) and finite, else a clear error."""
    import math
    import numbers

    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    bound = ">= 0" if allow_zero else "> 0"
    require(ok, field, f"must be a finite number {bound}", f"set {field} to a value {bound}", value)
