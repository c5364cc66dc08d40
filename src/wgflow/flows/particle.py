"""Particle gradient descent in mean-field time (DESIGN §2): explicit and implicit.

Explicit: ``θ_k ← R(θ_k + η v_k)``, ``v_k = −∇F'(μ)(θ_k)`` (projected on the
tangent space; ``R`` the retraction — renormalising ``u`` for ``sphere``).

Implicit (proximal point, seed 001): ``θ⁺ = argmin_θ F(θ) + Σ_k |p_k| |θ_k − θ_k^t|²/(2η)``,
the implicit Euler step of the same flow (for masses 1/m this is
``argmin m F + |θ − θ^t|²/(2η)``, i.e. plain implicit GD with step η for ``lifted``).
It is solved by optax's L-BFGS warm-started at θ^t until the proximal residual

    ρ = max_k |∇F'(μ⁺)(θ⁺_k) + (θ⁺_k − θ^t_k)/η|      (velocity units)

is below ``tol``; each step reports its inner iterations and ρ.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax import Array

from jax.sharding import Mesh

from wgflow import sharding
from wgflow.errors import InputError, require
from wgflow.flows.schedules import Schedule, step_sizes
from wgflow.flows.trajectory import SaveAt, Trajectory, integrate, integrate_batch
from wgflow.measure import Measure
from wgflow.objective import Objective


def _check(objective: Objective, mu0: Measure) -> None:
    if not isinstance(objective, Objective):
        raise InputError("objective", "must be an Objective", "build it with wgflow.make_objective(...)")
    if not isinstance(mu0, Measure):
        raise InputError("mu0", "must be a Measure", "use wgflow.init.initial_measure(...) or Measure(positions, masses)")
    require(mu0.positions.ndim == 2, "mu0.positions", f"must be (m, D), got shape {tuple(mu0.positions.shape)}")
    objective.unit.check_input_dim(mu0.dim, objective.d)
    require(bool(jnp.all(jnp.isfinite(mu0.positions))), "mu0.positions", "contain NaN/inf", "start from finite positions")
    require(bool(jnp.all(jnp.isfinite(mu0.masses))), "mu0.masses", "contain NaN/inf", "give finite masses")
    if not objective.unit.signed_masses:
        require(bool(jnp.all(mu0.masses >= 0)), "mu0.masses", f"'{objective.unit.name}' needs masses >= 0", "carry output signs in the position")


def _speed(mu: Measure, v: Array) -> Array:
    """``‖∇F'(μ)‖_{L²(|μ|)}``: the rate of decrease is its square (dF/dt = −‖∇F'‖²)."""
    return jnp.sqrt(jnp.sum(jnp.abs(mu.masses) * jnp.sum(v * v, axis=-1)) / jnp.maximum(jnp.sum(jnp.abs(mu.masses)), 1e-300))


def explicit_step(objective: Objective, mu: Measure, eta: Array) -> tuple[Measure, Array, dict]:
    """One explicit step; returns (μ⁺, F(μ), diagnostics). Atoms of zero mass are padding
    (sweeps over widths, sharding): they carry nothing and do not move."""
    F, v = objective.value_and_velocity(mu)
    v = jnp.where((mu.masses != 0)[:, None], v, 0.0)
    pos = objective.unit.retract(mu.positions + eta * v)
    return Measure(pos, mu.masses), F, {"speed": _speed(mu, v)}


def _value(objective: Objective, mu: Measure) -> Array:
    return objective.value(mu)


def explicit_gd(
    objective: Objective,
    mu0: Measure,
    step_size: Schedule,
    num_steps: int,
    *,
    save: SaveAt | None = None,
    max_growth: float = 1e6,
    block_size: int = 256,
    callback: Callable[[int, float, float], None] | None = None,
    shard: bool | Mesh = False,
) -> Trajectory:
    """Explicit particle gradient descent from ``mu0`` for ``num_steps`` steps of mean-field size ``step_size``.

    ``step_size`` is a float or a schedule ``k ↦ η_k`` (see :mod:`wgflow.flows.schedules`).
    ``shard=True`` (or a :class:`jax.sharding.Mesh`) spreads the particles over all devices
    (:mod:`wgflow.sharding`); the results are those of one device, to rounding.
    Diagnostics: ``speed`` = ‖∇F'(μ_k)‖_{L²(|μ_k|)} per step.
    """
    _check(objective, mu0)
    etas = step_sizes(step_size, num_steps)
    if shard is not False:
        return _sharded(explicit_gd, objective, mu0, shard, step_size=step_size, num_steps=num_steps, save=save,
                        max_growth=max_growth, block_size=block_size, callback=callback)
    return integrate(
        explicit_step, _value, objective, mu0, etas, save=save, max_growth=max_growth,
        block_size=block_size, callback=callback, name="explicit GD",
    )


def _sharded(flow, objective: Objective, mu0: Measure, shard, **kwargs) -> Trajectory:
    """Run ``flow`` with the particles sharded over a mesh, then drop the padding atoms."""
    mesh = sharding.atom_mesh() if shard is True else shard
    mu, m = sharding.shard_measure(mu0, mesh)
    traj = flow(sharding.replicate(objective, mesh), mu, **kwargs)
    cut = lambda x: x[..., :m, :] if x.ndim >= 2 and x.shape[-2] == mu.width else x[..., :m]  # noqa: E731
    return dataclasses.replace(
        traj,
        snapshots=Measure(cut(traj.snapshots.positions), traj.snapshots.masses[..., :m]),
        final=Measure(traj.final.positions[:m], traj.final.masses[:m]),
    )


# --------------------------------------------------------------------------- implicit


@dataclasses.dataclass(frozen=True)
class ProxSolver:
    """Inner solver of the proximal step: optax L-BFGS until the residual ρ ≤ ``tol``.

    At most ``max_iter`` L-BFGS iterations in all, in active-set rounds of at most
    ``round_iter`` (rounds matter only for a kinked σ such as ReLU; see :func:`implicit_step`;
    L-BFGS restarts each round).
    ``kink_band``: a neuron with ``|v(θ)·x_j| ≤ kink_band`` counts as sitting on the kink of x_j,
    one with ``|v(θ)| ≤ kink_band`` as sitting at the origin (on all kinks; its residual is
    estimated over ``origin_directions`` fixed directions).

    ``tol=None`` picks 1e-9 in float64 and 1e-4 in float32 (velocity units).
    """

    tol: float | None = None
    max_iter: int = 2000
    round_iter: int = 60
    memory_size: int = 20
    kink_band: float = 1e-6
    origin_directions: int = 256

    def resolved_tol(self, dtype) -> float:
        if self.tol is not None:
            return float(self.tol)
        return 1e-9 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def _prox_objective(objective: Objective, mu_t: Measure, eta: Array):
    weights = jnp.abs(mu_t.masses)

    def G(pos):
        pos = objective.unit.retract(pos)
        return objective.value(Measure(pos, mu_t.masses)) + jnp.sum(weights * jnp.sum((pos - mu_t.positions) ** 2, axis=-1)) / (2 * eta)

    return G


def _kinks(objective: Objective, mu: Measure, g: Array):
    """For each neuron: its nearest kink ``j`` (data point with the smallest |z_jk|), ``z_jk``,
    and the Clarke segment ``{base + t h : t ∈ [0, 1]}`` of the residual ``g`` across that kink,
    with the ``t`` closest to 0 (see :func:`prox_residual`)."""
    unit = objective.unit
    pos = mu.positions
    Z = unit.preactivation(pos, objective.X)  # (n, m)
    j = jnp.argmin(jnp.abs(Z), axis=0)
    z = jnp.take_along_axis(Z, j[None, :], axis=0)[0]
    r = objective.risk_gradient(mu)[j] * mu.signs

    def corner(th, x):  # c(θ) z(θ): its gradient is the jump of ∇φ across the kink, per unit σ'-jump
        c = jnp.asarray(unit.output_weight(th[None])).reshape(-1)[0]
        return c * unit.preactivation(th[None], x[None])[0, 0]

    h = unit.activation.kink_jump * r[:, None] * jax.vmap(jax.grad(corner))(pos, objective.X[j])
    h = unit.project_tangent(pos, h)
    base = g - jnp.where(z > 0, 1.0, 0.0)[:, None] * h  # the σ'(0⁻) side of the segment
    t = -jnp.sum(base * h, axis=1) / jnp.maximum(jnp.sum(h * h, axis=1), 1e-300)
    return j, z, base, h, t


def _directions(d: int, count: int, dtype) -> Array:
    """Fixed unit vectors of R^d: equally spaced angles in the plane, quasi-random beyond."""
    if d == 1:
        return jnp.array([[1.0], [-1.0]], dtype)
    if d == 2:
        a = jnp.arange(count, dtype=dtype) * (2 * jnp.pi / count)
        return jnp.stack([jnp.cos(a), jnp.sin(a)], axis=1)
    g = jax.random.normal(jax.random.PRNGKey(0), (count, d), dtype)
    return g / jnp.linalg.norm(g, axis=1, keepdims=True)


def _origin_slopes(objective: Objective, mu_t: Measure, mu_next: Measure, eta, count: int):
    """For each neuron, the steepest one-sided descent rate of the proximal objective when its
    input weights v leave 0, over ``count`` fixed directions u (finite differences of size 1e-7,
    exact to O(1e-7) for a piecewise-smooth objective): (slope (m,), best direction (m, d))."""
    unit = objective.unit
    pos, m = mu_next.positions, mu_next.width
    U = _directions(objective.d, count, pos.dtype)
    K = U.shape[0]
    eps = 1e-7
    r = objective.risk_gradient(mu_next)
    base = jnp.repeat(pos, K, axis=0)
    cand = unit.retract(unit.with_direction(base, eps * jnp.tile(U, (m, 1))))
    s = jnp.repeat(mu_next.signs, K)
    t = jnp.repeat(mu_t.positions, K, axis=0)

    def per_mass(th):  # first-order change of F per unit mass, plus the proximal term
        return s * (r @ unit.features(th, objective.X)) + objective.lam * unit.regulariser(th) + jnp.sum((th - t) ** 2, axis=1) / (2 * eta)

    step = jnp.linalg.norm(cand - base, axis=1)
    D = ((per_mass(cand) - per_mass(base)) / jnp.maximum(step, 1e-300)).reshape(m, K)
    i = jnp.argmin(D, axis=1)
    return jnp.maximum(-jnp.min(D, axis=1), 0.0), U[i]


def _neuron_residuals(objective: Objective, mu_t: Measure, mu_next: Measure, eta, solver: "ProxSolver"):
    """Per neuron, the implicit-Euler residual in velocity units (see :func:`prox_residual`),
    and the active-set information: (residual (m,), kink mask, kink inputs (m, d),
    origin mask, descent direction from the origin (m, d))."""
    unit = objective.unit
    v = objective.velocity(mu_next)  # −∇F' with the σ'(0) = 0 selection, tangent
    g = unit.project_tangent(mu_next.positions, (mu_next.positions - mu_t.positions) / eta) - v
    res = jnp.linalg.norm(g, axis=-1)
    m, d = mu_next.width, objective.d
    if unit.activation.kink_jump is None:
        none = jnp.zeros((m,), bool)
        return res, none, jnp.zeros((m, d), g.dtype), none, jnp.zeros((m, d), g.dtype)
    j, z, base, h, t = _kinks(objective, mu_next, g)
    on_kink = jnp.abs(z) <= solver.kink_band
    res = jnp.where(on_kink, jnp.linalg.norm(base + jnp.clip(t, 0.0, 1.0)[:, None] * h, axis=-1), res)
    kink_mask = on_kink & (t > 0) & (t < 1)
    at_origin = jnp.linalg.norm(unit.direction(mu_next.positions), axis=-1) <= solver.kink_band
    if unit.activation.homogeneity == 1:
        slope, direction = _origin_slopes(objective, mu_t, mu_next, eta, solver.origin_directions)
        res = jnp.where(at_origin, slope, res)
    else:
        direction = jnp.zeros((m, d), g.dtype)
    return res, kink_mask & ~at_origin, objective.X[j], at_origin, direction


def prox_residual(objective: Objective, mu_t: Measure, mu_next: Measure, eta, solver: "ProxSolver | None" = None) -> Array:
    """Implicit-Euler residual ``max_k dist(0, ∂[F'(μ⁺) + |· − θ^t_k|²/(2η)](θ⁺_k))``, velocity units.

    For a smooth σ: ``max_k |∇F'(μ⁺)(θ⁺_k) + (θ⁺_k − θ^t_k)/η|`` (tangent part). For ReLU a
    proximal point often sits exactly on a kink ``v(θ_k)·x_j = 0`` (as the prox of |x| sits
    at 0): there optimality means 0 lies in the Clarke subdifferential, the segment between
    the two one-sided gradients, and the distance from 0 to that segment is reported (for
    the data point with the smallest ``|z_jk| ≤ solver.kink_band``). A neuron whose input
    weights are 0 sits on every kink at once; for it the residual is the steepest descent
    rate out of 0 (the metric slope), estimated over ``solver.origin_directions`` directions.
    """
    solver = solver or ProxSolver()
    return jnp.max(_neuron_residuals(objective, mu_t, mu_next, eta, solver)[0])


def implicit_step(objective: Objective, mu: Measure, eta: Array, solver: ProxSolver) -> tuple[Measure, Array, dict]:
    """One proximal step; returns (μ⁺, F(μ), {iterations, residual, prox_value, on_kink, at_origin}).

    L-BFGS minimises ``G(θ) = F(θ) + Σ|p_k||θ_k − θ^t_k|²/(2η)``. With a kinked σ (ReLU),
    neurons whose minimiser sits on a kink make G nonsmooth there and stall L-BFGS. An
    active-set loop (rounds of ``solver.round_iter`` iterations) then pins each such neuron
    to its kink (``G∘Π``, Π the projection on ``v(θ_k)·x_j = 0``, smooth), keeps it there
    while its Clarke multiplier lies in [0, 1] and releases it otherwise; a neuron whose
    input weights reach 0 is pinned at 0 while no direction descends out of it, and
    otherwise sent a step η·slope along the steepest one.
    """
    unit = objective.unit
    G = _prox_objective(objective, mu, eta)
    tol = solver.resolved_tol(mu.positions.dtype)
    opt = optax.lbfgs(memory_size=solver.memory_size)
    # L-BFGS runs in z_k = √|p_k| θ_k, where the mass-weighted (mean-field) metric is Euclidean:
    # in θ the Hessian of G scales with |p_k|, and masses spread over many decades (a quadrature
    # of a density) would leave L-BFGS with that condition number. ∇_z G / √|p_k| is the
    # residual in velocity units. Zero-mass atoms have ∇G = 0 and stay put.
    weights = jnp.abs(mu.masses)
    scale = jnp.where(weights > 0, jnp.sqrt(weights), 1.0)[:, None]
    kinked = unit.activation.kink_jump is not None

    def project(psi, kink_x, kink_mask, origin_mask):
        if not kinked:
            return psi
        psi = unit.project_to_kink(psi, kink_x, kink_mask)
        zero = unit.retract(unit.with_direction(psi, jnp.zeros_like(unit.direction(psi))))
        return jnp.where(origin_mask[:, None], zero, psi)

    def lbfgs(pos, active, budget):
        Gz = lambda z: G(project(z / scale, *active))  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(Gz)

        def cond(c):
            it, _, _, res = c
            return (it < budget) & (res > tol)

        def body(c):
            it, z, state, _ = c
            value, grad = value_and_grad(z, state=state)
            updates, state = opt.update(grad, state, z, value=value, grad=grad, value_fn=Gz)
            z = optax.apply_updates(z, updates)
            res = jnp.max(jnp.linalg.norm(optax.tree_utils.tree_get(state, "grad") / scale, axis=-1))
            return it + 1, z, state, res

        z0 = pos * scale
        g0 = jax.grad(Gz)(z0)
        it, z, _, _ = jax.lax.while_loop(cond, body, (jnp.array(0), z0, opt.init(z0), jnp.max(jnp.linalg.norm(g0 / scale, axis=-1))))
        return project(z / scale, *active), it

    def examine(pos):
        """Residual, the next active set, and the position with released origin neurons kicked out."""
        res, kink_mask, kink_x, at_origin, direction = _neuron_residuals(objective, mu, Measure(unit.retract(pos), mu.masses), eta, solver)
        stuck = at_origin & (res <= tol)
        leave = at_origin & (res > tol)
        kicked = unit.retract(unit.with_direction(pos, unit.direction(pos) + (eta * res)[:, None] * direction))
        pos = jnp.where(leave[:, None], kicked, pos)
        return jnp.max(res), (kink_x, kink_mask, stuck), pos

    def round_cond(c):
        _, _, iters, res, _ = c
        return (iters < solver.max_iter) & (res > tol)

    def round_body(c):
        pos, active, iters, _, _ = c
        pos, it = lbfgs(pos, active, jnp.minimum(solver.round_iter, solver.max_iter - iters))
        res, active, kicked = examine(pos)
        return kicked, active, iters + it, res, pos

    res0, active0, kicked0 = examine(mu.positions)
    _, active, iters, res, pos = jax.lax.while_loop(round_cond, round_body, (kicked0, active0, jnp.array(0), res0, mu.positions))
    mu_next = Measure(unit.retract(pos), mu.masses)
    return mu_next, objective.value(mu), {
        "iterations": iters,
        "residual": res,
        "prox_value": G(mu_next.positions),
        "on_kink": jnp.sum(active[1]),
        "at_origin": jnp.sum(active[2]),
    }


def implicit_gd(
    objective: Objective,
    mu0: Measure,
    step_size: Schedule,
    num_steps: int,
    *,
    solver: ProxSolver = ProxSolver(),
    save: SaveAt | None = None,
    max_growth: float = 1e6,
    block_size: int = 64,
    callback: Callable[[int, float, float], None] | None = None,
) -> Trajectory:
    """Implicit (proximal) particle gradient descent; see the module docstring.

    Diagnostics per step: ``iterations`` (inner L-BFGS iterations), ``residual`` (ρ),
    ``prox_value`` = F(θ⁺) + Σ|p||θ⁺ − θ|²/(2η) (≤ F(θ) at an exact minimiser).
    The status is ``"not_converged"`` if some step ended with ρ > tol.
    """
    _check(objective, mu0)
    require(solver.max_iter > 0, "solver.max_iter", "must be > 0", value=solver.max_iter)
    require(solver.round_iter > 0, "solver.round_iter", "must be > 0", value=solver.round_iter)
    etas = step_sizes(step_size, num_steps)
    step = _ImplicitStep(solver)
    traj = integrate(
        step, _value, objective, mu0, etas, save=save, max_growth=max_growth,
        block_size=block_size, callback=callback, name="implicit GD",
    )
    tol = solver.resolved_tol(mu0.positions.dtype)
    res = traj.diagnostics.get("residual")
    if traj.status == "completed" and res is not None and len(res) and float(res.max()) > tol:
        k = int(res.argmax())
        return dataclasses.replace(
            traj,
            status="not_converged",
            message=(
                f"implicit GD: the proximal residual reached {float(res.max()):.3g} > tol = {tol:g} at step {k} "
                f"after {int(traj.diagnostics['iterations'][k])} inner iterations; raise solver.max_iter or the tolerance"
            ),
        )
    return traj


@dataclasses.dataclass(frozen=True)
class _ImplicitStep:
    """``implicit_step`` with its solver bound (hashable, so one compilation per solver setting)."""

    solver: ProxSolver

    def __call__(self, objective, mu, eta):
        return implicit_step(objective, mu, eta, self.solver)


def explicit_gd_sweep(
    objective: Objective,
    mus: Measure,
    step_size: Schedule,
    num_steps: int,
    *,
    save: SaveAt | None = None,
    max_growth: float = 1e6,
    block_size: int = 256,
    callback: Callable | None = None,
    stopped=None,
):
    """Explicit GD for a batch of initial measures (positions (R, m, D), masses (R, m)) on the same
    objective and schedule, as one vmapped program. Runs of different widths are padded with
    zero-mass particles (which do not change F nor the other particles' velocities).
    Returns a :class:`~wgflow.flows.trajectory.BatchTrajectory`."""
    require(mus.positions.ndim == 3, "mus.positions", f"must be (R, m, D), got shape {tuple(mus.positions.shape)}")
    objective.unit.check_input_dim(mus.positions.shape[-1], objective.d)
    require(bool(jnp.all(jnp.isfinite(mus.positions))), "mus.positions", "contain NaN/inf", "start from finite positions")
    etas = step_sizes(step_size, num_steps)
    return integrate_batch(
        explicit_step, _value, objective, mus, etas, save=save, max_growth=max_growth,
        block_size=block_size, callback=callback, name="explicit GD", stopped=stopped,
    )
