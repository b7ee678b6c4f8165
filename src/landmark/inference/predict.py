"""Predict landmarks for query images, with optional test-time voting over crops.

Voting rule (``tta=K`` crops per image): each crop votes for its arg-max landmark;
the landmark with most votes wins (a tie goes to the larger summed probability);
its confidence is the sum of its probability over the crops that voted for it,
divided by K.  So ten unanimous crops at 0.9 give 0.9, while six crops at 0.9 with
four dissenting give 0.54: disagreement between crops lowers the confidence, which
is what GAP's ranking rewards.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import ImageDataset, Reject, collate, read_queries
from ..data.transforms import eval_transform, tta_transform
from ..devices import resolve_device
from ..models import LandmarkNet, load_model

# Crop order taken by tta=K (first K): centre, corners, then the mirrors of these.
# Indices into torchvision TenCrop's output (tl, tr, bl, br, centre, mirrored ...).
TTA_ORDER = [4, 0, 1, 2, 3, 9, 5, 6, 7, 8]


def vote(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Majority vote over crops.

    Args:
        probs: float tensor ``[N, K, C]`` of softmax probabilities (K crops per image).
    Returns:
        (labels int64 ``[N]``, confidences float ``[N]`` in [0, 1]) by the module's rule.
    """
    n, k, c = probs.shape
    votes = torch.nn.functional.one_hot(probs.argmax(2), c).to(probs.dtype)  # [N, K, C]
    count, support = votes.sum(1), (probs * votes).sum(1)  # [N, C]
    labels = (count + support / (k + 1)).argmax(1)
    return labels, support.gather(1, labels[:, None]).squeeze(1) / k


@torch.no_grad()
def predict_images(model: LandmarkNet, classes: list[str], preprocess: dict, queries: pd.DataFrame,
                   tta: int = 1, batch_size: int = 32, workers: int = 2,
                   device: str | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """Predict one landmark per query image.

    Args:
        queries: rows with ``id`` and ``path``.
        preprocess: ``size``, ``resize``, ``mean``, ``std`` (from the checkpoint).
        tta: crops per image, 1 (plain resize to ``size``) to 10 (see :data:`TTA_ORDER`).

    Returns:
        (frame ``id, landmark_id, score`` in query order, with empty landmark_id and NaN
        score for rejected images; the rejects).

    Raises:
        ValueError: ``tta`` outside 1..10.
    """
    if not 1 <= tta <= 10:
        raise ValueError(f"tta={tta}: choose 1 (no voting) to 10 crops")
    device = resolve_device(device)
    model = model.to(device).eval()
    size, resize, mean, std = preprocess["size"], preprocess["resize"], preprocess["mean"], preprocess["std"]
    transform = eval_transform(size, mean, std) if tta == 1 else tta_transform(resize, size, mean, std)
    loader = DataLoader(ImageDataset(queries, transform), batch_size=max(1, batch_size // tta),
                        num_workers=workers, collate_fn=collate)
    labels, scores, rejects = {}, {}, []
    order = torch.tensor(TTA_ORDER[:tta])
    for batch, bad in tqdm(loader, desc=f"predict (tta={tta})", unit="batch", dynamic_ncols=True):
        rejects += bad
        if batch is None:
            continue
        x = batch["image"].to(device)
        if tta == 1:
            prob, label = model(x).softmax(1).max(1)
        else:
            crops = x[:, order.to(device)]  # [B, K, 3, S, S]
            probs = model(crops.flatten(0, 1)).softmax(1).view(len(x), tta, -1)
            label, prob = vote(probs)
        for i, lab, p in zip(batch["index"].tolist(), label.tolist(), prob.tolist()):
            labels[i], scores[i] = classes[lab], p
    out = pd.DataFrame({"id": queries["id"].astype(str).to_numpy(),
                        "landmark_id": [labels.get(i, "") for i in range(len(queries))],
                        "score": [scores.get(i, float("nan")) for i in range(len(queries))]})
    return out, rejects


def predict(checkpoint: str | Path, images: str | Path, tta: int = 1, batch_size: int = 32, workers: int = 2,
            device: str | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """Load a checkpoint and predict the images of a folder or CSV (see :func:`predict_images`).

    Raises:
        FileNotFoundError: no such checkpoint or image source.
        ValueError: not a checkpoint, no images, a bad ``tta`` or device.
    """
    queries = read_queries(images)
    if queries.empty:
        raise ValueError(f"{images} holds no image files")
    model, ckpt = load_model(checkpoint)
    return predict_images(model, ckpt["classes"], ckpt["preprocess"], queries, tta, batch_size, workers, device)
