"""Benchmarks of the entropic JKO flow on a grid, in float64.

    wgflow bench --only jko [--quick]
    python -m wgflow.benchmarks.jko --radial          (the radial-scale study of docs/jko.md §9, split, 2-D)
    python -m wgflow.benchmarks.jko --radial-lifted   (the same for lifted on 3-D grids)

Rows (``run(quick) -> list[dict]``, keys ``name``, ``seconds``, ``baseline_seconds``,
``ratio`` = baseline / seconds, and sizes):

- ``kernel_log_<n>``: one log-domain Gibbs kernel application on an n × n grid, separable
  (wgflow.grid.log_kernel) against the dense point-cloud log-sum-exp over all N² pairs
  (chunked, cost computed on the fly: an N × N matrix needs 34 GB at 256²; OTT-JAX 0.6's
  online PointCloud mode fails on jax 0.10).
- ``kernel_ott_grid_<n>``: the same against OTT-JAX's own separable ``Grid.apply_lse_kernel``.
- ``kernel_std_<n>``: the standard-domain separable kernel (BLAS), against the log domain.
- ``kernel_stabilised_<n>``: the stabilised-scaling kernel (same result as the log domain, to
  rounding), against the log domain.
- ``step_<solver>_<n>``: one JKO step (split, d = 2, n = 100 data, the sum of square losses) by the
  semi-dual Newton and the linearised solvers, against Peyré's Dykstra iterations run to
  the same KKT tolerance in the same run.
- ``step_newton_512`` (full run only): one Newton step at 512² completes, in a fresh process;
  its peak resident memory (VmHWM).
- ``step_newton_<n>_stabilised`` (512 in the full run, 256 in ``--quick``): one Newton step by
  the stabilised-scaling kernel path (the default) against the same step by the log-domain
  reference kernel (``kernel="log"``) in the same run, same data and KKT tolerance (float64).
- ``step_newton_<n>^3_stabilised`` (128³ and 96³ in the full run, 64³ in ``--quick``): one
  Newton step of ``lifted`` (d = 2, Θ = (w₁, w₂, α)) on an n³ grid in a fresh process, its
  wall time and peak resident memory ``peak_rss_bytes`` (VmHWM of that process).
- ``sinkhorn_divergence_<n>^3_stabilised`` (48³ in the full run, 32³ in ``--quick``): one
  Sinkhorn divergence S_0.01 between two Gaussian densities on an n³ grid (the lifted study's
  measure distance) by the stabilised kernel (the default of ``wgflow.metrics.sinkhorn_divergence``)
  against the log-domain kernel, same tolerance, both compiled first.

``--radial`` runs instead the radial-scale comparison of docs/jko.md §9 (:func:`radial_rows`, split
on 2-D grids); ``--radial-lifted`` the same comparison for ``lifted`` on 3-D grids
(:func:`radial_lifted_rows`).

All times exclude compilation (programs are compiled ahead, then timed); the best of a few
repetitions for the kernels. The machine is shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np

from wgflow import make_objective
from wgflow.benchmarks.common import best_time, missing_baseline, run_fresh
from wgflow.data import teacher_student
from wgflow.flows.jko import Dykstra, Linearised, SemiDualNewton, jko_problem
from wgflow.grid import box_grid, initial_grid_density, kernel, log_kernel, stabilised_log_kernel


def _best(fn, x, repeat: int = 3) -> float:
    """Best wall time of ``fn(x)`` (compiled by a first call), via :func:`common.best_time`."""
    return best_time(lambda: jax.block_until_ready(fn(x)), repeat)


def kernel_rows(n: int, eps: float = 1e-3, dense: bool = True) -> list[dict]:
    grid = box_grid(-3.0, 3.0, (n, n))
    N = grid.size
    x = jnp.asarray(np.random.default_rng(0).normal(size=N) * 5.0)
    # wgflow's kernel includes the cell volumes v_i v_j; they are constants here (uniform grid)
    ours = jax.jit(lambda v: log_kernel(grid, v, eps))
    t_ours = _best(ours, x)
    rows = []
    sizes = dict(grid=f"{n}x{n}", N=N, eps=eps)
    if dense:
        # dense baseline: log Σ_j exp(x_j − |ξ_i − ξ_j|²/ε) over all N² pairs, in row chunks with the
        # cost computed on the fly (OTT's online PointCloud mode fails on jax 0.10; an N × N matrix
        # needs 34 GB at 256²)
        from wgflow.metrics.transport import _softmin_dense

        pts = jnp.asarray(grid.coords())
        dense_fn = jax.jit(lambda v: -_softmin_dense(pts, pts, v, jnp.zeros_like(v), eps, ()) / eps)
        t_dense = _best(dense_fn, x, repeat=1)
        lv = float(np.log(grid.volumes()[0]))
        err = float(jnp.max(jnp.abs(ours(x) - (dense_fn(x) + 2 * lv))))
        rows.append(
            dict(
                name=f"kernel_log_{n}",
                seconds=t_ours,
                baseline_seconds=t_dense,
                ratio=t_dense / t_ours,
                baseline="dense point-cloud log-sum-exp (chunked, online cost)",
                max_abs_diff=err,
                **sizes,
            )
        )
    try:
        from ott.geometry import grid as ott_grid
    except ImportError:
        rows.append(dict(name=f"kernel_ott_grid_{n}", seconds=t_ours, baseline_seconds=None, ratio=None, baseline=missing_baseline("OTT-JAX"), **sizes))
    else:
        og = ott_grid.Grid(x=[jnp.asarray(ax.points) for ax in grid.blocks[0]], epsilon=eps)
        ott_fn = jax.jit(lambda v: og.apply_lse_kernel(jnp.zeros(N), eps * v, eps, axis=1)[0])
        t_ott = _best(ott_fn, x)
        rows.append(
            dict(
                name=f"kernel_ott_grid_{n}",
                seconds=t_ours,
                baseline_seconds=t_ott,
                ratio=t_ott / t_ours,
                baseline="OTT Grid apply_lse_kernel (separable)",
                **sizes,
            )
        )
    t_stab = _best(jax.jit(lambda v: stabilised_log_kernel(grid, v, eps)), x)
    rows.append(
        dict(
            name=f"kernel_stabilised_{n}",
            seconds=t_stab,
            baseline_seconds=t_ours,
            ratio=t_ours / t_stab,
            baseline="wgflow log-domain kernel (the reference)",
            max_abs_diff=float(jnp.max(jnp.abs(stabilised_log_kernel(grid, x, eps) - ours(x)))),
            **sizes,
        )
    )
    xs = jnp.exp(x - x.max())
    t_std = _best(jax.jit(lambda v: kernel(grid, v, 0.1)), xs)
    rows.append(dict(name=f"kernel_std_{n}", seconds=t_std, baseline_seconds=t_ours, ratio=t_ours / t_std, baseline="wgflow log-domain kernel", **sizes))
    return rows


def _problem3(n_grid: int, n_data: int = 100, dtype=jnp.float64):
    """``lifted`` in d = 2 on an n³ grid over (w₁, w₂, α) ∈ [−2, 2]³: the lifted study's space and loss
    (mean square loss, λ = 1e-3, initial Gaussian of std 0.4)."""
    ds = teacher_student(jax.random.PRNGKey(0), n_data, 2, 3, teacher_signs="positive")
    obj = make_objective(jnp.asarray(ds.X, dtype), jnp.asarray(ds.y, dtype), "lifted", lam=1e-3, reduction="mean")
    grid = box_grid(-2.0, 2.0, (n_grid,) * 3)
    p0 = jnp.asarray(initial_grid_density(grid, "gaussian", std=0.4), dtype)
    prob = jko_problem(obj, grid)
    u0 = jax.grad(obj.risk)(prob.outputs(p0))
    return prob, p0, u0


def _blur3(n: int) -> float:
    """ε = 2h² of an n³ grid over [−2, 2]³ (the study's rule)."""
    return 2 * (4.0 / n) ** 2


def _problem(n_grid: int, n_data: int = 100):
    ds = teacher_student(jax.random.PRNGKey(0), n_data, 2, 3)
    obj = make_objective(ds.X, ds.y, "split", lam=1e-3)  # Σ (f − y)² + λ ∫ V d|μ|
    grid = box_grid(-3.0, 3.0, (n_grid, n_grid))
    p0 = jnp.asarray(initial_grid_density(grid, "gaussian", std=0.5, components=2))
    prob = jko_problem(obj, grid)
    u0 = jax.grad(obj.risk)(prob.outputs(p0))
    return prob, p0, u0


def _timed_step(prob, p0, u0, tau, eps, solver):
    fn = jax.jit(lambda pb, q, u, t, e: solver(pb, q, u, t, e)).lower(prob, p0, u0, tau, eps).compile()
    t = time.perf_counter()
    out = jax.block_until_ready(fn(prob, p0, u0, tau, eps))
    return time.perf_counter() - t, out


def step_rows(n: int, tau: float = 1e-2, eps: float = 1e-2, tol: float = 1e-7) -> list[dict]:
    prob, p0, u0 = _problem(n)
    sizes = dict(grid=f"{n}x{n}", N=n * n, components=2, n_data=100, tau=tau, eps=eps, tol=tol)
    t_d, out_d = _timed_step(prob, p0, u0, tau, eps, Dykstra(tol=tol))
    rows = []
    for name, solver in (("newton", SemiDualNewton(tol=tol)), ("linearised", Linearised())):
        t, out = _timed_step(prob, p0, u0, tau, eps, solver)
        rows.append(
            dict(
                name=f"step_{name}_{n}",
                seconds=t,
                baseline_seconds=t_d,
                ratio=t_d / t,
                baseline="Dykstra (Peyré 2015), same tol",
                kkt=float(out.kkt),
                iterations=int(out.iterations),
                kernel_applications=int(out.kernel_applications),
                baseline_kkt=float(out_d.kkt),
                baseline_iterations=int(out_d.iterations),
                baseline_kernel_applications=int(out_d.kernel_applications),
                l1_to_baseline=float(jnp.abs(out.masses - out_d.masses).sum()),
                moved=float(jnp.abs(out.masses - p0).sum()) / 2,
                **sizes,
            )
        )
    return rows


def stabilised_rows(n: int, tau: float = 1e-2, eps: float = 1e-2, tol: float = 1e-7) -> list[dict]:
    """One Newton step at n² by the stabilised kernel path against the log-domain path, same run and tol."""
    prob, p0, u0 = _problem(n)
    t_log, out_log = _timed_step(prob, p0, u0, tau, eps, SemiDualNewton(tol=tol, kernel="log"))
    t, out = _timed_step(prob, p0, u0, tau, eps, SemiDualNewton(tol=tol, kernel="stabilised"))
    return [
        dict(
            name=f"step_newton_{n}_stabilised",
            seconds=t,
            baseline_seconds=t_log,
            ratio=t_log / t,
            baseline="the same Newton step, log-domain kernel (kernel='log'), same tol",
            grid=f"{n}x{n}",
            N=n * n,
            components=2,
            n_data=100,
            tau=tau,
            eps=eps,
            tol=tol,
            kkt=float(out.kkt),
            baseline_kkt=float(out_log.kkt),
            iterations=int(out.iterations),
            kernel_applications=int(out.kernel_applications),
            baseline_kernel_applications=int(out_log.kernel_applications),
            seconds_per_kernel_application=t / int(out.kernel_applications),
            l1_to_baseline=float(jnp.abs(out.masses - out_log.masses).sum()),
            max_dual_diff=float(jnp.max(jnp.abs(out.dual - out_log.dual))),
        )
    ]


GRID3_STEP = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    from wgflow.benchmarks.common import peak_rss_bytes
    from wgflow.benchmarks.jko import _problem3, _timed_step
    from wgflow.flows.jko import SemiDualNewton
    prob, p0, u0 = _problem3({n})
    t, out = _timed_step(prob, p0, u0, {tau}, {eps}, SemiDualNewton(tol={tol}))
    print(json.dumps(dict(seconds=t, kkt=float(out.kkt), converged=bool(out.converged), iterations=int(out.iterations),
                          kernel_applications=int(out.kernel_applications), peak_rss_bytes=peak_rss_bytes())))
    """
)


def grid3_row(n: int, tau: float = 0.025, eps: float | None = None, tol: float = 1e-7) -> dict:
    """One stabilised Newton step of ``lifted`` on an n³ grid in a fresh process: time and peak memory.

    ``eps``: default 2h² (h = 4/n), the study's rule."""
    eps = _blur3(n) if eps is None else eps
    out = run_fresh(GRID3_STEP.format(n=n, tau=tau, eps=eps, tol=tol))
    return dict(
        name=f"step_newton_{n}^3_stabilised",
        baseline_seconds=None,
        ratio=None,
        grid=f"{n}x{n}x{n}",
        N=n**3,
        components=1,
        n_data=100,
        tau=tau,
        eps=eps,
        tol=tol,
        peak_rss_gib=out["peak_rss_bytes"] / 2**30,
        **out,
    )


def divergence3_row(n: int, blur: float = 0.01, tol: float = 1e-7) -> dict:
    """One Sinkhorn divergence between two densities on an n³ box grid, stabilised against log-domain kernel."""
    from wgflow.grid import GridMeasure
    from wgflow.metrics import sinkhorn_divergence

    grid = box_grid(-2.4, 2.4, (n, n, n))
    a = GridMeasure(grid, initial_grid_density(grid, "gaussian", std=0.4))
    b = GridMeasure(grid, initial_grid_density(grid, "gaussian", mean=[0.1, -0.05, 0.05], std=0.45))
    res, secs = {}, {}
    for k in ("log", "stabilised"):
        sinkhorn_divergence(a, b, blur, tol=tol, kernel=k)  # compiles
        t0 = time.perf_counter()
        res[k] = sinkhorn_divergence(a, b, blur, tol=tol, kernel=k)
        secs[k] = time.perf_counter() - t0
    return dict(
        name=f"sinkhorn_divergence_{n}^3_stabilised",
        seconds=secs["stabilised"],
        baseline_seconds=secs["log"],
        ratio=secs["log"] / secs["stabilised"],
        baseline="the same divergence, log-domain kernel (kernel='log'), same tol",
        grid=f"{n}x{n}x{n}",
        N=n**3,
        blur=blur,
        tol=tol,
        value=res["stabilised"].value,
        baseline_value=res["log"].value,
        iterations=res["stabilised"].iterations,
        converged=res["stabilised"].converged and res["log"].converged,
    )


BIG_STEP = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    from wgflow.benchmarks.common import peak_rss_bytes
    from wgflow.benchmarks.jko import _problem, _timed_step
    from wgflow.flows.jko import SemiDualNewton
    prob, p0, u0 = _problem({n})
    t, out = _timed_step(prob, p0, u0, {tau}, {eps}, SemiDualNewton(tol=1e-7, kernel="log"))
    print(json.dumps(dict(seconds=t, kkt=float(out.kkt), converged=bool(out.converged), iterations=int(out.iterations),
                          kernel_applications=int(out.kernel_applications), peak_rss_bytes=peak_rss_bytes())))
    """
)


def big_step_row(n: int = 512, tau: float = 1e-2, eps: float = 1e-2) -> dict:
    """One Newton step at n² in a fresh process: it completes, and how much memory it took."""
    out = run_fresh(BIG_STEP.format(n=n, tau=tau, eps=eps))
    return dict(
        name=f"step_newton_{n}",
        baseline_seconds=None,
        ratio=None,
        grid=f"{n}x{n}",
        N=n * n,
        components=2,
        n_data=100,
        tau=tau,
        eps=eps,
        peak_rss_gib=out.pop("peak_rss_bytes") / 2**30,
        **out,
    )


def _quantile_99(values, masses) -> float:
    """The value below which 99 % of the mass lies."""
    v, w = np.asarray(values), np.abs(np.asarray(masses))
    order = np.argsort(v)
    return float(v[order][np.searchsorted(np.cumsum(w[order]) / w.sum(), 0.99)])


def _radius_99(mu) -> float:
    """The radius |θ| within which 99 % of the mass of ``mu`` lies."""
    return _quantile_99(np.linalg.norm(np.asarray(mu.positions), axis=1), mu.masses)


def radial_rows(T: float = 3.0, n: int = 64) -> list[dict]:
    """The grid dictates the neuron's scale (docs/jko.md §9): grids of about the same N compared
    with particle GD on a teacher that needs neurons of scale |u| ≈ 2–3 (split, d = 2).

    Each JKO run: τ = 0.1 and ε = 2h² (h the finest spacing, ε ≥ 0.01); non-uniform grids also with
    ε = 2h² of their coarsest spacing. GD: η = 2e-3 from the same initial density as 51 200
    weighted particles (a 160² quadrature). Reported: F(T), the relative output distance to GD at T, and the radius
    within which 99 % of the mass lies (``radius_99``; GD's in the ``radial_gd`` row).
    """
    from wgflow import Measure
    from wgflow.flows import explicit_gd
    from wgflow.grid import GridMeasure, symlog_grid, two_scale_grid

    ds = teacher_student(jax.random.PRNGKey(2), 40, 2, 2)
    obj = make_objective(ds.X, 2.0 * ds.y, "split", lam=1e-3, reduction="mean")  # a teacher of output scale 2
    std = 0.3
    ref_grid = box_grid(-6.0, 6.0, (2 * n, 2 * n))
    # GD from the same initial measure, as weighted particles on a fine grid (a quadrature of the
    # initial density: no sampling noise — 4000 sampled particles are ≈ 9 % off in the outputs)
    fine = box_grid(-2.0, 2.0, (160, 160))
    particles = GridMeasure(fine, initial_grid_density(fine, "gaussian", std=std, components=2), (1.0, -1.0)).to_measure()
    t0 = time.perf_counter()
    gd = explicit_gd(obj, particles, 2e-3, int(round(T / 2e-3)))
    t_gd = time.perf_counter() - t0
    f_gd = obj.outputs(Measure(jnp.asarray(gd.final.positions), jnp.asarray(gd.final.masses)))
    m = int(round(n / np.sqrt(2)))
    grids = {
        f"uniform ±1.5, {n}²": box_grid(-1.5, 1.5, (n, n)),
        f"uniform ±6, {n}²": box_grid(-6.0, 6.0, (n, n)),
        f"symlog ±6 (linear 0.75), {n}²": symlog_grid(6.0, (n, n), 0.75),
        f"two-scale ±1.5 ∪ ±6, 2×{m}²": two_scale_grid(box_grid(-1.5, 1.5, (m, m)), 4.0),
        f"uniform ±6, {2 * n}² (4× N)": ref_grid,
    }

    rows = [
        dict(
            name="radial_gd",
            seconds=t_gd,
            baseline_seconds=None,
            ratio=None,
            F_T=float(gd.objective[-1]),
            m=particles.width,
            T=T,
            radius_99=_radius_99(Measure(jnp.asarray(gd.final.positions), jnp.asarray(gd.final.masses))),
        )
    ]
    _print(rows)
    return rows + _radial_jko_rows(
        obj,
        grids,
        float(gd.objective[-1]),
        f_gd,
        T,
        std=std,
        signs=(1.0, -1.0),
        prefix="radial",
        describe=lambda mu, traj, grid: dict(radius_99=_radius_99(mu)),
    )


def _radial_jko_rows(obj, grids: dict, F_gd: float, f_gd, T: float, *, std: float, signs: tuple, prefix: str, describe) -> list[dict]:
    """One row per grid of ``grids`` (label → Grid) and ε: the JKO flow (τ = 0.1) to T from the
    Gaussian N(0, std²) on the grid, with ε = 2h² of the finest spacing (≥ 0.01) and, on a
    non-uniform grid, also of the coarsest; against GD's final F and outputs. ``describe(mu,
    traj, grid)`` adds where the mass went."""
    from wgflow.flows.jko import jko
    from wgflow.grid import GridMeasure

    runs = []
    for label, grid in grids.items():
        runs.append((label, grid, max(2 * grid.min_spacing**2, 0.01)))
        if grid.spacing > 1.01 * grid.min_spacing:
            runs.append((label + ", ε from coarsest h", grid, 2 * grid.spacing**2))
    rows = []
    for label, grid, eps in runs:
        p0 = initial_grid_density(grid, "gaussian", std=std, components=len(signs))
        t0 = time.perf_counter()
        traj = jko(obj, p0, 0.1, int(round(T / 0.1)), grid=grid, blur=eps)
        secs = time.perf_counter() - t0
        mu = GridMeasure(grid, traj.final.masses, signs).to_measure()
        f = obj.outputs(mu)
        rows.append(
            dict(
                name=f"{prefix}: {label}",
                seconds=secs,
                baseline_seconds=None,
                ratio=None,
                N=grid.size,
                eps=eps,
                h_min=grid.min_spacing,
                h_max=grid.spacing,
                status=traj.status,
                F_T=float(traj.objective[-1]),
                F_T_gd=F_gd,
                rel_output_distance_to_gd=float(jnp.linalg.norm(f - f_gd) / jnp.linalg.norm(f_gd)),
                **describe(mu, traj, grid),
            )
        )
        _print(rows[-1:])
    return rows


def radial_lifted_rows(T: float = 3.0, n: int = 40) -> list[dict]:
    """The radial-scale comparison of :func:`radial_rows` for ``lifted`` on 3-D grids over (w₁, w₂, α).

    The same teacher (output scale 2), data, loss, initial law N(0, 0.3² I₃), τ = 0.1 and T; grids of
    about n³ points: a small uniform box ±1.5, a large one ±6, the log-radial ``symlog_grid`` (all three
    axes, or the α axis only with w uniform on ±6), the two-scale union ±1.5 ∪ ±6 of two m³ blocks
    (m = n/2^{1/3}), and the large box at (2n)³ (8× N). ε = 2h² of the finest spacing (≥ 0.01);
    non-uniform grids also with ε = 2h² of their coarsest spacing. GD: η = 2e-3 from the same initial
    density as weighted atoms (a 40³ quadrature on ±1.5). Reported: F(T), the relative output distance to
    GD at T, the 99 % radius of |θ| (``radius_99``) and of |w| and |α| apart (``w_99``, ``alpha_99``),
    and ``edge_mass``: the mass on the outermost grid points (the box's faces; GD's row: the mass beyond 6).
    """
    from wgflow import Measure
    from wgflow.flows import explicit_gd
    from wgflow.grid import Axis, Grid, GridMeasure, symlog_grid, two_scale_grid

    ds = teacher_student(jax.random.PRNGKey(2), 40, 2, 2)
    obj = make_objective(ds.X, 2.0 * ds.y, "lifted", lam=1e-3, reduction="mean")  # a teacher of output scale 2
    std = 0.3
    fine = box_grid(-1.5, 1.5, (40, 40, 40))
    particles = GridMeasure(fine, initial_grid_density(fine, "gaussian", std=std), (1.0,)).to_measure()
    t0 = time.perf_counter()
    gd = explicit_gd(obj, particles, 2e-3, int(round(T / 2e-3)))
    t_gd = time.perf_counter() - t0
    mu_gd = Measure(jnp.asarray(gd.final.positions), jnp.asarray(gd.final.masses))
    f_gd = obj.outputs(mu_gd)

    def where(mu) -> dict:
        x, w = np.asarray(mu.positions), np.asarray(mu.masses)
        return dict(radius_99=_radius_99(mu), w_99=_quantile_99(np.linalg.norm(x[:, :2], axis=1), w), alpha_99=_quantile_99(np.abs(x[:, 2]), w))

    x_gd = np.asarray(mu_gd.positions)
    rows = [
        dict(
            name="radial_lifted_gd",
            seconds=t_gd,
            baseline_seconds=None,
            ratio=None,
            F_T=float(gd.objective[-1]),
            m=particles.width,
            T=T,
            edge_mass=float(np.asarray(mu_gd.masses)[np.abs(x_gd).max(axis=1) > 6.0].sum()),
            **where(mu_gd),
        )
    ]
    _print(rows)
    m = int(round(n / 2 ** (1 / 3)))
    grids = {
        f"uniform ±1.5, {n}³": box_grid(-1.5, 1.5, (n,) * 3),
        f"uniform ±6, {n}³": box_grid(-6.0, 6.0, (n,) * 3),
        f"symlog ±6 (linear 0.75), {n}³": symlog_grid(6.0, (n,) * 3, 0.75),
        f"w uniform ±6, α symlog ±6 (linear 0.75), {n}³": Grid(((Axis.uniform(-6.0, 6.0, n),) * 2 + (Axis.symlog(6.0, n, 0.75),),)),
        f"two-scale ±1.5 ∪ ±6, 2×{m}³": two_scale_grid(box_grid(-1.5, 1.5, (m,) * 3), 4.0),
        f"uniform ±6, {2 * n}³ (8× N)": box_grid(-6.0, 6.0, (2 * n,) * 3),
    }

    def faces_and_where(mu, traj, grid) -> dict:
        xi = grid.coords()
        lo, hi = xi.min(axis=0), xi.max(axis=0)
        edge = np.any((xi <= lo + 1e-12) | (xi >= hi - 1e-12), axis=1)
        return dict(edge_mass=float(np.asarray(traj.final.masses).reshape(-1)[edge].sum()), **where(mu))

    return rows + _radial_jko_rows(obj, grids, float(gd.objective[-1]), f_gd, T, std=std, signs=(1.0,), prefix="radial lifted", describe=faces_and_where)


def run(quick: bool = False) -> list[dict]:
    """All rows (float64 inside; the previous x64 setting is restored)."""
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        rows = []
        for n in (64, 128) if quick else (128, 256):
            rows += kernel_rows(n)
        for r in rows:
            if r["name"] == "kernel_log_128":
                r["target"] = "ratio ≥ 50 at 128²"
        rows += step_rows(96 if quick else 256)
        for r in rows:
            if r["name"].startswith("step_newton"):
                r["target"] = "ratio ≥ 10 (Newton vs Dykstra)"
        rows += stabilised_rows(256 if quick else 512)
        rows[-1]["target"] = "ratio ≥ 8 at 512² (stabilised vs log-domain Newton step, same tol; aim ≈ 40)"
        for n in (64,) if quick else (128, 96):
            rows.append(grid3_row(n))
            rows[-1]["target"] = "completes within 4 GiB peak resident memory" if n == 128 else "a step feasible for the lifted study"
        rows.append(divergence3_row(32 if quick else 48))
        rows[-1]["target"] = "faster than the log-domain kernel, same value to rounding"
        if not quick:
            rows.append(big_step_row())
            rows[-1]["target"] = "completes at 512² without running out of memory (log-domain kernel)"
        return rows
    finally:
        jax.config.update("jax_enable_x64", x64)


def _print(rows):
    for r in rows:
        base = f"  baseline {r['baseline_seconds']:.4g}s  ratio {r['ratio']:.1f}x" if r.get("ratio") else ""
        extra = {k: v for k, v in r.items() if k not in ("name", "seconds", "baseline_seconds", "ratio", "baseline")}
        print(f"{r['name']:<24} {r['seconds']:.4g}s{base}  {extra}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    ap.add_argument("--radial", action="store_true", help="run only the radial-scale comparison (docs/jko.md §9): split, 2-D grids")
    ap.add_argument("--radial-lifted", action="store_true", help="run only the radial-scale comparison for lifted, 3-D grids over (w, α)")
    ap.add_argument("--n", type=int, default=None, help="points per axis of the radial comparison (default 64 in 2-D, 40 in 3-D)")
    args = ap.parse_args(argv)
    if args.radial or args.radial_lifted:
        jax.config.update("jax_enable_x64", True)
        rows = []
        if args.radial:
            rows += radial_rows() if args.n is None else radial_rows(n=args.n)
        if args.radial_lifted:
            rows += radial_lifted_rows() if args.n is None else radial_lifted_rows(n=args.n)
    else:
        rows = run(args.quick)
        _print(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
