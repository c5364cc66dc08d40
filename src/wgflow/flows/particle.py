"""Particle flows in mean-field time: explicit, implicit and Langevin gradient descent.

Each is a flow of :func:`wgflow.flows.solve.solve` (:class:`ExplicitGD`, :class:`ImplicitGD`,
:class:`LangevinGD`) with a thin wrapper of one argument order (objective, initial measure,
step size, number of steps, then keywords): :func:`explicit_gd`, :func:`implicit_gd`,
:func:`langevin_gd`, and the batched :func:`explicit_gd_sweep`.

Explicit: ``θ_k ← R(θ_k + η v_k)``, ``v_k = −∇F'(μ)(θ_k)`` (projected on the
tangent space; ``R`` the retraction — renormalising ``u`` for ``sphere``).

Langevin: the same step plus ``√(2Tη) ξ``, ξ ~ N(0, I) projected on the tangent space.

Implicit (proximal point, as in the JKO note): ``θ⁺ = argmin_θ F(θ) + Σ_k |p_k| |θ_k − θ_k^t|²/(2η)``,
the implicit Euler step of the same flow (for masses 1/m this is
``argmin m F + |θ − θ^t|²/(2η)``, i.e. plain implicit GD with step η for ``lifted``).
It is solved by optax's L-BFGS warm-started at θ^t until the proximal residual

    ρ = max_k |∇F'(μ⁺)(θ⁺_k) + (θ⁺_k − θ^t_k)/η|      (velocity units)

is below ``tol``; each step reports its inner iterations and ρ.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.sharding import Mesh

from wgflow import sharding
from wgflow.errors import InputError, as_real, require
from wgflow.flows.schedules import Schedule
from wgflow.flows.solve import RESULTS, AbstractFlow, LoopState, Monitor, SaveAt, Solution, StepInfo, results_of, solve
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
    """``‖v‖_{L²(|μ|)} = (Σ_k |p_k| |v_k|²)^{1/2}``: along the flow dF/dt = −‖v‖²."""
    return jnp.sqrt(jnp.sum(jnp.abs(mu.masses) * jnp.sum(v * v, axis=-1)))


def explicit_step(objective: Objective, mu: Measure, eta: Array) -> tuple[Measure, Array, dict]:
    """One explicit step; returns (μ⁺, F(μ), {speed}). Atoms of zero mass are padding
    (sweeps over widths, sharding): they carry nothing and do not move."""
    F, v = objective.value_and_velocity(mu)
    v = jnp.where((mu.masses != 0)[:, None], v, 0.0)
    pos = objective.unit.retract(mu.positions + eta * v)
    return Measure(pos, mu.masses), F, {"speed": _speed(mu, v)}


class _ParticleFlow(AbstractFlow):
    """A flow whose state is the particle :class:`Measure` itself."""

    def value(self, objective: Objective, mu: Measure) -> Array:
        return objective.value(mu)

    def measure(self, objective: Objective, mu: Measure) -> Measure:
        return mu


class ExplicitGD(_ParticleFlow):
    """Explicit particle gradient descent: ``θ_k ← R(θ_k + η v_k)``, ``v_k = −∇F'(μ)(θ_k)``.

    Stats: ``speed`` = ‖v‖_{L²(|μ|)}. A stable step decreases F, so the monitor checks rises.
    """

    name: ClassVar[str] = "explicit GD"

    def step(self, objective: Objective, mu: Measure, dt: Array) -> tuple[Measure, StepInfo]:
        new, F, stats = explicit_step(objective, mu, dt)
        return new, StepInfo(F, RESULTS.successful, stats)


def explicit_gd(
    objective: Objective,
    mu0: Measure,
    step_size: Schedule,
    num_steps: int,
    *,
    save: SaveAt | None = None,
    monitor: Monitor | None = Monitor(),
    block_size: int = 256,
    callback: Callable | None = None,
    max_seconds: float | None = None,
    shard: bool | Mesh = False,
) -> Solution:
    """Explicit particle gradient descent from ``mu0``: ``num_steps`` steps of mean-field size ``step_size``.

    ``step_size``: a float or a schedule ``k ↦ η_k`` (:mod:`wgflow.flows.schedules`).
    ``monitor``: what counts as a failure and what happens then (:class:`~wgflow.flows.solve.Monitor`;
    by default a rise of F above its running minimum stops the run as ``unstable``).
    ``shard=True`` (or a :class:`jax.sharding.Mesh`) spreads the particles over all devices
    (:mod:`wgflow.sharding`); the results are those of one device, to rounding.
    Returns a :class:`~wgflow.flows.solve.Solution` whose saved values are Measures.
    """
    _check(objective, mu0)
    if shard is not False:
        return _sharded(
            explicit_gd,
            objective,
            mu0,
            shard,
            step_size=step_size,
            num_steps=num_steps,
            save=save,
            monitor=monitor,
            block_size=block_size,
            callback=callback,
            max_seconds=max_seconds,
        )
    return solve(
        ExplicitGD(), objective, mu0, step_size, num_steps, saveat=save, monitor=monitor, block_size=block_size, callback=callback, max_seconds=max_seconds
    )


def _sharded(flow, objective: Objective, mu0: Measure, shard, **kwargs) -> Solution:
    """Run ``flow`` with the particles sharded over a mesh, then drop the padding atoms."""
    mesh = sharding.atom_mesh() if shard is True else shard
    mu, m = sharding.shard_measure(mu0, mesh)
    sol = flow(sharding.replicate(objective, mesh), mu, **kwargs)

    def cut(x: Measure) -> Measure:
        return Measure(sharding.to_host(x.positions)[..., :m, :], sharding.to_host(x.masses)[..., :m])  # type: ignore[arg-type]  # host arrays

    saved = cut(sol.saved) if isinstance(sol.saved, Measure) else sol.saved
    final = cut(sol.final)
    return eqx.tree_at(lambda s: (s.saved, s.final), sol, (saved, final))


# --------------------------------------------------------------------------- Langevin


class LangevinState(eqx.Module):
    """The state of mean-field Langevin dynamics: the particles and the PRNG key of the next step."""

    measure: Measure
    key: Array


class LangevinGD(AbstractFlow):
    """Mean-field Langevin dynamics ``dθ = −∇F'(μ)(θ) dt + √(2T) dB`` (Euler–Maruyama).

    The Wasserstein gradient flow of ``F + T ∫ log μ dμ``, whose stationary law is
    ∝ exp(−F'(μ)/T) (Mei, Montanari & Nguyen 2018; Chizat 2022; Nitanda, Wu & Suzuki 2022).
    Each step draws ``√(2T dt) ξ`` per particle with ξ ~ N(0, I), projected on the tangent
    space of Θ (the sphere factor of ``sphere``), then retracts. ``temperature = 0`` is
    explicit GD exactly. F is not monotone under noise: the monitor checks divergence only.
    Stats: ``speed`` = ‖v‖_{L²(|μ|)} of the drift.
    """

    temperature: Array
    name: ClassVar[str] = "Langevin GD"
    monotone: ClassVar[bool] = False

    def init(self, objective: Objective, x0: LangevinState) -> LangevinState:
        return x0

    def step(self, objective: Objective, state: LangevinState, dt: Array) -> tuple[LangevinState, StepInfo]:
        mu = state.measure
        key, sub = jax.random.split(state.key)
        F, v = objective.value_and_velocity(mu)
        moving = (mu.masses != 0)[:, None]
        v = jnp.where(moving, v, 0.0)
        T = jnp.asarray(self.temperature, mu.positions.dtype)
        xi = jax.random.normal(sub, mu.positions.shape, mu.positions.dtype)
        noise = jnp.where(moving, objective.unit.project_tangent(mu.positions, jnp.sqrt(2 * T * dt) * xi), 0.0)
        pos = objective.unit.retract(mu.positions + dt * v + noise)
        return LangevinState(Measure(pos, mu.masses), key), StepInfo(F, RESULTS.successful, {"speed": _speed(mu, v)})

    def value(self, objective: Objective, state: LangevinState) -> Array:
        return objective.value(state.measure)

    def measure(self, objective: Objective, state: LangevinState) -> Measure:
        return state.measure


def langevin_gd(
    objective: Objective,
    mu0: Measure,
    step_size: Schedule,
    num_steps: int,
    *,
    temperature: float,
    key: Array,
    save: SaveAt | None = None,
    monitor: Monitor | None = Monitor(),
    block_size: int = 256,
    callback: Callable | None = None,
    max_seconds: float | None = None,
    shard: bool | Mesh = False,
) -> Solution:
    """Mean-field Langevin dynamics at ``temperature`` T ≥ 0 from ``mu0`` (see :class:`LangevinGD`).

    ``key``: a ``jax.random`` key; the same key gives the same run. The saved values and
    ``final`` are Measures; ``solution.loop.state.key`` continues the noise.
    ``shard``: as for :func:`explicit_gd`; the noise is the same as on one device (JAX draws
    it from the key and the global shape, and padding atoms only extend that shape).
    """
    _check(objective, mu0)
    if shard is not False:
        kwargs = dict(step_size=step_size, num_steps=num_steps, temperature=temperature, key=key, save=save, monitor=monitor)
        return _sharded(langevin_gd, objective, mu0, shard, **kwargs, block_size=block_size, callback=callback, max_seconds=max_seconds)
    temperature = as_real(temperature, "temperature", allow_zero=True, fix="set temperature >= 0 (0 is explicit GD)")
    try:
        key = jnp.asarray(key)
        ok = key.dtype == jnp.uint32 and key.shape == (2,) or jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    except (TypeError, ValueError):
        ok = False
    require(ok, "key", "must be a jax.random key (jax.random.PRNGKey(seed) or jax.random.key(seed))", value=key)
    sol = solve(
        LangevinGD(jnp.asarray(temperature, mu0.positions.dtype)),
        objective,
        LangevinState(mu0, key),
        step_size,
        num_steps,
        saveat=save,
        monitor=monitor,
        block_size=block_size,
        callback=callback,
        max_seconds=max_seconds,
    )
    return eqx.tree_at(lambda s: s.final, sol, sol.final.measure)


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

    h = cast(float, unit.activation.kink_jump) * r[:, None] * jax.vmap(jax.grad(corner))(pos, objective.X[j])
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
    origin mask, descent direction from the origin (m, d), output-weight-at-zero mask)."""
    unit = objective.unit
    v = objective.velocity(mu_next)  # −∇F' with the σ'(0) = 0 selection (and |c|'(0) = 0), tangent
    g = unit.project_tangent(mu_next.positions, (mu_next.positions - mu_t.positions) / eta) - v
    m, d = mu_next.width, objective.d
    none = jnp.zeros((m,), bool)
    kink_mask, kink_x, at_origin, direction = none, jnp.zeros((m, d), g.dtype), none, jnp.zeros((m, d), g.dtype)
    if unit.activation.kink_jump is not None:
        j, z, base, h, t = _kinks(objective, mu_next, g)
        on_kink = jnp.abs(z) <= solver.kink_band
        g = jnp.where(on_kink[:, None], base + jnp.clip(t, 0.0, 1.0)[:, None] * h, g)
        kink_mask, kink_x = on_kink & (t > 0) & (t < 1), objective.X[j]
        at_origin = jnp.linalg.norm(unit.direction(mu_next.positions), axis=-1) <= solver.kink_band
    out_zero = none
    if unit.output_kink is not None:
        # V = κ|c| + smooth (sphere: 2|a|): where c = 0 the Clarke subdifferential of λκ|c| is
        # [−λκ, λκ], and the c-part of the residual is the distance from 0 to g_c + [−λκ, λκ].
        width = objective.lam * unit.output_kink
        c = jnp.asarray(unit.output_weight(mu_next.positions))
        at_zero = jnp.abs(c) <= solver.kink_band
        gc = g[:, -1]
        g = g.at[:, -1].set(jnp.where(at_zero, jnp.sign(gc) * jnp.maximum(jnp.abs(gc) - width, 0.0), gc))
        out_zero = at_zero & (jnp.abs(gc) <= width)
    res = jnp.linalg.norm(g, axis=-1)
    if unit.activation.kink_jump is not None and unit.activation.homogeneity == 1:
        slope, direction = _origin_slopes(objective, mu_t, mu_next, eta, solver.origin_directions)
        res = jnp.where(at_origin, slope, res)
    return res, kink_mask & ~at_origin, kink_x, at_origin, direction, out_zero & ~at_origin


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

    def project(psi, kink_x, kink_mask, origin_mask, out_mask):
        if unit.output_kink is not None:  # pinned at c = 0, the kink of V
            psi = jnp.where(out_mask[:, None], unit.with_output_weight(psi, jnp.zeros(psi.shape[:1], psi.dtype)), psi)
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
        res, kink_mask, kink_x, at_origin, direction, out_zero = _neuron_residuals(objective, mu, Measure(unit.retract(pos), mu.masses), eta, solver)
        stuck = at_origin & (res <= tol)
        leave = at_origin & (res > tol)
        kicked = unit.retract(unit.with_direction(pos, unit.direction(pos) + (eta * res)[:, None] * direction))
        pos = jnp.where(leave[:, None], kicked, pos)
        return jnp.max(res), (kink_x, kink_mask, stuck, out_zero), pos

    def round_cond(c):
        _, _, iters, res, _ = c
        return (iters < solver.max_iter) & (res > tol)

    def round_body(c):
        pos, active, iters, _, _ = c
        pos, it = lbfgs(pos, active, jnp.minimum(solver.round_iter, solver.max_iter - iters))
        res, active, kicked = examine(pos)
        return kicked, active, iters + jnp.maximum(it, 1), res, pos  # a round counts at least one iteration: the loop ends

    res0, active0, kicked0 = examine(mu.positions)
    _, active, iters, res, pos = jax.lax.while_loop(round_cond, round_body, (kicked0, active0, jnp.array(0), res0, mu.positions))
    mu_next = Measure(unit.retract(pos), mu.masses)
    return (
        mu_next,
        objective.value(mu),
        {
            "iterations": iters,
            "residual": res,
            "prox_value": G(mu_next.positions),
            "on_kink": jnp.sum(active[1]),
            "at_origin": jnp.sum(active[2]),
            "output_at_zero": jnp.sum(active[3]),
        },
    )


class ImplicitGD(_ParticleFlow):
    """Implicit (proximal) particle gradient descent, solved by :func:`implicit_step`.

    A step whose proximal residual ρ stays above the solver's tolerance reports
    ``inner_not_converged``. Stats: ``iterations`` (inner L-BFGS iterations), ``residual`` (ρ),
    ``prox_value`` = F(θ⁺) + Σ|p||θ⁺ − θ|²/(2η) (≤ F(θ) at a minimiser), ``on_kink``, ``at_origin``,
    ``output_at_zero`` (neurons pinned at the kink c = 0 of V, e.g. a = 0 for ``sphere``).
    """

    solver: ProxSolver = eqx.field(static=True, default=ProxSolver())
    name: ClassVar[str] = "implicit GD"

    def step(self, objective: Objective, mu: Measure, dt: Array) -> tuple[Measure, StepInfo]:
        new, F, stats = implicit_step(objective, mu, dt, self.solver)
        tol = self.solver.resolved_tol(mu.positions.dtype)
        result = RESULTS.where(stats["residual"] <= tol, RESULTS.successful, RESULTS.inner_not_converged)  # type: ignore[arg-type]  # mypy reads eqx.Enumeration members as str
        return new, StepInfo(F, result, stats)

    def inner_failure(self, objective: Objective, stats: dict) -> str:
        tol = self.solver.resolved_tol(objective.X.dtype)
        return (
            f"the proximal residual reached {stats['residual']:.3g} > tol = {tol:g} after {int(stats['iterations'])} inner "
            "iterations; raise solver.max_iter, loosen solver.tol or take a smaller step"
        )


def implicit_gd(
    objective: Objective,
    mu0: Measure,
    step_size: Schedule,
    num_steps: int,
    *,
    solver: ProxSolver = ProxSolver(),
    save: SaveAt | None = None,
    monitor: Monitor | None = Monitor(),
    block_size: int = 64,
    callback: Callable | None = None,
    max_seconds: float | None = None,
    shard: bool | Mesh = False,
) -> Solution:
    """Implicit (proximal) particle gradient descent; see the module docstring and :class:`ImplicitGD`.

    By default (``Monitor()``) a step whose inner solver misses its tolerance stops the run
    with ``inner_not_converged``; ``Monitor(policy="warn")`` goes on and reports it.
    ``shard``: as for :func:`explicit_gd`.
    """
    _check(objective, mu0)
    require(isinstance(solver, ProxSolver), "solver", "must be a ProxSolver", value=solver)
    require(isinstance(solver.max_iter, int) and solver.max_iter > 0, "solver.max_iter", "must be a positive integer", value=solver.max_iter)
    require(isinstance(solver.round_iter, int) and solver.round_iter > 0, "solver.round_iter", "must be a positive integer", value=solver.round_iter)
    require(
        solver.tol is None or (isinstance(solver.tol, (int, float)) and math.isfinite(solver.tol) and solver.tol > 0),
        "solver.tol",
        "must be a finite number > 0 (or None)",
        value=solver.tol,
    )
    if shard is not False:
        kwargs = dict(step_size=step_size, num_steps=num_steps, solver=solver, save=save, monitor=monitor)
        return _sharded(implicit_gd, objective, mu0, shard, **kwargs, block_size=block_size, callback=callback, max_seconds=max_seconds)
    return solve(
        ImplicitGD(solver),
        objective,
        mu0,
        step_size,
        num_steps,
        saveat=save,
        monitor=monitor,
        block_size=block_size,
        callback=callback,
        max_seconds=max_seconds,
    )


def explicit_gd_sweep(
    objective: Objective,
    mus: Measure | LoopState,
    step_size: Schedule,
    num_steps: int,
    *,
    save: SaveAt | None = None,
    monitor: Monitor | None = Monitor(),
    block_size: int = 256,
    callback: Callable | None = None,
    max_seconds: float | None = None,
    pause: Callable[[], bool] | None = None,
    shard: bool | Mesh | None = None,
) -> Solution:
    """Explicit GD for a batch of initial measures (positions (R, m, D), masses (R, m)) on one
    objective, as one vmapped program, with a result code per run. Runs of different widths
    are padded with zero-mass particles (:func:`wgflow.measure.stack_padded`), which change
    neither F nor the other particles' velocities. ``step_size``: shared (a float, a
    schedule) or one per run ((R,) or (R, K)). ``mus`` may be the ``loop`` of an earlier
    sweep, to continue it; ``pause``: see :func:`~wgflow.flows.solve.solve`. ``shard=True`` (or a
    :class:`jax.sharding.Mesh`) splits the runs over all devices — of all processes under
    ``jax.distributed`` — padded with copies of the last run to a multiple of the device count;
    every process gets all runs back (as NumPy arrays). ``shard=None`` (default): split when
    there are several processes, not otherwise. Returns a batched :class:`~wgflow.flows.solve.Solution`."""
    if not isinstance(mus, LoopState):
        require(isinstance(mus, Measure), "mus", "must be a batch of Measures (positions (R, m, D), masses (R, m))")
        require(mus.positions.ndim == 3, "mus.positions", f"must be (R, m, D), got shape {tuple(mus.positions.shape)}")
        objective.unit.check_input_dim(mus.positions.shape[-1], objective.d)
        require(bool(jnp.all(jnp.isfinite(mus.positions))), "mus.positions", "contain NaN/inf", "start from finite positions")
        require(bool(jnp.all(jnp.isfinite(mus.masses))), "mus.masses", "contain NaN/inf", "give finite masses")
    R = None
    schedule: Schedule | np.ndarray = step_size  # a shared schedule, or one step size (or row of sizes) per run
    if shard is None:
        shard = jax.process_count() > 1
    if shard is not False:
        mesh = sharding.atom_mesh() if shard is True else shard
        mus, R = sharding.shard_runs(mus, mesh)
        objective = sharding.replicated(objective, mesh)
        R_padded = int(jax.tree_util.tree_leaves(mus)[0].shape[0])
        etas = np.asarray(step_size) if not callable(step_size) else None
        if etas is not None and etas.ndim >= 1 and etas.shape[0] == R and R_padded > R:  # one step size per run: pad as the runs
            schedule = np.concatenate([etas, np.repeat(etas[-1:], R_padded - R, axis=0)])
    sol = solve(
        ExplicitGD(),
        objective,
        mus,
        schedule,
        num_steps,
        saveat=save,
        monitor=monitor,
        block_size=block_size,
        callback=callback,
        max_seconds=max_seconds,
        pause=pause,
        batched=True,
    )
    return sol if R is None else _first_runs(sol, R)


def _first_runs(sol: Solution, R: int) -> Solution:
    """The batched solution of runs 0..R−1 (the padding runs of a sharded sweep dropped)."""

    def first(tree):
        return jax.tree_util.tree_map(lambda a: a[:R], sharding.gathered(tree))

    return Solution(
        times=sol.times[:R],
        objective=sol.objective[:R],
        stats=first(sol.stats),
        save_steps=sol.save_steps,
        save_times=sol.save_times[:R],
        saved=first(sol.saved),
        final=first(sol.final),
        result=results_of(sol.codes[:R]),
        stop_step=np.asarray(sol.stop_step)[:R],
        loop=first(sol.loop),
        message=tuple(sol.message[:R]),
        batched=True,
        paused=sol.paused,
        seconds=sol.seconds,
        compile_seconds=sol.compile_seconds,
    )
