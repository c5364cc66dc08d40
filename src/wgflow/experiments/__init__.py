"""Named experiments: TOML configs, their runners, and result folders.

An experiment *kind* is a module with a pydantic ``Config``, ``run(cfg, run_dir, resume=, progress=)``,
``report(cfg, run_dir)``, optionally ``estimate(cfg) -> list[Need]`` (memory, checked before any compute),
``outputs(cfg) -> list[str]`` (the figures and other files it writes, checked against the folder first)
and ``check(cfg)`` (run before a run folder is touched, e.g. reading the user's data file). A *named
experiment* is a TOML file in ``configs/`` naming its kind. Plugins (:mod:`wgflow.experiments.plugins`:
``--plugin`` and the config key ``plugins``) are imported before a config is validated.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

from wgflow.errors import InputError
from wgflow.experiments import config as _config
from wgflow.experiments import fit, jko_vs_gd, parameterisations, resnet_digits, resnet_pl, teacher_angles, teacher_student
from wgflow.experiments.plugins import import_plugins
from wgflow.experiments.rundir import Plan, RunDir, fingerprint, open_finished, open_run, plan_run, running, stop_on_signals, writes_files
from wgflow.resources import Need, check_needs
from wgflow.runtime import CompileTimer

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (teacher_student, teacher_angles, parameterisations, jko_vs_gd, resnet_pl, resnet_digits, fit)}

CONFIG_DIR = Path(__file__).parent / "configs"


def register_kind(module: ModuleType) -> None:
    KINDS[module.KIND] = module


def named() -> dict[str, Path]:
    """Named experiments shipped with wgflow: name → TOML file."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.toml"))}


def _resolve_path(name_or_path: str) -> Path:
    table = named()
    if name_or_path in table:
        return table[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    raise InputError("experiment", f"no named experiment {name_or_path!r} and no such file", f"use one of {sorted(table)} or a path to a .toml file")


def load(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), quick: bool = False, *, plugins=(), check: bool = False):
    """(kind module, validated config) from a name or a TOML path, with ``--quick`` and ``--set`` applied.

    ``plugins`` (``--plugin``) and the config's own ``plugins`` are imported before validation and
    recorded in the config. ``check``: also run the kind's ``check(cfg)`` (``wgflow run`` does)."""
    raw = _config.load_toml(_resolve_path(name_or_path))
    quick_table = raw.pop("quick", {})
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _config.ConfigError("kind", f"unknown experiment kind {kind!r}", f"use one of {sorted(KINDS)}")
    items = list(quick_table.items()) if quick else []
    items += [_config.parse_override(o) for o in overrides]
    for key, value in items:
        _config.set_path(raw, key, value)
    if quick:
        raw["name"] = raw.get("name", "experiment")
    if plugins or "plugins" in raw:
        raw["plugins"] = import_plugins(raw.get("plugins"), plugins)
    cfg = _config.validate(KINDS[kind].Config, raw)
    if check and hasattr(KINDS[kind], "check"):
        KINDS[kind].check(cfg)
    return KINDS[kind], cfg


def default_out(cfg, quick: bool = False) -> Path:
    """``runs/NAME`` (``runs/NAME-quick`` for ``--quick``)."""
    return Path("runs") / (cfg.name + ("-quick" if quick else ""))


def _fresh_folder(base: Path) -> Path:
    """``base`` if it is missing or empty, else the first of ``base-2``, ``base-3``, … that is."""
    candidate, i = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        i += 1
        candidate = base.with_name(f"{base.name}-{i}")
    return candidate


def resource_needs(module: ModuleType, cfg) -> list[Need]:
    """What a run of ``cfg`` needs in memory, by item (none stated: an empty list)."""
    estimate = getattr(module, "estimate", None)
    return list(estimate(cfg)) if estimate is not None else []


def output_files(module: ModuleType, cfg) -> list[str]:
    """The figures and other files a run of ``cfg`` writes beside its results (the kind's
    ``outputs(cfg)``), checked against what the folder holds before anything is written."""
    outputs = getattr(module, "outputs", None)
    return list(outputs(cfg)) if outputs is not None else []


def check_resources(module: ModuleType, cfg, *, limit: float | None = None) -> float:
    """Refuse (:class:`InputError` with the estimate and the fix) a run that cannot fit in memory."""
    return check_needs(resource_needs(module, cfg), f"this run of {cfg.name}", limit=limit)


#: unit evaluations per second assumed for a time estimate (2 CPU cores; a GPU does far more)
THROUGHPUT = 1e8


def time_notice(module: ModuleType, cfg) -> str | None:
    """A line saying how long a long run may take (over an hour at :data:`THROUGHPUT`), else None."""
    work = getattr(module, "work", None)
    if work is None:
        return None
    hours = work(cfg) / THROUGHPUT / 3600
    if hours < 1:
        return None
    return f"this run evaluates about {work(cfg):.2g} units: roughly {hours:.2g} hour(s) at 10⁸ per second (a guess: machines differ by 10× and more)"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(
    name_or_path: str,
    overrides=(),
    out: str | Path | None = None,
    quick: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    *,
    overwrite: bool = False,
    force: bool = False,
    echo: Callable[[str], None] | None = None,
    plugins=(),
) -> tuple[RunDir, dict]:
    """Run an experiment into a folder; every check (config, memory, the folder) comes before
    any file is written or any compute starts (docs/experiments.md: what a run folder guarantees).

    ``out``: the folder (default ``runs/NAME``, or ``runs/NAME-2``, … when that one holds a
    run, unless ``resume``, ``overwrite`` or ``force``). ``resume``: continue the run there from
    its checkpoints. ``overwrite``: replace the run there. ``force``: write into a non-empty
    folder that is not a wgflow run (never over its files), or take over the lock of a run on
    another host. ``echo``: where notices go (default: stderr). ``plugins``: modules to import
    first (``--plugin``).
    """
    echo = echo or _stderr
    module, cfg = load(name_or_path, overrides, quick, plugins=plugins, check=True)
    text = _config.dump_toml(cfg)
    config_hash = fingerprint(text)
    check_resources(module, cfg)
    if out is not None:
        path = Path(out)
    else:
        base = default_out(cfg, quick)
        path = base if (resume or overwrite or force) else _fresh_folder(base)
        if path != base:
            echo(f"{base} holds a previous run: writing to {path} (--overwrite replaces {base}, --out chooses the folder)")
    outputs = output_files(module, cfg)
    checkpoint_fp = getattr(module, "checkpoint_fingerprint", None)
    checkpoint_hash = checkpoint_fp(cfg) if checkpoint_fp is not None else None
    if writes_files():
        plan = plan_run(path, config_hash, text, resume=resume, overwrite=overwrite, force=force, outputs=outputs, checkpoint_hash=checkpoint_hash)
    else:  # process k > 0 of a jax.distributed job: process 0 checks and writes the folder
        plan, echo = Plan(path, None, False, ()), (lambda msg: None)
    for notice in (*plan.notices, time_notice(module, cfg)):
        if notice:
            echo(notice)
    rd = open_run(
        plan,
        config_hash,
        text,
        experiment=cfg.name,
        kind=cfg.kind,
        resume=resume,
        overwrite=overwrite,
        force=force,
        outputs=outputs,
        checkpoint_hash=checkpoint_hash,
    )
    with running(rd), stop_on_signals(echo):
        if not (resume and (rd / "config.toml").is_file() and (rd / "config.toml").read_text() == text):
            rd.write_text("config.toml", text)
        with CompileTimer() as timer:
            summary = module.run(cfg, rd, resume=resume, progress=progress)
        summary["seconds"] = timer.seconds  # wall time of the whole run, figures included
        summary["compile_seconds"] = timer.compile_seconds
        summary["run_seconds"] = timer.seconds - timer.compile_seconds
        rd.write_json("summary.json", summary)
    return rd, summary


def report(path: str | Path) -> dict:
    """Re-draw the figures of a finished run and return its summary."""
    rd = open_finished(path)
    raw = _config.load_toml(rd / "config.toml")
    import_plugins(raw.get("plugins"))
    module = KINDS.get(raw.get("kind"))
    if module is None:
        raise InputError("kind", f"unknown experiment kind {raw.get('kind')!r} in {rd / 'config.toml'}", f"use one of {sorted(KINDS)}")
    cfg = _config.validate(module.Config, raw)
    return module.report(cfg, rd)


def unsuccessful(summary: dict) -> dict[str, int]:
    """How many runs of a summary did not end ``successful``, by status (its ``runs``, else its ``table`` rows)."""
    rows = summary.get("runs") or summary.get("table") or []
    counts: dict[str, int] = {}
    for row in rows:
        status = row.get("status") if isinstance(row, dict) else None
        if status is not None and status != "successful":
            counts[status] = counts.get(status, 0) + 1
    return counts
