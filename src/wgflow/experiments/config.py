"""Experiment configs: TOML files validated by pydantic, with errors that name the field.

A config file names its experiment ``kind`` (which runner reads it) and fills the
sections of that kind's schema; every field has a default and a one-line
description (``wgflow config NAME`` prints them). ``--set section.key=value``
overrides any field; a ``[quick]`` table in a named experiment lists the
overrides that make its ``--quick`` version.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pydantic
import tomli_w

from wgflow.errors import InputError


class Section(pydantic.BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(InputError):
    """A config file or override that does not validate."""


def format_validation_error(exc: pydantic.ValidationError, model: type[pydantic.BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, err["loc"][:-1])
            allowed = sorted(parent.model_fields) if parent is not None else []
            msg = f"unknown key; allowed keys here: {allowed}"
        value = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {value!r})"
        lines.append(f"{loc}: {msg}{shown}")
    return "; ".join(lines)


def _model_at(model, loc):
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, pydantic.BaseModel) else None


def validate(model: type[pydantic.BaseModel], data: dict) -> pydantic.BaseModel:
    """``model(**data)`` with a :class:`ConfigError` naming each bad field, its value and the allowed values."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(field, format_validation_error(exc, model)) from None


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
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("config", f"file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None


def dump_toml(config: pydantic.BaseModel) -> str:
    """The resolved config as TOML (None values omitted)."""
    data = json.loads(config.model_dump_json(exclude_none=True))
    return tomli_w.dumps(data)


def describe(model: type[pydantic.BaseModel], prefix: str = "", values: pydantic.BaseModel | None = None) -> list[tuple[str, str, str]]:
    """(dotted key, value, description) for every field, for ``wgflow config --describe``:
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
            rows.append((key, repr(value), field.description or ""))
    return rows
