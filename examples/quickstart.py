"""Train a width-100 ReLU network in the mean-field scaling, explicitly and implicitly.

    python examples/quickstart.py
"""

import jax

jax.config.update("jax_enable_x64", True)

from wgflow import make_objective  # noqa: E402
from wgflow.data import teacher_student  # noqa: E402
from wgflow.flows import ProxSolver, SaveAt, explicit_gd, implicit_gd  # noqa: E402
from wgflow.init import initial_measure  # noqa: E402

ds = teacher_student(jax.random.PRNGKey(0), n=100, d=2, m0=4, teacher_signs="positive")
F = make_objective(ds.X, ds.y, "lifted", "relu", loss="square", lam=1e-4, reduction="mean")
mu0 = initial_measure(jax.random.PRNGKey(1), "lifted", 100, 2, scale=0.1)

traj = explicit_gd(F, mu0, step_size=0.25, num_steps=20_000, save=SaveAt(times=[1, 10, 100, 1000]))
print(traj.status, "|", traj.message)
for t, k in zip(traj.save_times, traj.save_steps):
    print(f"  t = {t:8.2f}   F = {traj.objective[k]:.6g}")

prox = implicit_gd(F, initial_measure(jax.random.PRNGKey(1), "lifted", 100, 2, scale=1.0), step_size=0.5, num_steps=20, solver=ProxSolver(tol=1e-8))
print(prox.status, "|", prox.message, "| final F =", prox.final_objective)
print("  inner iterations per step:", prox.stats["iterations"][:10], "...")
print("  largest proximal residual:", prox.stats["residual"].max())
