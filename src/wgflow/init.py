"""Initial measures, all drawn from an explicit PRNG key.

Samplers return arrays; :func:`initial_measure` assembles a mean-field
:class:`~wgflow.measure.Measure` for a parameterisation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from wgflow.errors import InputError, as_int, as_real, require, require_positive
from wgflow.measure import Measure
from wgflow.units import Parameterisation, get_parameterisation


def gaussian(key: Array, m: int, dim: int, std: float = 1.0, dtype=None) -> Array:
    """``m`` samples of N(0, std² I_dim)."""
    return std * jax.random.normal(key, (m, dim), dtype=dtype or jnp.result_type(float))


def on_sphere(key: Array, m: int, dim: int, radius: float = 1.0, dtype=None) -> Array:
    """``m`` samples uniform on the sphere of radius ``radius`` in R^dim."""
    g = jax.random.normal(key, (m, dim), dtype=dtype or jnp.result_type(float))
    return radius * g / jnp.linalg.norm(g, axis=1, keepdims=True)


def heavy_tailed(key: Array, m: int, dim: int, beta: float, dtype=None) -> Array:
    """Density ∝ (1 + |w|²)^{-(dim/2 + β)}: w = g/√s, g ~ N(0, I), s ~ χ²_{2β}."""
    require_positive(beta, "init.beta")
    kg, ks = jax.random.split(key)
    dtype = dtype or jnp.result_type(float)
    g = jax.random.normal(kg, (m, dim), dtype=dtype)
    s = 2.0 * jax.random.gamma(ks, beta, (m, 1), dtype=dtype)  # χ²_{2β} = 2·Gamma(β)
    return g / jnp.sqrt(s)


def uniform(key: Array, shape, low: float, high: float, dtype=None) -> Array:
    """Uniform on [low, high] (e.g. biases on [0, π], as in Barboni, Peyré & Vialard 2024)."""
    return jax.random.uniform(key, shape, dtype=dtype or jnp.result_type(float), minval=low, maxval=high)


def random_signs(key: Array, m: int, dtype=None) -> Array:
    """Independent ±1 with probability 1/2 each."""
    return jnp.where(jax.random.bernoulli(key, 0.5, (m,)), 1.0, -1.0).astype(dtype or jnp.result_type(float))


DISTRIBUTIONS = ("gaussian", "sphere", "heavy_tailed")
OUTPUTS = ("random", "zero")
SIGNS = ("random", "alternating", "positive")


def sample(key: Array, m: int, dim: int, distribution: str = "gaussian", scale: float = 1.0, beta: float = 1.0, dtype=None):
    """``m`` points in R^dim from a named distribution, times ``scale``."""
    if distribution == "gaussian":
        return gaussian(key, m, dim, scale, dtype)
    if distribution == "sphere":
        return on_sphere(key, m, dim, scale, dtype)
    if distribution == "heavy_tailed":
        return scale * heavy_tailed(key, m, dim, beta, dtype)
    raise InputError("init.distribution", f"unknown distribution {distribution!r}", f"use one of {list(DISTRIBUTIONS)}")


def initial_measure(
    key: Array,
    parameterisation: str | Parameterisation,
    m: int,
    d: int,
    *,
    distribution: str = "gaussian",
    scale: float = 1.0,
    beta: float = 1.0,
    output: str = "random",
    signs: str = "random",
    dtype=None,
) -> Measure:
    """A width-``m`` mean-field measure for inputs in R^d.

    - ``distribution``/``scale``/``beta``: law of the position; ``sphere`` means uniform on the
      sphere of radius ``scale``. For ``lifted``, θ = (w, α) is drawn jointly in R^{d+1}; for
      ``sphere``, u is uniform on S^{d-1} and a is drawn from the 1-D law.
    - ``output="zero"``: zero output layer (α = 0 for ``lifted``, a = 0 for ``sphere``);
      only these two carry the output weight in a coordinate of their own.
    - ``signs``: for the parameterisations with signed masses, ``random`` (±1 fair),
      ``alternating`` (+ − + − …, exactly balanced) or ``positive``.
    """
    unit = get_parameterisation(parameterisation)
    m = as_int(m, "init.width")
    d = as_int(d, "init.d")
    scale = as_real(scale, "init.scale")
    beta = as_real(beta, "init.beta")
    require(output in OUTPUTS, "init.output", f"unknown output init {output!r}", f"use one of {list(OUTPUTS)}")
    require(signs in SIGNS, "init.signs", f"unknown sign init {signs!r}", f"use one of {list(SIGNS)}")
    k_w, k_a, k_s = jax.random.split(key, 3)
    dtype = dtype or jnp.result_type(float)

    if unit.name == "lifted":  # θ = (w, α) drawn jointly in R^{d+1}; α = 0 for a zero output layer
        if output == "zero":
            W = sample(k_w, m, d, distribution, scale, beta, dtype)
            pos = jnp.concatenate([W, jnp.zeros((m, 1), dtype)], axis=1)
        else:
            pos = sample(k_w, m, d + 1, distribution, scale, beta, dtype)
        return Measure(pos, jnp.full((m,), 1.0 / m, dtype))

    if unit.name == "sphere":  # u uniform on S^{d-1}; a from the 1-D law (±scale for "sphere")
        U = on_sphere(k_w, m, d, 1.0, dtype)
        a = jnp.zeros((m, 1), dtype) if output == "zero" else sample(k_a, m, 1, distribution, scale, beta, dtype)
        return Measure(jnp.concatenate([U, a], axis=1), jnp.full((m,), 1.0 / m, dtype))

    if output == "zero":
        raise InputError(
            "init.output",
            f"a zero output layer is not available for '{unit.name}': its neurons' outputs are tied to their "
            "positions, and a neuron at 0 stays there (σ'(0) = 0)",
            "use parameterisation 'lifted' or 'sphere' for a zero output layer",
        )
    pos = sample(k_w, m, d, distribution, scale, beta, dtype)
    if signs == "random":
        s = random_signs(k_s, m, dtype)
    elif signs == "alternating":
        s = jnp.where(jnp.arange(m) % 2 == 0, 1.0, -1.0).astype(dtype)
    else:
        s = jnp.ones((m,), dtype)
    return Measure(pos, s / m)
