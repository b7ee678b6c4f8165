"""landmark: large-scale landmark recognition.

The whole job in a few lines::

    import landmark
    cfg = landmark.load_config("fast")
    best = landmark.train(cfg, "../shared/data/landmarks13", "runs/py")   # as README.md; make demo writes runs/demo
    preds, rejects = landmark.predict(best, "../shared/data/landmarks13/test", tta=10)
    landmark.write_submission(preds, "submission.csv")
    print(landmark.evaluate("submission.csv", "../shared/data/landmarks13/test/recognition_solution.csv"))

    rec = landmark.Recognizer.load("runs/py")            # one photo in, a named answer out
    answer, = rec.recognize("photo.jpg")
    print(answer.name, answer.score, answer.is_landmark)

    settings = landmark.load_retrieval_config("exact")   # retrieval: embed -> index -> recognise against it
    emb, rejects, info = landmark.embed_checkpoint(best, landmark.image_frame(data="../shared/data/landmarks13"),
                                                   "runs/py/emb.npy")
    landmark.build_index(emb, "runs/py/idx", params=settings.index, model_info=info)
    preds, rejects, result = landmark.knn_predict(best, "runs/py/idx", "../shared/data/landmarks13/test",
                                                  work="runs/py/knn", config=settings)

The names below are imported on first use (PEP 562), so ``import landmark`` and the
command line start without loading torch.
"""
from __future__ import annotations

from ._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config", "load_config": "config",
    "read_solution": "data.kaggle", "read_submission": "data.kaggle", "write_submission": "data.kaggle",
    "evaluate": "evaluation", "gap": "evaluation",
    "predict": "inference", "Recognizer": "inference.recognizer", "Answer": "inference.recognizer",
    "open_recognizer": "inference.instant",
    "create_model": "models", "load_model": "models", "ModelSpec": "models", "save_checkpoint": "models",
    "list_heads": "models", "register_head": "models", "Preprocess": "data",
    "RunFolder": "runs", "resume": "training", "train": "training",
    "RetrievalConfig": "retrieval.config", "load_retrieval_config": "retrieval.config",
    "image_frame": "retrieval.pipeline", "embed_checkpoint": "retrieval.pipeline", "build_index": "retrieval.pipeline",
    "enrol": "retrieval.pipeline", "knn_predict": "inference.predict", "knn_vote_predict": "retrieval.pipeline",
    "load_embeddings": "retrieval.embeddings", "LandmarkIndex": "retrieval.index",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
