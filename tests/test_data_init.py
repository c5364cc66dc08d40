"""Data generators, loaders and initial measures."""

import jax
import numpy as np
import pytest
from scipy import stats

from wgflow import InputError
from wgflow.data import load_csv, load_npz, teacher_student
from wgflow.init import heavy_tailed, initial_measure, on_sphere


def test_teacher_student_shapes_and_labels():
    ds = teacher_student(jax.random.PRNGKey(0), 50, 2, 4)
    assert ds.X.shape == (50, 2) and ds.y.shape == (50,)
    np.testing.assert_allclose(np.linalg.norm(ds.X, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(ds.y, np.maximum(ds.X @ ds.teacher.W.T, 0) @ ds.teacher.alpha, atol=1e-12)
    assert ds.X.dtype == np.float64
    b = teacher_student(jax.random.PRNGKey(0), 50, 2, 4, bias=True, inputs="gaussian", noise=0.1)
    assert b.X.shape == (50, 3) and np.all(b.X[:, -1] == 1.0) and b.teacher.W.shape == (4, 3)
    clean = np.maximum(b.X @ b.teacher.W.T, 0) @ b.teacher.alpha
    assert 0.05 < np.std(b.y - clean) < 0.2


def test_teacher_student_bad_input():
    with pytest.raises(InputError, match="data.n"):
        teacher_student(jax.random.PRNGKey(0), 0, 2, 4)
    with pytest.raises(InputError, match="data.inputs"):
        teacher_student(jax.random.PRNGKey(0), 10, 2, 4, inputs="cube")
    with pytest.raises(InputError, match="activation"):
        teacher_student(jax.random.PRNGKey(0), 10, 2, 4, activation="gelu")


def test_load_npz_and_csv(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    y = np.array([1.0, -1.0, 2.0, 0.5])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = load_npz(tmp_path / "d.npz", bias=True)
    np.testing.assert_array_equal(ds.X[:, :3], X)
    assert ds.X.shape == (4, 4) and ds.bias
    (tmp_path / "d.csv").write_text("a,b,c,target\n" + "\n".join(",".join(map(str, [*x, t])) for x, t in zip(X, y)))
    c = load_csv(tmp_path / "d.csv", target="target")
    np.testing.assert_array_equal(c.X, X)
    np.testing.assert_array_equal(c.y, y)
    (tmp_path / "bad.csv").write_text("1,2,3\n4,nan,6\n")
    with pytest.raises(InputError, match="data.X.*NaN"):
        load_csv(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="data.path.*does not exist"):
        load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "k.npz", inputs=X, y=y)
    with pytest.raises(InputError, match="has no array 'X'"):
        load_npz(tmp_path / "k.npz")


def test_heavy_tailed_sampler_matches_its_density():
    """|w|² for density ∝ (1+|w|²)^{-(d/2+β)} in R^d: |w|² / (d/(2β)) ~ F(d, 2β)."""
    d, beta = 3, 1.5
    w = np.asarray(heavy_tailed(jax.random.PRNGKey(0), 20000, d, beta))
    r2 = np.sum(w**2, axis=1)
    ks = stats.kstest(r2 / (d / (2 * beta)), stats.f(d, 2 * beta).cdf)
    assert ks.pvalue > 1e-3, ks


def test_sphere_sampler_and_initial_measures():
    x = np.asarray(on_sphere(jax.random.PRNGKey(0), 1000, 3, radius=2.0))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 2.0)
    assert abs(x.mean(axis=0)).max() < 0.15
    mu = initial_measure(jax.random.PRNGKey(0), "lifted", 10, 2, output="zero")
    assert np.all(mu.positions[:, -1] == 0) and np.allclose(mu.masses, 0.1)
    mu = initial_measure(jax.random.PRNGKey(0), "split", 10, 2, signs="alternating")
    np.testing.assert_allclose(mu.masses, np.tile([0.1, -0.1], 5))
    mu = initial_measure(jax.random.PRNGKey(0), "sphere", 10, 3, distribution="sphere", scale=0.5)
    np.testing.assert_allclose(np.linalg.norm(mu.positions[:, :3], axis=1), 1.0)
    np.testing.assert_allclose(np.abs(mu.positions[:, 3]), 0.5)
    a = initial_measure(jax.random.PRNGKey(7), "signed_square", 10, 2)
    b = initial_measure(jax.random.PRNGKey(7), "signed_square", 10, 2)
    np.testing.assert_array_equal(a.positions, b.positions)  # explicit key → reproducible
    with pytest.raises(InputError, match="init.output.*zero output layer is not available for 'split'"):
        initial_measure(jax.random.PRNGKey(0), "split", 10, 2, output="zero")
    with pytest.raises(InputError, match="init.width"):
        initial_measure(jax.random.PRNGKey(0), "lifted", 0, 2)


def test_numpy_and_jax_scalars_of_the_right_kind_are_accepted():
    import jax.numpy as jnp

    from wgflow import make_objective

    ds = teacher_student(jax.random.PRNGKey(0), n=np.int64(10), d=np.int32(2), m0=jnp.asarray(2))
    F = make_objective(ds.X, ds.y, "lifted", lam=jnp.asarray(1e-3))
    assert float(F.lam) == pytest.approx(1e-3)
    mu = initial_measure(jax.random.PRNGKey(1), "lifted", m=np.int64(5), d=jnp.asarray(2), scale=np.float32(0.1))
    assert mu.positions.shape == (5, 3)
    for bad, field in [(dict(m=True), "init.width"), (dict(m=np.float64(5.0)), "init.width"), (dict(scale=jnp.asarray([0.1])), "init.scale")]:
        kw = dict(m=5, d=2, scale=0.1) | bad
        with pytest.raises(InputError, match=field):
            initial_measure(jax.random.PRNGKey(1), "lifted", **kw)
    with pytest.raises(InputError, match="lam"):
        make_objective(ds.X, ds.y, "lifted", lam=jnp.asarray(float("inf")))
