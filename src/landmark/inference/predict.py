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
from ..models import LandmarkNet
from .runtime import Runtime, as_runtime, decode_workers, load_runtime

# Crop order taken by tta=K (first K): centre, corners, then the mirrors of these.
# Indices into torchvision TenCrop's output (tl, tr, bl, br, centre, mirrored ...).
TTA_ORDER = [4, 0, 1, 2, 3, 9, 5, 6, 7, 8]
# JPEGs are decoded (Pillow draft, DCT scaling) to at least this many times the side the
# network input is resized from: 2, as the training cache (cache.py: draft=2*width).
DRAFT_FACTOR = 2


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
def predict_images(model: LandmarkNet | Runtime, classes: list[str], preprocess: dict, queries: pd.DataFrame,
                   tta: int = 1, batch_size: int = 32, workers: int | None = None,
                   device: str | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """Predict one landmark per query image.

    JPEGs are decoded at reduced size where they are at least twice as large as needed
    (Pillow ``draft`` to >= 2x the resize side, as the training cache does; see
    :data:`DRAFT_FACTOR`), then resized with antialiasing.

    Args:
        model: a ``LandmarkNet`` (run eagerly on ``device``) or a runtime
            (:mod:`landmark.inference.runtime`, e.g. ONNX Runtime).
        queries: rows with ``id`` and ``path``.
        preprocess: ``size``, ``resize``, ``mean``, ``std`` (from the checkpoint).
        tta: crops per image, 1 (plain resize to ``size``) to 10 (see :data:`TTA_ORDER`).
        workers: decoding processes; None: :func:`~landmark.inference.runtime.decode_workers`.

    Returns:
        (frame ``id, landmark_id, score`` in query order, with empty landmark_id and NaN
        score for rejected images; the rejects).

    Raises:
        ValueError: ``tta`` outside 1..10.
    """
    if not 1 <= tta <= 10:
        raise ValueError(f"tta={tta}: choose 1 (no voting) to 10 crops")
    runtime = as_runtime(model, classes, preprocess, device)
    workers = decode_workers() if workers is None else workers
    size, resize, mean, std = preprocess["size"], preprocess["resize"], preprocess["mean"], preprocess["std"]
    transform = eval_transform(size, mean, std) if tta == 1 else tta_transform(resize, size, mean, std)
    draft = DRAFT_FACTOR * (size if tta == 1 else resize)
    loader = DataLoader(ImageDataset(queries, transform, draft=draft), batch_size=max(1, batch_size // tta),
                        num_workers=workers, collate_fn=collate)
    labels, scores, rejects = {}, {}, []
    order = torch.tensor(TTA_ORDER[:tta])
    for batch, bad in tqdm(loader, desc=f"predict (tta={tta})", unit="batch", dynamic_ncols=True):
        rejects += bad
        if batch is None:
            continue
        x = batch["image"]
        if tta == 1:
            prob, label = runtime(x)[0].softmax(1).max(1)
        else:
            crops = x[:, order]  # [B, K, 3, S, S]
            probs = runtime(crops.flatten(0, 1))[0].softmax(1).view(len(x), tta, -1)
            label, prob = vote(probs)
        for i, lab, p in zip(batch["index"].tolist(), label.tolist(), prob.tolist()):
            labels[i], scores[i] = classes[lab], p
    out = pd.DataFrame({"id": queries["id"].astype(str).to_numpy(),
                        "landmark_id": [labels.get(i, "") for i in range(len(queries))],
                        "score": [scores.get(i, float("nan")) for i in range(len(queries))]})
    return out, rejects


def predict(checkpoint: str | Path, images: str | Path, tta: int = 1, batch_size: int = 32,
            workers: int | None = None, device: str | None = None, runtime: str = "torch",
            threads: int | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """Load a checkpoint and predict the images of a folder or CSV (see :func:`predict_images`).

    Args:
        checkpoint: ``.pt`` from ``landmark train`` or ``.onnx`` from ``landmark export``.
        runtime: ``torch``, ``onnx`` or ``auto`` (:func:`landmark.inference.runtime.load_runtime`).
        threads: ONNX Runtime intra-op threads (default: all CPUs).

    Raises:
        FileNotFoundError: no such checkpoint or image source.
        ValueError: not a checkpoint, no images, a bad ``tta``, device or runtime.
    """
    queries = read_queries(images)
    if queries.empty:
        raise ValueError(f"{images} holds no image files")
    engine = load_runtime(checkpoint, runtime, device, threads)
    return predict_images(engine, engine.classes, engine.preprocess, queries, tta, batch_size, workers, device)
