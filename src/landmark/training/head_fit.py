"""Fitting the probe's linear head at any size: L-BFGS in memory, or a streaming fit from disk.

The probe (:mod:`landmark.training.probe`) fits the head on the frozen pooled descriptors of
every training photo and its mirror.  Full-batch L-BFGS holds the descriptors ``[R, C]`` and,
per evaluation, the logits ``[R, K]`` of all ``R`` rows (2 per photo) over ``K`` classes: 1.2k
rows x 13 classes for landmarks13, but ``2 * 1.58M x 81k`` floats (about 1 TB) for GLDv2-clean.
:func:`choose_fit` therefore picks the fit by the memory it would need
(:func:`lbfgs_bytes` against the stage's ``probe_memory_gb``):

* ``lbfgs``: the in-memory fit, unchanged (every run that fits the budget, landmarks13 included);
* ``stream``: the descriptors are written once to a :class:`FeatureFile` on disk (float16
  memory map with a sidecar of ids, targets and views and a completion marker), the head is
  initialised from the class means (:func:`prototype_init`: the nearest-class-mean classifier
  of a shared isotropic Gaussian model, the "imprinted weights" of Qi, Brown & Lowe, CVPR 2018),
  then refined by a few epochs of AdamW on minibatches read back in chunks
  (:func:`fit_stream`).  Above ``stream_classes`` classes each minibatch's softmax runs over
  its own classes plus a random sample of others (sampled softmax, Jean et al., ACL 2015),
  so no step holds photos x all classes.

Classes with a single photo are fitted like any other: their mean is that photo (and its
mirror).  Both fits minimise the same objective, mean cross-entropy (with label smoothing)
plus ``weight_decay * ||W||^2``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..io import NpyRows, clear_temps, commit, temp_path

log = logging.getLogger(__name__)

FITS = ("lbfgs", "stream")
#: rows per chunk read back from a :class:`FeatureFile` (float16: 160 MB at C = 1280)
CHUNK_ROWS = 65536


def lbfgs_bytes(rows: int, classes: int, dim: int, history: int = 20) -> int:
    """Bytes a full-batch L-BFGS fit holds: descriptors float32 ``[rows, dim]``, three
    ``[rows, classes]`` float32 buffers (logits, softmax, their gradient) and the L-BFGS
    history (``2 * history + 4`` copies of the ``(dim + 1) * classes`` parameters)."""
    params = (dim + 1) * classes
    return 4 * (rows * dim + 3 * rows * classes + (2 * history + 4) * params)


def choose_fit(rows: int, classes: int, dim: int, budget_gb: float, fit: str = "auto") -> str:
    """``lbfgs`` when :func:`lbfgs_bytes` is within ``budget_gb`` GiB (or ``fit`` says so),
    else ``stream``.

    Raises:
        ValueError: ``fit`` is not ``auto``, ``lbfgs`` or ``stream``.
    """
    if fit not in ("auto", *FITS):
        raise ValueError(f"probe_fit {fit!r}: choose auto, lbfgs or stream")
    if fit != "auto":
        return fit
    return "lbfgs" if lbfgs_bytes(rows, classes, dim) <= budget_gb * 2**30 else "stream"


# --- descriptors on disk ----------------------------------------------------------------------

@dataclass
class FeatureFile:
    """Descriptors ``[R, C]`` float16 on disk (``NAME.npy``, memory-mapped) with the id, target
    (int64 class index) and view (0: photo, 1: mirror) of each row (``NAME.rows.npz``) and a
    completion marker ``NAME.json`` written last; open with :meth:`open`, write with
    :class:`FeatureWriter`."""

    path: Path
    x: np.ndarray
    targets: np.ndarray
    views: np.ndarray
    ids: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.x)

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @classmethod
    def open(cls, path: str | Path) -> "FeatureFile":
        """Read a finished file (the array memory-mapped, nothing loaded).

        Raises:
            FileNotFoundError: no such file.
            ValueError: no completion marker (an interrupted write) or the parts disagree.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        marker = path.with_suffix(".json")
        if not marker.is_file():
            raise ValueError(f"{path} is unfinished (no {marker.name}: an interrupted write); delete it and "
                             f"compute the features again")
        meta = json.loads(marker.read_text())
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path.with_suffix(".rows.npz"), allow_pickle=False) as rows:
            targets, views, ids = rows["targets"], rows["views"], rows["ids"]
        if not len(x) == len(targets) == len(views) == len(ids) == meta.get("rows"):
            raise ValueError(f"{path}: {len(x)} rows, {len(targets)} targets, marker says {meta.get('rows')}; "
                             f"delete it and compute the features again")
        return cls(path, x, targets, views, ids=ids, meta=meta)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float32 ``[n, C]``, read from the file (not through the memory
        map, so that streamed chunks do not stay mapped in the process's resident memory)."""
        stop = min(stop, len(self))
        if stop <= start:
            return np.empty((0, self.dim), dtype=np.float32)
        offset = self.x.offset + start * self.dim * self.x.dtype.itemsize
        with open(self.path, "rb") as f:
            block = np.fromfile(f, dtype=self.x.dtype, count=(stop - start) * self.dim, offset=offset)
        return block.reshape(stop - start, self.dim).astype(np.float32)

    def chunks(self, rows: np.ndarray | None = None, chunk: int = CHUNK_ROWS):
        """Yield ``(row indices int64 [<=chunk], float32 [<=chunk, C])`` over ``rows`` (default:
        all, in file order), read ``chunk`` rows at a time."""
        if rows is None:
            for start in range(0, len(self), chunk):
                yield np.arange(start, min(start + chunk, len(self))), self.read(start, start + chunk)
            return
        rows = np.sort(np.asarray(rows))
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            yield part, np.asarray(self.x[part], dtype=np.float32)


class FeatureWriter:
    """Append descriptor rows to a new :class:`FeatureFile` (under temporary names; only
    :meth:`finish` puts the array, its rows sidecar and then the marker in place, so an
    interrupted write leaves either the old file or no readable one).

    Args:
        path: ``NAME.npy``.
        capacity: at most this many rows.
        dim: descriptor width ``C``.
        meta: extra JSON for the marker (e.g. the backbone fingerprint).
    """

    def __init__(self, path: str | Path, capacity: int, dim: int, meta: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.files = [self.path, self.path.with_suffix(".rows.npz")]
        clear_temps(self.files)
        self.tmp = temp_path(self.path)
        # positional writes, not a memory map (which would keep every written page resident: 8 GB at GLDv2-clean)
        self.capacity, self.dim = max(capacity, 1), dim
        self.file = NpyRows(self.tmp, (self.capacity, dim), np.float16)
        self.targets, self.views, self.ids = [], [], []
        self.n, self.meta = 0, dict(meta or {})

    def add(self, x: np.ndarray | torch.Tensor, targets, views, ids) -> None:
        """Append rows ``x`` ``[B, C]`` with their int targets ``[B]``, views ``[B]`` and str ids ``[B]``."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if self.n + len(x) > self.capacity:
            raise ValueError(f"{self.path}: more than the {self.capacity} rows announced")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.path}: rows of shape {x.shape}, expected [B, {self.dim}]")
        self.file.write(self.n, x)
        self.targets.append(np.asarray(targets, dtype=np.int64))
        self.views.append(np.asarray(views, dtype=np.int8))
        self.ids.append(np.asarray(ids, dtype=str))
        self.n += len(x)

    def finish(self) -> FeatureFile:
        """Flush, trim to the rows written, commit (marker last) and open the result."""
        self.file.close()
        dim = self.dim
        if self.n < self._capacity():   # rejected photos: fewer rows than announced
            full = np.load(self.tmp, mmap_mode="r", allow_pickle=False)
            trimmed = temp_path(self.path.with_name(self.path.name + ".trim"))
            out = NpyRows(trimmed, (self.n, dim), np.float16)
            for start in range(0, self.n, CHUNK_ROWS):
                out.write(start, full[start:min(start + CHUNK_ROWS, self.n)])
            out.close()
            del full
            trimmed.replace(self.tmp)
        cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.empty(0, dtype=dtype))
        rows_tmp = temp_path(self.files[1])
        with open(rows_tmp, "wb") as f:
            np.savez(f, targets=cat(self.targets, np.int64), views=cat(self.views, np.int8),
                     ids=cat(self.ids, str))
        commit([(self.tmp, self.files[0]), (rows_tmp, self.files[1])], self.path.with_suffix(".json"),
               {**self.meta, "rows": self.n, "dim": dim, "dtype": "float16"}, members=self.files)
        return FeatureFile.open(self.path)

    def _capacity(self) -> int:
        return int(np.load(self.tmp, mmap_mode="r", allow_pickle=False).shape[0])


# --- the fits -----------------------------------------------------------------------------------

def class_means(features: FeatureFile, classes: int, chunk: int = CHUNK_ROWS, distributed: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One pass over ``features``: class means float32 ``[K, C]``, rows per class int64 ``[K]``
    and the mean within-class squared distance per dimension (``sigma^2`` of a shared
    isotropic Gaussian).  Under ``torch.distributed`` each rank reads its slice and the sums are
    all-reduced (``distributed=False``: this process reads every row alone)."""
    dim = features.dim
    sums = torch.zeros(classes, dim, dtype=torch.float64)
    counts = torch.zeros(classes, dtype=torch.int64)
    sq = torch.zeros(classes, dtype=torch.float64)
    rank, world = _rank_world(distributed)
    share = -(-len(features) // world)
    lo, hi = rank * share, min(len(features), (rank + 1) * share)   # this rank's slice of the rows
    for first in range(lo, hi, chunk):
        x = features.read(first, min(first + chunk, hi))
        y = torch.from_numpy(features.targets[first:first + len(x)])
        xt = torch.from_numpy(x).double()
        sums.index_add_(0, y, xt)
        sq.index_add_(0, y, (xt * xt).sum(1))
        counts += torch.bincount(y, minlength=classes)
    if world > 1:
        for t in (sums, sq, counts):
            torch.distributed.all_reduce(t)
    n = counts.clamp(min=1).double()
    means = sums / n[:, None]
    within = float((sq - n * (means * means).sum(1)).clamp(min=0).sum() / max(1, int(counts.sum())) / dim)
    return means.float(), counts, max(within, 1e-8)


@torch.no_grad()
def prototype_init(fc: nn.Linear, means: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight_decay: float,
                   label_smoothing: float) -> float:
    """Set ``fc`` to a scaled nearest-class-mean classifier: ``W_k = s (mu_k - mean_j mu_j)`` and
    ``b_k = -s (||mu_k||^2 - mean_j ||mu_j||^2) / 2`` (the posterior of Gaussian classes with a
    shared isotropic covariance; "imprinted weights", Qi, Brown & Lowe, CVPR 2018), the scale
    ``s`` chosen on the sample rows ``x`` ``[S, C]`` (targets ``y``) among 40 values from 1e-4
    to 1e2 to minimise the fit's objective (cross-entropy with ``label_smoothing`` plus
    ``weight_decay * ||W||^2``).  Returns ``s``."""
    centred = means - means.mean(0)
    sq = (means * means).sum(1)
    bias = -(sq - sq.mean()) / 2
    z = x @ centred.T + bias          # logits at s = 1: [S, K]
    norm = float((centred * centred).sum())
    scales = np.geomspace(1e-4, 1e2, 40)
    losses = [float(F.cross_entropy(s * z, y, label_smoothing=label_smoothing)) + weight_decay * s * s * norm
              for s in scales]
    s = float(scales[int(np.argmin(losses))])
    fc.weight.copy_(s * centred)
    if fc.bias is not None:
        fc.bias.copy_(s * bias)
    return s


def fit_stream(head: nn.Module, features: FeatureFile, classes: int, *, epochs: int, batch: int, lr: float,
               weight_decay: float, label_smoothing: float, sampled_above: int, loss_logits=None,
               min_steps: int = 0, seed: int = 0, chunk: int = CHUNK_ROWS, max_steps: int = 0,
               distributed: bool = True) -> dict:
    """Fit ``head`` on the rows of ``features`` without holding them: class-mean initialisation
    (plain linear heads, :func:`prototype_init`), then ``epochs`` passes of AdamW minibatches
    (more when that is fewer than ``min_steps`` minibatches: small data needs more passes).

    Chunks of ``chunk`` rows are read in random order and shuffled inside; each minibatch
    ``[batch, C]`` gives logits ``[batch, K]``, or, when ``K > sampled_above`` and the head is
    a plain linear layer, logits over the minibatch's classes plus random others up to
    ``sampled_above`` columns (sampled softmax).  The L2 penalty ``weight_decay * ||W||^2``
    is added as in the L-BFGS fit (on the rows used, for a sampled step).

    Under ``torch.distributed`` (``torchrun``, gloo or NCCL; every rank opens the same file) each
    rank reads only its share of every chunk (rank ``r`` of ``W``: the ``r``-th of ``W``
    contiguous slices), computes the summed loss of the minibatch rows that fall in its slice,
    and the gradients are summed over ranks (``all_reduce``) before one identical optimizer step
    on every rank.  Every rank draws the same chunk order, shuffles and sampled columns (same
    ``seed``), so the minibatches and the steps are those of one process: the head equals the
    single-process head up to the order of floating-point sums (the class means are all-reduced
    as well).  Rank 0's head is broadcast at the end.

    Args:
        head: the model's head (``classify(pooled [B, C]) -> [B, K]``); a GeM head without
            neck (``head.fc`` on the pooled descriptor) is initialised from class means.
        features: the training rows (targets in ``0..classes-1``).
        loss_logits: ``(logits, target) -> logits`` the loss sees (margin heads); None: identity.
        max_steps: stop after this many minibatches (0: all; the learning-rate schedule still
            spans every epoch): for measuring the time per step on a fraction of a large fit.
        distributed: False: fit in this process alone even where a process group exists (the
            final refit that rank 0 runs after the other ranks are done).

    Returns:
        ``{"fit": "stream", "epochs", "init": "prototype"|"none", "seconds", "init_seconds" (class
        means and scale), "cpu_seconds", "init_cpu_seconds" (this process, all threads), "loss",
        "steps", "steps_planned", "ranks"}`` (loss: mean training loss of
        the last epoch run).
    """
    tic, cpu = time.perf_counter(), time.process_time()
    fc = getattr(head, "fc", None)
    plain = isinstance(fc, nn.Linear) and not hasattr(head, "neck") and loss_logits is None \
        and type(head).__name__ == "GeMHead"
    init = "none"
    rank, world = _rank_world(distributed)
    if plain:
        means, _, _ = class_means(features, classes, chunk, distributed=distributed)
        sample = np.sort(np.random.default_rng(seed).choice(len(features), size=min(512, len(features)),
                                                            replace=False))
        prototype_init(fc, means, torch.from_numpy(np.asarray(features.x[sample], dtype=np.float32)),
                       torch.from_numpy(features.targets[sample]), weight_decay=weight_decay,
                       label_smoothing=label_smoothing)
        init = "prototype"
        del means
    init_seconds, init_cpu = time.perf_counter() - tic, time.process_time() - cpu
    params = [p for name, p in head.named_parameters() if not name.startswith("pool.")]
    for p in params:
        p.requires_grad_(True)
    weights = [p for p in params if p.ndim > 1]
    sampled = plain and classes > sampled_above
    optimizer = None if sampled else torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    lazy = _LazyAdam(fc, classes, sampled_above, weight_decay, label_smoothing=label_smoothing,
                     world=world) if sampled else None
    rng = np.random.default_rng(seed)
    head.train()
    for m in head.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    starts = np.arange(0, len(features), chunk)
    per_epoch = sum(math.ceil(min(chunk, len(features) - s) / batch) for s in starts)
    if epochs:
        epochs = max(epochs, math.ceil(min_steps / per_epoch))
    total = per_epoch * epochs
    step, loss_sum, seen = 0, 0.0, 0
    done = False
    for epoch in range(epochs):
        loss_sum, seen = 0.0, 0
        for start in rng.permutation(starts):
            n = min(chunk, len(features) - int(start))
            lo, hi = start + (n * rank) // world, start + (n * (rank + 1)) // world   # this rank's slice
            x = torch.from_numpy(features.read(lo, hi))
            y = torch.from_numpy(features.targets[start:start + n])
            order = torch.from_numpy(rng.permutation(n))
            for b in range(0, n, batch):
                pick = order[b:b + batch]
                mine = pick[(pick >= lo - start) & (pick < hi - start)]
                xb, yb, total_rows = x[mine - (lo - start)], y[pick], len(pick)
                rate = lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))   # cosine decay
                if sampled:
                    loss = lazy.step(xb, yb, rate, rng, y_mine=y[mine])
                else:
                    for group in optimizer.param_groups:
                        group["lr"] = rate
                    optimizer.zero_grad(set_to_none=True)
                    ymine = y[mine]
                    logits = head.classify(xb)
                    if loss_logits is not None:
                        logits = loss_logits(logits, ymine)
                    loss = F.cross_entropy(logits, ymine, label_smoothing=label_smoothing, reduction="sum") \
                        / total_rows + weight_decay * sum((w * w).sum() for w in weights) / world
                    loss.backward()
                    loss = _sum_ranks(params, loss, world)
                    optimizer.step()
                loss_sum += float(loss.detach()) * total_rows
                seen += total_rows
                step += 1
                if max_steps and step >= max_steps:
                    done = True
                    break
            if done:
                break
        log.info("probe (stream): epoch %d/%d, loss %.4f", epoch + 1, epochs, loss_sum / max(seen, 1))
        if done:
            break
    if world > 1:
        for p in params:
            torch.distributed.broadcast(p.data, src=0)
    for p in params:
        p.requires_grad_(False)
    head.eval()
    return {"fit": "stream", "epochs": epochs, "init": init, "sampled_softmax": bool(sampled), "steps": step,
            "steps_planned": total, "ranks": world, "init_seconds": init_seconds, "seconds": time.perf_counter() - tic,
            "init_cpu_seconds": init_cpu, "cpu_seconds": time.process_time() - cpu, "loss": loss_sum / max(seen, 1) if epochs else float("nan")}


class _LazyAdam:
    """Adam on the rows of ``fc`` a sampled-softmax step uses (the others keep their weights
    and moments: a dense Adam step would touch all ``K x C`` weights every minibatch)."""

    def __init__(self, fc: nn.Linear, classes: int, width: int, weight_decay: float, label_smoothing: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, world: int = 1):
        self.fc, self.classes, self.width, self.world = fc, classes, width, world
        self.wd, self.smoothing, self.betas, self.eps = weight_decay, label_smoothing, betas, eps
        self.m = torch.zeros(classes, fc.in_features + 1)
        self.v = torch.zeros(classes, fc.in_features + 1)
        self.t = torch.zeros(classes)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float, rng: np.random.Generator,
             y_mine: torch.Tensor | None = None) -> torch.Tensor:
        """One step on the minibatch with targets ``y`` ``[B]`` (every rank's), of which this
        rank holds the rows ``x`` ``[b, C]`` with targets ``y_mine`` ``[b]`` (default: all of ``y``);
        returns the minibatch's loss (summed over ranks)."""
        world = self.world
        y_mine = y if y_mine is None else y_mine
        cols, _ = _sampled_columns(y, self.classes, self.width, rng)
        target = torch.searchsorted(cols[:len(torch.unique(y))], y_mine)   # the minibatch's classes come first, sorted
        with torch.no_grad():
            wb = torch.cat([self.fc.weight[cols], self.fc.bias[cols, None]], 1)
        wb.requires_grad_(True)
        logits = F.linear(x, wb[:, :-1], wb[:, -1])
        loss = F.cross_entropy(logits, target, label_smoothing=self.smoothing, reduction="sum") / len(y) \
            + self.wd * (wb[:, :-1] ** 2).sum() * (len(cols) / self.classes) / world
        loss.backward()
        loss = _sum_ranks([wb], loss, world)
        with torch.no_grad():
            g, (b1, b2) = wb.grad, self.betas
            m = self.m[cols].mul_(b1).add_(g, alpha=1 - b1)
            v = self.v[cols].mul_(b2).addcmul_(g, g, value=1 - b2)
            t = self.t[cols] + 1
            update = (m / (1 - b1 ** t)[:, None]) / ((v / (1 - b2 ** t)[:, None]).sqrt() + self.eps)
            new = wb - lr * update
            self.m[cols], self.v[cols], self.t[cols] = m, v, t
            self.fc.weight[cols] = new[:, :-1]
            self.fc.bias[cols] = new[:, -1]
        return loss.detach()


def _rank_world(distributed: bool = True) -> tuple[int, int]:
    """(rank, world size) under ``torch.distributed``, (0, 1) otherwise or when not ``distributed``."""
    dist = torch.distributed
    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sum_ranks(params, loss: torch.Tensor, world: int) -> torch.Tensor:
    """Sum the gradients of ``params`` and ``loss`` over ranks (in place; nothing when ``world`` is 1)."""
    if world == 1:
        return loss
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)])
    torch.distributed.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()
    return flat[-1]


def _sampled_columns(y: torch.Tensor, classes: int, width: int, rng: np.random.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch's classes plus random other classes, ``width`` columns in all (at least
    the minibatch's), and the targets as positions among them."""
    present, local = torch.unique(y, return_inverse=True)
    extra = max(0, width - len(present))
    if extra:
        others = torch.from_numpy(rng.choice(classes, size=min(classes, extra + len(present)), replace=False))
        others = others[~torch.isin(others, present)][:extra]
        present = torch.cat([present, others])
    return present, local


@torch.no_grad()
def top_classes(head: nn.Module, x: np.ndarray | torch.Tensor, top: int = 1, chunk: int = 1024
                ) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` classes of each row by softmax probability, ``chunk`` rows at a time (the
    logits ``[chunk, K]`` are the only photos x classes array).

    Args:
        head: ``classify(pooled [B, C]) -> logits [B, K]``.
        x: descriptors ``[N, C]`` (float16/32, a memory map is fine).

    Returns:
        (class indices int64 ``[N, top]``, probabilities float32 ``[N, top]``).
    """
    head.eval()
    idx = np.empty((len(x), top), dtype=np.int64)
    prob = np.empty((len(x), top), dtype=np.float32)
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        xb = xb.float() if isinstance(xb, torch.Tensor) else torch.from_numpy(np.asarray(xb, dtype=np.float32))
        p, i = head.classify(xb).softmax(1).topk(top, dim=1)
        idx[start:start + len(xb)], prob[start:start + len(xb)] = i.numpy(), p.numpy()
    return idx, prob


def small_class_note(targets: np.ndarray | pd.Series, classes: int) -> str:
    """One line on the classes with 1 or 2 training photos (trained on like the others)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=classes)
    return (f"{int((counts == 1).sum())} classes with 1 training photo and {int((counts == 2).sum())} with 2 "
            f"are trained on (their class mean is their photos and mirrors)")
