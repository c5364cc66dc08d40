"""Experiment configs: TOML files validated by pydantic, with errors that name the field.

A config file names its experiment ``kind`` (which runner reads it) and fills the
sections of that kind's schema; every field has a default and a one-line
description (``wgflow config NAME`` prints them). ``--set section.key=value``
overrides any field; a ``[quick]`` table in a named experiment lists the
overrides that make its ``--quick`` version.
"""

from __future__ import annotations

import enum
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import tomli_w

from wgflow.errors import InputError


class Section(pydantic.BaseModel):
    """A config section: unknown keys are errors, assignments are validated, NaN and ±inf are refused."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ConfigError(InputError):
    """A config file or override that does not validate."""


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _run_name(name: str) -> str:
    if not _RUN_NAME.fullmatch(name) or ".." in name:
        raise ValueError("must be a plain folder name (letters, digits, '.', '_', '-'; no '/' or '..'): it names the folder runs/NAME")
    return name


#: an experiment's name: one folder name under ``runs/`` (never a path that leaves it)
RunName = Annotated[str, pydantic.AfterValidator(_run_name)]


def _loc(parts) -> str:
    """``("ladder", 0, "tau")`` → ``"ladder[0].tau"``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _submodel(annotation) -> type[pydantic.BaseModel] | None:
    """The section model of a field: ``Model``, ``list[Model]`` or ``Model | None``, else None."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _model_at(model, loc):
    """The section model at ``loc`` (list indices step into the item model), or None."""
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _submodel(field.annotation)
    return model


def _allows_bool(annotation) -> bool:
    if annotation is bool:
        return True
    return any(_allows_bool(a) for a in typing.get_args(annotation))


def find_boolean_misuse(model: type[pydantic.BaseModel], data: dict, prefix: tuple = ()) -> tuple[str, Any, str, str] | None:
    """(field, value, problem, fix) of the first boolean given where a number (or a list of them)
    is expected, or a number where a boolean is.

    pydantic reads ``true`` as 1 for an int or float field and 1 as true; a config never means that."""
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None:
            continue  # an unknown key: pydantic names it
        loc = (*prefix, key)
        sub = _submodel(field.annotation)
        if sub is not None:
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    found = find_boolean_misuse(sub, item, (*loc, i) if isinstance(value, list) else loc)
                    if found:
                        return found
        elif not _allows_bool(field.annotation):
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, bool) for v in values):
                return _loc(loc), value, "must be a number, not a boolean", f"give {_loc(loc)} a number"
        elif _only_bool(field.annotation) and not isinstance(value, bool):
            return _loc(loc), value, "must be true or false", f"write {_loc(loc)}=true or {_loc(loc)}=false"
    return None


def _only_bool(annotation) -> bool:
    return annotation is bool or (bool in typing.get_args(annotation) and set(typing.get_args(annotation)) <= {bool, type(None)})


def format_validation_error(exc: pydantic.ValidationError, model: type[pydantic.BaseModel]) -> list[tuple[str, str]]:
    """(field, problem) for each error of ``exc``: unknown keys list the allowed ones (also in a list item)."""
    out = []
    for err in exc.errors():
        loc = _loc(err["loc"]) or "config"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "finite_number":
            msg = "must be a finite number (NaN and ±inf are not allowed)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, err["loc"][:-1])
            allowed = sorted(parent.model_fields) if parent is not None else []
            msg = f"unknown key; allowed keys here: {allowed}"
        value = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(value, dict) else f" (got {value!r})"
        out.append((loc, f"{msg}{shown}"))
    return out


def validate(model: type[pydantic.BaseModel], data: dict) -> pydantic.BaseModel:
    """``model(**data)`` with a :class:`ConfigError` naming each bad field (once), its value and the allowed values."""
    misuse = find_boolean_misuse(model, data)
    if misuse is not None:
        field, value, problem, fix = misuse
        raise ConfigError(field, problem, fix, value)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = format_validation_error(exc, model)
        (field, first), rest = errors[0], errors[1:]
        raise ConfigError(field, "; ".join([first] + [f"{loc}: {msg}" for loc, msg in rest])) from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (numbers, booleans, strings, lists), bare words as strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_path(data: dict, dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``dotted = "a.b"``, creating sections as needed."""
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(dotted, f"'{p}' is a value, not a section")
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError("--set", f"override {item!r} has no '='", "write --set section.key=value")
    key, _, text = item.partition("=")
    return key.strip(), parse_value(text.strip())


def load_toml(path: Path) -> dict:
    """A TOML file as a dict; a missing, unreadable or invalid file is a :class:`ConfigError` naming it."""
    path = Path(path)
    if path.is_dir():
        hint = f" (did you mean {path / 'config.toml'}?)" if (path / "config.toml").is_file() else ""
        raise ConfigError("config", f"{path} is a folder, not a TOML file{hint}", "give a named experiment (wgflow list) or a .toml file")
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config", f"file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None


def dump_toml(config: pydantic.BaseModel) -> str:
    """The resolved config as TOML (None values omitted)."""
    data = json.loads(config.model_dump_json(exclude_none=True))
    return tomli_w.dumps(data)


def _bounds(metadata) -> str:
    """``> 0``, ``≥ 0``, ``in (0, 1)`` … from a field's annotated-types constraints."""
    lo = hi = None
    for m in metadata:
        for attr, sign in (("gt", "("), ("ge", "[")):
            if getattr(m, attr, None) is not None:
                lo = (sign, getattr(m, attr))
        for attr, sign in (("lt", ")"), ("le", "]")):
            if getattr(m, attr, None) is not None:
                hi = (sign, getattr(m, attr))
    if lo and hi:
        return f" in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    if lo:
        return f" {'>' if lo[0] == '(' else '≥'} {lo[1]:g}"
    if hi:
        return f" {'<' if hi[0] == ')' else '≤'} {hi[1]:g}"
    return ""


def _registry(metadata) -> tuple[str, dict] | None:
    for m in metadata:
        found = getattr(getattr(m, "func", None), "registry", None)
        if found is not None:
            return found
    return None


_KIND_WORDS = {int: "integer", float: "number", str: "text", bool: "true | false", Path: "path"}


def allowed(annotation, metadata=()) -> str:
    """The values a field takes, in words: choices (``a | b``), registered names, types and bounds.

    Registries (activations, parameterisations, losses) are read now, so names that a plugin
    registered are listed too."""
    metadata = list(metadata)
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        return allowed(base, [*metadata, *extra])
    reg = _registry(metadata)
    if reg is not None:
        kind, table = reg
        return " | ".join(sorted(table)) + f" (a registered {kind})"
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        words = " or ".join(allowed(a) for a in args)
        return words + (", or unset" if len(args) < len(typing.get_args(annotation)) else "")
    if origin in (list, tuple):
        (item, *_) = typing.get_args(annotation) or (Any,)
        if isinstance(item, type) and issubclass(item, pydantic.BaseModel):
            return f"list of tables with keys {', '.join(item.model_fields)}"
        return f"list of: {allowed(item)}" + _bounds(metadata)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(str(m.value) for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return "a table"
    if any(getattr(getattr(m, "func", None), "__name__", "") == "_run_name" for m in metadata):
        return "folder name (letters, digits, . _ -)"
    word = _KIND_WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return word + _bounds(metadata)


def describe(model: type[pydantic.BaseModel], prefix: str = "", values: pydantic.BaseModel | None = None) -> list[tuple[str, str, str, str]]:
    """(dotted key, value, allowed values, description) for every field, for ``wgflow config --describe``:
    the value in ``values`` (a resolved config) when given, else the field's default."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        sub = getattr(values, name) if values is not None else None
        if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel):
            rows.extend(describe(ann, key + ".", sub))
        else:
            value = sub if values is not None else field.get_default(call_default_factory=True)
            rows.append((key, _shown(value), allowed(ann, field.metadata), field.description or ""))
    return rows


def _shown(value: Any) -> str:
    """A value as it is written in TOML, on one line (``true``, ``"relu"``, ``[4, 5]``; unset: ``—``)."""
    if value is None:
        return "—"
    if isinstance(value, pydantic.BaseModel):
        value = json.loads(value.model_dump_json(exclude_none=True))
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_shown(v)}" for k, v in value.items() if v is not None) + "}"
    return repr(value)
