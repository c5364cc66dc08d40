"""Plugins: modules imported by name before a config is read, so that the activations, losses
and parameterisations they register work by name in configs and ``--set``.

``wgflow run NAME --plugin my_module`` (repeatable), ``wgflow config NAME --plugin my_module``,
or ``plugins = ["my_module"]`` at the top of a config file. A name is a module importable
from the current directory or ``sys.path`` (``my_module`` for ``./my_module.py``, or a
dotted package path), or the path of a ``.py`` file. A plugin is an ordinary module::

    # my_module.py
    import jax.numpy as jnp
    from wgflow.units import Activation, register_activation

    register_activation(Activation("softplus2", lambda z: jnp.logaddexp(0.0, 2 * z) / 2))
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

from wgflow.errors import InputError

FIX = "put my_module.py in the current directory (or on PYTHONPATH), give a dotted name of an installed package, or the path of a .py file"


def import_plugin(name: str) -> ModuleType:
    """Import one plugin (a module name or a ``.py`` path); any failure is one :class:`InputError`."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("plugins", "a plugin must be a non-empty module name", FIX, value=name)
    name = name.strip()
    try:
        if name.endswith(".py"):
            return _import_file(Path(name))
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:  # a console script's sys.path lacks the current directory
            sys.path.insert(0, cwd)
        return importlib.import_module(name)
    except InputError:
        raise
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        what = f"no module named {missing!r}" if missing == name else f"it imports {missing!r}, which is not installed"
        raise InputError(
            "plugins", f"cannot import the plugin {name!r}: {what}", FIX if missing == name else f"pip install the package that provides {missing!r}"
        ) from None
    except SyntaxError as exc:
        raise InputError("plugins", f"the plugin {name!r} has a syntax error: {exc.msg} ({exc.filename}, line {exc.lineno})", "fix the plugin's code") from None
    except Exception as exc:  # anything the plugin's own code raised on import
        raise InputError("plugins", f"importing the plugin {name!r} failed: {type(exc).__name__}: {exc}", "fix the plugin's code (it runs on import)") from None


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise InputError("plugins", f"plugin file {str(path)!r} does not exist", FIX)
    key = f"wgflow_plugin_{path.resolve().as_posix().replace('/', '_').replace('.', '_')}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise InputError("plugins", f"{str(path)!r} cannot be imported as a Python module", FIX)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


def import_plugins(names: Iterable[str] | str | None, extra: Iterable[str] = ()) -> list[str]:
    """Import every plugin of ``names`` (a config's ``plugins``), then of ``extra`` (``--plugin``), in
    order and each once; returns the names, duplicates removed."""
    if names is None:
        names = []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise InputError("plugins", "must be a list of module names", 'write plugins = ["my_module"]', value=names)
    unique = list(dict.fromkeys([*names, *extra]))
    for name in unique:
        import_plugin(name)
    return unique
