"""The stabilised-scaling kernel path against the log-domain reference and independent truths (float64).

Truths: the dense log kernel built point by point (``dense_log_kernel``) and its exact
log-sum-exp; the Gaussian closed form of one entropic JKO step (docs/jko.md §6). The
small-blur cases are chosen so that plain scaling (:func:`wgflow.grid.kernel` on ``exp``)
underflows: the stabilised path must then take its log-domain fallback to agree.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from wgflow import InputError, make_objective
from wgflow.data import teacher_student
from wgflow.flows.jko import Dykstra, Linearised, SemiDualNewton, jko_problem, jko_step
from wgflow.grid import (
    Axis,
    Grid,
    box_grid,
    dense_log_kernel,
    initial_grid_density,
    kernel,
    log_kernel,
    sphere_grid,
    stabilised_log_kernel,
    two_scale_grid,
)

GRIDS = {
    "periodic": Grid(((Axis.periodic(20), Axis.uniform(-1.0, 1.5, 20)),)),
    "symlog": Grid(((Axis.uniform(-1.0, 1.0, 20), Axis.symlog(3.0, 20, 0.4)),)),
    "two-scale": two_scale_grid(box_grid(-1.0, 1.0, (7, 6)), 3.0),
    "3-D": box_grid(-1.0, 1.0, (9, 8, 7)),
}


def _dense_case(grid, eps, scale, seed=0):
    L = dense_log_kernel(grid, eps)
    rng = np.random.default_rng(seed)
    x = scale * rng.normal(size=(3, grid.size))
    x[0, :7] = -np.inf  # zero entries of the vector
    s = np.sign(rng.normal(size=x.shape))
    return L, x, s


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("eps", [0.07, 1e-4], ids=["blur", "small-blur"])
def test_stabilised_kernel_equals_dense(name, eps):
    grid = GRIDS[name]
    L, x, s = _dense_case(grid, eps, 5.0)
    ref = logsumexp(L[None] + x[:, None, :], axis=-1)
    stab = jax.jit(lambda x, s=None: stabilised_log_kernel(grid, x, eps, s))
    out = np.asarray(stab(jnp.asarray(x)))
    assert np.array_equal(np.isfinite(out), np.isfinite(ref))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref[np.isfinite(ref)]).max()))
    lk, sk = stab(jnp.asarray(x), jnp.asarray(s))
    dense_l, dense_s = logsumexp(L[None] + x[:, None, :], axis=-1, b=s[:, None, :], return_sign=True)
    big = np.abs(dense_l - np.max(dense_l, axis=-1, keepdims=True)) < 30  # away from cancellation to zero
    np.testing.assert_array_equal(np.asarray(sk)[big], dense_s[big])
    np.testing.assert_allclose(np.asarray(lk)[big], dense_l[big], rtol=0, atol=1e-9)


def test_small_blur_where_plain_scaling_underflows():
    """Plain scaling returns 0 (log −∞) at far points; the stabilised path falls back and is exact there."""
    grid = box_grid(-2.0, 2.0, (60, 50))
    eps = 2e-3
    x = np.full((1, grid.size), -np.inf)
    x[0, : 50 * 5] = 0.0  # mass only in the first few rows: the kernel's tail reaches far points as e^{−c/ε}
    ref = logsumexp(dense_log_kernel(grid, eps)[None] + x[:, None, :], axis=-1)
    with np.errstate(divide="ignore"):
        plain = np.log(np.asarray(kernel(grid, jnp.exp(jnp.asarray(x)), eps)))
    lost = np.isneginf(plain) & np.isfinite(ref)
    assert lost.sum() > 100  # plain scaling underflowed there (the truth is finite, down to ≈ −8000)
    stab = np.asarray(jax.jit(lambda v: stabilised_log_kernel(grid, v, eps))(jnp.asarray(x)))
    np.testing.assert_allclose(stab, ref, rtol=1e-13, atol=0)
    np.testing.assert_allclose(stab, np.asarray(log_kernel(grid, jnp.asarray(x), eps)), rtol=1e-14, atol=0)  # the fallback is the reference


def test_float32_stabilised_kernel_is_close_to_the_float64_truth():
    grid = box_grid(-3.0, 3.0, (40, 36))
    eps = 0.05
    L, x, _ = _dense_case(grid, eps, 3.0)
    ref = logsumexp(L[None] + x[:, None, :], axis=-1)
    out = np.asarray(stabilised_log_kernel(grid, jnp.asarray(x, jnp.float32), jnp.float32(eps)))
    assert out.dtype == np.float32
    fin = np.isfinite(ref)
    np.testing.assert_allclose(out[fin], ref[fin], rtol=0, atol=1e-4 * np.abs(ref[fin]).max())


def test_grid_method_is_the_function():
    grid = GRIDS["two-scale"]
    x = jnp.asarray(np.random.default_rng(2).normal(size=grid.size))
    np.testing.assert_array_equal(grid.apply_stabilised_kernel(x, 0.1), stabilised_log_kernel(grid, x, 0.1))


# --------------------------------------------------------------------------- JKO steps: stabilised vs log


def _case(kind):
    if kind == "1-D":  # signed_square, d = 1, a quadratic potential (the Gaussian closed form's case)
        obj = make_objective(np.zeros((1, 1)), np.zeros(1), "signed_square", lam=0.75)
        grid = box_grid(-4.0, 4.0, (400,))
        p0 = initial_grid_density(grid, "gaussian", mean=0.5, std=0.5, components=2, positive_fraction=1.0)
        return obj, grid, p0, 0.1, 1e-3
    if kind == "2-D":
        ds = teacher_student(jax.random.PRNGKey(0), 20, 2, 2)
        obj = make_objective(ds.X, ds.y, "split", lam=1e-2)
        grid = box_grid(-2.0, 2.0, (24, 24))
        return obj, grid, initial_grid_density(grid, "gaussian", std=0.4, components=2, positive_fraction=0.6), 0.01, 0.03
    if kind == "2-D small blur":  # plain scaling of a(u) underflows (see the assertion in the test)
        ds = teacher_student(jax.random.PRNGKey(0), 20, 2, 2)
        obj = make_objective(ds.X, ds.y, "split", lam=1e-2)
        grid = box_grid(-2.5, 2.5, (32, 32))
        return obj, grid, initial_grid_density(grid, "gaussian", std=0.5, components=2, positive_fraction=0.6), 0.05, 2e-3
    if kind == "sphere":
        ds = teacher_student(jax.random.PRNGKey(4), 12, 2, 2, teacher_signs="positive")
        obj = make_objective(ds.X, ds.y, "sphere", lam=1e-2)
        grid = sphere_grid(24, (-2.0, 2.0, 20))
        return obj, grid, initial_grid_density(grid, "gaussian", mean=[0.0, 0.2], std=[1.0, 0.4]), 0.05, 0.02
    ds = teacher_student(jax.random.PRNGKey(3), 15, 2, 2, teacher_signs="positive")  # 3-D: lifted, (w₁, w₂, α)
    obj = make_objective(ds.X, ds.y, "lifted", lam=1e-2)
    grid = box_grid(-2.0, 2.0, (14, 12, 10))
    return obj, grid, initial_grid_density(grid, "gaussian", std=0.4), 0.05, 0.05


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "solver, kind",
    [
        ("newton", "1-D"),
        ("newton", "2-D"),
        ("newton", "2-D small blur"),
        ("newton", "3-D"),
        ("linearised", "2-D"),
        ("dykstra", "1-D"),
        pytest.param("newton", "sphere", marks=SLOW),
        pytest.param("linearised", "3-D", marks=SLOW),
        pytest.param("dykstra", "2-D", marks=SLOW),
    ],
)
def test_stabilised_step_equals_log_step(solver, kind):
    obj, grid, p0, tau, eps = _case(kind)
    make = dict(
        newton=lambda k: SemiDualNewton(tol=1e-10, kernel=k), dykstra=lambda k: Dykstra(tol=1e-10, kernel=k), linearised=lambda k: Linearised(kernel=k)
    )[solver]
    stab = jko_step(obj, p0, tau, grid=grid, blur=eps, solver=make("stabilised"))
    ref = jko_step(obj, p0, tau, grid=grid, blur=eps, solver=make("log"))
    assert stab.converged and ref.converged
    if solver != "linearised":
        assert stab.kkt <= 1e-10 and ref.kkt <= 1e-10
    assert np.abs(stab.masses - ref.masses).sum() < 1e-9
    np.testing.assert_allclose(stab.dual, ref.dual, rtol=0, atol=1e-8 * max(1.0, np.abs(ref.dual).max()))
    fin = np.isfinite(ref.log_b)
    assert np.array_equal(np.isfinite(stab.log_b), fin)
    np.testing.assert_allclose(stab.log_b[fin], ref.log_b[fin], rtol=0, atol=1e-7)
    assert np.abs(ref.masses - p0).sum() > 1e-4  # the step did move mass
    if kind == "2-D small blur":  # plain scaling of a(u) underflows somewhere on the support of q
        la = jnp.asarray(stab.log_a)
        with np.errstate(divide="ignore"):
            plain = np.log(np.asarray(kernel(grid, jnp.exp(la - la.max()), eps)))
        exact = np.asarray(log_kernel(grid, la - la.max(), eps))
        assert np.sum(np.isneginf(plain) & np.isfinite(exact) & (p0 > 0)) > 0


def test_default_kernel_is_stabilised_and_matches_the_gaussian_closed_form():
    """One default step maps N(m, Σ) to N(m/(1+κτ), Σ/(1+κτ)² + ε/(2(1+κτ))) (docs/jko.md §6)."""
    assert SemiDualNewton().kernel == Dykstra().kernel == Linearised().kernel == "stabilised"
    kappa = 1.5
    obj = make_objective(np.zeros((1, 2)), np.zeros(1), "lifted", lam=kappa / 2)
    grid = box_grid(-4.5, 4.5, (40, 36, 32))  # lifted in d = 2: Θ = R³, V = |w|² + α²
    p0 = initial_grid_density(grid, "gaussian", mean=[0.5, -0.3, 0.2], std=[0.6, 0.5, 0.7])
    tau, eps = 0.2, 0.3
    res = jko_step(obj, p0, tau, grid=grid, blur=eps, solver=SemiDualNewton(tol=1e-11))
    assert res.converged
    xi = grid.coords()
    m0 = p0[0] @ xi
    c0 = xi - m0
    S0 = (p0[0][:, None] * c0).T @ c0
    m1 = res.masses[0] @ xi
    c1 = xi - m1
    S1 = (res.masses[0][:, None] * c1).T @ c1
    np.testing.assert_allclose(m1, m0 / (1 + kappa * tau), rtol=0, atol=1e-9)
    np.testing.assert_allclose(S1, S0 / (1 + kappa * tau) ** 2 + eps / (2 * (1 + kappa * tau)) * np.eye(3), rtol=0, atol=1e-8)


def test_float32_stabilised_step_is_close_to_the_float64_log_step():
    obj, grid, p0, tau, eps = _case("2-D")
    ref = jko_step(obj, p0, tau, grid=grid, blur=eps, solver=SemiDualNewton(tol=1e-10))  # equal to kernel="log" (above)
    obj32 = make_objective(np.asarray(obj.X, np.float32), np.asarray(obj.y, np.float32), "split", lam=1e-2)
    res = jko_step(obj32, p0.astype(np.float32), tau, grid=grid, blur=eps, solver=SemiDualNewton())
    assert res.masses.dtype == np.float32 and res.converged
    assert np.abs(res.masses - ref.masses).sum() < 1e-3


def test_unknown_kernel_path_is_one_clear_error():
    obj, grid, p0, tau, eps = _case("2-D")
    with pytest.raises(InputError, match="solver.kernel"):
        jko_step(obj, p0, tau, grid=grid, blur=eps, solver=SemiDualNewton(kernel="fast"))
    assert jko_problem(obj, grid).grid is grid
