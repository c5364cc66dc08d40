"""The one loop that runs every flow, on the pattern of diffrax's ``diffeqsolve``.

A **flow** says how one step is taken; a **problem** says what is minimised (an
:class:`~wgflow.objective.Objective`, a JKO problem on a grid, a ResNet objective).
A flow is an :class:`AbstractFlow`, an ``eqx.Module`` with

- ``init(problem, x0) -> state``;
- ``step(problem, state, dt) -> (state⁺, StepInfo)``: one step of mean-field size ``dt``;
  :class:`StepInfo` holds F at ``state``, the flow's own verdict (an inner solver that
  missed its tolerance) and per-step stats;
- ``value(problem, state) -> F(state)`` and ``measure(problem, state) -> Measure | None``.

:func:`solve` runs any of them for a schedule of steps, compiled in blocks of
``lax.scan``, under a :class:`Monitor` that turns every failure into a result code
(:class:`RESULTS`, as diffrax's) with a message that says what to change. A
:class:`Solution` records times, F per step, stats per step, what :class:`SaveAt` kept,
the result code and message per run, the final state, and the :class:`LoopState` from
which a later call continues bit-identically (checkpointed runs). ``batched=True`` runs a
leading axis of initial states (sweeps over seeds, widths, step sizes) as one vmapped
program, with a code per run.

The loop is driven from the host between blocks (saving, callbacks, progress, time
limits); each block is a pure compiled function of explicit state.
"""

from __future__ import annotations

import abc
import math
import time as _time
import warnings
from typing import Any, Callable, ClassVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from wgflow.errors import InputError, as_int, require
from wgflow.flows.schedules import Schedule, step_sizes
from wgflow.runtime import CompileTimer
from wgflow.sharding import gathered, to_host

# --------------------------------------------------------------------------- result codes


class RESULTS(eqx.Enumeration):
    """Result codes of a run (an ``eqx.Enumeration``, like diffrax's ``RESULTS``)."""

    successful = "the run completed"
    diverged = "the objective or the state became non-finite, or the objective grew beyond the monitor's limit"
    unstable = "the objective of a descent flow rose above its running minimum beyond the monitor's tolerance"
    inner_not_converged = "an inner solver missed its tolerance"
    stopped = "the run was stopped by its callback or its time limit"


#: the names of the codes, indexed by their integer value
RESULT_NAMES: tuple[str, ...] = tuple(sorted(RESULTS._name_to_item, key=lambda n: int(RESULTS._name_to_item[n]._value)))
SUCCESSFUL, DIVERGED, UNSTABLE, INNER, STOPPED = (RESULT_NAMES.index(n) for n in ("successful", "diverged", "unstable", "inner_not_converged", "stopped"))


def result_name(code) -> str:
    """The name of an integer result code (``"successful"``, ``"diverged"``, …)."""
    return RESULT_NAMES[int(code)]


def results_of(codes) -> Any:
    """A :class:`RESULTS` item holding the integer ``codes`` (any shape)."""
    return eqx.tree_at(lambda item: item._value, RESULTS.successful, jnp.asarray(codes, jnp.int32))


def _code_of(result) -> Array:
    return jnp.asarray(result._value if hasattr(result, "_value") else result, jnp.int32)


# --------------------------------------------------------------------------- flows


class StepInfo(eqx.Module):
    """What one step reports: F at the state it started from, the flow's own verdict
    (``RESULTS.successful`` or ``RESULTS.inner_not_converged``) and per-step scalar stats.

    Gradient flows report ``speed`` = ‖v‖_{L²(|μ|)} (dF/dt = −speed²); the monitor uses it
    to suggest a stable step size.
    """

    objective: Array
    result: Any = eqx.field(default_factory=lambda: RESULTS.successful)
    stats: dict = eqx.field(default_factory=dict)


class AbstractFlow(eqx.Module):
    """A flow of measures over neurons, run by :func:`solve` (see the module docstring).

    ``monotone``: F cannot rise along a stable step (explicit and implicit gradient descent,
    the ResNet flow), so the monitor checks it. Flows with noise or entropy (Langevin, the
    entropic JKO) set it False.
    """

    name: ClassVar[str] = "flow"
    monotone: ClassVar[bool] = True

    def init(self, problem: Any, x0: Any) -> Any:
        """The flow's state at the start (jit- and vmap-able; inputs are validated before)."""
        return x0

    @abc.abstractmethod
    def step(self, problem: Any, state: Any, dt: Array) -> tuple[Any, StepInfo]:
        """One step of size ``dt`` (mean-field time): (state⁺, StepInfo with F(state))."""

    @abc.abstractmethod
    def value(self, problem: Any, state: Any) -> Array:
        """F(state)."""

    def measure(self, problem: Any, state: Any) -> Any:
        """The state as a :class:`~wgflow.measure.Measure`, or None when the flow has none."""
        return None

    def inner_failure(self, problem: Any, stats: dict) -> str:
        """How an inner failure reads in a message, from the failing step's stats (floats)."""
        shown = ", ".join(f"{k} = {v:.3g}" for k, v in stats.items())
        return f"the inner solver missed its tolerance ({shown})"


# --------------------------------------------------------------------------- saving


class SaveAt(eqx.Module):
    """Which states to keep, and what of them.

    ``times``: mean-field times (the first step reaching each); ``steps``: step indices;
    ``every``: every k-th step; ``log``: about this many steps log-spaced in 1..K, so that the
    early dynamics are resolved; the start and the end always. ``fn(t, state, problem)``
    says what to keep of a state (moments, λ₀, …; any host function); by default the
    flow's :class:`~wgflow.measure.Measure` where it has one, else the state. In a batched
    solve ``fn`` is called once per run. Times refer to the schedule's clock.
    """

    times: tuple | None = eqx.field(static=True, default=None)
    steps: tuple | None = eqx.field(static=True, default=None)
    every: int | None = eqx.field(static=True, default=None)
    log: int | None = eqx.field(static=True, default=None)
    fn: Callable | None = eqx.field(static=True, default=None)

    def __init__(self, times=None, steps=None, every=None, log=None, fn=None):
        self.times = None if times is None else tuple(float(s) for s in np.atleast_1d(np.asarray(times, np.float64)))
        self.steps = None if steps is None else tuple(int(s) for s in np.atleast_1d(steps))
        self.every = every
        self.log = log
        self.fn = fn
        require(fn is None or callable(fn), "save.fn", "must be a function fn(t, state, problem)", value=fn)

    def resolve(self, t: np.ndarray) -> np.ndarray:
        """Step indices to save, given the times ``t`` (length K + 1) of the schedule."""
        K = len(t) - 1
        chosen = {0, K}
        for name in ("every", "log"):
            v = getattr(self, name)
            require(
                v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0), f"save.{name}", "must be a positive integer", value=v
            )
        if self.every is not None:
            chosen.update(range(0, K + 1, int(self.every)))
        if self.log is not None:
            chosen.update(np.unique(np.geomspace(1, max(K, 1), int(self.log)).round().astype(int)).tolist())
        for s in self.steps or ():
            require(0 <= s <= K, "save.steps", f"must lie in 0..{K}", value=s)
            chosen.add(s)
        for s in self.times or ():
            require(np.isfinite(s) and s >= 0, "save.times", "must be finite and >= 0", value=s)
            # the first step whose time reaches s (within rounding); past the end: the end.
            chosen.add(int(min(np.searchsorted(t, s - 1e-12 * max(1.0, abs(s))), K)))
        return np.array(sorted(chosen), dtype=np.int64)


# --------------------------------------------------------------------------- the monitor

POLICIES = ("stop", "warn", "backtrack")


class Monitor(eqx.Module):
    """What counts as a failure, and what happens then.

    - ``diverged``: F or the next state is non-finite, or F > ``max_growth`` · |F(0)| (if F(0) = 0,
      the first nonzero F takes its place).
    - ``unstable`` (flows with ``monotone``, unless ``check_rise=False``): F > F_min +
      ``rtol``·|F_min| + ``atol`` with F_min the running minimum. ``rtol=None``: 10⁻³;
      ``atol=None``: 100·eps·|F(0)|. Why so loose: F's rounding is some 10⁻¹⁵ of it (10⁻⁶ in
      float32), but a ReLU network's F is not smooth, and where a neuron's activation
      boundary sits on a data point explicit GD steps back and forth across it, so that F
      rises by about (step) × (the jump of the gradient) — measured up to 3·10⁻⁴ of F
      (n = 6, ``signed_square``, η = 0.01), halving with η — and at the edge of stability
      it oscillates by 10⁻⁷–10⁻⁶. Neither is an instability: the run stays within O(η) of
      the flow. A step-size instability grows geometrically and passes 10⁻³ within a few
      steps. Every run records its largest relative rise (``LoopState.max_rise``), flagged
      or not; set ``rtol`` lower to flag smaller rises.
    - ``inner_not_converged``: the flow's step said so.

    ``policy``:

    - ``"stop"`` (default): the run ends at the state where the failure was seen; everything
      computed before is kept;
    - ``"warn"``: rises and inner failures are recorded (the run's code is the first one, its
      message counts them, a ``RuntimeWarning`` is issued) and the run goes on; divergence
      still stops it;
    - ``"backtrack"``: the offending step is taken again as 2, 4, 8, … substeps of the same total
      size — from the last accepted state after a rise or a non-finite F, from the same state
      after an inner failure or a non-finite next state — so that F never rises beyond the
      tolerance while every step keeps the schedule's size on the clock. The substep count
      stays raised and is halved again after ``recover_after`` accepted substeps. After
      ``max_halvings`` halvings in a row the run stops with the failure's code. A rise that
      only halves when the substep halves (its rate per unit step keeps ≥ 3/4 of itself) is
      the first-order rise of a kink of F, not an instability — a smooth instability's rate
      s²(L·dt/2 − 1) falls below half of itself — and is accepted and counted (``kinks``).
    """

    policy: str = eqx.field(static=True, default="stop")
    rtol: float | None = eqx.field(static=True, default=None)
    atol: float | None = eqx.field(static=True, default=None)
    max_growth: float = eqx.field(static=True, default=1e6)
    check_rise: bool | None = eqx.field(static=True, default=None)
    max_halvings: int = eqx.field(static=True, default=12)
    recover_after: int = eqx.field(static=True, default=256)

    def __check_init__(self):
        require(self.policy in POLICIES, "monitor.policy", f"unknown policy {self.policy!r}", f"use one of {list(POLICIES)}")
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
            require(ok, f"monitor.{name}", "must be a finite number >= 0", value=v)
        ok = isinstance(self.max_growth, (int, float)) and math.isfinite(self.max_growth) and self.max_growth > 1
        require(ok, "monitor.max_growth", "must be a finite number > 1", value=self.max_growth)
        require(self.check_rise in (None, True, False), "monitor.check_rise", "must be None, True or False", value=self.check_rise)
        ok = isinstance(self.max_halvings, int) and not isinstance(self.max_halvings, bool) and 0 <= self.max_halvings <= 30
        require(ok, "monitor.max_halvings", "must be an integer in 0..30", value=self.max_halvings)
        ok = isinstance(self.recover_after, int) and not isinstance(self.recover_after, bool) and self.recover_after > 0
        require(ok, "monitor.recover_after", "must be a positive integer", value=self.recover_after)

    def resolved_rtol(self, dtype) -> float:
        if self.rtol is not None:
            return float(self.rtol)
        return 1e-3

    def tolerance(self, F_min: Array, F0: Array) -> Array:
        """How far above the running minimum F may rise before a step counts as unstable."""
        atol = 100 * jnp.finfo(F_min.dtype).eps * jnp.abs(F0) if self.atol is None else jnp.asarray(self.atol, F_min.dtype)
        return self.resolved_rtol(F_min.dtype) * jnp.abs(F_min) + atol

    def checks_rise(self, flow: AbstractFlow) -> bool:
        return flow.monotone if self.check_rise is None else bool(self.check_rise)

    def verdict(self, flow: AbstractFlow, F: Array, F_min: Array, F0: Array) -> tuple[Array, Array]:
        """(F is bad — non-finite or grown beyond the limit —, F rose beyond the tolerance)."""
        limit = jnp.where(F0 == 0, jnp.inf, self.max_growth * jnp.abs(F0))  # F(0) = 0: growth counts from the first nonzero F
        bad = ~jnp.isfinite(F) | (F > limit)
        rise = (F > F_min + self.tolerance(F_min, F0)) & ~bad if self.checks_rise(flow) else jnp.zeros((), bool)
        return bad, rise


# --------------------------------------------------------------------------- loop state


class LoopState(eqx.Module):
    """Everything the loop carries from step to step (per run; a leading axis when batched).

    ``state`` is at step ``step`` (counted from the first call) and substep ``sub`` of
    ``2**level``; ``prev`` (backtracking only) is the last accepted state, at
    (``prev_step``, ``prev_sub``); ``good`` counts accepted substeps since the last halving.
    ``time``: the mean-field time of ``state`` (kept in float64 by the host).
    ``F0``: F at the very start (the growth limit); ``F_min``: the running minimum.
    ``result``: the code of the first failure (``successful`` while none); ``active``: whether
    the run goes on; ``events``: rises and inner failures flagged under ``warn``; ``retakes``:
    attempts rejected by backtracking; ``max_level``: the most halvings in a row; ``max_rise``:
    the largest rise of F above its running minimum along the kept steps, relative to it
    (kept by the host). Backtracking only: ``dt_last``, the size of the last accepted substep;
    ``rise_rate``, the rise per unit step of the last rejected rise, and ``rise_age`` the substeps
    accepted since (it is compared with the rise of the state one retaken substep later);
    ``kinks``, rises accepted because they shrank only in proportion to the step (a kink of F).
    ``event_*``: the first failure (step, F, running minimum, attempted step size, the stats of
    the attempt).
    """

    state: Any
    prev: Any
    step: Array
    sub: Array
    level: Array
    prev_step: Array
    prev_sub: Array
    good: Array
    time: Any
    F0: Array
    F_min: Array
    result: Array
    active: Array
    events: Array
    retakes: Array
    max_level: Array
    max_rise: Any
    dt_last: Array
    rise_rate: Array
    rise_age: Array
    kinks: Array
    event_step: Array
    event_F: Array
    event_F_min: Array
    event_dt: Array
    event_stats: dict


def _where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def float_dtype(tree):
    """The dtype of a state's floating-point leaves (step sizes are cast to it), else the default float."""
    for x in jax.tree_util.tree_leaves(tree):
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact):
            return jnp.asarray(x).dtype
    return jnp.result_type(float)


def _step_shape(flow, problem, state) -> StepInfo:
    """The StepInfo structure of one step, without computing it."""
    return jax.eval_shape(flow.step, problem, state, jnp.asarray(1.0, float_dtype(state)))[1]


def _stat_dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _initial_loop(flow: AbstractFlow, problem, state, F0, monitor: Monitor | None) -> LoopState:
    """The loop state at the start of one run (vmapped for a batch)."""
    info = _step_shape(flow, problem, state)
    fdt = info.objective.dtype
    F0 = jnp.asarray(F0, fdt)
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    nan = jnp.asarray(jnp.nan, fdt)
    backtrack = monitor is not None and monitor.policy == "backtrack"
    return LoopState(
        state=state,
        prev=state if backtrack else None,
        step=i32(0),
        sub=i32(0),
        level=i32(0),
        prev_step=i32(0),
        prev_sub=i32(0),
        good=i32(0),
        time=jnp.asarray(0.0, fdt),
        F0=F0,
        F_min=F0,
        result=i32(SUCCESSFUL),
        active=jnp.asarray(True),
        events=i32(0),
        retakes=i32(0),
        max_level=i32(0),
        max_rise=jnp.zeros((), fdt),
        dt_last=nan,
        rise_rate=nan,
        rise_age=i32(0),
        kinks=i32(0),
        event_step=i32(-1),
        event_F=nan,
        event_F_min=nan,
        event_dt=nan,
        event_stats={k: jnp.full(v.shape, jnp.nan, _stat_dtype()) for k, v in info.stats.items()},
    )


# --------------------------------------------------------------------------- one attempt, one block
#
# An attempt is one step (or substep) of every run that is behind its target. It is split so
# that the common case costs little: ``_try`` takes the step and the monitor's verdict;
# ``_accept`` is the bookkeeping of a step without a failure; ``_decide`` applies the policy
# and runs only when some run of the batch has a failure.


class _Tried(eqx.Module):
    new: Any
    F: Array
    stats: dict
    dt: Array
    n_sub: Array
    event: Array
    code: Array
    F_bad: Array
    rise: Array
    diverged: Array
    inner: Array


def _try(flow: AbstractFlow, monitor: Monitor | None, problem, loop: LoopState, etas: Array, base: Array) -> _Tried:
    eta = etas[loop.step - base]
    n_sub = jnp.left_shift(jnp.ones((), jnp.int32), loop.level)
    dt = eta / n_sub.astype(eta.dtype)
    new, info = flow.step(problem, loop.state, dt)
    F = info.objective
    stats = {k: jnp.asarray(v, _stat_dtype()) for k, v in info.stats.items()}
    no = jnp.zeros((), bool)
    if monitor is None:
        return _Tried(new, F, stats, dt, n_sub, no, jnp.zeros((), jnp.int32), no, no, no, no)
    F_bad, rise = monitor.verdict(flow, F, loop.F_min, loop.F0)
    diverged = F_bad | ~_all_finite(new)
    inner = _code_of(info.result) != SUCCESSFUL
    event = diverged | rise | inner
    code = jnp.where(diverged, DIVERGED, jnp.where(rise, UNSTABLE, INNER)).astype(jnp.int32)
    return _Tried(new, F, stats, dt, n_sub, event, code, F_bad, rise, diverged, inner)


def _accept(monitor: Monitor | None, loop: LoopState, t: _Tried, go) -> LoopState:
    """The step (substep) ``t`` taken, where ``go``; the growth limit counts from the first nonzero F."""
    if monitor is None:
        return eqx.tree_at(lambda s: (s.state, s.step), loop, (_where(go, t.new, loop.state), loop.step + go.astype(jnp.int32)))
    if monitor.policy != "backtrack":  # one substep per step: only the state, the step and the references move
        moved = (t.new, loop.step + 1, jnp.where(loop.F0 == 0, jnp.abs(t.F), loop.F0), jnp.minimum(loop.F_min, t.F))
        kept = (loop.state, loop.step, loop.F0, loop.F_min)
        return eqx.tree_at(lambda s: (s.state, s.step, s.F0, s.F_min), loop, _where(go, moved, kept))
    sub = loop.sub + 1
    done = sub >= t.n_sub
    good, level = loop.good + 1, loop.level
    # after recover_after good substeps, try twice as long a substep again
    recover = (level > 0) & (good >= monitor.recover_after) & done
    level, good = jnp.where(recover, level - 1, level), jnp.where(recover, 0, good)
    new_loop = eqx.tree_at(
        lambda s: (s.state, s.prev, s.step, s.sub, s.level, s.prev_step, s.prev_sub, s.good, s.F0, s.F_min, s.dt_last, s.rise_age),
        loop,
        (
            t.new,
            loop.state,
            jnp.where(done, loop.step + 1, loop.step),
            jnp.where(done, 0, sub),
            level,
            loop.step,
            loop.sub,
            good,
            jnp.where(loop.F0 == 0, jnp.abs(t.F), loop.F0),
            jnp.minimum(loop.F_min, t.F),
            t.dt.astype(loop.dt_last.dtype),
            loop.rise_age + 1,
        ),
    )
    return _where(go, new_loop, loop)


def _record_event(loop: LoopState, flag, code, F, dt, stats) -> LoopState:
    """Describe the failure in ``loop`` if ``flag`` and none is described yet."""
    first = flag & (loop.result == SUCCESSFUL)

    def upd(new, old):
        return jnp.where(first, jnp.asarray(new, old.dtype), old)

    return eqx.tree_at(
        lambda s: (s.result, s.event_step, s.event_F, s.event_F_min, s.event_dt, s.event_stats),
        loop,
        (
            upd(code, loop.result),
            upd(loop.step, loop.event_step),
            upd(F, loop.event_F),
            upd(loop.F_min, loop.event_F_min),
            upd(dt, loop.event_dt),
            {k: upd(stats[k], v) for k, v in loop.event_stats.items()},
        ),
    )


def _stopped(loop: LoopState, flag, code, F, dt, stats) -> LoopState:
    loop = _record_event(loop, flag, code, F, dt, stats)
    return eqx.tree_at(lambda s: s.active, loop, loop.active & ~flag)


def _back(loop: LoopState, flag, revert) -> LoopState:
    """Backtracking, where ``flag``: halve the substep; if ``revert``, from the last accepted state."""
    level = loop.level + 1
    moved = eqx.tree_at(
        lambda s: (s.state, s.step, s.sub, s.level, s.good, s.retakes, s.max_level),
        loop,
        (
            _where(revert, loop.prev, loop.state),
            jnp.where(revert, loop.prev_step, loop.step),
            2 * jnp.where(revert, loop.prev_sub, loop.sub),
            level,
            jnp.zeros((), jnp.int32),
            loop.retakes + 1,
            jnp.maximum(loop.max_level, level),
        ),
    )
    return _where(flag, moved, loop)


def _decide(monitor: Monitor, loop: LoopState, t: _Tried, go) -> tuple[LoopState, Array]:
    """The policy, for a run (of a batch) where some run failed. Returns (loop, whether this
    attempt's record is kept)."""
    event = go & t.event
    if monitor.policy == "stop":
        accepted = _accept(monitor, loop, t, go & ~event)
        return _stopped(accepted, event, t.code, t.F, t.dt, t.stats), go
    if monitor.policy == "warn":
        fatal = event & t.diverged
        flagged = event & ~t.diverged
        loop = _record_event(loop, flagged, t.code, t.F, t.dt, t.stats)
        loop = eqx.tree_at(lambda s: s.events, loop, loop.events + flagged.astype(jnp.int32))
        loop = _accept(monitor, loop, t, go & ~fatal)
        return _stopped(loop, fatal, t.code, t.F, t.dt, t.stats), go
    # A rise that halved with the substep that led to it is the first-order rise of a kink of F
    # (a ReLU boundary on a data point), not an instability: a smooth instability's rise per unit
    # step, s²(L·dt/2 − 1), falls below half of itself when dt halves. Such a rise is accepted.
    rate = (t.F - loop.F_min) / loop.dt_last
    only_rise = t.rise & ~t.diverged & ~t.inner
    pending = jnp.where(loop.rise_age == 1, loop.rise_rate, jnp.nan)  # the state one retaken substep after a rise
    kink = go & only_rise & (rate >= 0.75 * pending)  # NaN (none pending) compares False
    event = event & ~kink
    can = loop.level < monitor.max_halvings
    retake = event & can
    give_up = event & ~can
    loop = eqx.tree_at(lambda s: s.kinks, loop, loop.kinks + kink.astype(jnp.int32))
    loop = _accept(monitor, loop, t, go & ~event)
    # an accepted kink is the new reference: F is compared with the minimum since the last kink
    # (else the accepted state, already above F_min + tol, could never be left)
    loop = eqx.tree_at(lambda s: s.F_min, loop, jnp.where(kink, t.F, loop.F_min))
    new_rate = jnp.where(only_rise, rate, jnp.nan).astype(loop.rise_rate.dtype)
    loop = _back(loop, retake, t.F_bad | t.rise)  # a bad F: go back to the last accepted state
    loop = eqx.tree_at(lambda s: (s.rise_rate, s.rise_age), loop, (jnp.where(retake, new_rate, loop.rise_rate), jnp.where(retake, 0, loop.rise_age)))
    loop = _stopped(loop, give_up, t.code, t.F, t.dt, t.stats)
    return loop, go & ~retake


def _block(flow, monitor, problem, loop: LoopState, etas: Array, base: Array, target: Array, length: int, batched: bool, per_run_etas: bool):
    """``length`` attempts; each moves the runs that are behind ``target`` (an attempt where no
    run is behind is skipped). Pure. A batch (leading axis on ``loop``) is vmapped inside."""

    def lift(fn, in_axes=0):
        return jax.vmap(fn, in_axes=in_axes) if batched else fn

    try_all = lift(lambda lp, e: _try(flow, monitor, problem, lp, e, base), (0, 0 if per_run_etas else None))
    accept_all = lift(lambda lp, t, go: _accept(monitor, lp, t, go))
    decide_all = lift(lambda lp, t, go: _decide(monitor, lp, t, go)) if monitor is not None else None

    def attempt(loop):
        go = loop.active & (loop.step < target)
        t = try_all(loop, etas)
        write = jnp.where(go & (loop.sub == 0), loop.step, -1)
        if monitor is None:
            new_loop, keep = accept_all(loop, t, go), go
        else:
            new_loop, keep = jax.lax.cond(jnp.any(go & t.event), decide_all, lambda lp, tt, g: (accept_all(lp, tt, g), g), loop, t, go)
        return new_loop, (jnp.where(keep, write, -1), t.F, t.stats, t.n_sub)

    w, F, stats, n_sub = jax.eval_shape(lambda lp: attempt(lp)[1], loop)
    # the records of the attempts not taken (every run at its target): write index −1, F NaN
    nan_like = lambda s: jnp.full((length, *s.shape), jnp.nan, s.dtype)  # noqa: E731
    empty = (jnp.full((length, *w.shape), -1, w.dtype), nan_like(F), {k: nan_like(v) for k, v in stats.items()}, jnp.zeros((length, *n_sub.shape), n_sub.dtype))

    # a while loop that ends once no run is behind: no attempt is skipped one by one (a block
    # whose target is a few steps ahead, as at the early save points, ends there)
    def behind(carry):
        i, loop, _ = carry
        return (i < length) & jnp.any(loop.active & (loop.step < target))

    def body(carry):
        i, loop, outs = carry
        loop, rec = attempt(loop)
        return i + 1, loop, jax.tree_util.tree_map(lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x, i, 0), outs, rec)

    _, loop, outs = jax.lax.while_loop(behind, body, (jnp.zeros((), jnp.int32), loop, empty))
    # records come out (length, R, …) for a batch: runs first, as the host reads them
    return loop, (jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1), outs) if batched else outs)


@eqx.filter_jit
def _run_block(flow, monitor, problem, loop, etas, base, target, length, batched, per_run_etas):
    return _block(flow, monitor, problem, loop, etas, base, target, length, batched, per_run_etas)


def _check_here(flow, monitor: Monitor | None, problem, loop: LoopState, at: Array, final: bool):
    """F at a state every active run has reached (a save point, or the end), checked like a step.

    Under backtracking a rise sends the run back (returned flag); otherwise, at the end,
    the failure is recorded. Returns (loop, F, sent back)."""
    F = flow.value(problem, loop.state)
    no = jnp.zeros((), bool)
    if monitor is None:
        return loop, F, no
    here = loop.active & (loop.step >= at)
    F_bad, rise = monitor.verdict(flow, F, loop.F_min, loop.F0)
    event = here & (F_bad | rise)
    code = jnp.where(F_bad, DIVERGED, UNSTABLE).astype(jnp.int32)
    nan_stats = {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in loop.event_stats.items()}
    nan_dt = jnp.full((), jnp.nan, F.dtype)
    if monitor.policy == "backtrack":
        back = event & (loop.level < monitor.max_halvings)
        loop = _back(loop, back, jnp.ones((), bool))
        loop = _stopped(loop, event & ~back, code, F, nan_dt, nan_stats)
        return loop, F, back
    if not final:
        return loop, F, no
    flagged = _record_event(loop, event, code, F, nan_dt, nan_stats)
    stays = ~(event & (F_bad | (monitor.policy == "stop")))
    flagged = eqx.tree_at(lambda s: (s.events, s.active), flagged, (flagged.events + event.astype(jnp.int32), flagged.active & stays))
    return flagged, F, no


@eqx.filter_jit
def _check(flow, monitor, problem, loop, at, final):
    return _check_here(flow, monitor, problem, loop, at, final)


@eqx.filter_jit
def _check_batch(flow, monitor, problem, loop, at, final):
    return jax.vmap(lambda lp: _check_here(flow, monitor, problem, lp, at, final))(loop)


_value = eqx.filter_jit(lambda flow, problem, state: flow.value(problem, state))
_value_batch = eqx.filter_jit(lambda flow, problem, states: jax.vmap(lambda s: flow.value(problem, s))(states))


# --------------------------------------------------------------------------- the record


class Solution(eqx.Module):
    """What :func:`solve` returns (batched: a leading run axis R on every per-run field).

    ``times`` (K+1): the mean-field time of each step's start state; ``objective`` (K+1): F
    there; ``stats``: per-step arrays (K), those of the step taken from each state (a run that
    stopped on a failed step also has that step's). A single run's arrays end at its stop
    (``stop_step``); a batch's hold NaN after each run's stop. ``saved``: what
    :class:`SaveAt` kept at ``save_steps`` / ``save_times`` (leading axis S, batched (R, S, …);
    a run that stopped repeats its last state). ``final``: the last state kept. ``result``:
    the code (:class:`RESULTS`, one per run); ``message``: what happened and, on a failure,
    what to change. ``loop``: the :class:`LoopState` to continue from
    (``solve(flow, problem, solution.loop, ...)``); ``paused``: the call ended early at its
    ``pause`` hook (the runs' codes unchanged, ``stop_step`` where they stand). ``seconds``: the call's wall time,
    ``compile_seconds`` of which compiling.
    """

    times: np.ndarray
    objective: np.ndarray
    stats: dict
    save_steps: np.ndarray
    save_times: np.ndarray
    saved: Any
    final: Any
    result: Any
    stop_step: Any
    loop: LoopState
    message: Any = eqx.field(static=True)
    batched: bool = eqx.field(static=True, default=False)
    paused: bool = eqx.field(static=True, default=False)
    seconds: float = eqx.field(static=True, default=0.0)
    compile_seconds: float = eqx.field(static=True, default=0.0)

    @property
    def codes(self) -> np.ndarray:
        """The result codes as integers (a scalar array, or (R,))."""
        return np.asarray(self.result._value)

    @property
    def status(self) -> Any:
        """The result's name (``"successful"``, ``"diverged"``, …); a list when batched."""
        c = self.codes
        return [result_name(v) for v in c] if c.ndim else result_name(c)

    @property
    def ok(self) -> Any:
        """Whether the run (each run) completed successfully."""
        c = self.codes == SUCCESSFUL
        return c if c.ndim else bool(c)

    @property
    def num_steps(self) -> int:
        """The number of steps recorded (a single run that stopped early has fewer than asked)."""
        return self.times.shape[-1] - 1

    @property
    def num_runs(self) -> int:
        return int(self.objective.shape[0]) if self.batched else 1

    @property
    def final_objective(self) -> Any:
        """F of the final state (per run when batched)."""
        if not self.batched:
            return float(self.objective[-1])
        return self.objective[np.arange(self.num_runs), np.asarray(self.stop_step)]

    def saved_at(self, i: int) -> Any:
        """The i-th saved value of a single run."""
        require(not self.batched, "solution", "is batched; use solution.run(r).saved_at(i)")
        return jax.tree_util.tree_map(lambda a: a[i], self.saved)

    def run(self, r: int) -> "Solution":
        """Run ``r`` of a batched solution, as the Solution of a single solve."""
        require(self.batched, "solution", "is not batched")
        s, K = int(np.asarray(self.stop_step)[r]), self.objective.shape[1] - 1
        keep = s + 1 if s < K else K

        # the saves of this run: those taken before it stopped (later ones repeat its last state)
        st = self.save_times[r]
        fresh = np.concatenate([[True], st[1:] > st[:-1]])
        steps = np.searchsorted(self.times[r], st[fresh])

        def pick(a):
            return a[r]

        return Solution(
            times=self.times[r, : s + 1],
            objective=self.objective[r, : s + 1],
            stats={k: v[r, :keep] for k, v in self.stats.items()},
            save_steps=steps,
            save_times=st[fresh],
            saved=jax.tree_util.tree_map(lambda a: a[r][fresh], self.saved),
            final=jax.tree_util.tree_map(pick, self.final),
            result=results_of(self.codes[r]),
            stop_step=s,
            loop=jax.tree_util.tree_map(pick, self.loop),
            message=self.message[r],
            batched=False,
            seconds=self.seconds,
            compile_seconds=self.compile_seconds,
        )


# --------------------------------------------------------------------------- messages


def _message(name: str, flow, problem, loop: dict, r: int | None, K_global: int, monitor: Monitor | None, stop_reason: str | None, paused: bool = False) -> str:
    """The message of run ``r`` (None: a single run) from its loop state (host arrays)."""

    def g(key):
        a = np.asarray(loop[key])
        return a[r] if r is not None else a

    code, step, t = int(g("result")), int(g("step")), float(g("time"))
    retakes, max_level, kinks = int(g("retakes")), int(g("max_level")), int(g("kinks"))
    back = (
        (f"; backtracking retook {retakes} step(s), with up to {2**max_level} substeps per step, so that F never rose beyond the tolerance") if retakes else ""
    )
    if kinks:
        back += (
            f", except {kinks} rise(s) that halved with the substep: kinks of F (a neuron's activation boundary on a data point), not instabilities, accepted"
        )
    if code == SUCCESSFUL and paused and bool(g("active")):
        return f"{name}: paused at step {step} of {K_global} (t = {t:.6g}); solution.loop continues it{back}"
    if code == SUCCESSFUL:
        return f"{name}: {K_global} steps to t = {t:.6g}{back}"
    if code == STOPPED:
        return f"{name} stopped at step {step} (t = {t:.6g}): {stop_reason or 'stopped'}{back}"

    def context(key):  # the step before the failure (from the records of the call that saw it), if known
        a = loop.get(key)
        return float(np.asarray(a)[r or 0]) if a is not None else float("nan")

    k = int(g("event_step"))
    F, F_min, F_last = float(g("event_F")), float(g("event_F_min")), context("event_F_last")
    dt, dt_last, speed = float(g("event_dt")), context("event_dt_last"), context("event_speed_last")
    where = f"at step {k}" if k >= 0 else "at the end"
    went_on = monitor is not None and monitor.policy == "warn" and code in (UNSTABLE, INNER)
    tail = (
        f"; the run went on (monitor policy 'warn'): {int(g('events'))} step(s) flagged in all"
        if went_on
        else f"; the run is kept up to step {step} (t = {t:.6g})"
    )
    if code == DIVERGED:
        F0 = float(g("F0"))
        if not np.isfinite(F):
            what = "the objective became " + ("NaN" if np.isnan(F) else "infinite")
        elif monitor is not None and F > monitor.max_growth * max(abs(F0), 1e-300):
            what = f"the objective became {F:.3g} (> {monitor.max_growth:g} × F(0) = {F0:.3g})"
        else:
            what = f"the objective was {F:.3g} but the next state was not finite"
        size = dt_last if not np.isfinite(F) or F > (monitor.max_growth if monitor else 1e6) * max(abs(F0), 1e-300) else dt
        return f"{name} diverged {where}: {what}. Reduce the step size (it was {size:.3g} there) or use a decaying schedule{tail}{back}"
    if code == UNSTABLE:
        rise = F - F_min
        rel = rise / abs(F_min) if F_min != 0 else float("inf")
        rtol = monitor.resolved_rtol(loop["F0"].dtype) if monitor is not None else float("nan")
        msg = f"{name} is unstable {where}: F rose to {F:.6g}, {rise:.3g} above its running minimum {F_min:.6g} ({rel:.3g} relative; the tolerance is {rtol:g})"
        hint = f"; the step before was {dt_last:.3g}: use a smaller one" if np.isfinite(dt_last) else ""
        if np.isfinite(F_last) and np.isfinite(speed) and speed > 0 and np.isfinite(dt_last) and dt_last > 0:
            L = 2 * (F - F_last + dt_last * speed**2) / (dt_last**2 * speed**2)
            if L > 0:
                hint = (
                    f"; along the step before (size {dt_last:.3g}) the curvature is about {L:.3g}, so steps above"
                    f" 2/L ≈ {2 / L:.3g} are unstable there: use a step size ≤ {1 / L:.3g}"
                )
        if monitor is not None and monitor.policy == "backtrack" and max_level >= monitor.max_halvings:
            hint = (
                f"; {max_level} halvings of the step did not remove the rise (it shrinks with the step, as at a kink: F is"
                " not smooth there, e.g. a neuron's activation boundary on a data point), so raise monitor.rtol"
                " or take a smaller step"
            )
            return msg + hint + tail + back
        return (
            msg + hint + ", or the monitor policy 'backtrack' (which also tells a kink of F, whose rise halves with the"
            " step, from an instability)" + tail + back
        )
    stats = {key[len("event_stats/") :]: float(g(key)) for key in loop if key.startswith("event_stats/")}
    return f"{name}: {where}, {flow.inner_failure(problem, stats)}{tail}{back}"


def _host_loop(loop: LoopState) -> dict:
    keys = ("step", "time", "result", "retakes", "max_level", "max_rise", "kinks", "event_step", "event_F", "event_F_min", "event_dt", "events", "F0", "active")
    out = {k: to_host(getattr(loop, k)) for k in keys}
    out.update({f"event_stats/{k}": to_host(v) for k, v in loop.event_stats.items()})
    return out


# --------------------------------------------------------------------------- solve


def _etas(schedule, num_steps: int, batched: bool, R: int | None) -> np.ndarray:
    """The steps: (K,), or (R, K) for a batch with a step per run."""
    if not callable(schedule) and np.ndim(schedule) >= 1:
        arr = np.asarray(schedule, np.float64)
        if batched and arr.ndim == 1 and arr.shape[0] == R and R != num_steps:
            arr = np.repeat(arr[:, None], num_steps, axis=1)
        if arr.ndim == 2:
            require(
                batched and arr.shape == (R, num_steps),
                "step_size",
                f"a step per run must be (R,) or (R, K) = ({R}, {num_steps}) in a batched solve, got {arr.shape}",
            )
        else:
            require(arr.shape == (num_steps,), "step_size", f"an array of steps must have length num_steps = {num_steps}, got {arr.shape}")
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            idx = np.argwhere(bad)[0].tolist()
            raise InputError("step_size", f"step {idx} is {arr[tuple(idx)]!r}; every step must be finite and > 0", "use positive step sizes")
        return arr
    return step_sizes(schedule, num_steps)


def solve(
    flow: AbstractFlow,
    problem: Any,
    x0: Any,
    schedule: Schedule | np.ndarray,
    num_steps: int,
    *,
    saveat: SaveAt | None = None,
    monitor: Monitor | None = Monitor(),
    batched: bool = False,
    callback: Callable[[int, Any, Any], Any] | None = None,
    max_seconds: float | None = None,
    pause: Callable[[], bool] | None = None,
    block_size: int = 256,
    name: str | None = None,
) -> Solution:
    """Run ``flow`` on ``problem`` from ``x0`` for ``num_steps`` steps of ``schedule``.

    ``x0``: the initial state (what ``flow.init`` takes); with ``batched``, a batch of them
    (a leading axis R on every array); or a :class:`LoopState` to continue from
    (``solution.loop``: the next steps follow bit-identically). ``schedule``: a step size, a
    callable ``k ↦ η_k`` (``k`` counted from this call), an array (K,), or with ``batched`` a
    step per run, (R,) or (R, K). ``monitor``: see :class:`Monitor`; ``None`` turns every
    check off (the bare loop, for benchmarks). ``callback(step, time, objective)`` is called
    on the host after each block (per run when batched); returning True stops the runs
    with the code ``stopped``, as ``max_seconds`` of wall time does. ``pause()`` is asked on
    the host after each block; when it returns True the call ends there without changing any
    result code (``solution.paused``; ``solution.loop`` continues the runs bit-identically:
    how a signal checkpoints a run mid-way). ``block_size``: steps per compiled block;
    ``name``: the flow's name in messages.
    """
    require(isinstance(flow, AbstractFlow), "flow", f"must be a wgflow flow (an AbstractFlow), got {type(flow).__name__}")
    name = name or flow.name
    num_steps = as_int(num_steps, "num_steps")
    block_size = as_int(block_size, "block_size")
    require(monitor is None or isinstance(monitor, Monitor), "monitor", "must be a wgflow.flows.Monitor or None", value=monitor)
    ok = max_seconds is None or (isinstance(max_seconds, (int, float)) and max_seconds > 0)
    require(ok, "max_seconds", "must be a number > 0", value=max_seconds)
    saveat = SaveAt() if saveat is None else saveat
    require(isinstance(saveat, SaveAt), "saveat", "must be a wgflow.flows.SaveAt", value=saveat)
    K = int(num_steps)

    with CompileTimer(this_thread=True) as timer:
        start = _time.perf_counter()
        loop, R = _start(flow, problem, x0, monitor, batched, name)
        etas = _etas(schedule, K, batched, R)
        per_run = etas.ndim == 2
        dtype = float_dtype(loop.state)
        t_local = np.concatenate([np.zeros(etas.shape[:-1] + (1,)), np.cumsum(etas, axis=-1)], axis=-1)
        save_steps = saveat.resolve(t_local[0] if per_run else t_local)
        k_start = to_host(loop.step)
        active0 = to_host(loop.active)
        F_min_start = to_host(loop.F_min, np.float64)
        k0 = int(np.max(np.where(active0, k_start, -1))) if batched else int(k_start)
        k0 = max(k0, 0)
        require(bool(np.all((k_start == k0) | ~active0)), "x0", "every active run of a continued batch must be at the same step")
        t0 = to_host(loop.time, np.float64)
        times = (t0[:, None] + (t_local if per_run else t_local[None])) if batched else float(t0) + t_local
        lead: tuple[int, ...] = (cast(int, R),) if batched else ()  # R is an int whenever batched
        one_state = jax.tree_util.tree_map(lambda a: a[0], loop.state) if batched else loop.state
        info = _step_shape(flow, problem, one_state)
        objective = np.full(lead + (K + 1,), np.nan)
        stats = {k: np.full(lead + (K,), np.nan) for k in info.stats}
        substeps = np.ones(lead + (K,))
        B = int(min(block_size, K))
        W = B + 2  # the window of steps a block sees: a backtracking run may have gone back one step
        targets = sorted(set(range(B, K, B)) | set(save_steps.tolist()) | {K})
        targets = [k for k in targets if k > 0]
        saver = _saver(flow, problem, saveat, batched, R, one_state)

        def write(outs):
            w, F, st, ns = outs
            w = to_host(w) - k0
            F, ns = to_host(F), to_host(ns)
            st = {k: to_host(v) for k, v in st.items()}
            rows = np.broadcast_to(np.arange(R)[:, None], w.shape) if batched else np.zeros(w.shape, int)
            valid = w >= 0
            r_idx, c_idx = rows[valid], w[valid]
            # a backtracking run writes a step again after a retake: the last write wins
            _, last = np.unique((r_idx * (K + 1) + c_idx)[::-1], return_index=True)
            pick = np.arange(r_idx.size)[::-1][last]
            r_idx, c_idx = r_idx[pick], c_idx[pick]
            at = (r_idx, c_idx) if batched else (c_idx,)
            objective[at] = F[valid][pick]
            keep = c_idx < K
            at_k = (r_idx[keep], c_idx[keep]) if batched else (c_idx[keep],)
            for key, v in st.items():
                stats[key][at_k] = v[valid][pick][keep]
            substeps[at_k] = ns[valid][pick][keep]

        def run_to(loop, target):
            """Blocks until every active run is at (local) step ``target``."""
            while True:
                steps_now = to_host(loop.step) - k0
                behind = to_host(loop.active) & (steps_now < target)
                if not np.any(behind):
                    return loop
                lo = int(np.min(steps_now[behind])) if batched else int(steps_now)
                window = np.empty(etas.shape[:-1] + (W,))
                n = min(W, K - lo)
                window[..., :n] = etas[..., lo : lo + n]
                window[..., n:] = etas[..., K - 1 : K]
                args = (flow, monitor, problem, loop, jnp.asarray(window, dtype), jnp.asarray(k0 + lo, jnp.int32), jnp.asarray(k0 + target, jnp.int32), B)
                loop, outs = _run_block(*args, batched, per_run)
                write(outs)

        def settle(loop, target, final):
            """Check F where every run stands; a backtracking run sent back is run forward again.
            Returns (loop, F, whether some run was sent back)."""
            sent = False
            while True:
                at = jnp.asarray(k0 + target, jnp.int32)
                loop, F, back = (_check_batch if batched else _check)(flow, monitor, problem, loop, at, final)
                if not np.any(to_host(back)):
                    return loop, to_host(F), sent
                sent = True
                loop = run_to(loop, target)

        def where_now(loop):
            """Each run's local step (a stopped run stays at its last state)."""
            return np.clip(to_host(loop.step) - k0, 0, K)

        saved, saved_at, save_rows = [saver(loop, times, where_now(loop))], [0], [where_now(loop)]
        stop_reason, reached, paused = None, 0, False
        backtrack = monitor is not None and monitor.policy == "backtrack"
        for target in targets:
            loop = run_to(loop, target)
            reached = target
            if not np.any(to_host(loop.active)):
                break  # every run has stopped: nothing further to run or save
            if target in save_steps and target < K:
                if backtrack:
                    loop, _, _ = settle(loop, target, False)
                saved.append(saver(loop, times, where_now(loop)))
                saved_at.append(target)
                save_rows.append(where_now(loop))
            if target < K:
                if pause is not None and pause():
                    paused = True
                    break
                if callback is not None and callback(k0 + target, times[..., target], objective[..., target - 1]):
                    stop_reason = "the callback asked to stop"
                elif max_seconds is not None and _time.perf_counter() - start > max_seconds:
                    stop_reason = f"the time limit of {max_seconds:g} s passed"
                if stop_reason is not None:
                    break
        loop, F_here, sent_back = settle(loop, reached, True)
        now = where_now(loop)
        if sent_back or not np.array_equal(now, save_rows[-1]):  # the end, unless the last save holds it already
            saved.append(saver(loop, times, now))
            saved_at.append(reached if batched else int(now))
            save_rows.append(now)
        save_steps = np.asarray(saved_at, np.int64)
        save_local = np.stack(save_rows, axis=-1)  # the local step of each saved state: (S,) or (R, S)
        if callback is not None and reached == K:
            callback(k0 + K, times[..., K], F_here)
        if stop_reason is not None:
            stopped = to_host(loop.active) & (to_host(loop.result) == SUCCESSFUL)
            loop = eqx.tree_at(
                lambda s: (s.result, s.active),
                loop,
                (jnp.where(stopped, STOPPED, loop.result).astype(jnp.int32), jnp.asarray(to_host(loop.active) & ~stopped)),
            )

        stop_step = np.clip(to_host(loop.step) - k0, 0, K)
        if batched:
            rows = np.arange(cast(int, R))
            fill = np.isnan(objective[rows, stop_step])
            objective[rows[fill], stop_step[fill]] = F_here[fill]
            for r in range(cast(int, R)):
                s = int(stop_step[r])
                objective[r, s + 1 :] = np.nan
                done = to_host(loop.result)[r] == SUCCESSFUL and s == K
                for v in (*stats.values(), substeps):
                    v[r, s + (0 if done else 1) :] = np.nan
            t_end = times[rows, stop_step]
        else:
            s = int(stop_step)
            if np.isnan(objective[s]):
                objective[s] = float(F_here)
            t_end = times[s]
        # the largest rise above the running minimum along the kept steps (from this call's records),
        # relative to it; rises within the rounding floor (the monitor's atol) do not count
        obj2 = objective if batched else objective[None]
        F_start = np.atleast_1d(F_min_start)
        F0_all = np.atleast_1d(to_host(loop.F0, np.float64))
        eps = float(np.finfo(to_host(loop.F0).dtype).eps)
        rises = np.zeros(obj2.shape[0])
        for r in range(obj2.shape[0]):
            F = obj2[r, : int(np.atleast_1d(stop_step)[r]) + 1]
            F = F[np.isfinite(F)]
            if len(F):
                floor = monitor.atol if monitor is not None and monitor.atol is not None else 100 * eps * abs(F0_all[r])
                run_min = np.minimum.accumulate(np.concatenate([[F_start[r]], F]))[:-1]
                above = F - run_min > floor
                rel = (F - run_min) / np.maximum(np.abs(run_min), 1e-300)
                rises[r] = max(0.0, float(np.max(np.where(above, rel, 0.0))))
        max_rise = np.maximum(to_host(loop.max_rise, np.float64), rises if batched else rises[0])
        loop = eqx.tree_at(lambda st: (st.time, st.max_rise), loop, (to_host(t_end, np.float64), max_rise))
        host = _host_loop(loop)
        # the step before each run's failure, for the message's stable step size
        ev = np.atleast_1d(to_host(loop.event_step)) - k0
        speed_rec = stats.get("speed")
        for key in ("event_F_last", "event_speed_last", "event_dt_last"):
            host[key] = np.full(len(ev), np.nan)
        for r, j in enumerate(ev):
            if 1 <= j <= K:
                row = (r,) if batched else ()
                host["event_F_last"][r] = objective[row + (j - 1,)]
                if speed_rec is not None:
                    host["event_speed_last"][r] = speed_rec[row + (j - 1,)]
                host["event_dt_last"][r] = (etas[r] if per_run else etas)[j - 1] / substeps[row + (j - 1,)]
        K_global = k0 + K
        if batched:
            message: Any = tuple(_message(name, flow, problem, host, r, K_global, monitor, stop_reason, paused) for r in range(cast(int, R)))
        else:
            message = _message(name, flow, problem, host, None, K_global, monitor, stop_reason, paused)
        saved_tree = jax.tree_util.tree_map(lambda *xs: np.stack(xs, axis=1 if batched else 0), *saved)
        all_stats = {**stats, "substeps": substeps} if backtrack else stats
        result = results_of(to_host(loop.result))
        if batched:
            fields = dict(times=times, objective=objective, stats=all_stats, save_times=np.take_along_axis(times, save_local, axis=1), stop_step=stop_step)
        else:
            s = int(stop_step)
            keep = s + 1 if (s < K or int(loop.result) != SUCCESSFUL) else K
            keep = min(keep, K)
            fields = dict(
                times=times[: s + 1], objective=objective[: s + 1], stats={k: v[:keep] for k, v in all_stats.items()}, save_times=times[save_local], stop_step=s
            )
    sol = Solution(
        **fields,
        save_steps=save_steps,
        saved=saved_tree,
        final=gathered(loop.state),
        result=result,
        loop=loop,
        message=message,
        batched=batched,
        paused=paused,
        seconds=_time.perf_counter() - start,
        compile_seconds=timer.compile_seconds,
    )
    if monitor is not None and monitor.policy == "warn":
        flagged = [m for m, c in zip(message if batched else [message], np.atleast_1d(sol.codes)) if c != SUCCESSFUL]
        if flagged:
            more = f" (and {len(flagged) - 1} more run(s) flagged)" if len(flagged) > 1 else ""
            warnings.warn(flagged[0] + more, RuntimeWarning, stacklevel=2)
    return sol


def _start(flow, problem, x0, monitor, batched: bool, name: str) -> tuple[LoopState, int | None]:
    """The loop state to start from (continuing a LoopState, or new from ``x0``) and the batch size."""
    if isinstance(x0, LoopState):
        require(batched == (np.ndim(x0.step) == 1), "x0", "a batched LoopState continues with batched=True, a single one with batched=False")
        backtrack = monitor is not None and monitor.policy == "backtrack"
        require((x0.prev is not None) == backtrack, "x0", "a LoopState continues under a monitor of the same policy ('backtrack' or not)")
        return x0, (int(np.shape(x0.step)[0]) if batched else None)
    if batched:
        leaves = jax.tree_util.tree_leaves(x0)
        require(len(leaves) > 0 and all(np.ndim(x) >= 1 for x in leaves), "x0", "a batch of states needs a leading run axis on every array")
        R = int(np.shape(leaves[0])[0])
        require(all(np.shape(x)[0] == R for x in leaves), "x0", "every array of a batch needs the same leading run axis")
        state = eqx.filter_vmap(flow.init, in_axes=(None, 0))(problem, x0)
        F0 = to_host(_value_batch(flow, problem, state))
        if not np.all(np.isfinite(F0)):
            r = int(np.argmax(~np.isfinite(F0)))
            raise InputError("initial state", f"run {r}: the objective at the start of the {name} is {F0[r]}", "check the data and the initial measures")
        loop = eqx.filter_vmap(lambda s, f: _initial_loop(flow, problem, s, f, monitor))(state, jnp.asarray(F0))
        return loop, R
    state = flow.init(problem, x0)
    F0_single = float(_value(flow, problem, state))
    if not np.isfinite(F0_single):
        raise InputError("initial state", f"the objective at the start of the {name} is {F0_single}", "check the data and the initial measure")
    return _initial_loop(flow, problem, state, F0_single, monitor), None


def _saver(flow, problem, saveat: SaveAt, batched: bool, R, one_state) -> Callable:
    """``saver(loop, times, k)``: what to keep of the states, which stand at local step k (per run
    when batched), as host arrays."""
    if saveat.fn is None:
        # the problem is an argument, not a constant: its arrays may span other processes' devices
        has_measure = jax.eval_shape(lambda st: flow.measure(problem, st), one_state) is not None
        default = (lambda pb, st: flow.measure(pb, st)) if has_measure else (lambda pb, st: st)
        compiled = eqx.filter_jit(jax.vmap(default, in_axes=(None, 0)) if batched else default)
        return lambda loop, times, k: jax.tree_util.tree_map(to_host, compiled(problem, loop.state))
    fn = saveat.fn

    def save(loop, times, k):
        if not batched:
            return jax.tree_util.tree_map(to_host, fn(float(times[int(k)]), loop.state, problem))
        vals = [jax.tree_util.tree_map(to_host, fn(float(times[r, int(k[r])]), jax.tree_util.tree_map(lambda a: a[r], loop.state), problem)) for r in range(R)]
        return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *vals)

    return save


def initial_loop_state(flow: AbstractFlow, problem: Any, x0: Any, *, monitor: Monitor | None = Monitor(), batched: bool = False) -> LoopState:
    """The :class:`LoopState` a :func:`solve` from ``x0`` starts with (a template to load a checkpoint into)."""
    return _start(flow, problem, x0, monitor, batched, flow.name)[0]


__all__ = [
    "AbstractFlow",
    "LoopState",
    "Monitor",
    "POLICIES",
    "RESULTS",
    "RESULT_NAMES",
    "SaveAt",
    "Solution",
    "StepInfo",
    "float_dtype",
    "initial_loop_state",
    "result_name",
    "results_of",
    "solve",
]
