"""Inference: one landmark per query, with optional test-time voting."""
from .predict import predict, predict_images, tta_vote

__all__ = ["predict", "predict_images", "tta_vote"]
