"""Training: staged transfer learning with resume."""
from .trainer import RunExistsError, resume, train

__all__ = ["RunExistsError", "resume", "train"]
