"""A run's reference index and its "no landmark" thresholds, made at the end of training.

``build_reference(run_dir)`` embeds the run's training photos with its best checkpoint into
``run_dir/index`` (a :class:`~landmark.retrieval.index.LandmarkIndex`), then answers the
validation photos and chooses, with
:func:`~landmark.evaluation.metrics.rejection_threshold`, the confidence below which an
answer becomes "no landmark":

* ``classifier``: on the softmax probability alone (used without an index);
* ``reference``: on ``prob * s_ref^3`` (:func:`~landmark.retrieval.knn.reference_confidence`,
  used when the index is loaded).

Optional non-landmark photos (``nonlandmarks``: a folder or CSV) join the validation
queries as queries whose every answer is wrong.  Both thresholds are stored in the best
checkpoint (``reject_threshold``), where :class:`~landmark.inference.Recognizer` finds them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import load_config
from ..data import read_queries, read_train, with_paths
from ..evaluation.metrics import rejection_threshold
from ..models import load_model
from .config import IndexParams
from .embeddings import embed_images
from .index import LandmarkIndex
from .knn import reference_confidence

#: neighbours searched per query for :func:`reference_confidence`
REFERENCE_K = 50


def split_frames(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The run's labelled photos per split (``id, landmark_id, path``), from ``split.csv``."""
    data = Path(json.loads((run_dir / "run.json").read_text())["data"])
    clean = load_config(run_dir / "config.yaml").data.clean
    split = pd.read_csv(run_dir / "split.csv", dtype=str, keep_default_na=False)
    frame = with_paths(read_train(data, clean=clean), data)
    frame = frame.assign(landmark_id=frame["landmark_id"].astype(str)).merge(split[["id", "split"]], on="id")
    return {s: frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}


def answer_with_reference(index: LandmarkIndex, vectors: np.ndarray, labels: np.ndarray,
                          probs: np.ndarray) -> np.ndarray:
    """``prob * s_ref^3`` of each classifier answer against ``index`` (vectors ``[Q, D]`` L2-normalised)."""
    sims, rows = index.search(np.ascontiguousarray(vectors, dtype=np.float32), REFERENCE_K)
    neighbours = np.where(rows >= 0, index.labels[np.clip(rows, 0, None)], "")
    return reference_confidence(labels, probs, sims, neighbours)


def build_reference(run_dir: str | Path, nonlandmarks: str | Path | None = None, device: str | None = None,
                    workers: int = 2, splits: tuple[str, ...] = ("train",), thresholds: dict | None = None) -> dict:
    """Write ``run_dir/index`` and store the thresholds (module docstring).

    Args:
        splits: the run's splits whose photos are indexed (``train``; after a final fit on
            every labelled photo, ``train`` and ``val``).
        thresholds: keep these (``{"classifier": t, "reference": t}``) instead of choosing
            them on the validation photos (a final fit has none left to choose on).

    Returns:
        ``{"index": path, "count": photos indexed, "reject_threshold": {"classifier": t, "reference": t},
        "validation_queries": n}`` (thresholds are None when the run has no validation photos).

    Raises:
        FileNotFoundError: ``run_dir`` has no best checkpoint or split.
    """
    run_dir = Path(run_dir)
    best = run_dir / "checkpoints" / "best.pt"
    model, ckpt = load_model(best)
    frames = split_frames(run_dir)
    work = run_dir / "index" / "embeddings"
    classes = ckpt["classes"]
    indexed = pd.concat([frames[s] for s in splits], ignore_index=True)
    emb, _ = embed_images(model, ckpt["preprocess"], indexed, work / "train.npy", device=device,
                          workers=workers, overwrite=True)
    index = LandmarkIndex.build(emb, IndexParams(), {"role": "reference", "model": {"checkpoint": str(best.resolve()),
                                                               "backbone": ckpt["arch"]["backbone"],
                                                               "image_size": ckpt["preprocess"]["size"]}})
    queries = frames["val"][["id", "landmark_id", "path"]] if thresholds is None else frames["val"].iloc[:0]
    if nonlandmarks is not None and thresholds is None:
        queries = pd.concat([queries, read_queries(nonlandmarks).assign(landmark_id="")], ignore_index=True)
    thresholds = thresholds or {"classifier": None, "reference": None}
    if len(queries):
        val, _ = embed_images(model, ckpt["preprocess"], queries, work / "validation.npy", classes=classes,
                              top_classes=1, device=device, workers=workers, overwrite=True)
        truth = val.items["landmark_id"].astype(str).to_numpy()
        labels, probs = val.classes[0][:, 0], val.classes[1][:, 0].astype(np.float64)
        correct = labels == truth
        thresholds = {"classifier": rejection_threshold(probs, correct),
                      "reference": rejection_threshold(answer_with_reference(index, val.vectors, labels, probs),
                                                       correct)}
    index.save(run_dir / "index", overwrite=True)
    _store_thresholds(best, thresholds)
    return {"index": str(run_dir / "index"), "count": len(index), "reject_threshold": thresholds,
            "validation_queries": int(len(queries))}


def _store_thresholds(checkpoint: Path, thresholds: dict) -> None:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    ckpt["reject_threshold"] = thresholds
    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, checkpoint)
