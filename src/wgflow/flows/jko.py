"""Entropic JKO flow on a fixed grid of neurons (Jordan, Kinderlehrer & Otto 1998; Peyré, SIAM J. Imaging Sci. 2015).

Masses ``p`` on the points ``θ_i`` of a :class:`~wgflow.grid.Grid` move by

    p⁺ = argmin_p  W_ε(p, p_t) + 2τ F(p),                                            (1)
    W_ε(p, q) = min_{π ∈ Π(p, q)} ⟨C, π⟩ + ε Σ_ij π_ij (log(π_ij / (v_i v_j)) − 1),

with ``C_ij = |θ_i − θ_j|²`` (squared distance in grid coordinates; wrapped on a
periodic axis) and ``v`` the cell volumes. Without entropy, (1) is the JKO step
``argmin F(μ) + W₂²(μ, μ_t)/(2τ)`` of the Wasserstein gradient flow
``∂_t μ = div(μ ∇F'(μ))`` in mean-field time: one step is τ units of the clock of
:mod:`wgflow.flows.particle`. ``ε`` (``blur``) is the weight of the entropy, in units
of squared distance; OTT-JAX's ``epsilon`` for the cost ``|x − y|²`` is the same ε.
The entropy adds the diffusion ``(ε / 4τ) Δμ`` per unit time (docs/jko.md).

With ``F(p) = R(Φ_s p) + λ⟨V, p⟩`` (``Φ_s`` the n × C·N matrix of signed unit outputs)
and the conjugate ``R*``, (1) has the *semi-dual* (docs/jko.md §3)

    max_u D(u) = ε Σ_j q_j (log q_j − 1 − log(K̃ᵀ a(u))_j) − 2τ R*(u),   a(u) = exp(−2τ(Φ_sᵀu + λV)/ε),

a smooth concave problem in the n data variables. Its primal is the map

    p(u) = a ⊙ K̃ b,  b = q / K̃ᵀ a,                                               (2)

(two kernel applications), and ``∇D(u) = 2τ (Φ_s p(u) − ∇R*(u))``. Every solver returns a
``u`` and ``p(u)``; the step is solved when ``Φ_s p(u) = ∇R*(u)`` (u = ∇R(f)), and

    kkt = max_j |Φ_s p(u) − ∇R*(u)|_j      gap = 2τ [R(f) + R*(u) − ⟨u, f⟩]   (f = Φ_s p(u))

are the KKT residual (output units) and the duality gap of (1) at (π(u), u).

Solvers: :class:`SemiDualNewton` (Newton–CG on D with exact Hessian-vector products,
Armijo line search, warm-started), :class:`Linearised` (F replaced by its first
variation at p_t: (2) at ``u = ∇R(f_t)``, closed form), :class:`Dykstra` (Peyré's
KL-proximal scaling iterations, the reference; the KL-prox of F is solved by Newton
in the n dual variables).

``SemiDualNewton`` and ``Dykstra`` need the loss's convex conjugate
(:attr:`wgflow.losses.Loss.conjugate`; the square loss has one); :class:`Linearised`
works with any loss. Every solver takes ``kernel="stabilised"`` (the default: stabilised
scaling, per-axis matrix products with the potentials absorbed, the exact log-sum-exp only
where they would underflow; :func:`wgflow.grid.stabilised_log_kernel`) or ``kernel="log"``
(the exact per-axis log-sum-exp, :func:`wgflow.grid.log_kernel`, the reference); both give
the same step to rounding. Each solver is callable like OTT-JAX's ``Sinkhorn``:
``solver(problem, q, u0, tau, eps) -> JKOStep``. The flow :class:`JKO` runs the steps in
the one loop of :mod:`wgflow.flows.solve`; :func:`jko` is its thin wrapper.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wgflow import sharding
from wgflow.errors import InputError, require, require_positive
from wgflow.flows.schedules import Schedule, step_sizes
from wgflow.flows.schedules import times as schedule_times
from wgflow.flows.solve import RESULTS, AbstractFlow, Monitor, SaveAt, Solution, StepInfo, solve
from wgflow.grid import Grid, GridMeasure, bin_measure, check_memory, log_kernel, to_measure
from wgflow.grid.kernels import KERNEL_PATHS, log_kernel_path
from wgflow.measure import Measure
from wgflow.objective import Objective

# --------------------------------------------------------------------------- solvers


def _default_tol(tol: float | None, dtype) -> float:
    if tol is not None:
        return float(tol)
    return 1e-9 if jnp.dtype(dtype) == jnp.float64 else 1e-4


class SemiDualNewton(eqx.Module):
    """Newton–CG ascent on the semi-dual D(u) (n variables), warm-started from the previous step.

    Stops when ``kkt ≤ tol`` (output units; ``None``: 1e-9 in float64, 1e-4 in float32).
    Each Newton iteration: one gradient (2 kernel applications), truncated CG on
    ``−∇²D d = ∇D`` with exact Hessian-vector products (2 signed kernel applications
    each, relative tolerance ``min(cg_rtol, √kkt)``), an Armijo backtracking line search
    (1 kernel application per trial). ``kernel``: ``"stabilised"`` (default) or ``"log"``
    (see the module docstring).
    """

    tol: float | None = eqx.field(static=True, default=None)
    max_iter: int = eqx.field(static=True, default=50)
    cg_max_iter: int = eqx.field(static=True, default=60)
    cg_rtol: float = eqx.field(static=True, default=0.1)
    armijo: float = eqx.field(static=True, default=1e-4)
    max_backtracks: int = eqx.field(static=True, default=30)
    kernel: str = eqx.field(static=True, default="stabilised")

    needs_conjugate: ClassVar[bool] = True

    def __call__(self, problem: "JKOProblem", q: Array, u0: Array, tau, eps) -> "JKOStep":
        """Solve one step (1) from masses ``q`` (C, N), warm start ``u0`` (n,). Pure and jit-able."""
        return _solve(_newton, problem, q, u0, tau, eps, self)


class Linearised(eqx.Module):
    """The JKO step of the first variation at p_t: ``p⁺ = p(∇R(f_t))`` by (2), closed form.

    One kernel pair. It is the exact entropic JKO step of the *linear* functional
    ``⟨F'(p_t), p⟩``: an explicit-in-F, implicit-in-transport scheme whose deviation
    from (1) is O(τ²) per step (reported as ``kkt``: the residual of (1) at its output).
    ``kernel``: ``"stabilised"`` (default) or ``"log"``.
    """

    kernel: str = eqx.field(static=True, default="stabilised")

    needs_conjugate: ClassVar[bool] = False
    tol: ClassVar[None] = None

    def __call__(self, problem: "JKOProblem", q: Array, u0: Array, tau, eps) -> "JKOStep":
        """The linearised step from masses ``q`` (``u0`` unused). Pure and jit-able."""
        return _solve(_linearised, problem, q, u0, tau, eps, self)


class Dykstra(eqx.Module):
    """Peyré (2015)'s KL-proximal scaling iterations (Dykstra's algorithm for (1)), the reference.

    ``π = diag(a) K̃ diag(b)`` alternates ``a ← prox^KL_{2τF/ε}(K̃b) / K̃b`` and ``b ← q / K̃ᵀa``.
    The KL-prox of F has no closed form (Φ couples all points): it is solved by Newton
    in the n dual variables to ``inner_tol``. Its optimum is ``a = exp(−2τ(Φ_sᵀu + λV)/ε)``,
    so after each ``b`` update the iterate *is* p(u) of (2), and the same ``kkt`` is the
    stopping test (``≤ tol``). ``kernel``: ``"stabilised"`` (default) or ``"log"``.
    """

    tol: float | None = eqx.field(static=True, default=None)
    max_iter: int = eqx.field(static=True, default=20000)
    inner_tol: float | None = eqx.field(static=True, default=None)
    inner_max_iter: int = eqx.field(static=True, default=50)
    kernel: str = eqx.field(static=True, default="stabilised")

    needs_conjugate: ClassVar[bool] = True

    def __call__(self, problem: "JKOProblem", q: Array, u0: Array, tau, eps) -> "JKOStep":
        """Solve one step (1) from masses ``q`` (C, N), warm start ``u0`` (n,). Pure and jit-able."""
        return _solve(_dykstra, problem, q, u0, tau, eps, self)


Solver = Union[SemiDualNewton, Linearised, Dykstra]
SOLVERS = (SemiDualNewton, Linearised, Dykstra)

# --------------------------------------------------------------------------- the problem


class JKOProblem(eqx.Module):
    """The data of a JKO flow on a grid: the objective, Φ on the grid, λV, the signs.

    ``features``: ``Φ[j, i] = φ_{θ_i}(x_j)`` (n, N), unsigned; component ``c`` carries
    ``signs[c] Φ``. ``potential``: ``λ V(θ_i)`` (N,). ``points``: the grid's positions θ_i
    (N, dim). Built by :func:`jko_problem`. The risk's conjugate R* is the objective's
    (:meth:`~wgflow.objective.Objective.risk_conjugate`, from the loss).
    """

    objective: Objective
    features: Array
    potential: Array
    points: Array
    grid: Grid = eqx.field(static=True)
    signs: tuple = eqx.field(static=True)

    def signed_sum(self, p: Array) -> Array:
        """``Σ_c s_c p_c`` (N,)."""
        return jnp.tensordot(jnp.asarray(self.signs, p.dtype), p, axes=1)

    def outputs(self, p: Array) -> Array:
        """``f = Φ_s p`` at the training inputs."""
        return self.features @ self.signed_sum(p)

    def measure(self, p: Array) -> Measure:
        """The :class:`Measure` of grid masses ``p`` (C, N), as :func:`wgflow.grid.to_measure` makes it."""
        return to_measure(self.grid, p, self.signs, points=self.points)

    def grid_measure(self, p) -> GridMeasure:
        """Grid masses ``p`` (C, N) as a :class:`~wgflow.grid.GridMeasure` (for the distances of :mod:`wgflow.metrics`)."""
        return GridMeasure(self.grid, p, self.signs)

    def value(self, p: Array) -> Array:
        """``F`` of grid masses, by :meth:`Objective.value` on the grid's :class:`Measure`."""
        return self.objective.value(self.measure(p))

    def log_a(self, u: Array, tau, eps) -> Array:
        """``log a(u) = −2τ (s_c Φᵀu + λV)/ε``, shape (C, N)."""
        phiu = u @ self.features
        s = jnp.asarray(self.signs, phiu.dtype)[:, None]
        return -(2 * tau / eps) * (s * phiu[None] + self.potential[None])


def component_signs(objective: Objective) -> tuple:
    """``(1,)`` for nonnegative measures (``lifted``, ``sphere``); ``(1, −1)`` for signed ones."""
    return (1.0, -1.0) if objective.unit.signed_masses else (1.0,)


def check_grid(objective: Objective, grid: Grid) -> None:
    """The grid must embed in the objective's Θ (dimension, and the circle for ``sphere``)."""
    require(isinstance(grid, Grid), "grid", "must be a wgflow.grid.Grid", "build it with box_grid(...) or sphere_grid(...)")
    unit = objective.unit
    D = unit.dim(objective.d)
    if unit.name == "sphere":
        require(
            objective.d == 2 and grid.embedding == "circle",
            "grid",
            f"'sphere' on a grid needs inputs in R^2 and an angle × scale grid (got d = {objective.d}, embedding {grid.embedding!r})",
            "use sphere_grid(n_angle, a_axis) with 2-D inputs (a bias counts as an input)",
        )
    else:
        require(grid.embedding == "identity", "grid", f"'{unit.name}' needs a flat grid, got embedding {grid.embedding!r}", "use box_grid(...)")
    require(
        grid.dim == D,
        "grid",
        f"'{unit.name}' with inputs in R^{objective.d} has neurons in R^{D}, but the grid has {grid.dim} dimensions",
        f"build a {D}-D grid" + (" (w ∈ R^d and α)" if unit.name == "lifted" else ""),
    )


def jko_problem(objective: Objective, grid: Grid) -> JKOProblem:
    """Φ, λV and the grid positions for ``objective`` on ``grid`` (in the objective's dtype)."""
    check_grid(objective, grid)
    dtype = objective.X.dtype
    pts = jnp.asarray(grid.points(), dtype)
    feats = objective.unit.features(pts, objective.X)
    pot = objective.lam * objective.unit.regulariser(pts)
    return JKOProblem(objective, feats, pot, pts, grid, component_signs(objective))


# --------------------------------------------------------------------------- the semi-dual map


class _Primal(eqx.Module):
    """``p(u)`` of (2) and the pieces the solvers reuse."""

    la: Array  # log a (C, N)
    l1: Array  # log K̃ᵀa
    lb: Array  # log b = log q − l1
    l2: Array  # log K̃ b
    p: Array  # a ⊙ K̃ b
    f: Array  # Φ_s p


def _log_q(q):
    return jnp.where(q > 0, jnp.log(jnp.where(q > 0, q, 1.0)), -jnp.inf)


def _primal(problem: JKOProblem, lq, la, eps, l1=None, lk=log_kernel) -> _Primal:
    if l1 is None:
        l1 = lk(problem.grid, la, eps)
    lb = lq - l1
    l2 = lk(problem.grid, lb, eps)
    p = jnp.exp(la + l2)
    return _Primal(la, l1, lb, l2, p, problem.outputs(p))


def _dual_value(problem: JKOProblem, q, lq, l1, u, tau, eps):
    """``D(u)`` and the sum of the absolute values of its terms (its rounding scale)."""
    qlq = jnp.where(q > 0, q * lq, 0.0)
    t1 = qlq - q - q * l1
    t2 = 2 * tau * problem.objective.risk_conjugate(u)
    return eps * jnp.sum(t1) - t2, eps * jnp.sum(jnp.abs(t1)) + jnp.abs(t2)


def _kkt(problem: JKOProblem, f, u):
    """Residual of (1) at (p(u), u) in output units, and the duality gap / 2τ."""
    obj = problem.objective
    if not obj.loss.has_conjugate:  # any loss: u = ∇R(f) is the optimality condition, in R' units
        r = u - jax.grad(obj.risk)(f)
        return jnp.max(jnp.abs(r)), jnp.asarray(jnp.nan, f.dtype)
    r = f - obj.risk_conjugate_grad(u)
    return jnp.max(jnp.abs(r)), obj.risk_gap(f, u)


def _neg_hess_vp(problem: JKOProblem, pr: _Primal, u, v, tau, eps, lk=log_kernel):
    """``−∇²D(u) v = 2τ [(2τ/ε) Φ_s M Φ_sᵀ v + ∇²R* v]``, ``M = diag(p) − π diag(1/q) πᵀ``.

    ``πᵀw / q`` is the conditional mean ``E[w_i | j]`` under ``π(·|j)``, and ``M w = p ⊙ w − π c``:
    two signed log-domain kernel applications.
    """
    grid = problem.grid
    s = jnp.asarray(problem.signs, v.dtype)[:, None]
    w = s * (v @ problem.features)[None]  # (C, N)
    lw, sw = lk(grid, pr.la + jnp.log(jnp.abs(w)), eps, jnp.sign(w))
    c = sw * jnp.exp(lw - pr.l1)  # E[w | j]
    lc, sc = lk(grid, pr.lb + jnp.log(jnp.abs(c)), eps, jnp.sign(c))
    Mw = pr.p * w - sc * jnp.exp(pr.la + lc)
    return 2 * tau * ((2 * tau / eps) * problem.outputs(Mw) + problem.objective.risk_conjugate_hess(u) * v)


def _cg(matvec, b, rtol, max_iter):
    """Conjugate gradients for ``A x = b`` (A SPD) from 0; stops on ``|r| ≤ rtol |b|`` or negative curvature."""
    bnorm = jnp.linalg.norm(b)

    def cond(c):
        k, _, r, _, _, done = c
        return (k < max_iter) & (jnp.linalg.norm(r) > rtol * bnorm) & ~done

    def body(c):
        k, x, r, d, rr, _ = c
        Ad = matvec(d)
        dAd = jnp.dot(d, Ad)
        bad = dAd <= 0
        alpha = rr / jnp.where(bad, 1.0, dAd)
        x_new = jnp.where(bad, x, x + alpha * d)
        r_new = jnp.where(bad, r, r - alpha * Ad)
        rr_new = jnp.dot(r_new, r_new)
        d_new = r_new + (rr_new / rr) * d
        return k + 1, x_new, r_new, d_new, rr_new, bad

    x0 = jnp.zeros_like(b)
    k, x, _, _, _, _ = jax.lax.while_loop(cond, body, (jnp.array(0), x0, b, b, jnp.dot(b, b), jnp.array(False)))
    x = jnp.where(jnp.any(x != 0), x, b)  # first direction had negative curvature: steepest ascent
    return x, k


class JKOStep(eqx.Module):
    """One entropic JKO step (1), as every solver returns it (see the module docstring).

    ``masses`` (C, N): p⁺, renormalised to the masses of q (``mass_error``: ``max_c |Σ p⁺_c − Σ q_c|``
    before, the rounding it removed). ``dual`` (n,): u. ``log_a``, ``log_b`` (C, N): the coupling
    is ``π_ij = exp(log_a_i + log_b_j) K̃_ij`` per component. ``kkt``, ``gap``: the residual and the
    duality gap of (1) (the gap is NaN for a loss without conjugate). ``iterations``: outer
    iterations (Newton, Dykstra; 1 for Linearised); ``inner_iterations``: CG (Newton) or
    prox-Newton (Dykstra) iterations; ``kernel_applications``: log-kernel applications.
    ``converged``: kkt ≤ tol (always True for Linearised, which has no tolerance).
    """

    masses: Array
    dual: Array
    log_a: Array
    log_b: Array
    kkt: Array
    gap: Array
    mass_error: Array
    iterations: Array
    inner_iterations: Array
    kernel_applications: Array
    converged: Array

    def entropic_cost(self, q: Array, eps) -> Array:
        """⟨C, π⟩ + ε Σ π(log(π/vv) − 1) of the returned coupling from ``q`` (≥ W_ε(p⁺, q))."""
        ql = jnp.where(q > 0, q * self.log_b, 0.0)
        return eps * (jnp.sum(self.log_a * self.masses) + jnp.sum(ql) - jnp.sum(self.masses))


def _renormalise(p, q):
    tot = jnp.sum(p, axis=1, keepdims=True)
    return p * jnp.where(tot > 0, jnp.sum(q, axis=1, keepdims=True) / jnp.where(tot > 0, tot, 1.0), 0.0)


def _finish(problem, pr: _Primal, q, u, tau, its, inner, kernels, tol) -> JKOStep:
    kkt, fy = _kkt(problem, pr.f, u)
    mass_err = jnp.max(jnp.abs(jnp.sum(pr.p, axis=1) - jnp.sum(q, axis=1)))
    return JKOStep(
        _renormalise(pr.p, q),
        u,
        pr.la,
        pr.lb,
        kkt,
        2 * tau * fy,
        mass_err,
        jnp.asarray(its),
        jnp.asarray(inner),
        jnp.asarray(kernels),
        (kkt <= tol) if tol is not None else jnp.array(True),
    )


def _linearised(problem: JKOProblem, q, lq, u0, tau, eps, solver: Linearised) -> JKOStep:
    u = jax.grad(problem.objective.risk)(problem.outputs(q))
    pr = _primal(problem, lq, problem.log_a(u, tau, eps), eps, lk=log_kernel_path(solver.kernel))
    return _finish(problem, pr, q, u, tau, 1, 0, 2, None)


def _newton(problem: JKOProblem, q, lq, u0, tau, eps, solver: SemiDualNewton) -> JKOStep:
    # One while loop; each pass computes p(u) at the current iterate and, unless converged, a
    # Newton–CG direction and its line search. Every kernel use appears once in the program.
    tol = _default_tol(solver.tol, q.dtype)
    grad_conj = problem.objective.risk_conjugate_grad
    eps_mach = jnp.finfo(q.dtype).eps
    n_terms = q.size + u0.size
    lk = log_kernel_path(solver.kernel)

    def evaluate(u):
        la = problem.log_a(u, tau, eps)
        l1 = lk(problem.grid, la, eps)
        D, scale = _dual_value(problem, q, lq, l1, u, tau, eps)
        return la, l1, D, scale

    def newton_move(u, pr, D, scale, kkt):
        g = 2 * tau * (pr.f - grad_conj(u))
        rtol = jnp.minimum(solver.cg_rtol, jnp.sqrt(kkt))
        d, k_cg = _cg(lambda v: _neg_hess_vp(problem, pr, u, v, tau, eps, lk), g, rtol, solver.cg_max_iter)
        slope = jnp.dot(g, d)
        slack = 8 * eps_mach * jnp.sqrt(n_terms) * scale  # Armijo up to the rounding of D

        def ls_cond(s):
            k, t, _, D_t, _ = s
            return (k < solver.max_backtracks) & ~(D_t >= D + solver.armijo * t * slope - slack)

        def ls_body(s):  # trial steps t = 1, 1/2, 1/4, …
            k, t, _, _, _ = s
            t = jnp.where(k == 0, t, 0.5 * t)
            la, l1, D_t, sc = evaluate(u + t * d)
            return k + 1, t, (la, l1), D_t, sc

        init = (jnp.array(0), jnp.asarray(1.0, u.dtype), (pr.la, pr.l1), jnp.full_like(D, -jnp.inf), scale)
        k_ls, t, (la, l1), D_t, sc = jax.lax.while_loop(ls_cond, ls_body, init)
        failed = ~(D_t >= D + solver.armijo * t * slope - slack)
        u_t = jnp.where(failed, u, u + t * d)
        la, l1 = jnp.where(failed, pr.la, la), jnp.where(failed, pr.l1, l1)
        return u_t, la, l1, jnp.where(failed, D, D_t), jnp.where(failed, scale, sc), failed, k_cg, 2 * k_cg + k_ls

    def cond(c):
        return ~c[-1]

    def body(c):
        it, inner, kernels, u, la, l1, D, scale, _, failed, _ = c
        pr = _primal(problem, lq, la, eps, l1, lk)
        kkt = jnp.max(jnp.abs(pr.f - grad_conj(u)))
        done = (kkt <= tol) | (it >= solver.max_iter) | failed

        def move(_):
            return newton_move(u, pr, D, scale, kkt)

        def stay(_):
            return u, la, l1, D, scale, failed, jnp.array(0), jnp.array(0)

        u_n, la_n, l1_n, D_n, sc_n, failed_n, k_cg, k_ker = jax.lax.cond(done, stay, move, None)
        return (it + ~done, inner + k_cg, kernels + 1 + k_ker, u_n, la_n, l1_n, D_n, sc_n, pr, failed_n, done)

    la0, l10, D0, s0 = evaluate(u0)
    pr0 = jax.eval_shape(lambda: _primal(problem, lq, la0, eps, l10, lk))
    pr0 = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), pr0)
    init = (jnp.array(0), jnp.array(0), jnp.array(1), u0, la0, l10, D0, s0, pr0, jnp.array(False), jnp.array(False))
    it, inner, kernels, u, _, _, _, _, pr, _, _ = jax.lax.while_loop(cond, body, init)
    return _finish(problem, pr, q, u, tau, it, inner, kernels, tol)


def _prox_newton(problem: JKOProblem, lz, u0, tau, eps, tol, max_iter):
    """``argmax_u ψ(u) = −Σ z a(u) − (2τ/ε) R*(u)``: the dual of ``prox^KL_{2τF/ε}(z)``, whose
    primal is ``p = z ⊙ a(u)``. Newton with the explicit n × n Hessian (no kernel application)."""
    obj = problem.objective
    r = 2 * tau / eps
    eps_mach = jnp.finfo(lz.dtype).eps

    def psi(u):
        lp = lz + problem.log_a(u, tau, eps)
        p = jnp.exp(lp)
        conj = obj.risk_conjugate(u)
        val = -jnp.sum(p) - r * conj
        return val, p, jnp.sum(p) + r * jnp.abs(conj)

    def grad_res(u, p):
        return problem.outputs(p) - obj.risk_conjugate_grad(u)

    def cond(c):
        it, u, p, val, sc, res, failed = c
        return (it < max_iter) & (jnp.max(jnp.abs(res)) > tol) & ~failed

    def body(c):
        it, u, p, val, sc, res, _ = c
        ptot = jnp.sum(p, axis=0)
        H = r * (problem.features * ptot[None]) @ problem.features.T + jnp.diag(obj.risk_conjugate_hess(u))
        d = jax.scipy.linalg.solve(H, res, assume_a="pos")
        slope = r * jnp.dot(res, d)  # ∇ψ = r·res
        slack = 8 * eps_mach * jnp.sqrt(p.size) * sc

        def ls_cond(s):
            k, t, v, _, _ = s
            return (k < 40) & ~(v >= val + 1e-4 * t * slope - slack)

        def ls_body(s):
            k, t, _, _, _ = s
            t = 0.5 * t
            v, pn, scn = psi(u + t * d)
            return k + 1, t, v, pn, scn

        v1, p1, sc1 = psi(u + d)
        _, t, v, pn, scn = jax.lax.while_loop(ls_cond, ls_body, (jnp.array(0), jnp.asarray(1.0, u.dtype), v1, p1, sc1))
        failed = ~(v >= val + 1e-4 * t * slope - slack)
        un = u + t * d
        new = (un, pn, v, scn, grad_res(un, pn))
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(failed, a, b), (u, p, val, sc, res), new)
        return (it + 1,) + new + (failed,)

    v0, p0, sc0 = psi(u0)
    it, u, *_ = jax.lax.while_loop(cond, body, (jnp.array(0), u0, p0, v0, sc0, grad_res(u0, p0), jnp.array(False)))
    return u, it


def _dykstra(problem: JKOProblem, q, lq, u0, tau, eps, solver: Dykstra) -> JKOStep:
    # Each pass: the b update and p(u) (two kernel applications), then, unless converged, the
    # KL-prox of F at K̃b, which gives the next u (and a = a(u)).
    tol = _default_tol(solver.tol, q.dtype)
    inner_tol = tol / 10 if solver.inner_tol is None else float(solver.inner_tol)
    grad_conj = problem.objective.risk_conjugate_grad
    lk = log_kernel_path(solver.kernel)

    def cond(c):
        return ~c[-1]

    def body(c):
        it, inner, kernels, u, _, _ = c
        pr = _primal(problem, lq, problem.log_a(u, tau, eps), eps, lk=lk)
        kkt = jnp.max(jnp.abs(pr.f - grad_conj(u)))
        done = (kkt <= tol) | (it >= solver.max_iter)
        u_n, k_in = jax.lax.cond(
            done,
            lambda _: (u, jnp.array(0)),
            lambda _: _prox_newton(problem, pr.l2, u, tau, eps, inner_tol, solver.inner_max_iter),
            None,
        )
        return it + ~done, inner + k_in, kernels + 2, u_n, pr, done

    pr0 = jax.eval_shape(lambda: _primal(problem, lq, problem.log_a(u0, tau, eps), eps, lk=lk))
    pr0 = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), pr0)
    it, inner, kernels, u, pr, _ = jax.lax.while_loop(cond, body, (jnp.array(0), jnp.array(0), jnp.array(0), u0, pr0, jnp.array(False)))
    return _finish(problem, pr, q, u, tau, it, inner, kernels, tol)


def _solve(method, problem: JKOProblem, q: Array, u0: Array, tau, eps, solver) -> JKOStep:
    q = jnp.asarray(q)
    tau, eps = jnp.asarray(tau, q.dtype), jnp.asarray(eps, q.dtype)
    return method(problem, q, _log_q(q), jnp.asarray(u0, q.dtype), tau, eps, solver)


def solver_tol(solver: Solver, dtype) -> float | None:
    """The KKT tolerance ``solver`` stops at (None for :class:`Linearised`)."""
    return None if isinstance(solver, Linearised) else _default_tol(solver.tol, dtype)


# --------------------------------------------------------------------------- one step


def jko_step(
    objective: Objective,
    p,
    tau: float,
    *,
    grid: Grid,
    blur: float,
    solver: Solver = SemiDualNewton(),
    dual0=None,
    problem: JKOProblem | None = None,
) -> JKOStep:
    """One entropic JKO step (1) from grid masses ``p`` (or a Measure, binned on the grid), on the host.

    ``dual0``: warm start u (default ``∇R(f_p)``). ``problem``: a prebuilt :func:`jko_problem`.
    Returns the :class:`JKOStep` with NumPy arrays; F(p⁺) is ``problem.value(step.masses)``.
    """
    require_positive(tau, "tau")
    require_positive(blur, "blur")
    problem = problem or _validated_problem(objective, grid, solver)
    q = jnp.asarray(_initial_masses(problem, p), objective.X.dtype)
    u0 = _initial_dual(problem, q) if dual0 is None else jnp.asarray(dual0, q.dtype)
    out = eqx.filter_jit(lambda pb, q, u, t, e, s: s(pb, q, u, t, e))(problem, q, u0, tau, blur, solver)
    return jax.tree_util.tree_map(np.asarray, out)


# --------------------------------------------------------------------------- the flow


class JKOState(eqx.Module):
    """State of the flow: grid masses (C, N) and the dual u of the last step (the warm start)."""

    masses: Array
    dual: Array


class JKO(AbstractFlow):
    """The entropic JKO flow (1) on a grid: each step solved by ``solver`` with blur ε = ``blur``.

    The problem is a :class:`JKOProblem`; the state a :class:`JKOState`. A step whose solver
    misses its tolerance reports ``inner_not_converged``. The entropy adds the diffusion
    (ε/4τ)Δ, so F may rise along a converged step: the monitor checks divergence and the
    inner solver, not rises (``Monitor(check_rise=True)`` asks for it anyway).
    Stats: ``kkt``, ``gap``, ``mass_error``, ``iterations``, ``inner_iterations``, ``kernel_applications``.
    """

    blur: Array
    solver: Solver = SemiDualNewton()
    name: ClassVar[str] = "JKO"
    monotone: ClassVar[bool] = False

    def init(self, problem: JKOProblem, masses: Array) -> JKOState:
        return JKOState(masses, _initial_dual(problem, masses))

    def step(self, problem: JKOProblem, state: JKOState, tau: Array) -> tuple[JKOState, StepInfo]:
        q = state.masses
        out = self.solver(problem, q, state.dual, tau, jnp.asarray(self.blur, q.dtype))
        stats = {
            "kkt": out.kkt,
            "gap": out.gap,
            "mass_error": out.mass_error,
            "iterations": out.iterations,
            "inner_iterations": out.inner_iterations,
            "kernel_applications": out.kernel_applications,
        }
        result = RESULTS.where(out.converged, RESULTS.successful, RESULTS.inner_not_converged)  # type: ignore[arg-type]  # mypy reads eqx.Enumeration members as str
        return JKOState(out.masses, out.dual), StepInfo(problem.value(q), result, stats)

    def value(self, problem: JKOProblem, state: JKOState) -> Array:
        return problem.value(state.masses)

    def measure(self, problem: JKOProblem, state: JKOState) -> Measure:
        return problem.measure(state.masses)

    def inner_failure(self, problem: JKOProblem, stats: dict) -> str:
        tol = solver_tol(self.solver, problem.features.dtype)
        return (
            f"the {type(self.solver).__name__} step did not converge: KKT residual {stats['kkt']:.3g} > tol = {tol:g} after"
            f" {int(stats['iterations'])} iterations. Raise solver.max_iter, loosen solver.tol, or take a smaller tau or a"
            " larger blur"
        )


def _validated_problem(objective: Objective, grid: Grid, solver: Solver, memory_limit: float | None = None, snapshots: int = 2) -> JKOProblem:
    if not isinstance(objective, Objective):
        raise InputError("objective", "must be an Objective", "build it with wgflow.make_objective(...)")
    require(isinstance(solver, SOLVERS), "solver", f"unknown solver {solver!r}", "use SemiDualNewton(), Linearised() or Dykstra()")
    require(
        solver.kernel in KERNEL_PATHS,
        "solver.kernel",
        f"unknown kernel path {solver.kernel!r}",
        "use kernel='stabilised' (stabilised scaling, the default) or kernel='log' (the log-domain reference)",
    )
    if solver.needs_conjugate:
        require(
            objective.loss.has_conjugate,
            "solver",
            f"{type(solver).__name__} needs the loss's convex conjugate, and the {objective.loss.name!r} loss has none",
            "use solver=Linearised(), or a loss with a conjugate (the square loss, or register_loss(Loss(..., conjugate=...)))",
        )
    check_grid(objective, grid)
    check_memory(
        grid,
        objective.n,
        len(component_signs(objective)),
        objective.X.dtype,
        limit=memory_limit,
        hessian=isinstance(solver, Dykstra),
        snapshots=snapshots,
    )
    return jko_problem(objective, grid)


def _initial_masses(problem: JKOProblem, p0, field: str = "p0") -> np.ndarray:
    grid, signs = problem.grid, problem.signs
    C, N = len(signs), grid.size
    if isinstance(p0, Measure):
        return bin_measure(grid, p0, signs, field=field)
    if isinstance(p0, GridMeasure):
        require(p0.grid is grid, field, "is a GridMeasure on another grid", "bin it on this grid, or pass grid=p0.grid")
        require(tuple(p0.signs) == tuple(signs), field, f"has component signs {p0.signs}, this parameterisation needs {signs}")
        p0 = p0.masses
    try:
        p = np.asarray(p0, np.float64)
    except (TypeError, ValueError):
        raise InputError(field, "must be grid masses (C, N), a GridMeasure or a Measure") from None
    if p.shape == (N,) and C == 2:  # a signed density: its positive and negative parts
        p = np.stack([np.maximum(p, 0), np.maximum(-p, 0)])
    elif p.shape == (N,) or (C == 1 and p.shape == grid.shapes[0] and len(grid.blocks) == 1):
        p = p.reshape(1, N)
    elif len(grid.blocks) == 1 and p.shape == (C,) + grid.shapes[0]:
        p = p.reshape(C, N)
    require(
        p.shape == (C, N),
        field,
        f"must have shape ({C}, {N}) for this grid and parameterisation ({C} component(s)), got {np.shape(p0)}",
        "use initial_grid_density(grid, ..., components=%d)" % C,
    )
    require(bool(np.all(np.isfinite(p))), field, "contains NaN/inf")
    require(bool(np.all(p >= 0)), field, "grid masses must be >= 0 (signs are carried by the components)")
    require(float(p.sum()) > 0, field, "has zero total mass")
    return p


def _initial_dual(problem: JKOProblem, q: Array) -> Array:
    return jax.grad(problem.objective.risk)(problem.outputs(q))


def jko(
    objective: Objective,
    p0,
    tau: Schedule,
    num_steps: int,
    *,
    grid: Grid,
    blur: float,
    solver: Solver = SemiDualNewton(),
    save: SaveAt | None = None,
    monitor: Monitor | None = Monitor(),
    block_size: int = 16,
    callback: Callable | None = None,
    max_seconds: float | None = None,
    memory_limit: float | None = None,
    shard: bool | Mesh = False,
) -> Solution:
    """The entropic JKO flow (1) of ``objective`` on ``grid`` from ``p0``: ``num_steps`` steps of size ``tau``.

    ``p0``: grid masses (C, N) (C = 2 for signed parameterisations: positive and negative
    grids; a signed (N,) array is split), a :class:`~wgflow.grid.GridMeasure`, or a
    :class:`Measure` binned on the grid (an error if mass lies outside the box). ``tau``: a
    step or a schedule (mean-field time). ``blur``: ε, the entropic weight in units of
    squared distance (the scheme adds the diffusion ε/(4τ)Δ). ``solver``:
    :class:`SemiDualNewton` (default), :class:`Linearised` or :class:`Dykstra`.
    ``monitor``: by default a step whose solver misses its tolerance stops the run
    (``inner_not_converged``), keeping the states before; ``Monitor(policy="warn")`` goes on.

    Returns a :class:`~wgflow.flows.solve.Solution` whose saved values are Measures (pass
    ``SaveAt(fn=lambda t, state, problem: state.masses)`` to keep the masses instead) and whose
    ``final`` is the last :class:`JKOState`. Stats per step: ``kkt``, ``gap``, ``mass_error``,
    ``iterations``, ``inner_iterations``, ``kernel_applications``.

    ``shard=True`` (or a :class:`jax.sharding.Mesh`) splits the grid points over all devices
    (of all processes under ``jax.distributed``; the grid size must be a multiple of the
    device count); XLA partitions the step, and the results are those of one device, to rounding.
    """
    etas = step_sizes(tau, num_steps, "tau")
    require_positive(blur, "blur")
    save = save or SaveAt()
    n_saves = len(save.resolve(schedule_times(etas)))
    per_save = 1 if save.fn is not None else grid.dim + 1 if isinstance(grid, Grid) else 1  # a saved Measure holds the positions too
    problem = _validated_problem(objective, grid, solver, memory_limit, n_saves * per_save + 2)
    q0 = jnp.asarray(_initial_masses(problem, p0), objective.X.dtype)
    if shard is not False:
        problem, q0 = _shard_grid(problem, q0, sharding.atom_mesh() if shard is True else shard)
    return solve(
        JKO(jnp.asarray(blur, q0.dtype), solver),
        problem,
        q0,
        etas,
        num_steps,
        saveat=save,
        monitor=monitor,
        block_size=block_size,
        callback=callback,
        max_seconds=max_seconds,
        name=f"JKO ({type(solver).__name__})",
    )


def _shard_grid(problem: JKOProblem, q0: Array, mesh: Mesh) -> tuple[JKOProblem, Array]:
    """The grid points (columns of Φ, λV, the positions, the masses) split over ``mesh``; the rest replicated."""
    N = problem.grid.size
    require(
        N % mesh.size == 0,
        "grid",
        f"has {N} points, not a multiple of the {mesh.size} devices to shard over",
        "choose a grid size divisible by the device count, or shard=False",
    )
    ax = sharding.AXIS
    put = lambda x, *spec: sharding.put(x, NamedSharding(mesh, P(*spec)))  # noqa: E731
    problem = eqx.tree_at(
        lambda pb: (pb.objective, pb.features, pb.potential, pb.points),
        problem,
        (sharding.replicated(problem.objective, mesh), put(problem.features, None, ax), put(problem.potential, ax), put(problem.points, ax, None)),
    )
    return problem, put(q0, None, ax)


__all__ = [
    "JKO",
    "Dykstra",
    "JKOProblem",
    "JKOState",
    "JKOStep",
    "Linearised",
    "SOLVERS",
    "SemiDualNewton",
    "Solver",
    "check_grid",
    "component_signs",
    "jko",
    "jko_problem",
    "jko_step",
    "solver_tol",
]
