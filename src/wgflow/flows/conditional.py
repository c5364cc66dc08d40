"""The conditional Wasserstein gradient flow of a deep mean-field ResNet (Barboni, Peyré & Vialard 2024).

Barboni, Peyré & Vialard's flow of the model of :mod:`wgflow.models.resnet` (its adjoint
gradient ∇L[μ] and conventions there), with the diagnostics of :mod:`wgflow.metrics.resnet`
along the run (all restated with derivations in ``docs/resnet.md``):

- Conditional flow: each neuron moves with ``−∇L[μ](s, ω)``; explicit steps
  ``ω ← ω − η ∇L[μ](s, ω)`` are plain gradient descent with learning rate ``η·S·M``.
  The clock is the flow's time t (Σ η), whatever S and M.
- ``‖∇L[μ]‖²_{L²(μ)} = (1/S) Σ_k (1/M) Σ_m |∇L[μ](s_k, ω_{k,m})|²`` and ``dL/dt = −‖∇L‖²``.
- ``λ₀ = (1/S) Σ_k λ_min(K_k)``, ``K_k(i, j) = (1/M) Σ_m σ(w_m·xⁱ_k + b_m) σ(w_m·xʲ_k + b_m)``.
- PL at initialisation (u = 0): ``‖∇L‖² ≥ (2/N) λ₀ L`` (:data:`~wgflow.metrics.resnet.PL_CONSTANT`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError, require
from wgflow.flows.schedules import Schedule
from wgflow.flows.solve import RESULTS, AbstractFlow, LoopState, Monitor, SaveAt, Solution, StepInfo, solve
from wgflow.metrics.resnet import DCOT_MODES, RateFit, _lambda_stats, dcot, fitted_rate, layer_kernels
from wgflow.models.resnet import (
    ResNetObjective,
    ResNetParams,
    _check_params,
    adjoint_gradient,
    grad_norm_sq,
    resnet_loss,
)

# --------------------------------------------------------------------------- the flow


def resnet_step(objective: ResNetObjective, params: ResNetParams, eta: Array, *, with_lambda0: bool = False):
    """One explicit step ``ω ← ω − η ∇L[μ](s, ω)``; returns (μ⁺, L(μ), diagnostics of μ).

    Diagnostics: ``grad_sq`` = ‖∇L[μ]‖²_{L²(μ)}, ``pl_ratio`` = grad_sq / L, and with
    ``with_lambda0`` ``lambda0`` (S eigenvalue problems of size N per step).
    """
    adj = adjoint_gradient(objective, params)
    g = adj.gradient
    eta = jnp.asarray(eta, params.U.dtype)  # the schedule is float64 under x64; keep the state's dtype
    new = ResNetParams(params.U - eta * g.U, params.W - eta * g.W, params.B - eta * g.B)
    gsq = grad_norm_sq(g)
    diag = {"grad_sq": gsq, "pl_ratio": gsq / adj.loss}
    if with_lambda0:
        K = layer_kernels(params, objective.X, objective.activation, adj.states)
        diag["lambda0"] = jnp.mean(jnp.linalg.eigvalsh(K)[:, 0])
    return new, adj.loss, diag


class ConditionalFlow(AbstractFlow):
    """The explicit conditional flow ``ω ← ω − η ∇L[μ](s, ω)`` of a :class:`ResNetObjective`.

    The state is the :class:`ResNetParams`. L decreases along a stable step, so the monitor
    checks rises. Stats: ``grad_sq`` = ‖∇L[μ]‖²_{L²(μ)}, ``pl_ratio`` = grad_sq / L, ``speed`` =
    √grad_sq (dL/dt = −speed²) and, with ``with_lambda0``, ``lambda0`` at every step.
    """

    with_lambda0: bool = eqx.field(static=True, default=False)
    name: ClassVar[str] = "conditional flow"

    def step(self, objective: ResNetObjective, params: ResNetParams, dt: Array) -> tuple[ResNetParams, StepInfo]:
        new, loss, diag = resnet_step(objective, params, dt, with_lambda0=self.with_lambda0)
        return new, StepInfo(loss, RESULTS.successful, {**diag, "speed": jnp.sqrt(diag["grad_sq"])})

    def value(self, objective: ResNetObjective, params: ResNetParams) -> Array:
        return resnet_loss(params, objective.X, objective.Y, objective.activation)


@eqx.filter_jit
def _grad_and_states(objective: ResNetObjective, params: ResNetParams) -> tuple[Array, Array]:
    adj = adjoint_gradient(objective, params)
    return grad_norm_sq(adj.gradient), adj.states


def resnet_diagnostics(params0: ResNetParams, dcot_mode: str = "exact") -> Callable:
    """A :class:`~wgflow.flows.solve.SaveAt` ``fn``: at each saved state, a dict of the ``params``,
    ``grad_sq`` = ‖∇L[μ]‖², ``lambda0`` = λ₀ (mean over layers of λ_min(K_s)), ``lambda_bar`` (λ_min
    of the depth-averaged kernel), and D_COT to ``params0``: ``dcot_identity`` (the coupling by
    index, an upper bound) and ``dcot_exact`` (POT, per layer; NaN unless ``dcot_mode="exact"``).
    ``dcot_mode="none"`` leaves both NaN."""
    require(dcot_mode in DCOT_MODES, "dcot_mode", f"unknown mode {dcot_mode!r}", f"use one of {list(DCOT_MODES)}")

    def fn(t, params: ResNetParams, objective: ResNetObjective) -> dict:
        gsq, xs = _grad_and_states(objective, params)
        lam, lbar = _lambda_stats(objective, params, xs)
        d_id = d_ex = float("nan")
        if dcot_mode != "none":
            dc = dcot(params, params0, exact=dcot_mode == "exact")
            d_id = dc.identity
            d_ex = float("nan") if dc.exact is None else dc.exact
        return {"params": params.to_numpy(), "grad_sq": float(gsq), "lambda0": lam, "lambda_bar": lbar, "dcot_identity": d_id, "dcot_exact": d_ex}

    return fn


def path_length(solution: Solution) -> np.ndarray:
    """``∫₀^t ‖∇L‖ dt`` at each recorded step (Riemann sum of the explicit steps): an upper bound
    on the identity-coupling D_COT(μ_t, μ₀) of the discrete scheme. Length: that of ``times``."""
    dt = np.diff(solution.times)
    speed = np.sqrt(solution.stats["grad_sq"][: len(dt)])
    return np.concatenate([[0.0], np.cumsum(dt * speed)])


def conditional_flow(
    objective: ResNetObjective,
    params0: ResNetParams | LoopState,
    step_size: Schedule,
    num_steps: int,
    *,
    save: SaveAt | None = None,
    dcot_mode: str = "exact",
    lambda0_every_step: bool = False,
    monitor: Monitor | None = Monitor(),
    block_size: int = 256,
    callback: Callable | None = None,
    max_seconds: float | None = None,
    pause: Callable[[], bool] | None = None,
) -> Solution:
    """The explicit conditional Wasserstein gradient flow of the risk from ``params0`` (or from
    the ``loop`` of an earlier solution, to continue it bit-identically; give ``save`` an
    ``fn`` then, since the default diagnostics measure D_COT to the start of *this* call).

    ``step_size``: a float or a schedule ``k ↦ η_k`` (:mod:`wgflow.flows.schedules`), in flow
    time. ``save``: which states to keep (start and end always); without an ``fn`` of its
    own, each saved value is :func:`resnet_diagnostics` (the params, λ₀, λ̄, D_COT to μ₀ by
    ``dcot_mode``: ``"exact"`` with POT, ``"identity"`` or ``"none"``), computed in the loop.
    By default a loss that rises above its running minimum stops the run (``unstable``), as
    a non-finite or exploding one does (``diverged``); everything before is kept.
    Returns a :class:`~wgflow.flows.solve.Solution`: ``objective`` is L per step, ``stats``
    ``grad_sq``, ``pl_ratio`` (and ``lambda0``); :func:`path_length` integrates the speed.
    """
    if not isinstance(objective, ResNetObjective):
        raise InputError("objective", f"must be a ResNetObjective, got {type(objective).__name__}", "build it with make_resnet_objective(X, Y)")
    require(dcot_mode in DCOT_MODES, "dcot_mode", f"unknown mode {dcot_mode!r}", f"use one of {list(DCOT_MODES)}")
    save = save or SaveAt()
    if isinstance(params0, LoopState):
        start: ResNetParams | LoopState = params0
        first = params0.state
    else:
        _check_params(params0, d=objective.d, field="params0")
        start = first = params0.astype(objective.X.dtype)
    if save.fn is None:
        save = SaveAt(times=save.times, steps=save.steps, every=save.every, log=save.log, fn=resnet_diagnostics(first, dcot_mode))
    return solve(
        ConditionalFlow(bool(lambda0_every_step)),
        objective,
        start,
        step_size,
        num_steps,
        saveat=save,
        monitor=monitor,
        block_size=block_size,
        callback=callback,
        max_seconds=max_seconds,
        pause=pause,
    )


def fitted_loss_rate(solution: Solution, window: tuple[float, float] | None = None) -> RateFit:
    """The exponential rate of the loss along ``solution`` (:func:`wgflow.metrics.resnet.fitted_rate`)."""
    return fitted_rate(solution.times, solution.objective, window)


__all__ = ["ConditionalFlow", "conditional_flow", "fitted_loss_rate", "path_length", "resnet_diagnostics", "resnet_step"]
