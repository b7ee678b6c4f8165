"""Sanity check of the pretrained backbone: its ImageNet top-k labels for a few photos.

Before fine-tuning, the backbone with its original 1000-class ImageNet classifier
(Deng et al., CVPR 2009; ILSVRC-2012 classes) should already call a landmark photo
something architectural ("palace", "mosque", "castle", "triumphal arch"...).  The
weights are the offline ones of :func:`landmark.models.weights.load_offline_imagenet`;
the class names come from timm (``timm.data.ImageNetInfo``, shipped with timm, offline).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from PIL import Image


def imagenet_classifier(name: str = "tf_efficientnet_lite0") -> tuple[torch.nn.Module, object]:
    """The timm model ``name`` with its ImageNet classifier and offline weights, and its
    eval transform (timm's own: resize, centre crop ``crop_pct``, normalise).

    Raises:
        landmark.models.WeightsError: no offline weights for ``name`` (see
            :data:`landmark.models.OFFLINE_IMAGENET`).
    """
    import timm
    from timm.data import create_transform, resolve_data_config

    from ..models.weights import load_offline_imagenet
    model = timm.create_model(name, pretrained=False)
    load_offline_imagenet(model, name, classifier=True)
    transform = create_transform(**resolve_data_config({}, model=model))
    return model.eval(), transform


@torch.no_grad()
def imagenet_topk(photos: list[Image.Image], k: int = 3, name: str = "tf_efficientnet_lite0") -> list[list[tuple[str, float]]]:
    """ImageNet top-``k`` (class name, softmax probability in [0, 1]) per RGB photo, best first.

    Names are the first synonym of timm's ImageNet-1k descriptions (``"palace"``).
    """
    from timm.data import ImageNetInfo
    model, transform = imagenet_classifier(name)
    info = ImageNetInfo()
    out = []
    for photo in photos:
        prob = model(transform(photo).unsqueeze(0)).softmax(1)[0]
        top = prob.topk(k)
        out.append([(info.index_to_description(int(i)).split(",")[0], float(p))
                    for p, i in zip(top.values, top.indices)])
    return out


def topk_frame(ids: list[str], titles: list[str], topk: list[list[tuple[str, float]]]) -> pd.DataFrame:
    """Table ``id, landmark, rank, imagenet_class, probability`` (one row per id and rank)."""
    return pd.DataFrame([(i, t, r + 1, n, p) for i, t, preds in zip(ids, titles, topk) for r, (n, p) in enumerate(preds)],
                        columns=["id", "landmark", "rank", "imagenet_class", "probability"])


def plot_topk(photos: list[Image.Image], titles: list[str], topk: list[list[tuple[str, float]]],
              path: str | Path, columns: int = 3) -> None:
    """Photos with their ImageNet top-k labels and probabilities written underneath (PNG)."""
    from matplotlib.figure import Figure
    rows = -(-len(photos) // columns)
    fig = Figure(figsize=(4.2 * columns, 4.0 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, photo, title, preds in zip(axes.flat, photos, titles, topk):
        ax.imshow(photo)
        ax.set_title(title, fontsize=9)
        ax.text(0.0, -0.03, "\n".join(f"{n}: {p:.0%}" for n, p in preds), transform=ax.transAxes,
                va="top", fontsize=9, family="monospace")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
