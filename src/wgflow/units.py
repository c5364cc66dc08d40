"""Activations and parameterisations of a neuron (conventions: ``docs/conventions.md``).

A *parameterisation* says what a neuron θ ∈ Θ contributes to the output, its
unit ``φ_θ(x)``, and its regulariser ``V(θ)``. A measure ``μ = Σ p_k δ_{θ_k}``
gives the network ``f_μ(x) = Σ_k p_k φ_{θ_k}(x)``.

============== ====================== ========================= =================
name           Θ (stored as R^D)      unit φ_θ(x)               V(θ)
============== ====================== ========================= =================
lifted         (w, α) ∈ R^d × R       α σ(w·x)                  |w|² + α²
signed         w ∈ R^d, signed mass   σ(w·x)                    2|w|
split          w ∈ R^d, mass sign ±   σ(w·x)                    2|w|
sphere         (u, a) ∈ S^{d-1} × R   a σ(u·x)                  2|a|
signed_square  p ∈ R^d, mass sign ±   σ(Σᵢ s(pᵢ) xᵢ), s(t)=t|t| |p|²
============== ====================== ========================= =================

``signed`` and ``split`` have the same unit and regulariser; they differ in
where a plain neuron's output weight goes. ``signed`` keeps ``w`` as the
position and puts α in the (signed) mass; ``split`` gives every neuron the mass
``±1/m`` and moves the scale into the position, ``u = m|α| w``. The two copies
of R^d of ``split`` and ``signed_square`` are the two signs of the mass.

Maps to and from the plain network ``f(x) = Σᵢ αᵢ σ(wᵢ·x)`` are exact for a
positively 1-homogeneous σ (ReLU). ``signed`` maps exactly for any σ.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError
from wgflow.measure import Measure

# --------------------------------------------------------------------------- activations


@dataclasses.dataclass(frozen=True)
class Activation:
    """A scalar activation σ; ``homogeneity`` is k if σ(cz) = c^k σ(z) for all c > 0."""

    name: str
    fn: Callable[[Array], Array]
    homogeneity: int | None = None
    kink_jump: float | None = None  # σ'(0⁺) − σ'(0⁻) for a σ with a kink at 0 (ReLU: 1); None if smooth

    def __call__(self, z: Array) -> Array:
        return self.fn(z)


ACTIVATIONS: dict[str, Activation] = {}


def register_activation(activation: Activation) -> Activation:
    """Make an activation available by name (configs, CLI)."""
    if not isinstance(activation, Activation):
        raise InputError("activation", f"must be a wgflow.units.Activation, got {type(activation).__name__}")
    ACTIVATIONS[activation.name] = activation
    return activation


# jax.nn.relu has a custom JVP with σ'(0) = 0 (Boursier et al. 2022); jnp.maximum(z, 0) would give 1/2.
register_activation(Activation("relu", jax.nn.relu, homogeneity=1, kink_jump=1.0))
register_activation(Activation("sigmoid", jax.nn.sigmoid))
register_activation(Activation("tanh", jnp.tanh))
register_activation(Activation("cos", jnp.cos))


def get_activation(activation: str | Activation) -> Activation:
    """Look up an activation by name, with an error listing the known ones."""
    if isinstance(activation, Activation):
        return activation
    if activation not in ACTIVATIONS:
        raise InputError(
            "activation",
            f"unknown activation {activation!r}",
            f"use one of {sorted(ACTIVATIONS)} or register_activation(...)",
        )
    return ACTIVATIONS[activation]


# --------------------------------------------------------------------------- helpers


@jax.custom_jvp
def norm(x: Array) -> Array:
    """Euclidean norm over the last axis, with the minimal-norm subgradient 0 at x = 0."""
    return jnp.sqrt(jnp.sum(x * x, axis=-1))


@norm.defjvp
def _norm_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    n = norm(x)
    safe = jnp.where(n > 0, n, 1.0)[..., None]
    direction = jnp.where(n[..., None] > 0, x / safe, 0.0)
    return n, jnp.sum(direction * t, axis=-1)


@jax.custom_jvp
def absolute(x: Array) -> Array:
    """|x| with the minimal-norm subgradient 0 at x = 0 (jnp.abs gives 1)."""
    return jnp.abs(x)


@absolute.defjvp
def _absolute_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.abs(x), jnp.sign(x) * t


def signed_square(t: Array) -> Array:
    """s(t) = t|t| (Chizat & Bach 2018, §4): makes σ(s(p)·x) 2-homogeneous in p."""
    return t * jnp.abs(t)


def signed_sqrt(v: Array) -> Array:
    """Inverse of :func:`signed_square`."""
    return jnp.sign(v) * jnp.sqrt(jnp.abs(v))


class PlainNetwork(NamedTuple):
    """A plain two-layer network ``f(x) = Σᵢ αᵢ σ(wᵢ·x)``: ``W`` is (m, d), ``alpha`` is (m,)."""

    W: Array | np.ndarray
    alpha: Array | np.ndarray

    def outputs(self, X: Array, activation: str | Activation = "relu") -> Array:
        sigma = get_activation(activation)
        return sigma(X @ self.W.T) @ self.alpha


def _balanced_plain(direction_scale: Array, mass: Array) -> PlainNetwork:
    """Plain neurons for units ``p_k σ(v_k·x)`` with ReLU, balanced: |w| = |α| = √(|p||v|)."""
    v_norm = norm(direction_scale)
    size = jnp.sqrt(jnp.abs(mass) * v_norm)
    safe = jnp.where(v_norm > 0, v_norm, 1.0)
    W = direction_scale / safe[:, None] * size[:, None]
    alpha = jnp.where(mass < 0, -1.0, 1.0) * size
    return PlainNetwork(W, alpha)


def _sign_masses(alpha: Array, m: int) -> Array:
    """Masses ±1/m with the sign of α (a zero α counts as +)."""
    return jnp.where(alpha < 0, -1.0, 1.0).astype(alpha.dtype) / m


# --------------------------------------------------------------------------- parameterisations


@dataclasses.dataclass(frozen=True)
class Parameterisation(abc.ABC):
    """How a neuron θ ∈ Θ ⊂ R^D contributes: unit φ_θ(x) and regulariser V(θ).

    Subclasses define :meth:`features`, :meth:`regulariser`, the maps to and from
    a plain network, and (for a curved Θ) :meth:`project_tangent` / :meth:`retract`.
    Instances are hashable, so they can be static arguments of ``jax.jit``.
    """

    activation: Activation = dataclasses.field(default_factory=lambda: get_activation("relu"))
    name: ClassVar[str] = ""
    signed_masses: ClassVar[bool] = False  # True: the output's sign is carried by the mass
    extra_dims: ClassVar[int] = 0  # D = d + extra_dims
    output_kink: ClassVar[float | None] = None  # κ if V = κ|c(θ)| + smooth (a kink at c = 0), else None

    # -- what a neuron is
    def dim(self, d: int) -> int:
        """Dimension D of the stored position for inputs in R^d."""
        return d + self.extra_dims

    def input_dim(self, D: int) -> int:
        return D - self.extra_dims

    @abc.abstractmethod
    def direction(self, positions: Array) -> Array:
        """``v(θ_k)`` ∈ R^d, the input weights: ``φ_θ(x) = c(θ) σ(v(θ)·x)``; shape (m, d)."""

    @abc.abstractmethod
    def with_direction(self, positions: Array, direction: Array) -> Array:
        """The positions whose :meth:`direction` is ``direction``, other coordinates kept."""

    def preactivation(self, positions: Array, X: Array) -> Array:
        """``z[j, k] = v(θ_k)·x_j``, the argument of σ; shape (n, m)."""
        return X @ self.direction(positions).T

    def output_weight(self, positions: Array) -> Array | float:
        """``c(θ_k)``, the factor in front of σ (1 unless the neuron carries its output weight)."""
        return 1.0

    def features(self, positions: Array, X: Array) -> Array:
        """Unit outputs ``Φ[j, k] = φ_{θ_k}(x_j) = c(θ_k) σ(z[j, k])``, shape (n, m)."""
        return self.activation(self.preactivation(positions, X)) * self.output_weight(positions)

    @abc.abstractmethod
    def regulariser(self, positions: Array) -> Array:
        """``V(θ_k)``, shape (m,)."""

    def project_to_kink(self, positions: Array, x: Array, mask: Array) -> Array:
        """Move the neurons with ``mask`` onto their kink ``v(θ_k)·x_k = 0`` (``x`` is (m, d))."""
        v = self.direction(positions)
        coef = jnp.sum(v * x, axis=1) / jnp.maximum(jnp.sum(x * x, axis=1), 1e-300)
        projected = self.retract(self.with_direction(positions, v - coef[:, None] * x))
        return jnp.where(mask[:, None], projected, positions)

    # -- geometry of Θ (Euclidean unless overridden)
    def project_tangent(self, positions: Array, v: Array) -> Array:
        return v

    def retract(self, positions: Array) -> Array:
        return positions

    # -- exact maps to/from a plain network
    @abc.abstractmethod
    def from_plain(self, net: PlainNetwork) -> Measure:
        """The mean-field measure (masses ±1/m) with the same outputs as ``net``."""

    @abc.abstractmethod
    def to_plain(self, measure: Measure) -> PlainNetwork:
        """A plain network with the same outputs as ``measure``."""

    def _require_homogeneous(self, what: str) -> None:
        if self.activation.homogeneity != 1:
            raise InputError(
                "activation",
                f"the {what} map of '{self.name}' is exact only for a positively 1-homogeneous σ (ReLU), not {self.activation.name!r}",
                "use activation='relu', or the 'signed' parameterisation whose map is exact for any σ",
            )

    def check_input_dim(self, D: int, d: int) -> None:
        if self.dim(d) != D:
            raise InputError(
                "measure.positions",
                f"'{self.name}' with inputs in R^{d} stores neurons in R^{self.dim(d)}, got R^{D}",
                f"give positions of shape (m, {self.dim(d)}) or data with {self.input_dim(D)} columns",
            )


@dataclasses.dataclass(frozen=True)
class _WithOutputWeight(Parameterisation):
    """Θ stored as (v, c) ∈ R^d × R: the last coordinate is the neuron's output weight c."""

    extra_dims: ClassVar[int] = 1

    def direction(self, positions):
        return positions[:, :-1]

    def with_direction(self, positions, direction):
        return jnp.concatenate([direction, positions[:, -1:]], axis=1)

    def output_weight(self, positions):
        return positions[:, -1]

    def with_output_weight(self, positions, c):
        """The positions whose output weight is ``c`` (m,), other coordinates kept."""
        return positions.at[:, -1].set(c)


@dataclasses.dataclass(frozen=True)
class Lifted(_WithOutputWeight):
    """θ = (w, α): unit α σ(w·x), V = |w|² + α² (Chizat & Bach 2018's lifting)."""

    name: ClassVar[str] = "lifted"

    def regulariser(self, positions):
        return jnp.sum(positions * positions, axis=-1)

    def from_plain(self, net):
        self._require_homogeneous("plain → lifted")
        m = net.alpha.shape[0]
        pos = jnp.sqrt(m) * jnp.concatenate([net.W, net.alpha[:, None]], axis=1)
        return Measure(pos, jnp.full((m,), 1.0 / m, dtype=pos.dtype))

    def to_plain(self, measure):
        self._require_homogeneous("lifted → plain")
        if bool(jnp.any(measure.masses < 0)):
            raise InputError("measure.masses", "'lifted' needs nonnegative masses", "carry signs in α")
        scaled = jnp.sqrt(measure.masses)[:, None] * measure.positions
        return PlainNetwork(scaled[:, :-1], scaled[:, -1])


@dataclasses.dataclass(frozen=True)
class Signed(Parameterisation):
    """θ = w with a signed mass: unit σ(w·x), V = 2|w| (a signed measure on the input weights)."""

    name: ClassVar[str] = "signed"
    signed_masses: ClassVar[bool] = True

    def direction(self, positions):
        return positions

    def with_direction(self, positions, direction):
        return direction

    def regulariser(self, positions):
        return 2.0 * norm(positions)

    def from_plain(self, net):
        return Measure(jnp.asarray(net.W), jnp.asarray(net.alpha))

    def to_plain(self, measure):
        return PlainNetwork(measure.positions, measure.masses)


@dataclasses.dataclass(frozen=True)
class Split(Signed):
    """θ = (u, ±), mass ±1/m: unit ±σ(u·x), V = 2|u| (two nonnegative measures); u = m|α|w."""

    name: ClassVar[str] = "split"

    def from_plain(self, net):
        self._require_homogeneous("plain → split")
        m = net.alpha.shape[0]
        pos = m * jnp.abs(net.alpha)[:, None] * net.W
        return Measure(pos, _sign_masses(net.alpha, m))

    def to_plain(self, measure):
        self._require_homogeneous("split → plain")
        return _balanced_plain(measure.positions, measure.masses)


@dataclasses.dataclass(frozen=True)
class Sphere(_WithOutputWeight):
    """θ = (u, a), |u| = 1: unit a σ(u·x), V = 2|a| (directions on the sphere); u = w/|w|, a = m|w|α."""

    name: ClassVar[str] = "sphere"
    output_kink: ClassVar[float | None] = 2.0

    def regulariser(self, positions):
        return 2.0 * absolute(positions[:, -1])

    def project_tangent(self, positions, v):
        U = positions[:, :-1]
        vu = v[:, :-1] - jnp.sum(v[:, :-1] * U, axis=1, keepdims=True) * U
        return jnp.concatenate([vu, v[:, -1:]], axis=1)

    def retract(self, positions):
        U = positions[:, :-1]
        return jnp.concatenate([U / norm(U)[:, None], positions[:, -1:]], axis=1)

    def from_plain(self, net):
        self._require_homogeneous("plain → sphere")
        w_norm = norm(net.W)
        if bool(jnp.any(w_norm == 0)):
            k = int(jnp.argmin(w_norm))
            raise InputError(
                "net.W",
                f"neuron {k} has w = 0, which has no direction on the sphere",
                "drop zero neurons (they contribute nothing) before mapping to 'sphere'",
            )
        m = net.alpha.shape[0]
        pos = jnp.concatenate([net.W / w_norm[:, None], (m * w_norm * net.alpha)[:, None]], axis=1)
        return Measure(pos, jnp.full((m,), 1.0 / m, dtype=pos.dtype))

    def to_plain(self, measure):
        self._require_homogeneous("sphere → plain")
        U, a = measure.positions[:, :-1], measure.positions[:, -1]
        return _balanced_plain(U * jnp.abs(a)[:, None], measure.masses * jnp.sign(a))


@dataclasses.dataclass(frozen=True)
class SignedSquare(Parameterisation):
    """θ = (p, ±), mass ±1/m: unit ±σ(Σᵢ s(pᵢ)xᵢ), V = |p|² (Chizat & Bach 2018, §4, 2-homogeneous).

    Maps preserve outputs; the regulariser differs from weight decay (|p|² = m|α|·‖w‖₁).
    """

    name: ClassVar[str] = "signed_square"
    signed_masses: ClassVar[bool] = True

    def direction(self, positions):
        return signed_square(positions)

    def with_direction(self, positions, direction):
        return signed_sqrt(direction)

    def regulariser(self, positions):
        return jnp.sum(positions * positions, axis=-1)

    def from_plain(self, net):
        self._require_homogeneous("plain → signed_square")
        m = net.alpha.shape[0]
        v = m * jnp.abs(net.alpha)[:, None] * net.W
        return Measure(signed_sqrt(v), _sign_masses(net.alpha, m))

    def to_plain(self, measure):
        self._require_homogeneous("signed_square → plain")
        return _balanced_plain(signed_square(measure.positions), measure.masses)


PARAMETERISATIONS: dict[str, type[Parameterisation]] = {}


def register_parameterisation(cls: type[Parameterisation]) -> type[Parameterisation]:
    """Make a parameterisation (a subclass of :class:`Parameterisation` with a ``name``) available
    by name (configs, the command line). Usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Parameterisation) and cls.name):
        raise InputError("parameterisation", f"must be a Parameterisation subclass with a name, got {cls!r}")
    PARAMETERISATIONS[cls.name] = cls
    return cls


for _cls in (Lifted, Signed, Split, Sphere, SignedSquare):
    register_parameterisation(_cls)


def get_parameterisation(name: str | Parameterisation, activation: str | Activation = "relu") -> Parameterisation:
    """``get_parameterisation("lifted", "relu")``, with an error listing the known names."""
    if isinstance(name, Parameterisation):
        return name
    if name not in PARAMETERISATIONS:
        raise InputError(
            "parameterisation",
            f"unknown parameterisation {name!r}",
            f"use one of {sorted(PARAMETERISATIONS)} or register_parameterisation(...)",
        )
    return PARAMETERISATIONS[name](get_activation(activation))
