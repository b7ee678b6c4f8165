"""Picture of a verified pair: the two images side by side with their inlier matches (PNG; reporting layer)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..retrieval.config import VerifyConfig
from ..retrieval.verification import LocalFeatures, MatchResult, shrink

_VERIFY = VerifyConfig()


Pair = tuple[Image.Image, Image.Image]


def draw_matches(result: MatchResult, path: str | Path, *, images: Pair, features: tuple[LocalFeatures, LocalFeatures],
                 max_side: int = _VERIFY.max_side, tentative: bool = False) -> Path:
    """Write :func:`matches_png` to ``path`` (parent folders are created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(matches_png(result, images=images, features=features, max_side=max_side, tentative=tentative))
    return path


def matches_png(result: MatchResult, *, images: Pair, features: tuple[LocalFeatures, LocalFeatures],
                max_side: int = _VERIFY.max_side, tentative: bool = False) -> bytes:
    """Draw the RANSAC inliers of ``result`` between two images with ``cv2.drawMatches``.

    Args:
        result: :func:`~landmark.retrieval.verification.match` of ``features``.
        images: the two images the features were computed on (``a``, ``b``).
        features: their :class:`LocalFeatures` (keypoints in pixels of the shrunk images).
        max_side: pixels; the images are shrunk to it exactly as :func:`local_features`
            did, so keypoint coordinates line up.
        tentative: also draw the rejected tentative matches, in red under the green inliers.

    A title strip states the counts.

    Returns:
        the picture as PNG bytes.

    Raises:
        OSError: the picture cannot be encoded.
    """
    (image_a, image_b), (a, b) = images, features
    img_a = np.asarray(shrink(image_a, max_side).convert("RGB"))[:, :, ::-1]
    img_b = np.asarray(shrink(image_b, max_side).convert("RGB"))[:, :, ::-1]
    kp_a = [cv2.KeyPoint(float(x), float(y), 3) for x, y in a.keypoints]
    kp_b = [cv2.KeyPoint(float(x), float(y), 3) for x, y in b.keypoints]

    def dmatches(pairs: np.ndarray) -> list[cv2.DMatch]:
        return [cv2.DMatch(int(i), int(j), 0.0) for i, j in pairs]

    flags = cv2.DrawMatchesFlags_NOT_DRAW_SINGLE_POINTS
    canvas = cv2.drawMatches(img_a, kp_a, img_b, kp_b, [], None, flags=flags)
    if tentative and len(result.matches):
        inlier_set = {tuple(p) for p in result.inliers.tolist()}
        rejected = np.array([p for p in result.matches.tolist() if tuple(p) not in inlier_set]).reshape(-1, 2)
        canvas = cv2.drawMatches(img_a, kp_a, img_b, kp_b, dmatches(rejected), canvas, matchColor=(0, 0, 255),
                                 singlePointColor=None, flags=flags | cv2.DrawMatchesFlags_DRAW_OVER_OUTIMG)
    canvas = cv2.drawMatches(img_a, kp_a, img_b, kp_b, dmatches(result.inliers), canvas, matchColor=(0, 200, 0),
                             singlePointColor=None, flags=flags | cv2.DrawMatchesFlags_DRAW_OVER_OUTIMG)
    title = np.full((28, canvas.shape[1], 3), 255, np.uint8)
    text = (f"{result.num_inliers} inliers ({result.model}, MAGSAC++) of {len(result.matches)} tentative matches; "
            f"keypoints {len(a)} / {len(b)}")
    cv2.putText(title, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", np.vstack([title, canvas]))
    if not ok:
        raise OSError("could not encode the matches picture")
    return png.tobytes()
