"""Answers in under a second: the recogniser on an ONNX export, without torch.

``landmark recognize photo.jpg --model RUN`` spent 6 to 11 seconds and about 1 GB on one
photo, nearly all of it starting up (``import torch`` alone 1.3 to 1.9 s here).  When the
run has an export (``landmark export``), :func:`open_recognizer` answers with
:class:`InstantRecognizer` instead, which needs numpy, Pillow, ONNX Runtime and FAISS only:

* the model, its classes, names, preprocessing and "no landmark" thresholds come from the
  export's JSON metadata (:class:`~landmark.models.onnx_model.OnnxModel`); the ``.pt``
  checkpoint is hashed (to know the export is of this very checkpoint) but never loaded;
* the photo goes through the preprocessing contract (:class:`~landmark.data.preprocess.Preprocess`)
  in numpy (:func:`landmark.data.arrays.eval_input`): the same pixels as the torchvision
  transform of :meth:`Preprocess.transform <landmark.data.preprocess.Preprocess.transform>`,
  inputs equal within 1e-6 (tests/test_instant.py);
* the run's reference index is read without pandas
  (:class:`~landmark.retrieval.index_reader.ReadOnlyIndex`) and answers are scored with the
  same functions as :class:`~landmark.inference.recognizer.Recognizer`: the softmax
  probability alone (``classifier``) or ``prob * s_ref^3``
  (:func:`~landmark.retrieval.scoring.rank`, ``reference``), verdict (:func:`~landmark.retrieval.scoring.decide`)
  ``score >= threshold`` with the same stored thresholds.

Anything else (``--device`` other than the CPU, ``--runtime torch``, ``--tta`` > 1,
``--nonlandmarks``, ``--explain``, an index scored by kNN such as one with enrolled
landmarks, or no usable export) is answered by the PyTorch-based
:class:`~landmark.inference.recognizer.Recognizer`, which :func:`open_recognizer` loads then.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.arrays import eval_input
from ..data.names import display_name, warn_no_landmark_class
from ..data.preprocess import Preprocess
from ..models.onnx_model import OnnxModel, check_threads, open_export
from ..models.runtime_info import DEFAULT_RUNTIME, LOGGER as RUNTIME_LOGGER, RUNTIMES, runtime_line
from ..retrieval.config import REJECT_THRESHOLD, check_threshold
from ..retrieval.confirm import available as confirm_available, enrolled_landmarks
from ..retrieval.provenance import one_pass_refusal
from ..retrieval.scoring import REFERENCE_K, checked_landmark_thresholds, counts_of, decide, rank
from .answers import (DRAFT_FACTOR, Answer, Candidate, ImageError, ImageInput, Neighbour, check_index_model, decode,
                      read_names, resolve_checkpoint, run_index, scoring_line, scoring_mode, stored_threshold)

log = logging.getLogger(RUNTIME_LOGGER)


def to_input(photos: list[Image.Image], preprocess: Preprocess) -> np.ndarray:
    """RGB photos -> the network's input, float32 ``[N, 3, size, size]``
    (:func:`landmark.data.arrays.eval_input`: the pixels of the PyTorch path's resize, exactly)."""
    return eval_input(photos, preprocess)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float32 ``[N, C]`` logits (float32 probabilities)."""
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised rows (``torch.nn.functional.normalize``: norm at least 1e-12), rounded to
    float16 as indexes store them, as float32 ``[N, D]``."""
    vectors = vectors.astype(np.float32)
    norm = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
    return (vectors / norm).astype(np.float16).astype(np.float32)


class InstantRecognizer:
    """The answers of :class:`~landmark.inference.recognizer.Recognizer` (classifier or
    reference scoring, one view), from an ONNX export and an optional reference index, without torch.

    Args:
        model: the opened export.
        index: the run's reference index (:class:`~landmark.retrieval.index_reader.ReadOnlyIndex`)
            or None (the classifier alone).
        threshold: "no landmark" below it (None: the one stored in the export for the scoring mode).
        names: landmark id -> name, added to (and overriding) the export's and the index's
            (:meth:`Recognizer.load <landmark.inference.recognizer.Recognizer.load>`'s ``names``, read).

    It never confirms enrolled landmarks by local features (ALIKED needs PyTorch): for an index
    with enrolled landmarks :func:`open_recognizer` loads the Recognizer instead where the
    ``local`` extra is installed, so both answer alike (without the extra neither confirms).

    Raises:
        ValueError: a threshold outside [0, 1]; an index scored by kNN (give it to the
            Recognizer), of another backbone, image size or dimension.
    """

    def __init__(self, model: OnnxModel, index=None, threshold: float | None = None,
                 names: dict[str, str] | None = None):
        check_threshold(threshold)
        self.runtime, self.index = model, index
        self.classes = [str(c) for c in model.classes]
        warn_no_landmark_class(self.classes)   # a run that trained no_landmark/ as a class (before 2026-12-08)
        self.preprocess = Preprocess.of(model.preprocess)
        self.scoring = scoring_mode(index, self.classes)
        if self.scoring not in ("classifier", "reference"):
            raise ValueError(f"{self.scoring} scoring needs the PyTorch-based Recognizer")
        stored = (stored_threshold({"reject_threshold": model.meta.get("reject_threshold")}, index, self.scoring)
                  if threshold is None else None)
        self.threshold = float(threshold if threshold is not None else
                               stored if stored is not None else REJECT_THRESHOLD[self.scoring])
        # enrolled landmarks' own thresholds (an explicit threshold overrides them all), as the Recognizer's
        self.landmark_thresholds = (checked_landmark_thresholds(index.meta)
                                    if index is not None and threshold is None and self.scoring == "reference" else {})
        if index is not None:   # an archive's photos without a landmark: retrieve only, never a landmark named ""
            from ..retrieval.index_reader import refuse_unlabelled   # faiss: loaded with the index already
            refuse_unlabelled(index.labels, "recognition")
        self._counts = counts_of(index.labels) if index is not None else {}
        names, names_given = model.names or {}, names
        self.names = {**names, **(index.meta.get("names", {}) if index is not None else {}), **(names_given or {})}
        if index is not None:
            built = index.meta.get("model") or {}
            refusal = one_pass_refusal(built, self.preprocess.size)   # one square pass: logits and embedding
            if refusal:
                raise ValueError(refusal)
            backbone = model.spec.backbone if model.spec is not None else None
            if built.get("backbone") and built["backbone"] != backbone:
                raise ValueError(f"the index was built with {built['backbone']}, the model is {backbone}")
            width = [o.shape[-1] for o in model.session.get_outputs() if o.name == "embedding" and o.shape]
            if width and isinstance(width[0], int) and width[0] != index.dim:
                raise ValueError(f"the index holds {index.dim}-dimensional vectors, the model's differ; "
                                 "build the index with this checkpoint")

    def scoring_line(self) -> str:
        """How answers are scored, in words (:func:`landmark.inference.answers.scoring_line`)."""
        return scoring_line(self.scoring, None if self.index is None else len(self.index), self._counts, self.classes)

    def draft(self, tta: int = 1) -> int:
        """Pixels a JPEG path or bytes is decoded to at least (Pillow draft), as ``landmark predict``
        decodes it (:meth:`Recognizer.draft <landmark.inference.recognizer.Recognizer.draft>`)."""
        return DRAFT_FACTOR * self.preprocess.side(tta)

    def name(self, landmark_id: str) -> str:
        """Readable name of a landmark (its id when none is known), safe to print."""
        return display_name(landmark_id, self.names.get(str(landmark_id)))

    def recognize(self, images: ImageInput | list[ImageInput], top_k: int = 5, tta: int = 1,
                  sources: list[str] | None = None, batch_size: int = 16) -> list[Answer]:
        """Answer each image as :meth:`Recognizer.recognize <landmark.inference.recognizer.Recognizer.recognize>`.

        Raises:
            ImageError: an image cannot be decoded (its position and the reason are named).
            ValueError: ``tta`` other than 1 (voting needs the Recognizer), ``top_k < 1``.
        """
        items = images if isinstance(images, list) else [images]
        if tta != 1 or top_k < 1:
            raise ValueError(f"tta={tta}, top_k={top_k}: this recogniser answers one view (tta 1) with top_k >= 1")
        sources = sources or [str(x) if isinstance(x, (str, Path)) else f"image {k}" for k, x in enumerate(items)]
        photos = []
        for k, item in enumerate(items):
            try:
                photos.append(decode(item, draft=self.draft(1)))
            except ImageError as err:
                raise ImageError(f"{sources[k]}: {err}") from None
        answers: list[Answer] = []
        for start in range(0, len(photos), batch_size):
            answers += self._answers(photos[start:start + batch_size], sources[start:start + batch_size], top_k)
        return answers

    def _answers(self, photos: list[Image.Image], sources: list[str], top_k: int) -> list[Answer]:
        logits, emb = self.runtime.run(to_input(photos, self.preprocess))
        probs, vectors = softmax(logits), normalise(emb)                        # [N, C], [N, D]
        t = min(top_k, probs.shape[1])
        # one view: Recognizer's vote (inference.predict.vote_scores) ranks by probability, scores it
        order = np.argsort(-probs, axis=1, kind="stable")[:, :t]                # [N, t]
        labels = np.asarray(self.classes, dtype=object)[order].astype(str)
        scores = np.take_along_axis(probs, order, axis=1).astype(np.float64)
        if self.scoring == "reference":    # the one scoring path (retrieval.scoring.rank), as the Recognizer's
            sims, rows = self.index.search(vectors, REFERENCE_K)
            neighbours = np.where(rows >= 0, self.index.labels[np.clip(rows, 0, None)], "")
            ranked = rank(labels, scores, sims, neighbours, known=frozenset(self.classes), counts=self._counts)
        else:
            ranked = rank(labels, scores)
        near = self._neighbours(vectors, top_k) if self.index is not None else [[] for _ in photos]
        out = []
        for i, source in enumerate(sources):
            cands = ranked[i][:top_k]
            lid, score = cands[0] if cands else ("", 0.0)  # no candidate at all: no landmark
            is_landmark, threshold = decide(lid, score, self.threshold, self.landmark_thresholds)
            out.append(Answer(source=source, landmark_id=lid, name=self.name(lid) if lid else "", score=score,
                              is_landmark=is_landmark, threshold=threshold, scoring=self.scoring,
                              neighbours=near[i],
                              top_k=[Candidate(landmark_id=c, name=self.name(c), score=s) for c, s in cands]))
        return out

    def _neighbours(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        sims, rows = self.index.search(vectors, k)
        ix = self.index
        return [[Neighbour(id=ix.ids[j], landmark_id=ix.landmark_ids[j], name=self.name(ix.landmark_ids[j]),
                           similarity=float(s), path=ix.paths[j]) for s, j in zip(sims[i], rows[i]) if j >= 0]
                for i in range(len(vectors))]


def instant_model(source: str | Path, runtime: str = DEFAULT_RUNTIME, device: str | None = None,
                  threads: int | None = None) -> tuple[OnnxModel | None, Path | None, str]:
    """The export :class:`InstantRecognizer` would answer with for ``source`` (a run folder, a
    ``.pt`` or a ``.onnx``), found as :func:`~landmark.models.runtime.load_runtime` finds it
    (``auto``: an fp32 export of this very checkpoint; ``onnx``: any export of it).

    Returns:
        (the opened model or None, the model path to name in messages (the ``.pt`` or the
        ``.onnx``), why none when None).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: unknown runtime, too many threads, a ``.onnx`` that is not a landmark export.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    check_threads(threads)
    if runtime == "torch":
        return None, None, "--runtime torch"
    if device not in (None, "cpu"):
        return None, None, f"--device {device}"
    path = resolve_checkpoint(source)
    if path.suffix.lower() == ".onnx":
        return OnnxModel(path, threads), path, ""
    model, why = open_export(path, fp32_only=runtime == "auto", threads=threads)
    return model, path, why


def open_recognizer(source: str | Path, index: str | Path | None = None, nonlandmarks: str | Path | None = None,
                    threshold: float | None = None, device: str | None = None, runtime: str = DEFAULT_RUNTIME,
                    threads: int | None = None, tta: int = 1, explain: bool = False,
                    names: str | Path | dict | None = None):
    """The recogniser ``landmark recognize`` answers with: :class:`InstantRecognizer` when
    ``source`` has a usable ONNX export and nothing asked needs PyTorch (module docstring),
    else :meth:`Recognizer.load <landmark.inference.recognizer.Recognizer.load>` with the same
    arguments.  The ``landmark.runtime`` logger says which (INFO: ``runtime: onnx (...)``).

    Args:
        source: a run folder, a ``.pt`` checkpoint or a ``.onnx`` export.
        index: an index folder (None: the run's own ``RUN/index``).
        tta, explain: what the caller will ask (voting and saliency need the Recognizer).
        names: extra landmark names (:func:`~landmark.inference.answers.read_names`: a dict, a CSV
            ``landmark_id,name``, a GLDv2 folder), overriding the stored ones on either path.
        Others: as :meth:`Recognizer.load <landmark.inference.recognizer.Recognizer.load>`.

    Returns:
        an object with ``recognize(images, top_k=, tta=, sources=)`` returning
        :class:`~landmark.inference.answers.Answer` lists, ``scoring``, ``threshold``, ``runtime``.

    Raises:
        FileNotFoundError, ValueError: as :meth:`Recognizer.load`.
    """
    check_threshold(threshold)
    needs = ("--tta > 1" if tta != 1 else "--explain" if explain else
             "--nonlandmarks" if nonlandmarks is not None else "")
    model, path, why = (None, None, needs) if needs else instant_model(source, runtime, device, threads)
    if model is not None:
        from ..retrieval.index_reader import ReadOnlyIndex, refuse_unlabelled
        folder = run_index(source) if index is None else Path(index)
        ref = ReadOnlyIndex.load(folder) if folder is not None else None
        if ref is not None:   # refused before choosing a recogniser (the PyTorch one refuses it too)
            refuse_unlabelled(ref.labels, "recognition")
            refusal = one_pass_refusal(ref.meta.get("model"))   # several models, aspect-kept photos
            if refusal:
                raise ValueError(refusal)
        classes = [str(c) for c in model.classes]
        confirming = (ref is not None and threshold is None and scoring_mode(ref, classes) == "reference"
                      and bool(enrolled_landmarks(ref.labels, classes)) and confirm_available())
        if confirming:
            why = "enrolled landmarks confirmed by local features (PyTorch)"
        elif ref is None or scoring_mode(ref, classes) != "knn":
            if ref is not None:
                check_index_model(ref, path, model)
            rec = InstantRecognizer(model, ref, threshold, names=read_names(names))
            note = "without PyTorch" if path.suffix.lower() == ".onnx" else f"auto: the export of {path.name}, without PyTorch"
            log.info("%s", runtime_line(model, note))
            log.info("scoring: %s", rec.scoring_line())
            return rec
        else:
            why = "an index scored by kNN"
    from .recognizer import Recognizer
    if why and runtime != "torch":
        log.info("PyTorch recogniser loaded, not the export alone: %s", why)   # said with the runtime line
    return Recognizer.load(source, index=index, nonlandmarks=nonlandmarks, threshold=threshold, device=device,
                           runtime=runtime, threads=threads, names=names)
