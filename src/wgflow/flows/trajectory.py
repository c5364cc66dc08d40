"""What a flow returns, and the loop every flow runs (DESIGN §4).

A flow is a pure ``step(args, state, η) -> (state⁺, F(state), diagnostics)``;
:func:`integrate` runs it for a schedule of steps as compiled blocks of
``lax.scan``, saves snapshots at requested mean-field times, records the
objective and the diagnostics at every step, and stops a diverging run (NaN,
non-finite state, or an objective grown by ``max_growth``) with a message,
keeping everything computed before.
"""

from __future__ import annotations

import dataclasses
import time as _time
from functools import partial
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from wgflow.errors import InputError, require
from wgflow.flows.schedules import times as schedule_times


@dataclasses.dataclass(frozen=True)
class SaveAt:
    """Which states to keep: at mean-field ``times``, ``every`` k steps and/or at given ``steps``
    (the start and the end always)."""

    times: Sequence[float] | None = None
    every: int | None = None
    steps: Sequence[int] | None = None

    def resolve(self, t: np.ndarray) -> np.ndarray:
        """Step indices to save, given the times ``t`` (length K + 1) of the schedule."""
        K = len(t) - 1
        chosen = {0, K}
        if self.every is not None:
            require(int(self.every) > 0, "save.every", "must be a positive number of steps", value=self.every)
            chosen.update(range(0, K + 1, int(self.every)))
        if self.steps is not None:
            for s in self.steps:
                require(0 <= int(s) <= K, "save.steps", f"must lie in 0..{K}", value=s)
                chosen.add(int(s))
        if self.times is not None:
            for s in self.times:
                require(np.isfinite(s) and s >= 0, "save.times", "must be finite and >= 0", value=s)
                # the first step whose time reaches s (within rounding); past the end: the end.
                chosen.add(int(min(np.searchsorted(t, s - 1e-12 * max(1.0, abs(s))), K)))
        return np.array(sorted(chosen), dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A flow's record.

    ``times``/``objective``: mean-field time and F at every step 0..K (a diverged
    run stops early: the arrays end at the last step computed). ``snapshots``:
    the state (a pytree whose leaves gain a leading axis) at ``save_times``.
    ``final``: the last good state. ``status`` is ``"completed"``, ``"diverged"``
    or ``"not_converged"`` (an inner solver missed its tolerance), with a
    human ``message``. ``diagnostics``: per-step arrays (length K), e.g. the
    L²(μ) norm of the velocity, inner iterations and residuals.
    """

    times: np.ndarray
    objective: np.ndarray
    save_times: np.ndarray
    save_steps: np.ndarray
    snapshots: Any
    final: Any
    status: str
    message: str
    diagnostics: dict[str, np.ndarray]
    seconds: float = 0.0

    @property
    def num_steps(self) -> int:
        return len(self.times) - 1

    @property
    def final_objective(self) -> float:
        return float(self.objective[-1])

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def snapshot(self, i: int) -> Any:
        return jax.tree_util.tree_map(lambda a: a[i], self.snapshots)


def _float_dtype(tree):
    """The dtype of the state's floating-point leaves (step sizes are cast to it), else the default."""
    for x in jax.tree_util.tree_leaves(tree):
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact):
            return jnp.asarray(x).dtype
    return jnp.result_type(float)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _block(step_fn, args, state, stopped, etas, n_active, limit):
    """``len(etas)`` steps of which the first ``n_active`` run; a step that would diverge is refused
    and stops the run (``stopped``). Pure; vmapped over (state, stopped, limit) for sweeps."""

    def body(carry, xs):
        state, stopped = carry
        eta, k = xs

        def run(state):
            new, F, diag = step_fn(args, state, eta)
            good = jnp.isfinite(F) & (F <= limit) & _all_finite(new)
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(good, a, b), new, state)
            return new, F, diag, ~good

        def skip(state):
            _, F, diag = jax.eval_shape(step_fn, args, state, eta)
            zeros = jax.tree_util.tree_map(
                lambda s: jnp.full(s.shape, jnp.nan if jnp.issubdtype(s.dtype, jnp.inexact) else 0, s.dtype), (F, diag)
            )
            return state, zeros[0], zeros[1], jnp.array(False)

        active = (k < n_active) & ~stopped
        new, F, diag, bad = jax.lax.cond(active, run, skip, state)
        return (new, stopped | bad), (F, diag, bad)

    (state, stopped), (F, diag, bad) = jax.lax.scan(body, (state, stopped), (etas, jnp.arange(etas.shape[0])))
    return state, stopped, F, diag, bad


_run_block = eqx.filter_jit(_block)


@eqx.filter_jit
def _run_block_batch(step_fn, args, states, stopped, etas, n_active, limits):
    run = lambda st, sp, lim: _block(step_fn, args, st, sp, etas, n_active, lim)  # noqa: E731
    return jax.vmap(run)(states, stopped, limits)


_evaluate = eqx.filter_jit(lambda value_fn, args, state: value_fn(args, state))
_evaluate_batch = eqx.filter_jit(lambda value_fn, args, states: jax.vmap(lambda st: value_fn(args, st))(states))


def integrate(
    step_fn: Callable,
    value_fn: Callable,
    args: Any,
    state: Any,
    etas: np.ndarray,
    *,
    save: SaveAt | None = None,
    max_growth: float = 1e6,
    block_size: int = 256,
    callback: Callable[[int, float, float], None] | None = None,
    name: str = "flow",
) -> Trajectory:
    """Run ``step_fn`` over the steps ``etas`` (already validated) and record the trajectory.

    ``step_fn(args, state, η) -> (state⁺, F(state), diagnostics)`` and
    ``value_fn(args, state) -> F(state)`` are pure; ``args`` (e.g. the objective)
    is a pytree passed explicitly so that one compiled program serves all data.
    ``callback(step, time, objective)`` is called on the host after each block.
    """
    save = save or SaveAt()
    t = schedule_times(etas)
    K = len(etas)
    save_steps = save.resolve(t)
    require(max_growth > 1, "max_growth", "must be > 1", value=max_growth)
    require(int(block_size) > 0, "block_size", "must be a positive integer", value=block_size)
    dtype = _float_dtype(state)

    start = _time.perf_counter()
    F0 = float(_evaluate(value_fn, args, state))
    if not np.isfinite(F0):
        raise InputError("initial state", f"the objective at the start of the {name} is {F0}", "check the data and the initial measure")
    limit = jnp.asarray(max_growth * max(abs(F0), 1e-300), dtype)

    B = int(min(block_size, K))
    objective = np.empty(K + 1)
    diags: dict[str, list] = {}
    snaps, saved = [state], [0]  # step 0 is always saved
    next_save_idx = 1
    k = 0
    status, message = "completed", f"{name}: {K} steps to t = {t[-1]:.6g}"
    while k < K:
        target = min(k + B, int(save_steps[next_save_idx]))
        n = target - k
        block_etas = np.zeros(B)
        block_etas[:n] = etas[k:target]
        state, _, F, diag, bad = _run_block(step_fn, args, state, jnp.array(False), jnp.asarray(block_etas, dtype), jnp.asarray(n), limit)
        F, bad = np.asarray(F)[:n], np.asarray(bad)[:n]
        objective[k:target] = F
        for key, v in diag.items():
            diags.setdefault(key, []).append(np.asarray(v)[:n])
        if bad.any():
            k_bad = k + int(np.argmax(bad))
            F_bad = objective[k_bad]
            if not np.isfinite(F_bad):
                reason = "NaN" if np.isnan(F_bad) else "infinite"
            elif F_bad > float(limit):
                reason = f"{F_bad:.3g} (> {max_growth:g} × F(0) = {F0:.3g})"
            else:
                reason = f"{F_bad:.3g}, but the next state was not finite"
            message = (
                f"{name} diverged at step {k_bad} (t = {t[k_bad]:.6g}): the objective became {reason}. "
                f"Reduce the step size (the step there was {etas[k_bad]:.3g}) or use a decaying schedule; "
                f"the trajectory up to step {k_bad} is kept."
            )
            if saved[-1] != k_bad:
                snaps.append(state)
                saved.append(k_bad)
            return _record(t[: k_bad + 1], objective[: k_bad + 1], t[saved], saved, snaps, state, "diverged", message, diags, k_bad, start)
        k = target
        if k == save_steps[next_save_idx]:
            snaps.append(state)
            saved.append(k)
            next_save_idx += 1
        if callback is not None:
            callback(k, float(t[k]), float(F[-1]))
    objective[K] = float(_evaluate(value_fn, args, state))
    return _record(t, objective, t[saved], saved, snaps, state, status, message, diags, K, start)


def _record(t, objective, save_t, save_s, snaps, final, status, message, diags, K, start) -> Trajectory:
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *snaps)
    diagnostics = {key: np.concatenate(v)[:K] for key, v in diags.items()}
    final = jax.tree_util.tree_map(np.asarray, final)
    return Trajectory(
        times=np.asarray(t),
        objective=np.asarray(objective),
        save_times=np.asarray(save_t, dtype=np.float64),
        save_steps=np.asarray(save_s, dtype=np.int64),
        snapshots=stacked,
        final=final,
        status=status,
        message=message,
        diagnostics=diagnostics,
        seconds=_time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- sweeps


@dataclasses.dataclass(frozen=True)
class BatchTrajectory:
    """R runs of one flow advanced together (one compiled, vmapped program).

    ``objective`` is (R, K + 1), NaN after a run's stop; ``stop_step[r]`` is K for a
    completed run, else the step at which run r diverged; ``snapshots`` leaves are
    (S, R, ...); ``final`` leaves are (R, ...); ``diagnostics`` arrays are (R, K).
    """

    times: np.ndarray
    objective: np.ndarray
    save_times: np.ndarray
    save_steps: np.ndarray
    snapshots: Any
    final: Any
    stop_step: np.ndarray
    status: list[str]
    messages: list[str]
    diagnostics: dict[str, np.ndarray]
    seconds: float = 0.0

    @property
    def num_runs(self) -> int:
        return self.objective.shape[0]

    def final_objective(self) -> np.ndarray:
        """F at each run's last good step."""
        return self.objective[np.arange(self.num_runs), self.stop_step]


def integrate_batch(
    step_fn: Callable,
    value_fn: Callable,
    args: Any,
    states: Any,
    etas: np.ndarray,
    *,
    save: SaveAt | None = None,
    max_growth: float = 1e6,
    block_size: int = 256,
    callback: Callable[[int, float, np.ndarray], None] | None = None,
    name: str = "flow",
    stopped: np.ndarray | None = None,
) -> BatchTrajectory:
    """:func:`integrate` for a batch of states (leading axis R) sharing ``args`` and the schedule.

    Each run stops on its own when it diverges (its state is frozen at its last good
    step); the others go on. ``callback(step, time, objectives)`` gets the (R,) objectives.
    """
    save = save or SaveAt()
    t = schedule_times(etas)
    K = len(etas)
    save_steps = save.resolve(t)
    require(max_growth > 1, "max_growth", "must be > 1", value=max_growth)
    dtype = _float_dtype(states)
    start = _time.perf_counter()
    F0 = np.asarray(_evaluate_batch(value_fn, args, states))
    R = F0.shape[0]
    if not np.all(np.isfinite(F0) | (np.asarray(stopped, bool) if stopped is not None else False)):
        r = int(np.argmin(np.isfinite(F0)))
        raise InputError("initial state", f"run {r}: the objective at the start of the {name} is {F0[r]}", "check the data and the initial measures")
    limits = jnp.asarray(max_growth * np.maximum(np.abs(np.nan_to_num(F0, nan=1.0)), 1e-300), dtype)

    B = int(min(block_size, K))
    objective = np.full((R, K + 1), np.nan)
    stop_step = np.full(R, K)
    already = np.zeros(R, bool) if stopped is None else np.asarray(stopped, bool)
    stop_step[already] = 0
    stopped = jnp.asarray(already)
    diags: dict[str, list] = {}
    snaps, saved = [states], [0]
    next_save_idx, k = 1, 0
    while k < K and not bool(np.all(np.asarray(stopped))):
        target = min(k + B, int(save_steps[next_save_idx]))
        n = target - k
        block_etas = np.zeros(B)
        block_etas[:n] = etas[k:target]
        states, stopped, F, diag, bad = _run_block_batch(
            step_fn, args, states, stopped, jnp.asarray(block_etas, dtype), jnp.asarray(n), limits
        )
        F, bad = np.asarray(F)[:, :n], np.asarray(bad)[:, :n]
        objective[:, k:target] = F
        for key, v in diag.items():
            diags.setdefault(key, []).append(np.asarray(v)[:, :n])
        for r in np.flatnonzero(bad.any(axis=1)):
            stop_step[r] = k + int(np.argmax(bad[r]))
        k = target
        if k == save_steps[next_save_idx]:
            snaps.append(states)
            saved.append(k)
            next_save_idx += 1
        if callback is not None:
            callback(k, float(t[k]), F[:, -1])
    if k < K:  # every run stopped early: the rest of the schedule is not run
        snaps.append(states)
        saved.append(k)
    objective[:, k] = np.where(stop_step >= k, np.asarray(_evaluate_batch(value_fn, args, states)), objective[:, k])
    status, messages = [], []
    for r in range(R):
        s = int(stop_step[r])
        objective[r, s + 1 :] = np.nan
        if already[r]:
            status.append("stopped")
            messages.append(f"{name} run {r} was stopped before this call")
        elif s < K:
            status.append("diverged")
            messages.append(
                f"{name} run {r} diverged at step {s} (t = {t[s]:.6g}): the objective became {objective[r, s]:.3g}; "
                f"reduce the step size (it was {etas[s]:.3g}) or use a decaying schedule"
            )
        else:
            status.append("completed")
            messages.append(f"{name} run {r}: {K} steps to t = {t[K]:.6g}")
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *snaps)
    diagnostics = {key: np.concatenate(v, axis=1) for key, v in diags.items()}
    return BatchTrajectory(
        times=t,
        objective=objective,
        save_times=t[saved],
        save_steps=np.asarray(saved, dtype=np.int64),
        snapshots=stacked,
        final=jax.tree_util.tree_map(np.asarray, states),
        stop_step=stop_step,
        status=status,
        messages=messages,
        diagnostics=diagnostics,
        seconds=_time.perf_counter() - start,
    )
