"""Retrieval settings: one validated config with named presets, like the training configs.

A :class:`RetrievalConfig` has three sections, each the only place its defaults live:

* ``index`` (:class:`IndexParams`): which FAISS index ``landmark index build`` makes and
  how it is searched;
* ``knn`` (:class:`KnnConfig`): how neighbours vote (:func:`landmark.retrieval.knn.recognise`);
* ``verify`` (:class:`VerifyConfig`): geometric verification of the top neighbours
  (RootSIFT + MAGSAC++ inliers, :mod:`landmark.retrieval.verification`) and the re-ranking
  it drives.

Presets (``landmark/configs/retrieval/*.yaml``, selected by name; each sets a few fields,
the rest are the defaults):

* ``exact``: exact inner-product search (``flat``): every photo compared, for up to about
  100k indexed photos;
* ``ivfpq``: IVF-PQ, 64 bytes per vector, for millions of photos (recall@1 0.96 at 1M in
  71 MB, ``docs/retrieval.md``);
* ``verified``: kNN, then the 3 nearest photos of each query verified by RANSAC inliers
  and re-ranked (slow: ~0.16 s per query on one CPU core).

This module imports only pydantic and PyYAML, so the command line can take its defaults
from it without loading torch or FAISS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..config_files import PRESETS_DIR, _Strict, read_config, validate_config

RETRIEVAL_PRESETS_DIR = PRESETS_DIR / "retrieval"

#: Index kinds (:mod:`landmark.retrieval.index`); ``auto`` picks by the number of vectors.
KINDS = ("auto", "flat", "hnsw", "hnswsq", "ivf", "ivfsq", "ivfpq")
IndexKind = Literal["auto", "flat", "hnsw", "hnswsq", "ivf", "ivfsq", "ivfpq"]

#: RANSAC model of geometric verification (:func:`landmark.retrieval.verification.ransac_inliers`).
GeometricModel = Literal["fundamental", "homography"]

#: Score below which an answer is "no landmark", per scoring mode of the recogniser
#: (:class:`landmark.inference.recognizer.Recognizer`) and of ``landmark knn``, when neither the
#: caller nor the checkpoint / index gives one.  Softmax probabilities and kNN votes live on
#: different scales (a kNN vote of 10 neighbours at cosine 0.6 is 0.6^3 = 0.22).
REJECT_THRESHOLD = {"classifier": 0.40, "reference": 0.10, "knn": 0.15}

#: How ``landmark knn`` / :func:`landmark.inference.predict.knn_predict` score: ``reference`` (the
#: default: the one scoring path of :mod:`landmark.retrieval.scoring`, the same answers as
#: ``predict``, ``recognize``, the Recognizer and the service) or ``knn-vote`` (the similarity-weighted
#: kNN vote of :mod:`landmark.retrieval.knn`, kept as a named alternative for benchmarks).
KNN_SCORINGS = ("reference", "knn-vote")
KNN_SCORING = KNN_SCORINGS[0]

#: RANSAC inlier thresholds in pixels of the resized (<= ``VerifyConfig.max_side`` px) images,
#: per geometric model (:func:`landmark.retrieval.verification.ransac_inliers`).
RANSAC_THRESHOLD_PX: dict[str, float] = {"fundamental": 3.0, "homography": 6.0}

#: Every score the recogniser gives (softmax probability, reference score, kNN vote) lies in
#: [0, 1], so a "no landmark" threshold outside this range would answer every photo alike.
THRESHOLD_RANGE = (0.0, 1.0)


def is_stored_threshold(value) -> bool:
    """Whether ``value``, read from a checkpoint, an export's metadata or an index's ``meta.json``,
    is a threshold to use: a real number (not a bool) in :data:`THRESHOLD_RANGE`, or the float
    just above 1 that :func:`~landmark.evaluation.metrics.rejection_threshold` chooses when no
    answer is right.  NaN, infinities, 7, -1, "high" or [0.1] are not."""
    import math
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and THRESHOLD_RANGE[0] <= value <= math.nextafter(THRESHOLD_RANGE[1], 2.0))


def check_threshold(value: float | None) -> float | None:
    """``value`` unchanged when it is None or a number in :data:`THRESHOLD_RANGE`.

    Raises:
        ValueError: a non-finite number, or one outside [0, 1] (one line saying what to give).
    """
    low, high = THRESHOLD_RANGE
    if value is not None and not low <= value <= high:   # also refuses nan (every comparison is False)
        raise ValueError(f"threshold {value}: give a finite score between {low:g} and {high:g} "
                         f"(every score lies in that range)")
    return value

#: RANSAC inliers (fundamental model, default thresholds) from which two photos are taken
#: to show the same landmark: the one "same landmark" threshold of ``landmark match``, of
#: verification re-ranking (:attr:`VerifyConfig.min_inliers`) and of the recogniser's
#: explanations.  Measured on landmarks13 + nonlandmarks (benchmarks/verification_inliers.py,
#: docs/verification.md): unrelated pairs reach at most 11 (0 of 858 photo/non-landmark pairs
#: and 0 of 435 clean different-landmark pairs reach 12); 15 leaves a margin.  Stock previews
#: sharing an agency watermark defeat any threshold: of different-landmark pairs of two stock
#: previews, 26% reach 15 inliers and 7% reach 50 (the matches lie on the watermark).
SAME_LANDMARK_INLIERS = 15


#: Local features of ``landmark match --features`` and of re-ranking (:mod:`landmark.retrieval.local`):
#: ALIKED (Zhao et al., IEEE TIM 2023) or DISK (Tyszkiewicz et al., NeurIPS 2020) keypoints matched by
#: LightGlue (Lindenberger et al., ICCV 2023) need the optional ``local`` extra; ``rootsift`` needs nothing.
LocalFeatureKind = Literal["aliked", "disk", "rootsift"]
LOCAL_FEATURES = ("aliked", "disk", "rootsift")
LEARNED_FEATURES = ("aliked", "disk")

#: LightGlue + MAGSAC++ inliers (fundamental model, banner and static matches discounted) from which
#: two photos are taken to show the same landmark, per learned feature.  ALIKED, 512 keypoints at
#: 512 px, measured (benchmarks/local_inliers.py, docs/verification.md): unrelated pairs of
#: landmarks13 + landmarks_many training photos reach up to 25 inliers (LightGlue matches more than
#: ratio-tested SIFT, and MAGSAC++ fits a fundamental matrix to any 8+ of them), so 30; half of the
#: same-landmark pairs reach it.  DISK was not measured: it borrows ALIKED's value.
#: RootSIFT keeps :data:`SAME_LANDMARK_INLIERS`.
LIGHTGLUE_SAME_LANDMARK_INLIERS = {"aliked": 30, "disk": 30}

#: The same with ``matcher="mnn"`` (mutual ratio-test nearest neighbours of the learned descriptors):
#: measured on the same pairs, unrelated ones reach at most 9 inliers, so 10.
MNN_SAME_LANDMARK_INLIERS = {"aliked": 10, "disk": 10}


def same_landmark_inliers(features: str, matcher: str = "lightglue") -> int:
    """The same-landmark inlier threshold of ``features`` (``aliked``, ``disk`` or ``rootsift``)
    matched by ``matcher`` (``lightglue`` or ``mnn``; RootSIFT always uses :data:`SAME_LANDMARK_INLIERS`)."""
    table = MNN_SAME_LANDMARK_INLIERS if matcher == "mnn" else LIGHTGLUE_SAME_LANDMARK_INLIERS
    return table.get(features, SAME_LANDMARK_INLIERS)


#: Geometric confirmation of enrolled landmarks (:mod:`landmark.retrieval.confirm`): the enrolled
#: landmarks (most similar first, by their photos' best similarity to the query) whose photos are
#: matched against each query, and the photos of each matched at most.  Bounds the time per query:
#: at most ``3 x 5`` pairs at ~22 ms each with mnn (docs/verification.md) plus one extraction.
CONFIRM_LANDMARKS = 3
CONFIRM_PHOTOS = 5
#: Inliers (ALIKED + mnn + MAGSAC++) with one of an enrolled landmark's photos that confirm it:
#: the smallest count that no query of another landmark and no non-landmark photo reached
#: against 5 photos of a landmark, chosen on landmarks13's trained landmarks' training photos
#: (10 landmarks x 5 "enrolled" photos; 100 same-landmark, 100 other-landmark and 100
#: non-landmark queries from nonlandmarks' choosing half; never a held-out or test photo):
#: 10 inliers (``same_landmark_inliers`` for pairs) confirmed 4 % of other landmarks' photos,
#: 12 none, and 31 % of the same landmark's other photos (26 % with 3 photos, 12 % with 1).
CONFIRM_INLIERS = 12


def confirm_local_config() -> "LocalConfig":
    """The local features that confirm enrolled landmarks: ALIKED, mutual nearest neighbours
    (``matcher="mnn"``, 22 ms per pair; threshold :data:`CONFIRM_INLIERS`), 512 keypoints on
    photos shrunk to 512 px."""
    return LocalConfig(features="aliked", matcher="mnn", max_keypoints=512, max_side=512)


class IndexParams(_Strict):
    """Construction and search parameters of a FAISS index (:mod:`landmark.retrieval.index`).

    Attributes:
        kind: ``auto`` (:func:`landmark.retrieval.index.choose_kind`: flat below 100k vectors,
            then the least compressed of ivf, ivfsq, ivfpq whose vectors fit ``memory_gb``),
            ``flat``, ``hnsw``, ``hnswsq`` (HNSW over 8-bit scalar-quantised vectors), ``ivf``, ``ivfsq``
            (8-bit scalar-quantised vectors) or ``ivfpq``.
        memory_gb: GiB the indexed vectors may take for ``auto`` (float32 ``4 * D`` bytes each
            for flat/ivf, ``D`` for ivfsq, ``pq_m`` for ivfpq).
        nlist: IVF cells (0: ~4 sqrt(N), :func:`landmark.retrieval.index.default_nlist`).
        nprobe: IVF cells probed per query.
        pq_m: PQ sub-quantisers = bytes per vector; must divide the dimension.
        hnsw_m: HNSW links per node.
        ef_construction, ef_search: HNSW beam widths when building / searching.
        train_size: at most this many vectors train IVF k-means / PQ.
        whiten: PCA-whitening to this many dimensions, fitted on the indexed vectors at build time
            and stored in ``index.faiss``, so enrolled photos and queries are whitened alike
            (:mod:`landmark.retrieval.ranking`); 0 = none.
    """

    kind: IndexKind = "auto"
    memory_gb: float = Field(4.0, gt=0.0)
    nlist: int = Field(0, ge=0)
    nprobe: int = Field(16, ge=1)
    pq_m: int = Field(64, ge=1)
    hnsw_m: int = Field(32, ge=2)
    ef_construction: int = Field(80, ge=1)
    ef_search: int = Field(128, ge=1)
    train_size: int = Field(200_000, ge=1)
    whiten: int = Field(0, ge=0)


class KnnConfig(_Strict):
    """kNN voting of :func:`landmark.retrieval.knn.recognise` (formulas in that module).

    Attributes:
        k: neighbours that vote.
        p: similarity exponent (vote weight ``max(s, 0) ** p``).
        classifier_weight: ``w`` in ``(1 - w) * knn + w * softmax``; 0 = kNN only
            (otherwise the queries need the classifier's top classes).
        nonlandmark_k: ``k'`` non-landmark neighbours averaged in the penalty.
        nonlandmark_weight: ``lambda`` of the non-landmark penalty; 0 = none.
        reject_below: queries whose final score is below this get no prediction (None: keep all).
    """

    k: int = Field(10, ge=1)
    p: float = Field(3.0, gt=0.0)
    classifier_weight: float = Field(0.0, ge=0.0, le=1.0)
    nonlandmark_k: int = Field(5, ge=1)
    nonlandmark_weight: float = Field(1.0, ge=0.0)
    reject_below: float | None = None


class VerifyConfig(_Strict):
    """Geometric verification (:mod:`landmark.retrieval.verification`) and the re-ranking
    it drives (:func:`landmark.retrieval.knn.verify_rerank`).

    Attributes:
        top: neighbours verified per query (0 = no verification).
        weight: score bonus of a landmark whose best verified photo has ``inlier_cap`` inliers.
        inlier_cap: inliers at which the bonus saturates.
        min_inliers: a query none of whose verified photos reaches this is ranked after all
            others; default :data:`SAME_LANDMARK_INLIERS`.
        max_keypoints: SIFT keypoints per image, strongest first.
        max_side: pixels; longest side the images are shrunk to before SIFT.
        ratio: Lowe's ratio test threshold.
        model: RANSAC model, ``fundamental`` (any rigid 3D scene) or ``homography``.
        ransac_threshold: pixels in the shrunk images; None: :data:`RANSAC_THRESHOLD_PX` of the model.
    """

    top: int = Field(0, ge=0)
    weight: float = Field(1.0, ge=0.0)
    inlier_cap: int = Field(50, ge=1)
    min_inliers: int = Field(SAME_LANDMARK_INLIERS, ge=0)
    max_keypoints: int = Field(1000, ge=1)
    max_side: int = Field(640, ge=16)
    ratio: float = Field(0.8, gt=0.0, le=1.0)
    model: GeometricModel = "fundamental"
    ransac_threshold: float | None = Field(None, gt=0.0)


#: Graph size up to which :class:`~landmark.retrieval.ranking.Diffusion` precomputes the dense inverse
#: ``(I - alpha S)^-1`` (``N^2`` float32, ``N^3`` time: 40 MB and 2.3 s CPU at 3.2k photos, so ~100 MB and
#: ~9 s at 5k); a larger index is diffused per query on the graph of its nearest photos
#: (:func:`~landmark.retrieval.ranking.local_diffusion`), at most this many of them.
DIFFUSION_MAX_DENSE = 5_000


class RetrieveConfig(_Strict):
    """Photo retrieval of ``landmark retrieve`` (:func:`landmark.retrieval.pipeline.retrieve`):
    the index photos most similar to each query, most similar first.

    Attributes:
        top_k: index photos per query (the Kaggle retrieval metric, mAP@100, reads 100).
        qe: alpha-query expansion over this many nearest index photos, then a second search
            (:func:`landmark.retrieval.ranking.alpha_query_expansion`); 0 = off.  5: the best of 2, 5,
            10 on the validation side of ``benchmarks/retrieval_quality.py`` (mAP@100 0.206 -> 0.238;
            seen 0.342 -> 0.378, docs/retrieval.md).
        qe_alpha: similarity exponent of the expansion's weights (and of DBA's).
        dba: database-side augmentation over this many nearest index photos (itself included),
            recomputed from the loaded index's vectors at search time, so photos enrolled later are
            augmented like the others and nothing extra is stored
            (:func:`landmark.retrieval.ranking.database_augmentation`); 0 or 1 = off.  5: with ``qe`` 5
            the best on the validation side (mAP@100 0.206 -> 0.312; docs/retrieval.md).
        diffusion: kNN-graph diffusion over the (augmented) index with this many neighbours per photo,
            after alpha-QE (:class:`landmark.retrieval.ranking.Diffusion`, Iscen et al. CVPR 2017); 0 = off.
            30 with ``diffusion_alpha`` 0.95: the best of k 10/30/50 x alpha 0.8/0.95/0.99 on the validation
            side (mAP@100 0.312 -> 0.395 over QE + DBA; docs/retrieval.md).  Its dense inverse is computed
            once per loaded index (seconds at 3k photos); an index of more than
            :data:`DIFFUSION_MAX_DENSE` photos is diffused per query on the
            graph of its ``diffusion_candidates`` nearest photos instead
            (:func:`landmark.retrieval.ranking.local_diffusion`: a cost per query that does not grow with the index).
        diffusion_alpha, diffusion_seeds: its random-walk continuation and the query's seed neighbours.
        diffusion_min_photos: diffusion only over an index whose landmarks have at least this many
            photos (median): with fewer, a photo's 30 graph neighbours are mostly other landmarks'
            and diffusion spreads the query over them.  Chosen on the validation direction with its
            index cut to n photos per landmark (docs/retrieval.md): at 12, QE + DBA 0.330 against
            0.288 with diffusion; at 25, 0.373 against 0.420.
        diffusion_candidates: the nearest photos (at most ``DIFFUSION_MAX_DENSE``) whose graph a query
            is diffused on above
            :data:`DIFFUSION_MAX_DENSE` photos (``M^2 D`` per query); below
            ``top_k``, the photos after them follow by cosine with score 0.
        max_augmented: largest index that ``dba`` is computed on (it reads every indexed vector: a few
            seconds at 100k photos) and the dense diffusion graph is built on; a larger index is searched
            without DBA, with a warning, and diffused per query (``diffusion_candidates``).
    """

    top_k: int = Field(100, ge=1)
    qe: int = Field(5, ge=0)
    qe_alpha: float = Field(3.0, ge=0.0)
    dba: int = Field(5, ge=0)
    diffusion: int = Field(30, ge=0)
    diffusion_alpha: float = Field(0.95, gt=0.0, lt=1.0)
    diffusion_seeds: int = Field(10, ge=1)
    diffusion_candidates: int = Field(1000, ge=2)
    diffusion_min_photos: int = Field(20, ge=0)
    max_augmented: int = Field(100_000, ge=1)

    @field_validator("diffusion_candidates")
    @classmethod
    def _candidates_fit(cls, value: int) -> int:
        if value > DIFFUSION_MAX_DENSE:
            raise ValueError(f"diffusion_candidates {value}: give at most {DIFFUSION_MAX_DENSE} (each query's "
                             f"graph is a dense {value} x {value} solve; the dense limit of diffusion)")
        return value


class LocalConfig(_Strict):
    """Learned local features, LightGlue matching and the re-ranking they drive
    (:mod:`landmark.retrieval.local`, :func:`landmark.retrieval.local.rerank`).

    Attributes:
        features: ``aliked``, ``disk`` (both need the ``local`` extra) or ``rootsift``.
        max_keypoints: keypoints per image (bounds LightGlue's time: its attention is
            quadratic in them).
        max_side: pixels; longest side the image is shrunk to before extraction.
        matcher: ``lightglue`` (learned features' default) or ``mnn`` (mutual nearest
            neighbours with Lowe's ratio test 0.9 on the learned descriptors: no transformer,
            milliseconds per pair); RootSIFT always uses mutual ratio-test matching.
        filter_threshold: LightGlue's match confidence threshold.
        threads: torch CPU threads for extraction and matching (1: measured fastest on a
            loaded 2-core machine; OpenMP spin-waits when cores are oversubscribed).
        ransac_threshold: MAGSAC++ noise bound in pixels of the shrunk images (fundamental model).
        static_tolerance: a match whose position, as a fraction of each image's width and
            height, moves less than this between the two photos is "static"; static matches
            are discounted when either photo has a stock-photo banner (agency watermarks sit
            at the same place in every preview).
        banner_search: fraction of the height searched from the bottom for a banner strip;
            keypoints on a detected strip are dropped (0: no banner detection).
        top: candidates re-ranked per query (0: no re-ranking; the default: over ``landmark retrieve``'s
            diffusion ranking, ALIKED + mnn re-ranking of the top 5/10/20 added <= 0.003 mAP@100 on the
            validation direction, far below the 0.05 that would pay for ~0.5 s per query;
            docs/retrieval.md).
        weight: score bonus of a candidate with ``inlier_cap`` or more inliers.
        inlier_cap: inliers at which the bonus saturates.
        min_inliers: fewer inliers give no bonus (None: :func:`same_landmark_inliers`).
    """

    features: LocalFeatureKind = "aliked"
    matcher: Literal["lightglue", "mnn"] = "lightglue"
    max_keypoints: int = Field(512, ge=8)
    max_side: int = Field(512, ge=64)
    filter_threshold: float = Field(0.1, gt=0.0, lt=1.0)
    threads: int = Field(1, ge=1)
    ransac_threshold: float = Field(3.0, gt=0.0)
    static_tolerance: float = Field(0.01, ge=0.0, lt=1.0)
    banner_search: float = Field(0.15, ge=0.0, le=0.5)
    top: int = Field(0, ge=0)
    weight: float = Field(1.0, ge=0.0)
    inlier_cap: int = Field(100, ge=1)
    min_inliers: int | None = Field(None, ge=0)


class RetrievalConfig(_Strict):
    """All retrieval settings: ``index``, ``knn``, ``verify``, ``local`` and ``retrieve`` sections (module docstring)."""

    index: IndexParams = IndexParams()
    knn: KnnConfig = KnnConfig()
    verify: VerifyConfig = VerifyConfig()
    local: LocalConfig = LocalConfig()
    retrieve: RetrieveConfig = RetrieveConfig()


def retrieval_presets() -> list[str]:
    """Names of the shipped retrieval presets (``exact``, ``ivfpq``, ``verified``)."""
    return sorted(p.stem for p in RETRIEVAL_PRESETS_DIR.glob("*.yaml"))


def load_retrieval_config(source: str | Path | None = None, overrides: dict | None = None) -> RetrievalConfig:
    """A :class:`RetrievalConfig` from a preset name or YAML path, with ``overrides`` on top.

    Args:
        source: preset name (:func:`retrieval_presets`), a YAML file, or None (the defaults).
        overrides: nested mapping merged over the file, e.g. ``{"knn": {"k": 5}}``.

    Raises:
        FileNotFoundError: neither a file nor a preset (one line naming the presets).
        ValueError: the YAML, or an override, does not validate; the message names each
            bad field.
    """
    if source is None:
        return validate_config(RetrievalConfig, overrides or {}, "retrieval settings")
    return read_config(source, RetrievalConfig, RETRIEVAL_PRESETS_DIR, overrides, what="retrieval config")
