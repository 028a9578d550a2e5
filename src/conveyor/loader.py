"""Load an application from ``module:attribute`` or ``path/to/file.py:attribute``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError


def load_app(spec: str) -> Conveyor:
    """Import and return the :class:`Conveyor` that ``spec`` names.

    The app remembers an absolute form of ``spec`` so that child processes can load it
    again whatever their working directory.

    Raises:
        ConfigurationError: the spec is malformed, the module cannot be imported, or the
            attribute is missing or not a Conveyor app.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ConfigurationError(
            f"APP must look like 'module:attribute' or 'path/to/file.py:attribute', got {spec!r}"
        )
    if target.endswith(".py") or os.sep in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise ConfigurationError(f"cannot load app {spec!r}: no such file {str(path)!r}")
        module = _import_file(path, spec)
        absolute = f"{path}:{attr}"
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import module {target!r}: {exc}") from None
        absolute = spec
    app = getattr(module, attr, None)
    if not isinstance(app, Conveyor):
        found = "nothing" if app is None else type(app).__name__
        raise ConfigurationError(f"{spec!r} must name a conveyor.Conveyor instance, found {found}")
    app.spec = absolute
    return app


def _import_file(path: Path, spec: str) -> object:
    name = f"conveyor_app_{path.stem}"
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigurationError(f"cannot load app {spec!r}: {str(path)!r} is not a module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before executing so that dataclasses and typing in the module resolve.
    sys.modules[name] = module
    parent = str(path.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigurationError(f"cannot load app {spec!r}: {type(exc).__name__}: {exc}") from None
    return module
