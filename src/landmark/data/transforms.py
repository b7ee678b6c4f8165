"""Training augmentation with the scheduled crop, evaluation and test-time crops.

The scheduled crop is the original work's curriculum: the probability of a random
crop grows linearly over a stage's epochs, so early epochs see whole landmarks and
later ones see parts of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

if TYPE_CHECKING:   # settings types only: data sits below the config layer
    from ..config import Augment, CropSchedule

CROP_MODES = ("center", "corners", "edges", "random")


def crop_probability(schedule: CropSchedule, epoch: int, epochs: int) -> float:
    """p at ``epoch`` (0-based) of a stage of ``epochs``: linear from p_start to p_end.

    A one-epoch stage uses p_start.
    """
    if epochs <= 1:
        return schedule.p_start
    return schedule.p_start + (schedule.p_end - schedule.p_start) * epoch / (epochs - 1)


def crop_origin(mode: str, resize: int, size: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """Top-left (top, left) pixel of a ``size`` crop inside a ``resize`` square.

    ``center``: the centre. ``corners``: one of the four corners. ``edges``: the middle of
    one of the four edges (top, bottom, left, right). ``random``: uniform over all
    positions.  Choices use torch's RNG (seeded per DataLoader worker).
    """
    free = resize - size
    if mode == "center":
        return free // 2, free // 2
    if mode == "corners":
        k = int(torch.randint(4, (1,), generator=generator))
        return (0 if k < 2 else free), (0 if k % 2 == 0 else free)
    if mode == "edges":
        k = int(torch.randint(4, (1,), generator=generator))
        return [(0, free // 2), (free, free // 2), (free // 2, 0), (free // 2, free)][k]
    if mode == "random":
        return (int(torch.randint(free + 1, (1,), generator=generator)),
                int(torch.randint(free + 1, (1,), generator=generator)))
    raise ValueError(f"crop mode {mode!r}: choose one of {CROP_MODES}")


class ScheduledCrop(nn.Module):
    """With probability ``p``: resize to ``resize`` x ``resize``, crop ``size`` x ``size`` at
    a position chosen by ``mode``; otherwise resize to ``size`` x ``size``.

    ``p`` is an attribute that the trainer sets before each epoch
    (:func:`crop_probability`).  Input: PIL image or tensor ``[C, H, W]``; output the same
    kind, ``size`` x ``size`` pixels.
    """

    def __init__(self, schedule: CropSchedule, p: float | None = None):
        super().__init__()
        self.resize, self.size, self.mode = schedule.resize, schedule.size, schedule.mode
        self.p = schedule.p_start if p is None else p

    def forward(self, img):
        if self.p > 0 and float(torch.rand(1)) < self.p:
            img = F.resize(img, [self.resize, self.resize], antialias=True)
            top, left = crop_origin(self.mode, self.resize, self.size)
            return F.crop(img, top, left, self.size, self.size)
        return F.resize(img, [self.size, self.size], antialias=True)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}, resize={self.resize}, size={self.size}, mode={self.mode}"


def _to_tensor(mean, std) -> list:
    return [v2.ToImage()] + _normalise(mean, std)


def _normalise(mean, std) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def resize_uint8(side: int) -> v2.Compose:
    """PIL image (or uint8 ``[3, H, W]``) -> uint8 ``[3, side, side]``, antialiased.

    The resize runs on the uint8 tensor (torch's antialiased bilinear kernel): within one
    grey level of Pillow's own resize and about 3 times faster (0.5 against 1.4 ms for a
    500 x 400 photo, one core; docs/runtime.md), which matters when decoding must keep up
    with an ONNX Runtime forward pass.  Every evaluation path resizes with it.
    """
    return v2.Compose([v2.ToImage(), v2.Resize([side, side], antialias=True)])


class LongerSide(nn.Module):
    """Resize a uint8 ``[3, H, W]`` image (antialiased) so that its longer side is ``side`` pixels,
    keeping its aspect ratio: ``[3, round(H * side / max(H, W)), round(W * side / max(H, W))]``
    (each side at least 1).  Photos smaller than ``side`` are enlarged, so every photo is seen at
    one scale whatever its resolution on disk."""

    def __init__(self, side: int):
        super().__init__()
        self.side = int(side)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        scale = self.side / max(h, w)
        return F.resize(img, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)

    def extra_repr(self) -> str:
        return f"side={self.side}"


def resize_longer_uint8(side: int) -> v2.Compose:
    """PIL image (or uint8 ``[3, H, W]``) -> uint8 ``[3, h, w]`` with ``max(h, w) == side``, the
    aspect ratio kept (:class:`LongerSide`; the same antialiased kernel as :func:`resize_uint8`).
    The whole photo, neither cropped nor squashed: what landmark retrieval benchmarks feed
    (revisited Oxford/Paris: the longer side 1024 px)."""
    return v2.Compose([v2.ToImage(), LongerSide(side)])


def train_transform(augment: Augment, crop: CropSchedule, mean, std) -> v2.Compose:
    """flip -> scheduled crop -> rotation/translation/scale -> float tensor ``[3, size, size]`` normalised."""
    steps = [v2.RandomHorizontalFlip(augment.hflip), ScheduledCrop(crop)]
    if augment.rotation or augment.translate or augment.scale != (1.0, 1.0):
        steps.append(v2.RandomAffine(degrees=augment.rotation, translate=(augment.translate, augment.translate),
                                     scale=augment.scale))
    return v2.Compose(steps + _to_tensor(mean, std))


def eval_transform(size: int, mean, std) -> v2.Compose:
    """Plain resize to ``size`` x ``size`` (what training does when it does not crop; :func:`resize_uint8`),
    then float32 ``[3, size, size]`` normalised."""
    return v2.Compose([resize_uint8(size)] + _normalise(mean, std))


def tta_transform(resize: int, size: int, mean, std) -> v2.Compose:
    """Ten crops for test-time voting: resize to ``resize`` x ``resize``, then the four corner
    and centre ``size`` crops and their horizontal mirrors (torchvision ``TenCrop``).

    The resized image is converted and normalised once, then cut (normalisation is per
    pixel, so the crops equal those of cropping first; no work is repeated per crop).

    Output: float tensor ``[10, 3, size, size]``.
    """
    return v2.Compose([resize_uint8(resize)] + _normalise(mean, std) + [v2.TenCrop(size), _StackCrops()])


class _StackCrops(nn.Module):
    """Tuple of ``[3, S, S]`` crops -> tensor ``[K, 3, S, S]`` (v2.Lambda would map each crop alone)."""

    def forward(self, crops):
        return torch.stack(list(crops))


def find_scheduled_crop(transform) -> ScheduledCrop | None:
    for step in getattr(transform, "transforms", []):
        if isinstance(step, ScheduledCrop):
            return step
    return None
