"""Deep mean-field ResNets and their conditional flow (seed 003) against independent truths."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate as sp_integrate
from scipy import optimize as sp_optimize
from scipy import stats

from wgflow import InputError
from wgflow.experiments.resnet_digits import train_resnet_digits
from wgflow.experiments.resnet_pl import run_resnet_pl_case
from wgflow.flows.conditional import conditional_flow, path_length, resnet_step
from wgflow.flows.solve import Monitor, SaveAt
from wgflow.metrics.resnet import PL_CONSTANT, dcot, fitted_rate, lambda0, layer_kernels
from wgflow.models import (
    ResNetParams,
    adjoint_gradient,
    discretise,
    grad_norm_sq,
    init_resnet,
    make_resnet_objective,
    node_forward,
    resnet_forward,
    resnet_loss,
    resnet_states,
)
from wgflow.resnet_data import classify, digits, near_identity

# One canonical size for most tests (M ≥ N so that the kernels K_s can be invertible): compiled once.
N0, D0, S0, M0 = 8, 3, 5, 12
M_WIDE = 4000  # the width of the tests of the initial laws (S0·M_WIDE = 20000 samples)


def _problem(N=N0, d=D0, S=S0, M=M0, seed=0, u_scale=0.5, activation="cos", delta=0.3):
    """Data near the identity and a *trained-looking* measure (u ≠ 0, so every gradient block is nonzero).

    Drawn with numpy: these tests check the ResNet's calculus, not the samplers (tested below)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    obj = make_resnet_objective(X, X + delta * np.sin(2.0 * X[:, ::-1] + 1.0), activation)
    p = ResNetParams(
        jnp.asarray(u_scale * rng.normal(size=(S, M, d))),
        jnp.asarray(rng.normal(size=(S, M, d))),
        jnp.asarray(rng.uniform(0, np.pi, size=(S, M))),
    )
    return obj, p


# --------------------------------------------------------------------------- the adjoint gradient


@pytest.mark.parametrize("activation", ["cos", "tanh", "sigmoid"])
def test_adjoint_gradient_is_SM_times_autograd(activation):
    obj, p = _problem(activation=activation)
    S, M = p.depth, p.width
    adj = adjoint_gradient(obj, p)
    auto = jax.grad(resnet_loss)(p, obj.X, obj.Y, obj.activation)  # plain autograd of the written-out loss
    for name in ("U", "W", "B"):
        a, b = getattr(adj.gradient, name), S * M * getattr(auto, name)
        assert float(jnp.max(jnp.abs(b))) > 1e-3  # a nontrivial gradient
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    assert abs(float(adj.loss) - float(resnet_loss(p, obj.X, obj.Y, obj.activation))) < 1e-14


def test_adjoint_gradient_matches_finite_differences():
    obj, p = _problem(seed=3)
    S, M = p.depth, p.width
    g = adjoint_gradient(obj, p).gradient
    f = lambda q: float(resnet_loss(q, obj.X, obj.Y, obj.activation))
    h = 1e-5
    rng = np.random.default_rng(100)
    for _ in range(3):
        V = ResNetParams(*(jnp.asarray(rng.normal(size=a.shape)) for a in (p.U, p.W, p.B)))
        shift = lambda t, V=V: ResNetParams(p.U + t * V.U, p.W + t * V.W, p.B + t * V.B)
        fd = (f(shift(h)) - f(shift(-h))) / (2 * h)
        # dL/dε along V = Σ ∂L/∂ω · V = (1/SM) Σ ∇L[μ](s, ω) · V
        pred = float(jnp.sum(g.U * V.U) + jnp.sum(g.W * V.W) + jnp.sum(g.B * V.B)) / (S * M)
        assert abs(fd - pred) <= 1e-7 * max(abs(pred), 1e-3), (fd, pred)


def test_adjoint_states_are_N_times_the_gradient_wrt_the_state():
    """pⁱ_k = N ∂L/∂xⁱ_k: checked by autograd of the tail of the network started at x_k."""
    obj, p = _problem(seed=1)
    N, S = obj.N, p.depth
    adj = adjoint_gradient(obj, p)
    np.testing.assert_allclose(adj.adjoints[-1], adj.states[-1] - obj.Y, atol=1e-14)
    for k in (0, 2, S - 1):
        tail = ResNetParams(p.U[k:], p.W[k:], p.B[k:])

        def loss_from(x, tail=tail, k=k):  # the remaining S − k layers with the same step 1/S
            for j in range(tail.depth):
                x = x + jnp.cos(x @ tail.W[j].T + tail.B[j]) @ tail.U[j] / p.width / S
            return 0.5 * jnp.sum((x - obj.Y) ** 2) / N

        np.testing.assert_allclose(adj.adjoints[k], N * jax.grad(loss_from)(adj.states[k]), rtol=0, atol=1e-12)


def test_energy_identity_dL_dt_equals_minus_grad_sq():
    """dL/dt = −‖∇L‖²_{L²(μ)}: one tiny explicit step decreases L by η‖∇L‖² to first order."""
    obj, p = _problem(seed=2)
    eta = 1e-6
    new, L0, diag = resnet_step(obj, p, eta)
    L1 = float(resnet_loss(new, obj.X, obj.Y, obj.activation))
    assert abs((L1 - float(L0)) / eta + float(diag["grad_sq"])) <= 1e-4 * float(diag["grad_sq"])
    assert np.isclose(float(diag["pl_ratio"]), float(diag["grad_sq"]) / float(L0), rtol=1e-14)


# --------------------------------------------------------------------------- depth: ResNet → NODE


def _smooth_profile(d=3, M=6, seed=0):
    rng = np.random.default_rng(seed)
    U0, U1 = (jnp.asarray(0.8 * rng.normal(size=(M, d))) for _ in range(2))
    W0, W1 = (jnp.asarray(rng.normal(size=(M, d))) for _ in range(2))
    B0, B1 = (jnp.asarray(rng.normal(size=(M,))) for _ in range(2))

    def profile(s):
        c, sn = jnp.cos(2 * jnp.pi * s), jnp.sin(3 * s)
        return U0 + c * U1, W0 + sn * W1, B0 + s * B1

    return profile


def _slope(S_list, errs):
    return np.polyfit(np.log(S_list), np.log(errs), 1)[0]


def test_discrete_resnet_converges_to_node_at_first_order():
    profile = _smooth_profile()
    X = np.random.default_rng(7).normal(size=(10, 3))
    ref = node_forward(profile, X, rtol=1e-11, atol=1e-12)
    S_list = [8, 16, 32, 64, 128]
    errs = [float(jnp.max(jnp.abs(resnet_forward(discretise(profile, S), X) - ref))) for S in S_list]
    slope = _slope(S_list, errs)
    assert -1.15 < slope < -0.85, (slope, errs)
    assert errs[-1] < 0.1 * errs[0]


@pytest.mark.slow
def test_linear_interpolation_node_converges_at_second_order():
    """The NODE of the linearly interpolated layers approaches the profile's NODE at O(1/S²):
    the continuous-depth model built from a ResNet is the better approximation of the limit."""
    profile = _smooth_profile()
    X = np.random.default_rng(7).normal(size=(10, 3))
    ref = node_forward(profile, X, rtol=1e-11, atol=1e-12)
    S_list = [32, 64, 128]  # asymptotic regime (at S = 8 the profile's cos(2πs) is barely resolved)
    errs = [float(jnp.max(jnp.abs(node_forward(discretise(profile, S), X, interpolation="linear", rtol=1e-11, atol=1e-12) - ref))) for S in S_list]
    slope = _slope(S_list, errs)
    assert -2.3 < slope < -1.7, (slope, errs)


def test_depth_invariance_duplicated_layers_change_outputs_by_O_1_over_S():
    """Duplicating each layer keeps μ(·|s): ResNet outputs change by O(1/S), towards the NODE of the
    piecewise-constant μ (measured: successive differences halve)."""
    obj, p = _problem(u_scale=1.5, seed=4)
    ref = node_forward(p, obj.X, interpolation="piecewise_constant", rtol=1e-11, atol=1e-12)
    reps = [1, 2, 4, 8, 16]
    outs = [resnet_forward(p.duplicate_depth(r), obj.X) for r in reps]
    errs = [float(jnp.max(jnp.abs(o - ref))) for o in outs]
    assert -1.15 < _slope(reps, errs) < -0.85, errs
    diffs = [float(jnp.max(jnp.abs(outs[i + 1] - outs[i]))) for i in range(len(outs) - 1)]
    ratios = np.array(diffs[:-1]) / np.array(diffs[1:])
    assert np.all((1.7 < ratios) & (ratios < 2.3)), (diffs, ratios)
    assert diffs[0] * S0 < 1.0  # the O(1/S) constant, for the record: |ResNet_S − ResNet_2S| · S


@pytest.mark.slow
def test_depth_invariance_of_the_flow():
    """The flow of the duplicated ResNet follows the original's up to O(1/S): a duplicated layer's
    adjoint is taken 1/(2S) apart, so its two copies drift apart at that order."""
    obj, p = _problem(u_scale=1.0, seed=4)
    losses = [conditional_flow(obj, p.duplicate_depth(r), 0.5, 20, dcot_mode="none").objective for r in (1, 2, 4, 8)]
    gaps = [np.max(np.abs(losses[i + 1] - losses[i])) for i in range(3)]
    assert gaps[0] > 0 and 1.6 < gaps[0] / gaps[1] < 2.4 and 1.6 < gaps[1] / gaps[2] < 2.4, gaps


def test_width_invariance_duplicated_neurons_give_the_same_flow():
    obj, p = _problem(seed=5)
    a = conditional_flow(obj, p, 0.5, 20, dcot_mode="none")
    b = conditional_flow(obj, p.duplicate_width(3), 0.5, 20, dcot_mode="none")
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-12, atol=0)
    np.testing.assert_allclose(b.stats["grad_sq"], a.stats["grad_sq"], rtol=1e-10)
    lam = lambda run: np.array([run.saved_at(i)["lambda0"] for i in range(len(run.save_steps))])  # noqa: E731
    np.testing.assert_allclose(lam(b), lam(a), rtol=1e-8, atol=1e-12)
    final_a = ResNetParams(*(jnp.asarray(x) for x in (a.final.U, a.final.W, a.final.B))).duplicate_width(3)
    for name in ("U", "W", "B"):
        np.testing.assert_allclose(getattr(b.final, name), getattr(final_a, name), rtol=0, atol=1e-12)
    assert a.objective[-1] < 0.5 * a.objective[0]  # the flow did something


# --------------------------------------------------------------------------- λ₀ and the PL inequality


def test_lambda0_equals_a_direct_eigenvalue_computation():
    obj, p = _problem(seed=6)
    X, sig = np.asarray(obj.X), np.cos
    xs = [X]
    for k in range(p.depth):  # the states, layer by layer, in plain numpy
        U, W, B = (np.asarray(a[k]) for a in (p.U, p.W, p.B))
        x = xs[-1]
        xs.append(x + sum(np.outer(sig(x @ W[m] + B[m]), U[m]) for m in range(p.width)) / p.width / p.depth)
    lmins = []
    for k in range(p.depth):
        W, B = np.asarray(p.W[k]), np.asarray(p.B[k])
        K = np.array(
            [[np.mean([sig(W[m] @ xs[k][i] + B[m]) * sig(W[m] @ xs[k][j] + B[m]) for m in range(p.width)]) for j in range(obj.N)] for i in range(obj.N)]
        )
        lmins.append(np.linalg.eigvalsh(K)[0])
    assert abs(float(lambda0(p, obj.X)) - np.mean(lmins)) < 1e-12
    np.testing.assert_allclose(resnet_states(p, obj.X)[-1], xs[-1], atol=1e-13)


@pytest.mark.parametrize("init", ["gaussian", "heavy_tailed", "random_features"])
def test_pl_inequality_at_initialisation(init):
    """‖∇L‖²_{L²(μ₀)} ≥ (2/N) λ₀ L(μ₀) at u = 0 (docs/resnet.md); report the slack."""
    N, d, S, M = N0, D0, S0, M_WIDE
    data = near_identity(jax.random.PRNGKey(10), N, d, 0.2)
    obj = make_resnet_objective(data.X, data.Y)
    p = init_resnet(jax.random.PRNGKey(11), S, M, d, init=init, rho=0.25, beta=1.0)
    adj = adjoint_gradient(obj, p)
    L, gsq, lam = float(adj.loss), float(grad_norm_sq(adj.gradient)), float(lambda0(p, obj.X))
    assert abs(L - 0.5 * 0.2**2) < 1e-12  # u = 0: the network is the identity and L(μ₀) = δ²/2
    assert lam > 0
    bound = PL_CONSTANT(N) * lam * L
    assert gsq >= bound * (1 - 1e-12), (gsq, bound)
    # at u = 0 the bound's first inequality is an equality: ‖∇L‖² = (1/N²)(1/S) Σ_k rᵀ K_k r
    r = adj.states[-1] - obj.Y
    K = layer_kernels(p, obj.X)
    exact = float(jnp.mean(jnp.einsum("ia,kij,ja->k", r, K, r))) / N**2
    assert abs(gsq - exact) <= 1e-12 * gsq
    print(f"PL slack ({init}): ‖∇L‖² / ((2/N) λ₀ L) = {gsq / bound:.3f}")


def test_pl_constant_is_sharp():
    """With shared features (K_s the same for all s) and a residual along K's least eigenvector,
    ‖∇L‖² = (2/N) λ₀ L exactly: no larger constant c can hold."""
    N, d, S, M = N0, D0, S0, M_WIDE
    X = np.asarray(near_identity(jax.random.PRNGKey(12), N, d, 0.0).X)
    p = init_resnet(jax.random.PRNGKey(13), S, M, d, init="random_features", rho=0.5)
    K = np.asarray(layer_kernels(p, jnp.asarray(X)))[0]
    v = np.linalg.eigh(K)[1][:, 0]
    e = np.zeros(d)
    e[0] = 1.0
    obj = make_resnet_objective(X, X - 0.1 * np.outer(v, e))
    adj = adjoint_gradient(obj, p)
    ratio = float(grad_norm_sq(adj.gradient)) / (PL_CONSTANT(N) * float(lambda0(p, obj.X)) * float(adj.loss))
    assert abs(ratio - 1.0) < 1e-10, ratio


def test_gaussian_init_precision_convention_via_the_population_kernel():
    """w ~ exp(−ρ|w|²), b ~ U[0, π], σ = cos: K(x, x') → ½ exp(−|x − x'|²/(4ρ)) as M → ∞."""
    rho = 0.7
    X = near_identity(jax.random.PRNGKey(14), N0, D0, 0.0).X
    p = init_resnet(jax.random.PRNGKey(15), S0, M_WIDE, D0, rho=rho)  # u = 0: K_s at x(s) = x; S·M samples
    K = np.asarray(layer_kernels(p, jnp.asarray(X))).mean(axis=0)
    D2 = np.sum((X[:, None] - X[None]) ** 2, axis=-1)
    np.testing.assert_allclose(K, 0.5 * np.exp(-D2 / (4 * rho)), atol=0.02)


def test_heavy_tailed_init_matches_its_density():
    """|w| of init_resnet(init="heavy_tailed") has density ∝ r^{d−1} (1 + r²)^{−(d/2+β)} (KS test,
    CDF by quadrature: independent of the sampler's construction)."""
    d, beta = D0, 1.0
    p = init_resnet(jax.random.PRNGKey(16), S0, M_WIDE, d, init="heavy_tailed", beta=beta)
    r = np.linalg.norm(np.asarray(p.W).reshape(-1, d), axis=1)
    dens = lambda t: t ** (d - 1) * (1 + t * t) ** (-(d / 2 + beta))
    Z = sp_integrate.quad(dens, 0, np.inf)[0]
    grid = np.concatenate([np.linspace(0, 5, 400), np.geomspace(5.01, 1e7, 400)])
    cdf_grid = np.array([0.0] + [sp_integrate.quad(dens, a, b)[0] for a, b in itertools.pairwise(grid)]).cumsum() / Z
    cdf = lambda t: np.interp(t, grid, cdf_grid, right=1.0)
    ks = stats.kstest(r, cdf)
    assert ks.pvalue > 1e-3, ks
    # and it can fail: the same test rejects a wrong tail index
    dens_wrong = lambda t: t ** (d - 1) * (1 + t * t) ** (-(d / 2 + 2 * beta))
    Zw = sp_integrate.quad(dens_wrong, 0, np.inf)[0]
    cdf_w = np.array([0.0] + [sp_integrate.quad(dens_wrong, a, b)[0] for a, b in itertools.pairwise(grid)]).cumsum() / Zw
    assert stats.kstest(r, lambda t: np.interp(t, grid, cdf_w, right=1.0)).pvalue < 1e-6
    assert np.all(np.asarray(p.U) == 0) and np.all((np.asarray(p.B) >= 0) & (np.asarray(p.B) <= np.pi))


def test_random_features_are_shared_by_all_layers():
    p = init_resnet(jax.random.PRNGKey(17), S0, M_WIDE, D0, init="random_features")
    assert np.all(np.asarray(p.W) == np.asarray(p.W[0])[None]) and np.all(np.asarray(p.B) == np.asarray(p.B[0])[None])
    q = init_resnet(jax.random.PRNGKey(17), S0, M_WIDE, D0, init="gaussian")
    assert not np.allclose(q.W[0], q.W[1])


def test_frozen_features_move_only_u():
    obj, p = _problem(seed=9)
    frozen = make_resnet_objective(obj.X, obj.Y, freeze_features=True)
    g, g_all = adjoint_gradient(frozen, p).gradient, adjoint_gradient(obj, p).gradient
    assert np.all(np.asarray(g.W) == 0) and np.all(np.asarray(g.B) == 0)
    np.testing.assert_allclose(g.U, g_all.U, rtol=1e-14)  # the u-velocity is the same
    assert float(jnp.max(jnp.abs(g_all.W))) > 1e-3


# --------------------------------------------------------------------------- D_COT, rates, runs


def test_dcot_identity_bounds_exact_and_exact_matches_assignment():
    _, p = _problem(seed=18)
    q = ResNetParams(p.U + 0.3, p.W, p.B)
    rng = np.random.default_rng(19)
    perm = np.stack([rng.permutation(M0) for _ in range(S0)])
    shuffled = ResNetParams(*(jnp.take_along_axis(a, perm[..., None] if a.ndim == 3 else perm, axis=1) for a in (q.U, q.W, q.B)))
    r = dcot(shuffled, p)
    assert abs(r.exact - 0.3 * math.sqrt(D0)) < 1e-9  # translation of u by 0.3 in each of d coordinates
    assert r.identity > r.exact + 0.1
    # per layer, the exact W₂² of uniform measures is an assignment problem (scipy, independent of POT)
    A, B = np.asarray(shuffled.positions()), np.asarray(p.positions())
    for layer in range(S0):
        C = np.sum((A[layer][:, None] - B[layer][None]) ** 2, axis=-1)
        i, j = sp_optimize.linear_sum_assignment(C)
        assert abs(C[i, j].mean() - r.per_layer_exact[layer]) < 1e-10
    assert dcot(p, p).exact < 1e-7


def test_fitted_rate_recovers_an_exponential():
    t = np.linspace(0, 10, 101)
    fit = fitted_rate(t, 3.0 * np.exp(-0.7 * t))
    assert abs(fit.rate - 0.7) < 1e-10 and fit.r2 > 1 - 1e-12
    w = fitted_rate(t, np.where(t < 5, np.exp(-2 * t), np.exp(-10) * np.exp(-0.5 * (t - 5))), window=(6, 10))
    assert abs(w.rate - 0.5) < 1e-9


def test_flow_records_and_saves():
    obj, p = _problem(seed=8)
    run = conditional_flow(obj, p, 0.5, 20, save=SaveAt(every=10))
    assert run.ok and run.num_steps == 20
    n = len(run.times)
    assert len(run.objective) == len(path_length(run)) == n and len(run.stats["grad_sq"]) == len(run.stats["pl_ratio"]) == n - 1
    np.testing.assert_allclose(run.stats["pl_ratio"], run.stats["grad_sq"] / run.objective[:-1], rtol=1e-12)
    np.testing.assert_allclose(run.save_times, [0, 5, 10])
    saved = [run.saved_at(i) for i in range(3)]
    dex, did = (np.array([v[k] for v in saved]) for k in ("dcot_exact", "dcot_identity"))
    assert dex[0] < 1e-7 and np.all(dex**2 <= did**2 + 1e-12)
    # the Riemann sum of ‖∇L‖ bounds the distance travelled (identity coupling) of the explicit scheme
    assert did[-1] <= path_length(run)[-1] * (1 + 1e-9)
    # the saved ‖∇L‖² (in the loop, at the save) is the step's own record there
    np.testing.assert_allclose(saved[1]["grad_sq"], run.stats["grad_sq"][10], rtol=1e-12)
    last = saved[2]["params"]
    np.testing.assert_array_equal(last.U, run.final.U)
    final = ResNetParams(*(jnp.asarray(a) for a in (last.U, last.W, last.B)))
    np.testing.assert_allclose(run.objective[-1], float(resnet_loss(final, obj.X, obj.Y)), rtol=1e-12)


def test_lambda0_every_step_matches_the_saved_values():
    obj, p = _problem(seed=8)
    run = conditional_flow(obj, p, 0.5, 20, save=SaveAt(every=10), lambda0_every_step=True, dcot_mode="none")
    assert len(run.stats["lambda0"]) == len(run.times) - 1
    saved = np.array([run.saved_at(i)["lambda0"] for i in range(2)])  # steps 0 and 10
    np.testing.assert_allclose(run.stats["lambda0"][run.save_steps[:2]], saved, rtol=1e-8, atol=1e-12)


def test_divergence_is_reported_and_keeps_the_run():
    obj, p = _problem(seed=8, u_scale=2.0)
    run = conditional_flow(obj, p, 1e4, 20, dcot_mode="identity", monitor=Monitor(max_growth=10.0, check_rise=False))
    assert run.status == "diverged" and "Reduce the step size" in run.message
    assert len(run.objective) == len(run.stats["grad_sq"]) == len(run.times) < 21  # the refused step's record kept
    assert np.all(np.isfinite(np.asarray(run.final.U)))


def test_a_rising_loss_is_unstable_and_backtracking_fixes_it():
    """A step size that makes the loss rise (far below the growth limit): the code unstable at
    the first rise, with a step size to use; 'backtrack' keeps the loss non-increasing, its clock
    that of the schedule; a small step is the stable control."""
    obj, p = _problem(seed=8, u_scale=2.0)
    flows = {}
    for eta in (0.5, 8.0):
        flows[eta] = conditional_flow(obj, p, eta, 60, dcot_mode="none")
    assert flows[0.5].status == "successful" and np.all(np.diff(flows[0.5].objective) <= 1e-15)
    bad = flows[8.0]
    assert bad.status == "unstable", bad.message
    k = bad.stop_step
    assert bad.objective[k] > np.min(bad.objective[:k]) and bad.objective[k] < 10 * bad.objective[0]
    assert f"at step {k}" in bad.message and "use a step size ≤" in bad.message
    back = conditional_flow(obj, p, 8.0, 60, dcot_mode="none", monitor=Monitor(policy="backtrack"))
    assert back.status == "successful" and int(back.loop.retakes) > 0, back.message
    F = back.objective
    assert np.all(F[1:] <= np.minimum.accumulate(F)[:-1] * (1 + 1e-6) + 1e-14)
    np.testing.assert_allclose(back.times, 8.0 * np.arange(61), rtol=1e-14)  # the clock of the schedule
    assert back.stats["substeps"].max() >= 2


def test_vectorised_float32_cos_is_accurate():
    """The float32 hot path replaces XLA's cos/sin by a vectorised kernel: check it against float64."""
    from wgflow.models.resnet import _cos_sin_f32, _fast_cos

    x = np.concatenate([np.linspace(-20, 20, 200001), np.geomspace(20, 1e4, 20001), -np.geomspace(20, 1e4, 20001)]).astype(np.float32)
    c, s = (np.asarray(a, np.float64) for a in _cos_sin_f32(jnp.asarray(x)))
    x64 = x.astype(np.float64)
    assert np.max(np.abs(c - np.cos(x64))) < 2e-7 and np.max(np.abs(s - np.sin(x64))) < 2e-7
    g = jax.grad(lambda z: jnp.sum(_fast_cos(z)))(jnp.asarray(x[:1000]))
    assert np.max(np.abs(np.asarray(g, np.float64) + np.sin(x64[:1000]))) < 2e-7


def test_float32_runs_in_float32():
    obj, p = _problem()
    o32 = make_resnet_objective(np.asarray(obj.X, np.float32), np.asarray(obj.Y, np.float32))
    adj = adjoint_gradient(o32, p.astype(jnp.float32))
    assert adj.gradient.U.dtype == jnp.float32
    ref = adjoint_gradient(obj, p).gradient
    np.testing.assert_allclose(adj.gradient.U, ref.U, atol=1e-4)


# --------------------------------------------------------------------------- data, helpers


def test_near_identity_data_sets_the_initial_risk():
    data = near_identity(jax.random.PRNGKey(20), N0, D0, 0.3)
    assert abs(0.5 * np.mean(np.sum((data.Y - data.X) ** 2, axis=1)) - 0.045) < 1e-12
    np.testing.assert_allclose(np.linalg.norm(data.X, axis=1), 1.0)


def test_digits_embedding_and_readout():
    ds = digits(jax.random.PRNGKey(21), 12, n_train=200, n_test=100)
    assert ds.X.shape == (200, 12) and ds.X_test.shape == (100, 12)
    assert abs(np.mean(np.linalg.norm(ds.X, axis=1)) - 1.0) < 1e-12
    np.testing.assert_array_equal(classify(ds.Y, ds.targets), ds.labels)  # the targets read out as their labels
    small = digits(jax.random.PRNGKey(21), 4, n_train=50, n_test=0, projection="random")
    np.testing.assert_allclose(np.linalg.norm(small.targets, axis=1), 1.0)
    np.testing.assert_array_equal(classify(small.Y, small.targets), small.labels)


def test_run_resnet_pl_case_small():
    out = run_resnet_pl_case(jax.random.PRNGKey(22), N0, D0, S0, M0, "gaussian", 0.05, 20, 1.0, rho=0.25, n_saves=2)
    for key in ("lambda0", "pl_min", "fitted_rate", "predicted_rate_scale", "loss_ratio", "time", "loss", "pl_ratio"):
        assert key in out
    assert out["status"] == "successful" and out["loss_ratio"] < 1
    assert np.isclose(out["predicted_rate_scale"], out["lambda0"] / N0)
    assert out["pl_tightness"] >= 1 - 1e-9
    assert len(out["time"]) == len(out["loss"]) == len(out["pl_ratio"]) == 21
    assert out["pl_min"] >= out["pl_bound"] * 0.5  # small δ: the PL ratio stays near its initial value


@pytest.mark.slow
def test_train_resnet_digits_learns():
    out = train_resnet_digits(jax.random.PRNGKey(23), d=12, S=4, M=64, steps=300, step_size=2.0, n_train=200, n_test=200, n_saves=3)
    assert out["status"] == "successful", out["message"]
    assert out["loss_final"] < 0.5 * out["loss0"]
    assert out["final_train_accuracy"] > 0.8 and out["final_test_accuracy"] > 0.6, out["final_test_accuracy"]
    assert out["train_accuracy"].shape == out["save_times"].shape


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_before_compute():
    key = jax.random.PRNGKey(0)
    with pytest.raises(InputError, match="S"):
        init_resnet(key, 0, 4, 2)
    with pytest.raises(InputError, match="M"):
        init_resnet(key, 3, -1, 2)
    with pytest.raises(InputError, match="init"):
        init_resnet(key, 3, 4, 2, init="xavier")
    with pytest.raises(InputError, match="rho"):
        init_resnet(key, 3, 4, 2, rho=0.0)
    X = np.zeros((5, 3))
    with pytest.raises(InputError, match="NaN"):
        make_resnet_objective(X, np.where(np.eye(5, 3) > 0, np.nan, 0.0))
    with pytest.raises(InputError, match="data.Y"):
        make_resnet_objective(X, np.zeros((5, 2)))
    with pytest.raises(InputError, match="data.X"):
        make_resnet_objective(np.zeros(5), np.zeros(5))
    obj = make_resnet_objective(X, X)
    zeros = lambda d: ResNetParams(np.zeros((3, 4, d)), np.zeros((3, 4, d)), np.zeros((3, 4)))
    with pytest.raises(InputError, match="R\\^2 but the data live in R\\^3"):
        conditional_flow(obj, zeros(2), 0.1, 5)
    with pytest.raises(InputError, match="step_size"):
        conditional_flow(obj, zeros(3), -0.1, 5)
    bad = zeros(3)
    with pytest.raises(InputError, match="NaN"):
        conditional_flow(obj, ResNetParams(np.where(np.arange(3)[:, None, None] == 0, np.nan, bad.U), bad.W, bad.B), 0.1, 5)
    with pytest.raises(InputError, match="B"):
        conditional_flow(obj, ResNetParams(bad.U, bad.W, bad.B[:, :2]), 0.1, 5)
    with pytest.raises(InputError, match="activation"):
        make_resnet_objective(X, X, "swish")
