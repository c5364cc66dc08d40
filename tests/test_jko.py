"""Entropic JKO on a grid against independent truths (float64 unless stated).

Truths: a dense kernel built point by point; the Gaussian closed form of one
entropic JKO step of a quadratic potential (docs/jko.md §6); OTT-JAX's dense
Sinkhorn for W_ε; a dense coupling rebuilt from the returned potentials; the objective's own
first variation; particle gradient descent.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from wgflow import InputError, Measure, make_objective
from wgflow.data import teacher_student
from wgflow.flows import Monitor, explicit_gd
from wgflow.flows.jko import (
    Dykstra,
    Linearised,
    SemiDualNewton,
    component_signs,
    jko,
    jko_problem,
    jko_step,
)
from wgflow.grid import (
    Axis,
    Grid,
    GridMeasure,
    bin_measure,
    box_grid,
    dense_log_kernel,
    initial_grid_density,
    kernel,
    log_kernel,
    mass_outside,
    sphere_grid,
    symlog_grid,
    two_scale_grid,
)
from wgflow.metrics import sinkhorn_divergence

TIGHT = dict(newton=SemiDualNewton(tol=1e-11), dykstra=Dykstra(tol=1e-11), linearised=Linearised())

# --------------------------------------------------------------------------- the separable kernel


@pytest.mark.parametrize(
    "grid",
    [
        Grid(((Axis.periodic(20), Axis.uniform(-1.0, 1.5, 20)),)),
        Grid(((Axis.uniform(-1.0, 1.0, 20), Axis.symlog(3.0, 20, 0.4)),)),
        two_scale_grid(box_grid(-1.0, 1.0, (7, 6)), 3.0),
    ],
    ids=["periodic", "symlog", "two-scale"],
)
def test_separable_kernel_equals_dense(grid):
    eps = 0.07
    L = dense_log_kernel(grid, eps)  # point by point: log v_i − c(ξ_i, ξ_j)/ε + log v_j
    rng = np.random.default_rng(0)
    x = 5.0 * rng.normal(size=(3, grid.size))
    x[0, :7] = -np.inf  # zero entries of the vector
    ref = logsumexp(L[None] + x[:, None, :], axis=-1)
    log_k = jax.jit(lambda x, s=None: log_kernel(grid, x, eps, s))
    np.testing.assert_allclose(log_k(jnp.asarray(x)), ref, rtol=0, atol=1e-12)
    v = np.exp(x)
    np.testing.assert_allclose(jax.jit(lambda v: kernel(grid, v, eps))(jnp.asarray(v)), v @ np.exp(L).T, rtol=1e-12, atol=0)
    s = np.sign(rng.normal(size=x.shape))
    lk, sk = log_k(jnp.asarray(x), jnp.asarray(s))
    dense = (s * v) @ np.exp(L).T
    np.testing.assert_allclose(sk * np.exp(lk), dense, rtol=0, atol=1e-12 * np.abs(dense).max())


def test_periodic_cost_wraps():
    g = Grid(((Axis.periodic(8, period=4.0, start=0.0),),))
    C = -dense_log_kernel(g, 1.0) + 2 * np.log(0.5)
    assert np.isclose(C[0, 7], 0.5**2)  # first and last cells are neighbours across the seam
    assert np.isclose(C[0, 4], 2.0**2)  # half a period is the farthest


def test_log_kernel_float32_small_blur_is_finite():
    g = box_grid(-3.0, 3.0, (64, 64))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, g.size)) * 3e4, jnp.float32)
    out = jax.jit(lambda x: log_kernel(g, x, jnp.float32(1e-5)))(x)
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


# --------------------------------------------------------------------------- Gaussian closed form


def _moments(p, coords):
    m = p @ coords
    c = coords - m
    return m, (p[:, None] * c).T @ c


def _gaussian_case(dim):
    """F(μ) = ∫ κ|θ|²/2 dμ as an Objective: the data x = 0 makes every unit output 0, and λV = κ|θ|²/2."""
    kappa = 1.5
    if dim == 1:  # signed_square, d = 1: Θ = R, V = θ²; two components (the negative one empty)
        obj = make_objective(np.zeros((1, 1)), np.zeros(1), "signed_square", lam=kappa / 2)
        grid = box_grid(-4.0, 4.0, (800,))
        p0 = initial_grid_density(grid, "gaussian", mean=0.5, std=0.5, components=2, positive_fraction=1.0)
        tau, eps = 0.1, 1e-3
    else:  # lifted, d = 1: Θ = R², V = |w|² + α²
        obj = make_objective(np.zeros((1, 1)), np.zeros(1), "lifted", lam=kappa / 2)
        grid = box_grid(-4.5, 4.5, (150, 150))
        p0 = initial_grid_density(grid, "gaussian", mean=[0.5, -0.3], std=[0.5, 0.4])
        tau, eps = 0.2, 0.04
    return obj, grid, p0, kappa, tau, eps


@pytest.mark.parametrize("dim, solver", [(1, "newton"), (1, "linearised"), (1, "dykstra"), (2, "newton"), (2, "linearised")])
def test_gaussian_closed_form(dim, solver):
    """One step maps N(m, Σ) to N(m/(1+κτ), Σ/(1+κτ)² + ε/(2(1+κτ)) I): the factor 2τ and the time."""
    obj, grid, p0, kappa, tau, eps = _gaussian_case(dim)
    res = jko_step(obj, p0, tau, grid=grid, blur=eps, solver=TIGHT[solver])
    assert res.converged and res.mass_error < 1e-12
    xi = grid.coords()
    m0, S0 = _moments(p0[0], xi)  # the discrete moments of the start
    m1, S1 = _moments(res.masses[0], xi)
    np.testing.assert_allclose(m1, m0 / (1 + kappa * tau), rtol=0, atol=1e-10)
    S_pred = S0 / (1 + kappa * tau) ** 2 + eps / (2 * (1 + kappa * tau)) * np.eye(dim)
    np.testing.assert_allclose(S1, S_pred, rtol=0, atol=1e-10)
    # neither the unregularised variance nor a step of τ (instead of 2τ) fits
    assert np.abs(S1 - S0 / (1 + kappa * tau) ** 2).max() > 1e-4
    assert np.abs(m1 - m0 / (1 + kappa * tau / 2)).max() > 1e-3


# --------------------------------------------------------------------------- a ReLU teacher–student step


@pytest.fixture(scope="module")
def relu_case():
    ds = teacher_student(jax.random.PRNGKey(0), 20, 2, 2)
    obj = make_objective(ds.X, ds.y, "split", lam=1e-2)
    grid = box_grid(-2.0, 2.0, (24, 24))
    p0 = initial_grid_density(grid, "gaussian", std=0.4, components=2, positive_fraction=0.6)
    tau, eps = 0.01, 0.03
    steps = {name: jko_step(obj, p0, tau, grid=grid, blur=eps, solver=s) for name, s in TIGHT.items()}
    return obj, grid, p0, tau, eps, steps


def test_solvers_agree_on_one_step(relu_case, capsys):
    obj, grid, p0, tau, eps, steps = relu_case
    new, dyk, lin = steps["newton"], steps["dykstra"], steps["linearised"]
    assert new.converged and dyk.converged
    assert new.kkt <= 1e-11 and dyk.kkt <= 1e-11 and new.gap <= 1e-18
    diff = np.abs(new.masses - dyk.masses).sum()
    lin_diff = np.abs(new.masses - lin.masses).sum()
    with capsys.disabled():
        print(
            f"\n  Newton: {new.iterations} its, {new.kernel_applications} kernel apps; Dykstra: {dyk.iterations} its, "
            f"{dyk.kernel_applications} kernel apps; |Newton − Dykstra|₁ = {diff:.2e}; |Newton − linearised|₁ = {lin_diff:.2e} "
            f"(linearised kkt {lin.kkt:.2e})"
        )
    assert diff < 1e-9
    np.testing.assert_allclose(new.dual, dyk.dual, atol=1e-9)
    assert 1e-6 < lin_diff < 0.2  # the linearised step is a different (explicit-in-F) scheme, O(τ²) away
    assert lin.kkt > 1e-4


def test_kkt_conditions_hold_at_the_solution(relu_case):
    """Rebuild π densely from the returned potentials; check both marginals and stationarity
    ε log a_i + 2τ F'(μ⁺)(θ_i) = 0, with F' from the Objective (independent code)."""
    obj, grid, p0, tau, eps, steps = relu_case
    res = steps["newton"]
    L = dense_log_kernel(grid, eps)
    signs = component_signs(obj)
    mu_next = GridMeasure(grid, res.masses, signs).to_measure()
    pts = jnp.asarray(grid.points())
    for c, s in enumerate(signs):
        logpi = res.log_a[c][:, None] + L + res.log_b[c][None, :]
        pi = np.exp(logpi)
        np.testing.assert_allclose(pi.sum(axis=1), res.masses[c], atol=1e-12)
        np.testing.assert_allclose(pi.sum(axis=0), p0[c], atol=1e-12)
        Fp = np.asarray(obj.first_variation(mu_next, pts, s))
        stationarity = eps * res.log_a[c] + 2 * tau * Fp
        assert np.abs(stationarity).max() < 1e-9, np.abs(stationarity).max()
    # the problem's F of grid masses is the Objective's on the grid measure (a particle cloud's code)
    assert np.isclose(float(jko_problem(obj, grid).value(jnp.asarray(res.masses))), float(obj.value(mu_next)), rtol=1e-13)


@jax.jit
def _ott_plan(x, a, b, eps):
    pytest.importorskip("ott", reason="OTT-JAX (in the test and bench extras) is the reference here")
    from ott.geometry import pointcloud
    from ott.solvers import linear

    out = linear.solve(pointcloud.PointCloud(x, x, epsilon=eps), a, b, threshold=1e-10, max_iterations=20000)
    return out.matrix, out.converged


def _entropic_cost(grid, p, q, eps):
    """W_ε(p, q) = min ⟨C, π⟩ + ε Σ π(log(π/(v v)) − 1), by OTT-JAX's Sinkhorn on the dense point cloud."""
    lv = np.log(grid.volumes())
    x = grid.coords()
    mp, mq = p.sum(), q.sum()
    pi, ok = _ott_plan(jnp.asarray(x), jnp.asarray(p / mp), jnp.asarray(q / mq), eps)
    assert bool(ok)
    pi = np.asarray(pi) * mp
    C = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = np.where(pi > 0, pi * (np.log(pi) - lv[:, None] - lv[None, :] - 1), 0.0)
    return float((C * pi).sum() + eps * ent.sum())


def test_each_step_decreases_the_jko_energy(relu_case):
    """F(μ⁺) + W_ε(μ⁺, μ)/(2τ) ≤ F(μ) + W_ε(μ, μ)/(2τ), W_ε by OTT-JAX; the exact step is also
    no worse than the linearised one (they minimise this energy)."""
    obj, grid, p0, tau, eps, steps = relu_case
    signs = component_signs(obj)

    def F(p):
        return float(obj.value(GridMeasure(grid, p, signs).to_measure()))

    F0 = F(p0)

    def energy(p):
        W = sum(_entropic_cost(grid, p[c], p0[c], eps) for c in range(len(p)))
        return F(p) + W / (2 * tau)

    E0 = energy(p0)
    E = {k: energy(steps[k].masses) for k in ("newton", "linearised")}
    assert E["newton"] < E0 - 1e-3 and E["linearised"] < E0
    assert E["newton"] <= E["linearised"] + 1e-9
    # the step's coupling is the entropic-optimal one between its marginals: its cost is W_ε(p⁺, p)
    F_new = F(steps["newton"].masses)
    W_step = (E["newton"] - F_new) * 2 * tau
    assert abs(W_step - float(steps["newton"].entropic_cost(p0, eps))) < 1e-9
    assert F0 > F_new


def test_mass_of_each_part_is_conserved_along_a_run(relu_case):
    obj, grid, p0, tau, eps, _ = relu_case
    traj = jko(obj, p0, tau, 6, grid=grid, blur=eps, save=dict_save(every=2))
    assert traj.ok, traj.message
    saved = traj.saved  # Measures: the grid points once per component, signed masses
    masses = np.stack([np.abs(np.asarray(saved.masses[i])).reshape(2, -1).sum(axis=-1) for i in range(len(traj.save_steps))])
    np.testing.assert_allclose(masses, np.broadcast_to(p0.sum(axis=1), masses.shape), rtol=0, atol=1e-10)
    assert np.all(traj.stats["mass_error"] < 1e-10)
    assert np.all(traj.stats["kkt"] <= 1e-9)
    np.testing.assert_allclose(traj.times, tau * np.arange(7), rtol=1e-14)
    # the recorded objective is F of the saved Measure, computed like a particle cloud's
    for i, k in enumerate(traj.save_steps):
        assert np.isclose(traj.objective[k], float(obj.value(traj.saved_at(i))), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.saved_at(-1).masses), np.asarray(GridMeasure(grid, traj.final.masses, (1.0, -1.0)).to_measure().masses))
    assert traj.objective[-1] < traj.objective[0]


def dict_save(**kw):
    from wgflow.flows import SaveAt

    return SaveAt(**kw)


# --------------------------------------------------------------------------- parameterisations


def test_lifted_on_a_3d_grid():
    ds = teacher_student(jax.random.PRNGKey(3), 15, 2, 2, teacher_signs="positive")
    obj = make_objective(ds.X, ds.y, "lifted", lam=1e-2)
    grid = box_grid(-2.0, 2.0, (14, 14, 14))
    p0 = initial_grid_density(grid, "gaussian", std=0.4)
    new = jko_step(obj, p0, 0.05, grid=grid, blur=0.05, solver=SemiDualNewton(tol=1e-10))
    dyk = jko_step(obj, p0, 0.05, grid=grid, blur=0.05, solver=Dykstra(tol=1e-10))
    assert new.converged and dyk.converged
    assert np.abs(new.masses - dyk.masses).sum() < 1e-8
    assert abs(new.masses.sum() - 1.0) < 1e-12
    F = lambda p: float(obj.value(GridMeasure(grid, p).to_measure()))  # noqa: E731
    assert F(new.masses) < F(p0)


def test_sphere_grid_is_rotation_equivariant_across_the_seam():
    """Rotating the data by k angular cells rolls the step's result by k cells along the periodic axis."""
    ds = teacher_student(jax.random.PRNGKey(4), 12, 2, 2, teacher_signs="positive")
    n_ang, k = 32, 5
    grid = sphere_grid(n_ang, (-2.0, 2.0, 24))
    p0 = initial_grid_density(grid, "gaussian", mean=[0.0, 0.2], std=[1.0, 0.4])  # angle: uniform
    p0 = (p0.reshape(n_ang, 24) * (1 + 0.5 * np.cos(grid.blocks[0][0].points))[:, None]).reshape(1, -1)
    delta = 2 * np.pi * k / n_ang
    R = np.array([[np.cos(delta), -np.sin(delta)], [np.sin(delta), np.cos(delta)]])
    results = []
    for X, p in ((ds.X, p0), (ds.X @ R.T, np.roll(p0.reshape(n_ang, 24), k, axis=0).reshape(1, -1))):
        obj = make_objective(X, ds.y, "sphere", lam=1e-2)
        results.append(jko_step(obj, p, 0.05, grid=grid, blur=0.02, solver=SemiDualNewton(tol=1e-11)))
    a, b = (r.masses.reshape(n_ang, 24) for r in results)
    np.testing.assert_allclose(np.roll(a, k, axis=0), b, atol=1e-9)
    assert np.abs(a - p0.reshape(n_ang, 24)).max() > 1e-4  # the step did move mass
    assert abs(a.sum() - p0.sum()) < 1e-12


@pytest.mark.parametrize("kind", ["two-scale", pytest.param("symlog", marks=pytest.mark.slow)])
def test_two_scale_and_symlog_grids_conserve_mass(kind):
    ds = teacher_student(jax.random.PRNGKey(0), 20, 2, 2)
    obj = make_objective(ds.X, ds.y, "split", lam=1e-2)
    grid = two_scale_grid(box_grid(-1.5, 1.5, (16, 16)), 4.0) if kind == "two-scale" else symlog_grid(6.0, (32, 32), 0.5)
    p0 = initial_grid_density(grid, "gaussian", std=0.3, components=2)
    res = jko_step(obj, p0, 0.02, grid=grid, blur=0.02, solver=SemiDualNewton(tol=1e-10))
    assert res.converged and res.mass_error < 1e-12
    np.testing.assert_allclose(res.masses.sum(axis=1), p0.sum(axis=1), atol=1e-12)


# --------------------------------------------------------------------------- float32, failures, bad input


def test_float32_small_blur_has_no_nan():
    ds = teacher_student(jax.random.PRNGKey(0), 20, 2, 2)
    X, y = (np.asarray(a, np.float32) for a in (ds.X, ds.y))
    obj = make_objective(X, y, "split", lam=1e-2)
    grid = box_grid(-3.0, 3.0, (48, 48))
    p0 = initial_grid_density(grid, "gaussian", std=0.5, components=2).astype(np.float32)
    tau = 0.02
    for solver in (SemiDualNewton(), Linearised()):
        traj = jko(obj, p0, tau, 3, grid=grid, blur=1e-3 * tau, solver=solver, monitor=Monitor(policy="warn"))
        final = np.asarray(traj.final.masses)
        assert final.dtype == np.float32
        assert bool(np.all(np.isfinite(final))) and bool(np.all(np.isfinite(traj.objective)))
        assert traj.status in ("successful", "inner_not_converged"), traj.message
        np.testing.assert_allclose(final.sum(axis=1), p0.sum(axis=1), rtol=1e-5)


def test_non_convergence_stops_the_run_with_a_message(relu_case):
    """An inner solver given too few iterations: the code inner_not_converged, the step refused."""
    obj, grid, p0, tau, eps, _ = relu_case
    traj = jko(obj, p0, tau, 4, grid=grid, blur=eps, solver=SemiDualNewton(tol=1e-14, max_iter=1))
    assert traj.status == "inner_not_converged"
    assert "at step 0" in traj.message and "did not converge" in traj.message and "max_iter" in traj.message
    assert traj.num_steps == 0 and np.allclose(traj.final.masses, p0)
    assert traj.stats["kkt"][0] > 1e-14 and traj.stats["iterations"][0] == 1  # the refused step's own record
    # the same step with its default tolerance converges: the control
    assert jko(obj, p0, tau, 1, grid=grid, blur=eps).status == "successful"


@pytest.mark.slow
def test_warn_policy_goes_on_and_reports(relu_case):
    obj, grid, p0, tau, eps, _ = relu_case
    with pytest.warns(RuntimeWarning, match="did not converge"):
        traj = jko(obj, p0, tau, 2, grid=grid, blur=eps, solver=SemiDualNewton(tol=1e-14, max_iter=1), monitor=Monitor(policy="warn"))
    assert traj.status == "inner_not_converged" and traj.num_steps == 2 and "at step 0" in traj.message
    assert "2 step(s) flagged" in traj.message


def test_jko_growth_beyond_the_limit_is_diverged_and_keeps_the_run():
    """F = ∫ κ|θ|²/2 dμ from a narrow Gaussian; a large blur spreads the mass (the entropy's
    diffusion ε/4τ), so F grows fast: beyond max_growth × F(0) the code is diverged, the states
    before are kept, the message says what to change. Without the limit the run is successful
    (F may rise along an entropic step: the monitor does not call that unstable)."""
    obj = make_objective(np.zeros((1, 1)), np.zeros(1), "lifted", lam=0.75)
    grid = box_grid(-3.0, 3.0, (60, 60))
    p0 = initial_grid_density(grid, "gaussian", std=0.1)
    traj = jko(obj, p0, 0.1, 5, grid=grid, blur=0.2, monitor=Monitor(max_growth=10.0))
    assert traj.status == "diverged", traj.message
    assert "diverged at step" in traj.message and "> 10 × F(0)" in traj.message and "Reduce the step size" in traj.message
    assert traj.objective[-1] > 10 * traj.objective[0] and traj.num_steps < 5
    assert bool(np.all(np.isfinite(np.asarray(traj.final.masses))))
    calm = jko(obj, p0, 0.1, 5, grid=grid, blur=0.2)
    assert calm.status == "successful" and calm.objective[-1] > 10 * calm.objective[0]


def test_bad_input_is_one_clear_error(relu_case):
    obj, grid, p0, tau, eps, _ = relu_case
    with pytest.raises(InputError, match="blur.*> 0"):
        jko(obj, p0, tau, 2, grid=grid, blur=0.0)
    with pytest.raises(InputError, match="blur.*> 0"):
        jko(obj, p0, tau, 2, grid=grid, blur=-1e-3)
    with pytest.raises(InputError, match="tau.*finite and > 0"):
        jko(obj, p0, -0.1, 2, grid=grid, blur=eps)
    with pytest.raises(InputError, match="tau.*finite and > 0"):
        jko(obj, p0, 0.0, 2, grid=grid, blur=eps)
    # an initial measure with mass outside the box
    out = Measure(jnp.array([[0.5, 0.5], [2.5, 0.0]]), jnp.array([0.5, -0.5]))
    with pytest.raises(InputError, match=r"p0: 1 atoms carrying 0.5 .* outside the grid's box"):
        jko(obj, out, tau, 2, grid=grid, blur=eps)
    with pytest.raises(InputError, match="does not contain the initial gaussian density"):
        initial_grid_density(grid, "gaussian", std=0.6, components=2)
    # a grid too large for memory: the estimate is in the message
    huge = box_grid(-3.0, 3.0, (4096, 4096, 4096))
    obj3 = make_objective(np.ones((5, 2)), np.ones(5), "lifted")
    with pytest.raises(InputError, match=r"grid: a JKO step on this grid \(N = 68719476736 .* needs about .* GiB"):
        jko(obj3, np.ones((1, 8)), tau, 1, grid=huge, blur=eps)
    with pytest.raises(InputError, match="shape \\(2, 576\\)"):
        jko(obj, p0[:1], tau, 2, grid=grid, blur=eps)
    with pytest.raises(InputError, match="neurons in R\\^3, but the grid has 2"):
        jko(make_objective(np.ones((5, 2)), np.ones(5), "lifted"), p0, tau, 2, grid=grid, blur=eps)
    with pytest.raises(InputError, match="needs the loss's convex conjugate"):
        jko(make_objective(np.ones((5, 2)), np.ones(5), "split", loss="logistic"), p0, tau, 2, grid=grid, blur=eps)
    with pytest.raises(InputError, match="masses must be >= 0"):
        jko(obj, -p0, tau, 2, grid=grid, blur=eps)


def test_bin_measure_keeps_mass_and_mean():
    grid = box_grid(-2.0, 2.0, (20, 24))
    rng = np.random.default_rng(0)
    pos = rng.uniform(-1.8, 1.8, size=(50, 2))
    mass = rng.uniform(0.5, 1.0, 50) * np.where(rng.uniform(size=50) < 0.5, -1, 1)
    p = bin_measure(grid, Measure(jnp.asarray(pos), jnp.asarray(mass)), (1.0, -1.0))
    for c, s in enumerate((1.0, -1.0)):
        sel = mass * s > 0
        assert np.isclose(p[c].sum(), np.abs(mass[sel]).sum(), rtol=1e-13)
        np.testing.assert_allclose(p[c] @ grid.coords(), np.abs(mass[sel]) @ pos[sel], rtol=1e-12)
    # an atom outside the box: an error naming the field, or (clip) its mass on the nearest boundary points
    far = Measure(jnp.asarray(np.vstack([pos, [[2.5, 0.05]]])), jnp.asarray(np.append(mass, 0.25)))
    with pytest.raises(InputError, match="gd: 1 atoms carrying 0.25"):
        bin_measure(grid, far, (1.0, -1.0), field="gd")
    clipped = bin_measure(grid, far, (1.0, -1.0), outside="clip")
    np.testing.assert_allclose(clipped - p, 0.0, atol=0.25 + 1e-15)
    edge = (clipped - p)[0].reshape(20, 24)
    assert np.isclose(edge.sum(), 0.25) and np.isclose(edge[-1].sum(), 0.25)  # all on the last column of u₁
    assert np.isclose(mass_outside(grid, far), 0.25 / np.abs(far.masses).sum())


# --------------------------------------------------------------------------- JKO → GD


@pytest.mark.slow
def test_jko_approaches_particle_gd_along_a_ladder(capsys):
    """As τ, ε/τ and h shrink together (ε = 2h²), the JKO flow of a ReLU teacher–student problem
    (split, d = 2) approaches explicit particle GD from the same initial measure.

    The GD reference starts from the finest grid's initial measure as 51 200 weighted particles (a
    quadrature of the density: no sampling noise). Distances at t = 1: outputs on the data, |F − F_GD|,
    and S_0.01 with GD binned on each rung's grid (all Sinkhorn terms separable). The same study,
    with figures, is ``wgflow run jko-vs-gd``.
    """
    ds = teacher_student(jax.random.PRNGKey(1), 30, 2, 2)
    obj = make_objective(ds.X, ds.y, "split", lam=1e-3, reduction="mean")
    T, L, std, signs = 1.0, 2.0, 0.4, (1.0, -1.0)
    rungs = [(40, 0.1, 0.2), (80, 0.05, 0.1), (160, 0.025, 0.05)]  # (cells per axis, τ, ε/τ): ε = 2h² throughout
    fine = box_grid(-L, L, (rungs[-1][0],) * 2)
    out = explicit_gd(obj, GridMeasure(fine, initial_grid_density(fine, "gaussian", std=std, components=2), signs).to_measure(), 1e-3, 1000)
    gd = Measure(jnp.asarray(out.final.positions), jnp.asarray(out.final.masses))
    f_gd, F_gd = obj.outputs(gd), float(obj.value(gd))

    out_err, F_gap, sd = [], [], []
    for n, tau, ratio in rungs:
        grid = box_grid(-L, L, (n, n))
        p0 = initial_grid_density(grid, "gaussian", std=std, components=2)
        traj = jko(obj, p0, tau, int(round(T / tau)), grid=grid, blur=ratio * tau)
        assert traj.ok, traj.message
        mu = GridMeasure(grid, traj.final.masses, signs).to_measure()
        out_err.append(float(jnp.linalg.norm(obj.outputs(mu) - f_gd) / jnp.linalg.norm(f_gd)))
        F_gap.append(abs(float(obj.value(mu)) - F_gd))
        binned = GridMeasure(grid, bin_measure(grid, gd, signs, outside="clip"), signs)  # ~1e-6 of the mass left the box
        sd.append(sinkhorn_divergence(GridMeasure(grid, traj.final.masses, signs), binned, 0.01, tol=1e-6).value)
    with capsys.disabled():
        print(f"\n  JKO vs particle GD at t = {T} (split, d = 2, GD η = 1e-3 from a 160² quadrature):")
        for (n, tau, ratio), e, g, s in zip(rungs, out_err, F_gap, sd):
            print(f"    grid {n}², τ = {tau}, ε/τ = {ratio}: output distance {e:.4f}, |F − F_GD| = {g:.2e}, S_0.01 = {s:.5f}")
    assert out_err[0] > out_err[1] > out_err[2] and out_err[2] < 0.6 * out_err[0]
    assert F_gap[0] > F_gap[1] > F_gap[2]
    assert sd[0] > sd[1] > sd[2]
