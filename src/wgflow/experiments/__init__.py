"""Named experiments: TOML configs, their runners, and result folders.

An experiment *kind* is a module with a pydantic ``Config``, ``run(cfg, run_dir, resume=, progress=)``
and ``report(cfg, run_dir)``, optionally ``check(cfg)`` (run before a run folder is touched, e.g. reading
the user's data file). A *named experiment* is a TOML file in ``configs/`` naming its kind. Plugins
(:mod:`wgflow.experiments.plugins`: ``--plugin`` and the config key ``plugins``) are imported before
a config is validated.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

from wgflow.errors import InputError
from wgflow.experiments import config as _config
from wgflow.experiments import fit, jko_vs_gd, parameterisations, resnet_digits, resnet_pl, teacher_student
from wgflow.experiments.plugins import import_plugins
from wgflow.experiments.rundir import RunDir
from wgflow.runtime import CompileTimer

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (teacher_student, parameterisations, jko_vs_gd, resnet_pl, resnet_digits, fit)}

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


def run(
    name_or_path: str,
    overrides=(),
    out: str | Path | None = None,
    quick: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    plugins=(),
) -> tuple[RunDir, dict]:
    module, cfg = load(name_or_path, overrides, quick, plugins=plugins, check=True)
    path = Path(out) if out is not None else Path("runs") / (cfg.name + ("-quick" if quick else ""))
    if not resume and (path / "checkpoints").exists():
        shutil.rmtree(path / "checkpoints")
    rd = RunDir(path)
    rd.write_text("config.toml", _config.dump_toml(cfg))
    with CompileTimer() as timer:
        summary = module.run(cfg, rd, resume=resume, progress=progress)
    summary["seconds"] = timer.seconds  # wall time of the whole run, figures included
    summary["compile_seconds"] = timer.compile_seconds
    summary["run_seconds"] = timer.seconds - timer.compile_seconds
    rd.write_json("summary.json", summary)
    return rd, summary


def report(path: str | Path) -> dict:
    """Re-draw the figures of a finished run and return its summary."""
    rd = RunDir(path)
    if not (rd / "config.toml").exists() or not (rd / "summary.json").exists():
        raise InputError("DIR", f"{path} is not a finished wgflow run (no config.toml/summary.json)", "give the --out folder of a run that completed")
    raw = _config.load_toml(rd / "config.toml")
    import_plugins(raw.get("plugins"))
    module = KINDS.get(raw.get("kind"))
    if module is None:
        raise InputError("kind", f"unknown experiment kind {raw.get('kind')!r} in {path}/config.toml")
    cfg = _config.validate(module.Config, raw)
    return module.report(cfg, rd)
