"""Particle flows against independent truths: plain GD, width invariance, implicit Euler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgflow import InputError, Measure, PlainNetwork, make_objective
from wgflow.data import teacher_student
from wgflow.flows import Monitor, ProxSolver, SaveAt, explicit_gd, implicit_gd, inverse_sqrt
from wgflow.init import initial_measure
from wgflow.units import PARAMETERISATIONS


def seed001_loss(W, alpha, X, y, lam):
    """Seed 001's loss, written out: Σ_j (Σ_i relu(w_i·x_j) α_i − y_j)² + λ Σ_i (|w_i|² + α_i²)."""
    out = jnp.maximum(X @ W.T, 0.0) @ alpha
    return jnp.sum((out - y) ** 2) + lam * (jnp.sum(W**2) + jnp.sum(alpha**2))


def plain_gd(W, alpha, X, y, lam, eta, steps):
    # jnp.maximum has derivative 1/2 at 0; the inputs below keep every w·x away from 0
    grad = jax.jit(jax.grad(seed001_loss, argnums=(0, 1)))
    for _ in range(steps):
        gW, ga = grad(W, alpha, X, y, lam)
        W, alpha = W - eta * gW, alpha - eta * ga
    return W, alpha


def _data(n=20, d=3, seed=0, bias=False):
    ds = teacher_student(jax.random.PRNGKey(seed), n, d, 3, bias=bias, noise=0.05)
    return ds.X, ds.y


def _plain_net(m, d, seed=1, scale=0.7):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return PlainNetwork(scale * jax.random.normal(k1, (m, d)), scale * jax.random.normal(k2, (m,)))


@pytest.mark.parametrize("m", [3, 50])
def test_lifted_explicit_gd_is_plain_gd(m):
    X, y = _data()
    lam, eta, steps = 1e-2, 2e-3, 100
    net = _plain_net(m, X.shape[1])
    W, a = plain_gd(net.W, net.alpha, jnp.asarray(X), jnp.asarray(y), lam, eta, steps)
    obj = make_objective(X, y, "lifted", lam=lam)
    traj = explicit_gd(obj, obj.unit.from_plain(net), eta, steps)
    assert traj.ok, traj.message
    got = obj.unit.to_plain(Measure(jnp.asarray(traj.final.positions), jnp.asarray(traj.final.masses)))
    np.testing.assert_allclose(got.W, W, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.alpha, a, rtol=0, atol=1e-10)
    # the objective along the way is the plain loss
    assert np.isclose(traj.objective[-1], seed001_loss(W, a, jnp.asarray(X), jnp.asarray(y), lam), rtol=1e-12)
    assert np.isclose(traj.times[-1], eta * steps)


# Which parameterisations' explicit flows equal the plain network's gradient descent (DESIGN §1).
SAME_FLOW_AS_PLAIN = {"lifted": True, "signed": False, "split": False, "sphere": False, "signed_square": False}


@pytest.mark.parametrize("param", sorted(PARAMETERISATIONS))
def test_which_flows_equal_plain_gd(param, capsys):
    X, y = _data()
    lam, eta, steps = 1e-2, 2e-3, 100
    net = _plain_net(8, X.shape[1])
    W, a = plain_gd(net.W, net.alpha, jnp.asarray(X), jnp.asarray(y), lam, eta, steps)
    plain_out = PlainNetwork(W, a).outputs(jnp.asarray(X))
    obj = make_objective(X, y, param, lam=lam)
    mu0 = obj.unit.from_plain(net)
    np.testing.assert_allclose(obj.outputs(mu0), net.outputs(jnp.asarray(X)), atol=1e-12)  # same start
    traj = explicit_gd(obj, mu0, eta, steps)
    out = obj.outputs(Measure(jnp.asarray(traj.final.positions), jnp.asarray(traj.final.masses)))
    diff = float(jnp.max(jnp.abs(out - plain_out)) / jnp.max(jnp.abs(plain_out)))
    with capsys.disabled():
        print(f"\n  {param}: max relative output difference to plain GD after t = {eta * steps}: {diff:.3e}")
    if SAME_FLOW_AS_PLAIN[param]:
        assert diff < 1e-10
    else:
        assert diff > 1e-4  # a different metric on Θ: a different flow


@pytest.mark.parametrize("param", sorted(PARAMETERISATIONS))
def test_width_invariance(param):
    """Duplicating every particle (m → 2m, same positions, half the mass) leaves the flow unchanged."""
    X, y = _data(bias=True)
    obj = make_objective(X, y, param, lam=1e-2)
    mu = initial_measure(jax.random.PRNGKey(4), param, 6, obj.d, scale=0.8)
    a = explicit_gd(obj, mu, 3e-3, 60)
    b = explicit_gd(obj, mu.duplicate(2), 3e-3, 60)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-12)
    np.testing.assert_allclose(b.final.positions[::2], a.final.positions, atol=1e-12)
    np.testing.assert_allclose(b.final.positions[1::2], a.final.positions, atol=1e-12)


def test_relu_neuron_at_zero_stays_at_zero():
    X, y = _data()
    obj = make_objective(X, y, "lifted", lam=0.0)
    mu = initial_measure(jax.random.PRNGKey(2), "lifted", 5, obj.d)
    pos = mu.positions.at[0].set(0.0)
    traj = explicit_gd(obj, Measure(pos, mu.masses), 1e-2, 50)
    np.testing.assert_array_equal(traj.final.positions[0], 0.0)


def test_sphere_stays_on_sphere():
    X, y = _data()
    obj = make_objective(X, y, "sphere", lam=1e-2)
    mu = initial_measure(jax.random.PRNGKey(2), "sphere", 7, obj.d)
    traj = explicit_gd(obj, mu, 1e-2, 80, save=SaveAt(every=20))
    norms = np.linalg.norm(traj.saved.positions[..., :-1], axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-12)
    assert traj.objective[-1] < traj.objective[0]


def test_save_times_and_decaying_schedule():
    X, y = _data()
    obj = make_objective(X, y, "lifted", lam=1e-2)
    mu = initial_measure(jax.random.PRNGKey(2), "lifted", 7, obj.d)
    traj = explicit_gd(obj, mu, inverse_sqrt(1e-2), 400, save=SaveAt(times=[0.1, 0.2]))
    expected_t = np.concatenate([[0], np.cumsum([1e-2 / np.sqrt(k + 1) for k in range(400)])])
    np.testing.assert_allclose(traj.times, expected_t, rtol=1e-14)
    assert traj.save_times[0] == 0 and traj.save_times[-1] == traj.times[-1]
    for s in (0.1, 0.2):  # the first step reaching each requested time is saved
        k = int(np.searchsorted(expected_t, s))
        assert k in set(traj.save_steps.tolist())
    assert traj.saved.positions.shape == (len(traj.save_steps), 7, 4)


# --------------------------------------------------------------------------- implicit


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_implicit_step_optimality_and_descent(act):
    X, y = _data(n=30)
    obj = make_objective(X, y, "lifted", act, lam=1e-2, reduction="mean")
    mu = initial_measure(jax.random.PRNGKey(3), "lifted", 20, obj.d, scale=0.8)
    solver = ProxSolver(tol=1e-8)
    traj = implicit_gd(obj, mu, 0.2, 20, solver=solver)
    assert traj.ok, traj.message
    res = traj.stats["residual"]
    assert np.all(res <= 1e-8), res.max()
    # F(θ⁺) + Σ p|θ⁺ − θ|²/(2η) ≤ F(θ): θ itself is a candidate of the proximal problem
    assert np.all(traj.stats["prox_value"] <= traj.objective[:-1] + 1e-12)
    assert np.all(np.diff(traj.objective) <= 1e-12)


def test_implicit_step_with_masses_over_many_decades():
    """Weighted atoms (e.g. a quadrature of a density) have masses over ten decades; the prox is
    solved in the mass-weighted metric, so it converges as for equal masses — and a tiny-mass atom
    moves like a particle of the same position: by its own velocity, not by its share of F."""
    X, y = _data(n=30)
    obj = make_objective(X, y, "split", "relu", lam=1e-3, reduction="mean")
    mu = initial_measure(jax.random.PRNGKey(4), "split", 40, obj.d, scale=0.5)
    masses = mu.masses * jnp.logspace(-10, 0, 40) / jnp.mean(jnp.logspace(-10, 0, 40))
    solver = ProxSolver(tol=1e-9)
    traj = implicit_gd(obj, Measure(mu.positions, masses), 0.05, 5, solver=solver)
    assert traj.ok, traj.message
    assert np.all(traj.stats["residual"] <= 1e-9)
    # one prox step moves even the tiniest atom (mass ~1e-10 of the largest) as the flow does:
    # to O(η²) of fine explicit GD over the same time
    one = implicit_gd(obj, Measure(mu.positions, masses), 0.05, 1, solver=solver)
    fine = explicit_gd(obj, Measure(mu.positions, masses), 0.05 / 500, 500)
    assert np.linalg.norm(one.final.positions[0] - fine.final.positions[0]) <= 0.05**2
    assert np.linalg.norm(one.final.positions[0] - mu.positions[0]) > 5 * 0.05**2  # it did move


def test_explicit_and_implicit_differ_by_order_eta(capsys):
    X, y = _data(n=30)
    obj = make_objective(X, y, "lifted", "tanh", lam=1e-2, reduction="mean")
    mu = initial_measure(jax.random.PRNGKey(3), "lifted", 20, obj.d, scale=0.8)
    T = 0.6
    etas = [1e-1, 3e-2, 1e-2, 3e-3]
    gaps = []
    for eta in etas:
        steps = int(round(T / eta))
        e = explicit_gd(obj, mu, eta, steps)
        i = implicit_gd(obj, mu, eta, steps, solver=ProxSolver(tol=1e-10))
        assert e.ok and i.ok, (e.message, i.message)
        gaps.append(float(np.max(np.abs(e.final.positions - i.final.positions))))
    slope = np.polyfit(np.log(etas), np.log(gaps), 1)[0]
    with capsys.disabled():
        print(f"\n  |explicit − implicit| at t = {T}: {dict(zip(etas, np.round(gaps, 8)))}; fitted order {slope:.3f}")
    assert 0.85 < slope < 1.15


# --------------------------------------------------------------------------- bad input and divergence


def test_bad_input_is_one_clear_error():
    X, y = _data()
    with pytest.raises(InputError, match="data.y.*labels for"):
        make_objective(X, y[:-1])
    Xn = np.array(X)
    Xn[3, 1] = np.nan
    with pytest.raises(InputError, match=r"data.X.*NaN/inf.*\[3, 1\]"):
        make_objective(Xn, y)
    with pytest.raises(InputError, match="data.X.*2-D"):
        make_objective(X[:, 0], y)
    with pytest.raises(InputError, match="lam.*>= 0"):
        make_objective(X, y, lam=-1.0)
    with pytest.raises(InputError, match="loss.*unknown loss"):
        make_objective(X, y, loss="hinge")
    with pytest.raises(InputError, match="logistic loss needs labels"):
        make_objective(X, y, loss="logistic")
    obj = make_objective(X, y)
    mu = initial_measure(jax.random.PRNGKey(0), "lifted", 4, obj.d)
    with pytest.raises(InputError, match="step_size.*finite and > 0"):
        explicit_gd(obj, mu, -0.1, 10)
    with pytest.raises(InputError, match="num_steps"):
        explicit_gd(obj, mu, 0.1, 0)
    with pytest.raises(InputError, match=r"measure.positions.*R\^4"):
        explicit_gd(obj, Measure(jnp.zeros((4, 5)), mu.masses), 0.1, 10)


def test_blow_up_stops_with_message_and_keeps_the_trajectory():
    X, y = _data()
    obj = make_objective(X, y, "lifted", lam=1e-3)
    mu = initial_measure(jax.random.PRNGKey(1), "lifted", 10, obj.d)
    first = explicit_gd(obj, mu, 5.0, 40)
    assert first.status == "unstable" and first.num_steps < 5, first.message  # the first rise, long before the blow-up
    traj = explicit_gd(obj, mu, 5.0, 40, save=SaveAt(every=1), monitor=Monitor(check_rise=False))
    assert traj.status == "diverged"
    assert "grew" not in traj.message and "> 1e+06 × F(0)" in traj.message and "Reduce the step size" in traj.message
    k = traj.num_steps
    assert k < 40 and len(traj.objective) == k + 1 and len(traj.times) == k + 1
    assert np.all(np.isfinite(traj.final.positions)) and np.all(np.isfinite(traj.objective[:-1]))
    assert traj.saved.positions.shape[0] == k + 1  # every step up to the stop was saved


def test_nan_stops_with_message():
    from wgflow.losses import Loss

    X, y = _data()
    poisoned = Loss("poisoned", lambda f, y: (f - y) ** 2 + jnp.log(0.3 - f))  # NaN once some f > 0.3
    obj = make_objective(X, np.abs(y) + 1.0, "lifted", loss=poisoned)
    mu = initial_measure(jax.random.PRNGKey(1), "lifted", 10, obj.d, scale=0.1)
    traj = explicit_gd(obj, mu, 1e-2, 500)
    assert traj.status == "diverged" and "became NaN" in traj.message, traj.message
    assert np.isnan(traj.objective[-1]) and np.all(np.isfinite(traj.objective[:-1]))
    assert np.all(np.isfinite(traj.final.positions))


def test_implicit_step_with_neurons_collapsing_to_the_origin():
    """A negative ReLU neuron can be sent to w = 0 in one proximal step (every kink at once).
    The solver must certify it: residual ≤ tol, and no random perturbation lowers G there."""
    from wgflow.flows.particle import _prox_objective, implicit_step

    ds = teacher_student(jax.random.PRNGKey(0), 100, 2, 4, teacher_signs="positive")
    obj = make_objective(ds.X, ds.y, "lifted", lam=1e-4, reduction="mean")
    mu = initial_measure(jax.random.PRNGKey(1), "lifted", 100, 2, scale=1.0)
    eta = 0.5
    new, _, diag = jax.jit(lambda mu: implicit_step(obj, mu, eta, ProxSolver(tol=1e-8)))(mu)
    assert float(diag["residual"]) <= 1e-8 and int(diag["at_origin"]) >= 1
    G = jax.jit(_prox_objective(obj, mu, eta))
    G0 = G(new.positions)
    origin = np.flatnonzero(np.linalg.norm(np.asarray(new.positions[:, :2]), axis=1) <= 1e-6)
    assert len(origin) >= 1
    key = jax.random.PRNGKey(7)
    for k in origin:
        dirs = jax.random.normal(jax.random.fold_in(key, int(k)), (200, 3))
        trial = jax.vmap(lambda u: G(new.positions.at[k].add(1e-4 * u / jnp.linalg.norm(u))))(dirs)
        assert float(jnp.min(trial) - G0) >= -1e-12, (k, float(jnp.min(trial) - G0))
