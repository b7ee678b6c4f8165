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
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import read_queries, read_train, with_paths
from ..evaluation.metrics import rejection_threshold
from ..io import commit, embedding_files, sidecar, temp_path
from ..models import load_model
from ..models.factory import load_checkpoint_file, write_checkpoint
from ..runs import RunFolder
from .config import IndexParams
from .embeddings import Embeddings, embed_images, load_embeddings
from .index import LandmarkIndex
from .knn import reference_confidence
from .scores import REFERENCE_K  # noqa: F401  (re-exported: neighbours searched per query)


def split_frames(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The run's labelled photos per split (``id, landmark_id, path``), from ``split.csv``."""
    run = RunFolder(run_dir)
    data = run.data()
    clean = run.config().data.clean
    split = run.split()
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
                    workers: int = 2, splits: tuple[str, ...] = ("train",), thresholds: dict | None = None,
                    reuse: bool = False) -> dict:
    """Write ``run_dir/index`` and store the thresholds (module docstring).

    Args:
        splits: the run's splits whose photos are indexed (``train``; after a final fit on
            every labelled photo, ``train`` and ``val``).
        thresholds: keep these (``{"classifier": t, "reference": t}``) instead of choosing
            them on the validation photos (a final fit has none left to choose on).
        reuse: take the vectors of the previous build of this run (its index and validation
            queries, ``run_dir/index/embeddings``) instead of embedding the same photos again,
            when they cover every photo to index.  Only right when the checkpoint's embedding
            has not changed since (a final fit of a head whose embedding is the pooled descriptor).

    Returns:
        ``{"index": path, "count": photos indexed, "reject_threshold": {"classifier": t, "reference": t},
        "validation_queries": n}`` (thresholds are None when the run has no validation photos).

    Raises:
        FileNotFoundError: ``run_dir`` has no best checkpoint or split.
    """
    run = RunFolder(run_dir)
    best = run.best
    model, ckpt = load_model(best)
    frames = split_frames(run.root)
    work = run.index / "embeddings"
    classes = ckpt["classes"]
    indexed = pd.concat([frames[s] for s in splits], ignore_index=True)
    emb = _copy_embedded(work, indexed, ckpt["preprocess"]["size"]) if reuse else None
    if emb is None:
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
    _store_thresholds(best, thresholds)   # first: the index records the checkpoint's final SHA-256
    from ..models.runtime import file_sha256
    from .provenance import model_record
    index.meta["model"] = model_record(best, file_sha256(best), ckpt["preprocess"], backbone=ckpt["arch"]["backbone"],
                                       runtime="torch")
    index.save(run.index, overwrite=True)
    return {"index": str(run.index), "count": len(index), "reject_threshold": thresholds,
            "validation_queries": int(len(queries))}


def _copy_embedded(work: Path, frame: pd.DataFrame, size: int, chunk: int = 65536) -> Embeddings | None:
    """Write ``work/train.npy`` for the photos of ``frame`` from the vectors that an earlier build
    wrote there (``train.npy``, then ``validation.npy``), as :func:`embed_images` would write them:
    the readable photos in frame order, the unreadable ones in its rejects.  Copied in chunks of
    ``chunk`` rows (float16 ``[N, D]``, memory-mapped).

    Returns:
        the written embeddings; None (nothing written) when a photo of ``frame`` is in neither
        file, or they were embedded at another size.
    """
    names = [name for name in ("train.npy", "validation.npy") if sidecar(work / name, "json").is_file()]
    parts = [load_embeddings(work / name) for name in names]
    infos = [json.loads(sidecar(work / name, "json").read_text()) for name in names]
    where: dict[str, tuple[int, int]] = {}
    for k, part in enumerate(parts):
        for row, image_id in enumerate(part.ids):
            where.setdefault(image_id, (k, row))
    rejects = pd.concat([pd.read_csv(sidecar(work / name, "rejects.csv"), dtype=str, keep_default_na=False)
                         for name in names] or [pd.DataFrame(columns=["id", "path", "reason"])], ignore_index=True)
    ids = frame["id"].astype(str).to_numpy()
    rejects = rejects[rejects["id"].isin(ids) & ~rejects["id"].isin(list(where))].drop_duplicates("id")
    if not parts or any(info.get("image_size") != size for info in infos) or \
            len({p.vectors.dtype for p in parts}) > 1 or not np.isin(ids, [*where, *rejects["id"]]).all():
        return None
    kept = np.flatnonzero(np.isin(ids, list(where)))
    source = np.array([where[i] for i in ids[kept]]).reshape(-1, 2)
    path = work / "train.npy"
    temps = {p: temp_path(p) for p in embedding_files(path)}
    out = np.lib.format.open_memmap(temps[path], mode="w+", dtype=parts[0].vectors.dtype,
                                    shape=(len(kept), parts[0].vectors.shape[1]))
    for start in range(0, len(kept), chunk):
        block, rows = source[start:start + chunk], out[start:start + chunk]
        for k, part in enumerate(parts):
            mine = block[:, 0] == k
            rows[mine] = part.vectors[block[mine, 1]]
    out.flush()
    del out
    items = frame.iloc[kept].reset_index(drop=True)
    items[[c for c in ("id", "landmark_id", "path") if c in items.columns]].to_csv(temps[sidecar(path, "ids.csv")],
                                                                                  index=False)
    rejects.to_csv(temps[sidecar(path, "rejects.csv")], index=False)
    commit([(temps[p], p) for p in (path, sidecar(path, "ids.csv"), sidecar(path, "rejects.csv"))],
           sidecar(path, "json"), {**infos[0], "rows": len(kept), "rejects": len(rejects)},
           members=embedding_files(path)[:-1])
    return load_embeddings(path)


def _store_thresholds(checkpoint: Path, thresholds: dict) -> None:
    """Add ``reject_threshold`` to the checkpoint (read with the safe loader, written atomically)."""
    ckpt = load_checkpoint_file(checkpoint)
    ckpt["reject_threshold"] = thresholds
    write_checkpoint(checkpoint, ckpt)
