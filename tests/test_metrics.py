"""Distances between measures against closed forms and OTT-JAX; sampling particles from a grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgflow import InputError, Measure
from wgflow.grid import Axis, Grid, GridMeasure, box_grid, initial_grid_density, sample_from_grid
from wgflow.metrics import sinkhorn_divergence, w2


def _cloud(seed, m, shift=(0.0, 0.0), signs=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, 2)) + np.asarray(shift)
    w = rng.uniform(0.5, 1.5, m)
    w /= w.sum()
    if signs:
        w = w * np.where(np.arange(m) % 3 == 0, -1.0, 1.0)
    return x, w


def test_w2_and_sinkhorn_divergence_of_a_translation():
    """For a translation by t: W₂ = |t|√M and, for every ε, S_ε = M|t|² (the cross term gains exactly |t|²)."""
    x, w = _cloud(0, 40)
    t = np.array([0.3, -0.4])
    M = 2.5
    mu = Measure(jnp.asarray(x), jnp.asarray(M * w))
    nu = Measure(jnp.asarray(x + t), jnp.asarray(M * w))
    assert np.isclose(w2(mu, nu).value, np.linalg.norm(t) * np.sqrt(M), rtol=1e-10)
    for eps in (1.0, 0.3):
        sd = sinkhorn_divergence(mu, nu, eps, tol=1e-11, max_iter=5000)
        assert np.isclose(sd.value, M * t @ t, rtol=1e-7), (eps, sd.value)


def test_sinkhorn_divergence_matches_ott():
    pytest.importorskip("ott", reason="OTT-JAX (in the test and bench extras) is the reference here")
    from ott.geometry import pointcloud
    from ott.tools.sinkhorn_divergence import sinkhorn_divergence as ott_sd

    x, a = _cloud(1, 50)
    y, b = _cloud(2, 30, shift=(0.5, 0.0))
    mu, nu = Measure(jnp.asarray(x), jnp.asarray(a)), Measure(jnp.asarray(y), jnp.asarray(b))
    for eps in (0.3,):
        ours = sinkhorn_divergence(mu, nu, eps, tol=1e-11, max_iter=5000).value
        ref, _ = ott_sd(
            pointcloud.PointCloud,
            jnp.asarray(x),
            jnp.asarray(y),
            a=jnp.asarray(a),
            b=jnp.asarray(b),
            epsilon=eps,
            solve_kwargs=dict(threshold=1e-12, max_iterations=50000),
        )
        assert np.isclose(ours, float(ref), rtol=1e-7), (eps, ours, float(ref))
    # S_ε decreases to W₂² as ε → 0
    w2sq = w2(mu, nu).value ** 2
    vals = [sinkhorn_divergence(mu, nu, eps, tol=1e-6, max_iter=5000).value for eps in (1.0, 0.3, 0.05)]
    assert vals[0] < vals[1] < vals[2] < w2sq * 1.02 and abs(vals[2] - w2sq) < 0.1 * w2sq


def test_signed_measures_are_compared_part_by_part():
    x, w = _cloud(3, 30, signs=True)
    y, _ = _cloud(4, 30)
    mu = Measure(jnp.asarray(x), jnp.asarray(w))
    nu = Measure(jnp.asarray(y), jnp.asarray(w))  # same masses (so same signs), other positions
    res = w2(mu, nu)
    assert set(res.parts) == {"+", "-"}
    pos, neg = w > 0, w < 0
    ref_p = w2(Measure(jnp.asarray(x[pos]), jnp.asarray(w[pos])), Measure(jnp.asarray(y[pos]), jnp.asarray(w[pos]))).value
    ref_n = w2(Measure(jnp.asarray(x[neg]), jnp.asarray(-w[neg])), Measure(jnp.asarray(y[neg]), jnp.asarray(-w[neg]))).value
    assert np.isclose(res.parts["+"], ref_p) and np.isclose(res.parts["-"], ref_n)
    assert np.isclose(res.value, np.hypot(ref_p, ref_n))
    sd = sinkhorn_divergence(mu, nu, 0.5, tol=1e-9)
    assert np.isclose(sd.value, sd.parts["+"] + sd.parts["-"])


def test_mass_mismatch_is_an_error_unless_normalised():
    x, w = _cloud(5, 20)
    mu = Measure(jnp.asarray(x), jnp.asarray(w))
    nu = Measure(jnp.asarray(x + 0.1), jnp.asarray(2 * w))
    with pytest.raises(InputError, match="different total masses.*normalize=True"):
        w2(mu, nu)
    assert np.isclose(w2(mu, nu, normalize=True).value, np.sqrt(0.02), rtol=1e-10)
    with pytest.raises(InputError, match="positive part has mass 1 in one measure and 0"):
        w2(mu, Measure(jnp.asarray(x), jnp.asarray(-w)))
    with pytest.raises(InputError, match="max_size"):
        w2(mu, mu, max_size=100)


def test_grid_measure_uses_the_grid_kernel_and_the_periodic_cost():
    from wgflow.metrics.transport import _softmin_dense, _softmin_grid

    grid = Grid(((Axis.periodic(24), Axis.uniform(-1.5, 1.5, 16)),), embedding="circle")
    rng = np.random.default_rng(0)
    lw, h = jnp.asarray(rng.normal(size=grid.size)), jnp.asarray(rng.normal(size=grid.size))
    xi = jnp.asarray(grid.coords())
    dense = _softmin_dense(xi, xi, lw, h, 0.05, grid.periods)
    for kernel in ("log", "stabilised"):
        np.testing.assert_allclose(_softmin_grid(grid, lw, h, 0.05, kernel), dense, rtol=0, atol=1e-11)
    # a sphere-grid measure against particles: compared on the angle (wrapped) × scale
    p = initial_grid_density(grid, "gaussian", mean=[0.0, 0.0], std=[1.0, 0.3])  # uniform in angle: tilt it
    p = (p.reshape(24, 16) * (1 + 0.8 * np.cos(grid.blocks[0][0].points))[:, None]).reshape(1, -1)
    gm = GridMeasure(grid, p / p.sum())
    parts = sample_from_grid(jax.random.PRNGKey(0), grid, gm.masses, 300)
    near = sinkhorn_divergence(gm, parts, 0.05, tol=1e-9).value
    assert abs(sinkhorn_divergence(gm, gm, 0.05, tol=1e-9).value) < 1e-9  # S_ε(α, α) = 0
    quarter = Measure(parts.positions[:, jnp.array([1, 0, 2])] * jnp.array([-1.0, 1.0, 1.0]), parts.masses)  # φ + π/2
    assert sinkhorn_divergence(gm, quarter, 0.05, tol=1e-9).value > near + 0.1
    # W₂ across the seam of a periodic axis: the first and last cells are neighbours
    g4 = Grid(((Axis.periodic(4),),))
    a, b = GridMeasure(g4, np.array([[1.0, 0, 0, 0]])), GridMeasure(g4, np.array([[0, 0, 0, 1.0]]))
    assert np.isclose(w2(a, b).value, 2 * np.pi / 4)


def test_grid_self_term_equals_dense():
    grid = box_grid(-2.0, 2.0, (20, 18))
    p = initial_grid_density(grid, "gaussian", std=0.4, components=2, positive_fraction=0.7)
    gm = GridMeasure(grid, p, (1.0, -1.0))
    parts = sample_from_grid(jax.random.PRNGKey(1), grid, p, 400, signs=(1.0, -1.0))
    a = sinkhorn_divergence(gm, parts, 0.1, tol=1e-10)
    b = sinkhorn_divergence(gm.to_measure(), parts, 0.1, tol=1e-10)  # plain atoms, dense self term
    assert np.isclose(a.value, b.value, rtol=1e-8, atol=1e-12)
    assert set(a.parts) == {"+", "-"}


def test_two_measures_on_one_grid_use_the_separable_cross_term():
    grid = box_grid(-2.0, 2.0, (20, 18))
    p = initial_grid_density(grid, "gaussian", std=0.4, components=2, positive_fraction=0.7)
    q = initial_grid_density(grid, "gaussian", mean=[0.2, -0.1], std=0.35, components=2, positive_fraction=0.7)
    a, b = GridMeasure(grid, p, (1.0, -1.0)), GridMeasure(grid, q, (1.0, -1.0))
    separable = sinkhorn_divergence(a, b, 0.05, tol=1e-10)
    dense = sinkhorn_divergence(a.to_measure(), b.to_measure(), 0.05, tol=1e-10)  # plain atoms: every term dense
    assert separable.converged and dense.converged
    assert np.isclose(separable.value, dense.value, rtol=1e-8, atol=1e-12)
    assert separable.value > 0.05 * 0.3**2


@pytest.mark.parametrize(
    "grid",
    [
        box_grid(-2.0, 2.0, (14, 12, 10)),  # a 3-D grid, as the lifted JKO study's
        Grid(((Axis.periodic(30), Axis.uniform(-1.5, 1.5, 16)),), embedding="circle"),  # a sphere grid
    ],
    ids=["3d", "sphere"],
)
@pytest.mark.parametrize("blur", [0.3, 0.02])  # 0.02: below h² ≈ 0.08; exp(−c/ε) underflows across the box (c/ε up to 800)
def test_stabilised_and_log_domain_kernels_give_the_same_divergence(grid, blur):
    rng = np.random.default_rng(3)
    p = rng.uniform(size=grid.size) * (rng.uniform(size=grid.size) < 0.6)  # zero masses too
    q = rng.uniform(size=grid.size) ** 3
    a, b = GridMeasure(grid, p[None] / p.sum()), GridMeasure(grid, q[None] / q.sum())
    log = sinkhorn_divergence(a, b, blur, tol=1e-7, kernel="log")
    stab = sinkhorn_divergence(a, b, blur, tol=1e-7, kernel="stabilised")
    assert log.converged and stab.converged and stab.iterations == log.iterations
    assert np.isclose(stab.value, log.value, rtol=1e-9, atol=1e-13)
    assert log.value > 1e-3  # different measures: a divergence well above rounding
    with pytest.raises(InputError, match="kernel"):
        sinkhorn_divergence(a, b, blur, kernel="fast")


def test_sample_from_grid():
    grid = box_grid(-3.0, 3.0, (30, 20))
    p = initial_grid_density(grid, "gaussian", mean=[0.3, -0.2], std=[0.5, 0.4], mass=2.0, components=2, positive_fraction=0.25)
    mu = sample_from_grid(jax.random.PRNGKey(0), grid, p, 20000, signs=(1.0, -1.0))
    masses = np.asarray(mu.masses)
    pos = np.asarray(mu.positions)
    assert np.isclose(masses[masses > 0].sum(), 0.5) and np.isclose(masses[masses < 0].sum(), -1.5)
    assert (masses > 0).sum() == 5000  # stratified by component mass
    m_grid = (p.sum(0) / p.sum()) @ grid.coords()
    m_part = np.abs(masses) @ pos / np.abs(masses).sum()
    assert np.all(np.abs(m_part - m_grid) < 4 * 0.5 / np.sqrt(20000))
    # jitter stays inside the box and fills the cells; without jitter particles sit on grid points
    assert np.all(np.abs(pos) <= 3.0) and len(np.unique(pos[:, 0])) > 1000
    on = np.asarray(sample_from_grid(jax.random.PRNGKey(1), grid, p, 500, signs=(1.0, -1.0), jitter=False).positions)
    assert np.all(np.isin(on[:, 0], grid.blocks[0][0].points))
    with pytest.raises(InputError, match="masses.*>= 0"):
        sample_from_grid(jax.random.PRNGKey(0), grid, -p, 10, signs=(1.0, -1.0))
