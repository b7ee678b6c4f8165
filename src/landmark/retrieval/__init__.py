"""Retrieval: global descriptors, nearest neighbours and geometric verification."""
from .verification import (FeatureCache, LocalFeatures, MatchResult, count_inliers, local_features,
                           match)

__all__ = ["FeatureCache", "LocalFeatures", "MatchResult", "count_inliers", "local_features", "match"]

# global descriptors, FAISS index and kNN recognition (docs/retrieval.md)
from .embeddings import Embeddings, embed_images, load_embeddings  # noqa: E402
from .index import IndexParams, LandmarkIndex  # noqa: E402
from .knn import KnnConfig, Recognition, recognise  # noqa: E402

__all__ += ["Embeddings", "embed_images", "load_embeddings", "IndexParams", "LandmarkIndex", "KnnConfig",
            "Recognition", "recognise"]
