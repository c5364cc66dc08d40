"""Measures in and out: Measure.save / Measure.load (bit-identical, every parameterisation, float32 and
float64) and plot_measure for particle clouds and grid densities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure

from wgflow.errors import InputError
from wgflow.grid import GridMeasure, box_grid, sphere_grid
from wgflow.init import initial_measure
from wgflow.measure import FORMAT_VERSION, Measure, load_measure
from wgflow.plots import close, plot_measure
from wgflow.units import PARAMETERISATIONS

# --------------------------------------------------------------------------- measures in and out


BUILT_IN = ["lifted", "signed", "split", "sphere", "signed_square"]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("param", BUILT_IN)
def test_measure_round_trip_is_bit_identical(param, dtype, tmp_path):
    assert set(BUILT_IN) <= set(PARAMETERISATIONS)
    mu = initial_measure(jax.random.PRNGKey(3), param, 17, 3, scale=0.7, dtype=dtype)
    mu = Measure(mu.positions, mu.masses * jnp.linspace(0.5, 1.5, 17, dtype=dtype))  # masses that are not all equal
    path = mu.save(tmp_path / f"{param}.npz", param, activation="relu", metadata={"note": "a test", "t": 1.5})
    back = Measure.load(path)
    for a, b in ((mu.positions, back.positions), (mu.masses, back.masses)):
        assert b.dtype == a.dtype == dtype
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    saved = load_measure(path)
    assert (saved.parameterisation, saved.activation, saved.version, saved.metadata) == (param, "relu", FORMAT_VERSION, {"note": "a test", "t": 1.5})


def test_measure_files_are_never_overwritten_and_bad_ones_are_named(tmp_path):
    mu = initial_measure(jax.random.PRNGKey(0), "lifted", 5, 2)
    path = mu.save(tmp_path / "mu.npz", "lifted")
    before = path.read_bytes()
    other = initial_measure(jax.random.PRNGKey(1), "lifted", 5, 2)
    with pytest.raises(InputError, match="never written over a file"):
        other.save(path, "lifted")
    assert path.read_bytes() == before
    other.save(path, "lifted", overwrite=True)
    assert np.array_equal(np.asarray(Measure.load(path).positions), np.asarray(other.positions))
    with pytest.raises(InputError, match="unknown parameterisation"):
        mu.save(tmp_path / "x.npz", "liftd")
    np.savez(tmp_path / "plain.npz", X=np.ones(3))
    with pytest.raises(InputError, match="not a wgflow measure file"):
        Measure.load(tmp_path / "plain.npz")
    with pytest.raises(InputError, match="does not exist"):
        Measure.load(tmp_path / "none.npz")
    # float64 with float64 off in JAX: refused rather than silently rounded; converting is explicit
    with jax.enable_x64(False):
        with pytest.raises(InputError, match="float64 is off"):
            Measure.load(path)
        assert Measure.load(path, dtype="float32").positions.dtype == jnp.float32


def _labelled(fig):
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    return axes and all(ax.get_xlabel().strip() and ax.get_ylabel().strip() for ax in axes)


def test_plot_measure_particles_and_grids():
    mu = initial_measure(jax.random.PRNGKey(0), "lifted", 40, 2, scale=1.0)
    for param in ("lifted", None):
        fig = plot_measure(mu, param, title="forty particles")
        assert isinstance(fig, Figure) and _labelled(fig)
        pts = fig.axes[0].collections[0].get_offsets()
        assert len(pts) == 40
        close(fig)
    # the plotted point of a lifted particle (w, α) is |α| w; colours follow the sign of α × mass
    fig = plot_measure(mu, "lifted")
    pos = np.asarray(mu.positions)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), np.abs(pos[:, 2:3]) * pos[:, :2])
    close(fig)
    grid = box_grid(-1.0, 1.0, (12, 9))
    masses = np.random.default_rng(0).uniform(size=(2, grid.size))
    fig = plot_measure(GridMeasure(grid, masses, signs=(1.0, -1.0)))
    assert isinstance(fig, Figure) and _labelled(fig) and len(fig.axes) == 2  # the image and its colour bar
    dens = fig.axes[0].collections[0].get_array().reshape(9, 12).T
    np.testing.assert_allclose(dens, ((masses[0] - masses[1]) / grid.volumes()).reshape(12, 9))
    close(fig)
    for g in (sphere_grid(16, (-1.0, 1.0, 5)), box_grid(-1.0, 1.0, (5, 4, 3)), box_grid(-1.0, 1.0, (7,))):
        fig = plot_measure(GridMeasure(g, np.ones(g.size)))
        assert isinstance(fig, Figure) and _labelled(fig)
        close(fig)
    with pytest.raises(InputError, match="Measure or GridMeasure"):
        plot_measure(np.ones((3, 2)))
