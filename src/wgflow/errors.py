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


def require_positive(value: Any, field: str, *, allow_zero: bool = False) -> None:
    """``value > 0`` (or ``>= 0`` with ``allow_zero``) and finite, else a clear error
    (NumPy and JAX real scalars count as numbers)."""
    as_real(value, field, allow_zero=allow_zero)


def scalar(value: Any, kinds: str) -> Any:
    """``value`` as a Python number if it is a real scalar whose kind is in ``kinds``
    (``"i"``: integers, ``"f"``: floats; NumPy and JAX 0-d arrays and scalars included), else None.

    Booleans are never numbers here (``True`` is not a width of 1).
    """
    import numbers

    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if "f" in kinds else None
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if dtype is None or shape != ():
        return None
    kind = np.dtype(dtype).kind
    if kind in "iu":
        return int(value)
    if kind == "f" and "f" in kinds:
        return float(value)
    return None


def as_int(value: Any, field: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` >= ``minimum`` (Python, NumPy or JAX integer scalars), else a clear error."""
    v = scalar(value, "i")
    require(v is not None and v >= minimum, field, f"must be an integer >= {minimum}", f"set {field} to an integer >= {minimum}", value)
    return int(v)  # type: ignore[arg-type]  # checked above


def as_real(value: Any, field: str, *, allow_zero: bool = False, positive: bool = True, fix: str | None = None) -> float:
    """``value`` as a finite ``float`` (> 0, or >= 0 with ``allow_zero``; any sign unless ``positive``),
    from a Python, NumPy or JAX real scalar, else a clear error naming ``field`` (and ``fix``, if given)."""
    import math

    v = scalar(value, "if")
    ok = v is not None and math.isfinite(v) and (not positive or (v >= 0 if allow_zero else v > 0))
    bound = "" if not positive else (" >= 0" if allow_zero else " > 0")
    require(ok, field, f"must be a finite number{bound}", fix or f"set {field} to a finite value{bound}", value)
    return float(v)  # type: ignore[arg-type]  # checked above
