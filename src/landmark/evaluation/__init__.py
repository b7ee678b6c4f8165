"""Evaluation: GAP (Kaggle micro-AP), accuracy, per-class accuracy."""
from .evaluate import evaluate
from .metrics import accuracy, gap, per_class_accuracy, recognition_scores

__all__ = ["evaluate", "accuracy", "gap", "per_class_accuracy", "recognition_scores"]
