"""landmark: large-scale landmark recognition.

The whole job in a few lines::

    import landmark
    cfg = landmark.load_config("fast")
    best = landmark.train(cfg, "../shared/data/landmarks13", "runs/demo")
    preds, rejects = landmark.predict(best, "../shared/data/landmarks13/test", tta=10)
    landmark.write_submission(preds, "submission.csv")
    print(landmark.evaluate("submission.csv", "../shared/data/landmarks13/test/recognition_solution.csv"))
"""
from .config import TrainConfig, load_config
from .data.kaggle import read_solution, read_submission, write_submission
from .evaluation import evaluate, gap
from .inference import predict
from .models import create_model, load_model
from .training import resume, train

__all__ = ["TrainConfig", "load_config", "read_solution", "read_submission", "write_submission", "evaluate", "gap",
           "predict", "create_model", "load_model", "resume", "train"]
__version__ = "0.1.0"
