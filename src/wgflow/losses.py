"""Pointwise losses ℓ(f, y) and their convex conjugates.

A :class:`Loss` is a scalar function of an output f and a label y; its derivative in f is
taken by autodiff. The entropic JKO step is solved through the dual of the risk, so a
loss may also carry its convex conjugate ``ℓ*(u; y) = sup_f u f − ℓ(f, y)`` (and, where a
closed form is more accurate, the Fenchel–Young gap ``ℓ(f, y) + ℓ*(u; y) − u f ≥ 0``).
Losses are a registry: a registered name works everywhere a built-in one does.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jax import Array

from wgflow.errors import InputError

LABELS = ("real", "pm1")


@dataclasses.dataclass(frozen=True)
class Loss:
    """A pointwise loss ℓ(f, y).

    ``labels``: ``"real"`` or ``"pm1"`` (labels must be ±1). ``conjugate(u, y)``: ℓ*(u; y),
    elementwise, or None (then only the linearised JKO step can use this loss).
    ``fenchel_young(f, u, y)``: ℓ(f, y) + ℓ*(u; y) − u f in a form that keeps its precision
    near 0 (default: that sum, term by term).
    """

    name: str
    fn: Callable[[Array, Array], Array]
    labels: str = "real"
    conjugate: Callable[[Array, Array], Array] | None = None
    fenchel_young: Callable[[Array, Array, Array], Array] | None = None

    def __call__(self, f: Array, y: Array) -> Array:
        return self.fn(f, y)

    @property
    def has_conjugate(self) -> bool:
        return self.conjugate is not None

    def conjugate_grad(self, u: Array, y: Array) -> Array:
        """(ℓ*)'(u; y), elementwise."""
        return jax.grad(lambda v: jnp.sum(self._conj()(v, y)))(u)

    def conjugate_hess(self, u: Array, y: Array) -> Array:
        """(ℓ*)''(u; y), elementwise."""
        return jax.grad(lambda v: jnp.sum(self.conjugate_grad(v, y)))(u)

    def gap(self, f: Array, u: Array, y: Array) -> Array:
        """The Fenchel–Young gap ℓ(f, y) + ℓ*(u; y) − u f ≥ 0, elementwise."""
        if self.fenchel_young is not None:
            return self.fenchel_young(f, u, y)
        return self.fn(f, y) + self._conj()(u, y) - u * f

    def _conj(self) -> Callable[[Array, Array], Array]:
        if self.conjugate is None:
            raise InputError("loss", f"the {self.name!r} loss has no convex conjugate here", "register a Loss with conjugate=...")
        return self.conjugate


LOSSES: dict[str, Loss] = {}


def register_loss(loss: Loss) -> Loss:
    """Make a loss available by name (configs, the command line)."""
    if not isinstance(loss, Loss):
        raise InputError("loss", f"must be a wgflow.losses.Loss, got {type(loss).__name__}")
    if loss.labels not in LABELS:
        raise InputError("loss.labels", f"unknown label kind {loss.labels!r}", f"use one of {list(LABELS)}")
    LOSSES[loss.name] = loss
    return loss


def get_loss(loss: str | Loss) -> Loss:
    """Look up a loss by name, with an error listing the known ones."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise InputError("loss", f"unknown loss {loss!r}", f"use one of {sorted(LOSSES)} or register_loss(...)")
    return LOSSES[loss]


# the square loss of the JKO note: (f − y)², no ½; ℓ*(u; y) = u²/4 + u y, and the gap is (f − y − u/2)².
register_loss(Loss("square", lambda f, y: (f - y) ** 2, conjugate=lambda u, y: u * u / 4 + u * y, fenchel_young=lambda f, u, y: (f - y - u / 2) ** 2))
register_loss(Loss("logistic", lambda f, y: jax.nn.softplus(-y * f), labels="pm1"))
