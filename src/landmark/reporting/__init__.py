"""Reporting: pictures of runs and evaluations.

Every picture here is drawn on a plain ``matplotlib.figure.Figure`` and saved with
``fig.savefig``: no pyplot and no ``matplotlib.use``, so importing this package changes no
global matplotlib state (a notebook keeps its inline backend).  Nothing below this layer
(data, models, training, inference, retrieval, evaluation) imports it.
"""
from .charts import plot_per_class_accuracy, plot_training_curves, write_training_curves

__all__ = ["plot_per_class_accuracy", "plot_training_curves", "write_training_curves"]
