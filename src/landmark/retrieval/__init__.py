"""Retrieval: global descriptors, a FAISS index of labelled photos, kNN recognition and
geometric verification (docs/retrieval.md, docs/verification.md).

The job from Python, each step one call that writes a reloadable artifact::

    from landmark import retrieval as r
    emb, rejects, info = r.embed_checkpoint("runs/l13/checkpoints/best.pt", r.image_frame(data="DATA"), "emb.npy")
    r.build_index(emb, "runs/idx", params=r.load_retrieval_config("exact").index, model_info=info)
    predictions, rejects, result = r.knn_predict("runs/l13/checkpoints/best.pt", "runs/idx", "photos/",
                                                 work="runs/knn", config=r.load_retrieval_config("verified"))

Names are imported on first use (PEP 562): ``landmark.retrieval.config`` (the settings) is
importable without loading torch, FAISS or OpenCV.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    # settings (pydantic only)
    "RetrievalConfig": "config", "IndexParams": "config", "KnnConfig": "config", "VerifyConfig": "config",
    "load_retrieval_config": "config", "retrieval_presets": "config", "SAME_LANDMARK_INLIERS": "config",
    "GeometricModel": "config",
    # embeddings, index, kNN
    "Embeddings": "embeddings", "embed_images": "embeddings", "load_embeddings": "embeddings",
    "LandmarkIndex": "index", "Recognition": "knn", "recognise": "knn", "knn_vote": "knn",
    # file-level steps (what the command line calls)
    "image_frame": "pipeline", "embed_checkpoint": "pipeline", "index_embeddings": "pipeline",
    "build_index": "pipeline", "enrol": "pipeline", "knn_predict": "pipeline",
    # geometric verification
    "FeatureCache": "verification", "LocalFeatures": "verification", "MatchResult": "verification",
    "count_inliers": "verification", "local_features": "verification", "match": "verification",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import ``name`` from its submodule on first access and cache it."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'landmark.retrieval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
