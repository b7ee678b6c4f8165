"""Linear probe: fit the head to convergence on frozen backbone features.

The first stage of the LP-FT recipe (Kumar et al., "Fine-Tuning can Distort Pretrained
Features and Underperform Out-of-Distribution", ICLR 2022): a head fitted by a few
Adam steps is far from converged when the backbone starts to move, and the large
gradients of a poor head damage the pretrained features.  Here the pooled features of
every training photo and its mirror are computed once (no augmentation; kept in the run's
:class:`~landmark.training.features.FeatureStore` for the validation pass and the final
fit), and every head parameter except the pooling is fitted by full-batch L-BFGS on
cross-entropy (with the angular margin for ArcFace heads) plus an L2 penalty on the weights.

Memory: ``2 * N * C`` float32 features (``N`` photos, ``C`` backbone channels) and ``2 * N * K``
logits (``K`` classes), e.g. 7.5 MB for 720 photos of landmarks13 (C = 1280, K = 13), but about
1 TB for the 1.6M photos x 81k classes of GLDv2-clean.  :func:`fit_probe` therefore fits by
L-BFGS only within the stage's ``probe_memory_gb`` and otherwise streams descriptors from
disk (:mod:`landmark.training.head_fit`); the choice is logged and returned as ``fit``.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from ..config import Stage
from ..data import Reject
from ..data.dataset import good_batches
from ..evaluation.metrics import gap
from ..models import LandmarkNet
from ..models.heads import Head
from . import distributed as dist
from .features import FeatureStore, fingerprint
from .head_fit import (CHUNK_ROWS, FeatureFile, FeatureWriter, choose_fit, fit_stream, lbfgs_bytes,
                       small_class_note, top_classes)

log = logging.getLogger(__name__)


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
              store: FeatureStore | None = None, feature_dir: str | Path | None = None) -> dict:
    """Fit ``model.head`` (all but its pooling) on frozen features of ``loader``, by full-batch
    L-BFGS when it fits ``stage.probe_memory_gb``, else by a streaming fit from descriptors
    written to disk (:mod:`landmark.training.head_fit`; ``stage.probe_fit`` forces either).

    Args:
        loader: the training images without augmentation (batches of ``image``, ``target``);
            under torchrun, a DistributedSampler's shards are gathered so that every rank fits
            the same head on every photo: L-BFGS on the gathered descriptors, or, for the
            streaming fit, each rank writes its shard's descriptors, rank 0 joins them into one
            file in one process's row order, and the ranks fit on their slices of it
            (:func:`~landmark.training.head_fit.fit_stream`).
        stage: ``probe_fit``, ``probe_memory_gb``, ``probe_iters`` (L-BFGS iterations),
            ``weight_decay`` (L2 on weights), ``label_smoothing``, ``stream_*``.
        store: the run's :class:`~landmark.training.features.FeatureStore`: descriptors of
            photos it holds for this backbone and transform are not computed again (None:
            every descriptor is computed; the fit is the same).
        feature_dir: where the streaming fit keeps its descriptor file (``probe-<key>.npy``,
            reused while the backbone, transform and photos are the same); None: a temporary folder.

    Returns:
        ``loss``, ``accuracy``, ``gap`` of the fitted head on the un-mirrored features,
        ``images`` and ``fit`` (``lbfgs`` or ``stream``).
    """
    fc = getattr(model.head, "fc", None)
    classes = fc.out_features if isinstance(fc, nn.Linear) else int(np.max(loader.dataset.targets)) + 1
    photos = len(loader.sampler) if loader.sampler is not None else len(loader.dataset)
    fit = choose_fit(2 * photos, classes, model.backbone.num_features, stage.probe_memory_gb, fit=stage.probe_fit)
    log.info("probe: %s fit (%d photos x 2 views, %d classes: L-BFGS would hold %.2f GB, budget %.2f GB)", fit,
             photos, classes, lbfgs_bytes(2 * photos, classes, model.backbone.num_features) / 2**30,
             stage.probe_memory_gb)
    if fit == "stream":
        sharded = isinstance(loader.sampler, DistributedSampler)
        if sharded and feature_dir is None:
            raise ValueError("the streaming probe fit under torchrun needs a feature_dir that every rank sees")
        with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
            return _fit_streaming(model, loader, device, rejects, stage=stage, folder=Path(feature_dir or tmp),
                                  classes=classes, sharded=sharded)
    store = store if store is not None else FeatureStore(max_bytes=0)
    x, y, rows = store.pooled(model, loader, device, rejects, views=2, desc="probe: features")
    if isinstance(loader.sampler, DistributedSampler):   # torchrun: every rank fits one head on every photo
        x, y = _all_ranks(x, y, rows)
    x, y = x.to(device), y.to(device)
    fit_lbfgs(model.head, x, y, stage, loss_logits=_margin(model))
    with torch.no_grad():
        n = len(y) // 2
        logits = model.head.classify(x[:n])
        loss = float(F.cross_entropy(logits, y[:n]))
        prob, pred = logits.softmax(1).max(1)
    return {**_scores(pred.cpu().numpy(), prob.cpu().numpy(), y[:n].cpu().numpy()), "loss": loss, "fit": "lbfgs"}


def _margin(model: LandmarkNet):
    """``model.loss_logits`` for angular-margin heads, None for heads whose loss sees the logits."""
    return model.loss_logits if type(model.head).margin_logits is not Head.margin_logits else None


def fit_lbfgs(head: nn.Module, x: torch.Tensor, y: torch.Tensor, stage: Stage, loss_logits=None) -> None:
    """Fit ``head`` (all but its pooling) by full-batch L-BFGS (``stage.probe_iters``
    iterations, strong Wolfe line search) on descriptors ``x`` float32 ``[R, C]`` with targets
    ``y`` int64 ``[R]``: cross-entropy (``stage.label_smoothing``; the angular margin of
    ArcFace heads: ``loss_logits(logits, y)``) plus ``stage.weight_decay * ||W||^2`` (Nocedal &
    Wright, Numerical Optimization, ch. 7).  Holds the logits ``[R, K]``: see
    :func:`~landmark.training.head_fit.lbfgs_bytes`."""
    params = [p for name, p in head.named_parameters() if not name.startswith("pool.")]
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
        loss = F.cross_entropy(loss_logits(logits, y) if loss_logits else logits, y,
                               label_smoothing=stage.label_smoothing)
        loss = loss + stage.weight_decay * sum((w * w).sum() for w in weights)
        loss.backward()
        return loss

    optimizer.step(closure)
    head.eval()


def fit_streamed(head: nn.Module, features: FeatureFile, classes: int, stage: Stage, loss_logits=None,
                 seed: int = 0, max_steps: int = 0, distributed: bool = True) -> dict:
    """Fit ``head`` on a descriptor file by :func:`~landmark.training.head_fit.fit_stream`
    with the stage's ``stream_*`` settings, ``weight_decay`` and ``label_smoothing`` (``max_steps``:
    stop early, for timing a fraction of a large fit; ``distributed``: the ranks of a process
    group, where there is one, fit together, each on its slice; False: this process alone);
    returns its summary."""
    return fit_stream(head, features, classes, epochs=stage.stream_epochs, batch=stage.stream_batch,
                      lr=stage.stream_lr, weight_decay=stage.weight_decay, label_smoothing=stage.label_smoothing,
                      sampled_above=stage.stream_classes, loss_logits=loss_logits, min_steps=stage.stream_min_steps,
                      seed=seed, max_steps=max_steps, distributed=distributed)


@torch.no_grad()
def write_pooled(model: LandmarkNet, loader, device, rejects: dict, path: Path, views: int = 2) -> FeatureFile:
    """The pooled descriptors of ``loader``'s photos (and mirrors) written to a
    :class:`~landmark.training.head_fit.FeatureFile` batch by batch, or the finished file at
    ``path`` when it was written for the same backbone, transform and photos (its marker's ``key``).
    Unreadable photos join ``rejects``."""
    dataset = loader.dataset
    key = _pooled_key(model, dataset, views)
    path = Path(path)
    done = _finished(path, key, rejects)
    if done is not None:
        return done
    model.eval()
    writer = FeatureWriter(path, views * len(loader.sampler), model.backbone.num_features, {"key": key})
    bad: dict = {}
    for batch in good_batches(loader, bad, "probe: features", leave=False):
        ids = dataset.ids[batch["index"].numpy()]
        x = batch["image"].to(device)
        for v in range(views):
            out = model.head.pool(model.forward_features(x.flip(3) if v else x)).float().cpu()
            writer.add(out, batch["target"].numpy(), np.full(len(ids), v), ids)
    rejects.update(bad)
    writer.meta["rejects"] = [{"id": r.id, "path": r.path, "reason": r.reason} for r in bad.values()]
    return writer.finish()


def _pooled_key(model: LandmarkNet, dataset, views: int) -> str:
    """What a descriptor file was written for: the backbone, the transform, the views and the photos."""
    return hashlib.sha1(f"{fingerprint(model)}|{dataset.transform!r}|{views}|".encode()
                        + "\n".join(map(str, dataset.ids)).encode()).hexdigest()


def _finished(path: Path, key: str, rejects: dict) -> FeatureFile | None:
    """The finished descriptor file at ``path`` when it was written for ``key`` (its rejects join
    ``rejects``), else None."""
    try:
        done = FeatureFile.open(path)
    except (FileNotFoundError, ValueError):
        return None
    if done.meta.get("key") != key:
        return None
    rejects.update({r["id"]: Reject(r["id"], r["path"], r["reason"]) for r in done.meta.get("rejects", [])})
    return done


def write_pooled_sharded(model: LandmarkNet, loader, device, rejects: dict, path: Path, views: int = 2
                         ) -> FeatureFile:
    """:func:`write_pooled` under torchrun: each rank writes the descriptors of its
    DistributedSampler shard to ``NAME.rankR-of-W.npy``, then rank 0 joins the shards into the
    file at ``path`` (each photo once: the sampler pads shards with repeats) in the row order one
    process writes (loader batches in dataset order, each batch's photos then their mirrors), so
    the fit that follows is one process's fit; every rank then opens it.  A finished file for the
    same backbone, transform and photos is reused, as by :func:`write_pooled`; the shard files
    are removed once the joined file is complete.  Every rank's rejects join ``rejects``."""
    dataset, path = loader.dataset, Path(path)
    key = _pooled_key(model, dataset, views)
    if dist.broadcast(_finished(path, key, {}) is not None):
        return _finished(path, key, rejects)
    rank, world = dist.rank_world()
    part = path.with_name(f"{path.stem}.rank{rank}-of-{world}.npy")
    write_pooled(model, loader, device, rejects, path=part, views=views)
    for shard in dist.gather(dict(rejects)):
        rejects.update(shard)
    dist.barrier()
    if dist.is_main():
        _join_shards([path.with_name(f"{path.stem}.rank{r}-of-{world}.npy") for r in range(world)], path,
                     dataset, batch=loader.batch_size, meta={"key": key, "rejects": [
                         {"id": r.id, "path": r.path, "reason": r.reason} for r in rejects.values()]})
    dist.barrier()
    return FeatureFile.open(path)


def _join_shards(parts: list[Path], path: Path, dataset, batch: int, meta: dict) -> FeatureFile:
    """One :class:`FeatureFile` at ``path`` of the rows of ``parts`` (each (photo, view) once), ordered
    by (dataset position // ``batch``, view, position), read and written a chunk at a time; the
    parts' files are removed after."""
    files = [FeatureFile.open(p) for p in parts]
    positions = pd.Index([str(i) for i in dataset.ids])
    pos = np.concatenate([positions.get_indexer([str(i) for i in f.ids]) for f in files])
    view = np.concatenate([f.views.astype(np.int64) for f in files])
    source = np.concatenate([np.full(len(f), k) for k, f in enumerate(files)])
    row = np.concatenate([np.arange(len(f)) for f in files])
    _, first = np.unique(pos * 2 + view, return_index=True)   # each (photo, view) once: shards pad with repeats
    pos, view, source, row = pos[first], view[first], source[first], row[first]
    order = np.lexsort((pos, view, pos // max(batch, 1)))
    pos, view, source, row = pos[order], view[order], source[order], row[order]
    writer = FeatureWriter(path, len(pos), files[0].dim, meta)
    for start in range(0, len(pos), CHUNK_ROWS):
        block = slice(start, start + CHUNK_ROWS)
        x = np.empty((len(pos[block]), files[0].dim), dtype=np.float32)
        targets, ids = np.empty(len(x), dtype=np.int64), np.empty(len(x), dtype=object)
        for k, f in enumerate(files):
            mine = np.flatnonzero(source[block] == k)
            if len(mine):
                rows = row[block][mine]
                x[mine] = np.asarray(f.x[rows], dtype=np.float32)
                targets[mine], ids[mine] = f.targets[rows], f.ids[rows]
        writer.add(x, targets, view[block], ids.astype(str))
    joined = writer.finish()
    for p in parts:
        for member in (p, p.with_suffix(".rows.npz"), p.with_suffix(".json")):
            member.unlink(missing_ok=True)
    return joined


def _fit_streaming(model: LandmarkNet, loader, device, rejects: dict, stage: Stage, folder: Path,
                   classes: int, sharded: bool = False) -> dict:
    if sharded:
        features = write_pooled_sharded(model, loader, device, rejects, path=folder / "probe.npy")
    else:
        features = write_pooled(model, loader, device, rejects, path=folder / "probe.npy")
    model.head.to("cpu")
    stats = fit_streamed(model.head, features, classes, stage, loss_logits=_margin(model), distributed=sharded)
    model.head.to(device)
    log.info("probe: %s", small_class_note(features.targets[features.views == 0], classes))
    preds, probs, ys = [], [], []
    for rows, x in features.chunks(rows=np.flatnonzero(features.views == 0)):   # the photos, not their mirrors
        pred, prob = top_classes(model.head.cpu(), x)
        preds.append(pred[:, 0])
        probs.append(prob[:, 0].astype(np.float64))
        ys.append(features.targets[rows])
    model.head.to(device)
    cat = (lambda parts: np.concatenate(parts) if parts else np.empty(0))
    return {**_scores(cat(preds), cat(probs), cat(ys)), "loss": stats["loss"], "fit": "stream"}


def _scores(pred: np.ndarray, prob: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy and GAP of top-1 answers ``pred`` with confidences ``prob`` against ``y`` (all ``[n]``)."""
    n = len(y)
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "landmark_id": np.asarray(pred).astype(str),
                          "score": np.asarray(prob, dtype=np.float64)})
    solution = {str(i): {str(t)} for i, t in enumerate(np.asarray(y).tolist())}
    return {"accuracy": float((np.asarray(pred) == np.asarray(y)).mean()) if n else float("nan"),
            "gap": gap(frame, solution) if n else float("nan"), "images": int(n)}
