"""File-level retrieval steps behind the CLI: embed, build/enrol an index, kNN predict.

Each function takes paths, does one user-facing job, writes its artifact and returns it
(or a small summary dict), so ``landmark embed / index build / index add / knn``, the
benchmark scripts and Python users call the same code::

    emb, rejects, info = embed_checkpoint(ckpt, image_frame(data="DATA"), "runs/emb.npy")
    build_index(emb, "runs/idx", params=load_retrieval_config("exact").index, model_info=info)
    predictions, rejects, result = knn_vote_predict(ckpt, "runs/idx", "photos/", work="runs/knn")

Settings come from :mod:`landmark.retrieval.config` (presets ``exact``, ``ivfpq``, ``verified``).
"""
from __future__ import annotations

import errno
import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import Reject, read_queries
from ..defaults import BATCH_SIZE, EMBED_DTYPE, PART_SIZE, TOP_CLASSES, WORKERS
from ..models.runtime import Runtime, load_runtimes
from ..models.runtime_info import DEFAULT_ENGINE, DEFAULT_RUNTIME, announce, check_engine
from ..io import read_csv
from .config import (REJECT_THRESHOLD, IndexParams, KnnConfig, LocalConfig, RetrievalConfig, RetrieveConfig,
                     is_stored_threshold)
from .embeddings import Embeddings, embed_images, embeddings_path, labelled_images, load_embeddings
from .index import (ENROL_UNLABELLED_FIX, RECOGNISE_UNLABELLED_FIX, UNLABELLED, LandmarkIndex, check_cells,
                    refuse_unlabelled, unlabelled_count)
from .knn import Recognition, recognise, verification_inliers
from .provenance import check_model, checkpoints_of, max_side_of, runtime_record
from .scoring import CALIBRATION_K, calibrate_landmark, coverage_summary, decide, verdict as verdict_words
from .ranking import normalise
from .shards import embed_shard


def image_frame(*, images: str | Path | None = None, data: str | Path | None = None,
                landmarks: list[str] | None = None, label: str | None = None) -> pd.DataFrame:
    """The images to embed: ``--data`` (labelled GLDv2 / class tree) or ``--images``
    (folder or CSV; all given the landmark id of ``label`` when set: :func:`label_id`,
    ``India Gate`` -> ``India_Gate``, as class folders are named).

    Args:
        landmarks: with ``data``: only these landmark ids (None: all).

    Returns:
        one row per image: ``id``, ``path`` and, when known, ``landmark_id``.

    Raises:
        ValueError: neither or both of ``images`` and ``data`` are given.
        FileNotFoundError: as :func:`landmark.data.read_queries` / ``read_train``.
    """
    if (images is None) == (data is None):
        raise ValueError("give exactly one of --images (folder/CSV) and --data (labelled GLDv2 folder or class tree)")
    if data is not None:
        return labelled_images(data, landmarks)
    frame = read_queries(images)
    if frame.empty:
        raise ValueError(f"no photos in {images}: give a folder with photos in it (searched with its sub-folders)")
    if label is not None:
        frame["landmark_id"] = label_id(label)
    return frame


def label_id(label: str) -> str:
    """The landmark id of ``--label``: a person's name made one (``India Gate`` -> ``India_Gate``,
    :func:`landmark.data.gldv2.folder_landmark_id`), since the Kaggle formats separate a
    prediction's fields with spaces; the label itself is kept as the name (:func:`source_names`).

    Raises:
        ValueError: the label is empty or only spaces."""
    from ..data.gldv2 import folder_landmark_id
    lid = folder_landmark_id(str(label))
    if not lid:
        raise ValueError(f"--label {label!r} is empty: give the landmark's name, e.g. --label 'India Gate'")
    return lid


def source_names(*, data=None, label: str | None = None, landmark_ids=()) -> dict[str, str] | None:
    """{landmark_id: readable name} of photos to index or enrol: ``data``'s GLDv2 categories /
    class folders (:func:`landmark.data.gldv2.landmark_names`), or ``{label_id(label): label}``
    when ``--label`` is a name other than its id (``India Gate``); None when there is none."""
    if data is not None:
        from ..data.gldv2 import landmark_names
        return landmark_names(data, landmark_ids)
    if label is not None and label_id(label) != str(label):
        return {label_id(label): str(label)}
    return None


def as_checkpoints(checkpoint) -> list[Path]:
    """``checkpoint`` as a list of paths: one path, or several (an ensemble whose descriptors are
    concatenated, :class:`~landmark.models.runtime.EnsembleRuntime`); ``[]`` for None."""
    if checkpoint is None:
        return []
    if isinstance(checkpoint, (str, Path)):
        return [Path(checkpoint)]
    return [Path(c) for c in checkpoint]


def load_embedder(checkpoint, *, runtime: str = DEFAULT_RUNTIME, device: str | None = None,
                  threads: int | None = None, image_size: int | None = None, max_side: int | None = None) -> Runtime:
    """The runtime that embeds with ``checkpoint`` (a path, or several: their descriptors concatenated,
    :func:`~landmark.models.runtime.load_runtimes`).  Aspect-kept photos (``max_side``) need PyTorch (an
    ONNX export takes squares only), so ``auto`` loads the ``.pt`` files in PyTorch there.

    Raises:
        FileNotFoundError / ValueError: as :func:`~landmark.models.runtime.load_runtimes`.
    """
    paths = as_checkpoints(checkpoint)
    aspect_kept = max_side is not None and runtime == "auto" and all(p.suffix.lower() != ".onnx" for p in paths)
    engine = load_runtimes(paths, "torch" if aspect_kept else runtime, device, threads, image_size=image_size)
    if aspect_kept:
        engine.why_not_onnx = f"--max-side {max_side}: an ONNX export takes squares only"
    return engine


def embed_checkpoint(checkpoint: str | Path | list, frame: pd.DataFrame, out: str | Path, *, top_classes: int = TOP_CLASSES,
                     dtype: str = EMBED_DTYPE, image_size: int | None = None, max_side: int | None = None,
                     batch_size: int = BATCH_SIZE, workers: int | None = WORKERS, device: str | None = None,
                     overwrite: bool = False, runtime: str = DEFAULT_RUNTIME, threads: int | None = None,
                     expect: dict | None = None) -> tuple[Embeddings, list[Reject], dict]:
    """Load ``checkpoint`` and :func:`~landmark.retrieval.embeddings.embed_images` ``frame`` into ``out``.

    Args:
        checkpoint: ``.pt`` written by ``landmark train`` (or a ``.onnx`` export with
            ``runtime`` ``onnx``/``auto``: :func:`landmark.models.runtime.load_runtime`); a list of
            several: each photo's descriptors of every model, L2-normalised, concatenated
            (``[N, sum D_i]``, :class:`~landmark.models.runtime.EnsembleRuntime`; recorded with
            :func:`~landmark.retrieval.provenance.ensemble_record`).
        frame: rows ``id``, ``path`` (and ``landmark_id``), e.g. from :func:`image_frame`.
        out: ``NAME.npy`` to write (side files beside it).
        threads: ONNX Runtime threads; the other arguments as in ``embed_images``.
        expect: the model the vectors must come from (an index's ``meta['model']``): another
            checkpoint or image size is refused before any photo is embedded.

    Returns:
        (embeddings ``[N, D]`` float16/32, rejects, the model's record
        (:func:`~landmark.retrieval.provenance.model_record`: ``checkpoint, sha256, backbone,
        image_size, mean, std, runtime``) for index metadata).

    Raises:
        FileNotFoundError / ValueError: as ``load_runtime`` and ``embed_images`` (with ``max_side``, ``auto``
            loads the ``.pt`` checkpoint in PyTorch, even beside an export; ``onnx`` is refused).
        landmark.retrieval.provenance.ModelMismatch: the checkpoint is not ``expect``'s model.
    """
    paths = as_checkpoints(checkpoint)
    refuse_missing_members(expect, paths)
    engine = load_embedder(paths, runtime=runtime, device=device, threads=threads, image_size=image_size,
                           max_side=max_side)
    announce(engine, runtime)
    if expect is not None:
        check_model(runtime_record(engine, paths[0], image_size, max_side), expect,
                    f"the vectors of {' + '.join(map(str, paths))}",
                    "this index", fix="give the checkpoint the index was built with, or build a new index")
    return _embed(engine, paths[0], frame, out, top_classes=top_classes, dtype=dtype, image_size=image_size,
                  max_side=max_side, batch_size=batch_size, workers=workers, device=device, overwrite=overwrite)


def embed_checkpoint_shard(checkpoint: str | Path, frame: pd.DataFrame, folder: str | Path, *,
                           shard: tuple[int, int] = (0, 1), part_size: int = PART_SIZE, runtime: str = DEFAULT_RUNTIME,
                           threads: int | None = None, device: str | None = None, engine: str = DEFAULT_ENGINE,
                           ray_address: str | None = None, actors: int | None = None,
                           actor_cpus: float | None = None, actor_gpus: float | None = None, **options) -> dict:
    """Load ``checkpoint`` and embed shard ``(i, n)`` of ``frame`` into ``folder`` (resumable;
    :func:`landmark.retrieval.shards.embed_shard`, then :func:`~landmark.retrieval.shards.merge_shards`).

    Args:
        part_size: images per atomically written part.
        engine: ``local`` (this process) or ``ray`` (Ray Data: decoding tasks and a pool of model
            actors on this machine or the cluster at ``ray_address``;
            :func:`landmark.retrieval.ray_embed.embed_shard_ray`, which takes ``ray_address``,
            ``actors``, ``actor_cpus`` and ``actor_gpus``); both write the same parts.
        options: ``top_classes``, ``dtype``, ``image_size``, ``max_side``, ``batch_size``, ``workers``
            (local engine only) as in ``embed_images``; ``checkpoint`` may be several (an ensemble,
            :func:`embed_checkpoint`), local engine only, and so is ``max_side``.

    Returns:
        ``embed_shard``'s summary ``{folder, shard, parts, done_before, embedded, rejects, rows}``
        (the Ray engine adds ``engine`` and the pool's size).

    Raises:
        FileNotFoundError / ValueError: as ``load_runtime`` and ``embed_shard``; an unknown
            engine, ``ray`` without Ray installed (one line saying how to install it), ``ray`` with
            several checkpoints or ``max_side``.
    """
    check_engine(engine)
    paths = as_checkpoints(checkpoint)
    if engine == "ray":
        if len(paths) > 1 or options.get("max_side"):
            raise ValueError("--engine ray embeds squares with one checkpoint: for several checkpoints (an ensemble) "
                             "or --max-side, run one `landmark embed --shard i/n` per machine or process instead")
        from .ray_embed import embed_shard_ray
        options.pop("workers", None)   # decoding runs in Ray tasks, one CPU each
        options.pop("max_side", None)
        return embed_shard_ray(paths[0], frame, folder, shard=shard, part_size=part_size, runtime=runtime,
                               threads=threads, device=device, ray_address=ray_address, actors=actors,
                               actor_cpus=actor_cpus, actor_gpus=actor_gpus, **options)
    max_side = options.get("max_side")
    model = load_embedder(paths, runtime=runtime, device=device, threads=threads,
                          image_size=options.get("image_size"), max_side=max_side)
    announce(model, runtime)
    return embed_shard(model, model.preprocess, frame, folder, shard=shard, part_size=part_size,
                       classes=model.classes, device=device,
                       model_info=runtime_record(model, paths[0], options.get("image_size"), max_side), **options)


def _embed(engine: Runtime, checkpoint: str | Path, frame: pd.DataFrame, out: str | Path, *, image_size: int | None,
           max_side: int | None = None, **options) -> tuple[Embeddings, list[Reject], dict]:
    """:func:`embed_checkpoint` with the model already loaded (``options``: as ``embed_images``)."""
    info = runtime_record(engine, checkpoint, image_size, max_side)
    emb, rejects = embed_images(engine, engine.preprocess, frame, out, classes=engine.classes,
                                image_size=image_size, max_side=max_side, model_info=info, **options)
    return emb, rejects, info


def index_embeddings(*, checkpoint: str | Path | None = None, embeddings: str | Path | None = None,
                     labels: str | Path | None = None, data: str | Path | None = None,
                     images: str | Path | None = None, landmarks: list[str] | None = None, label: str | None = None,
                     out: str | Path | None = None, image_size: int | None = None, max_side: int | None = None,
                     batch_size: int = BATCH_SIZE, workers: int | None = WORKERS, device: str | None = None,
                     overwrite: bool = False, expect: dict | None = None, params: IndexParams | None = None,
                     check=None, unlabelled: bool = False) -> tuple[Embeddings, list[Reject], dict]:
    """Labelled embeddings to index or enrol: an embeddings file, or photos embedded now.

    ``checkpoint``: one path, or a list of several (their descriptors concatenated: :func:`embed_checkpoint`).
    Either ``embeddings`` (a ``.npy`` from ``landmark embed``; its landmark ids from its
    ``ids.csv`` or, when given, from ``labels``, a CSV ``id,landmark_id``), or
    ``checkpoint`` with ``data`` (a labelled GLDv2 folder or class tree, optionally only
    ``landmarks``) or ``images`` (a folder/CSV of photos of the one landmark ``label``),
    embedded into ``out`` at ``image_size`` pixels (default: the checkpoint's; ``max_side``: the
    longer side at ``max_side`` pixels, aspect ratio kept, :func:`embed_images`).  With ``expect``
    (an index's model record), vectors of another model are refused, before embedding.  With
    ``params`` (the index to build), settings the photos cannot fill (more IVF cells than
    photos: :func:`~landmark.retrieval.index.check_cells`) are refused before anything is embedded.
    Photos of ``data``'s folders of no landmark (``no_landmark/``:
    :func:`landmark.data.names.is_no_landmark_folder`) are left out, in one line on stderr
    (:func:`without_no_landmark`).  ``check(landmark_ids)`` (e.g. :func:`refuse_names_alike`) is
    called with the landmark ids to index before any photo is embedded, and may refuse them.
    ``unlabelled`` (``index build``): ``images`` without ``label``, and an embeddings file without
    landmark ids, are taken as photos without a landmark (``landmark_id`` empty in the index:
    :data:`~landmark.retrieval.index.UNLABELLED`, an index for ``landmark retrieve`` only); otherwise refused.

    Returns:
        (embeddings ``[N, D]``, rejects, the model's record for the index's metadata: the
        embeddings file's own, ``{}`` when it records none).

    Raises:
        ValueError: no source, ``images`` without ``label`` or embeddings without landmark ids (unless
            ``unlabelled``), a labels CSV without ``id,landmark_id`` or missing an embedded id, ``params`` the
            photos cannot fill.
        FileNotFoundError / FileExistsError: as :func:`load_embeddings` / :func:`embed_checkpoint`.
        landmark.retrieval.provenance.ModelMismatch: the vectors are not ``expect``'s model's.
    """
    if embeddings is not None:
        emb = load_embeddings(embeddings)
        if expect is not None:
            check_model(emb.model, expect, f"the vectors of {embeddings}", "this index",
                        fix=f"re-embed them with `landmark embed {' '.join(map(str, checkpoints_of(expect))) or 'CHECKPOINT'}`")
        if labels is not None:
            emb.items = _with_labels(emb.items, labels)
        emb = _without_no_landmark_rows(emb, embeddings)
        if not unlabelled and (emb.labels is None or unlabelled_count(emb.labels)):
            raise ValueError(f"the photos of {embeddings} have no landmark (no landmark_id in its ids.csv, or an "
                             f"empty one): give --labels CSV (id,landmark_id)")
        if check is not None and emb.labels is not None:
            check(list(dict.fromkeys(emb.labels.astype(str).tolist())))
        if params is not None:
            check_cells(params, len(emb))
        return emb, [], dict(emb.model or {})
    if not as_checkpoints(checkpoint):
        raise ValueError("give --checkpoint with --data/--images, or --embeddings FILE.npy")
    if images is not None and label is None and not unlabelled:
        raise ValueError("--images needs --label (the landmark id of these photos); or use --data")
    if images is not None and label is not None:
        refuse_no_landmark_label(label_id(label), f"--label {label!r}", unlabelled=unlabelled)
    frame = image_frame(images=images, data=data, landmarks=landmarks, label=label)
    # the index keeps each photo's path: absolute, so that an index read from another folder (the service's
    # thumbnails, local-feature re-ranking) finds its photos
    frame = frame.assign(path=[os.path.abspath(p) if isinstance(p, str) and p else p for p in frame["path"]])
    if data is not None:
        frame = without_no_landmark(frame, data)
    if check is not None and "landmark_id" in frame:
        check(list(dict.fromkeys(frame["landmark_id"].astype(str).tolist())))
    if params is not None:
        check_cells(params, len(frame))   # before embedding writes OUT/embeddings.npy
    return embed_checkpoint(checkpoint, frame, out, image_size=image_size, max_side=max_side, batch_size=batch_size,
                            workers=workers, device=device, overwrite=overwrite, expect=expect)


def without_no_landmark(frame: pd.DataFrame, data) -> pd.DataFrame:
    """``frame`` (labelled photos of ``data``: ``id, landmark_id, path``) without the photos of
    its folders of no landmark (``no_landmark/``, :func:`landmark.data.names.is_no_landmark_folder`):
    they show no landmark, so indexed they would be answered as a landmark named "No Landmark"
    (``landmark knn --nonlandmarks DIR`` is where they are used).  Says how many on one stderr line.

    Raises:
        ValueError: every photo of ``data`` is in such a folder (nothing to index)."""
    import sys

    from ..data.gldv2 import without_no_landmark_folders
    kept, apart = without_no_landmark_folders(frame)
    if apart.empty:
        return frame
    shown = ", ".join(f"{f}/" for f in dict.fromkeys(apart["landmark_id"].astype(str)))
    if kept.empty:
        given = ", ".join(map(str, data)) if isinstance(data, (list, tuple)) else data
        raise ValueError(f"every photo of {given} is in {shown}, photos of no landmark: nothing to index; give "
                         f"folders of landmarks' photos (photos of no landmark go to landmark knn --nonlandmarks DIR)")
    n = len(apart)
    print(f"left out {n} photo{'s' if n != 1 else ''} of {shown}: they show no landmark, so they are not indexed "
          f"(landmark knn --nonlandmarks DIR is where such photos are used)", file=sys.stderr)
    return kept


def _without_no_landmark_rows(emb: Embeddings, source) -> Embeddings:
    """``emb`` without its rows labelled as a folder of no landmark (``landmark embed --data TREE`` keeps
    ``TREE/no_landmark/``'s photos under the landmark id ``no_landmark``, as do ``--labels`` rows so labelled):
    indexed, they were answered as a landmark named "No Landmark".  One stderr line, as
    :func:`without_no_landmark` for ``--data``; unlabelled embeddings are returned as they are.

    Raises:
        ValueError: every row is so labelled (nothing to index)."""
    if emb.labels is None:
        return emb
    rows = np.arange(len(emb))
    kept = without_no_landmark(emb.items.assign(_row=rows), source)["_row"].to_numpy()
    if len(kept) == len(emb):
        return emb
    return Embeddings(emb.vectors[kept], emb.items.iloc[kept].reset_index(drop=True),
                      classes=None if emb.classes is None else tuple(np.asarray(a)[kept] for a in emb.classes),
                      model=emb.model)


def refuse_no_landmark_label(landmark_id: str, given: str, unlabelled: bool = False) -> None:
    """Refuse to index or enrol photos under a landmark id that names photos without a landmark
    (``no_landmark``, ``No Landmark``: :func:`landmark.data.names.is_no_landmark_folder`): the index
    would answer them as a landmark named "No Landmark".  ``given``: how the caller names it
    (``--label 'No Landmark'``); ``unlabelled``: ``index build``, where an archive is the way.

    Raises:
        ValueError: one line saying what to do instead.
    """
    from ..data.names import display_name, is_no_landmark_folder
    if is_no_landmark_folder(landmark_id):
        archive = "for an archive searched by landmark retrieve, leave --label out; " if unlabelled else ""
        raise ValueError(f"{given} names photos without a landmark, which are never indexed as a landmark (they "
                         f"would be answered as one named {display_name(landmark_id)!r}): {archive}photos without a "
                         f"landmark choose the 'no landmark' threshold as --nonlandmarks DIR; to enrol a landmark, "
                         f"give its name")


def _with_labels(items: pd.DataFrame, labels: str | Path) -> pd.DataFrame:
    """``items`` with the ``landmark_id`` of each id from the CSV ``labels`` (``id,landmark_id``).  A cell
    names its landmark as ``--label`` does (:func:`label_id`: ``Notre Dame`` -> ``Notre_Dame``, shown as
    Notre Dame); one of spaces only is empty, a photo without a landmark (it was the landmark ``" "``,
    answered by name ``" "``; a space in an id broke the Kaggle format that ``predict`` writes)."""
    from ..data.gldv2 import folder_landmark_id
    table = read_csv(labels, dtype=str, keep_default_na=False)
    if not {"id", "landmark_id"} <= set(table.columns):
        raise ValueError(f"{labels} needs the columns id,landmark_id")
    table = table.assign(landmark_id=table["landmark_id"].map(folder_landmark_id))
    items = items.drop(columns=["landmark_id"], errors="ignore").merge(
        table[["id", "landmark_id"]].drop_duplicates("id"), on="id", how="left")
    missing = items["landmark_id"].isna()
    if missing.any():
        raise ValueError(f"{int(missing.sum())} embedded ids have no label in {labels}, "
                         f"e.g. {items.loc[missing, 'id'].iloc[0]}")
    return items


def build_index(embeddings: Embeddings, out: str | Path, *, params: IndexParams | None = None,
                model_info: dict | None = None, overwrite: bool = False,
                names: dict[str, str] | None = None) -> dict:
    """Build and save an index folder over embeddings ``[N, D]`` (rows without a landmark: an index for
    ``landmark retrieve`` only, :meth:`LandmarkIndex.build`).

    Args:
        params: index settings (default :class:`~landmark.retrieval.config.IndexParams`, or a
            preset's: ``load_retrieval_config("ivfpq").index``).
        model_info: the model the embeddings came from (``embed_checkpoint``'s info), stored
            in ``meta.json`` so queries are embedded alike.
        names: landmark id -> readable name, stored in ``meta.json``.

    Returns:
        ``{index, kind, count, landmarks, seconds}`` (``landmarks``: of the labelled photos), and
        ``unlabelled`` (how many photos have no landmark) when any has none.

    Raises:
        FileExistsError: ``out`` already holds index files and ``overwrite`` is False.
        ValueError: as :meth:`LandmarkIndex.build` (bad ``pq_m`` ...).
    """
    start = time.perf_counter()
    meta = {"model": model_info or embeddings.model or {}, **({"names": names} if names else {})}
    index = LandmarkIndex.build(embeddings, params, meta)
    index.save(out, overwrite=overwrite)
    unlabelled = index.unlabelled
    return {"index": str(out), "kind": index.kind, "count": len(index), "landmarks": index.landmark_count,
            **({"unlabelled": unlabelled} if unlabelled else {}), "seconds": round(time.perf_counter() - start, 2)}


def enrol(index_dir: str | Path, embeddings: Embeddings, names: dict[str, str] | None = None, *,
          classes: list[str] | None = None, threshold: float | None = None, name_of=None,
          rename: bool = False, confirm: bool | None = None, changes=None, saved=None) -> dict:
    """Add labelled embeddings to a saved index (in place, crash-safe, one writer at a time:
    :meth:`LandmarkIndex.update` reloads the index under its lock, so concurrent enrolments
    all survive), calibrate each landmark enrolled, and say how well it is covered.  The one
    enrolment path: ``landmark index add``, the service's ``POST /v1/landmarks/{id}/images``
    and Python callers (:func:`enrol_index` returns the index too).

    Each landmark of ``embeddings`` the classifier does not know gets its own "no landmark"
    threshold from its photos (:func:`landmark.retrieval.scoring.calibrate_landmark`, stored in
    the index's ``meta['landmark_thresholds']``, never below the run's); every one gets a
    coverage report (photos, nearest landmark, what would help).

    Args:
        names: landmark id -> readable name, stored in ``meta.json`` for ids without one.
        classes: the classifier's landmarks (None: read from the index's checkpoint when it is
            on disk, else every enrolled landmark is calibrated).
        threshold: the run's reference threshold, the floor of calibrated ones (None: the
            index's checkpoint's, else :data:`~landmark.retrieval.config.REJECT_THRESHOLD`).
        name_of: landmark id -> readable name for the reply (default: ``names`` / the index's).
        rename: ``names`` replace stored ones for landmarks that got photos now (the service's
            token holders may rename).
        confirm: report how its photos match by local features (``confirmation``: pairs of its
            first 5 photos with >= 10 inliers, :func:`landmark.retrieval.confirm.geometric_coverage`;
            seconds of CPU) and add it to the advice; None: when the ``local`` extra is installed.
        changes: measure what the enrolment changes for the answers of the nearest landmarks'
            indexed photos (:func:`enrol_index`; :func:`landmark.inference.recognizer.answer_changes` makes one from a checkpoint).
        saved: called ``saved(index, added)`` as soon as the index is saved (before the seconds of
            coverage and ``changes``), so that a caller interrupted later knows the index took the photos.

    Returns:
        ``{index, added, skipped_duplicates, count, new_landmarks, landmarks}``; ``landmarks``
        maps each enrolled landmark id to its calibration and coverage (and, with ``changes``,
        ``answers_changed``).

    Raises:
        FileNotFoundError / ValueError: as :meth:`LandmarkIndex.load` and :meth:`LandmarkIndex.add`.
        landmark.retrieval.provenance.ModelMismatch: ``embeddings.model`` is not the index's model.
    """
    return enrol_index(index_dir, embeddings, names, classes=classes, threshold=threshold, name_of=name_of,
                       rename=rename, confirm=confirm, changes=changes, saved=saved)[1]


def _stored_name(index: LandmarkIndex, landmark_id: str) -> str:
    """What a person reads for an index's landmark (:func:`landmark.data.names.display_name` of
    its stored name): ``Gateway of India`` for the id ``Gateway_of_India``, as the service says."""
    from ..data.names import display_name
    return display_name(landmark_id, index.meta.get("names", {}).get(str(landmark_id)))


def enrol_index(index_dir: str | Path, embeddings: Embeddings, names: dict[str, str] | None = None, *,
                classes: list[str] | None = None, threshold: float | None = None,
                name_of=None, rename: bool = False, confirm: bool | None = None,
                changes=None, saved=None) -> tuple[LandmarkIndex, dict]:
    """:func:`enrol`, returning the updated index (as saved) with the summary.

    ``changes``: what enrolling each landmark changes for the answers of its nearest landmarks'
    photos, ``changes(index, before, thresholds_before, landmark_id=, enrolled=) -> dict | None``
    (:meth:`landmark.inference.recognizer.Recognizer.enrolment_changes`; ``before``: the index's
    size before, ``enrolled`` ``[n, D]``: the landmark's photos given; the keywords of
    ``Recognizer.enrolment_changes``, which the service passes): added to its report as
    ``answers_changed``, its sentence to ``summary``; None: not measured.  ``saved(index, added)``:
    called once the index is saved, before anything after it can fail or be interrupted."""
    state = {}

    def change(index: LandmarkIndex) -> tuple[set, int, list, dict]:
        state.update(before=len(index), thresholds=dict(index.meta.get("landmark_thresholds", {})))
        refuse_unlabelled(index.labels, "enrolment", fix=ENROL_UNLABELLED_FIX)
        for lid in dict.fromkeys(embeddings.labels.astype(str).tolist()):
            refuse_no_landmark_label(lid, f"the landmark id {lid!r}")
        check_model(embeddings.model, index.meta.get("model"), "the vectors to enrol", "this index",
                    fix="embed the photos with the index's checkpoint (landmark index add --checkpoint)")
        known, floor = _run_scoring(index, classes, threshold)   # a bad floor is refused before anything changes
        _refuse_names_alike(index, embeddings.labels.astype(str).tolist(), names, classes=classes, name_of=name_of)
        before = set(index.items["landmark_id"])
        added, skipped = index.add(embeddings)
        if names and rename and added:
            index.meta["names"] = {**index.meta.get("names", {}), **names}
        elif names:
            index.meta["names"] = {**names, **index.meta.get("names", {})}
        shown = name_of or partial(_stored_name, index)
        report = {}
        for lid in dict.fromkeys(embeddings.labels.tolist()):
            report[lid] = calibrate_enrolled(index, lid, embeddings, floor, name_of=shown)
            if known is not None and lid in known:   # the classifier's landmark: the run's threshold
                report[lid] = {**report[lid], "threshold": floor, "calibrated": False}
            elif added or (lid in index.meta.get("landmark_thresholds", {}) and (index.labels == str(lid)).any()):
                # photos sent again: recalibrated from its indexed photos, stored as replied (what the
                # refusal of a stored threshold outside [0, 1] tells to do: enrol its photos again)
                index.meta.setdefault("landmark_thresholds", {})[lid] = {
                    k: report[lid][k] for k in ("threshold", "photos", "nearest_landmark", "coverage")}
        return before, added, skipped, report

    index, (before, added, skipped, report) = LandmarkIndex.update(index_dir, change)
    if saved is not None:   # the photos are in the index now, whatever happens to the report below
        saved(index, added)
    for lid, cover in report.items():   # outside the index's lock: local features take seconds
        if cover.get("calibrated", True):
            confirmation, advice = _local_coverage(index, lid, confirm, good=cover["coverage"] == "good")
            advice = cover["advice"] if advice is None else f"{cover['advice']}; {advice}"
            report[lid] = {**cover, "confirmation": confirmation, "advice": advice,
                           "summary": coverage_summary(cover["photos"], cover["distinct"], cover["coverage"], advice)}
    for lid, cover in report.items():   # every photo given is indexed already, under another landmark
        if not (index.labels == str(lid)).any():
            given = embeddings.items.loc[embeddings.labels == str(lid), "id"].astype(str)
            held = index.items.loc[index.items["id"].astype(str).isin(given), "landmark_id"].astype(str)
            owners = ", ".join((name_of or partial(_stored_name, index))(o)
                               for o in dict.fromkeys(held)) or "another landmark"
            advice = (f"nothing enrolled: {'its photo is' if len(given) == 1 else f'all {len(given)} of its photos are'}"
                      f" in the index already, as {'a photo' if len(given) == 1 else 'photos'} of {owners}; send other "
                      f"photos of it")
            report[lid] = {**cover, "threshold": None, "photos": 0, "coverage": "none", "advice": advice,
                           "summary": f"0 photos; {advice}"}
    if changes is not None and added:
        for lid, cover in report.items():
            if not (index.labels[state["before"]:] == str(lid)).any():
                continue   # nothing of it enrolled now
            vectors = np.asarray(embeddings.vectors[embeddings.labels == str(lid)], dtype=np.float32)
            found = changes(index, state["before"], state["thresholds"], landmark_id=str(lid), enrolled=vectors)
            if found is not None:
                report[lid] = {**cover, "answers_changed": found, "summary": f"{cover['summary']}; {found['summary']}"}
    new = sorted(set(index.items["landmark_id"]) - before)
    return index, {"index": str(index_dir), "added": added, "skipped_duplicates": len(skipped), "count": len(index),
                   "new_landmarks": new, "landmarks": report}


def add_unlabelled(index_dir: str | Path, embeddings: Embeddings, *, saved=None) -> dict:
    """Add photos without a landmark (:data:`~landmark.retrieval.index.UNLABELLED`) to an index that
    holds such photos already (an archive built by ``landmark index build --images DIR`` without
    ``--label``), for ``landmark retrieve``: crash-safe and one writer at a time, as :func:`enrol`;
    nothing is calibrated (there is no landmark to calibrate).  Photos whose id is indexed already
    are skipped and counted.  ``saved(index, added)``: as :func:`enrol`'s.

    Returns:
        ``{index, added, skipped_duplicates, count, unlabelled}``.

    Raises:
        FileNotFoundError / ValueError: as :meth:`LandmarkIndex.load`; an index without unlabelled
            photos (a recognition index: photos without a landmark would make every recogniser refuse
            it), or ``embeddings`` rows with a landmark.
        landmark.retrieval.provenance.ModelMismatch: ``embeddings.model`` is not the index's model.
    """
    def change(index: LandmarkIndex) -> tuple[int, list[str]]:
        if not index.unlabelled:
            raise ValueError(f"{index_dir} holds photos with landmarks only: photos without a landmark would make "
                             f"recognize, predict, knn, tag and serve refuse it; give --label NAME (or --data DIR), "
                             f"or build an archive index apart (landmark index build --images DIR without --label)")
        check_model(embeddings.model, index.meta.get("model"), "the photos to add", "this index",
                    fix="embed the photos with the index's checkpoint (landmark index add --checkpoint)")
        return index.add(embeddings, unlabelled=True)

    index, (added, skipped) = LandmarkIndex.update(index_dir, change)
    if saved is not None:
        saved(index, added)
    return {"index": str(index_dir), "added": added, "skipped_duplicates": len(skipped), "count": len(index),
            "unlabelled": index.unlabelled}


def refuse_names_alike(index: LandmarkIndex | str | Path, landmark_ids, names: dict[str, str] | None = None, *,
                       checkpoint: str | Path | None = None) -> None:
    """Refuse landmarks to enrol whose name differs from a landmark of the index or of its
    classifier only in case, ``_`` or spaces, before any photo is embedded (``index add``: the
    ids are known from ``--label`` or the class folders of ``--data``; :func:`enrol` checks again
    under the index's lock).

    Args:
        index: the index (or its folder).
        landmark_ids: the landmarks to enrol; names: their readable names (:func:`source_names`).
        checkpoint: the classifier (default: the one the index records; not on disk: the index's
            landmarks only).

    Raises:
        ValueError: one line naming both spellings and what to do (:func:`_refuse_names_alike`).
    """
    from ..data.names import display_name
    index = index if isinstance(index, LandmarkIndex) else LandmarkIndex.load(index)
    path = Path(checkpoint or index.meta.get("model", {}).get("checkpoint") or "")
    classes, trained = None, {}
    if path.suffix == ".pt" and path.is_file():
        from ..models.factory import load_checkpoint_file
        ckpt = load_checkpoint_file(path)
        classes = [str(c) for c in ckpt.get("classes", [])]
        trained = {str(k): str(v) for k, v in (ckpt.get("names") or {}).items()}
    stored = index.meta.get("names", {})
    _refuse_names_alike(index, landmark_ids, names, classes=classes,
                        name_of=lambda lid: display_name(lid, stored.get(lid) or trained.get(lid)))


def _refuse_names_alike(index: LandmarkIndex, landmark_ids, names: dict[str, str] | None, *,
                        classes: list[str] | None = None, name_of=None) -> None:
    """Refuse a landmark new to the index (``landmark_ids``: those to enrol) that would be shown
    with another one's name, but for case, ``_`` or spaces (``petra_jordan`` beside the trained
    ``Petra Jordan``), as class folders named alike are refused
    (:func:`landmark.data.gldv2.same_name_folders`): answers and photo keywords could not tell them apart.

    Raises:
        ValueError: one line naming both spellings and what to do, before the index changes.
    """
    from ..data.gldv2 import folder_key, folder_landmark_id
    from ..data.names import display_name
    stored, given = index.meta.get("names", {}), names or {}
    indexed = set(index.items["landmark_id"].astype(str))
    held = list(dict.fromkeys(index.items["landmark_id"].astype(str).tolist() + [str(c) for c in classes or []]))
    shown = {lid: (name_of(lid) if name_of else display_name(lid, stored.get(lid))) for lid in held}
    keys = {folder_key(text): lid for lid, text in shown.items()}
    for lid in dict.fromkeys(str(x) for x in landmark_ids):
        if lid in shown:
            continue
        text = display_name(lid, given.get(lid) or stored.get(lid))
        other = keys.get(folder_key(text))
        if other is not None:
            spelt, known = given.get(lid) or lid, shown[other]
            where = "this index" if other in indexed else "the model"
            # what names that landmark exactly: its name where the name makes its id (India Gate: India_Gate), else its id
            exact = f"'{known}'" if folder_landmark_id(known) == other else f"its id '{other}'"
            raise ValueError(f"'{spelt}' differs from '{known}', a landmark {where} already has, only in case, '_' or "
                             f"spaces: to add photos of {known}, give {exact} exactly; for another landmark, choose "
                             f"a name that differs in more (nothing was enrolled)")


def _local_coverage(index: LandmarkIndex, landmark_id: str, confirm: bool | None, *,
                    good: bool = False) -> tuple[dict, str | None]:
    """What the enrolment reply says of confirmation by local features (:mod:`landmark.retrieval.confirm`):
    (``confirmation``: its pairs of photos sharing geometry, or why there is none; advice to add).
    ``good``: its coverage is rated good, so the words say what was found and ask for no more photos."""
    from .confirm import available, geometric_coverage
    if confirm is False or not available():
        why = "switched off" if confirm is False else "the local extra is not installed"
        return {"local_features": f"off ({why}): its global similarity alone decides"}, None
    paths = index.items.loc[index.labels == str(landmark_id), "path"].astype(str).tolist() if "path" in index.items else []
    geo = geometric_coverage(paths)
    more = "" if good else ": add photos of the same side from nearby viewpoints"
    return geo, (
        f"its photos share no geometry with each other{more}" if geo["pairs"] and not geo["matched_pairs"] else
        f"{geo['matched_pairs']} of {geo['pairs']} pairs of its photos match by local features"
        if geo["pairs"] else "a second photo lets photos of it be confirmed from more viewpoints")


def _run_scoring(index: LandmarkIndex, classes: list[str] | None, threshold: float | None) -> tuple[set | None, float]:
    """The classifier's landmarks and the run's reference threshold (the floor of the thresholds
    calibrated for enrolled landmarks): as given, else from the checkpoint the index records
    (when it is on disk), else (None, the default).

    Raises:
        ValueError: the floor given or stored is not a finite number in [0, 1] (one line: NaN
            would calibrate every enrolled landmark to NaN, 7 to "never answered").
    """
    if threshold is not None and not is_stored_threshold(threshold):
        raise ValueError(f"the 'no landmark' threshold {threshold!r} given as the floor of enrolled landmarks' "
                         f"thresholds is not a number in [0, 1]: give one in [0, 1], or none (the run's)")
    if classes is None or threshold is None:
        path = Path(index.meta.get("model", {}).get("checkpoint") or "")
        if path.suffix == ".pt" and path.is_file():
            from ..models.factory import load_checkpoint_file
            ckpt = load_checkpoint_file(path)
            stored = ckpt.get("reject_threshold")
            classes = classes if classes is not None else [str(c) for c in ckpt.get("classes", [])]
            if threshold is None and isinstance(stored, dict):
                threshold = stored.get("reference")
                if threshold is not None and not is_stored_threshold(threshold):
                    raise ValueError(f"the checkpoint {path} stores the reference 'no landmark' threshold "
                                     f"{threshold!r}, not a number in [0, 1]: train the run again (or export it "
                                     f"again), or give the threshold (enrol(threshold=...))")
    return (None if classes is None else set(map(str, classes)),
            float(threshold if threshold is not None else REJECT_THRESHOLD["reference"]))


def calibrate_enrolled(index: LandmarkIndex, landmark_id: str, embeddings: Embeddings, floor: float,
                       name_of=str) -> dict:
    """:func:`~landmark.retrieval.scoring.calibrate_landmark` for one landmark of ``index``: its
    photos' vectors (every indexed one when the index can give them back, else those of
    ``embeddings``), searched against the index for their nearest other landmarks."""
    rows = np.flatnonzero(index.labels == str(landmark_id))
    mine = np.asarray(embeddings.vectors[embeddings.labels == str(landmark_id)], dtype=np.float32)
    try:   # none indexed under this landmark (its photos were already there, as duplicates): those given
        own = np.stack([index.index.reconstruct(int(r)) for r in rows]).astype(np.float32) if len(rows) else mine
    except RuntimeError:   # an IVF-PQ index keeps no exact vectors: the photos enrolled now
        own = mine
    sims, neighbours = index.search(own, CALIBRATION_K + len(own))
    labels = np.where(neighbours >= 0, index.labels[np.clip(neighbours, 0, None)], "")
    return calibrate_landmark(own, sims, neighbours, labels, landmark_id=str(landmark_id), default=floor, name_of=name_of)


def enrolment_file(index_dir: str | Path) -> Path:
    """A new file for the embeddings of one enrolment, inside the index folder:
    ``added-YYYYmmdd-HHMMSS.npy`` (local time), ``added-...-2.npy`` ... when that name is taken
    (two enrolments within one second)."""
    stamp, k = time.strftime("%Y%m%d-%H%M%S"), 1
    out = Path(index_dir) / f"added-{stamp}.npy"
    while any(p.exists() for p in (out, out.with_name(f".{out.name}"), _reservation(out))):   # taken or staged
        k += 1
        out = Path(index_dir) / f"added-{stamp}-{k}.npy"
    return out


def _reservation(final: Path) -> Path:
    """The hidden file that reserves the enrolment file name ``final`` for one enrolment (:class:`StagedEnrolment`)."""
    return final.with_name(f".{final.name}.reserved")


class StagedEnrolment:
    """The vectors of one ``landmark index add``, embedded under hidden names in the index folder
    (``.added-STAMP.npy`` and its side files: :func:`landmark.io.embedding_files`) and given their
    names (``added-STAMP.npy``, :func:`enrolment_file`) only once the index has taken photos from
    them; a refused enrolment (names alike, a bad floor, vectors of another model), one that adds
    nothing (every photo indexed already) and one that fails or is interrupted delete them, so the
    folder's file list and ``meta.json`` are as before.  A process killed outright leaves only
    hidden ``.added-*`` files, which no reader opens::

        with StagedEnrolment(index_dir) as staged:
            emb, _, _ = index_embeddings(..., out=staged.path)
            enrol(index_dir, emb, saved=staged.saved)

    (``saved``: the index took ``added`` photos from them, so they keep their name even when what
    follows the save, the coverage report and ``answers_changed``, fails or is interrupted.)
    """

    def __init__(self, index_dir: str | Path):
        """Reserve the enrolment's file name in ``index_dir`` (before any photo is embedded).

        Raises:
            PermissionError: ``index_dir`` cannot be written (a read-only folder or file system):
                one line saying what to do; nothing is written.
        """
        while True:   # the name reserved at once (O_EXCL): two enrolments in one second never share it
            self.final = enrolment_file(index_dir)
            try:
                _reservation(self.final).touch(exist_ok=False)
                break
            except FileExistsError:
                continue
            except OSError as err:   # EACCES, EPERM, EROFS: seconds of embedding would end in a traceback
                if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                raise PermissionError(f"cannot write to the index folder {index_dir} ({err.strerror}): "
                                      f"give an index folder you can write, or copy this one (cp -r {index_dir} "
                                      f"COPY) and add to the copy") from None
        self.path = self.final.with_name(f".{self.final.name}")
        self.added = 0

    def saved(self, index, added: int) -> None:
        """:func:`enrol`'s ``saved`` hook: the index was saved holding ``added`` photos of these vectors."""
        self.added = added

    def _staged(self) -> list[Path]:
        from ..io import embedding_files
        return embedding_files(self.path)

    def __enter__(self) -> "StagedEnrolment":
        return self

    def __exit__(self, kind, error, tb) -> None:
        from ..io import clear_temps, embedding_files, read_record, sidecar, write_text_atomic
        keep = self.added > 0   # the index holds photos of them (saved), even if an error followed
        renamed = {}
        for staged, final in zip(self._staged(), embedding_files(self.final)):
            if keep and staged.exists() and staged.suffix != ".json":
                staged.replace(final)
                renamed[staged.name] = final.name
            elif not keep:
                staged.unlink(missing_ok=True)
        marker = sidecar(self.path, "json")
        if keep and marker.exists():   # the record names the files by their final names, or nothing loads them
            record = read_record(marker) or {}
            for key in ("files", "bytes"):
                if isinstance(record.get(key), dict):
                    record[key] = {renamed.get(k, k): renamed.get(v, v) if isinstance(v, str) else v
                                   for k, v in record[key].items()}
            write_text_atomic(sidecar(self.final, "json"), json.dumps(record, indent=2))
            marker.unlink()
        clear_temps(self._staged())   # an embedding stopped half-way: its temporary rows
        (self.path.parent / f".{self.path.name}.lock").unlink(missing_ok=True)   # embed_images' lock file
        _reservation(self.final).unlink(missing_ok=True)


def index_model(index_dir: str | Path) -> dict:
    """The model info stored with an index (``{}`` when unknown)."""
    return LandmarkIndex.load(index_dir).meta.get("model", {})


def knn_vote_predict(checkpoint: str | Path, index_dir: str | Path, images: str | Path, *, work: str | Path,
                config: RetrievalConfig | None = None, nonlandmarks: str | Path | None = None,
                verify_cache: str | Path | None = None, batch_size: int = BATCH_SIZE, workers: int | None = WORKERS,
                device: str | None = None, overwrite: bool = False, runtime: str = DEFAULT_RUNTIME,
                threads: int | None = None) -> tuple[pd.DataFrame, list[Reject], Recognition]:
    """Embed queries (and the non-landmark set) with ``checkpoint`` and recognise them by kNN voting.

    The named alternative to the one scoring path (``landmark knn --scoring knn-vote``,
    :func:`landmark.inference.predict.knn_predict` with ``scoring="knn-vote"``), kept for the
    benchmarks that compare methods (docs/retrieval.md): its scores are votes, not the reference
    scores ``predict``/``recognize``/the service give.  The checkpoint is loaded once.

    Args:
        images: query folder or CSV; or an embeddings ``.npy`` already made with this checkpoint.
        work: path prefix for the query embeddings (``WORK.queries.npy``) and the
            non-landmark ones (``WORK.nonlandmarks.npy``).
        config: ``knn`` and ``verify`` settings (default :class:`RetrievalConfig`, or a preset:
            :func:`~landmark.retrieval.config.load_retrieval_config`).
        nonlandmarks: folder of non-landmark photos or their embeddings ``.npy`` (None: no penalty).
        verify_cache: folder for cached local features (with ``config.verify.top > 0``;
            default ``WORK.local_features``).
        runtime, threads: how the ``.pt`` checkpoint runs (``torch``, or ``onnx``/``auto``:
            its export, :func:`landmark.models.runtime.load_runtime`).

    Returns:
        (predictions ``id, landmark_id, score, name, verdict`` for every query, unreadable
        ones with an empty landmark; the rejects; the full :class:`Recognition`).
        ``verdict`` is the landmark's name, ``no landmark`` (no prediction, or a score below
        ``config.knn.reject_below``, else the recogniser's kNN threshold) or ``unreadable``.

    Raises:
        ValueError: the index was built with a different backbone.
        landmark.retrieval.provenance.ModelMismatch: the checkpoint, or the vectors of an
            ``images`` / ``nonlandmarks`` ``.npy``, are of another model than the index's
            (:mod:`~landmark.retrieval.provenance`; files without a record: a warning).
    """
    config = config or RetrievalConfig()
    index = LandmarkIndex.load(index_dir)
    refuse_unlabelled(index.labels, "the kNN vote", fix=RECOGNISE_UNLABELLED_FIX)
    engine = _index_runtime(index, checkpoint, runtime=runtime, device=device, threads=threads)
    announce(engine, runtime)
    size, max_side = _index_image_size(index, engine)
    built = index.meta.get("model")
    fix = f"re-embed them with `landmark embed {' '.join(map(str, checkpoints_of(built))) or 'CHECKPOINT'}`"
    members = checkpoints_of(built) if (built or {}).get("members") else []   # knn takes one CHECKPOINT: the first
    check_model(runtime_record(engine, checkpoint, size, max_side), built, f"the vectors of {checkpoint}",
                "this index", fix=f"give its first model, `landmark knn {members[0]}` (the others, "
                f"{' '.join(map(str, members[1:]))}, are loaded as the index records)" if members else
                "give the checkpoint the index was built with, or build an index with this one")
    embed = partial(_embed, engine, checkpoint, image_size=None if max_side else size, max_side=max_side,
                    batch_size=batch_size, workers=workers, device=device, overwrite=overwrite)
    if str(images).endswith(".npy"):
        queries, rejects = load_embeddings(images), []
        check_model(queries.model, built, f"the queries of {images}", "this index", fix=fix)
        listed = queries.items[["id"]]
    else:
        frame = read_queries(images)
        listed = frame[["id"]]
        top = 5 if config.knn.classifier_weight > 0 else 0
        queries, rejects, _ = embed(frame, embeddings_path(f"{work}.queries"), top_classes=top)
    reference = None
    if nonlandmarks is not None and str(nonlandmarks).endswith(".npy"):
        reference = load_embeddings(nonlandmarks)
        check_model(reference.model, built, f"the non-landmarks of {nonlandmarks}", "this index", fix=fix)
    elif nonlandmarks is not None:
        reference, _, _ = embed(read_queries(nonlandmarks), embeddings_path(f"{work}.nonlandmarks"))
    pair_inliers = None
    if config.verify.top > 0:
        pair_inliers = verification_inliers(verify_cache or Path(f"{work}.local_features"), config.verify)
    result = recognise(index, queries, config.knn, reference, verify=config.verify, pair_inliers=pair_inliers)
    predictions = listed.merge(result.predictions, on="id", how="left")
    predictions["landmark_id"] = predictions["landmark_id"].fillna("")
    names = {**(engine.names or {}), **index.meta.get("names", {})}
    return _with_names(predictions, names, config.knn, index, unreadable={r.id for r in rejects}), rejects, result


def _index_runtime(index: LandmarkIndex, checkpoint, *, runtime: str, device: str | None,
                   threads: int | None) -> Runtime:
    """The runtime that embeds queries as the index's photos were: at its recorded image size; an
    index of aspect-kept photos (``max_side``) needs PyTorch (an ONNX export takes squares only), so
    ``auto`` means ``torch`` there.  An index of several models' descriptors concatenated (its record's
    ``members``) given only its first checkpoint loads every member it records."""
    built = index.meta.get("model") or {}
    paths, members = as_checkpoints(checkpoint), checkpoints_of(built)
    if len(paths) == 1 and len(members) > 1 and paths[0].resolve() == members[0].resolve():
        paths = members
    refuse_missing_members(built, paths)
    return load_embedder(paths, runtime=runtime, device=device, threads=threads,
                         image_size=None if max_side_of(built) else built.get("image_size"),
                         max_side=max_side_of(built))


def index_embedder(index: LandmarkIndex, checkpoint, *, runtime: str = DEFAULT_RUNTIME, device: str | None = None,
                   threads: int | None = None, fix: str) -> tuple[Runtime, int, int | None]:
    """The runtime that embeds photos as ``index``'s were (``landmark retrieve``'s queries, the service's
    retrieval index: :class:`~landmark.retrieval.searcher.Searcher`), announced and checked against the
    index's model record; ``checkpoint``: one path or several, as :func:`_index_runtime` takes them.

    Returns:
        (the runtime, the image size the index records, its ``max_side`` or None).

    Raises:
        FileNotFoundError / ValueError: as :func:`load_embedder`, :func:`refuse_missing_members`,
            :func:`_index_image_size`.
        landmark.retrieval.provenance.ModelMismatch: the checkpoint(s) made other vectors (``fix`` says what to do).
    """
    paths = as_checkpoints(checkpoint)
    engine = _index_runtime(index, paths, runtime=runtime, device=device, threads=threads)
    announce(engine, runtime)
    size, max_side = _index_image_size(index, engine)
    check_model(runtime_record(engine, paths[0], size, max_side), index.meta.get("model") or None,
                f"the vectors of {' + '.join(map(str, paths))}", "this index", fix=fix)
    return engine, size, max_side


def refuse_missing_members(record: dict | None, paths: list[Path]) -> None:
    """Refuse, naming what to do, a checkpoint of ``paths`` that an ensemble index's ``record`` names
    (:func:`~landmark.retrieval.provenance.ensemble_record`) at the same place and that is gone: a
    member read from ``meta.json`` (``retrieve`` / ``index add`` without ``--checkpoint``, ``knn`` given
    the first) is a file the user may never have named.

    Raises:
        FileNotFoundError: one line naming the file, its place among the members and what to give.
    """
    members = checkpoints_of(record) if isinstance(record, dict) and record.get("members") else []
    for i, (path, member) in enumerate(zip(paths, members)):
        if path == member and not path.exists():
            raise FileNotFoundError(
                f"checkpoint {path} does not exist: it is model {i + 1} of the {len(members)} whose descriptors "
                f"this index concatenates (its meta.json records where each was); put it back there (landmark knn "
                f"reads every model but the first from there), or give landmark retrieve / index add each model "
                f"where it is now, in order (--checkpoint once for each)")


def _index_image_size(index: LandmarkIndex, engine: Runtime) -> tuple[int, int | None]:
    """The image size the index was embedded at and its ``max_side`` (None: squares), so that
    queries are embedded alike.

    Raises:
        ValueError: the index was built with another backbone than ``engine``'s.
    """
    built = index.meta.get("model", {})
    backbone = getattr(engine.spec, "backbone", None)   # an ensemble's record: provenance.check_model
    if built.get("backbone") and backbone and built["backbone"] != backbone and not built.get("members"):
        raise ValueError(f"the index was built with {built['backbone']}, the checkpoint is {backbone}")
    return built.get("image_size") or engine.preprocess["size"], max_side_of(built)


def _with_names(predictions: pd.DataFrame, names: dict, config: KnnConfig, index: LandmarkIndex,
                unreadable: set) -> pd.DataFrame:
    """Add ``name`` and ``verdict`` columns (see :func:`knn_vote_predict`)."""
    threshold = config.reject_below if config.reject_below is not None else \
        index.meta.get("reject_threshold", REJECT_THRESHOLD["knn"])
    lids = predictions["landmark_id"].astype(str)
    named = [names.get(lid) or lid for lid in lids]
    verdict = ["unreadable" if i in unreadable else verdict_words(n, decide(lid, s, threshold)[0])
               for i, lid, s, n in zip(predictions["id"], lids, predictions["score"], named)]
    return predictions.assign(name=named, verdict=verdict)


def augmented_database(index: LandmarkIndex, config: RetrieveConfig):
    """The index's vectors after DBA and the diffusion graph that ``config`` asks for, computed once per
    index size and settings and kept on the index object (a Recognizer's index is augmented once).

    Returns:
        (float32 ``[N, d]`` searched vectors, augmented; :class:`~landmark.retrieval.ranking.Diffusion` or
        None), or None when neither is on, or the index holds more than ``config.max_augmented`` photos
        (then a warning is printed on stderr once per index and size).
    """
    import sys

    from .ranking import DIFFUSION_MAX_DENSE, Diffusion, database_augmentation
    n = len(index)
    dba = config.dba if n <= config.max_augmented else 0
    diffusion = config.diffusion if n <= min(config.max_augmented, DIFFUSION_MAX_DENSE) else 0   # else local
    if (dba <= 1 and diffusion <= 0) or n == 0:
        value = None
    else:
        key = (n, dba, config.qe_alpha, diffusion, config.diffusion_alpha)
        cached = getattr(index, "_augmented", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        db = index.stored(np.arange(n))
        if dba > 1:
            db = database_augmentation(db, dba, config.qe_alpha)
        graph = Diffusion(db, k=diffusion, alpha=config.diffusion_alpha) if diffusion > 0 else None
        value = (db, graph)
        index._augmented = (key, value)
    if config.dba > 1 and dba <= 1 and getattr(index, "_warned", None) != n:
        index._warned = n
        print(f"warning: DBA skipped: the index holds {n} photos, more than retrieve.max_augmented="
              f"{config.max_augmented}", file=sys.stderr)
    return value


def _local_diffusion(index: LandmarkIndex, q: np.ndarray, db: np.ndarray | None, config: RetrieveConfig, k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion of queries ``q`` ``[Q, d]`` (expanded, in the index's space) on the graph of each one's
    ``config.diffusion_candidates`` nearest photos (:func:`~landmark.retrieval.ranking.local_diffusion`),
    found in ``db`` (the DBA-augmented vectors) or else by the index; returns the best ``k``
    (scores ``[Q, k]`` descending, rows ``[Q, k]``).  With fewer candidates than ``k``, the photos
    after them follow in the search's order with score 0 (what the diffusion gives a photo its
    graph does not reach), so that ``k`` photos are ranked whatever ``diffusion_candidates``."""
    from .ranking import knn, local_diffusion
    m = min(config.diffusion_candidates, len(index))
    wanted = max(m, k)
    sims, rows = knn(q, db, wanted) if db is not None else faiss_search(index.searched, q, wanted)
    rows = np.where(np.isfinite(sims), rows, -1)
    out_scores, out_rows = np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
    for i in range(len(q)):
        found = rows[i][rows[i] >= 0]
        found, after = found[:m], found[m:]
        if not len(found):
            continue
        cand = db[found] if db is not None else index.stored(found)
        f = local_diffusion(q[i:i + 1], cand[None], k=config.diffusion, alpha=config.diffusion_alpha,
                            query_k=config.diffusion_seeds)[0]
        best = np.argsort(-f, kind="stable")[:k]
        out_scores[i, :len(best)], out_rows[i, :len(best)] = f[best], found[best]
        rest = after[:k - len(best)]
        out_scores[i, len(best):len(best) + len(rest)], out_rows[i, len(best):len(best) + len(rest)] = 0.0, rest
    return out_scores, out_rows


def similarities(index: LandmarkIndex, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine similarity float32 ``[Q, k]`` of each query ``[Q, D]`` (L2-normalised, the index's
    model) and its ranked photos ``rows`` int ``[Q, k]`` (-1: none, similarity -inf), as the index
    compares them (whitened when it stores a whitening): what a person reads as "how alike",
    unlike :func:`rank_index`'s scores (diffusion's are divided by the query's best, so every
    query's first photo would read 1.0)."""
    stored = index.stored(np.clip(rows, 0, None).ravel()).reshape(*rows.shape, -1)
    cos = np.einsum("qkd,qd->qk", stored, index.transform(np.asarray(queries, dtype=np.float32)))
    return np.where(rows >= 0, cos, -np.inf).astype(np.float32)


def photos_per_landmark(index: LandmarkIndex) -> float:
    """The median number of photos an index's landmarks have (0 for an empty index), kept on the
    index object for its current size.  Photos without a landmark (:data:`~landmark.retrieval.index.UNLABELLED`:
    an archive's) are not counted: they are no one landmark of N photos, and how many photos each of their
    buildings has is unknown; so an index of unlabelled photos alone gives 0 (:func:`rank_index` then ranks
    without diffusion, which costs up to 0.15 mAP@100 below 12 photos a landmark: docs/retrieval.md)."""
    cached = getattr(index, "_per_landmark", None)
    if cached is not None and cached[0] == len(index):
        return cached[1]
    labels = np.asarray(index.labels).astype(str)
    labels = labels[labels != UNLABELLED]
    counts = np.unique(labels, return_counts=True)[1] if len(labels) else [0]
    index._per_landmark = (len(index), float(np.median(counts)))
    return index._per_landmark[1]


def rank_index(index: LandmarkIndex, queries: np.ndarray, config: RetrieveConfig | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The ``config.top_k`` index photos most similar to each query: alpha-QE when ``config.qe``, against the
    DBA-augmented index vectors when ``config.dba`` (exact search), ranked by diffusion when
    ``config.diffusion`` (:func:`augmented_database`).

    Args:
        queries: float ``[Q, D]`` L2-normalised descriptors of the index's model (whitened by the
            index when it stores a whitening).

    Returns:
        (similarities float32 ``[Q, k]`` descending, item rows int64 ``[Q, k]``; -1 with -inf
        where the index holds fewer than ``k`` photos).  With alpha-QE the similarities are those
        of the expanded query; with diffusion its scores divided by the query's best.  Diffusion
        is left out when the index's landmarks have fewer than ``config.diffusion_min_photos``
        photos (median, :func:`photos_per_landmark`).
    """
    from .ranking import DIFFUSION_MAX_DENSE, alpha_query_expansion, knn
    config = config or RetrieveConfig()
    if config.diffusion > 0 and photos_per_landmark(index) < config.diffusion_min_photos:
        config = config.model_copy(update={"diffusion": 0})   # too few photos a landmark for its graph
    k = min(config.top_k, len(index))
    augmented = augmented_database(index, config)
    # no dense graph (above DIFFUSION_MAX_DENSE, or retrieve.max_augmented): the graph of each query's candidates
    local = config.diffusion > 0 and len(index) > min(config.max_augmented, DIFFUSION_MAX_DENSE)
    if augmented is None:
        if (config.qe <= 0 and not local) or len(index) == 0:
            return index.search(queries, config.top_k)
        expanded = index.transform(queries)
        if config.qe > 0:
            sims, rows = index.search(queries, max(config.qe, 1))
            stored = index.stored(np.clip(rows, 0, None).ravel()).reshape(len(rows), rows.shape[1], -1)
            weights = np.where(rows >= 0, np.clip(sims, 0.0, None) ** config.qe_alpha, 0.0).astype(np.float32)
            expanded = normalise(expanded + np.einsum("qn,qnd->qd", weights, stored))
        if local:
            sims, rows = _local_diffusion(index, expanded, None, config=config, k=k)
        else:
            sims, rows = faiss_search(index.searched, expanded, k)
    else:
        db, graph = augmented
        q = index.transform(queries)
        if config.qe > 0:
            q = alpha_query_expansion(q, db, config.qe, config.qe_alpha)
        if graph is not None:
            sims, rows = graph.rank(q, k, query_k=config.diffusion_seeds)
        elif local:
            sims, rows = _local_diffusion(index, q, db, config=config, k=k)
        else:
            sims, rows = knn(q, db, k)
    if config.diffusion > 0 and len(index):
        sims = sims / np.maximum(sims[:, :1], 1e-12)   # 1 for each query's best: one scale for re-ranking
    if k < config.top_k:   # as LandmarkIndex.search: -1 / -inf beyond the index's size
        pad = config.top_k - k
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
    return sims, rows


def faiss_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` of float32 ``queries`` ``[Q, d]``: (similarities ``[Q, k]``, rows ``[Q, k]``)."""
    sims, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    sims[rows < 0] = -np.inf
    return sims, rows


def retrieve(index_dir: str | Path, images: str | Path, *, work: str | Path, checkpoint=None,
             config: RetrieveConfig | None = None, local: LocalConfig | None = None, batch_size: int = BATCH_SIZE, workers: int | None = WORKERS,
             device: str | None = None, overwrite: bool = False, runtime: str = DEFAULT_RUNTIME,
             threads: int | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """For each query photo, the index photos most similar to it (Kaggle Landmark Retrieval;
    docs/retrieval.md): queries embedded with the index's model, searched with
    :func:`rank_index` (the index's own whitening, alpha-QE as ``config`` says).

    Args:
        images: query folder, CSV or one photo; or an embeddings ``.npy`` of the index's model.
        work: path prefix of the query embeddings (``WORK.queries.npy``).
        checkpoint: the model (default: the one recorded in the index's ``meta.json``); a list for an
            index of several models' descriptors (default: every member its record names).
        config: ``top_k``, ``qe``, ``dba``, ``diffusion`` ... (default :class:`RetrieveConfig`).
        local: local-feature re-ranking of the first ``local.top`` photos of each query
            (:func:`rerank_frame`; default :class:`LocalConfig`, whose ``top`` 0 is off); features cached in
            ``WORK.local_features/``.

    Returns:
        (one row per query and neighbour, best first: ``query, query_path, rank`` (1-based),
        ``id, landmark_id, path, score`` (:func:`rank_index`'s, plus the inlier bonus when re-ranked),
        ``similarity`` (:func:`similarities`: the cosine a person reads), ``inliers`` (-1: not verified); a query that could not be read has none
        and is in the rejects; the rejects).

    Raises:
        FileNotFoundError: no index, images or checkpoint.
        ValueError: an index without a recorded model and no ``checkpoint``.
        landmark.retrieval.provenance.ModelMismatch: the checkpoint or the ``.npy`` is of another model.
    """
    config = config or RetrieveConfig()
    index = LandmarkIndex.load(index_dir)
    built = index.meta.get("model") or {}
    checkpoint = as_checkpoints(checkpoint) or checkpoints_of(built)
    if str(images).endswith(".npy"):
        queries, rejects = load_embeddings(images), []
        check_model(queries.model, built or None, f"the queries of {images}", "this index",
                    fix=f"embed them with `landmark embed {' '.join(map(str, checkpoint)) or 'CHECKPOINT'}`")
    else:
        if not checkpoint:
            raise ValueError(f"{index_dir} records no model; give --checkpoint (the model the index was built with)")
        engine, size, max_side = index_embedder(index, checkpoint, runtime=runtime, device=device, threads=threads,
                                                fix="give the checkpoint the index was built with")
        queries, rejects, _ = _embed(engine, checkpoint[0], read_queries(images), embeddings_path(f"{work}.queries"),
                                     image_size=None if max_side else size, max_side=max_side, batch_size=batch_size,
                                     workers=workers, device=device, overwrite=overwrite)
    vectors = np.asarray(queries.vectors, dtype=np.float32)
    sims, rows = rank_index(index, vectors, config)
    cosines = similarities(index, vectors, rows)
    items = index.items
    found = rows >= 0
    q, r = np.nonzero(found)
    paths = queries.items["path"].astype(str).to_numpy() if "path" in queries.items else np.full(len(queries), "")
    frame = pd.DataFrame({"query": queries.ids[q], "query_path": paths[q], "rank": r + 1,
                          "id": items["id"].to_numpy()[rows[found]],
                          "landmark_id": items["landmark_id"].to_numpy()[rows[found]],
                          "path": items["path"].to_numpy()[rows[found]], "score": sims[found].astype(float),
                          "similarity": cosines[found].astype(float), "inliers": -1})
    local = local or LocalConfig()
    if local.top > 0 and len(frame):
        frame = rerank_frame(frame, local, cache_dir=Path(f"{work}.local_features"))
    return frame, rejects


def rerank_frame(frame: pd.DataFrame, local: LocalConfig, cache_dir: str | Path | None = None,
                 queries: dict | None = None) -> pd.DataFrame:
    """:func:`retrieve`'s frame with each query's first ``local.top`` photos re-ordered by local-feature inliers
    (:func:`landmark.retrieval.local.rerank`: ``score + weight * min(inliers, inlier_cap) / inlier_cap`` for
    ``inliers >= min_inliers``), ``rank``, ``score`` and ``inliers`` updated.

    Args:
        frame: rows ``query, query_path, rank, id, landmark_id, path, score`` (best first per query).
        local: :class:`LocalConfig` (features, matcher, top, weight, inlier_cap, min_inliers).
        cache_dir: :class:`~landmark.retrieval.local.LocalFeatureCache` folder (None: extract every time).
        queries: {query id: PIL image} for queries given in memory (their ``query_path`` is not read).

    Raises:
        landmark.retrieval.local.MissingPackageError: learned features without the ``local`` extra.
    """
    from .local import LocalFeatureCache, LocalMatcher, rerank
    matcher = LocalMatcher(local)
    cache = LocalFeatureCache(cache_dir, matcher) if cache_dir is not None else None
    parts = []
    for query, rows in frame.groupby("query", sort=False):
        rows = rows.sort_values("rank")
        source = (queries or {}).get(query, rows["query_path"].iat[0])
        ranked = rerank(source, list(rows["path"]), list(rows["score"]), matcher=matcher, cache=cache, top=local.top,
                        weight=local.weight, inlier_cap=local.inlier_cap, min_inliers=local.min_inliers)
        order = {p: i for i, p in enumerate(rows["path"])}
        picked = rows.iloc[[order[c.item] for c in ranked]].copy()
        picked["score"] = [c.score for c in ranked]
        picked["inliers"] = [c.inliers for c in ranked]
        picked["rank"] = np.arange(1, len(picked) + 1)
        parts.append(picked)
    return pd.concat(parts, ignore_index=True)


def retrieval_rankings(frame: pd.DataFrame, queries: list[str] | None = None) -> dict[str, list[str]]:
    """{query id: ranked index ids} of :func:`retrieve`'s frame (``queries``: also those with none)."""
    out: dict[str, list[str]] = {q: [] for q in (queries or [])}
    for q, image_id in zip(frame["query"], frame["id"]):
        out.setdefault(q, []).append(image_id)
    return out


def retrieval_answers(frame: pd.DataFrame) -> list[dict]:
    """:func:`retrieve`'s frame as one dict per query, for JSON: ``{id, path, images: [{id,
    landmark_id, path, score, similarity[, inliers]}, ...]}``, most similar first (``score``: the
    ranking's, ``similarity``: :func:`similarities`; ``inliers``: verified by re-ranking)."""
    out: dict[str, dict] = {}
    for row in frame.itertuples(index=False):
        entry = out.setdefault(row.query, {"id": row.query, "path": row.query_path, "images": []})
        entry["images"].append({"id": row.id, "landmark_id": row.landmark_id, "path": row.path,
                                "score": round(float(row.score), 6),
                                **({"similarity": round(float(row.similarity), 6)} if hasattr(row, "similarity") else {}),
                                **({"inliers": int(row.inliers)} if getattr(row, "inliers", -1) >= 0 else {})})
    return list(out.values())
