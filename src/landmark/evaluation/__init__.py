"""Evaluation: GAP (Kaggle micro-AP), accuracy, per-class accuracy."""
from .evaluate import evaluate, evaluate_retrieval
from .metrics import accuracy, gap, per_class_accuracy, recognition_scores

__all__ = ["evaluate", "evaluate_retrieval", "accuracy", "gap", "per_class_accuracy", "recognition_scores"]
