"""Lazy package exports (PEP 562): a package lists ``name -> submodule`` and imports the
submodule only when the name is first used, so importing the package stays light."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``exports`` map each public name to
    the submodule (relative to the package) that defines it.

    ``__getattr__(name)`` imports the submodule, caches the value in the package and
    returns it; an unknown name raises ``AttributeError`` as for any module.
    """
    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
