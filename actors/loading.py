"""Name a tool class as ``module:Class`` text and load it back in another process."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

MAIN_ALIAS = "__toolvisor_main__"


def class_path(cls: type) -> str:
    """``module:Qualname`` for a class (the form config files use too)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def main_file() -> str | None:
    """The file of the ``__main__`` module, so a tool defined in a script can be found."""
    return getattr(sys.modules.get("__main__"), "__file__", None)


def load_object(path: str, main_path: str | None = None) -> Any:
    """Import ``module:attr.attr``; raise ``ImportError`` naming what is missing."""
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ImportError(f"{path!r} is not of the form 'module:Class'")
    module = _import(module_name, main_path)
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr_path!r} (from {path!r})")
    return obj


def _import(module_name: str, main_path: str | None) -> Any:
    if module_name == "__main__":
        main = sys.modules.get("__main__")
        if main_path and getattr(main, "__file__", None) != main_path:
            return _import_file(main_path)
        return main
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import module {module_name!r}: {exc}") from exc


def _import_file(file_path: str) -> Any:
    if MAIN_ALIAS in sys.modules:
        return sys.modules[MAIN_ALIAS]
    spec = importlib.util.spec_from_file_location(MAIN_ALIAS, file_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the script {file_path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MAIN_ALIAS] = module
    spec.loader.exec_module(module)
    return module
