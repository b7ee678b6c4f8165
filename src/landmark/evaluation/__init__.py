"""Evaluation: GAP (Kaggle micro-AP), accuracy, per-class accuracy."""
from .evaluate import evaluate
from .metrics import accuracy, gap, per_class_accuracy

__all__ = ["evaluate", "accuracy", "gap", "per_class_accuracy"]
