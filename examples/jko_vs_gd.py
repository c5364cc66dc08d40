"""Is JKO similar to GD? In a minute: one entropic JKO flow on a grid against particle GD from the same measure.

    python examples/jko_vs_gd.py

The full study (a ladder of grids, steps and blurs, three JKO solvers, figures) is
``wgflow run jko-vs-gd``; see docs/jko.md.
"""

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from wgflow import make_objective  # noqa: E402
from wgflow.data import teacher_student  # noqa: E402
from wgflow.flows import explicit_gd  # noqa: E402
from wgflow.flows.jko import jko  # noqa: E402
from wgflow.grid import GridMeasure, bin_measure, box_grid, initial_grid_density  # noqa: E402
from wgflow.metrics import sinkhorn_divergence  # noqa: E402
from wgflow.optimum import global_minimum_for  # noqa: E402

ds = teacher_student(jax.random.PRNGKey(1), 30, 2, 2)  # a ReLU teacher of 2 neurons in the plane
F = make_objective(ds.X, ds.y, "split", "relu", lam=1e-3, reduction="mean")  # two nonnegative grids
grid = box_grid(-2.0, 2.0, (80, 80))  # h = 0.05
p0 = initial_grid_density(grid, "gaussian", std=0.4, components=2)  # N(0, 0.4²) on each sign

T, tau = 1.0, 0.05
traj = jko(F, p0, tau, int(T / tau), grid=grid, blur=2 * 0.05**2)  # ε = 2h², ε/τ = 0.1; semi-dual Newton
print(traj.status, "|", traj.message, "| max KKT residual", traj.stats["kkt"].max())

# GD from the same initial measure: the grid masses as weighted particles (no sampling noise)
signs = (1.0, -1.0)
gd = explicit_gd(F, GridMeasure(grid, p0, signs).to_measure(), 1e-3, int(T / 1e-3))
jko_mu = GridMeasure(grid, traj.final.masses, signs).to_measure()
out = float(jnp.linalg.norm(F.outputs(jko_mu) - F.outputs(gd.final)) / jnp.linalg.norm(ds.y))
gd_on_grid = GridMeasure(grid, bin_measure(grid, gd.final, signs, outside="clip"), signs)  # GD binned on the grid
S = sinkhorn_divergence(GridMeasure(grid, traj.final.masses, signs), gd_on_grid, blur=0.01, tol=1e-4).value
F_star = global_minimum_for(F).value
print(f"t = {T}: F_JKO − F* = {traj.final_objective - F_star:.4e}, F_GD − F* = {gd.final_objective - F_star:.4e}")
print(f"output distance ‖f_JKO − f_GD‖/‖y‖ = {out:.4f}, Sinkhorn divergence S_0.01 = {S:.5f}")
