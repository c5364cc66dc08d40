"""The certified global optimum (wgflow.optimum) against independent truths.

Truths used: brute-force sampling of activation patterns; long gradient descent of
wide networks (wgflow's own flows); an independent ℓ1 formulation (a nonnegative
lasso over the lines of the augmented arrangement, solved by L-BFGS-B); the plain
program of DESIGN §3 written out here with the mean reduction; the loss of seed 001
written out with numpy; weak duality against random networks.
"""

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from wgflow import InputError, PlainNetwork, make_objective
from wgflow.data import with_bias
from wgflow.flows import explicit_gd, polish
from wgflow.init import initial_measure
from wgflow.optimum import (
    ConvexSolver,
    GlobalOptimum,
    dual_bound,
    dual_bound_for,
    enumerate_patterns,
    exact_dual_norm,
    excess,
    global_minimum,
    global_minimum_for,
    optimum_command,
    regions_in_general_position,
    sampled_dual_norm,
)


def seed001_loss(W, alpha, X, y, lam):
    """Σ_j (Σ_i α_i relu(w_i·x_j) − y_j)² + λ Σ_i (|w_i|² + α_i²), in numpy."""
    W, alpha = np.asarray(W), np.asarray(alpha)
    out = np.maximum(X @ W.T, 0.0) @ alpha
    return float(np.sum((out - y) ** 2) + lam * (np.sum(W**2) + np.sum(alpha**2)))


def brute_force_patterns(X, num=10**6, seed=0):
    """Distinct 1[X g ≥ 0] over ``num`` Gaussian g, as a set of integer codes (the all-zero pattern of nonzero rows left out)."""
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    bits = 1 << np.arange(n, dtype=np.int64)
    nz_code = int(bits[np.linalg.norm(X, axis=1) > 0].sum())
    found = set()
    for _ in range(num // 250_000):
        codes = ((X @ rng.standard_normal((X.shape[1], 250_000)) >= 0).T.astype(np.int64)) @ bits
        found.update(np.unique(codes).tolist())
    return {c for c in found if c & nz_code}


def as_set(D):
    return set((D.astype(np.int64) @ (1 << np.arange(D.shape[1], dtype=np.int64))).tolist())


def teacher_data(n, seed, bias=True, d=2):
    """Inputs uniform on the unit sphere of R^d (plus a bias), labels of a width-2 ReLU teacher (±1 output weights)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    X = x / np.linalg.norm(x, axis=1, keepdims=True)
    X = with_bias(X) if bias else X
    W = rng.standard_normal((2, X.shape[1]))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    return X, np.maximum(X @ W.T, 0.0) @ np.array([1.0, -1.0])


# --------------------------------------------------------------------------- patterns


@pytest.mark.parametrize("d,n", [(1, 5), (2, 3), (2, 9), (3, 4), (3, 7), (3, 12)])
def test_pattern_counts_in_general_position(d, n):
    X = np.random.default_rng(10 * d + n).standard_normal((n, d))
    pat = enumerate_patterns(X)
    expected = {1: 2, 2: 2 * n, 3: n * n - n + 2}[d]
    assert pat.n_regions == expected == regions_in_general_position(n, d) == pat.expected_regions
    assert pat.general_position
    # the all-zero pattern is excluded exactly when it exists (points in an open half-space)
    assert pat.n_patterns == pat.n_regions - int(pat.has_zero_pattern)


def test_pattern_count_with_a_bias_in_the_plane():
    """Inputs in R^2 with a bias: rank 3, n² − n + 2 chambers in general position."""
    X = with_bias(np.random.default_rng(0).standard_normal((9, 2)))
    pat = enumerate_patterns(X)
    assert pat.rank == 3 and pat.n_regions == 9 * 9 - 9 + 2
    assert pat.has_zero_pattern  # g = (0, 0, −1) switches every neuron off: that pattern is left out
    assert pat.n_patterns == pat.n_regions - 1


def _degenerate(kind):
    rng = np.random.default_rng(7)
    if kind == "d2-collinear-repeated-zero":
        X = rng.standard_normal((4, 2))
        return np.vstack([X, X[0], -3.0 * X[1], 2.0 * X[2], np.zeros(2)])
    if kind == "d3-repeated-opposite-zero":
        X = rng.standard_normal((5, 3))
        return np.vstack([X, X[0], -2.0 * X[1], np.zeros(3), 0.5 * X[3]])
    if kind == "d3-three-planes-one-line":
        X = rng.standard_normal((6, 3))
        X[2] = X[0] + X[1]  # x0, x1, x2 coplanar: their three planes share a line
        X[5] = X[0] - 0.5 * X[1]  # a fourth plane through the same line
        return X
    if kind == "d3-bias-duplicate-inputs":
        x = rng.standard_normal((5, 2))
        return with_bias(np.vstack([x, x[1], x[3]]))
    if kind == "d3-rank2":
        return rng.standard_normal((6, 2)) @ rng.standard_normal((2, 3))
    if kind == "d2-rank1":
        v = rng.standard_normal(2)
        return np.outer([1.0, -2.0, 0.5, 0.0], v)
    raise KeyError(kind)


@pytest.mark.parametrize(
    "X",
    [
        np.random.default_rng(1).standard_normal((7, 2)),
        np.random.default_rng(2).standard_normal((6, 3)),
        with_bias(np.random.default_rng(3).standard_normal((5, 2))),
    ],
    ids=["d2", "d3", "d2+bias"],
)
def test_enumeration_equals_brute_force(X):
    pat = enumerate_patterns(X)
    assert as_set(pat.D) == brute_force_patterns(X)  # no pattern missed, none invented


@pytest.mark.parametrize(
    "kind",
    ["d2-collinear-repeated-zero", "d3-repeated-opposite-zero", "d3-three-planes-one-line", "d3-bias-duplicate-inputs", "d3-rank2", "d2-rank1"],
)
def test_degenerate_inputs_deduplicate(kind):
    X = _degenerate(kind)
    pat = enumerate_patterns(X)
    assert as_set(pat.D) == brute_force_patterns(X)
    assert len(as_set(pat.D)) == pat.n_patterns  # no duplicates
    assert pat.n_regions == pat.expected_regions
    if kind == "d3-three-planes-one-line":
        # 6 distinct planes, one line shared by 4 of them: Euler gives 2 + 2(4 − 1) + 2·(C(6,2) − C(4,2)) = 26
        assert pat.n_hyperplanes == 6 and pat.n_regions == 26 < regions_in_general_position(6, 3)
    if kind == "d2-collinear-repeated-zero":
        assert pat.n_hyperplanes == 4 and pat.n_regions == 8


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(2, 3),
    pts=st.lists(st.tuples(st.integers(-2, 2), st.integers(-2, 2), st.integers(-2, 2)), min_size=1, max_size=7),
)
def test_enumeration_of_integer_points_equals_brute_force(d, pts):
    """Small integer coordinates: many exact ties (three planes through a line), repeats, zero rows."""
    X = np.array(pts, float)[:, :d]
    pat = enumerate_patterns(X)
    assert as_set(pat.D) == brute_force_patterns(X, 250_000)
    assert pat.n_regions == pat.expected_regions


def test_chamber_adjacency_two_ways():
    """Facet-sharing chambers recorded by the enumeration = chambers whose signs differ in one bounding plane."""
    from wgflow.optimum.patterns import chamber_adjacency, chamber_adjacency_by_signs

    for X in (
        with_bias(np.random.default_rng(0).standard_normal((12, 2))),
        np.random.default_rng(1).standard_normal((9, 2)),
        _degenerate("d3-three-planes-one-line"),
        _degenerate("d3-rank2"),
    ):
        pat = enumerate_patterns(X)
        a = set(map(tuple, chamber_adjacency(pat)))
        assert a == set(map(tuple, chamber_adjacency_by_signs(pat))) and len(a) >= pat.n_patterns - 1
        assert all(np.sum(pat.signs[i] != pat.signs[j]) == 1 for i, j in a)


def test_every_cone_generator_has_its_pattern():
    """On K_D, relu(X u) = D X u: every generator satisfies (2D − I) X g ≥ 0 and a strict interior point realises D."""
    for X in (np.random.default_rng(4).standard_normal((8, 3)), _degenerate("d3-rank2"), _degenerate("d2-collinear-repeated-zero")):
        pat = enumerate_patterns(X)
        for i in range(pat.n_patterns):
            G = pat.cone(i)
            assert np.min((2 * pat.D[i] - 1)[:, None] * (X @ G.T)) > -1e-12
            z = X @ G.sum(axis=0)  # an interior point of the (pointed part of the) cone
            strict = np.abs(z) > 1e-12
            assert np.array_equal((z >= 0)[strict], pat.D[i][strict])
            assert np.all(np.linalg.norm(X[~strict], axis=1) == 0)  # only zero rows are undecided


def test_exact_enumeration_refuses_large_d():
    X = np.random.default_rng(0).standard_normal((10, 5))
    y = np.ones(10)
    with pytest.raises(InputError, match=r"d ≤ 3.*dual_bound.*not certified.*patterns='sampled'"):
        global_minimum(X, y, 0.1)
    with pytest.raises(InputError, match="rank"):
        enumerate_patterns(X)
    # rank ≤ 3 in a larger d is still exact
    Z = np.random.default_rng(1).standard_normal((10, 3)) @ np.random.default_rng(2).standard_normal((3, 5))
    opt = global_minimum(Z, y, 0.1)
    assert opt.exact and opt.certified and opt.relative_gap < 1e-7


# --------------------------------------------------------------------------- the value


@pytest.fixture(scope="module")
def small_problem():
    X, y = teacher_data(6, seed=0)
    return X, y, 0.2, global_minimum(X, y, 0.2)


def test_certificate_brackets_the_value(small_problem):
    X, y, lam, opt = small_problem
    assert isinstance(opt, GlobalOptimum) and opt.exact and opt.certified
    assert opt.lower_bound <= opt.value <= opt.upper_bound
    assert opt.gap >= 0 and opt.relative_gap < 1e-6
    assert opt.n_patterns == enumerate_patterns(X).n_patterns
    assert opt.solver_status == "optimal" and opt.seconds > 0


@pytest.mark.parametrize("data_seed,lam", [(1, 0.2), (2, 0.5)])
def test_gradient_descent_of_wide_networks_reaches_the_convex_value(data_seed, lam):
    """Seed 001's GD (``lifted`` is exactly plain GD) on width-32 networks, several seeds: best = P*.

    GD reaches 1e-6 in this budget when the optimum is non-degenerate; on some data
    (e.g. ``teacher_data(6, 0)`` with λ = 0.2) it is still 1e-4 above after 6000 steps —
    slow convergence, never a value below the certified lower bound (checked below).
    On the data here the best run is within ~1e-10 of P* (the certificate's gap).
    """
    X, y = teacher_data(6, seed=data_seed)
    opt = global_minimum(X, y, lam)
    obj = make_objective(X, y, "lifted", lam=lam)
    finals = []
    for seed in range(3):
        mu = initial_measure(jax.random.PRNGKey(100 + seed), "lifted", 32, obj.d, scale=0.5)
        traj = explicit_gd(obj, mu, polish(0.05, 1500, 0.005), 3000)
        assert traj.ok, traj.message
        finals.append(traj.final_objective)
    best = min(finals)
    assert abs(best - opt.value) / opt.value < 1e-6, (best, opt.value)
    assert best >= opt.lower_bound - 1e-12  # a network can never beat the dual bound
    assert opt.relative_gap < 1e-6


@pytest.mark.parametrize("param", ["lifted", "signed", "split", "sphere"])
def test_rebuilt_network_loss_is_the_convex_value(param, small_problem):
    X, y, lam, ref = small_problem
    obj = make_objective(X, y, param, lam=lam)
    opt = global_minimum_for(obj)
    assert opt.norm == "l2"
    # every ℓ2 parameterisation has the same F*
    assert opt.value == pytest.approx(ref.value, rel=1e-8)
    # the network's loss, written out, is the convex objective and the upper bound
    plain = seed001_loss(opt.network.W, opt.network.alpha, X, y, lam)
    assert plain == pytest.approx(opt.upper_bound, rel=1e-12)
    assert plain == pytest.approx(opt.value, rel=1e-8)
    # mean-field scaling: masses 1/m at √m (w, α) give the same F, at any width (duplicated neurons)
    mu = obj.unit.from_plain(PlainNetwork(jnp.asarray(opt.network.W), jnp.asarray(opt.network.alpha)))
    if param != "signed":
        np.testing.assert_allclose(np.abs(np.asarray(mu.masses)), 1.0 / opt.width)
    assert float(obj.value(mu.duplicate(3))) == pytest.approx(opt.upper_bound, rel=1e-12)


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("data", ["d2", "d2+bias", "d3-three-planes-one-line", "d3-repeated-opposite-zero", "d3-rank2"])
def test_cone_formulation_equals_plain(norm, data):
    rng = np.random.default_rng(11)
    if data.startswith("d2"):
        X = rng.standard_normal((9, 2))
        X = with_bias(X) if data == "d2+bias" else X
    else:
        X = _degenerate(data)
    y = rng.standard_normal(X.shape[0])
    vals = {}
    for f in ("plain", "cone", "working_set"):
        opt = global_minimum(X, y, 0.1, norm=norm, solver=ConvexSolver(formulation=f))
        assert opt.formulation == f and opt.certified and opt.relative_gap < 1e-7
        vals[f] = opt.value
    assert vals["cone"] == pytest.approx(vals["plain"], rel=1e-7)
    assert vals["working_set"] == pytest.approx(vals["plain"], rel=1e-7)


def _lasso_l1_value(X, y, lam):
    """ℓ1 P* by an independent formulation: on K_D ∩ (orthant) ‖u‖₁ is linear, and the extreme rays
    of these cones are lines a × b of two planes among {x_j^⊥} ∪ {e_i^⊥}: a nonnegative lasso over
    that dictionary (both output signs), solved by L-BFGS-B."""
    d = X.shape[1]
    normals = np.vstack([X, np.eye(d)])
    if d == 2:
        Q = np.stack([-normals[:, 1], normals[:, 0]], axis=1)
    else:
        Q = np.array([np.cross(a, b) for a, b in itertools.combinations(normals, 2)])
    Q = Q[np.linalg.norm(Q, axis=1) > 1e-12]
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Q = np.vstack([Q, -Q])
    Phi = np.maximum(X @ Q.T, 0.0)
    Phi = np.hstack([Phi, -Phi])
    cost = lam * np.tile(np.sum(np.abs(Q), axis=1), 2)

    def f(c):
        r = Phi @ c - y
        return r @ r + cost @ c, 2 * Phi.T @ r + cost

    res = minimize(
        f, np.zeros(Phi.shape[1]), jac=True, method="L-BFGS-B", bounds=[(0, None)] * Phi.shape[1], options={"maxiter": 20000, "ftol": 1e-16, "gtol": 1e-12}
    )
    return res.fun


@pytest.mark.parametrize("bias", [False, True])
def test_l1_program_against_an_independent_lasso(bias):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 2))
    X = with_bias(X) if bias else X
    y = rng.standard_normal(7)
    opt = global_minimum(X, y, 0.1, norm="l1")
    assert opt.certified and opt.relative_gap < 1e-7
    assert _lasso_l1_value(X, y, 0.1) == pytest.approx(opt.value, rel=1e-7)


@pytest.mark.slow
def test_l1_program_against_signed_square_gradient_descent():
    """Chizat–Bach's 2-homogeneous ``signed_square`` flow: its loss never beats F*, and wide runs get close."""
    X, y = teacher_data(6, seed=0)
    obj = make_objective(X, y, "signed_square", lam=0.2)
    opt = global_minimum_for(obj)
    assert opt.norm == "l1" and opt.certified
    best = math.inf
    for seed in range(3):
        mu = initial_measure(jax.random.PRNGKey(10 + seed), "signed_square", 32, obj.d, scale=0.5)
        traj = explicit_gd(obj, mu, polish(0.01, 10000, 0.001), 20000)
        assert traj.ok
        assert np.all(traj.objective >= opt.lower_bound - 1e-12)
        best = min(best, traj.final_objective)
    assert (best - opt.value) / opt.value < 1e-4


def test_mean_reduction_rescaling_is_exact():
    """min (1/n)‖r‖² + λ·reg = (1/n)·P*(λ → nλ): compared with the plain program written here, mean-scaled."""
    import cvxpy as cp

    rng = np.random.default_rng(5)
    X = with_bias(rng.standard_normal((7, 2)))
    y = rng.standard_normal(7)
    n, lam = 7, 0.03
    opt = global_minimum(X, y, lam, reduction="mean")
    assert opt.reduction == "mean" and opt.certified
    # the rescaling itself
    assert opt.value == pytest.approx(global_minimum(X, y, n * lam).value / n, rel=1e-7)
    # the mean-reduced problem solved directly: DESIGN §3's program with (1/n)‖·‖², patterns by brute force
    Ds = np.array([[(c >> j) & 1 for j in range(n)] for c in sorted(brute_force_patterns(X, 250_000))], bool)
    U, V = cp.Variable((len(Ds), 3)), cp.Variable((len(Ds), 3))
    fit = sum(np.diag(D.astype(float)) @ X @ (U[i] - V[i]) for i, D in enumerate(Ds))
    cons = [cp.multiply((2 * Ds[i] - 1).astype(float), X @ U[i]) >= 0 for i in range(len(Ds))]
    cons += [cp.multiply((2 * Ds[i] - 1).astype(float), X @ V[i]) >= 0 for i in range(len(Ds))]
    reg = cp.sum(cp.norm(U, 2, axis=1)) + cp.sum(cp.norm(V, 2, axis=1))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(fit - y) / n + 2 * lam * reg), cons)
    prob.solve(solver=cp.CLARABEL)
    assert opt.value == pytest.approx(prob.value, rel=1e-6)
    # and the upper bound is the mean-reduced Objective of the rebuilt network
    obj = make_objective(X, y, "lifted", lam=lam, reduction="mean")
    assert float(obj.value(obj.unit.from_plain(PlainNetwork(jnp.asarray(opt.network.W), jnp.asarray(opt.network.alpha))))) == pytest.approx(
        opt.upper_bound, rel=1e-12
    )


# --------------------------------------------------------------------------- dual bounds


def test_weak_duality_against_random_networks(small_problem):
    """The bound from any network's residual is ≤ P* ≤ that network's loss, and tight at the optimum."""
    X, y, lam, opt = small_problem
    rng = np.random.default_rng(0)
    for m in (1, 5, 40):
        W, a = rng.standard_normal((m, 3)), rng.standard_normal(m) * 0.5
        F = seed001_loss(W, a, X, y, lam)
        b = dual_bound(X, y, lam, y - np.maximum(X @ W.T, 0) @ a)
        assert b.certified and b.method == "exact-patterns"
        assert b.value <= opt.value + 1e-12 and opt.value <= F
    r_star = y - np.maximum(X @ np.asarray(opt.network.W).T, 0) @ np.asarray(opt.network.alpha)
    assert dual_bound(X, y, lam, r_star).value == pytest.approx(opt.value, rel=1e-7)


@pytest.mark.slow
def test_sampled_dual_norm_errs_from_below():
    """The heuristic maximisation over g can only under-estimate M (hence over-estimate the bound)."""
    X, y = teacher_data(8, seed=3)
    pat = enumerate_patterns(X)
    for seed, norm in [(0, "l2"), (1, "l2"), (2, "l1")]:
        z = np.random.default_rng(seed).standard_normal(8)
        exact = exact_dual_norm(pat, X, z, norm)
        steps = 100 if norm == "l2" else 0  # (ℓ1: sampling only, one compilation less)
        est, _ = sampled_dual_norm(X, z, norm=norm, num_samples=2000, ascent_steps=steps, key=seed)
        assert est <= exact * (1 + 1e-9)
        if norm == "l2":
            assert est >= 0.98 * exact  # and, on this small problem, nearly finds it


def test_l1_exact_dual_norm_matches_an_lp():
    """The closed-form ℓ1 dual norm (rays, axes, faces ∩ coordinate planes) equals one LP per cone."""
    from wgflow.optimum.dual import _l1_cone_norms, _l1_cone_norms_lp

    X = np.random.default_rng(6).standard_normal((7, 3))
    pat = enumerate_patterns(X)
    z = np.random.default_rng(1).standard_normal(7)
    C = (pat.D * z) @ X
    np.testing.assert_allclose(_l1_cone_norms(pat, C, 1e-12), _l1_cone_norms_lp(pat, C), rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_non_relu_and_large_d_give_labelled_bounds():
    X, y = teacher_data(10, seed=1)
    obj = make_objective(X, y, "lifted", "sigmoid", lam=0.1)
    with pytest.raises(InputError, match=r"only for ReLU.*dual_bound_for"):
        global_minimum_for(obj)
    mu = initial_measure(jax.random.PRNGKey(0), "lifted", 16, obj.d)
    b = dual_bound_for(obj, mu, num_samples=2000, ascent_steps=50)
    assert not b.certified and b.method == "sampled-ascent" and "may exceed the true optimum" in b.note
    assert b.value <= float(obj.value(mu))  # here, a bound below this run's loss
    # d = 5: sampled patterns give an upper bound with a labelled, uncertified lower estimate
    X5 = np.random.default_rng(0).standard_normal((12, 5))
    y5 = np.random.default_rng(1).standard_normal(12)
    opt = global_minimum(X5, y5, 0.1, patterns="sampled", num_samples=5_000)
    assert not opt.exact and not opt.certified and opt.formulation == "plain-sampled"
    assert opt.upper_bound == pytest.approx(seed001_loss(opt.network.W, opt.network.alpha, X5, y5, 0.1), rel=1e-12)
    assert opt.lower_bound <= opt.upper_bound
    assert not dual_bound(X5, y5, 0.1, y5).certified  # the same sampling settings: compiled once


# --------------------------------------------------------------------------- helpers, errors, CLI


def test_excess():
    assert excess(3.0, 2.0) == (1.0, 0.5)
    assert excess(0.0, 0.0) == (0.0, 0.0)
    assert excess(1.0, 0.0)[1] == math.inf


def test_excess_of_a_run(small_problem):
    from wgflow.optimum import network_loss

    X, y, lam, opt = small_problem
    rng = np.random.default_rng(0)
    F = network_loss(make_objective(X, y, "lifted", lam=lam), PlainNetwork(rng.standard_normal((8, 3)), rng.standard_normal(8)))
    abs_, rel = excess(F, opt)
    assert abs_ == pytest.approx(F - opt.value) and rel == pytest.approx((F - opt.value) / opt.value) and rel > 0


def test_bad_input_is_one_clear_error():
    X, y = teacher_data(6, seed=0)
    for lam in (0.0, -1.0):
        with pytest.raises(InputError, match=r"lam.*lam > 0"):
            global_minimum(X, y, lam)
    with pytest.raises(InputError, match=r"lam.*no regulariser"):
        global_minimum_for(make_objective(X, y, "lifted", lam=0.0))
    Xn = X.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(InputError, match=r"data.X.*NaN"):
        global_minimum(Xn, y, 0.1)
    with pytest.raises(InputError, match=r"data.y.*labels for"):
        global_minimum(X, y[:-1], 0.1)
    with pytest.raises(InputError, match="norm"):
        global_minimum(X, y, 0.1, norm="l3")
    with pytest.raises(InputError, match=r"exact only for ReLU"):  # (the logistic loss has a program: tests/test_optimum_logistic.py)
        global_minimum_for(make_objective(X, y, "lifted", "sigmoid", lam=0.1))
    with pytest.raises(InputError, match="formulation"):
        global_minimum(X, y, 0.1, solver=ConvexSolver(formulation="scs"))
    with pytest.raises(InputError, match="residual"):
        dual_bound(X, y, 0.1, y[:-1])


def test_cli_prints_text_and_json(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 2))
    np.savez(tmp_path / "d.npz", X=x, y=np.maximum(x @ [1.0, -0.5], 0))
    assert optimum_command(tmp_path / "d.npz", 0.1, True, True) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("global_min", "lower_bound", "upper_bound", "n_patterns", "seconds", "gap"):
        assert key in out
    assert out["d"] == 3 and out["lower_bound"] <= out["global_min"] <= out["upper_bound"]
    assert out["n_patterns"] == 12 * 12 - 12 + 2 - int(enumerate_patterns(with_bias(x)).has_zero_pattern)
    assert optimum_command(tmp_path / "d.npz", 0.1, True, False) == 0
    text = capsys.readouterr().out
    assert "global min" in text and "lower bound" in text and "patterns" in text
    assert optimum_command(tmp_path / "missing.npz", 0.1, False, False) == 2
    assert "does not exist" in capsys.readouterr().err
    assert optimum_command(tmp_path / "d.npz", -1.0, False, True) == 2


@pytest.mark.slow
def test_certificate_is_float64_without_jax_enable_x64():
    """With JAX in its default float32 mode the upper bound must still be the float64 loss of the data."""
    import subprocess
    import sys

    code = (
        "import numpy as np, jax\n"
        "assert not jax.config.jax_enable_x64\n"
        "from wgflow.optimum import global_minimum\n"
        "from wgflow.data import with_bias\n"
        "rng = np.random.default_rng(1); X = with_bias(rng.standard_normal((10, 2))); y = rng.standard_normal(10)\n"
        "o = global_minimum(X, y, 0.1)\n"
        "print(o.relative_gap, o.certified)\n"
    )
    import os

    env = {
        **os.environ,
        "JAX_ENABLE_X64": "0",
        "PYTHONPATH": os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "src"), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    gap, certified = out.stdout.split()
    assert float(gap) < 1e-7 and certified == "True"
