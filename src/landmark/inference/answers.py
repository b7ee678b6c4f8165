"""What a recogniser answers, and the parts of loading one that need neither torch nor pandas.

:class:`Answer` (with :class:`Candidate`, :class:`Neighbour`) is what
:class:`~landmark.inference.recognizer.Recognizer` and the torch-free
:class:`~landmark.inference.instant.InstantRecognizer` return; :func:`decode` turns any
:data:`ImageInput` into an upright RGB image; :func:`resolve_checkpoint`, :func:`run_index`,
:func:`scoring_mode` and :func:`stored_threshold` say where a run keeps its model and index
and how its answers are scored.  This module imports pydantic, numpy and Pillow only.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image
from pydantic import BaseModel, computed_field

from ..data.images import MAX_PIXELS, ImageError, _to_rgb, check_shape, load_image
from ..retrieval.config import is_stored_threshold
from ..runs import RunFolder
from .words import certainty, sentence

if TYPE_CHECKING:
    from ..retrieval.index import LandmarkIndex


# JPEGs are decoded (Pillow draft, DCT scaling) to at least this many times the side the
# network input is resized from: 2, as the training cache (cache.py: draft=2*width).
DRAFT_FACTOR = 2

#: What :meth:`Recognizer.recognize` accepts per image.
ImageInput = Union[Image.Image, np.ndarray, bytes, str, Path]


class Candidate(BaseModel):
    """One landmark a photo may show, with its score (same scale as :attr:`Answer.score`)."""

    landmark_id: str
    name: str
    score: float


class Neighbour(BaseModel):
    """An indexed reference photo close to the query (cosine ``similarity`` in [-1, 1])."""

    id: str
    landmark_id: str
    name: str
    similarity: float
    path: str


class Answer(BaseModel):
    """The recogniser's answer for one photo.

    Attributes:
        source: what was asked (file name, or ``image <k>`` for in-memory images).
        landmark_id, name, score: the best landmark, even when below the threshold.
        is_landmark: ``score >= threshold``.
        threshold: the threshold used.
        scoring: ``reference``, ``classifier`` or ``knn``.
        top_k: the candidates, the first being the answer itself: best score first with
            ``classifier`` and ``knn``; with ``reference`` in the classifier's order, each with
            its reference score, so a later candidate may score higher than the answer (the
            classifier chooses the landmark, its reference photos only confirm it).
        neighbours: the most similar indexed photos (empty without an index).
        inliers: local-feature inliers between the photo and the best photo of the answer,
            when the answer is an enrolled landmark matched geometrically
            (:mod:`landmark.retrieval.confirm`); None when none was matched.
    """

    source: str
    landmark_id: str
    name: str
    score: float
    is_landmark: bool
    threshold: float
    scoring: str
    top_k: list[Candidate]
    neighbours: list[Neighbour] = []
    inliers: int | None = None

    @computed_field
    @property
    def verdict(self) -> str:
        """The landmark's name, or ``no landmark``."""
        return self.name if self.is_landmark else "no landmark"

    @computed_field
    @property
    def certainty(self) -> str:
        """``probably``, ``not sure`` or ``no landmark`` (:func:`landmark.inference.words.certainty`)."""
        return certainty(self.score, self.threshold, self.is_landmark)

    @computed_field
    @property
    def words(self) -> str:
        """The answer in plain words: ``probably Colosseum``, ``not sure: maybe Colosseum``,
        ``no landmark`` (:func:`landmark.inference.words.sentence`)."""
        return sentence(self.name, self.score, self.threshold, self.is_landmark)

    def line(self) -> str:
        """One readable line: ``photo.jpg  Colosseum  0.93`` or
        ``photo.jpg  no landmark (best: Petra 0.12 < 0.40)``."""
        if self.is_landmark:
            return f"{self.source}  {self.name}  {self.score:.2f}"
        digits = 2   # enough that the score visibly falls below the threshold (not "0.09 < 0.09")
        while digits < 6 and f"{self.score:.{digits}f}" == f"{self.threshold:.{digits}f}":
            digits += 1
        return (f"{self.source}  no landmark (best: {self.name} {self.score:.{digits}f} < "
                f"{self.threshold:.{digits}f})")


def decode(image: ImageInput, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Any :data:`ImageInput` as an upright RGB PIL image.

    Bytes and paths are decoded by content with :func:`landmark.data.load_image` (pixel
    cap ``max_pixels`` checked before decoding; a JPEG shrunk while decoding to no less than
    ``draft`` pixels a side, as ``landmark predict`` decodes it: :meth:`Recognizer.draft`);
    arrays are ``[H, W]`` or ``[H, W, 3|4]`` uint8.

    Raises:
        ImageError: undecodable, beyond a limit of :func:`landmark.data.images.check_shape` (also a
            PIL image or array given directly), or an array of another shape or dtype.
    """
    if isinstance(image, Image.Image):
        check_shape(image.width, image.height, image.mode, max_pixels)
        return _to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ImageError(f"array of shape {image.shape} and dtype {image.dtype}: give HxWx3 uint8 (RGB)")
        check_shape(image.shape[1], image.shape[0], "RGB", max_pixels)
        return _to_rgb(Image.fromarray(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return load_image(bytes(image), draft=draft, max_pixels=max_pixels)
    if isinstance(image, (str, Path)):
        return load_image(image, draft=draft, max_pixels=max_pixels)
    raise ImageError(f"cannot read a {type(image).__name__} as an image: give a PIL image, array, bytes or path")


def resolve_checkpoint(source: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.pt``.

    Raises:
        FileNotFoundError: neither exists.
    """
    source = Path(source)
    if source.is_dir():
        return RunFolder(source).best_checkpoint()
    if not source.is_file():
        raise FileNotFoundError(f"model {source} does not exist (give a run folder or a .pt checkpoint)")
    return source


def scoring_mode(index: LandmarkIndex | None, classes: list[str]) -> str:
    """``classifier`` without an index, ``reference`` with one (the run's own, a copy, one
    built with ``landmark index build``; enrolled landmarks keep it: one scoring path,
    :mod:`landmark.retrieval.scoring`).  ``knn`` is only used when asked for."""
    return "classifier" if index is None else "reference"


def scoring_line(scoring: str, photos: int | None, counts: dict[str, int], classes: list[str]) -> str:
    """How answers are scored, in words (the CLI prints it under the runtime line), for
    ``photos`` indexed photos (None: no index) of the landmarks counted in ``counts``:
    ``reference (index of 720 photos of 13 landmarks; 13 classifier classes)``."""
    if photos is None:
        return "classifier alone (no index beside the model; --index RUN/index confirms answers with its photos)"
    extra = len(set(counts) - set(classes))
    return (f"{scoring} (index of {photos} photos of {len(counts)} landmarks"
            f"{f', {extra} enrolled beyond the classifier' if extra else ''}; {len(classes)} classifier classes)")


def stored_threshold(checkpoint: dict, index: LandmarkIndex | None, scoring: str) -> float | None:
    """The "no landmark" threshold stored for ``scoring``: the checkpoint's ``reject_threshold``
    (a dict per mode; a plain number means the classifier's), the index's for ``knn``.

    Raises:
        ValueError: the value stored is not a finite number in [0, 1] (an edited export's
            metadata or index: NaN or 7 would silently answer "no landmark" for every photo,
            -1 a landmark for every one).
    """
    if scoring == "knn":
        stored = index.meta.get("reject_threshold") if index is not None else None
    else:
        stored = checkpoint.get("reject_threshold")
        stored = stored.get(scoring) if isinstance(stored, dict) else stored if scoring == "classifier" else None
    if stored is not None and not is_stored_threshold(stored):
        # (rejection_threshold may choose the float just above 1: "no answer is right")
        raise ValueError(f"the model's stored 'no landmark' threshold for {scoring} scoring is {stored!r}, "
                         f"not a number in [0, 1]: give --threshold, or export or train the model again")
    return stored


def run_index(source: str | Path) -> Path | None:
    """The index a run folder carries (``RUN/index``), for a run folder or a checkpoint in one.

    Raises:
        FileNotFoundError: the run was trained with an index (``reference.json``) that is gone;
            an unfinished or damaged one is refused when it is loaded.
    """
    run = RunFolder.of(source)   # the folder, or the one of RUN/checkpoints/best.pt or RUN/model.onnx
    return run.index_dir() if run is not None else None


def own_record(path: Path, model, size: int) -> dict:
    """The record (:func:`landmark.retrieval.provenance.model_record`'s identity fields) of the vectors
    the recogniser of checkpoint ``path`` makes from one pass over ``size`` px squares: the SHA-256 of the
    ``.pt`` (an ONNX export, ``model``, stands for the checkpoint it came from)."""
    from ..models.onnx_model import file_sha256
    meta = getattr(model, "meta", None) or {}
    sha = meta.get("checkpoint_sha256") if path.suffix.lower() == ".onnx" else file_sha256(path)
    return {"checkpoint": str(path), "sha256": sha, "image_size": int(size)}


def check_index_model(index, path: Path, model) -> None:
    """Refuse an index whose vectors another checkpoint made (its recorded SHA-256; an ONNX
    export stands for the checkpoint it came from, its metadata's ``checkpoint_sha256``); an
    index without a record: a warning.  Reads no checkpoint (the ``.pt`` is only hashed).

    Raises:
        landmark.retrieval.provenance.ModelMismatch: another checkpoint made the index.
    """
    from ..models.onnx_model import file_sha256
    from ..retrieval.provenance import check_model
    recorded = index.meta.get("model") or {}
    if recorded.get("members"):   # several models' descriptors: no single checkpoint made them
        from ..retrieval.provenance import ModelMismatch, one_pass_refusal
        raise ModelMismatch(one_pass_refusal(recorded, recorded.get("image_size") or 0))
    meta = getattr(model, "meta", None) or {}
    sha = meta.get("checkpoint_sha256") if path.suffix.lower() == ".onnx" else file_sha256(path)
    mine = {"checkpoint": str(path), "sha256": sha, "image_size": recorded.get("image_size") or 0,   # sizes: load()
            "max_side": recorded.get("max_side")}
    check_model(mine, recorded, f"the vectors of {path}",
                "this index", fix="give the checkpoint the index was built with, or build an index with this one")


def read_names(source: str | Path | dict | None) -> dict[str, str]:
    """Landmark names from a dict, a GLDv2 folder / ``train_label_to_category.csv``, or a CSV
    with ``landmark_id,name`` columns (torch-free: pandas is imported only for a file)."""
    if source is None or isinstance(source, dict):
        return {str(k): str(v) for k, v in (source or {}).items()}
    import pandas as pd

    from ..data.gldv2 import category_name, read_categories
    source = Path(source)
    if source.is_dir():
        return {k: category_name(v) for k, v in read_categories(source).items()}
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    if {"landmark_id", "category"} <= set(frame.columns):
        return {k: category_name(v) for k, v in zip(frame["landmark_id"], frame["category"])}
    if {"landmark_id", "name"} <= set(frame.columns):
        return dict(zip(frame["landmark_id"], frame["name"]))
    raise ValueError(f"{source} needs the columns landmark_id,category (GLDv2) or landmark_id,name")
