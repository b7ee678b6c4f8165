"""Reporting: pictures of runs and evaluations."""
from .plots import plot_per_class_accuracy, plot_training_curves

__all__ = ["plot_per_class_accuracy", "plot_training_curves"]
