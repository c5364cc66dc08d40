"""Chunked evaluation equals the unchunked one (float64, 1e-12), whatever the chunk size."""

import dataclasses

import jax
import numpy as np
import pytest

from wgflow import InputError, make_objective
from wgflow.chunking import Chunking
from wgflow.data import teacher_student
from wgflow.init import initial_measure
from wgflow.units import PARAMETERISATIONS


@pytest.mark.parametrize("param", sorted(PARAMETERISATIONS))
@pytest.mark.parametrize("axis,size,reduction", [("neurons", 7, "sum"), ("data", 13, "mean")])
def test_chunked_equals_unchunked(param, axis, size, reduction):
    ds = teacher_student(jax.random.PRNGKey(0), 41, 3, 3, bias=True, noise=0.1)
    dense = make_objective(ds.X, ds.y, param, "relu", lam=0.1, reduction=reduction, chunking=Chunking("none"))
    chunked = dataclasses.replace(dense, chunking=Chunking(axis, size))
    mu = initial_measure(jax.random.PRNGKey(1), param, 23, dense.d)  # 23 and 41: chunks do not divide
    F0, v0 = dense.value_and_velocity(mu)
    F1, v1 = chunked.value_and_velocity(mu)
    np.testing.assert_allclose(F1, F0, rtol=1e-12)
    np.testing.assert_allclose(v1, v0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked.outputs(mu), dense.outputs(mu), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked.value(mu), dense.value(mu), rtol=1e-12)
    pts = mu.positions[:5] * 1.3
    np.testing.assert_allclose(chunked.first_variation(mu, pts), dense.first_variation(mu, pts), rtol=1e-12, atol=1e-12)


def test_logistic_loss_chunked_over_data():
    ds = teacher_student(jax.random.PRNGKey(0), 37, 2, 3)
    y = np.where(ds.y > np.median(ds.y), 1.0, -1.0)
    dense = make_objective(ds.X, y, "lifted", loss="logistic", lam=0.01, reduction="mean", chunking=Chunking("none"))
    chunked = dataclasses.replace(dense, chunking=Chunking("data", 8))
    mu = initial_measure(jax.random.PRNGKey(1), "lifted", 9, 2)
    F0, v0 = dense.value_and_velocity(mu)
    F1, v1 = chunked.value_and_velocity(mu)
    np.testing.assert_allclose(F1, F0, rtol=1e-12)
    np.testing.assert_allclose(v1, v0, rtol=1e-12, atol=1e-13)


def test_auto_plan_and_budget():
    c = Chunking()
    assert c.resolve(100, 100, 3, 8) == ("none", 0)  # small problems are not chunked
    assert c.resolve(4096, 16384, 21, 4) == ("neurons", 32)
    assert c.resolve(10000, 1000, 101, 4) == ("data", 64)
    assert c.resolve(256, 4096, 3, 4) == ("neurons", 256)
    axis, size = Chunking(memory_budget=4096 * 4 * 4 * 10).resolve(4096, 16384, 21, 4)
    assert axis == "neurons" and size == 9  # shrunk to fit the budget
    with pytest.raises(InputError, match="chunking.memory_budget.*cannot hold a chunk of even one neuron"):
        Chunking(memory_budget=1000).resolve(4096, 16384, 21, 4)
    with pytest.raises(InputError, match="chunking.axis"):
        Chunking(axis="rows")
