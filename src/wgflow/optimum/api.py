"""Entry points: the global minimum of data or of a wgflow Objective, dual bounds, and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from wgflow.errors import InputError, require
from wgflow.measure import Measure
from wgflow.objective import Objective
from wgflow.optimum.dual import NORMS, DualBound, best_scaled_dual, exact_dual_norm, sampled_bound
from wgflow.optimum.losses import CONVEX_LOSSES
from wgflow.optimum.patterns import MAX_EXACT_RANK, effective_rank, enumerate_patterns
from wgflow.optimum.program import (
    NORM_OF_PARAMETERISATION,
    ConvexProblem,
    ConvexSolver,
    GlobalOptimum,
    _check_lam,
    excess,
    float64,
    make_problem,
    solve,
)

_UNSUPPORTED_HINT = (
    "for a run that has no exact program, dual_bound_for(objective, measure) gives a lower estimate of F* from the run's residual (sampled, not certified)"
)


def global_minimum(
    X,
    y,
    lam: float,
    *,
    norm: str = "l2",
    reduction: str = "sum",
    solver: ConvexSolver = ConvexSolver(),
    patterns: str = "exact",
    num_samples: int = 100_000,
    key: int = 0,
    loss: str = "square",
) -> GlobalOptimum:
    """Certified global minimum of the weight-decayed square loss (no 1/2) for data (X, y) (a bias is a column of ones).

    ``norm="l2"``: Σ_j (f(x_j) − y_j)² + λ Σ_i (|w_i|² + α_i²) (``lifted``); ``norm="l1"``:
    the ``signed_square`` penalty λ Σ_i ‖u_i‖₁. ``reduction="mean"`` divides the data
    term by n. ``loss="logistic"``: Σ_j log(1 + exp(−y_j f(x_j))), labels ±1, in place of
    the square loss. Exact for rank(X) ≤ 3; ``patterns="sampled"`` (square loss) gives
    bounds for any d.
    """
    problem = make_problem(X, y, lam, norm=norm, reduction=reduction, loss=loss)
    _require_exact_or_sampled(problem, patterns)
    return solve(problem, solver, patterns=patterns, num_samples=num_samples, key=key)


def _require_exact_or_sampled(problem: ConvexProblem, patterns: str) -> None:
    require(patterns in ("exact", "sampled"), "patterns", f"unknown mode {patterns!r}", "use 'exact' or 'sampled'")
    if patterns == "exact" and problem.d > MAX_EXACT_RANK:
        r = effective_rank(problem.X)
        if r > MAX_EXACT_RANK:
            raise InputError(
                "data.X",
                f"exact enumeration of activation patterns needs d ≤ {MAX_EXACT_RANK} (a bias column counts), got d = {problem.d} (rank {r})",
                "only bounds are available for this d: dual_bound(...) gives the dual lower bound with the dual norm "
                "estimated from sampled neurons (a heuristic lower estimate, not certified), and "
                "global_minimum(..., patterns='sampled') an upper bound from sampled patterns",
            )


def problem_of(objective: Objective) -> ConvexProblem:
    """The convex problem whose optimum is the global minimum F* of a wgflow Objective.

    Reads X, y, λ, the reduction, the loss and the parameterisation; raises
    :class:`InputError` when there is no exact program: σ other than ReLU, a loss
    other than the square and logistic losses, λ ≤ 0, or a parameterisation of unknown regulariser.
    """
    if not isinstance(objective, Objective):
        raise InputError("objective", "must be a wgflow Objective", "build it with wgflow.make_objective(...)")
    unit = objective.unit
    require(
        unit.activation.name == "relu",
        "objective.activation",
        f"the convex reformulation is exact only for ReLU, not {unit.activation.name!r}",
        _UNSUPPORTED_HINT,
    )
    require(
        objective.loss.name in CONVEX_LOSSES,
        "objective.loss",
        f"the global minimum is implemented for the losses {list(CONVEX_LOSSES)}, not {objective.loss.name!r}",
        "use loss='square' or loss='logistic'",
    )
    require(
        unit.name in NORM_OF_PARAMETERISATION,
        "objective.parameterisation",
        f"no convex program is known for the parameterisation {unit.name!r}",
        f"use one of {sorted(NORM_OF_PARAMETERISATION)}",
    )
    lam = float(objective.lam)
    _check_lam(lam)
    return make_problem(
        np.asarray(objective.X),
        np.asarray(objective.y),
        lam,
        norm=NORM_OF_PARAMETERISATION[unit.name],
        reduction=objective.reduction,
        loss=objective.loss.name,
    )


def global_minimum_for(objective: Objective, solver: ConvexSolver = ConvexSolver()) -> GlobalOptimum:
    """The certified global minimum F* of ``objective`` over measures of any width.

    ℓ2 (weight 2λ) for ``lifted``, ``signed``, ``split``, ``sphere``; ℓ1 (weight λ)
    for ``signed_square``. The upper bound is ``objective.value`` of the rebuilt
    network's mean-field measure (``objective.unit.from_plain``).
    """
    problem = problem_of(objective)
    _require_exact_or_sampled(problem, "exact")
    return solve(problem, solver, objective=objective)


def dual_bound(
    X,
    y,
    lam: float,
    residual,
    *,
    norm: str = "l2",
    reduction: str = "sum",
    activation: str = "relu",
    scale_free: bool = True,
    method: str = "auto",
    num_samples: int = 20_000,
    ascent_steps: int = 300,
    key: int = 0,
) -> DualBound:
    """Lower bound on the global minimum from a residual r = y − f (any network's, any d).

    ``method="exact"`` (ReLU, rank(X) ≤ 3): the dual norm is maximised over every
    chamber, the bound is certified. ``"sampled"``: random neurons plus local ascent
    estimate the dual norm from below, so the result is a heuristic lower *estimate*
    that can exceed the optimum (``certified=False``). ``"auto"`` picks exact when it can.
    For a non-ReLU σ the bound is that of the convex relaxation over measures of
    neurons with cost β‖g‖ (``scale_free``; only ‖g‖ = 1 for ``sphere``), which is a
    lower bound for networks of every width; if σ(0) ≠ 0 the residual is centred first
    (a neuron with g → 0 is a free constant).
    """
    require(norm in NORMS, "norm", f"unknown norm {norm!r}", f"use one of {list(NORMS)}")
    require(method in ("auto", "exact", "sampled"), "method", f"unknown method {method!r}", "use 'auto', 'exact' or 'sampled'")
    problem = make_problem(X, y, lam, norm=norm, reduction=reduction)
    r = np.asarray(residual, np.float64).reshape(-1)
    require(r.shape == problem.y.shape, "residual", f"has shape {r.shape}, expected ({problem.n},)", "give y − f at the training inputs")
    require(bool(np.all(np.isfinite(r))), "residual", "contains NaN/inf", "give a finite residual")
    from wgflow.units import get_activation

    sigma = get_activation(activation)
    can_exact = sigma.name == "relu" and effective_rank(problem.X) <= MAX_EXACT_RANK
    if method == "exact" and not can_exact:
        raise InputError(
            "method",
            "the exact dual norm needs ReLU and rank(X) ≤ 3",
            "use method='sampled' (a heuristic lower estimate, not certified)",
        )
    if can_exact and method != "sampled":
        pat = enumerate_patterns(problem.X)
        M = exact_dual_norm(pat, problem.X, r, norm)
        value, s = best_scaled_dual(problem.y, r, M, problem.weight)
        return DualBound(problem.scale * value, M, s, True, "exact-patterns", pat.n_regions, "certified: M(r) maximised exactly over every chamber")
    note = ""
    if scale_free and sigma.homogeneity != 1 and float(sigma(jnp.zeros(()))) != 0.0:
        r = r - r.mean()
        note = "; σ(0) ≠ 0: residual centred (a vanishing neuron is a free constant)"
    with float64():
        b = sampled_bound(
            problem.X,
            problem.y,
            r,
            problem.weight,
            activation=sigma,
            norm=norm,
            scale_free=scale_free,
            num_samples=num_samples,
            ascent_steps=ascent_steps,
            key=key,
        )
    return DualBound(problem.scale * b.value, b.dual_norm, b.scale, False, b.method, b.n_evaluated, b.note + note)


def dual_bound_for(objective: Objective, mu: Measure, **kwargs) -> DualBound:
    """:func:`dual_bound` for a wgflow ``objective`` from the residual of the measure ``mu``.

    Any σ, square loss. The neuron set and weight follow the parameterisation:
    ℓ2 and 2λ (``lifted``, ``signed``, ``split``; ``sphere`` with unit g only), ℓ1 and λ
    (``signed_square``).
    """
    if not isinstance(objective, Objective):
        raise InputError("objective", "must be a wgflow Objective", "build it with wgflow.make_objective(...)")
    require(
        objective.loss.name == "square",
        "objective.loss",
        f"the dual bound is implemented for the square loss, not {objective.loss.name!r}",
        "use loss='square'",
    )
    name = objective.unit.name
    require(
        name in NORM_OF_PARAMETERISATION, "objective.parameterisation", f"unknown regulariser of {name!r}", f"use one of {sorted(NORM_OF_PARAMETERISATION)}"
    )
    r = np.asarray(objective.y - objective.outputs(mu), np.float64)
    kwargs.setdefault("scale_free", name != "sphere")
    return dual_bound(
        np.asarray(objective.X),
        np.asarray(objective.y),
        float(objective.lam),
        r,
        norm=NORM_OF_PARAMETERISATION[name],
        reduction=objective.reduction,
        activation=objective.unit.activation.name,
        **kwargs,
    )


# --------------------------------------------------------------------------- CLI


def optimum_command(
    data: Path,
    lam: float,
    bias: bool,
    json_output: bool,
    *,
    norm: str = "l2",
    reduction: str = "mean",
    formulation: str = "working_set",
    loss: str = "square",
) -> int:
    """``wgflow optimum --data``: the certified global minimum for X, y from an ``.npz`` or ``.csv`` file.

    ``reduction`` defaults to the experiments' mean over the data. Prints the global minimum,
    both bounds, the gap, the width of the optimal network (atoms merged), the number of
    patterns and the solve time (with ``json_output``: one JSON object with keys
    ``global_min``, ``lower_bound``, ``upper_bound``, ``gap``, ``relative_gap``,
    ``n_patterns``, ``width``, ``unmerged_width``, ``seconds``, ...). Returns 0 when
    certified, 1 when solved but the certificate does not close (relative gap > 1e-6), 2 on
    bad input (message on stderr).
    """
    from wgflow.data import load_data

    try:
        require(lam is not None, "--lam", "the weight decay λ is needed with --data", "give --lam, e.g. --lam 1e-3 (or --run DIR to take a run's)")
        ds = load_data(data, bias=bias)
        opt = global_minimum(ds.X, ds.y, lam, norm=norm, reduction=reduction, loss=loss, solver=ConvexSolver(formulation=formulation))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = opt.summary()
    out.update(data=str(data), n=int(ds.n), d=int(ds.d), bias=bool(bias))
    ok = opt.certified and opt.relative_gap <= 1e-6
    if json_output:
        print(json.dumps(out, indent=2))
    else:
        print(f"data         {data}  (n = {ds.n}, d = {ds.d}{' incl. bias' if bias else ''})")
        _print_optimum(opt, ok)
    return 0 if ok else 1


def _print_optimum(opt: GlobalOptimum, ok: bool, indent: str = "") -> None:
    print(f"{indent}global min   {opt.value:.12g}   (λ = {opt.lam:g}, {opt.loss} loss, norm {opt.norm}, reduction {opt.reduction})")
    print(f"{indent}lower bound  {opt.lower_bound:.12g}   (dual certificate)")
    print(f"{indent}upper bound  {opt.upper_bound:.12g}   (network of width {opt.width}, evaluated by wgflow's Objective)")
    print(f"{indent}gap          {opt.gap:.3g}   (relative {opt.relative_gap:.3g}){'' if ok else '  NOT CERTIFIED to 1e-6'}")
    print(f"{indent}network      width {opt.width} after merging the {opt.unmerged_width} atoms of the convex solution")
    print(f"{indent}patterns     {opt.n_patterns}   (chambers {opt.n_regions})")
    print(f"{indent}solve time   {opt.seconds:.3f} s   ({opt.formulation}, {opt.rounds} round(s), status {opt.solver_status})")


def read_run(directory: Path) -> tuple[dict, np.ndarray, np.ndarray, dict | None]:
    """(config, X, y, summary or None) of a finished run folder of a kind that trains two-layer networks
    (``teacher_student``, ``fit``): its resolved config.toml and the training data kept in results.npz."""
    import tomllib

    directory = Path(directory)
    cfg_path, res_path = directory / "config.toml", directory / "results.npz"
    require(directory.is_dir(), "--run", f"{str(directory)!r} is not a folder", "give the --out folder of a finished run")
    require(
        cfg_path.is_file() and res_path.is_file(),
        "--run",
        f"{directory} is not a finished wgflow run (no config.toml / results.npz)",
        "give the --out folder of a run that completed",
    )
    try:
        cfg = tomllib.loads(cfg_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError("--run", f"{cfg_path} is not valid TOML ({exc})") from None
    model = cfg.get("model")
    require(
        isinstance(model, dict) and {"lam", "reduction", "loss", "activation", "parameterisations"} <= set(model),
        "--run",
        f"{directory} is a run of the kind {cfg.get('kind')!r}, which has no two-layer model section",
        "give a run of the teacher_student or fit kind (wgflow run chizat-bach-relu, wgflow run fit)",
    )
    with np.load(res_path, allow_pickle=False) as f:
        require(
            "X" in f.files and "y" in f.files,
            "--run",
            f"{res_path} keeps no training data (X, y): the run was written by an older wgflow",
            "re-run it with this version, or give the data with --data FILE --lam λ",
        )
        X, y = np.asarray(f["X"]), np.asarray(f["y"])
    summary = None
    if (directory / "summary.json").is_file():
        summary = json.loads((directory / "summary.json").read_text())
    return cfg, X, y, summary


def optimum_run_command(directory: Path, json_output: bool, *, formulation: str = "working_set") -> int:
    """``wgflow optimum --run DIR``: the certified optimum of a run's own training data, λ, loss and
    reduction, for each of its parameterisations, beside the run's best final objective and excess.
    Exit codes as :func:`optimum_command`."""
    from wgflow.objective import make_objective

    try:
        cfg, X, y, summary = read_run(directory)
        from wgflow.experiments.plugins import import_plugins

        import_plugins(cfg.get("plugins"))  # a run's registered names (activation, parameterisation, loss)
        model = cfg["model"]
        optima: dict[str, GlobalOptimum] = {}
        for param in model["parameterisations"]:
            objective = make_objective(X, y, param, model["activation"], model["loss"], model["lam"], model["reduction"])
            optima[param] = global_minimum_for(objective, ConvexSolver(formulation=formulation))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = (summary or {}).get("runs", [])
    out: dict = {"run": str(directory), "kind": cfg.get("kind"), "n": int(X.shape[0]), "d": int(X.shape[1]), "optima": {}}
    all_ok = True
    for param, opt in optima.items():
        ok = opt.certified and opt.relative_gap <= 1e-6
        all_ok &= ok
        entry = opt.summary()
        finals = [
            r["final_objective"]
            for r in runs
            if r.get("parameterisation") == param and r.get("status") == "successful" and r.get("final_objective") is not None
        ]
        if finals:
            best = min(finals)
            entry["run_best_final_objective"] = best
            entry["run_best_excess"], entry["run_best_relative_excess"] = excess(best, opt)
            entry["run_successful_runs"] = len(finals)
        out["optima"][param] = entry
    if json_output:
        print(json.dumps(out, indent=2))
        return 0 if all_ok else 1
    print(f"run          {directory}  ({cfg.get('kind')}: n = {X.shape[0]}, d = {X.shape[1]} as trained, bias included)")
    for param, opt in optima.items():
        entry = out["optima"][param]
        print(f"\n{param}")
        _print_optimum(opt, opt.certified and opt.relative_gap <= 1e-6, indent="  ")
        if "run_best_final_objective" in entry:
            print(
                f"  the run      best final F = {entry['run_best_final_objective']:.12g} over {entry['run_successful_runs']} successful run(s): "
                f"excess {entry['run_best_excess']:.3g} (relative {entry['run_best_relative_excess']:.3g})"
            )
    return 0 if all_ok else 1
