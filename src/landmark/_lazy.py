"""Lazy package exports (PEP 562): a package lists ``name -> submodule`` and imports on first use.

So ``import landmark``, ``landmark.config`` and the light modules of ``landmark.data`` /
``landmark.models`` (the preprocessing contract, the model specification) load without torch.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, table: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: attribute ``name`` is imported from
    ``package + "." + table[name]`` on first access and cached in ``namespace``.

    Raises (from ``__getattr__``):
        AttributeError: ``name`` is not in ``table``.
    """
    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{table[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
