"""Why the recogniser answered what it did: saliency overlay and inlier matches, as PNG bytes.

Used by ``landmark recognize --explain DIR`` (written to files) and ``landmark serve``
(``?explain=1``: returned as ``data:`` URLs for the web page); nothing is written to disk
here.

* Saliency: guided backpropagation (:func:`landmark.reporting.saliency.saliency_maps`) of
  the answer's landmark, or of the classifier's best class when the answer is a landmark
  the classifier was not trained on (enrolled into the index), over the darkened photo.
* Matches: RootSIFT + MAGSAC++ inliers (:mod:`landmark.retrieval.verification`) between
  the photo and the best reference photo of the answer's landmark (with an index).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image

from ..data import ImageError, load_image
from ..inference.recognizer import Answer, Recognizer
from ..retrieval.config import VerifyConfig


@dataclass
class Explanation:
    """PNG pictures for one answer; ``matches_png`` is None without an index (or a readable
    reference photo), ``inliers`` the RANSAC inliers drawn in it."""

    saliency_png: bytes
    matches_png: bytes | None = None
    reference_id: str | None = None
    inliers: int | None = None


EXPLAIN_NEEDS_PYTORCH = ("saliency needs the PyTorch network: load the .pt checkpoint or its run folder "
                         "(an export beside it still answers), not a .onnx file")


def explain(rec: Recognizer, photo: Image.Image, answer: Answer,
            max_side: int = VerifyConfig.model_fields["max_side"].default) -> Explanation:
    """Saliency overlay and (with neighbours) inlier matches of one answered photo.

    Args:
        photo: the RGB photo that was answered (:func:`landmark.inference.recognizer.decode`).
        max_side: pixels; longest side of the pictures (default: geometric verification's,
            :class:`~landmark.retrieval.config.VerifyConfig`, so the matches drawn are those counted).

    Raises:
        ValueError: ``rec`` has no PyTorch network (it was loaded from a ``.onnx`` export).
    """
    if rec.model is None:
        raise ValueError(EXPLAIN_NEEDS_PYTORCH)
    from .saliency import overlay, saliency_maps
    from ..retrieval.verification import shrink
    small = shrink(photo, max_side)
    target = rec.classes.index(answer.landmark_id) if answer.landmark_id in rec.classes else None
    maps = saliency_maps(rec.model, small, rec.preprocess, target=target)
    out = Explanation(png(Image.fromarray(overlay(small, maps.guided))))
    reference = next((n for n in answer.neighbours if n.landmark_id == answer.landmark_id), None)
    if reference is not None:
        try:
            out.matches_png, out.inliers = _matches(small, load_image(reference.path), max_side)
            out.reference_id = reference.id
        except (ImageError, OSError):
            pass  # a reference photo that went missing only costs the picture
    return out


def _matches(photo: Image.Image, reference: Image.Image, max_side: int) -> tuple[bytes, int]:
    from .match_plot import matches_png
    from ..retrieval.verification import local_features, match
    a, b = local_features(photo, max_side=max_side), local_features(reference, max_side=max_side)
    result = match(a, b)
    return matches_png(result, images=(photo, reference), features=(a, b), max_side=max_side), result.num_inliers


def png(image: Image.Image) -> bytes:
    """A PIL image encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(png_bytes: bytes | None) -> str | None:
    """``data:image/png;base64,...`` for an ``<img src>`` (None stays None)."""
    return None if png_bytes is None else "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")
