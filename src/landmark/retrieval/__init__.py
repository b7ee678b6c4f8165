"""Retrieval: global descriptors, a FAISS index of labelled photos, kNN recognition and
geometric verification (docs/retrieval.md, docs/verification.md).

The job from Python, each step one call that writes a reloadable artifact::

    from landmark import retrieval as r
    emb, rejects, info = r.embed_checkpoint("runs/l13/checkpoints/best.pt", r.image_frame(data="DATA"), "emb.npy")
    r.build_index(emb, "runs/l13-index", params=r.load_retrieval_config("exact").index, model_info=info)
    predictions, rejects, result = r.knn_vote_predict("runs/l13/checkpoints/best.pt", "runs/l13-index", "photos/",
                                                      work="runs/knn", config=r.load_retrieval_config("verified"))

(the kNN vote, kept for benchmarks; ``landmark.knn_predict`` answers through the one scoring path).

Names are imported on first use (PEP 562): ``landmark.retrieval.config`` (the settings) is
importable without loading torch, FAISS or OpenCV.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    # settings (pydantic only)
    "RetrievalConfig": "config", "IndexParams": "config", "KnnConfig": "config", "VerifyConfig": "config",
    "load_retrieval_config": "config", "retrieval_presets": "config", "SAME_LANDMARK_INLIERS": "config",
    "GeometricModel": "config",
    # embeddings, index, kNN
    "Embeddings": "embeddings", "embed_images": "embeddings", "load_embeddings": "embeddings",
    "LandmarkIndex": "index", "Recognition": "knn", "recognise": "knn", "knn_vote": "knn",
    # file-level steps (what the command line calls)
    "image_frame": "pipeline", "embed_checkpoint": "pipeline", "embed_checkpoint_shard": "pipeline",
    "index_embeddings": "pipeline",
    "build_index": "pipeline", "enrol": "pipeline", "knn_vote_predict": "pipeline",
    # geometric verification
    "FeatureCache": "verification", "LocalFeatures": "verification", "MatchResult": "verification",
    "count_inliers": "verification", "local_features": "verification", "match": "verification",
    # learned local features (optional extra "local"), LightGlue, re-ranking
    "LocalConfig": "config", "LocalMatcher": "local", "LocalFeatureCache": "local", "rerank": "local",
    "MissingPackageError": "local",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
