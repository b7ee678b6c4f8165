"""Saliency maps: plain input gradients and guided backpropagation (via captum).

- Plain gradient: Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps", ICLR workshop 2014 — the
  map is max over colour channels of |d logit_c / d pixel| (``captum.attr.Saliency``).
- Guided backpropagation: Springenberg et al., "Striving for Simplicity: The All
  Convolutional Net", ICLR workshop 2015 — ReLU backward passes keep only positive
  gradients (``captum.attr.GuidedBackprop``); the map is max over channels of |attr|.

captum only hooks ``nn.ReLU`` modules, while EfficientNet-Lite uses ``nn.ReLU6``: on
a copy of the model every ``ReLU6``/``ReLU`` is swapped for a non-inplace ``nn.ReLU``
subclass with the same forward (:func:`guided_copy`), so guided backpropagation
really is guided (otherwise it would silently equal the plain gradient).

Maps are computed at the model's input size (the photo resized to ``size`` x ``size``,
as :func:`landmark.data.transforms.eval_transform` does) and resized back to the photo's
own height and width, so they overlay the photo pixel for pixel.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.preprocess import Preprocess


class _GuidedReLU(nn.ReLU):
    """``nn.ReLU`` (so captum hooks it) computing ``clamp(x, 0, cap)``; never inplace."""

    def __init__(self, cap: float | None):
        super().__init__(inplace=False)
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, self.cap) if self.cap is not None else x.clamp_min(0)


def guided_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode whose ReLU/ReLU6 modules captum can hook.

    Raises:
        ValueError: the model has no ReLU-family activation (guided backpropagation
            would equal the plain gradient).
    """
    clone = copy.deepcopy(model).eval()
    swapped = 0
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, _GuidedReLU(6.0))
                swapped += 1
            elif type(child) is nn.ReLU:
                setattr(parent, name, _GuidedReLU(None))
                swapped += 1
    if swapped == 0:
        raise ValueError("the model has no ReLU/ReLU6 modules; guided backpropagation is not defined for it")
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


@dataclass
class SaliencyResult:
    """Maps for one photo; ``gradient`` and ``guided`` are float32 ``[H, W]`` (the photo's
    height and width in pixels), >= 0, unnormalised; ``guided_rgb`` is float32
    ``[H, W, 3]`` (signed guided-backprop attribution per channel)."""

    target: int
    confidence: float
    gradient: np.ndarray
    guided: np.ndarray
    guided_rgb: np.ndarray


def saliency_maps(model: nn.Module, photo: Image.Image, preprocess: dict, target: int | None = None,
                  guided_model: nn.Module | None = None) -> SaliencyResult:
    """Plain-gradient and guided-backprop saliency of one photo for one class.

    Args:
        model: classifier ``[1, 3, S, S] -> [1, C]`` logits (eval mode is forced).
        photo: RGB PIL image, any size.
        preprocess: ``size``, ``mean``, ``std`` (a checkpoint's ``preprocess``).
        target: class index; default the predicted class.
        guided_model: a :func:`guided_copy` of ``model`` to reuse over many photos.

    Returns:
        :class:`SaliencyResult` with maps at the photo's size (``photo.height`` x ``photo.width``).
    """
    from captum.attr import GuidedBackprop, Saliency
    model = model.eval()
    x = Preprocess.of(preprocess).transform()(photo).unsqueeze(0)
    device = next(model.parameters()).device
    x = x.to(device)
    with torch.no_grad():
        prob = model(x).softmax(1)[0]
    target = int(prob.argmax()) if target is None else int(target)
    grad = Saliency(model).attribute(x.clone().requires_grad_(True), target=target, abs=True)
    guided_model = guided_model if guided_model is not None else guided_copy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum's "Setting backward hooks on ReLU" notice
        guided = GuidedBackprop(guided_model).attribute(x.clone().requires_grad_(True), target=target)
    size = (photo.width, photo.height)
    g = grad[0].detach().cpu().amax(0).numpy().astype(np.float32)
    gb = guided[0].detach().cpu().permute(1, 2, 0).numpy().astype(np.float32)
    gb_full = cv2.resize(gb, size, interpolation=cv2.INTER_LINEAR)
    return SaliencyResult(target, float(prob[target]), cv2.resize(g, size, interpolation=cv2.INTER_LINEAR),
                          np.abs(gb_full).max(2), guided_rgb=gb_full)


def normalise(saliency: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Scale a map to [0, 1] by its ``percentile`` (clipping the few brightest pixels)."""
    top = float(np.percentile(saliency, percentile))
    if top <= 0:
        top = float(saliency.max()) or 1.0
    return np.clip(saliency / top, 0.0, 1.0)


def overlay(photo: Image.Image, saliency: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Heat map (matplotlib ``inferno``) over a darkened photo: uint8 ``[H, W, 3]``."""
    from matplotlib import colormaps
    heat = normalise(saliency)
    colour = colormaps["inferno"](heat)[..., :3]
    base = np.asarray(photo, dtype=np.float32) / 255.0 * 0.55
    weight = alpha * heat[..., None] ** 0.5
    return (np.clip(base * (1 - weight) + colour * weight, 0, 1) * 255).astype(np.uint8)


def centre_share(saliency: np.ndarray) -> float:
    """Fraction of the map's mass in the central box (middle half of height and width,
    a quarter of the area): 0.25 for a uniform map."""
    h, w = saliency.shape
    total = float(saliency.sum()) or 1.0
    return float(saliency[h // 4: h - h // 4, w // 4: w - w // 4].sum()) / total


def plot_saliency(rows: list[tuple[Image.Image, SaliencyResult, str]], path: str | Path, width: int = 320) -> None:
    """One row per photo: photo, plain-gradient overlay, guided-backprop overlay, guided RGB.

    Args:
        rows: (photo, its maps, row title, e.g. the true and predicted landmark).
        width: pixels; photos wider than this are shown shrunk (maps shrunk alike).
    """
    from matplotlib.figure import Figure
    fig = Figure(figsize=(14, 3.4 * len(rows)))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for ax_row, (photo, result, title) in zip(axes, rows):
        scale = min(1.0, width / photo.width)
        size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
        small = photo.resize(size, Image.Resampling.LANCZOS)
        grad = cv2.resize(result.gradient, size, interpolation=cv2.INTER_AREA)
        guided = cv2.resize(result.guided, size, interpolation=cv2.INTER_AREA)
        rgb = cv2.resize(result.guided_rgb, size, interpolation=cv2.INTER_AREA)
        rgb = np.clip(0.5 + rgb / (2 * (np.percentile(np.abs(rgb), 99.5) or 1.0)), 0, 1)
        panels = [(np.asarray(small), title), (overlay(small, grad), "plain gradient"),
                  (overlay(small, guided), "guided backprop"), (rgb, "guided backprop (RGB)")]
        for ax, (img, name) in zip(ax_row, panels):
            ax.imshow(img)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def explain_files(checkpoint: str | Path, images: list[str | Path], out: str | Path, overwrite: bool = False) -> dict:
    """``landmark saliency``: write ``out/<stem>.saliency.png`` per photo and ``out/saliency.csv``
    (``image, predicted, confidence, centre_share_gradient, centre_share_guided``).

    Class names come from the run's data folder when the checkpoint sits in a run folder
    (``RUN_DIR/checkpoints/*.pt`` beside ``RUN_DIR/run.json``).  Unreadable photos are
    skipped and listed in ``out/rejects.csv``.

    Returns:
        dict with ``pictures`` (paths), ``csv``, ``rejects`` (count) and ``rejects_file``.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        FileExistsError: a picture to write exists, without ``overwrite``.
    """
    import pandas as pd
    from tqdm import tqdm

    from ..data import ImageError, Reject, load_image, write_rejects
    from ..models import load_model
    from ..runs import RunFolder
    from .analysis import class_names, label
    model, ckpt = load_model(checkpoint)
    out = Path(out)
    targets = [out / f"{Path(p).stem}.saliency.png" for p in images]
    if len(set(targets)) < len(targets):  # photo.jpg from two folders would overwrite each other
        targets = [out / f"{k:03d}_{Path(p).stem}.saliency.png" for k, p in enumerate(images)]
    if not overwrite:
        for t in targets + [out / "saliency.csv", out / "rejects.csv"]:
            if t.exists():
                raise FileExistsError(f"{t} exists; pass --overwrite or choose another --out")
    run = RunFolder.of_checkpoint(checkpoint)
    names = class_names(run.info().get("data")) if run.is_run() else {}
    out.mkdir(parents=True, exist_ok=True)
    guided = guided_copy(model)
    rows, rejects, written = [], [], []
    for path, target in tqdm(list(zip(images, targets)), desc="saliency", unit="image", dynamic_ncols=True):
        try:
            photo = load_image(path)
        except ImageError as err:
            rejects.append(Reject(Path(path).stem, str(path), str(err)))
            continue
        maps = saliency_maps(model, photo, ckpt["preprocess"], guided_model=guided)
        predicted = ckpt["classes"][maps.target]
        plot_saliency([(photo, maps, f"pred {label(predicted, names, 24)} {maps.confidence:.0%}")], target)
        written.append(str(target))
        rows.append((str(path), predicted, maps.confidence, centre_share(maps.gradient), centre_share(maps.guided)))
    pd.DataFrame(rows, columns=["image", "predicted", "confidence", "centre_share_gradient",
                                "centre_share_guided"]).to_csv(out / "saliency.csv", index=False)
    write_rejects(rejects, out / "rejects.csv")
    return {"pictures": written, "csv": str(out / "saliency.csv"), "rejects": len(rejects),
            "rejects_file": str(out / "rejects.csv")}
