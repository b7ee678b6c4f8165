"""Staged transfer learning: Adam + cross-entropy, per-stage lr, frozen depth and crops.

``train(config, data, run_dir)`` writes into ``run_dir``:

- ``config.yaml`` (resolved), ``run.json`` (data folder, or the list of them; versions), ``split.csv``,
  ``split_summary.json``, ``rejects.csv``;
- ``metrics.csv`` / ``metrics.json`` (one row per epoch: loss, accuracy and GAP on
  train and val, lr, frozen layers, crop probability, seconds), then ``on_epoch_end(run_dir)``
  when given (``landmark train`` passes
  :func:`landmark.reporting.charts.write_training_curves`, which draws ``curves.png``);
- ``checkpoints/last.pt`` (after every epoch, with optimizer state, for ``resume``) and
  ``checkpoints/best.pt`` (best val GAP), both written atomically;
- ``test_metrics.json``: the best checkpoint on the held-out split.

Every epoch starts from RNG seeds derived from ``(seed, epoch)``, so a resumed run
reproduces the uninterrupted one exactly (on the same machine and device).

Under ``torchrun`` the same code trains with DistributedDataParallel
(:mod:`landmark.training.distributed`): ``batch_size`` is per process, rank 0 writes.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..config import Stage, TrainConfig, dump_config
from ..data import ImageDataset, collate, read_train, write_rejects
from ..data.gldv2 import (DataSource, data_roots, data_source, folder_landmark_id, landmark_names, with_paths,
                          without_no_landmark_folders)
from ..data.transforms import crop_probability, eval_transform, find_scheduled_crop, train_transform
from ..evaluation.metrics import gap
from ..io import folder_lock
from ..models import LandmarkNet, create_backbone, create_model, load_model, save_checkpoint
from ..models.factory import STORED, backbone_layers, freeze_depth, list_heads, read_checkpoint
from ..models.margin import class_counts
from ..retrieval.reference import build_reference
from ..runs import RunExistsError, RunFolder  # noqa: F401  (RunExistsError: landmark.training's too)
from . import distributed as dist
from .prepare import Prepared, prepare_data
from .features import FeatureStore
from .probe import fit_probe, refits_embedding

log = logging.getLogger(__name__)

#: Called with the run folder after each epoch, once ``metrics.csv`` is written.
EpochHook = Callable[[Path], None]


class NonFiniteLossError(ValueError):
    """A training step gave a NaN or infinite loss; the run stops (nothing non-finite is saved)."""


def _refuse_inside(run_dir: Path, data: DataSource) -> None:
    """A run folder inside a data folder would be read back as data (a class of a tree)."""
    for data in data_roots(data):
        if run_dir.resolve().is_relative_to(data.resolve()):
            raise ValueError(f"--out {run_dir} is inside --data {data}; its files would be read as photos of a "
                             f"class: choose a run folder outside the data folder (nothing was changed)")


def train(config: TrainConfig, data: DataSource, run_dir: str | Path, device: str | None = None,
          on_epoch_end: EpochHook | None = None) -> Path:
    """Train a new run into ``run_dir`` (which must be empty or absent).

    ``data``: a GLDv2 folder or folder-per-class tree, or a list of them trained on as one
    set (:func:`landmark.data.gldv2.read_union`: landmark ids and names of every folder kept,
    photos read where they are; ids named differently in two folders are refused).

    ``on_epoch_end(run_dir)`` is called after each epoch once ``metrics.csv`` is written
    (rank 0 only); e.g. :func:`landmark.reporting.charts.write_training_curves` draws
    ``curves.png`` there.  Training itself draws nothing.

    Returns:
        path of the best checkpoint.

    The folder is locked (``run_dir/.lock``) while the run lasts: a second ``train`` or
    ``resume`` into it fails at once.

    Raises:
        RunExistsError: ``run_dir`` already holds files (use :func:`resume`, or another folder).
        landmark.io.LockedError: another process is using ``run_dir``.
        FileNotFoundError, ValueError: bad data folder, or ``run_dir`` inside it;
            WeightsError: weights unavailable.
        NonFiniteLossError: a training step gave a NaN or infinite loss.
    """
    run_dir = Path(run_dir)
    device = dist.setup(device)
    taken = RunFolder(run_dir).taken()
    dist.barrier()  # every rank has looked before rank 0 writes
    if taken:
        RunFolder(run_dir).refuse_taken()
    data = data_source(data)   # one Path, or a list of them
    _refuse_inside(run_dir, data)
    # fail fast, before anything is written: bad data folder, unknown backbone, unreachable weights
    _check_exclusions(read_train(data, clean=config.data.clean), config.data.exclude_landmarks, data)
    _check_model(config)
    if not dist.is_main():
        return _run(config, data, run_dir, device, checkpoint=None, on_epoch_end=on_epoch_end)
    run_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(run_dir):
        RunFolder(run_dir).refuse_taken()  # another process started a run here between our look and the lock
        dump_config(config, RunFolder(run_dir).config_file)
        RunFolder(run_dir).write_info(data, torch=torch.__version__, python=platform.python_version())
        return _run(config, data, run_dir, device, checkpoint=None, on_epoch_end=on_epoch_end)


def resume(run_dir: str | Path, device: str | None = None, on_epoch_end: EpochHook | None = None) -> Path:
    """Continue an interrupted run from ``run_dir/checkpoints/last.pt`` with its saved config.

    ``on_epoch_end``: as in :func:`train`.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.yaml``/``run.json`` (not a run folder).
        ValueError: ``checkpoints/last.pt`` is empty, truncated or not this run's checkpoint.
        landmark.io.LockedError: another process is using ``run_dir``.
    """
    run_dir = Path(run_dir)
    run = RunFolder(run_dir).require()
    config = run.config()
    data = run.data()
    last = run.last
    hint = "; delete it to restart the run from its first epoch"
    checkpoint = read_checkpoint(last, hint, ("history", "epoch", "best_val_gap", "optimizer")) \
        if last.is_file() else None
    if not dist.is_main():
        return _run(config, data, run_dir, dist.setup(device), checkpoint=checkpoint, on_epoch_end=on_epoch_end)
    with folder_lock(run_dir):
        return _run(config, data, run_dir, dist.setup(device), checkpoint=checkpoint, on_epoch_end=on_epoch_end)


def _run(config: TrainConfig, data: Path | list[Path], run_dir: Path, device: torch.device, checkpoint: dict | None,
         on_epoch_end: EpochHook | None = None) -> Path:
    """Prepare the data, build (or restore) the model, run every remaining epoch, then test,
    index and choose the thresholds.  Each step is one function below."""
    torch.manual_seed(config.seed)
    prepared = _prepare(data, config, run_dir)
    rejects = {r.id: r for r in prepared.rejects}
    _save_rejects(rejects, run_dir)
    model, state = _build(config, prepared, checkpoint, run_dir, device=device)
    plan = [(k, stage, e) for k, stage in enumerate(config.stages) for e in range(stage.epochs)]
    val_loader = _loader(prepared, "val", model.preprocess.transform(), config, shuffle=False)
    names = landmark_names(data, prepared.classes)  # stored in every checkpoint: answers carry names
    current, net, optimizer = None, model, None
    store = FeatureStore()   # frozen-backbone descriptors: probe, its validation, the final fit
    for epoch in range(state["epoch"], len(plan)):
        k, stage, e = plan[epoch]
        if k != current:
            net, optimizer = _enter_stage(model, stage, device, checkpoint if epoch == state["epoch"] and
                                          checkpoint and checkpoint.get("stage") == k else None)
            current = k
            if not stage.probe:
                store.clear()   # the backbone moves from now on: nothing stored would be reused
        row = _train_epoch(model, net, optimizer, prepared, config=config, stage=stage, e=e, epoch=epoch,
                           epochs=len(plan), device=device, rejects=rejects,
                           store=store, feature_dir=RunFolder(run_dir).features)
        if val_loader is not None:
            val = _probe_validation(model, val_loader, device, rejects, store=store) if stage.probe else \
                _epoch(model, val_loader, device, rejects, optimizer=None, desc=f"epoch {epoch + 1}/{len(plan)} val")
            row.update({f"val_{key}": v for key, v in val.items()})
        _save_epoch(model, optimizer, prepared, config, run_dir=run_dir, state=state, row=row, stage=k, names=names)
        if on_epoch_end is not None and dist.is_main():
            on_epoch_end(run_dir)
        _save_rejects(rejects, run_dir)
    dist.barrier()
    _test_best(run_dir, prepared, config, device, rejects=rejects)
    _save_rejects(rejects, run_dir)
    if dist.is_main() and config.data.reference_index:
        _reference(run_dir, prepared, config, device, rejects=rejects, store=store)
    log.info("backbone descriptors: %d photo views computed, %d reused", store.computed, store.reused)
    dist.barrier()
    return RunFolder(run_dir).best


def _prepare(data: Path | list[Path], config: TrainConfig, run_dir: Path) -> Prepared:
    """Rank 0 splits and caches; the others then reread split.csv and the cache.

    Raises:
        ValueError: no training image is left after class selection and rejects.
    """
    if dist.is_main():
        prepared = prepare_data(data, config.data, config.seed, run_dir)
    dist.barrier()
    if not dist.is_main():
        prepared = prepare_data(data, config.data, config.seed, run_dir)
    if len(prepared.frames["train"]) == 0:
        raise ValueError(f"no training images left in {' + '.join(map(str, data_roots(data)))} after class selection and rejects")
    if dist.is_main() and prepared.no_landmark is not None and len(prepared.no_landmark):
        _say_no_landmark(prepared.no_landmark, config)
    return prepared


def no_landmark_folders(photos: pd.DataFrame) -> str:
    """The class folders that hold ``photos`` (``id, landmark_id, path`` of a tree), as given on the
    command line (``TREE/no_landmark``; several joined by `` + ``).  Photos of a GLDv2 folder whose
    ``train.csv`` labels them so (``landmark_id`` ``no_landmark``: its ids are no folders) are named by
    that file: ``the rows of ROOT/train.csv labelled no_landmark``."""
    folders, roots = {}, {}
    for lid, path in zip(photos["landmark_id"].astype(str), photos["path"].astype(str)):
        tree = [p for p in Path(path).parents if folder_landmark_id(p.name) == lid]
        if tree:
            folders[str(tree[-1])] = None
            continue
        parent = Path(path).parent
        if parent not in roots:   # the GLDv2 folder (ROOT/train/a/b/c/id.jpg): the one with train.csv
            roots[parent] = next((p for p in parent.parents if (p / "train.csv").is_file()), None)
        where = roots[parent] / "train.csv" if roots[parent] is not None else "train.csv"
        folders[f"the rows of {where} labelled {lid}"] = None
    return " + ".join(folders)


def _say_no_landmark(photos: pd.DataFrame, config: TrainConfig) -> None:
    """One stderr line: the tree's folder of no landmark is no class; its photos choose the 'no
    landmark' threshold (as ``--nonlandmarks`` would), or are left out when ``--nonlandmarks`` is given."""
    import sys
    where, n = no_landmark_folders(photos), len(photos)
    if config.data.nonlandmarks is not None:
        line = (f"left out {where} ({n} photo{'s' * (n != 1)}): photos without a landmark are no class, and "
                f"--nonlandmarks {config.data.nonlandmarks} gives those that choose the 'no landmark' threshold")
    elif not config.data.reference_index:
        line = (f"left out {where} ({n} photo{'s' * (n != 1)}): photos without a landmark are no class "
                f"(data.reference_index is false, so no 'no landmark' threshold is chosen)")
    else:
        line = f"using {where} ({n} photo{'s' * (n != 1)}) as the photos without a landmark, as --nonlandmarks would"
    print(line, file=sys.stderr)


def _build(config: TrainConfig, prepared: Prepared, checkpoint: dict | None, run_dir: Path,
           device: torch.device) -> tuple[LandmarkNet, dict]:
    """The run's model from ``config.model`` (margins from the training class counts, the
    preprocessing of the last stage's crop), restored from ``checkpoint`` when resuming.

    Returns:
        (model on ``device``, state ``{"history", "epoch", "best"}`` to continue from).
    Raises:
        ValueError: ``checkpoint`` does not fit the config and classes.
    """
    counts = class_counts(prepared.frames["train"]["landmark_id"], prepared.classes)
    model = create_model(spec=config.model.spec, num_classes=len(prepared.classes),
                         weights="none" if checkpoint else config.model.weights, class_counts=counts)
    model.preprocess = model.spec.preprocess(resize=config.preprocess_resize)
    state = {"history": [], "epoch": 0, "best": -1.0}
    if checkpoint:
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            raise ValueError(f"{RunFolder(run_dir).last} does not fit this run's config and classes "
                             f"({str(err).splitlines()[0]}); delete it to restart the run") from None
        state = {"history": checkpoint["history"], "epoch": checkpoint["epoch"], "best": checkpoint["best_val_gap"]}
        log.info("resuming %s after epoch %d", run_dir, state["epoch"])
    return model.to(device), state


def _enter_stage(model: LandmarkNet, stage: Stage, device: torch.device, checkpoint: dict | None):
    """Freeze for ``stage``, wrap in DDP when distributed (after freezing: DDP registers the
    trainable parameters) and make its optimizer (none for a probe: it fits by L-BFGS),
    restored from ``checkpoint`` when resuming inside this stage.  Returns ``(net, optimizer)``."""
    model.freeze(-1 if stage.probe else stage.freeze, stage.freeze_bn)
    net = model
    if dist.world_size() > 1 and not stage.probe:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = None if stage.probe else _optimizer(model, stage)
    if optimizer is not None and checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    return net, optimizer


def _train_epoch(model: LandmarkNet, net, optimizer, prepared: Prepared, config: TrainConfig, stage: Stage,
                 e: int, epoch: int, epochs: int, device, rejects: dict, store: FeatureStore,
                 feature_dir: Path | None = None) -> dict:
    """One training epoch (``e`` of its stage, ``epoch`` of the run): a probe fit (its descriptors
    kept in ``store``, or for a streaming fit in ``feature_dir``; the fit used is the row's
    ``train_fit``), or a pass of augmented batches with the scheduled crop.  Returns the
    history row so far."""
    mean, std = model.preprocess.mean, model.preprocess.std
    transform = train_transform(config.augment, stage.crop, mean, std)
    p = crop_probability(stage.crop, e, stage.epochs)
    find_scheduled_crop(transform).p = p
    torch.manual_seed(config.seed * 100_003 + epoch)
    tic = time.perf_counter()
    if stage.probe:
        stats = fit_probe(model, _loader(prepared, "train", eval_transform(stage.crop.size, mean, std), config,
                                         shuffle=False), device, rejects, stage=stage, store=store,
                          feature_dir=feature_dir)
    else:
        loader = _loader(prepared, "train", transform, config, shuffle=True, seed=config.seed * 100_003 + epoch)
        lr_at = functools.partial(lr_factor, stage, e * len(loader), len(loader) * stage.epochs)
        stats = _epoch(model, loader, device, rejects, optimizer=optimizer, desc=f"epoch {epoch + 1}/{epochs} train",
                       net=net, lr_at=lr_at, label_smoothing=stage.label_smoothing)
    return {"epoch": epoch + 1, "stage": stage.name, "lr": 0.0 if stage.probe else stage.lr,
            "frozen_layers": model.frozen, "crop_p": round(p, 4), **{f"train_{k}": v for k, v in stats.items()},
            "seconds": round(time.perf_counter() - tic, 2)}


def _save_epoch(model: LandmarkNet, optimizer, prepared: Prepared, config: TrainConfig, run_dir: Path,
                state: dict, row: dict, stage: int, names: list[str]) -> None:
    """Append ``row`` to the history; write ``last.pt`` and, when validation GAP improved
    (no validation split: always), ``best.pt``; rewrite metrics.csv and metrics.json."""
    state["history"].append(row)
    score = row.get("val_gap", float(row["epoch"]))
    improved, state["best"], state["epoch"] = score > state["best"], max(state["best"], score), row["epoch"]
    if not dist.is_main():
        return
    extra = {"history": state["history"], "epoch": row["epoch"], "stage": stage, "best_val_gap": state["best"],
             "optimizer": optimizer.state_dict() if optimizer is not None else {},
             "config": config.model_dump(mode="json"), "names": names}
    if improved:
        save_checkpoint(RunFolder(run_dir).best, model, prepared.classes, **extra)
    save_checkpoint(RunFolder(run_dir).last, model, prepared.classes, **extra)
    _write_history(state["history"], run_dir)
    log.info("epoch %d: %s", row["epoch"], {k: v for k, v in row.items() if isinstance(v, float)})


def _reference(run_dir: Path, prepared: Prepared, config: TrainConfig, device, rejects: dict,
               store: FeatureStore) -> None:
    """Index the training photos, choose the 'no landmark' thresholds on validation, then
    (``final_fit``) refit the probe on every labelled photo; writes reference.json."""
    nonlandmarks, source = config.data.nonlandmarks, "--nonlandmarks"
    if nonlandmarks is None and prepared.no_landmark is not None and len(prepared.no_landmark):
        nonlandmarks = prepared.no_landmark
        source = no_landmark_folders(nonlandmarks)
    reference = build_reference(run_dir, nonlandmarks, device=str(device), workers=config.data.workers,
                                nonlandmarks_source=source)
    unread = reference.pop("rejects", [])   # a no_landmark/ (or --nonlandmarks) photo that cannot be read
    if unread:                              # was left out silently
        rejects.update({r.id: r for r in unread if r.id not in rejects})
        _save_rejects(rejects, run_dir)
    if config.data.final_fit:
        refit = _final_fit(run_dir, prepared, config, device, rejects=rejects,
                           thresholds=reference["reject_threshold"], store=store)
        refit.pop("rejects", None)   # no queries: thresholds kept
        # the thresholds were chosen on the validation photos before the refit indexed them too
        reference = {**refit, "validation_queries": reference["validation_queries"], "final_fit": True}
    reference = {**reference, "threshold_method": reference.get("threshold_method"),
                 "threshold_line": reference.get("threshold_line"),
                 "threshold_warning": reference.get("threshold_warning")}
    RunFolder(run_dir).reference.write_text(json.dumps(reference, indent=2))
    for line in (reference["threshold_line"], reference["threshold_warning"]):
        if line:
            log.info("%s", line)


def _check_model(config: TrainConfig) -> None:
    """Build the backbone (weights reachable?) and resolve the head and every stage's freeze
    depth, so that a wrong name fails before anything is written.

    Raises:
        WeightsError: the backbone or its weights cannot be had.
        ValueError: an unregistered head, or a freeze block that the backbone lacks.
    """
    if config.model.head != "auto" and config.model.head not in list_heads():
        raise ValueError(f"model.head {config.model.head!r} is not registered; choose one of "
                         f"{', '.join(list_heads())} or auto (nothing was written)")
    layers = backbone_layers(create_backbone(config.model.backbone, config.model.weights))
    for stage in config.stages:
        freeze_depth(layers, stage.freeze)


def _check_exclusions(frame: pd.DataFrame, excluded: list[str], data: Path | list[Path]) -> None:
    """Refuse, before anything is written, exclusions that name no landmark or leave none.

    Raises:
        ValueError: an excluded id is not in the data, or no landmark is left (also: every photo is in
            a folder of no landmark, ``no_landmark/``, which is never a class).
    """
    shown = " + ".join(str(d) for d in data_roots(data))
    landmarks, apart = without_no_landmark_folders(frame)
    if landmarks.empty and len(apart):
        apart = with_paths(apart, data)   # one GLDv2 folder's train.csv gives no paths
        raise ValueError(f"every photo of {shown} is in {no_landmark_folders(apart)}, photos without a landmark, "
                         f"which is never a class: give one folder per landmark (nothing was written)")
    present = set(landmarks["landmark_id"].astype(str))
    # a folder of no landmark excluded (how a run before 2026-12-08 kept it out of the classes): never a class now
    unknown = sorted(set(excluded) - present - set(apart["landmark_id"].astype(str)))
    if unknown:
        raise ValueError(f"data.exclude_landmarks names {', '.join(unknown[:5])}, not landmarks of {shown} "
                         f"(nothing was written)")
    if excluded and not present - set(excluded):
        raise ValueError(f"data.exclude_landmarks leaves no landmark of {shown} to train on (nothing was written)")


def _final_fit(run_dir: Path, prepared: Prepared, config: TrainConfig, device, rejects: dict,
               thresholds: dict, store: FeatureStore) -> dict:
    """Refit the probe head of ``best.pt`` on the training and validation photos together (the
    thresholds chosen on validation are kept; descriptors of ``store`` are reused when
    ``best.pt`` has the same backbone), then index both (with the vectors of the first index and
    of the validation queries when the refit left the embedding as it was); returns
    ``build_reference``'s summary."""
    model, ckpt = load_model(RunFolder(run_dir).best)
    model.to(device)
    stage = config.stages[-1]
    both = Prepared({"train": pd.concat([prepared.frames["train"], prepared.frames["val"]], ignore_index=True)},
                    prepared.classes)
    # rank 0 alone refits (the other ranks are done): a loader over every photo, not a rank's shard
    loader = _loader(both, "train", model.preprocess.transform(), config, shuffle=False, shard=False)
    stats = fit_probe(model, loader, device, rejects, stage=stage, store=store, feature_dir=RunFolder(run_dir).features)
    extra = {k: v for k, v in ckpt.items() if k not in STORED}
    save_checkpoint(RunFolder(run_dir).best, model, prepared.classes,
                    **{**extra, "final_fit": {"images": stats["images"], "train_loss": stats["loss"],
                                              "fit": stats["fit"]}})
    return build_reference(run_dir, device=str(device), workers=config.data.workers, splits=("train", "val"),
                           thresholds=thresholds, reuse=not refits_embedding(model))


def _save_rejects(rejects: dict, run_dir: Path) -> None:
    if dist.is_main():
        write_rejects(rejects, RunFolder(run_dir).rejects)


def _loader(prepared: Prepared, split: str, transform, config: TrainConfig, shuffle: bool, seed: int = 0,
            shard: bool = True):
    """A DataLoader over ``split``; under torchrun (``shard``) each rank gets its share of the photos."""
    frame = prepared.frames[split]
    if len(frame) == 0:
        return None
    dataset = ImageDataset(frame, transform, targets=prepared.targets(split))
    generator = torch.Generator().manual_seed(seed)
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if shard and dist.world_size() > 1 else None
    return DataLoader(dataset, batch_size=config.data.batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=config.data.workers, collate_fn=collate, generator=generator)


def _optimizer(model: LandmarkNet, stage: Stage) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: the head at ``stage.lr``, the backbone at
    ``stage.lr * stage.backbone_lr_scale``; each group keeps its ``base_lr`` for the schedule."""
    groups = []
    for params, lr in ((model.head.parameters(), stage.lr), (model.backbone.parameters(),
                                                              stage.lr * stage.backbone_lr_scale)):
        params = [p for p in params if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": lr, "base_lr": lr})
    return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay)


def lr_factor(stage: Stage, offset: int, total: int, step: int) -> float:
    """Multiplier of the base lr at step ``offset + step`` of a stage of ``total`` steps:
    linear warm-up over the first ``stage.warmup`` share, then constant or half-cosine
    to 0 (Loshchilov & Hutter, "SGDR", ICLR 2017; warm-up: Goyal et al. 2017)."""
    t, warm = offset + step, int(stage.warmup * total)
    if t < warm:
        return (t + 1) / (warm + 1)
    if stage.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (t - warm) / max(1, total - warm)))
    return 1.0


def _epoch(model: LandmarkNet, loader, device, rejects: dict, optimizer=None, desc: str = "", net=None,
           lr_at=None, label_smoothing: float = 0.0) -> dict:
    """One pass; trains when ``optimizer`` is given (step ``i`` at ``base_lr * lr_at(i)``).
    Returns loss, accuracy and GAP over every rank's images (``net``: the DDP wrapper
    of ``model`` when distributed)."""
    model.train(optimizer is not None)
    total_loss, seen, ids, labels, scores, truths, bad_all = 0.0, 0, [], [], [], [], []
    with torch.set_grad_enabled(optimizer is not None), \
            tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=not dist.is_main()) as bar:
        for step, (batch, bad) in enumerate(bar):
            bad_all += bad
            if batch is None:
                continue
            x, y = batch["image"].to(device), batch["target"].to(device)
            logits = (net or model)(x)   # margin heads: s*cos without margin (predictions); the loss adds it
            loss = F.cross_entropy(model.loss_logits(logits, y), y,
                                   label_smoothing=label_smoothing if optimizer is not None else 0.0)
            if optimizer is not None and not torch.isfinite(loss):
                lr = optimizer.param_groups[0]["lr"]
                raise NonFiniteLossError(f"{desc}: the training loss is {float(loss.detach())} after {seen} images "
                                         f"(lr {lr:g}); the run stops so that no non-finite weights are saved. "
                                         f"Lower the learning rate, or check the images")
            if optimizer is not None:
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * (lr_at(step) if lr_at else 1.0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            prob, pred = logits.detach().softmax(1).max(1)
            total_loss += float(loss.detach()) * len(y)
            seen += len(y)
            ids += batch["index"].tolist()
            labels += pred.cpu().tolist()
            scores += prob.cpu().tolist()
            truths += y.cpu().tolist()
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
    return _summary(dist.gather((total_loss, seen, ids, labels, scores, truths, bad_all)), rejects)


def _probe_validation(model: LandmarkNet, loader, device, rejects: dict, store: FeatureStore) -> dict:
    """What :func:`_epoch` gives on ``loader`` without an optimizer, from the pooled descriptors
    ``[N, C]`` of ``store`` (computed there for the photos it lacks): the logits ``[B, K]`` of
    each of the loader's batches are ``head.classify`` of its descriptors, as in the forward pass."""
    bad: dict = {}
    x, y, index = store.pooled(model, loader, device, bad, views=1, desc="val: features")
    rejects.update(bad)
    order, readable, size = list(iter(loader.sampler)), set(index.tolist()), loader.batch_size
    batches = [sum(i in readable for i in order[k:k + size]) for k in range(0, len(order), size)]
    total_loss, labels, scores = 0.0, [], []
    with torch.no_grad():
        for xb, yb in zip(x.split(batches), y.split(batches)):   # the same batches: the same float sums
            if len(yb):
                xb, yb = xb.to(device), yb.to(device)
                logits = model.head.classify(xb)
                total_loss += float(F.cross_entropy(model.loss_logits(logits, yb), yb)) * len(yb)
                prob, pred = logits.softmax(1).max(1)
                labels += pred.cpu().tolist()
                scores += prob.cpu().tolist()
    part = (total_loss, len(y), index.tolist(), labels, scores, y.tolist(), list(bad.values()))
    return _summary(dist.gather(part), rejects)


def _summary(parts: list[tuple], rejects: dict) -> dict:
    """Loss, accuracy and GAP over every rank's part ``(loss sum, images, ids, predicted labels,
    scores, true labels, rejects)``; the rejects join ``rejects``."""
    for part in parts:
        rejects.update({r.id: r for r in part[6]})
    seen = sum(part[1] for part in parts)
    if not seen:
        return {"loss": float("nan"), "accuracy": float("nan"), "gap": float("nan")}
    # DistributedSampler pads the last shard with repeated images: keep one row per image
    frame = pd.DataFrame([row for part in parts for row in zip(*part[2:6])],
                         columns=["id", "landmark_id", "score", "truth"]).drop_duplicates("id")
    frame = frame.astype({"id": str, "landmark_id": str, "truth": str})
    solution = {i: {t} for i, t in zip(frame["id"], frame["truth"])}
    return {"loss": sum(part[0] for part in parts) / seen, "gap": gap(frame, solution), "images": int(len(frame)),
            "accuracy": float((frame["landmark_id"] == frame["truth"]).mean())}


def _write_history(history: list[dict], run_dir: Path) -> None:
    frame = pd.DataFrame(history)
    frame.to_csv(RunFolder(run_dir).metrics_file, index=False)
    RunFolder(run_dir).metrics_json.write_text(json.dumps(history, indent=2))


def _test_best(run_dir: Path, prepared: Prepared, config: TrainConfig, device, rejects: dict) -> None:
    model, best = load_model(RunFolder(run_dir).best)
    model.to(device)
    loader = _loader(prepared, "test", model.preprocess.transform(), config, shuffle=False)
    stats = _epoch(model, loader, device, rejects, optimizer=None, desc="held-out test") if loader else {}
    stats["images"] = int(len(prepared.frames["test"]))
    stats["best_epoch"] = int(best["epoch"])
    if dist.is_main():
        RunFolder(run_dir).test_metrics.write_text(json.dumps(stats, indent=2))
