"""The certified optimum for the logistic loss, against independent solves, and the merged network.

The convex reformulation of Pilanci & Ergen (2020) holds for any convex loss: for the
logistic loss the program has exponential cones (Clarabel), the dual bound is
Σ_j H(z_j y_j) (binary entropy) under the same constraint M(z) ≤ β.
"""

import itertools

import cvxpy as cp
import jax
import numpy as np
import pytest

from wgflow import make_objective
from wgflow.data import with_bias
from wgflow.errors import InputError
from wgflow.flows import Monitor, explicit_gd
from wgflow.flows.schedules import polish
from wgflow.init import initial_measure
from wgflow.optimum import ConvexSolver, global_minimum, global_minimum_for
from wgflow.optimum.program import merge_atoms
from wgflow.units import PlainNetwork


def _classes(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    y = np.where(np.sin(2 * X[:, 0]) + X[:, 1] + 0.3 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return with_bias(X), y


def _all_patterns(X, eps=1e-5):
    """Every activation pattern 1[X g > 0] of rank-3 inputs in general position, independently of
    wgflow's enumerator: each chamber is a cone whose extreme rays are lines ρ = x_i × x_j, and the
    four chambers around ρ contain ±ρ + ε(±x_i ± x_j)."""
    G = []
    for i, j in itertools.combinations(range(len(X)), 2):
        rho = np.cross(X[i], X[j])
        rho /= np.linalg.norm(rho)
        for s0, s1, s2 in itertools.product((1, -1), repeat=3):
            G.append(s0 * rho + eps * (s1 * X[i] + s2 * X[j]))
    D = np.unique((X @ np.asarray(G).T > 0).T, axis=0)
    return D[D.any(axis=1)]


def _direct_logistic(X, y, lam, norm):
    """DESIGN §3's program written out directly in cvxpy, with the logistic loss and the mean:
    min (1/n) Σ log(1 + exp(−y f)) + β Σ_D (‖u_D‖ + ‖v_D‖), (2D − I) X u_D ≥ 0, (2D − I) X v_D ≥ 0."""
    n, d = X.shape
    D = _all_patterns(X).astype(float)
    U = cp.Variable((len(D), d))
    V = cp.Variable((len(D), d))
    f = sum(cp.multiply(D[i], X @ (U[i] - V[i])) for i in range(len(D)))
    S = 2 * D - 1
    cons = [cp.multiply(S[i], X @ U[i]) >= 0 for i in range(len(D))] + [cp.multiply(S[i], X @ V[i]) >= 0 for i in range(len(D))]
    beta = 2 * lam if norm == "l2" else lam
    reg = cp.sum(cp.norm(U, 2, axis=1) + cp.norm(V, 2, axis=1)) if norm == "l2" else cp.sum(cp.abs(U)) + cp.sum(cp.abs(V))
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-cp.multiply(y, f))) / n + beta * reg), cons)
    for equilibrate in (False, True):  # Clarabel sometimes stalls on exponential cones with one setting or the other
        try:
            prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, equilibrate_enable=equilibrate)
        except cp.error.SolverError:
            continue
        if prob.status in ("optimal", "optimal_inaccurate"):  # accurate to ~1e-8 either way (measured)
            break
    assert prob.status in ("optimal", "optimal_inaccurate"), prob.status
    return prob.value, len(D)


@pytest.mark.parametrize("norm,lam", [("l2", 0.05), ("l1", 0.05)])
def test_logistic_optimum_equals_a_direct_cvxpy_solve(norm, lam):
    X, y = _classes(10, seed=3)
    direct, n_patterns = _direct_logistic(X, y, lam, norm)
    opt = global_minimum(X, y, lam, norm=norm, reduction="mean", loss="logistic")
    assert opt.n_patterns == n_patterns == 10**2 - 10 + 2 - 1  # every chamber of general position but the all-zero one
    assert opt.certified and opt.relative_gap < 1e-7, (opt.lower_bound, opt.upper_bound)
    assert opt.value == pytest.approx(direct, rel=1e-7)
    assert opt.lower_bound <= direct * (1 + 1e-9)  # the direct value is a solver number, accurate to ~1e-8
    # all three formulations agree
    for f in ("cone", "plain"):
        other = global_minimum(X, y, lam, norm=norm, reduction="mean", loss="logistic", solver=ConvexSolver(formulation=f))
        assert other.value == pytest.approx(opt.value, rel=1e-7), f


def test_logistic_weak_duality_against_random_networks():
    """The certified lower bound is below the loss of every network (any width, any weights)."""
    X, y = _classes(12, seed=4)
    lam = 0.03
    opt = global_minimum(X, y, lam, reduction="mean", loss="logistic")
    obj = make_objective(X, y, "lifted", "relu", "logistic", lam, "mean")
    rng = np.random.default_rng(0)
    for m in (1, 4, 30):
        net = PlainNetwork(rng.standard_normal((m, 3)), rng.standard_normal(m))
        F = float(obj.value(obj.unit.from_plain(net)))
        plain = np.mean(np.logaddexp(0, -y * (np.maximum(X @ net.W.T, 0) @ net.alpha))) + lam * (np.sum(net.W**2) + np.sum(net.alpha**2))
        assert F == pytest.approx(plain, rel=1e-12)  # the mean-field measure of a plain network: the same loss
        assert opt.lower_bound <= F


def test_gradient_descent_from_many_neurons_approaches_the_logistic_optimum_from_above():
    """A second, independent check: wide particle GD (mean-field ``lifted``) gets close to F*, never below."""
    X, y = _classes(16, seed=5)
    lam = 0.02
    obj = make_objective(X, y, "lifted", "relu", "logistic", lam, "mean")
    opt = global_minimum_for(obj)
    assert opt.certified
    finals = []
    for seed in range(2):
        mu = initial_measure(jax.random.PRNGKey(seed), "lifted", 64, 3, scale=0.2)
        sol = explicit_gd(obj, mu, polish(1.0, 14_000, 0.01), 20_000, monitor=Monitor(policy="backtrack"))
        assert sol.ok, sol.message
        finals.append(sol.final_objective)
    assert min(finals) >= opt.lower_bound - 1e-12
    assert (min(finals) - opt.value) / opt.value < 1e-3, (finals, opt.value)


def test_logistic_needs_pm1_labels_and_exact_patterns():
    X, y = _classes(8, seed=1)
    with pytest.raises(InputError, match=r"labels in \{-1, \+1\}"):
        global_minimum(X, (y + 1) / 2, 0.1, loss="logistic")
    with pytest.raises(InputError, match="square loss only"):
        global_minimum(X, y, 0.1, loss="logistic", patterns="sampled")
    with pytest.raises(InputError, match="no convex program"):
        global_minimum(X, y, 0.1, loss="hinge")


# --------------------------------------------------------------------------- merged atoms


def test_merged_network_of_a_four_neuron_teacher():
    """Chizat & Bach's teacher (4 ReLU neurons in the plane): the interior-point solution has ~80 atoms;
    merged (same cone and sign summed, crumbs dropped) the network is a handful, at the same certified F*."""
    from wgflow.data import teacher_student

    ds = teacher_student(jax.random.PRNGKey(0), n=100, d=2, m0=4, teacher_signs="positive")
    obj = make_objective(ds.X, ds.y, "lifted", "relu", "square", 1e-4, "mean")
    merged = global_minimum_for(obj)
    raw = global_minimum_for(obj, ConvexSolver(merge=False))
    assert raw.width == raw.unmerged_width > 50
    assert merged.unmerged_width == raw.width and merged.width <= 12
    assert merged.certified and merged.relative_gap < 1e-9
    assert merged.value == pytest.approx(raw.value, rel=1e-9)
    # the merged network's loss is the upper bound, evaluated independently in NumPy
    W, a = np.asarray(merged.network.W), np.asarray(merged.network.alpha)
    f = np.maximum(ds.X @ W.T, 0) @ a
    assert np.mean((f - ds.y) ** 2) + 1e-4 * (np.sum(W**2) + np.sum(a**2)) == pytest.approx(merged.upper_bound, rel=1e-12)


def test_merge_atoms_is_exact_on_the_data():
    rng = np.random.default_rng(0)
    X = with_bias(rng.standard_normal((30, 2)))
    base = rng.standard_normal((3, 3))
    # each neuron split into pieces of the same direction, plus pieces in the same cone (tiny rotations), plus crumbs
    W, alpha = [], []
    for k, s in zip(range(3), (1.0, -1.0, 1.0)):
        for c, tilt in itertools.product((0.2, 0.3, 0.5), (0.0, 1e-4)):
            u = c * (base[k] + tilt * rng.standard_normal(3))
            W.append(u / np.sqrt(np.linalg.norm(u)))
            alpha.append(s * np.sqrt(np.linalg.norm(u)))
    W.append(1e-9 * rng.standard_normal(3))
    alpha.append(1e-9)
    net = PlainNetwork(np.asarray(W), np.asarray(alpha))
    merged = merge_atoms(net, X)
    out = lambda n: np.maximum(X @ np.asarray(n.W).T, 0) @ np.asarray(n.alpha)
    assert len(merged.alpha) == 3
    np.testing.assert_allclose(out(merged), out(net), atol=1e-12)
    U = np.asarray(net.W) * np.abs(np.asarray(net.alpha))[:, None]
    Um = np.asarray(merged.W) * np.abs(np.asarray(merged.alpha))[:, None]
    assert np.linalg.norm(Um, axis=1).sum() <= np.linalg.norm(U, axis=1).sum() + 1e-12  # the penalty does not grow
