"""Data: reading GLDv2 and folder trees, decoding images, class selection and split,
augmentation, the preprocessing contract and the preprocessing cache.

Names are imported on first use (PEP 562), so ``landmark.data.download_options`` (what
the command line reads its defaults from) and ``landmark.data.preprocess`` (the
preprocessing contract) are importable without torch or pandas.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "ImageDataset": "dataset", "Reject": "dataset", "collate": "dataset", "write_rejects": "dataset",
    "image_path": "gldv2", "read_categories": "gldv2", "read_queries": "gldv2", "read_train": "gldv2",
    "with_paths": "gldv2",
    "ImageError": "images", "check_shape": "images", "load_image": "images", "load_uint8": "images",
    "probe": "images", "resize_to_width": "images",
    "Preprocess": "preprocess", "select_classes": "split", "split_per_class": "split",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
