"""The conditional Wasserstein gradient flow of a deep mean-field ResNet (DESIGN §2 "Conditional flow").

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

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError, require
from wgflow.flows.schedules import Schedule, step_sizes
from wgflow.flows.trajectory import SaveAt, Trajectory, integrate
from wgflow.metrics.resnet import (
    DCOT_MODES,
    RateFit,
    _lambda_stats,
    dcot,
    fitted_rate,
    layer_kernels,
)
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


@dataclasses.dataclass(frozen=True)
class _Step:
    with_lambda0: bool = False

    def __call__(self, objective, params, eta):
        return resnet_step(objective, params, eta, with_lambda0=self.with_lambda0)


def _loss_value(objective: ResNetObjective, params: ResNetParams) -> Array:
    return resnet_loss(params, objective.X, objective.Y, objective.activation)


@eqx.filter_jit
def _grad_and_states(objective: ResNetObjective, params: ResNetParams) -> tuple[Array, Array]:
    adj = adjoint_gradient(objective, params)
    return grad_norm_sq(adj.gradient), adj.states


@dataclasses.dataclass(frozen=True)
class ResNetRun:
    """The record of a conditional flow.

    Per step k = 0..K (aligned with ``times``): ``loss`` L(μ_k), ``grad_sq`` ‖∇L[μ_k]‖²_{L²(μ_k)},
    ``pl_ratio`` grad_sq/L, ``path_length`` ∫₀^t ‖∇L‖ dt (Riemann sum of the explicit steps:
    an upper bound on the identity-coupling D_COT(μ_t, μ₀) of the discrete scheme),
    ``lambda0_steps`` (only with ``lambda0_every_step``).
    At save times: ``snapshots`` (ResNetParams stacked), ``lambda0``, ``lambda_bar``
    (λ_min of the depth-averaged kernel), ``dcot_identity``, ``dcot_exact`` (NaN if not computed).
    ``trajectory``: the underlying :class:`~wgflow.flows.trajectory.Trajectory`.
    """

    times: np.ndarray
    loss: np.ndarray
    grad_sq: np.ndarray
    pl_ratio: np.ndarray
    path_length: np.ndarray
    lambda0_steps: np.ndarray | None
    save_times: np.ndarray
    save_steps: np.ndarray
    snapshots: ResNetParams
    lambda0: np.ndarray
    lambda_bar: np.ndarray
    dcot_identity: np.ndarray
    dcot_exact: np.ndarray
    final: ResNetParams
    status: str
    message: str
    seconds: float
    trajectory: Trajectory

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def num_steps(self) -> int:
        return len(self.times) - 1

    def fitted_rate(self, window: tuple[float, float] | None = None) -> RateFit:
        return fitted_rate(self.times, self.loss, window)

    def snapshot(self, i: int) -> ResNetParams:
        return jax.tree_util.tree_map(lambda a: a[i], self.snapshots)


def conditional_flow(
    objective: ResNetObjective,
    params0: ResNetParams,
    step_size: Schedule,
    num_steps: int,
    *,
    save: SaveAt | None = None,
    lambda0_every_step: bool = False,
    dcot_mode: str = "exact",
    max_growth: float = 1e6,
    block_size: int = 256,
    callback: Callable[[int, float, float], None] | None = None,
) -> ResNetRun:
    """Explicit conditional Wasserstein gradient flow of the risk from ``params0``.

    ``step_size``: a float or a schedule ``k ↦ η_k`` (:mod:`wgflow.flows.schedules`), in flow
    time. ``save``: which states to keep (start and end always); λ₀, λ_bar and D_COT to μ₀
    (``dcot_mode``: ``"exact"`` with POT, ``"identity"`` only, or ``"none"``) are computed there.
    A diverging run (NaN, loss grown by ``max_growth``) stops with ``status="diverged"``
    and keeps what was computed.
    """
    if not isinstance(objective, ResNetObjective):
        raise InputError("objective", f"must be a ResNetObjective, got {type(objective).__name__}", "build it with make_resnet_objective(X, Y)")
    _check_params(params0, d=objective.d, field="params0")
    require(dcot_mode in DCOT_MODES, "dcot_mode", f"unknown mode {dcot_mode!r}", f"use one of {list(DCOT_MODES)}")
    etas = step_sizes(step_size, num_steps)
    params0 = params0.astype(objective.X.dtype)
    traj = integrate(
        _Step(bool(lambda0_every_step)), _loss_value, objective, params0, etas, save=save,
        max_growth=max_growth, block_size=block_size, callback=callback, name="conditional flow",
    )
    final = ResNetParams(*(jnp.asarray(a) for a in (traj.final.U, traj.final.W, traj.final.B)))
    snaps = traj.snapshots
    n_save = len(traj.save_times)
    # the saved states and the last one (so that per-step arrays align with `times`), in one program
    gsq_all, lam_all, lbar_all = [], [], []
    for q in [ResNetParams(*(jnp.asarray(a[i]) for a in (snaps.U, snaps.W, snaps.B))) for i in range(n_save)] + [final]:
        gsq, xs = _grad_and_states(objective, q)
        lam, lbar_q = _lambda_stats(objective, q, xs)
        gsq_all.append(float(gsq))
        lam_all.append(lam)
        lbar_all.append(lbar_q)
    gsq_all, lam_all, lbar_all = np.array(gsq_all), np.array(lam_all), np.array(lbar_all)
    grad_sq = np.append(traj.diagnostics["grad_sq"], gsq_all[-1])
    loss = traj.objective.copy()
    pl = grad_sq / loss
    K = len(traj.times) - 1
    path = np.concatenate([[0.0], np.cumsum(etas[:K] * np.sqrt(grad_sq[:K]))])
    lam_steps = np.append(traj.diagnostics["lambda0"], lam_all[-1]) if lambda0_every_step else None

    lam0, lbar = lam_all[:n_save].astype(np.float64), lbar_all[:n_save].astype(np.float64)
    d_id, d_ex = np.full(n_save, np.nan), np.full(n_save, np.nan)
    for i in range(n_save):
        p = ResNetParams(*(jnp.asarray(a[i]) for a in (snaps.U, snaps.W, snaps.B)))
        if dcot_mode != "none":
            dc = dcot(p, params0, exact=dcot_mode == "exact")
            d_id[i] = dc.identity
            d_ex[i] = np.nan if dc.exact is None else dc.exact
    return ResNetRun(
        times=traj.times, loss=loss, grad_sq=grad_sq, pl_ratio=pl, path_length=path, lambda0_steps=lam_steps,
        save_times=traj.save_times, save_steps=traj.save_steps, snapshots=ResNetParams(snaps.U, snaps.W, snaps.B),
        lambda0=lam0, lambda_bar=lbar, dcot_identity=d_id, dcot_exact=d_ex, final=final.to_numpy(),
        status=traj.status, message=traj.message, seconds=traj.seconds, trajectory=traj,
    )


__all__ = ["ResNetRun", "conditional_flow", "resnet_step"]
