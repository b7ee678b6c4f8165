"""Predict landmarks for query images, with optional test-time voting over crops (the voting
rule: :mod:`landmark.inference.voting`; disagreement between crops lowers the confidence,
which is what GAP's ranking rewards).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data import Reject, read_queries
from ..data.dataset import good_batches, image_loader
from ..defaults import BATCH_SIZE, TTA, WORKERS
from ..models import LandmarkNet
from ..models.runtime import Runtime, decode_threads, decode_workers, load_runtime
from ..models.runtime_info import DEFAULT_ENGINE, DEFAULT_RUNTIME, check_engine
from ..retrieval.config import KNN_SCORING, KNN_SCORINGS, KnnConfig, RetrievalConfig, VerifyConfig
from .voting import DRAFT_FACTOR, TTA_ORDER, answers_frame, best_answers, check_tta, tta_vote, vote_scores  # noqa: F401 (re-exported)

def predict_images(model: LandmarkNet | Runtime, classes: list[str], preprocess: dict, queries: pd.DataFrame,
                   tta: int = 1, batch_size: int = 32, workers: int | None = None,
                   device: str | None = None, checkpoint: dict | None = None,
                   index=None) -> tuple[pd.DataFrame, list[Reject]]:
    """Predict one landmark per query image, through :class:`~landmark.inference.recognizer.Recognizer`
    (the same scores as ``landmark recognize`` and ``landmark serve``), decoding with ``workers`` threads or processes.

    JPEGs are decoded at reduced size where they are at least twice as large as needed
    (Pillow ``draft`` to >= 2x the resize side, as the training cache does; see
    :data:`DRAFT_FACTOR`), then resized with antialiasing.

    Args:
        model: a ``LandmarkNet`` (run eagerly on ``device``) or a runtime
            (:mod:`landmark.models.runtime`, e.g. ONNX Runtime).
        queries: rows with ``id`` and ``path``.
        preprocess: ``size``, ``resize``, ``mean``, ``std`` (from the checkpoint).
        tta: crops per image, 1 (plain resize to ``size``) to 10 (see :data:`TTA_ORDER`).
        workers: image decoders: threads when the network computes on the CPU, processes on a
            GPU; 0 decodes in the calling thread; None: :func:`~landmark.models.runtime.decode_workers`.
        checkpoint: the checkpoint dict, for landmark ``names`` and ``reject_threshold``.
        index: a loaded :class:`~landmark.retrieval.index.LandmarkIndex` to score with
            (see :class:`~landmark.inference.recognizer.Recognizer`), or None.

    Returns:
        (frame ``id, landmark_id, score, name, verdict, path`` in query order; rejected
        images have an empty landmark_id, NaN score and verdict ``unreadable``; the rejects).
        ``verdict`` is the landmark's name, or ``no landmark`` below the recogniser's threshold.

    Raises:
        ValueError: ``tta`` outside 1..10.
    """
    from .recognizer import Recognizer
    check_tta(tta)
    rec = Recognizer(model, {**(checkpoint or {}), "classes": classes, "preprocess": preprocess}, index=index,
                     device=device)
    return recognize_queries(rec, queries, tta, batch_size, workers=workers)


def recognize_queries(rec, queries: pd.DataFrame, tta: int = 1, batch_size: int = 32,
                      workers: int | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """The batch loop of :func:`predict_images` for a loaded ``Recognizer`` (same returns).

    ``workers`` decode and resize (:meth:`Preprocess.decode_transform`): threads of this
    process when the network computes on the CPU, processes beside a GPU
    (:func:`~landmark.models.runtime.decode_threads`); the caller's thread normalises and
    cuts the crops of each batch (:meth:`Preprocess.finish_batch`) and runs the network."""
    check_tta(tta)
    threads = decode_threads(rec.runtime)
    workers = decode_workers(threads) if workers is None else workers
    draft = DRAFT_FACTOR * rec.preprocess.side(tta)
    loader = image_loader(queries, rec.preprocess.decode_transform(tta), batch_size=max(1, batch_size // tta),
                          workers=workers, draft=draft, threads=threads and workers > 0)
    best, rejects = {}, []
    paths = queries["path"].astype(str).to_numpy()
    for batch in good_batches(loader, rejects, f"predict (tta={tta})"):
        rows = batch["index"].tolist()
        best.update(zip(rows, best_answers(rec, rec.preprocess.finish_batch(batch["image"], tta), tta, paths[rows])))
    return answers_frame(rec, queries, best), rejects


def predict(checkpoint: str | Path, images: str | Path, tta: int = TTA, batch_size: int = BATCH_SIZE,
            workers: int | None = None, device: str | None = None, runtime: str = DEFAULT_RUNTIME,
            threads: int | None = None, index: str | Path | bool | None = None, *, engine: str = DEFAULT_ENGINE,
            ray_address: str | None = None, actors: int | None = None, actor_cpus: float | None = None,
            actor_gpus: float | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """Load a checkpoint (or a run folder's best) and predict the images of a folder, a CSV or
    one image file (see :func:`predict_images`).

    Args:
        checkpoint: ``.pt`` from ``landmark train`` (or its run folder) or ``.onnx`` from ``landmark export``.
        runtime: ``torch``, ``onnx`` or ``auto`` (:func:`landmark.models.runtime.load_runtime`).
        threads: ONNX Runtime intra-op threads (default: all CPUs; with ``engine="ray"`` each actor's CPUs).
        index: an index folder to score with; None: the run's own ``RUN/index`` when the
            checkpoint sits in a run folder that has one (confidence confirmed by the
            reference photos, docs/quality.md); False: the classifier alone.
        engine: ``local`` (this process) or ``ray``: decoding in Ray tasks and the model in a
            pool of actors, on this machine or the cluster at ``ray_address``
            (:func:`landmark.inference.ray_predict.predict_ray`; ``actors``, ``actor_cpus``,
            ``actor_gpus`` size the pool, ``workers`` is not used); the same rows either way.

    Raises:
        FileNotFoundError: no such checkpoint or image source.
        ValueError: not a checkpoint, no images, a bad ``tta``, device or runtime; an unknown
            engine, or ``ray`` without Ray installed (one line saying how to install it).
    """
    from .recognizer import Recognizer
    check_engine(engine)
    check_tta(tta)
    if engine == "ray":
        from .ray_predict import predict_ray
        return predict_ray(checkpoint, images, tta=tta, batch_size=batch_size, device=device, runtime=runtime,
                           threads=threads, index=index, ray_address=ray_address, actors=actors,
                           actor_cpus=actor_cpus, actor_gpus=actor_gpus)
    queries = read_queries(images)
    if queries.empty:
        raise ValueError(f"{images} holds no image files")
    rec = Recognizer.load(checkpoint, index=index, device=device, runtime=runtime, threads=threads)
    return recognize_queries(rec, queries, tta, batch_size, workers=workers)


def knn_predict(checkpoint: str | Path, index_dir: str | Path, images: str | Path, *,
                scoring: str = KNN_SCORING, work: str | Path | None = None, config: RetrievalConfig | None = None,
                nonlandmarks: str | Path | None = None, verify_cache: str | Path | None = None,
                batch_size: int = BATCH_SIZE, workers: int | None = WORKERS, device: str | None = None,
                overwrite: bool = False, runtime: str = DEFAULT_RUNTIME, threads: int | None = None):
    """Recognise query photos against an index (``landmark knn``).

    ``scoring="reference"`` (the default) answers through the one scoring path
    (:mod:`landmark.retrieval.scoring`): ``checkpoint`` loaded as a
    :class:`~landmark.inference.recognizer.Recognizer` over ``index_dir`` and the photos run
    through :func:`recognize_queries`, the very loop of :func:`predict`, so each photo gets the
    same landmark, score and verdict as ``landmark predict --index DIR``, ``recognize``, the
    Recognizer and the service.  ``scoring="knn-vote"`` is the similarity-weighted kNN vote
    (:func:`landmark.retrieval.pipeline.knn_vote_predict`, settings ``config.knn``/``config.verify``,
    ``nonlandmarks``, ``verify_cache``, ``work``), a named alternative kept for benchmarks.

    Args:
        images: query folder, CSV or one photo; ``knn-vote`` also takes query embeddings ``.npy``.
        work: with ``knn-vote``: path prefix of the query (and non-landmark) embeddings it writes.
        config: with ``reference`` only the index section may differ from the defaults (it is
            not used: the index is built already).
        batch_size, workers, device, runtime, threads: as :func:`predict`.

    Returns:
        (predictions ``id, landmark_id, score, name, verdict`` (+ ``path`` with ``reference``),
        one row per query, unreadable ones with an empty landmark and verdict ``unreadable``;
        the rejects; the kNN vote's :class:`~landmark.retrieval.knn.Recognition`, None with
        ``reference``).

    Raises:
        FileNotFoundError: no checkpoint, index or images.
        ValueError: an unknown ``scoring``; kNN-vote settings (``config.knn``/``config.verify``
            other than the defaults, ``nonlandmarks``, ``verify_cache``) or an embeddings ``.npy``
            with ``reference``; ``knn-vote`` without ``work``; as :meth:`Recognizer.load`.
    """
    if scoring not in KNN_SCORINGS:
        raise ValueError(f"scoring {scoring!r}: choose one of {', '.join(KNN_SCORINGS)}")
    if scoring == "knn-vote":
        from ..retrieval.pipeline import knn_vote_predict
        if work is None:
            raise ValueError("knn-vote scoring writes the query embeddings: give work=PATH_PREFIX")
        return knn_vote_predict(checkpoint, index_dir, images, work=work, config=config, nonlandmarks=nonlandmarks,
                                verify_cache=verify_cache, batch_size=batch_size, workers=workers, device=device,
                                overwrite=overwrite, runtime=runtime, threads=threads)
    voting = [name for name, given in (("nonlandmarks", nonlandmarks is not None),
                                       ("verify_cache", verify_cache is not None),
                                       ("knn settings", config is not None and config.knn != KnnConfig()),
                                       ("verify settings", config is not None and config.verify != VerifyConfig()))
              if given]
    if voting:
        raise ValueError(f"{', '.join(voting)}: settings of the kNN vote, used only with scoring='knn-vote' (the "
                         f"default scoring, reference, answers as predict and recognize do)")
    if str(images).endswith(".npy"):
        raise ValueError(f"{images}: query embeddings are scored by the kNN vote only (scoring knn-vote); give the "
                         f"photos (a folder, a CSV or one photo) to answer as predict and recognize do")
    from .recognizer import Recognizer
    queries = read_queries(images)
    if queries.empty:
        raise ValueError(f"{images} holds no image files")
    rec = Recognizer.load(checkpoint, index=index_dir, device=device, runtime=runtime, threads=threads)
    predictions, rejects = recognize_queries(rec, queries, tta=1, batch_size=batch_size, workers=workers)
    return predictions, rejects, None
