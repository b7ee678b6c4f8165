"""Geometric verification: RootSIFT local features, mutual ratio-test matching, MAGSAC.

Two images of the same landmark share many local features whose positions agree
with one 3D scene seen from two cameras; two different buildings (or a building and
a cat) share at most a few accidental matches.  The number of RANSAC *inliers* is
therefore a strong re-ranking / rejection signal for global-descriptor retrieval
(as DELF/DELG re-ranking in GLDv2 recognition, Noh et al. ICCV 2017, Cao et al.
ECCV 2020), at a fraction of DELF's cost (~0.5 s per pair) when SIFT features are
extracted once and cached (:class:`FeatureCache`).

Pipeline of one pair (see ``docs/verification.md`` for the measured numbers):

1. :func:`local_features`: shrink so the longest side is <= ``max_side`` pixels,
   OpenCV SIFT (Lowe, IJCV 2004) keeping the ``max_keypoints`` strongest by
   response, RootSIFT descriptors (Arandjelovic & Zisserman, "Three things everyone
   should know to improve object retrieval", CVPR 2012: L1-normalise, square root).
2. :func:`mutual_matches`: FAISS exact 2-NN both ways; a match ``(i, j)`` is kept
   when ``j`` is ``i``'s nearest neighbour, ``i`` is ``j``'s nearest neighbour, and
   Lowe's ratio test ``d1 < ratio * d2`` passes (Euclidean distances).
3. :func:`ransac_inliers`: ``cv2.findFundamentalMat`` with ``cv2.USAC_MAGSAC``
   (Barath et al., "MAGSAC++", CVPR 2020).  The fundamental matrix is the model of
   any rigid 3D scene seen by two pinhole cameras (as in the GLDv2 Kaggle baseline's
   DELG re-ranking); a homography is only right for planar facades, distant scenes
   or pure rotation.  On landmarks13 both separate same-landmark from
   different-landmark pairs equally well (same recall at zero false positives);
   the fundamental matrix keeps a few more inliers on true 3D matches but has a
   higher noise floor (up to 11 inliers on unrelated pairs, since 7 points fix it,
   versus up to 8 for a homography), hence the same-landmark threshold
   :data:`~landmark.retrieval.config.SAME_LANDMARK_INLIERS` = 15.
   ``model="homography"`` is available.  Measurements: ``docs/verification.md``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import faiss
import numpy as np
from PIL import Image

from ..data.images import ImageError, load_image
from .config import RANSAC_THRESHOLD_PX, SAME_LANDMARK_INLIERS, GeometricModel, VerifyConfig

#: Fewest tentative matches RANSAC is run on; below this the inlier count is 0.
#: (7 points determine a fundamental matrix, 4 a homography; one more than the
#: minimal sample is required so that a model is ever *verified* by another point.)
MIN_MATCHES: dict[str, int] = {"fundamental": 8, "homography": 5}

#: Defaults of the functions below (one place: :class:`~landmark.retrieval.config.VerifyConfig`).
_VERIFY = VerifyConfig()


@dataclass
class LocalFeatures:
    """Local features of one image.

    Attributes:
        keypoints: float32 ``[N, 2]``, (x, y) in pixels of the *resized* image.
        descriptors: float32 ``[N, 128]``, RootSIFT (non-negative, unit L2 norm).
        size: ``(width, height)`` of the resized image in pixels.
        banner: rows of a stock-photo banner along the bottom of the resized image whose
            keypoints were dropped (0: none or not looked for; :func:`landmark.retrieval.local.bottom_banner`).
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]
    banner: int = 0

    def __len__(self) -> int:
        return len(self.keypoints)


@dataclass
class MatchResult:
    """Matches between images ``a`` and ``b``.

    Attributes:
        matches: int64 ``[M, 2]``, (index into ``a``, index into ``b``) of the
            tentative matches (mutual nearest neighbours passing the ratio test).
        inliers: int64 ``[K, 2]``, the subset of ``matches`` consistent with the
            RANSAC model (``K = 0`` when ``M < MIN_MATCHES[model]`` or RANSAC fails).
        model: ``"fundamental"`` or ``"homography"``.
        matrix: float64 ``[3, 3]`` estimated model, or None.
    """

    matches: np.ndarray
    inliers: np.ndarray
    model: str
    matrix: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_inliers(self) -> int:
        """K, the number of RANSAC inliers (compare with ``SAME_LANDMARK_INLIERS``)."""
        return int(len(self.inliers))


def shrink(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longest side is at most ``max_side`` pixels, keeping aspect (never enlarges)."""
    longest = max(image.size)
    if longest <= max_side:
        return image
    scale = max_side / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _as_image(image: str | Path | Image.Image) -> Image.Image:
    return image if isinstance(image, Image.Image) else load_image(image)


def sift_features(image: str | Path | Image.Image, max_keypoints: int = _VERIFY.max_keypoints,
                  max_side: int = _VERIFY.max_side) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Raw OpenCV SIFT of the shrunk image (what :class:`FeatureCache` stores).

    Returns:
        (keypoints float32 ``[N, 2]`` pixels, SIFT descriptors uint8 ``[N, 128]``
        (OpenCV's descriptors are integers 0..255 stored as float; kept exactly),
        ``(width, height)`` of the resized image), ``N <= max_keypoints``, strongest
        first by detector response.

    Raises:
        ImageError: a path that cannot be decoded (:func:`landmark.data.load_image`).
        ValueError: ``max_keypoints`` or ``max_side`` below 1.
    """
    if max_keypoints < 1 or max_side < 1:
        raise ValueError(f"max_keypoints ({max_keypoints}) and max_side ({max_side}) must be >= 1")
    img = shrink(_as_image(image), max_side)
    grey = np.asarray(img.convert("L"))
    keypoints, descriptors = cv2.SIFT_create(nfeatures=max_keypoints).detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), img.size
    # nfeatures keeps ties and duplicate orientations, so it can return a few more.
    order = np.argsort([-k.response for k in keypoints], kind="stable")[:max_keypoints]
    xy = np.array([keypoints[k].pt for k in order], dtype=np.float32).reshape(-1, 2)
    return xy, np.clip(np.rint(descriptors[order]), 0, 255).astype(np.uint8), img.size


def root_sift(descriptors: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """RootSIFT: L1-normalise each row, then take the element-wise square root.

    Arandjelovic & Zisserman, CVPR 2012.  Euclidean distance between RootSIFT
    vectors equals the Hellinger kernel distance between the SIFT histograms.

    Args:
        descriptors: ``[N, 128]`` non-negative SIFT descriptors (any numeric dtype).
    Returns:
        float32 ``[N, 128]`` with unit L2 norm (rows of zeros stay zero).
    """
    d = descriptors.astype(np.float32)
    return np.sqrt(d / (d.sum(axis=1, keepdims=True) + eps)).astype(np.float32)


def local_features(image: str | Path | Image.Image, max_keypoints: int = _VERIFY.max_keypoints,
                   max_side: int = _VERIFY.max_side) -> LocalFeatures:
    """SIFT keypoints with RootSIFT descriptors of an image shrunk to ``max_side`` pixels.

    Args:
        image: path (decoded by content with :func:`landmark.data.load_image`) or PIL image.
        max_keypoints: keep at most this many keypoints, strongest by response.
        max_side: pixels; the longest side of the image features are computed on.

    Returns:
        :class:`LocalFeatures` (keypoints in pixels of the resized image).

    Raises:
        ImageError: the path cannot be decoded; ValueError: bad sizes.
    """
    xy, sift, size = sift_features(image, max_keypoints, max_side)
    return LocalFeatures(xy, root_sift(sift), size)


def mutual_matches(a: LocalFeatures, b: LocalFeatures, ratio: float = _VERIFY.ratio) -> np.ndarray:
    """Mutual nearest neighbours that pass Lowe's ratio test.

    Exact L2 search with FAISS (``faiss.knn``): 2 neighbours of every descriptor of
    ``a`` in ``b`` and 1 of every descriptor of ``b`` in ``a``.  ``(i, j)`` is kept
    when ``nn_b(i) = j``, ``nn_a(j) = i`` and ``d(i, j) < ratio * d(i, 2nd)``
    (Lowe, IJCV 2004, Euclidean distances).

    Returns:
        int64 ``[M, 2]`` index pairs (into ``a``, into ``b``), ordered by ``a`` index.
    """
    if len(a) < 2 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    dist_ab, nn_ab = faiss.knn(a.descriptors, b.descriptors, 2)   # squared L2
    _, nn_ba = faiss.knn(b.descriptors, a.descriptors, 1)
    i = np.arange(len(a))
    j = nn_ab[:, 0]
    keep = (nn_ba[j, 0] == i) & (dist_ab[:, 0] < (ratio ** 2) * dist_ab[:, 1])
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def ransac_inliers(a: LocalFeatures, b: LocalFeatures, matches: np.ndarray, model: GeometricModel = _VERIFY.model,
                   threshold: float | None = None, confidence: float = 0.999,
                   max_iters: int = 2000) -> tuple[np.ndarray, np.ndarray | None]:
    """Robustly fit ``model`` to the matched points with OpenCV USAC MAGSAC++.

    Args:
        matches: int ``[M, 2]`` from :func:`mutual_matches`.
        model: ``"fundamental"`` (``cv2.findFundamentalMat``, epipolar distance) or
            ``"homography"`` (``cv2.findHomography``, reprojection distance).
        threshold: pixels in the resized images; default ``RANSAC_THRESHOLD_PX[model]``.
            For MAGSAC++ it is the upper bound of the noise scale it marginalises over.

    Returns:
        (bool ``[M]`` inlier mask, float64 ``[3, 3]`` model or None).  All False
        when ``M < MIN_MATCHES[model]`` or OpenCV finds no model.

    Raises:
        ValueError: unknown ``model``.
    """
    if model not in MIN_MATCHES:
        raise ValueError(f"model must be 'fundamental' or 'homography', not {model!r}")
    threshold = RANSAC_THRESHOLD_PX[model] if threshold is None else threshold
    mask = np.zeros(len(matches), dtype=bool)
    if len(matches) < MIN_MATCHES[model]:
        return mask, None
    pa = a.keypoints[matches[:, 0]].astype(np.float64)
    pb = b.keypoints[matches[:, 1]].astype(np.float64)
    try:
        if model == "fundamental":
            matrix, inl = cv2.findFundamentalMat(pa, pb, cv2.USAC_MAGSAC, threshold, confidence, max_iters)
        else:
            matrix, inl = cv2.findHomography(pa, pb, cv2.USAC_MAGSAC, threshold, maxIters=max_iters,
                                             confidence=confidence)
    except cv2.error:   # degenerate configurations (all points on a line, ...)
        return mask, None
    if matrix is None or inl is None or matrix.shape != (3, 3):
        return mask, None
    return inl.ravel().astype(bool), matrix


def match(a: LocalFeatures, b: LocalFeatures, ratio: float = _VERIFY.ratio, model: GeometricModel = _VERIFY.model,
          ransac_threshold: float | None = _VERIFY.ransac_threshold) -> MatchResult:
    """Tentative matches (:func:`mutual_matches`) and their RANSAC inliers (:func:`ransac_inliers`)."""
    matches = mutual_matches(a, b, ratio)
    mask, matrix = ransac_inliers(a, b, matches, model, threshold=ransac_threshold)
    return MatchResult(matches, matches[mask], model, matrix)


def count_inliers(a: LocalFeatures, b: LocalFeatures, ratio: float = _VERIFY.ratio,
                  ransac_threshold: float | None = _VERIFY.ransac_threshold,
                  model: GeometricModel = _VERIFY.model) -> int:
    """Number of RANSAC inliers between two images' features (0 when too few matches).

    ``ransac_threshold`` is in pixels of the resized images (default
    ``RANSAC_THRESHOLD_PX[model]``: 3 px epipolar distance for the fundamental matrix).
    Compare with :data:`~landmark.retrieval.config.SAME_LANDMARK_INLIERS` to decide "same landmark".
    """
    return match(a, b, ratio, model, ransac_threshold=ransac_threshold).num_inliers


class FeatureCache:
    """Local features on disk, one ``.npz`` per image, so each image is extracted once.

    Files are ``dir/<id[:2]>/<id>.npz`` holding keypoints (float32), raw SIFT
    descriptors (uint8, exact; RootSIFT is recomputed on load, so a round trip is
    bit-identical), the resized image size and the extraction settings; a file
    written with other settings is extracted again.  Writes are atomic (temp file +
    rename), so an interrupted run leaves no half-written file.

    Args:
        directory: cache folder (created on first write).
        max_keypoints, max_side: as in :func:`local_features`.
    """

    def __init__(self, directory: str | Path, max_keypoints: int = _VERIFY.max_keypoints,
                 max_side: int = _VERIFY.max_side):
        self.dir = Path(directory)
        self.max_keypoints = max_keypoints
        self.max_side = max_side
        self.hits = 0
        self.misses = 0

    def file(self, image_id: str) -> Path:
        """Path of the cached features of ``image_id``."""
        image_id = str(image_id)
        if not image_id or "/" in image_id or "\\" in image_id or image_id.startswith("."):
            raise ValueError(f"image id {image_id!r} cannot name a cache file")
        return self.dir / image_id[:2] / f"{image_id}.npz"

    def get(self, image_id: str, path: str | Path | Image.Image) -> LocalFeatures:
        """Features of ``image_id``: from the cache, or extracted from ``path`` and stored.

        Raises:
            ImageError: the image is not cached and cannot be decoded (nothing is written).
            ValueError: an id that cannot be a file name.
        """
        target = self.file(image_id)
        if target.is_file():
            try:
                with np.load(target, allow_pickle=False) as z:
                    if int(z["max_keypoints"]) == self.max_keypoints and int(z["max_side"]) == self.max_side:
                        self.hits += 1
                        return LocalFeatures(z["keypoints"], root_sift(z["sift"]), tuple(int(v) for v in z["size"]))
            except (OSError, KeyError, ValueError):
                pass   # unreadable cache file: extract again and replace it
        self.misses += 1
        xy, sift, size = sift_features(path, self.max_keypoints, self.max_side)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, keypoints=xy, sift=sift, size=np.array(size), max_keypoints=self.max_keypoints,
                 max_side=self.max_side)
        os.replace(tmp, target)
        return LocalFeatures(xy, root_sift(sift), size)


__all__ = ["LocalFeatures", "MatchResult", "FeatureCache", "ImageError", "local_features", "sift_features",
           "root_sift", "mutual_matches", "ransac_inliers", "match", "count_inliers", "shrink",
           "MIN_MATCHES", "RANSAC_THRESHOLD_PX", "SAME_LANDMARK_INLIERS", "GeometricModel"]
