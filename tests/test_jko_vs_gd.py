"""The JKO-vs-GD study in every measure space (float64).

Truths: the Ornstein–Uhlenbeck closed form of the Fokker–Planck flow of a quadratic potential at
temperature T (the matched temperature ε/(4τ) of the entropic JKO step), the heat equation's
variance growth 2·T·t, the exact moments of cloud-in-cell binning, and the study's own claim that
`signed` and `split` are the same computation on a grid.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_JKO_STUDY
from wgflow import Measure, make_objective
from wgflow.cli import app
from wgflow.experiments.jko_vs_gd import blur_at_temperature, matched_temperature
from wgflow.flows.jko import Linearised, SemiDualNewton, jko
from wgflow.flows.solve import SaveAt
from wgflow.grid import bin_measure, box_grid, initial_grid_density, sample_from_grid, sphere_grid

runner = CliRunner()


def _moments(p, coords):
    m = p @ coords / p.sum()
    c = coords - m
    return m, (p[:, None] * c).T @ c / p.sum()


# --------------------------------------------------------------------------- the matched temperature


def test_matched_temperature_is_the_heat_equation_rate():
    """With F ≈ 0 (κ = 1e-8) the entropic JKO spreads a Gaussian like the heat equation ∂ₜμ = TΔμ,
    T = ε/(4τ): its variance grows by 2·T·t per dimension, whatever τ at fixed T."""
    kappa = 1e-8  # F = ∫ κ|θ|²/2: the data x = 0 make every unit output 0 (lifted, d = 1: Θ = R²)
    obj = make_objective(np.zeros((1, 1)), np.zeros(1), "lifted", lam=kappa / 2)
    grid = box_grid(-4.0, 4.0, (100, 100))
    p0 = initial_grid_density(grid, "gaussian", mean=[0.3, -0.2], std=[0.5, 0.4])
    T, t_end = 0.05, 0.4
    xi = grid.coords()
    _, S0 = _moments(p0[0], xi)
    for tau in (0.2, 0.1):
        eps = blur_at_temperature(T, tau)
        assert matched_temperature(tau, eps) == pytest.approx(T, rel=1e-15)
        sol = jko(obj, p0, tau, round(t_end / tau), grid=grid, blur=eps, solver=Linearised(), save=SaveAt(fn=lambda t, s, pb: s.masses))
        _, S = _moments(np.asarray(sol.final.masses)[0], xi)
        np.testing.assert_allclose(np.diag(S - S0), 2 * T * t_end, rtol=1e-6)
        assert abs(S[0, 1] - S0[0, 1]) < 1e-10
    # the other plausible constants are far off: ε/(2τ) doubles the growth, ε/(8τ) halves it
    assert abs(2 * (2 * T) * t_end - np.diag(S - S0)[0]) > 0.03


@pytest.mark.parametrize("solver", ["linearised", pytest.param("newton", marks=pytest.mark.slow)])
def test_matched_temperature_against_the_ornstein_uhlenbeck_closed_form(solver):
    """F = ∫ κθ²/2 dμ: the Wasserstein flow of F + T∫μ log μ is the OU process dθ = −κθ dt + √(2T) dB,
    whose law from N(m₀, s₀²) is N(m₀e^{−κt}, T/κ + (s₀² − T/κ)e^{−2κt}). The entropic JKO with
    ε = 4Tτ approaches it at order 1 in τ (the implicit-Euler error), and only with T = ε/(4τ)."""
    kappa, T, t_end = 1.5, 0.1, 0.8
    obj = make_objective(np.zeros((1, 1)), np.zeros(1), "signed_square", lam=kappa / 2)  # Θ = R, V = θ²
    grid = box_grid(-4.0, 4.0, (800,))
    p0 = initial_grid_density(grid, "gaussian", mean=0.8, std=0.3, components=2, positive_fraction=1.0)
    xi = grid.coords()
    m0, S0 = _moments(p0[0], xi)
    mean_ou = m0[0] * np.exp(-kappa * t_end)
    var_ou = T / kappa + (S0[0, 0] - T / kappa) * np.exp(-2 * kappa * t_end)
    errors, var_errors = [], []
    for tau in (0.1, 0.05, 0.025):
        eps = blur_at_temperature(T, tau)
        s = SemiDualNewton(tol=1e-11) if solver == "newton" else Linearised()
        sol = jko(obj, p0, tau, round(t_end / tau), grid=grid, blur=eps, solver=s, save=SaveAt(fn=lambda t, st, pb: st.masses))
        m, S = _moments(np.asarray(sol.final.masses)[0], xi)
        errors.append(max(abs(m[0] - mean_ou), abs(S[0, 0] - var_ou)))
        var_errors.append(abs(S[0, 0] - var_ou))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 0.01 and np.all(orders > 0.85) and np.all(orders < 1.15), (errors, orders)
    # a Langevin flow at 2T or T/2 is far from the JKO at the finest τ
    for wrong in (2 * T, T / 2):
        var_wrong = wrong / kappa + (S0[0, 0] - wrong / kappa) * np.exp(-2 * kappa * t_end)
        assert abs(S[0, 0] - var_wrong) > 10 * var_errors[-1], (var_errors, var_wrong)


# --------------------------------------------------------------------------- binning on the 3-D lifted grid


def test_lifted_3d_binning_conserves_mass_and_moments():
    """Cloud-in-cell on a uniform 3-D grid keeps the mass and the mean exactly, and adds to each
    coordinate's variance exactly Σ m·w(1−w)h² (w: the atom's fraction of a cell)."""
    L, n = 2.0, (16, 18, 20)
    grid = box_grid(-L, L, n)
    rng = np.random.default_rng(3)
    pos = rng.uniform(-1.8, 1.8, size=(500, 3))
    mass = rng.uniform(0.2, 1.0, 500)
    p = bin_measure(grid, Measure(jnp.asarray(pos), jnp.asarray(mass)))
    xi = grid.coords()
    assert p.shape == (1, grid.size) and np.isclose(p.sum(), mass.sum(), rtol=1e-14)
    np.testing.assert_allclose(p[0] @ xi, mass @ pos, rtol=1e-12)
    h = 2 * L / np.array(n)
    frac = ((pos + L) / h - 0.5) % 1.0  # position between the two neighbouring cell centres
    excess = (mass[:, None] * frac * (1 - frac) * h**2).sum(axis=0)
    np.testing.assert_allclose(p[0] @ xi**2 - mass @ pos**2, excess, rtol=1e-10)
    np.testing.assert_allclose(
        (p[0][:, None] * xi).T @ xi - np.diag(np.diag((p[0][:, None] * xi).T @ xi)),
        (mass[:, None] * pos).T @ pos - np.diag(np.diag((mass[:, None] * pos).T @ pos)),
        atol=1e-11,
    )


def test_lifted_grid_density_sampled_and_binned_back_has_its_moments():
    """The study's initial measure: particles sampled from a 3-D grid density, binned back on the
    same grid, match the density's mean and covariance within the sampling error."""
    grid = box_grid(-2.2, 2.2, (22, 22, 22))
    p0 = initial_grid_density(grid, "gaussian", std=0.4)
    m = 200_000
    mu = sample_from_grid(jax.random.PRNGKey(0), grid, p0, m)
    back = bin_measure(grid, mu)
    assert np.isclose(back.sum(), p0.sum(), rtol=1e-12)
    xi = grid.coords()
    m_grid, S_grid = _moments(p0[0], xi)
    m_back, S_back = _moments(back[0], xi)
    se = 4 * np.sqrt(np.diag(S_grid) / m)
    assert np.all(np.abs(m_back - m_grid) < se)
    # the jitter within a cell adds h²/12 to each variance, the binning of uniform fractions h²/6
    h2 = (4.4 / 22) ** 2
    np.testing.assert_allclose(np.diag(S_back) - np.diag(S_grid), h2 / 4, atol=8 * np.diag(S_grid).max() * np.sqrt(2 / m))


def test_sphere_binning_wraps_the_angle():
    grid = sphere_grid(24, (-2.0, 2.0, 10))
    phi = np.array([np.pi - 1e-3, -np.pi + 1e-3, 0.3])
    a = np.array([0.5, -0.5, 1.0])
    pos = np.stack([np.cos(phi), np.sin(phi), a], 1)
    p = bin_measure(grid, Measure(jnp.asarray(pos), jnp.asarray(np.array([0.2, 0.3, 0.5]))))
    assert np.isclose(p.sum(), 1.0, rtol=1e-14)
    ang = p[0].reshape(24, 10).sum(axis=1)
    assert ang[0] > 0 and ang[-1] > 0  # the atoms at ±π are shared across the seam


# --------------------------------------------------------------------------- the study's default ladders


def _lifted_plan(quick):
    from wgflow import experiments
    from wgflow.experiments import jko_vs_gd as study

    module, cfg = experiments.load("jko-vs-gd", quick=quick)
    grids = [study.space_grid(cfg, "lifted", r.h) for r in study.rungs(cfg)]
    return module, cfg, [g for g in grids if g.size <= study._max_points(cfg, "lifted")]


def test_default_lifted_ladder_reaches_96_cubed_and_fits_its_memory_estimate():
    """The full study runs the lifted space up to a 96³ grid (the stabilised kernel affords it), on at
    least three to_gd rungs whose point counts grow; its memory estimate passes. --quick stays small."""
    from wgflow.experiments import check_resources
    from wgflow.experiments import jko_vs_gd as study

    module, cfg, kept = _lifted_plan(quick=False)
    assert max(g.size for g in kept) >= 96**3
    to_gd = [study.space_grid(cfg, "lifted", r.h).size for r in study.rungs(cfg) if r.ladder == "to_gd"]
    to_gd = [n for n in to_gd if n <= study._max_points(cfg, "lifted")]
    assert len(to_gd) >= 3 and to_gd == sorted(to_gd) and len(set(to_gd)) == len(to_gd)
    finest = max(kept, key=lambda g: g.size)
    assert any(nd.item.startswith(f"JKO lifted {study._grid_label(finest)}") for nd in study.estimate(cfg))  # the largest step is counted
    check_resources(module, cfg, limit=4 * 2**30)  # the whole run's estimate under 4 GiB
    _, qcfg, qkept = _lifted_plan(quick=True)
    assert len(qkept) >= 2 and max(g.size for g in qkept) <= qcfg.lifted.max_points <= 50_000


# --------------------------------------------------------------------------- the study, tiny, end to end


def _tiny(tmp_path, spaces):
    out = tmp_path / "tiny"
    args = ["run", "jko-vs-gd", "--out", str(out), "--set", f"spaces={spaces!r}".replace('"', "'")]
    for s in TINY_JKO_STUDY:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "summary.json").read_text())


KEYS = {
    "parameterisation",
    "reference",
    "ladder",
    "tau",
    "blur",
    "temperature",
    "grid",
    "solver",
    "distance_to_gd",
    "distance_to_reference",
    "output_distance",
    "objective_gap",
    "mc_error_output",
    "mc_error_distance",
    "seconds",
    "status",
}


def _check_space(out, summary, space):
    rows = [r for r in summary["table"] if r["parameterisation"] == space]
    assert rows and all(KEYS <= set(r) for r in rows)
    assert all(r["status"] == "successful" and r["max_mass_error"] < 1e-10 for r in rows)
    for ladder in ("to_gd", "to_langevin"):
        for ref in ("gd", "langevin"):
            sel = [r for r in rows if r["ladder"] == ladder and r["reference"] == ref]
            assert len({r["tau"] for r in sel}) == 2, (space, ladder, ref)
            assert all((r["mc_error_output"] is None) == (ref == "gd") for r in sel)
    for r in rows:
        assert r["temperature"] == pytest.approx(r["blur"] / (4 * r["tau"]))
        if r["ladder"] == "to_langevin":
            assert r["temperature"] == pytest.approx(0.2)
    orders = [o for o in summary["orders"] if o["parameterisation"] == space and o["in"] == "tau"]
    assert {(o["ladder"], o["reference"]) for o in orders} == {(a, b) for a in ("to_gd", "to_langevin") for b in ("gd", "langevin")}
    assert all(o["output_distance"] is not None for o in orders)
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"parameterisation", "reference", "time", "objective"} <= set(header)
    assert any(line.split(",")[1] == space for line in (out / "metrics.csv").read_text().splitlines()[1:])


@pytest.mark.slow
def test_tiny_study_split_and_signed_coincide(tmp_path):
    """(b) signed masses on R² and (c) split are the same two nonnegative grids: identical rows."""
    out, summary = _tiny(tmp_path, ["split", "signed"])
    assert {"summary.json", "metrics.csv", "results.npz", "objective.png", "distance.png", "ladder.png", "densities.png"} <= {p.name for p in out.iterdir()}
    for space in ("split", "signed"):
        _check_space(out, summary, space)
    a = [r for r in summary["table"] if r["parameterisation"] == "split"]
    b = [r for r in summary["table"] if r["parameterisation"] == "signed"]
    for ra, rb in zip(a, b):
        for k in ("final_objective", "output_distance", "distance_to_gd"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-9, abs=1e-12), k


@pytest.mark.slow
@pytest.mark.parametrize("space", ["lifted", "sphere"])
def test_tiny_study_each_space(tmp_path, space):
    out, summary = _tiny(tmp_path, [space])
    _check_space(out, summary, space)
    grids = {r["grid"] for r in summary["table"]}
    assert all(len(g.split("×")) == (3 if space == "lifted" else 2) for g in grids)
