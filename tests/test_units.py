"""Units and parameterisations: ∇F' against finite differences, exact maps, clear errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgflow import InputError, Measure, PlainNetwork, make_objective
from wgflow.data import teacher_student, with_bias
from wgflow.units import PARAMETERISATIONS, get_activation, get_parameterisation

ACTS = ["relu", "sigmoid", "tanh", "cos"]
PARAMS = sorted(PARAMETERISATIONS)


def _problem(param, act, bias, m=7, seed=0):
    key = jax.random.PRNGKey(seed)
    ds = teacher_student(key, 13, 3, 3, activation="relu", bias=bias, noise=0.1)
    obj = make_objective(ds.X, ds.y, param, act, lam=0.3)
    unit = obj.unit
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
    pos = jax.random.normal(k1, (m, unit.dim(obj.d)))
    if param == "sphere":
        pos = unit.retract(pos)
    signs = jnp.where(jax.random.bernoulli(k2, 0.5, (m,)), 1.0, -1.0)
    masses = signs / m if unit.signed_masses else jnp.full((m,), 1.0 / m)
    return obj, Measure(pos, masses)


@pytest.mark.parametrize("param,act,bias", list(itertools.product(PARAMS, ACTS, [False, True])))
def test_first_variation_gradient_matches_finite_differences(param, act, bias):
    obj, mu = _problem(param, act, bias)
    points = jax.random.normal(jax.random.PRNGKey(5), (4, mu.dim))
    for sign in (1.0, -1.0):
        grad = obj.first_variation_grad(mu, points, sign)
        h = 1e-6
        K, D = points.shape
        E = h * jnp.eye(D)
        plus = (points[:, None, :] + E[None]).reshape(K * D, D)  # every point moved along every axis
        minus = (points[:, None, :] - E[None]).reshape(K * D, D)
        fd = ((obj.first_variation(mu, plus, sign) - obj.first_variation(mu, minus, sign)) / (2 * h)).reshape(K, D)
        rel = np.linalg.norm(np.asarray(grad) - np.asarray(fd)) / np.linalg.norm(fd)
        assert rel < 1e-6, (param, act, bias, rel)


@pytest.mark.parametrize("param", PARAMS)
def test_velocity_is_mass_scaled_gradient_of_F(param):
    """v_k = −(1/|p_k|) ∇_{θ_k} F(μ) (tangent part): the mean-field clock, from jax.grad of F alone."""
    obj, mu = _problem(param, "tanh", False)
    F, v = obj.value_and_velocity(mu)
    assert np.isclose(F, obj.value(mu), rtol=1e-14)
    gF = jax.grad(lambda pos: obj.value(Measure(pos, mu.masses)))(mu.positions)
    expect = obj.unit.project_tangent(mu.positions, -gF / jnp.abs(mu.masses)[:, None])
    np.testing.assert_allclose(v, expect, rtol=1e-10, atol=1e-12)
    # and it is the gradient of the first variation evaluated at the particles with their signs
    np.testing.assert_allclose(v, obj.unit.project_tangent(mu.positions, -obj.first_variation_grad(mu, mu.positions, mu.signs)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("param,act", list(itertools.product(PARAMS, ACTS)))
@pytest.mark.parametrize("axis,reduction", [("none", "sum"), ("neurons", "mean"), ("data", "sum")])
def test_closed_form_velocity_matches_autodiff(param, act, axis, reduction):
    """The step's velocity (the closed-form gradient of the units, unchunked and in chunks of
    neurons or data) against jax.grad of F alone, float64, with a neuron on a data point's kink."""
    from wgflow.chunking import Chunking

    obj, mu = _problem(param, act, True, m=9)
    obj = make_objective(obj.X, obj.y, param, act, lam=0.3, reduction=reduction, chunking=Chunking(axis, 4))
    V = obj.unit.direction(mu.positions)
    x0 = obj.X[0]
    on_kink = V[0] - (V[0] @ x0) / (x0 @ x0) * x0  # v(θ_0)·x_0 = 0 exactly enough: ReLU's σ'(0) = 0 on both sides
    mu = Measure(mu.positions.at[0].set(obj.unit.with_direction(mu.positions, V.at[0].set(on_kink))[0]), mu.masses)
    F, v = obj.value_and_velocity(mu)
    np.testing.assert_allclose(F, obj.value(mu), rtol=1e-13)
    gF = jax.grad(lambda pos: obj.value(Measure(pos, mu.masses)))(mu.positions)
    expect = obj.unit.project_tangent(mu.positions, -gF / jnp.abs(mu.masses)[:, None])
    np.testing.assert_allclose(v, expect, rtol=1e-10, atol=1e-12)
    r = obj.risk_gradient(mu)
    penalty, g = obj.pullback(mu, r)
    np.testing.assert_allclose(obj.unit.project_tangent(mu.positions, -g), expect, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(obj.lam * penalty, obj.penalty(mu), rtol=1e-13)


def test_overridden_features_take_the_autodiff_path():
    """A parameterisation with its own features (not c(θ)σ(v(θ)·x)) gets autodiff's gradient."""
    import dataclasses

    from wgflow.units import Lifted

    @dataclasses.dataclass(frozen=True)
    class Squared(Lifted):
        def features(self, positions, X):
            return super().features(positions, X) ** 2

    obj, mu = _problem("lifted", "tanh", False)
    obj = make_objective(obj.X, obj.y, Squared(get_activation("tanh")), lam=0.3)
    assert not obj._closed_form()
    _, v = obj.value_and_velocity(mu)
    gF = jax.grad(lambda pos: obj.value(Measure(pos, mu.masses)))(mu.positions)
    np.testing.assert_allclose(v, -gF / jnp.abs(mu.masses)[:, None], rtol=1e-10, atol=1e-12)


def _plain(m=6, d=3, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return PlainNetwork(jax.random.normal(k1, (m, d)), jax.random.normal(k2, (m,)))


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("bias", [False, True])
def test_outputs_agree_after_mapping(param, bias):
    net = _plain(d=3)
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (20, 2 if bias else 3)))
    X = with_bias(X) if bias else X
    y = np.zeros(X.shape[0])
    expected = net.outputs(jnp.asarray(X), "relu")
    obj = make_objective(X, y, param)
    mu = obj.unit.from_plain(net)
    np.testing.assert_allclose(obj.outputs(mu), expected, rtol=0, atol=1e-12)
    back = obj.unit.to_plain(mu)
    np.testing.assert_allclose(back.outputs(jnp.asarray(X)), expected, rtol=0, atol=1e-12)


def test_lifted_map_preserves_loss_and_weight_decay():
    net = _plain(m=5)
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (11, 3)))
    y = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (11,)))
    lam = 0.37
    obj = make_objective(X, y, "lifted", lam=lam)
    plain_loss = jnp.sum((net.outputs(jnp.asarray(X)) - y) ** 2) + lam * (jnp.sum(net.W**2) + jnp.sum(net.alpha**2))
    assert np.isclose(obj.value(obj.unit.from_plain(net)), plain_loss, rtol=1e-13)


def test_sphere_map_of_zero_neuron_is_a_clear_error():
    net = _plain()
    net = PlainNetwork(net.W.at[2].set(0.0), net.alpha)
    with pytest.raises(InputError, match="neuron 2 has w = 0"):
        get_parameterisation("sphere").from_plain(net)


@pytest.mark.parametrize("param", ["lifted", "split", "sphere", "signed_square"])
def test_map_needs_homogeneous_activation(param):
    unit = get_parameterisation(param, "sigmoid")
    with pytest.raises(InputError, match="1-homogeneous"):
        unit.from_plain(_plain())


def test_signed_map_is_exact_for_any_activation():
    net = _plain()
    X = jax.random.normal(jax.random.PRNGKey(0), (9, 3))
    unit = get_parameterisation("signed", "sigmoid")
    mu = unit.from_plain(net)
    np.testing.assert_allclose(unit.features(mu.positions, X) @ mu.masses, net.outputs(X, "sigmoid"), atol=1e-12)


def test_relu_derivative_at_zero_is_zero():
    relu = get_activation("relu")
    assert float(jax.grad(relu)(0.0)) == 0.0


def test_unknown_names_are_clear_errors():
    with pytest.raises(InputError, match="activation.*unknown activation 'swish'"):
        get_activation("swish")
    with pytest.raises(InputError, match="parameterisation.*unknown parameterisation 'polar'"):
        get_parameterisation("polar")


def test_kink_projection_lands_on_the_kink():
    for name in PARAMS:
        unit = get_parameterisation(name)
        pos = jax.random.normal(jax.random.PRNGKey(0), (5, unit.dim(3)))
        pos = unit.retract(pos)
        x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
        mask = jnp.array([True, False, True, True, False])
        out = unit.project_to_kink(pos, x, mask)
        z = jnp.sum(unit.direction(out) * x, axis=1)
        np.testing.assert_allclose(z[mask], 0.0, atol=1e-12)
        np.testing.assert_array_equal(out[~mask], pos[~mask])
