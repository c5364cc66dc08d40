"""Is the entropic JKO scheme on a grid (Peyré 2015) similar to particle GD? Measured for every measure space (docs/jko.md §10–11).

The two-layer ReLU teacher–student problem in d = 2 (no bias), the square loss (no ½) with weight
decay, on four parameterisations: ``split`` (two nonnegative grids over u ∈ R²), ``signed``
(R² with signed masses: on a grid the same two nonnegative grids), ``lifted`` (a 3-D grid
over (w₁, w₂, α)) and ``sphere`` (periodic angle × output weight a). In each space one
initial density (a Gaussian in the space's flat coordinates, uniform in the angle), binned
on each grid by exact cell integrals and sampled for the particles, and one clock.

Two ladders of JKO rungs (τ, ε, h), all with h set by ε = ``blur_over_h2``·h² (no grid pinning)
unless a rung gives its ``cells``:

* ``to_gd`` (``ladder``): τ, ε/τ and h shrink together, so the matched temperature
  T = ε/(4τ) → 0 and JKO → GD;
* ``to_langevin`` (``fixed_temperature``): τ and h shrink with ε = 4·T·τ at one T,
  so JKO → mean-field Langevin at T.

Two references for every rung: **GD** (explicit particle GD, step ``gd.step_size`` ≪ every τ,
from the finest grid's density as weighted atoms: a quadrature, no sampling noise) and
**Langevin** at the rung's matched temperature T = ε/(4τ) (:func:`matched_temperature`:
the entropic JKO step is, to first order in τ, the Fokker–Planck step of F + T∫μ log μ;
docs/jko.md §7), from ``langevin.seeds`` independent runs of ``langevin.particles`` particles
sampled from the same density. The Langevin reference is the average over seeds (the
mixture of all runs' particles); its Monte-Carlo error is estimated from the spread of the
seeds (``mc_error_*`` beside each distance).

Compared at equal mean-field times: the relative L² distance of the outputs on the data,
|F − F_ref|, and the Sinkhorn divergence S_b (blur ``compare.sinkhorn_blur``) between the JKO
grid measure and the reference binned on the same grid (cloud-in-cell; the binning error
shows as the value at t = 0). Fitted orders: slopes of log(distance) against log(τ) along
each ladder, per space, solver and reference. So the entropic bias (Langevin at T against GD)
and the discretisation error (JKO against Langevin at its own T) are measured apart.

The JKO steps run through :func:`wgflow.flows.jko.jko` with the solver and the options of
``jko`` (one place, :func:`_jko_run`, passes them on: a faster kernel option goes there).

Files: ``summary.json`` (``table``: one row per space, ladder, rung, solver and reference,
keys ``parameterisation``, ``reference`` ("gd" / "langevin"), ``ladder``, ``tau``, ``blur``,
``temperature``, ``grid``, ``solver``, ``distance_to_reference``, ``distance_to_gd``,
``output_distance``, ``objective_gap``, ``mc_error_*``, ``seconds``, …; ``orders``;
``langevin`` (each temperature against GD: the entropic bias); ``gd``; ``implicit``;
``skipped``), ``metrics.csv``, ``results.npz``, figures ``objective``, ``distance``,
``ladder``, ``densities`` and ``jko_vs_gd.gif``; ``checkpoints/`` holds each flow once done
(a part of the run: ``--resume`` reads it back, a signal waits for it).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from typing import Literal

import jax
import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from wgflow import plots
from wgflow.experiments import optimum_support
from wgflow.experiments.config import RunName, Section
from wgflow.experiments.rundir import Progress, RunDir, figure_files, run_part
from wgflow.experiments.sections import PLUGINS_HELP, DataSection, PluginList
from wgflow.experiments.teacher_student import checkpoint_fingerprint
from wgflow.flows.jko import Dykstra, Linearised, SemiDualNewton, component_signs, jko
from wgflow.flows.particle import explicit_gd, implicit_gd, langevin_gd
from wgflow.flows.solve import Monitor, SaveAt, Solution
from wgflow.grid import Grid, GridMeasure, bin_measure, box_grid, initial_grid_density, mass_outside, memory_estimate, sample_from_grid, sphere_grid
from wgflow.measure import Measure
from wgflow.metrics import sinkhorn_divergence
from wgflow.objective import make_objective
from wgflow.resources import Need
from wgflow.runtime import drop_compiled_programs

KIND = "jko_vs_gd"
SIGNS = (1.0, -1.0)
SpaceName = Literal["split", "signed", "lifted", "sphere"]
SPACES = ("split", "signed", "lifted", "sphere")
SolverName = Literal["newton", "linearised", "dykstra"]
SOLVERS = {"newton": SemiDualNewton, "linearised": Linearised, "dykstra": Dykstra}
LADDERS = ("to_gd", "to_langevin")
REFERENCES = ("gd", "langevin")


def matched_temperature(tau: float, blur: float) -> float:
    """T = ε/(4τ): the temperature of the Langevin flow that the entropic JKO step (1) of docs/jko.md follows.

    With the cost |θ − θ'|² and the entropy ε Σ π(log(π/vv) − 1) against Lebesgue, the step is
    p⁺ = e^{−2τF'/ε} ⊙ K_ε(q / K_εᵀ e^{−2τF'/ε}) with K_ε the heat semigroup at time s = ε/4
    (the Gaussian of variance ε/2 per coordinate). Expanding K_ε = 1 + sΔ + O(s²) gives
    p⁺ − q = s[Δq + (2τ/ε) div(q∇F')] + O(s²) = τ[div(q∇F') + (ε/4τ)Δq] + O(τ²) at fixed ε/τ:
    one step of ∂ₜμ = div(μ∇F') + TΔμ, the Wasserstein flow of F + T∫μ log μ, with T = ε/(4τ).
    """
    return blur / (4.0 * tau)


def blur_at_temperature(temperature: float, tau: float) -> float:
    """ε = 4·T·τ: the blur whose JKO step of size τ follows Langevin at ``temperature`` (:func:`matched_temperature`)."""
    return 4.0 * temperature * tau


class RungSection(Section):
    """One rung of the JKO → GD ladder: a step, a blur and (optionally) a grid."""

    cells: int | None = Field(
        None,
        gt=1,
        description="cells per axis of the 2-D split/signed grid (h = 2·grid.half_width / cells; every space then uses this h); default: h from ε = grid.blur_over_h2 · h²",
    )
    tau: float = Field(0.1, gt=0, description="JKO step τ (mean-field time)")
    blur_over_tau: float = Field(0.2, gt=0, description="ε/τ: the entropic blur ε is this times τ (matched temperature ε/(4τ))")
    solvers: list[SolverName] = Field(["newton", "linearised"], description="JKO step solvers run on this rung")


class FixedTemperatureSection(Section):
    """The JKO → Langevin ladder: τ and h shrink with ε = 4·T·τ."""

    temperature: float = Field(0.1, gt=0, description="T, the matched temperature of every rung (ε = 4·T·τ)")
    taus: list[float] = Field([0.2, 0.1, 0.05], description="JKO steps τ of the rungs (empty: no fixed-temperature ladder)")
    solvers: list[SolverName] = Field(["newton"], description="JKO step solvers run on these rungs")

    @field_validator("taus")
    @classmethod
    def _positive(cls, v):
        if any(t <= 0 for t in v):
            raise ValueError("every τ must be > 0")
        return v


class ModelSection(Section):
    lam: float = Field(1e-3, gt=0, description="weight decay λ (V = 2|u| for split/signed, |w|² + α² for lifted, 2|a| for sphere)")
    reduction: Literal["sum", "mean"] = Field("mean", description="R = Σ_j (f − y)² ('sum') or the mean")


def _box_check(half_width: float | None, std: float, where: str) -> None:
    if half_width is not None and half_width / std < 4.5:  # beyond ~1e-5 of the mass outside the box
        raise ValueError(f"init_std = {std:g} is too wide for the box ±{half_width:g} of {where}: use init_std ≤ {half_width / 4.5:.3g} or a larger half_width")


class GridSection(Section):
    """The split / signed space: u ∈ [−half_width, half_width]², two nonnegative grids."""

    half_width: float = Field(2.0, gt=0, description="the grid's box is [−half_width, half_width]² in u")
    init_std: float = Field(0.4, gt=0, description="standard deviation s of the initial density N(0, s² I) of each sign")
    positive_fraction: float = Field(0.5, gt=0, lt=1, description="share of the initial mass on the positive grid")
    blur_over_h2: float = Field(
        2.0, gt=0, description="rungs without cells (and the fixed-temperature ladder) take h with ε = this · h² in every space (≥ 2: no grid pinning)"
    )

    @field_validator("init_std")
    @classmethod
    def _inside_the_box(cls, v, info: ValidationInfo):
        _box_check(info.data.get("half_width"), v, "grid (split/signed)")
        return v


class LiftedSection(Section):
    """The lifted space: θ = (w₁, w₂, α) on a 3-D grid over [−half_width, half_width]³."""

    half_width: float = Field(2.4, gt=0, description="the grid's box is [−half_width, half_width]³ in (w, α)")
    init_std: float = Field(0.4, gt=0, description="standard deviation s of the initial density N(0, s² I₃)")
    max_points: int = Field(
        1_000_000, gt=0, description="rungs whose 3-D grid has more points are skipped (and reported): a step costs ~N·ΣNₖ (≈ 2.5 s at 96³ = 884 736 points)"
    )

    @field_validator("init_std")
    @classmethod
    def _inside_the_box(cls, v, info: ValidationInfo):
        _box_check(info.data.get("half_width"), v, "lifted")
        return v


class SphereSection(Section):
    """The sphere space: angle φ (periodic) × output weight a ∈ [−half_width, half_width]."""

    half_width: float = Field(2.5, gt=0, description="the a axis is [−half_width, half_width]; the angle axis is the circle (2π)")
    init_std: float = Field(0.4, gt=0, description="standard deviation s of the initial density, uniform in φ × N(0, s²) in a")
    max_points: int = Field(400_000, gt=0, description="rungs whose grid has more points are skipped (and reported)")

    @field_validator("init_std")
    @classmethod
    def _inside_the_box(cls, v, info: ValidationInfo):
        _box_check(info.data.get("half_width"), v, "sphere")
        return v


class GDSection(Section):
    step_size: float = Field(1e-3, gt=0, description="explicit GD step η (≪ every τ: the continuous-time reference)")
    particles: int = Field(16_000, ge=2, description="m, particles sampled from the split density (sampled GD: pictures and the sampling error)")
    sample_seed: int = Field(5, description="PRNG seed of the sampled particles")
    implicit: bool = Field(True, description="also run implicit (proximal) GD with each to_gd rung's τ (split only)")
    implicit_cells: int = Field(40, gt=1, description="implicit GD starts from the quadrature of the density on this grid (cells per axis)")


class LangevinSection(Section):
    step_size: float = Field(1e-3, gt=0, description="Euler–Maruyama step η of mean-field Langevin (≪ every τ)")
    particles: int = Field(4000, ge=2, description="particles per Langevin run, sampled from the space's finest grid density")
    seeds: int = Field(
        4,
        ge=2,
        description="independent Langevin runs per temperature (new initial sample and noise): their mean is the reference, their spread the Monte-Carlo error",
    )
    seed: int = Field(11, description="PRNG seed of the first run (run k uses seed + k)")


class CompareSection(Section):
    final_time: float = Field(1.0, gt=0, description="T: every flow runs to this mean-field time")
    snapshots: int = Field(11, gt=1, description="number of equally spaced comparison times in [0, T]")
    sinkhorn_blur: float = Field(0.01, gt=0, description="blur b of the Sinkhorn divergence S_b (squared units of θ)")
    sinkhorn_times: int = Field(6, gt=0, description="number of the comparison times (equally spaced, T included) at which S_b is computed")
    sinkhorn_tol: float = Field(1e-4, gt=0, description="marginal (L1) tolerance of the Sinkhorn iterations (1e-4 changes S by ~1e-9 against 1e-6)")


class OutputSection(Section):
    animation: bool = Field(True, description="write jko_vs_gd.gif (split's finest rung's density beside the sampled particles)")
    density_times: int = Field(4, gt=0, description="number of times shown in the densities figure")


class Config(Section):
    name: RunName = Field("jko-vs-gd", description="experiment name (the default output folder is runs/NAME)")
    kind: Literal["jko_vs_gd"] = Field(KIND, description="experiment kind")
    description: str = Field("", description="one line shown by `wgflow list`")
    plugins: PluginList = Field([], description=PLUGINS_HELP)
    data: DataSection = Field(default_factory=lambda: DataSection(n=30, teacher_width=2, seed=1), description="teacher–student data (ReLU, d = 2, no bias)")
    model: ModelSection = Field(default_factory=ModelSection, description="objective (every parameterisation)")
    spaces: list[SpaceName] = Field(list(SPACES), description="measure spaces compared: split, signed (2-D grids), lifted (3-D grid), sphere (angle × a)")
    grid: GridSection = Field(default_factory=GridSection, description="the split/signed box, the initial density and the rule for h")
    lifted: LiftedSection = Field(default_factory=LiftedSection, description="the lifted 3-D box and initial density")
    sphere: SphereSection = Field(default_factory=SphereSection, description="the sphere's a axis and initial density")
    ladder: list[RungSection] = Field(
        default_factory=lambda: [
            RungSection(cells=40, tau=0.1, blur_over_tau=0.2, solvers=["newton", "linearised", "dykstra"]),
            RungSection(cells=80, tau=0.05, blur_over_tau=0.1),
            RungSection(cells=160, tau=0.025, blur_over_tau=0.05),
        ],
        description="the JKO → GD ladder: rungs (τ, ε/τ, h), coarse to fine",
    )
    fixed_temperature: FixedTemperatureSection = Field(default_factory=FixedTemperatureSection, description="the JKO → Langevin ladder (ε = 4·T·τ)")
    gd: GDSection = Field(default_factory=GDSection, description="particle gradient descent")
    langevin: LangevinSection = Field(default_factory=LangevinSection, description="mean-field Langevin references at the matched temperatures")
    compare: CompareSection = Field(default_factory=CompareSection, description="comparison times and distances")
    output: OutputSection = Field(default_factory=OutputSection, description="figures")

    @field_validator("spaces")
    @classmethod
    def _spaces(cls, v):
        if not v:
            raise ValueError("name at least one space: split, signed, lifted or sphere")
        if len(set(v)) != len(v):
            raise ValueError("each space once")
        return v

    @field_validator("ladder")
    @classmethod
    def _ladder(cls, v):
        if not v:
            raise ValueError("the ladder needs at least one rung")
        return v

    @field_validator("compare")
    @classmethod
    def _steps_divide_the_final_time(cls, v, info: ValidationInfo):
        """Every step must divide T, so that all flows are compared at the same times."""
        T = v.final_time
        steps = [(f"ladder[{i}].tau", r.tau) for i, r in enumerate(info.data.get("ladder") or [])]
        if info.data.get("fixed_temperature") is not None:
            steps += [(f"fixed_temperature.taus[{i}]", t) for i, t in enumerate(info.data["fixed_temperature"].taus)]
        if info.data.get("gd") is not None:
            steps.append(("gd.step_size", info.data["gd"].step_size))
        if info.data.get("langevin") is not None:
            steps.append(("langevin.step_size", info.data["langevin"].step_size))
        for field, step in steps:
            k = T / step
            if abs(k - round(k)) > 1e-9 * max(1.0, k):
                raise ValueError(f"{field} = {step:g} does not divide final_time = {T:g}: use a step T/k for an integer k")
        dt = T / (v.snapshots - 1)  # the comparison times must be steps of every flow
        for field, step in steps:
            k = dt / step
            if abs(k - round(k)) > 1e-9 * max(1.0, k) or round(k) < 1:
                raise ValueError(
                    f"{field} = {step:g} does not divide the comparison interval final_time / (snapshots − 1) = {dt:g}: take compare.snapshots = 1 + T/{step:g} or fewer such that it does"
                )
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v):
        if v.d != 2 or v.bias or v.activation != "relu":
            raise ValueError("this study is the ReLU problem in d = 2 without bias: set data.d = 2, data.bias = false, data.activation = 'relu'")
        return v


# --------------------------------------------------------------------------- rungs and grids


@dataclasses.dataclass(frozen=True)
class Rung:
    """One JKO run's scheme: ladder, position on it, τ, ε, the resolution h and the solvers."""

    ladder: str
    index: int
    tau: float
    blur: float
    h: float
    solvers: tuple

    @property
    def temperature(self) -> float:
        return matched_temperature(self.tau, self.blur)


def rungs(cfg: Config) -> list[Rung]:
    """Both ladders' rungs, each coarse to fine (by τ)."""
    out = []
    for i, r in enumerate(sorted(cfg.ladder, key=lambda r: -r.tau)):
        blur = r.blur_over_tau * r.tau
        h = 2 * cfg.grid.half_width / r.cells if r.cells else math.sqrt(blur / cfg.grid.blur_over_h2)
        out.append(Rung("to_gd", i, r.tau, blur, h, tuple(r.solvers)))
    ft = cfg.fixed_temperature
    for i, tau in enumerate(sorted(ft.taus, reverse=True)):
        blur = blur_at_temperature(ft.temperature, tau)
        out.append(Rung("to_langevin", i, tau, blur, math.sqrt(blur / cfg.grid.blur_over_h2), tuple(ft.solvers)))
    return out


def space_grid(cfg: Config, space: str, h: float) -> Grid:
    """The grid of ``space`` with spacing ≈ h on every axis (the angle's too, in radians)."""
    if space in ("split", "signed"):
        L = cfg.grid.half_width
        return box_grid(-L, L, (max(2, round(2 * L / h)),) * 2)
    if space == "lifted":
        L = cfg.lifted.half_width
        return box_grid(-L, L, (max(2, round(2 * L / h)),) * 3)
    L = cfg.sphere.half_width
    return sphere_grid(max(3, round(2 * math.pi / h)), (-L, L, max(2, round(2 * L / h))))


def _initial_density(cfg: Config, space: str, grid: Grid) -> np.ndarray:
    if space in ("split", "signed"):
        return initial_grid_density(grid, "gaussian", std=cfg.grid.init_std, components=2, positive_fraction=cfg.grid.positive_fraction)
    sec = cfg.lifted if space == "lifted" else cfg.sphere
    return initial_grid_density(grid, "gaussian", std=sec.init_std)


def _max_points(cfg: Config, space: str) -> float:
    """Rungs above this many points are skipped in ``space`` (lifted, sphere); split/signed run every rung (its memory is checked)."""
    return {"lifted": cfg.lifted.max_points, "sphere": cfg.sphere.max_points}.get(space, math.inf)


def _grid_label(grid: Grid) -> str:
    return "×".join(str(n) for n in grid.shape)


def _relative_distance(f, g, y) -> float:
    """‖f − g‖ / ‖y‖ on the training inputs (relative to the labels: at t = 0 the outputs are ≈ 0)."""
    return float(np.linalg.norm(np.asarray(f) - np.asarray(g)) / max(float(np.linalg.norm(np.asarray(y))), 1e-300))


def _measures(sol: Solution) -> list[Measure]:
    return [sol.saved_at(s) for s in range(len(sol.save_steps))]


def fitted_order(tau: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(τ) (None with < 2 usable points)."""
    pts = [(math.log(t), math.log(v)) for t, v in zip(tau, values) if v is not None and v > 0 and np.isfinite(v)]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def _mixture(mus: list[Measure]) -> Measure:
    """The average of K measures: all their atoms, masses divided by K."""
    K = len(mus)
    return Measure(np.concatenate([np.asarray(m.positions) for m in mus]), np.concatenate([np.asarray(m.masses) for m in mus]) / K)


def _jko_run(obj, p0, rung: Rung, num_steps: int, grid: Grid, solver: str, save: SaveAt) -> Solution:
    """The one place where the study calls the JKO solver: options of the step (e.g. a faster kernel) go here."""
    return jko(
        obj,
        p0,
        rung.tau,
        num_steps,
        grid=grid,
        blur=rung.blur,
        solver=SOLVERS[solver](),
        monitor=Monitor(policy="warn"),  # inner failures are recorded (the row's status) and the run goes on
        save=SaveAt(times=save.times, fn=lambda t, state, problem: state.masses),
    )


# --------------------------------------------------------------------------- memory


def estimate(cfg: Config) -> list[Need]:
    """Memory by item: the largest JKO step of every space (:func:`wgflow.grid.memory_estimate`, with its
    saved masses and binned references), the GD reference on the finest grid's atoms, the Langevin
    runs and the sampled GD (state, unit outputs chunked beyond 2²⁰, saved states)."""
    n, item, S = cfg.data.n, 8, cfg.compare.snapshots
    needs = []
    all_rungs = rungs(cfg)
    atoms, atoms_field, largest = 0, "ladder", 0
    for space in cfg.spaces:
        C = 2 if space in ("split", "signed") else 1
        for r in all_rungs:
            grid = space_grid(cfg, space, r.h)
            if grid.size > _max_points(cfg, space):
                continue
            largest = max(largest, grid.size)
            field = f"ladder[{r.index}].cells" if r.ladder == "to_gd" else "fixed_temperature.taus"
            if C * grid.size > atoms:
                atoms, atoms_field = C * grid.size, field
            est = memory_estimate(grid, n, C, np.float64, hessian="dykstra" in r.solvers, snapshots=2 * S + 2 * cfg.compare.sinkhorn_times)
            fix = (
                f"use fewer cells on this rung, or a lower {space}.max_points (memory grows like N · data.n)"
                if space in ("lifted", "sphere")
                else "use fewer cells on this rung (memory grows like cells² · data.n)"
            )
            if est.get("hessian", 0) > est["total"] / 2:
                field, fix = "ladder.solvers", "the Dykstra solver keeps an n × n matrix: remove 'dykstra' from the solvers, or use fewer data points"
            needs.append(Need(f"JKO {space} {_grid_label(grid)} (τ = {r.tau:g})", est["total"], field, fix))
    grids = [max(needs, key=lambda nd: nd.nbytes)] if needs else []  # rungs run one after another
    # the Sinkhorn divergences on the largest grid (measured: 0.61 GiB above the process's own at
    # 96³, float64, i.e. about 90 numbers a grid point) and the process itself (Python, JAX, its programs)
    grids += [
        Need(f"Sinkhorn divergences ({largest} grid points)", 90.0 * largest * item, atoms_field, "use fewer cells on the finest rung"),
        # measured: --quick runs peak at 1.0-1.1 GiB for one space (0.57-0.74 GiB above the items here), 1.33 GiB for four
        Need("the process (Python, JAX, one space's compiled programs)", 1.2 * 2**30, "spaces", "run fewer spaces at once"),
    ]

    def particles(m: int) -> float:
        return (12.0 * m * 4 + 4.0 * min(n * m, 2**20) + 2.0 * S * m * 4) * item

    K = int(round(cfg.compare.final_time / min(cfg.gd.step_size, cfg.langevin.step_size)))
    return grids + [
        Need(
            f"GD reference ({atoms} atoms)", particles(atoms), atoms_field, "use fewer cells on the finest rung (the GD reference starts from its grid's atoms)"
        ),
        Need(f"sampled GD ({cfg.gd.particles} particles)", particles(cfg.gd.particles), "gd.particles", "sample fewer particles (gd.particles)"),
        Need(
            f"Langevin ({cfg.langevin.seeds} × {cfg.langevin.particles} particles)",
            cfg.langevin.seeds * particles(cfg.langevin.particles),
            "langevin.particles",
            "use fewer Langevin particles or seeds",
        ),
        Need(f"{K} GD steps", 12.0 * K * 8, "gd.step_size", "take a larger gd.step_size or a shorter compare.final_time"),
    ]


# --------------------------------------------------------------------------- references


@dataclasses.dataclass
class Reference:
    """A reference flow at the comparison times: outputs, F and the measure (GD, or the mean of the Langevin runs)."""

    name: str
    temperature: float
    outputs: list
    objective: list
    measures: list
    halves: tuple | None = None  # (first half, second half) of the Langevin runs at t = T
    mc_output: float | None = None
    mc_objective: float | None = None
    status: str = "successful"
    seconds: float = 0.0
    objective_seeds: np.ndarray | None = None


def _langevin_reference(cfg: Config, obj, grid: Grid, p0, signs, T: float, save: SaveAt, y) -> Reference:
    """``langevin.seeds`` runs at temperature T, each from its own sample of the density ``p0`` on ``grid``."""
    lg = cfg.langevin
    K = int(round(cfg.compare.final_time / lg.step_size))
    runs, statuses, seconds = [], [], 0.0
    for k in range(lg.seeds):
        k_init, k_noise = jax.random.split(jax.random.PRNGKey(lg.seed + k))
        mu0 = sample_from_grid(k_init, grid, p0, lg.particles, signs=signs)
        sol = langevin_gd(obj, mu0, lg.step_size, K, temperature=T, key=k_noise, save=save, monitor=Monitor(policy="warn"))
        runs.append(_measures(sol))
        statuses.append(sol.status)
        seconds += sol.seconds
    n_snap = len(runs[0])
    mixtures = [_mixture([r[s] for r in runs]) for s in range(n_snap)]
    f_seeds = np.stack([np.asarray(obj.outputs(r[-1])) for r in runs])  # (K, n) at t = T
    F_seeds = np.array([[float(obj.value(r[s])) for s in range(n_snap)] for r in runs])
    se = f_seeds.std(axis=0, ddof=1) / math.sqrt(lg.seeds)
    half = lg.seeds // 2
    bad = [s for s in statuses if s != "successful"]
    return Reference(
        "langevin",
        T,
        [np.asarray(obj.outputs(mu)) for mu in mixtures],
        [float(obj.value(mu)) for mu in mixtures],
        mixtures,
        halves=(_mixture([r[-1] for r in runs[:half]]), _mixture([r[-1] for r in runs[half:]])),
        mc_output=float(np.linalg.norm(se) / max(float(np.linalg.norm(np.asarray(y))), 1e-300)),
        mc_objective=float(F_seeds[:, -1].std(ddof=1) / math.sqrt(lg.seeds)),
        status=bad[0] if bad else "successful",
        seconds=seconds,
        objective_seeds=F_seeds,
    )


def _tkey(T: float) -> str:
    return f"{T:.6g}"


# --------------------------------------------------------------------------- parts
# Each flow of the study is a part of the run (:func:`wgflow.experiments.rundir.run_part`):
# checkpointed as flat arrays when done, read back by --resume, waited for by a signal.


def _part_key(*words) -> str:
    """A checkpoint name from the words of a part (no path separators, ASCII)."""
    return "-".join(str(w) for w in words).replace("×", "x").replace("/", "_")


def _stack_measures(prefix: str, mus: list[Measure]) -> dict:
    return {f"{prefix}positions": np.stack([np.asarray(m.positions) for m in mus]), f"{prefix}masses": np.stack([np.asarray(m.masses) for m in mus])}


def _unstack_measures(prefix: str, rec: dict) -> list[Measure]:
    return [Measure(x, w) for x, w in zip(rec[f"{prefix}positions"], rec[f"{prefix}masses"])]


def _reference_record(ref: Reference) -> dict:
    rec = {
        "name": ref.name,
        "temperature": ref.temperature,
        "outputs": np.stack(ref.outputs),
        "objective": np.asarray(ref.objective, dtype=float),
        "mc_output": ref.mc_output,
        "mc_objective": ref.mc_objective,
        "status": ref.status,
        "seconds": ref.seconds,
        **_stack_measures("", ref.measures),
    }
    if ref.halves is not None:
        rec.update(_stack_measures("halves/", list(ref.halves)))
    if ref.objective_seeds is not None:
        rec["objective_seeds"] = np.asarray(ref.objective_seeds)
    return rec


def _reference_from(rec: dict) -> Reference:
    halves = _unstack_measures("halves/", rec) if "halves/positions" in rec else None
    return Reference(
        rec["name"],
        rec["temperature"],
        list(rec["outputs"]),
        [float(v) for v in rec["objective"]],
        _unstack_measures("", rec),
        halves=None if halves is None else (halves[0], halves[1]),
        mc_output=rec["mc_output"],
        mc_objective=rec["mc_objective"],
        status=rec["status"],
        seconds=rec["seconds"],
        objective_seeds=rec.get("objective_seeds"),
    )


def _flow_record(sol: Solution, saved: bool = False) -> dict:
    """What the study keeps of a flow's Solution: its clock, F, status, diagnostics (``stat/…``) and, with ``saved``, its saves."""
    rec = {
        "times": np.asarray(sol.times),
        "objective": np.asarray(sol.objective),
        "save_times": np.asarray(sol.save_times),
        "final_objective": float(sol.final_objective),
        "status": sol.status,
        "seconds": float(sol.seconds),
        **{f"stat/{k}": np.asarray(v) for k, v in sol.stats.items()},
    }
    if saved:
        rec["saved"] = np.asarray(sol.saved)
    return rec


@dataclasses.dataclass(frozen=True)
class _Flow:
    """A flow read back from its part: the fields of :class:`~wgflow.flows.solve.Solution` the study uses."""

    times: np.ndarray
    objective: np.ndarray
    save_times: np.ndarray
    final_objective: float
    status: str
    seconds: float
    stats: dict
    saved: np.ndarray | None = None

    @classmethod
    def of(cls, rec: dict, prefix: str = "") -> _Flow:
        stats = {k[len(prefix) + 5 :]: v for k, v in rec.items() if k.startswith(prefix + "stat/")}
        g = lambda k: rec[prefix + k]  # noqa: E731
        return cls(g("times"), g("objective"), g("save_times"), g("final_objective"), g("status"), g("seconds"), stats, rec.get(prefix + "saved"))


def outputs(cfg: Config) -> list[str]:
    """The files a run writes beside results.npz, summary.json and metrics.csv."""
    stems = ["objective", "distance", "ladder", "ladder_outputs", "densities"]
    return figure_files(*stems) + (["jko_vs_gd.gif"] if cfg.output.animation else [])


def run(cfg: Config, rd: RunDir, *, resume: bool = False, progress: bool | None = None) -> dict:
    ds = cfg.data.make()
    T_final = cfg.compare.final_time
    times = np.linspace(0.0, T_final, cfg.compare.snapshots)
    save = SaveAt(times=times.tolist())
    n_snap = len(times)
    with_S = sorted(set(np.linspace(0, n_snap - 1, min(cfg.compare.sinkhorn_times, n_snap)).round().astype(int).tolist()) | {n_snap - 1})
    b, b_tol = cfg.compare.sinkhorn_blur, cfg.compare.sinkhorn_tol
    all_rungs = rungs(cfg)

    # the plan: per space, the rungs whose grid fits (grids built once: a Grid is compiled by identity)
    grids: dict = {}
    plan, skipped = {}, []
    for space in cfg.spaces:
        kept = []
        for r in all_rungs:
            g = space_grid(cfg, space, r.h)
            g = grids.setdefault((space, g.shape), g)
            if g.size > _max_points(cfg, space):
                skipped.append(
                    {
                        "parameterisation": space,
                        "ladder": r.ladder,
                        "tau": r.tau,
                        "blur": r.blur,
                        "grid": _grid_label(g),
                        "points": g.size,
                        "reason": "more grid points than max_points",
                    }
                )
                continue
            kept.append((r, g))
        plan[space] = kept
    unique = {sp: {(r.tau, r.blur, g.shape, s) for r, g in kept for s in r.solvers} for sp, kept in plan.items()}
    temps = {sp: sorted({round(r.temperature, 12) for r, _ in kept}) for sp, kept in plan.items()}
    split_like = "split" in cfg.spaces
    runs_total = 1 + sum(1 + len(temps[sp]) + len(unique[sp]) for sp in cfg.spaces)
    to_gd_taus = sorted({r.tau for r, _ in plan.get("split", []) if r.ladder == "to_gd"}, reverse=True)
    runs_total += (1 + (len(to_gd_taus) if cfg.gd.implicit else 0)) if split_like else 0

    start = time.perf_counter()
    fp = checkpoint_fingerprint(cfg)

    def part(compute, *words) -> dict:
        return run_part(rd, _part_key(*words), compute, resume=resume, fingerprint=fp)

    results: dict[str, np.ndarray] = {"times": times}
    table, langevin_rows, gd_summary, implicit_rows = [], [], {}, []
    pictures, sampled_dist = None, None
    with Progress(runs_total, cfg.name, enabled=progress) as bar:
        done = 0

        def tick(label):
            nonlocal done
            done += 1
            bar.update(done, label)

        # F* is the same for every space: with ReLU the weight decay of each is balanced at the optimum
        optimum = optimum_support.global_minimum(make_objective(ds.X, ds.y, "split", "relu", "square", cfg.model.lam, cfg.model.reduction))
        F_star = None if optimum is None else float(optimum.value)
        tick("global optimum")

        for space in cfg.spaces:
            kept = plan[space]
            if not kept:
                continue
            # the programs of the space before (other objective, other grids) are not used again; kept,
            # they held ~0.3 GiB a space (the default run: 3.87 GiB peak over four spaces, 2.49 for one)
            drop_compiled_programs()
            obj = make_objective(ds.X, ds.y, space, "relu", "square", cfg.model.lam, cfg.model.reduction)
            signs = component_signs(obj)
            fine = max((g for _, g in kept), key=lambda g: g.size)
            p_fine = _initial_density(cfg, space, fine)
            K = int(round(T_final / cfg.gd.step_size))

            def gd_reference(obj=obj, fine=fine, p_fine=p_fine, signs=signs, K=K) -> dict:
                sol = explicit_gd(obj, GridMeasure(fine, p_fine, signs).to_measure(), cfg.gd.step_size, K, save=save)
                mus = _measures(sol)
                ref = Reference(
                    "gd", 0.0, [np.asarray(obj.outputs(mu)) for mu in mus], [float(obj.value(mu)) for mu in mus], mus, status=sol.status, seconds=sol.seconds
                )
                return {**_reference_record(ref), **{f"flow/{k}": v for k, v in _flow_record(sol).items()}}

            rec = part(gd_reference, space, "gd")
            ref_gd, gd = _reference_from(rec), _Flow.of(rec, "flow/")
            results.update({f"{space}/gd/times": gd.times, f"{space}/gd/objective": gd.objective, f"{space}/gd/save_times": gd.save_times})
            gd_summary[space] = {
                "start": f"quadrature of the initial density on the {_grid_label(fine)} grid",
                "final_objective": gd.final_objective,
                "excess": None if F_star is None else gd.final_objective - F_star,
                "seconds": gd.seconds,
                "status": gd.status,
            }
            tick(f"{space}: GD reference")

            refs = {}
            for T in temps[space]:
                ref = _reference_from(
                    part(
                        lambda T=T, obj=obj, fine=fine, p_fine=p_fine, signs=signs: _reference_record(
                            _langevin_reference(cfg, obj, fine, p_fine, signs, T, save, ds.y)
                        ),
                        space,
                        "langevin",
                        _tkey(T),
                    )
                )
                refs[T] = ref
                results.update(
                    {
                        f"{space}/langevin/{_tkey(T)}/save_times": np.asarray(times),
                        f"{space}/langevin/{_tkey(T)}/objective": np.array(ref.objective),
                        f"{space}/langevin/{_tkey(T)}/objective_seeds": ref.objective_seeds,
                    }
                )
                langevin_rows.append(
                    {
                        "parameterisation": space,
                        "temperature": T,
                        "output_distance_to_gd": _relative_distance(ref.outputs[-1], ref_gd.outputs[-1], ds.y),
                        "objective_gap_to_gd": abs(ref.objective[-1] - ref_gd.objective[-1]),
                        "mc_error_output": ref.mc_output,
                        "mc_error_objective": ref.mc_objective,
                        "final_objective": ref.objective[-1],
                        "excess": None if F_star is None else ref.objective[-1] - F_star,
                        "particles": cfg.langevin.particles,
                        "seeds": cfg.langevin.seeds,
                        "status": ref.status,
                        "seconds": ref.seconds,
                    }
                )
                tick(f"{space}: Langevin T = {T:g}")

            if space == "split":

                def sampled_gd(obj=obj, fine=fine, p_fine=p_fine, signs=signs, K=K) -> dict:
                    sampled0 = sample_from_grid(jax.random.PRNGKey(cfg.gd.sample_seed), fine, p_fine, cfg.gd.particles, signs=signs)
                    sol = explicit_gd(obj, sampled0, cfg.gd.step_size, K, save=save)
                    return {**_flow_record(sol), **_stack_measures("saved/", _measures(sol))}

                rec = part(sampled_gd, space, "sampled-gd")
                gs, gs_mus = _Flow.of(rec), _unstack_measures("saved/", rec)
                sampled_dist = [_relative_distance(obj.outputs(mu), f, ds.y) for mu, f in zip(gs_mus, ref_gd.outputs)]
                results.update({"sampled/objective": gs.objective, "sampled/output_distance": np.array(sampled_dist)})
                results.update({"sampled/positions": rec["saved/positions"], "sampled/masses": rec["saved/masses"][0]})
                gd_summary[space].update(
                    {
                        "sampled_particles": cfg.gd.particles,
                        "sampled_status": gs.status,
                        "sampled_output_distance": sampled_dist[-1],
                        "sampled_final_objective": gs.final_objective,
                    }
                )
                tick("split: sampled GD")
                if cfg.gd.implicit:
                    coarse = box_grid(-cfg.grid.half_width, cfg.grid.half_width, (cfg.gd.implicit_cells,) * 2)
                    q0 = GridMeasure(coarse, _initial_density(cfg, space, coarse), signs).to_measure()
                    for tau in to_gd_taus:

                        def implicit(tau=tau, obj=obj, q0=q0) -> dict:
                            sol = implicit_gd(obj, q0, tau, int(round(T_final / tau)), save=save, monitor=Monitor(policy="warn"))
                            return {**_flow_record(sol), "final_outputs": np.asarray(obj.outputs(_measures(sol)[-1]))}

                        rec = part(implicit, space, "implicit", f"{tau:g}")
                        tr, f_T = _Flow.of(rec), rec["final_outputs"]
                        results[f"implicit/{tau:g}/times"] = tr.times
                        results[f"implicit/{tau:g}/objective"] = tr.objective
                        implicit_rows.append(
                            {
                                "parameterisation": space,
                                "tau": tau,
                                "status": tr.status,
                                "final_objective": tr.final_objective,
                                "output_distance": _relative_distance(f_T, ref_gd.outputs[-1], ds.y),
                                "objective_gap": abs(tr.final_objective - ref_gd.objective[-1]),
                                "excess": None if F_star is None else tr.final_objective - F_star,
                                "seconds": tr.seconds,
                            }
                        )
                        tick(f"implicit GD τ = {tau:g}")

            binned: dict = {}

            def binned_at(ref: Reference, grid: Grid, s: int) -> GridMeasure:
                key = (ref.name, ref.temperature, grid.shape, s)
                if key not in binned:  # atoms that left the box go to its boundary (the fraction is reported)
                    binned[key] = GridMeasure(grid, bin_measure(grid, ref.measures[s], signs, field=ref.name, outside="clip"), signs)
                return binned[key]

            mc_S: dict = {}

            def mc_distance(ref: Reference, grid: Grid) -> float:
                """S_b between the two halves of the Langevin runs at T, over 4: the sampling part of S_b of all runs if S_b ∝ 1/M."""
                key = (ref.temperature, grid.shape)
                if key not in mc_S:
                    A, B = (GridMeasure(grid, bin_measure(grid, h, signs, outside="clip"), signs) for h in ref.halves)
                    mc_S[key] = sinkhorn_divergence(A, B, b, tol=b_tol).value / 4
                return mc_S[key]

            trajs, compared = {}, {}
            for r, grid in kept:
                for name in r.solvers:
                    jkey = (r.tau, r.blur, grid.shape, name)
                    tag = f"tau{r.tau:g}_eps{r.blur:.6g}_{_grid_label(grid)}_{name}"
                    if jkey not in trajs:

                        def jko_flow(r=r, grid=grid, name=name, obj=obj, space=space) -> dict:
                            p0 = _initial_density(cfg, space, grid)
                            return _flow_record(_jko_run(obj, p0, r, int(round(T_final / r.tau)), grid, name, save), saved=True)

                        traj = _Flow.of(part(jko_flow, space, "jko", tag))
                        trajs[jkey] = traj
                        results.update(
                            {
                                f"{space}/jko/{tag}/times": traj.times,
                                f"{space}/jko/{tag}/objective": traj.objective,
                                f"{space}/jko/{tag}/save_times": traj.save_times,
                            }
                        )
                        if space == "split" and r.ladder == "to_gd" and name == r.solvers[0]:
                            if pictures is None or grid.size > pictures[0].size:
                                pictures = (grid, np.asarray(traj.saved), np.asarray(traj.save_times), r)
                        tick(f"{space}: JKO {_grid_label(grid)}, τ = {r.tau:g}, {name}")
                    traj = trajs[jkey]
                    for ref in (ref_gd, refs[round(r.temperature, 12)]):
                        ckey = jkey + (ref.name,)
                        if ckey not in compared:
                            S, out_d, gap, sk_its, sk_ok = [], [], [], 0, True
                            for s, masses in enumerate(traj.saved):
                                gm = GridMeasure(grid, masses, signs)
                                mu = gm.to_measure()
                                out_d.append(_relative_distance(obj.outputs(mu), ref.outputs[s], ds.y))
                                gap.append(abs(float(obj.value(mu)) - ref.objective[s]))
                                if s in with_S:
                                    d = sinkhorn_divergence(gm, binned_at(ref, grid, s), b, tol=b_tol)
                                    S.append(d.value)
                                    sk_its, sk_ok = max(sk_its, d.iterations), sk_ok and d.converged
                                else:
                                    S.append(np.nan)
                            compared[ckey] = (S, out_d, gap, sk_its, sk_ok)
                            results.update(
                                {
                                    f"{space}/jko/{tag}/{ref.name}/sinkhorn": np.array(S),
                                    f"{space}/jko/{tag}/{ref.name}/output_distance": np.array(out_d),
                                    f"{space}/jko/{tag}/{ref.name}/objective_gap": np.array(gap),
                                }
                            )
                        S, out_d, gap, sk_its, sk_ok = compared[ckey]
                        diag = traj.stats
                        langevin = ref.name == "langevin"
                        table.append(
                            {
                                "parameterisation": space,
                                "ladder": r.ladder,
                                "reference": ref.name,
                                "rung": r.index,
                                "key": tag,
                                "tau": r.tau,
                                "blur": r.blur,
                                "blur_over_tau": r.blur / r.tau,
                                "temperature": r.temperature,
                                "grid": _grid_label(grid),
                                "h": r.h,
                                "points": len(signs) * grid.size,
                                "solver": name,
                                "distance_to_reference": S[-1],
                                "distance_to_gd": compared[jkey + ("gd",)][0][-1],
                                "distance_at_start": S[0],
                                "output_distance": out_d[-1],
                                "objective_gap": gap[-1],
                                "mc_error_distance": mc_distance(ref, grid) if langevin else None,
                                "mc_error_output": ref.mc_output,
                                "mc_error_objective": ref.mc_objective,
                                "final_objective": traj.final_objective,
                                "excess": None if F_star is None else traj.final_objective - F_star,
                                "seconds": traj.seconds,
                                "status": traj.status,
                                "reference_status": ref.status,
                                "max_kkt": float(np.max(diag["kkt"])),
                                "mean_iterations": float(np.mean(diag["iterations"])),
                                "max_mass_error": float(np.max(diag["mass_error"])),
                                "reference_mass_outside_box": max(mass_outside(grid, mu) for mu in ref.measures),
                                "sinkhorn_iterations": sk_its,
                                "sinkhorn_converged": sk_ok,
                            }
                        )
        if pictures is not None:
            g, snaps, st, r = pictures
            results.update({"pictures/masses": snaps, "pictures/save_times": st, "pictures/cells": np.array(g.shape), "pictures/tau": np.array(r.tau)})
        results.update({"teacher/W": np.asarray(ds.teacher.W), "teacher/alpha": np.asarray(ds.teacher.alpha)})

    summary = {
        "experiment": cfg.name,
        "kind": KIND,
        "final_time": T_final,
        "parameterisations": list(cfg.spaces),
        "sinkhorn_blur": b,
        "matched_temperature": "T = ε/(4τ)",
        "global_min": {"value_for_every_space": None if optimum is None else optimum_support.describe(optimum)},
        "print_columns": [
            "parameterisation",
            "ladder",
            "reference",
            "grid",
            "tau",
            "blur",
            "temperature",
            "solver",
            "distance_to_reference",
            "mc_error_distance",
            "output_distance",
            "mc_error_output",
            "objective_gap",
            "status",
            "seconds",
        ],
        "gd": {"step_size": cfg.gd.step_size, **gd_summary},
        "langevin": langevin_rows,
        "langevin_settings": {"step_size": cfg.langevin.step_size, "particles": cfg.langevin.particles, "seeds": cfg.langevin.seeds},
        "implicit": implicit_rows,
        "table": table,
        "orders": orders(table, langevin_rows, implicit_rows),
        "skipped": skipped,
        "wall_seconds": time.perf_counter() - start,
    }
    rd.save_npz("results.npz", **results)
    rd.write_json("summary.json", summary)
    rd.write_text("metrics.csv", metrics_csv(results, table))
    draw(cfg, rd, results, summary)
    return summary


def orders(table: list[dict], langevin_rows: list[dict], implicit_rows: list[dict]) -> list[dict]:
    """Fitted orders in τ per space, ladder, solver and reference; the entropic bias's order in T; implicit GD's in τ."""
    out = []
    groups: dict = {}
    for r in table:
        groups.setdefault((r["parameterisation"], r["ladder"], r["solver"], r["reference"]), []).append(r)
    for (space, ladder, solver, ref), rows in groups.items():
        rows = sorted(rows, key=lambda r: -r["tau"])
        taus = [r["tau"] for r in rows]
        out.append(
            {
                "parameterisation": space,
                "ladder": ladder,
                "solver": solver,
                "reference": ref,
                "in": "tau",
                "rungs": len(rows),
                **{k: fitted_order(taus, [r[k] for r in rows]) for k in ("distance_to_reference", "output_distance", "objective_gap")},
            }
        )
    by_space: dict = {}
    for r in langevin_rows:
        by_space.setdefault(r["parameterisation"], []).append(r)
    for space, rows in by_space.items():
        Ts = [r["temperature"] for r in rows]
        out.append(
            {
                "parameterisation": space,
                "ladder": "langevin_vs_gd",
                "solver": None,
                "reference": "gd",
                "in": "temperature",
                "rungs": len(rows),
                "distance_to_reference": None,
                "output_distance": fitted_order(Ts, [r["output_distance_to_gd"] for r in rows]),
                "objective_gap": fitted_order(Ts, [r["objective_gap_to_gd"] for r in rows]),
            }
        )
    if len(implicit_rows) >= 2:
        taus = [r["tau"] for r in implicit_rows]
        out.append(
            {
                "parameterisation": "split",
                "ladder": "implicit_gd",
                "solver": None,
                "reference": "gd",
                "in": "tau",
                "rungs": len(implicit_rows),
                "distance_to_reference": None,
                **{k: fitted_order(taus, [r[k] for r in implicit_rows]) for k in ("output_distance", "objective_gap")},
            }
        )
    return out


def metrics_csv(results: dict, table: list[dict] | None = None) -> str:
    """Long format: flow, parameterisation, reference, time, objective (every step for GD and JKO, the
    comparison times for Langevin), and at the comparison times the distances to the reference."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "flow",
            "parameterisation",
            "reference",
            "temperature",
            "time",
            "objective",
            "sinkhorn_to_reference",
            "output_distance_to_reference",
            "objective_gap_to_reference",
        ]
    )
    spaces = sorted({k.split("/")[0] for k in results if k.endswith("/gd/objective")})
    for space in spaces:
        for t, F in zip(results[f"{space}/gd/times"], results[f"{space}/gd/objective"]):
            w.writerow(["gd", space, "", 0, f"{t:.10g}", f"{F:.12g}", "", "", ""])
        for key in sorted(k for k in results if k.startswith(f"{space}/langevin/") and k.endswith("/objective")):
            T = key.split("/")[2]
            for t, F in zip(results[key.replace("/objective", "/save_times")], results[key]):
                w.writerow([f"langevin T={T}", space, "", T, f"{t:.10g}", f"{F:.12g}", "", "", ""])
        for key in sorted(k for k in results if k.startswith(f"{space}/jko/") and k.endswith("/objective") and k.count("/") == 3):
            base = key[: -len("/objective")]
            marks = {round(float(t), 9): s for s, t in enumerate(results[f"{base}/save_times"])}
            for ref in REFERENCES:
                if f"{base}/{ref}/sinkhorn" not in results:
                    continue
                for t, F in zip(results[f"{base}/times"], results[key]):
                    s = marks.get(round(float(t), 9))
                    extra = ["", "", ""] if s is None else [f"{results[f'{base}/{ref}/{m}'][s]:.6g}" for m in ("sinkhorn", "output_distance", "objective_gap")]
                    w.writerow([base.split("/", 2)[2], space, ref, "", f"{t:.10g}", f"{F:.12g}", *extra])
    return buf.getvalue()


# --------------------------------------------------------------------------- figures

SPACE_UNITS = {"split": "u ∈ R²", "signed": "w ∈ R², signed mass", "lifted": "(w, α) ∈ R³", "sphere": "(φ, a) ∈ S¹ × R"}
DASHES = {"newton": "-", "linearised": "--", "dykstra": ":"}


def _space_rows(summary: dict, space: str) -> list[dict]:
    return [r for r in summary["table"] if r["parameterisation"] == space]


def draw(cfg: Config, rd: RunDir, results: dict, summary: dict) -> None:
    gmin = (summary.get("global_min") or {}).get("value_for_every_space")
    F_star = None if gmin is None else gmin["value"]
    shift = (lambda F: np.maximum(np.asarray(F) - F_star, 1e-16)) if F_star is not None else (lambda F: np.asarray(F))
    ylabel = r"excess $F(\mu_t) - F^\star$ (loss units)" if F_star is not None else r"objective $F(\mu_t)$ (loss units)"
    spaces = [s for s in summary["parameterisations"] if f"{s}/gd/objective" in results]
    styles: dict = {}

    # objective: GD, Langevin at each T (mean of the runs), JKO rungs (first solver)
    panel_list = []
    for space in spaces:
        rows = _space_rows(summary, space)
        keys = sorted({(r["tau"], r["blur"], r["key"], r["solver"]) for r in rows}, key=lambda k: (-k[0], -k[1]))
        colors = plots.ordered_colors(max(len(keys), 1), top=0.85)
        cv = {"GD (reference)": (results[f"{space}/gd/times"], shift(results[f"{space}/gd/objective"]))}
        styles["GD (reference)"] = {"color": "k", "lw": 3, "alpha": 0.35}
        for T in sorted({r["temperature"] for r in rows}):
            k = f"{space}/langevin/{_tkey(T)}/objective"
            if k in results:
                label = f"Langevin T={T:.3g}"
                cv[label] = (results[f"{space}/langevin/{_tkey(T)}/save_times"], shift(results[k]))
                styles[label] = {"color": "0.4", "ls": ":", "marker": "s", "ms": 2}
        for c, (tau, blur, key, solver) in zip(colors, keys):
            base = f"{space}/jko/{key}"
            label = f"JKO {solver}, τ={tau:g}, ε={blur:.3g}"
            cv[label] = (results[f"{base}/times"], shift(results[f"{base}/objective"]))
            styles[label] = {"color": c, "ls": DASHES[solver]}
        panel_list.append({"ylabel": ylabel, "curves": cv, "title": f"{space}: {SPACE_UNITS[space]}"})
    if panel_list:
        fig = plots.panels(panel_list, styles=styles, title=f"{cfg.name}: objective" + (f" (F* = {F_star:.6g})" if F_star is not None else ""))
        rd.savefig(fig, "objective")
        plots.close(fig)

    # distance over time: outputs to GD (solid) and to Langevin at the rung's T (dotted)
    panel_list = []
    for space in spaces:
        rows = _space_rows(summary, space)
        keys = sorted({(r["tau"], r["blur"], r["key"], r["solver"]) for r in rows}, key=lambda k: (-k[0], -k[1]))
        colors = plots.ordered_colors(max(len(keys), 1), top=0.85)
        cv = {}
        for c, (tau, blur, key, solver) in zip(colors, keys):
            base = f"{space}/jko/{key}"
            for ref, ls in (("gd", "-"), ("langevin", ":")):
                if f"{base}/{ref}/output_distance" in results:
                    label = f"{solver} τ={tau:g} ε={blur:.3g} vs {ref}"
                    cv[label] = (results[f"{base}/save_times"], results[f"{base}/{ref}/output_distance"])
                    styles[label] = {"color": c, "ls": ls, "marker": "o", "ms": 2}
        if space == "split" and "sampled/output_distance" in results:
            label = f"GD, m = {cfg.gd.particles} sampled, vs gd"
            cv[label] = (results["split/gd/save_times"], results["sampled/output_distance"])
            styles[label] = {"color": "0.5", "lw": 1}
        panel_list.append(
            {"ylabel": r"$\|f^{JKO}_t - f^{ref}_t\|_2 / \|y\|_2$ (relative, on the data)", "curves": cv, "title": f"{space}: {SPACE_UNITS[space]}"}
        )
    # from the first saved time after t = 0: there every flow starts from one measure, a distance at
    # round-off that would stretch the log axis over many decades
    for panel in panel_list:
        panel["curves"] = {k: (np.asarray(t)[np.asarray(t) > 0], np.asarray(v)[np.asarray(t) > 0]) for k, (t, v) in panel["curves"].items()}
    if panel_list:
        fig = plots.panels(panel_list, styles=styles, title=f"{cfg.name}: output distance to GD (solid) and to Langevin at T = ε/(4τ) (dotted)")
        rd.savefig(fig, "distance")
        plots.close(fig)

    # the ladders at t = T: S_b and the output distance against τ, per ladder and reference, with the Monte-Carlo error
    order_of = {(o["parameterisation"], o["ladder"], o["solver"], o["reference"]): o for o in summary.get("orders", [])}
    metrics = (
        ("distance_to_reference", "mc_error_distance", rf"$S_{{{cfg.compare.sinkhorn_blur:g}}}$ to the reference at t = T (squared units of θ)"),
        ("output_distance", "mc_error_output", r"$\|f^{JKO}_T - f^{ref}_T\|_2 / \|y\|_2$ at t = T (relative)"),
    )
    for metric, mc_key, ylab in metrics:
        panel_list = []
        for space in spaces:
            rows = _space_rows(summary, space)
            solvers = sorted({r["solver"] for r in rows})
            cv = {}
            for ladder, color in (("to_gd", "C0"), ("to_langevin", "C3")):
                for ref, ls in (("gd", "-"), ("langevin", "--")):
                    for solver in solvers:
                        sel = sorted([r for r in rows if r["ladder"] == ladder and r["reference"] == ref and r["solver"] == solver], key=lambda r: -r["tau"])
                        if not sel:
                            continue
                        o = order_of.get((space, ladder, solver, ref), {}).get(metric)
                        label = f"{ladder}, {solver}, vs {ref}" + (f" (order {o:.2f})" if o is not None else "")
                        cv[label] = ([r["tau"] for r in sel], [r[metric] for r in sel])
                        styles[label] = {"color": color, "ls": ls if solver == "newton" else ":", "marker": "o"}
                        if ref == "langevin" and solver == solvers[0]:
                            mlabel = f"{ladder}: Langevin MC error"
                            cv[mlabel] = ([r["tau"] for r in sel], [r[mc_key] for r in sel])
                            styles[mlabel] = {"color": color, "ls": "none", "marker": "x"}
            panel_list.append({"ylabel": ylab, "curves": cv, "title": f"{space}: {SPACE_UNITS[space]}"})
        if panel_list:
            what = "S_b" if metric == "distance_to_reference" else "outputs"
            fig = plots.panels(
                panel_list,
                xlabel=r"JKO step $\tau$ (mean-field time)",
                logx=True,
                styles=styles,
                title=f"{cfg.name}: the ladders at t = T = {cfg.compare.final_time:g} ({what})",
            )
            rd.savefig(fig, "ladder" if metric == "distance_to_reference" else "ladder_outputs")
            plots.close(fig)

    if "pictures/masses" in results and "sampled/positions" in results:
        _draw_densities(cfg, rd, results)


def _draw_densities(cfg: Config, rd: RunDir, results: dict) -> None:
    L = cfg.grid.half_width
    n1, n2 = (int(c) for c in results["pictures/cells"])
    masses, st = results["pictures/masses"], results["pictures/save_times"]
    area = (2 * L / n1) * (2 * L / n2)
    dens = masses.reshape(len(masses), 2, n1, n2) / area
    pos, sm = results["sampled/positions"], results["sampled/masses"]
    W, alpha = results["teacher/W"], results["teacher/alpha"]
    tau = float(results["pictures/tau"])
    rows = [
        {
            "positive": dens[s, 0],
            "negative": dens[s, 1],
            "particles": pos[s],
            "signs": np.sign(sm),
            "time": float(st[s]),
            "grid_label": f"JKO {n1}², τ={tau:g}",
            "particle_label": f"GD, m = {len(sm)}",
        }
        for s in range(len(st))
    ]
    extent = (-L, L, -L, L)
    pick = np.unique(np.linspace(0, len(rows) - 1, min(cfg.output.density_times, len(rows))).round().astype(int))
    fig = plots.density_vs_particles(
        [rows[s] for s in pick],
        extent,
        W,
        np.sign(alpha),
        title=f"{cfg.name}: the split grid measure (mass per unit area of u, by sign) and the particles; dashed: teacher neurons",
    )
    rd.savefig(fig, "densities")
    plots.close(fig)
    if cfg.output.animation:
        rd.write_bytes("jko_vs_gd.gif", plots.density_vs_particles_gif(rows, extent, W, np.sign(alpha)))


def report(cfg: Config, rd: RunDir) -> dict:
    summary = rd.read_json("summary.json")
    draw(cfg, rd, rd.load_npz("results.npz"), summary)
    return summary
