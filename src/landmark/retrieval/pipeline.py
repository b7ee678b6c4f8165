"""File-level retrieval workflows behind the CLI: embed, build/enrol an index, kNN predict.

Each function takes paths, does one user-facing job and returns a small summary dict,
so ``landmark embed / index build / index add / knn`` and the benchmark scripts share it.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..data import Reject, read_queries
from ..inference.runtime import load_runtime
from ..models import load_model
from .embeddings import Embeddings, embed_images, embeddings_path, labelled_images, load_embeddings
from .index import IndexParams, LandmarkIndex
from .knn import KnnConfig, Recognition, recognise, verification_inliers


def image_frame(images: str | Path | None = None, data: str | Path | None = None,
                landmarks: list[str] | None = None, label: str | None = None) -> pd.DataFrame:
    """The images to embed: ``--data`` (labelled GLDv2 / class tree) or ``--images``
    (folder or CSV; all given ``label`` when set).

    Raises:
        ValueError: neither or both of ``images`` and ``data`` are given.
    """
    if (images is None) == (data is None):
        raise ValueError("give exactly one of --images (folder/CSV) and --data (labelled GLDv2 folder or class tree)")
    if data is not None:
        return labelled_images(data, landmarks)
    frame = read_queries(images)
    if label is not None:
        frame["landmark_id"] = str(label)
    return frame


def embed_checkpoint(checkpoint: str | Path, frame: pd.DataFrame, out: str | Path, top_classes: int = 0,
                     dtype: str = "float16", image_size: int | None = None, batch_size: int = 32,
                     workers: int = 2, device: str | None = None,
                     overwrite: bool = False, runtime: str = "torch",
                     threads: int | None = None) -> tuple[Embeddings, list[Reject], dict]:
    """Load ``checkpoint`` and :func:`~landmark.retrieval.embeddings.embed_images` ``frame`` into ``out``.

    ``runtime``: ``torch``, ``onnx`` or ``auto`` (:func:`landmark.inference.runtime.load_runtime`;
    ``checkpoint`` may then be a ``.onnx`` export); ``threads``: ONNX Runtime threads.

    Returns:
        (embeddings, rejects, model info ``{checkpoint, backbone, image_size}`` for index metadata).
    """
    engine = load_runtime(checkpoint, runtime, device, threads)
    emb, rejects = embed_images(engine, engine.preprocess, frame, out, engine.classes, top_classes, dtype,
                                image_size, batch_size, workers, device, overwrite)
    info = {"checkpoint": str(Path(checkpoint).resolve()), "backbone": engine.arch.get("backbone"),
            "image_size": image_size or engine.preprocess["size"], "runtime": engine.name}
    return emb, rejects, info


def build_index(embeddings: Embeddings, out: str | Path, params: IndexParams, model_info: dict | None = None,
                overwrite: bool = False, names: dict[str, str] | None = None) -> dict:
    """Build and save an index folder; returns ``{index, kind, count, landmarks, seconds}``.

    ``names`` (landmark id -> readable name) are stored in the index's ``meta.json``.

    Raises:
        FileExistsError: ``out`` already holds index files and ``overwrite`` is False.
    """
    start = time.perf_counter()
    meta = {"model": model_info or {}, **({"names": names} if names else {})}
    index = LandmarkIndex.build(embeddings, params, meta)
    index.save(out, overwrite=overwrite)
    return {"index": str(out), "kind": index.kind, "count": len(index),
            "landmarks": int(index.items["landmark_id"].nunique()), "seconds": round(time.perf_counter() - start, 2)}


def enrol(index_dir: str | Path, embeddings: Embeddings, names: dict[str, str] | None = None) -> dict:
    """Add labelled embeddings to a saved index (in place); returns counts and skipped ids.

    ``names`` (landmark id -> readable name) are stored in ``meta.json`` for ids without one.
    """
    index = LandmarkIndex.load(index_dir)
    before = set(index.items["landmark_id"])
    added, skipped = index.add(embeddings)
    if names:
        index.meta["names"] = {**names, **index.meta.get("names", {})}
    index.save(index_dir, overwrite=True)
    new = sorted(set(index.items["landmark_id"]) - before)
    return {"index": str(index_dir), "added": added, "skipped_duplicates": len(skipped), "count": len(index),
            "new_landmarks": new}


def index_model(index_dir: str | Path) -> dict:
    """The model info stored with an index (``{}`` when unknown)."""
    return LandmarkIndex.load(index_dir).meta.get("model", {})


def knn_predict(checkpoint: str | Path, index_dir: str | Path, images: str | Path, work: str | Path,
                config: KnnConfig, nonlandmarks: str | Path | None = None, verify_cache: str | Path | None = None,
                batch_size: int = 32, workers: int = 2, device: str | None = None,
                overwrite: bool = False, runtime: str = "torch",
                threads: int | None = None) -> tuple[pd.DataFrame, list[Reject], Recognition]:
    """Embed queries (and the non-landmark set) with ``checkpoint`` and recognise them by kNN.

    Args:
        runtime, threads: how the ``.pt`` checkpoint runs (``torch``, or ``onnx``/``auto``:
            its export, :func:`landmark.inference.runtime.load_runtime`).
        images: query folder or CSV; or an embeddings ``.npy`` already made with this checkpoint.
        work: path prefix for the query embeddings (``WORK.queries.npy``) and the
            non-landmark ones (``WORK.nonlandmarks.npy``).
        nonlandmarks: folder of non-landmark photos or their embeddings ``.npy``.
        verify_cache: folder for cached local features (needed when ``config.verify_top``).

    Returns:
        (predictions ``id, landmark_id, score, name, verdict`` for every query, unreadable
        ones with an empty landmark; the rejects; the full :class:`Recognition`).
        ``verdict`` is the landmark's name, ``no landmark`` (no prediction, or a score below
        ``config.reject_below``, else the recogniser's kNN threshold) or ``unreadable``.

    Raises:
        ValueError: the index was built with a different image size or backbone.
    """
    index = LandmarkIndex.load(index_dir)
    _, ckpt = load_model(checkpoint)
    built = index.meta.get("model", {})
    size = built.get("image_size") or ckpt["preprocess"]["size"]
    if built.get("backbone") and built["backbone"] != ckpt["arch"]["backbone"]:
        raise ValueError(f"the index was built with {built['backbone']}, the checkpoint is {ckpt['arch']['backbone']}")
    work = Path(work)
    top = 5 if config.classifier_weight > 0 else 0
    rejects: list[Reject] = []
    if str(images).endswith(".npy"):
        queries = load_embeddings(images)
        listed = queries.items[["id"]]
    else:
        frame = read_queries(images)
        listed = frame[["id"]]
        queries, rejects, _ = embed_checkpoint(checkpoint, frame, embeddings_path(f"{work}.queries"), top, "float16",
                                               size, batch_size, workers, device, overwrite, runtime=runtime,
                                               threads=threads)
    reference = None
    if nonlandmarks is not None:
        if str(nonlandmarks).endswith(".npy"):
            reference = load_embeddings(nonlandmarks)
        else:
            reference, _, _ = embed_checkpoint(checkpoint, read_queries(nonlandmarks),
                                               embeddings_path(f"{work}.nonlandmarks"), 0, "float16", size,
                                               batch_size, workers, device, overwrite, runtime=runtime,
                                               threads=threads)
    pair_inliers = None
    if config.verify_top > 0:
        pair_inliers = verification_inliers(verify_cache or Path(f"{work}.local_features"))
    result = recognise(index, queries, config, reference, pair_inliers)
    predictions = listed.merge(result.predictions, on="id", how="left")
    predictions["landmark_id"] = predictions["landmark_id"].fillna("")
    return _with_names(predictions, {**ckpt.get("names", {}), **index.meta.get("names", {})}, config, index,
                       {r.id for r in rejects}), rejects, result


def _with_names(predictions: pd.DataFrame, names: dict, config: KnnConfig, index: LandmarkIndex,
                unreadable: set) -> pd.DataFrame:
    """Add ``name`` and ``verdict`` columns (see :func:`knn_predict`)."""
    from ..inference.recognizer import DEFAULT_THRESHOLD
    threshold = config.reject_below if config.reject_below is not None else \
        index.meta.get("reject_threshold", DEFAULT_THRESHOLD["knn"])
    lids = predictions["landmark_id"].astype(str)
    named = [names.get(lid) or lid for lid in lids]
    verdict = ["unreadable" if i in unreadable else "no landmark" if lid == "" or not s >= threshold else n
               for i, lid, s, n in zip(predictions["id"], lids, predictions["score"], named)]
    return predictions.assign(name=named, verdict=verdict)
