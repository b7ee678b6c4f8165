"""``landmark predict --engine ray``: batch prediction on Ray Data.

The queries go through the pipeline of :mod:`landmark.models.ray_engine` (decoding in CPU tasks,
:class:`PredictActor` model actors holding a :class:`~landmark.inference.recognizer.Recognizer`
each, answering with :func:`~landmark.inference.voting.best_answers` as the local loop does,
enrolled landmarks confirmed by local features included); this process receives each row's best
``(landmark_id, score)`` (and inliers) in order and builds the
frame of :func:`~landmark.inference.predict.predict_images` with the same code
(:func:`~landmark.inference.voting.answers_frame`), so the submission, the answers CSV and the
rejects are those of the single-process command.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import Reject, read_queries
from ..models.ray_engine import cluster, plan_pool, run_pipeline, set_actor_threads
from ..models.runtime_info import LOGGER
from .voting import DRAFT_FACTOR, answers_frame, best_answers, check_tta

log = logging.getLogger(LOGGER)


class PredictActor:
    """A model actor: a :class:`~landmark.inference.recognizer.Recognizer` loaded once, ranking decoded batches.

    Args:
        checkpoint, index, runtime, threads, device: as :meth:`Recognizer.load`.
        tta: crops voting per photo.
        cpus: the CPUs the actor holds (eager PyTorch's threads).
    """

    def __init__(self, checkpoint: str, index, runtime: str, threads: int | None, device: str, tta: int, cpus: float):
        from .recognizer import Recognizer
        set_actor_threads(cpus)
        self.rec = Recognizer.load(checkpoint, index=index, device=device, runtime=runtime, threads=threads)
        self.tta = tta

    def __call__(self, batch: dict) -> dict:
        """``batch``: :func:`~landmark.models.ray_engine.decode_batch`'s columns -> ``row, reason,
        reject_path, landmark_id str [B] ("" for a reject), score float64 [B] (NaN for a reject),
        inliers int64 [B]`` (-1 where no enrolled landmark needed local features), each photo
        answered by :func:`~landmark.inference.voting.best_answers`, as the local loop answers it."""
        import torch

        good = batch["reason"] == ""
        labels, scores = np.full(len(good), "", dtype=object), np.full(len(good), np.nan)
        inliers = np.full(len(good), -1, dtype=np.int64)
        if good.any():
            x = self.rec.preprocess.finish_batch(torch.from_numpy(np.ascontiguousarray(batch["image"][good])), self.tta)
            best = best_answers(self.rec, x, self.tta, list(batch["path"][good]))
            labels[good] = [str(b[0]) for b in best]
            scores[good] = [float(b[1]) for b in best]
            inliers[good] = [-1 if len(b) < 3 or b[2] is None else int(b[2]) for b in best]
        return {"row": batch["row"], "reason": batch["reason"], "reject_path": batch["reject_path"],
                "landmark_id": labels, "score": scores, "inliers": inliers}


def predict_ray(checkpoint: str | Path, images: str | Path, *, tta: int = 1, batch_size: int = 32,
                device: str | None = None, runtime: str = "auto", threads: int | None = None,
                index: str | Path | bool | None = None, ray_address: str | None = None, actors: int | None = None,
                actor_cpus: float | None = None, actor_gpus: float | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """Predict the images of a folder, a CSV or one file on Ray (module docstring).

    Args:
        checkpoint: ``.pt`` or run folder or ``.onnx``, readable at the same path on every node
            (as are the photos and the index).
        device: the actors' device (default: ``cuda`` for actors holding a GPU, else ``cpu``).
        ray_address, actors, actor_cpus, actor_gpus: the cluster and the model pool
            (:func:`~landmark.models.ray_engine.plan_pool`).
        others: as :func:`~landmark.inference.predict.predict`.

    Returns:
        as :func:`~landmark.inference.predict.predict_images`: the frame ``id, landmark_id, score,
        name, verdict, path`` in query order and the rejects.

    Raises:
        FileNotFoundError / ValueError: as :func:`~landmark.inference.predict.predict` and
            :func:`~landmark.models.ray_engine.plan_pool`; an unreachable ``ray_address``.
    """
    from .recognizer import Recognizer, resolve_checkpoint
    check_tta(tta)
    queries = read_queries(images)
    if queries.empty:
        raise ValueError(f"{images} holds no image files")
    # names, threshold and scoring for the answers; a bad model or index fails here, before Ray starts
    rec = Recognizer.load(checkpoint, index=index, device="cpu", runtime=runtime, threads=threads)
    path = resolve_checkpoint(checkpoint)
    with cluster(ray_address) as resources:
        plan = plan_pool(resources.get("CPU", 0), resources.get("GPU", 0), memory=resources.get("memory"),
                         actors=actors, actor_cpus=actor_cpus, actor_gpus=actor_gpus)
        if plan.actor_gpus > 0 and (runtime == "onnx" or path.suffix.lower() == ".onnx"):
            raise ValueError("ONNX Runtime runs on the CPU here: give the .pt checkpoint (--runtime auto or torch) "
                             "for GPU actors, or --num-gpus 0")
        log.info("engine: ray (%d model actors x %g CPU%s; %g CPUs decode)", plan.actors, plan.actor_cpus,
                 f", {plan.actor_gpus:g} GPU" if plan.actor_gpus else "", plan.decode_cpus)
        given = index if index is None or index is False else str(Path(index).resolve())
        args = {"checkpoint": str(Path(checkpoint).resolve()), "index": given, "runtime": runtime,
                "threads": threads or plan.threads, "device": device or plan.device, "tta": tta,
                "cpus": plan.actor_cpus}
        side = rec.preprocess.side(tta)
        rows = np.arange(len(queries))
        stream = run_pipeline(queries, rows, side=side, draft=DRAFT_FACTOR * side, model=PredictActor,
                              model_args=args, batch_size=max(1, batch_size // tta), plan=plan)
        best, rejects = {}, []
        ids = queries["id"].astype(str).to_numpy()
        from tqdm import tqdm
        with tqdm(total=len(queries), desc=f"predict (ray, tta={tta})", unit="photo", dynamic_ncols=True) as bar:
            for batch in stream:
                for row, reason, where, label, score, n in zip(batch["row"], batch["reason"], batch["reject_path"],
                                                               batch["landmark_id"], batch["score"], batch["inliers"]):
                    if reason:
                        rejects.append(Reject(ids[row], str(where), str(reason)))
                    else:   # as the local loop: the inliers of an enrolled landmark's confirmation decide too
                        best[int(row)] = (str(label), float(score)) if rec.confirmer is None else \
                            (str(label), float(score), None if n < 0 else int(n))
                bar.update(len(batch["row"]))
    if len(best) + len(rejects) != len(queries):   # never seen; a photo must not vanish silently
        raise RuntimeError(f"Ray returned {len(best) + len(rejects)} of {len(queries)} rows; run the command again")
    return answers_frame(rec, queries, best), rejects
