"""Data: reading GLDv2 and folder trees, decoding images, class selection and split,
augmentation, and the preprocessing cache.

Names are imported on first use (PEP 562), so ``landmark.data.download_options`` (what
the command line reads its defaults from) is importable without torch or pandas.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ImageDataset": "dataset", "Reject": "dataset", "collate": "dataset", "write_rejects": "dataset",
    "image_path": "gldv2", "read_categories": "gldv2", "read_queries": "gldv2", "read_train": "gldv2",
    "with_paths": "gldv2",
    "ImageError": "images", "load_image": "images", "resize_to_width": "images",
    "select_classes": "split", "split_per_class": "split",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import ``name`` from its submodule on first access and cache it."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'landmark.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
