"""Inference: one landmark per query, with optional test-time voting.

Names are imported on first use (PEP 562), so ``landmark.inference.instant`` (the torch-free
recogniser of ``landmark recognize``) and ``landmark.inference.answers`` load without torch.
"""
from __future__ import annotations

import sys
import types

from .._lazy import lazy_exports

_EXPORTS = {"predict": "predict", "predict_images": "predict", "tta_vote": "predict", "knn_predict": "predict"}


class _Package(types.ModuleType):
    """This package, whose attribute ``predict`` stays the function: importing the submodule of
    the same name (``landmark.inference.predict``) would otherwise bind the module over it."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return   # the submodule stays reachable as sys.modules["landmark.inference.predict"]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
