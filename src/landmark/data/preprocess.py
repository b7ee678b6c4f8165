"""The preprocessing contract: how a photo becomes the network's input tensor.

One :class:`Preprocess` is derived from the model specification when a model is built
(:meth:`landmark.models.ModelSpec.preprocess`), set by training to the last stage's
crop, stored in every checkpoint (``ckpt["preprocess"]``) and in every ONNX export's
metadata, and used by validation, prediction, embedding, saliency, the report, export
and the service.  Nothing else decides input size or normalisation.

It is also a read-only mapping (``size``, ``resize``, ``mean``, ``std``), so it
serialises to JSON with ``dict(preprocess)``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluation crop fraction when nothing else says: resize = size / 0.875 (224 -> 256), as
# timm's default ``crop_pct`` and the usual ImageNet evaluation protocol.
CROP_PCT = 0.875
# Pixels: no network input (or voting resize) is larger; a bigger value in a checkpoint or a
# config is an error, not an image of gigabytes that exhausts memory.
MAX_SIDE = 4096


@dataclass(frozen=True, eq=False)   # equality is Mapping's: equal to a dict with the same entries
class Preprocess(Mapping):
    """Resize to ``size`` x ``size`` pixels (one view) or to ``resize`` x ``resize`` then cut ten
    ``size`` crops (test-time voting); scale to [0, 1]; normalise with ``mean``/``std`` (RGB).

    Raises:
        ValueError: a side that is not a whole number of pixels in 1..:data:`MAX_SIDE`,
            ``resize < size``, or ``mean``/``std`` without 3 finite values (std > 0).
    """

    size: int
    resize: int = 0                      # 0: size / CROP_PCT
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    _KEYS: ClassVar[tuple[str, ...]] = ("size", "resize", "mean", "std")

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pixels("size", self.size))
        object.__setattr__(self, "resize", _pixels("resize", self.resize) or min(round(self.size / CROP_PCT), MAX_SIDE))
        object.__setattr__(self, "mean", _three("mean", self.mean))
        object.__setattr__(self, "std", _three("std", self.std))
        if not 1 <= self.size <= self.resize <= MAX_SIDE:
            raise ValueError(f"preprocess size {self.size} / resize {self.resize}: need 1 <= size <= resize "
                             f"<= {MAX_SIDE}")
        if min(self.std) <= 0:
            raise ValueError(f"preprocess std {self.std}: need std > 0")

    @classmethod
    def of(cls, value: "Preprocess | Mapping") -> "Preprocess":
        """A :class:`Preprocess` from itself or from a mapping with ``size`` (and optionally
        ``resize``, ``mean``, ``std``), e.g. a checkpoint's or an ONNX file's JSON.

        Raises:
            ValueError: no ``size``, an unknown key, or values :class:`Preprocess` refuses.
        """
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping) or "size" not in value:
            raise ValueError(f"preprocessing {value!r} has no 'size'; the checkpoint predates the contract or "
                             f"was altered")
        unknown = [k for k in value if k not in cls._KEYS]
        if unknown:   # a misspelt "Mean" would otherwise be replaced by the default, silently
            raise ValueError(f"preprocessing {dict(value)!r} has unknown keys {', '.join(map(repr, unknown))}; "
                             f"it takes {', '.join(cls._KEYS)}")
        return cls(**{k: value[k] for k in cls._KEYS if k in value})

    def transform(self, tta: int = 1):
        """The torchvision transform of a PIL image: ``[3, size, size]`` float32 for one view,
        ``[10, 3, size, size]`` for test-time voting (``tta > 1``; the caller keeps the first ``tta``)."""
        from .transforms import eval_transform, tta_transform   # torchvision: only when a transform is built
        if tta > 1:
            return tta_transform(self.resize, self.size, self.mean, self.std)
        return eval_transform(self.size, self.mean, self.std)

    def decode_transform(self, tta: int = 1):
        """The decoding workers' half of :meth:`transform`: resize (antialiased) a PIL image to
        :meth:`side` and return it as uint8 ``[3, S, S]``.  :meth:`finish_batch` does the rest
        on a whole batch in the main process, so workers send a quarter of the bytes (1/40
        with voting: one uint8 image instead of ten float crops); the result equals
        :meth:`transform`'s (tested)."""
        from .transforms import resize_uint8
        return resize_uint8(self.side(tta))

    def finish_batch(self, x, tta: int = 1):
        """uint8 ``[N, 3, S, S]`` from :meth:`decode_transform` -> float32 ``[N, 3, size, size]``
        (``tta=1``) or ``[N, 10, 3, size, size]`` (TenCrop order), normalised."""
        import torch
        from torchvision.transforms.v2 import functional as F
        # (x / 255 - mean) / std as one conversion and two in-place passes: 25 times faster than
        # to_dtype + normalize (0.03 against 0.65 ms per 224 px photo), equal to 1e-6
        std = torch.tensor(self.std).view(3, 1, 1)
        x = x.to(torch.float32).mul_(1 / (255 * std)).add_(-torch.tensor(self.mean).view(3, 1, 1) / std)
        return x if tta == 1 else torch.stack(F.ten_crop(x, [self.size] * 2), 1)

    def side(self, tta: int = 1) -> int:
        """Pixels: the side a photo is resized to before cropping (``size``, or ``resize`` with voting)."""
        return self.resize if tta > 1 else self.size

    def to_dict(self) -> dict:
        """JSON-ready ``{"size", "resize", "mean", "std"}`` (lists for mean/std)."""
        return {k: self[k] for k in self._KEYS}

    # read-only mapping view: dict(preprocess), preprocess["size"], json.dumps(dict(preprocess))
    def __getitem__(self, key: str):
        if key not in self._KEYS:
            raise KeyError(key)
        value = getattr(self, key)
        return list(value) if isinstance(value, tuple) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)


def _pixels(name: str, value) -> int:
    """A whole number of pixels (``224``, ``"224"``, ``224.0``); booleans and fractions are refused."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"preprocess {name} {value!r}: need a whole number of pixels")
    return int(number)


def _three(name: str, value) -> tuple[float, float, float]:
    """Three finite numbers (RGB)."""
    try:
        values = tuple(float(v) for v in value) if not isinstance(value, (str, bytes)) else ()
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"preprocess {name} {value!r}: need 3 finite numbers (RGB)")
    return values
