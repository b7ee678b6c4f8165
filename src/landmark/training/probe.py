"""Linear probe: fit the head to convergence on frozen backbone features.

The first stage of the LP-FT recipe (Kumar et al., "Fine-Tuning can Distort Pretrained
Features and Underperform Out-of-Distribution", ICLR 2022): a head fitted by a few
Adam steps is far from converged when the backbone starts to move, and the large
gradients of a poor head damage the pretrained features.  Here the pooled features of
every training photo and its mirror are computed once (no augmentation; kept in the run's
:class:`~landmark.training.features.FeatureStore` for the validation pass and the final
fit), and every head parameter except the pooling is fitted by full-batch L-BFGS on
cross-entropy (with the angular margin for ArcFace heads) plus an L2 penalty on the weights.

Memory: ``2 * N * C`` float32 features (``N`` photos, ``C`` backbone channels), e.g. 7.4 MB
for 720 photos of EfficientNet-Lite0 (C = 1280) and 16 GB for the 1.6M photos of GLDv2's
clean train set; at that scale use an Adam head stage instead (``probe: false``).
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from ..config import Stage
from ..evaluation.metrics import gap
from ..models import LandmarkNet
from . import distributed as dist
from .features import FeatureStore


def _fitted(model: LandmarkNet) -> list[nn.Parameter]:
    """The head parameters a probe fits: all but the pooling's."""
    return [p for name, p in model.head.named_parameters() if not name.startswith("pool.")]


def refits_embedding(model: LandmarkNet) -> bool:
    """True when a probe fit changes the retrieval embedding, i.e. ``head.classify(pooled,
    pre_logits=True)`` depends on a fitted parameter (a projection neck, an FC head's hidden
    layers); False for a GeM head without neck, whose embedding is the pooled descriptor."""
    params = _fitted(model)
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            pooled = torch.zeros(2, model.backbone.num_features, device=params[0].device if params else "cpu")
            return model.head.classify(pooled, pre_logits=True).requires_grad
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _all_ranks(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's descriptors of its shard (``x`` ``[2n, C]``: photos then mirrors, ``y`` ``[2n]``,
    dataset ``rows`` ``[n]``) joined into those of all photos, each once (DistributedSampler pads
    shards with repeats) and in dataset order, so every rank fits the same head on the same data."""
    pairs, targets = {}, {}
    for px, py, pr in dist.gather((x.cpu(), y.cpu(), rows.cpu())):
        n = len(pr)
        for k, row in enumerate(pr.tolist()):
            pairs.setdefault(row, (px[k], px[n + k]))
            targets.setdefault(row, py[k])
    order = sorted(pairs)
    x = torch.stack([pairs[r][0] for r in order] + [pairs[r][1] for r in order])
    return x, torch.stack([targets[r] for r in order] * 2)


def fit_probe(model: LandmarkNet, loader, device, rejects: dict, stage: Stage,
              store: FeatureStore | None = None) -> dict:
    """Fit ``model.head`` (all but its pooling) by L-BFGS on frozen features of ``loader``.

    Args:
        loader: the training images without augmentation (batches of ``image``, ``target``);
            under torchrun, a DistributedSampler's shards are gathered so that every rank fits
            the same head on every photo.
        stage: ``probe_iters`` (L-BFGS iterations) and ``weight_decay`` (L2 on weights).
        store: the run's :class:`~landmark.training.features.FeatureStore`: descriptors of
            photos it holds for this backbone and transform are not computed again (None:
            every descriptor is computed; the fit is the same).

    Returns:
        ``loss``, ``accuracy``, ``gap`` of the fitted head on the un-mirrored features,
        and ``images``.
    """
    store = store if store is not None else FeatureStore(max_bytes=0)
    x, y, rows = store.pooled(model, loader, device, rejects, views=2, desc="probe: features")
    if isinstance(loader.sampler, DistributedSampler):   # torchrun: every rank fits one head on every photo
        x, y = _all_ranks(x, y, rows)
    x, y = x.to(device), y.to(device)
    head = model.head
    params = _fitted(model)
    weights = [p for p in params if p.ndim > 1]
    for p in params:
        p.requires_grad_(True)
    head.train()
    for m in head.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=stage.probe_iters, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        logits = head.classify(x)
        loss = F.cross_entropy(model.loss_logits(logits, y), y, label_smoothing=stage.label_smoothing)
        loss = loss + stage.weight_decay * sum((w * w).sum() for w in weights)
        loss.backward()
        return loss

    optimizer.step(closure)
    head.eval()
    with torch.no_grad():
        n = len(y) // 2
        logits = head.classify(x[:n])
        loss = float(F.cross_entropy(logits, y[:n]))
        prob, pred = logits.softmax(1).max(1)
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "landmark_id": pred.cpu().numpy().astype(str),
                          "score": prob.cpu().numpy()})
    solution = {str(i): {str(t)} for i, t in enumerate(y[:n].cpu().tolist())}
    return {"loss": loss, "accuracy": float((pred == y[:n]).float().mean()) if n else float("nan"),
            "gap": gap(frame, solution) if n else float("nan"), "images": int(n)}
