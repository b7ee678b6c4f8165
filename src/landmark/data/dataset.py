"""A map-style image dataset that reports unreadable files instead of crashing."""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from .gldv2 import image_path
from .images import ImageError, load_image, load_uint8


@dataclass(frozen=True)
class Reject:
    """An image that could not be used: its id, file and the reason."""

    id: str
    path: str
    reason: str


class ImageDataset(Dataset):
    """Images of a frame (``id`` and ``path``, or ids in the GLDv2 layout under ``root``).

    ``__getitem__`` returns ``{"image": transform(img), "target": int64, "index": int}``, or a
    :class:`Reject` when the file cannot be decoded, or when the row carries a ``reason``
    (a bad id: :func:`landmark.data.gldv2.mark_bad_ids`; nothing is read then);
    :func:`collate` keeps the rejects beside the batch so the caller can count and list them.

    Args:
        frame: rows with ``id`` and either ``path`` or a GLDv2 ``root``.
        targets: class index per row (int64) or None (queries).
        draft: pixels; passed to :func:`load_image` for faster JPEG decoding.
        decode: ``load_image`` (a PIL image for ``transform``) or
            :func:`~landmark.data.images.load_uint8` (a uint8 tensor ``[3, H, W]``; the same
            pixels, decoded faster, for transforms that take tensors), with the same rejects.
    """

    def __init__(self, frame: pd.DataFrame, transform, targets=None, root: str | Path | None = None,
                 split: str = "train", draft: int | None = None, decode=load_image):
        self.ids = frame["id"].astype(str).to_numpy()
        self.paths = frame["path"].astype(str).to_numpy() if "path" in frame.columns else None
        self.reasons = frame["reason"].astype(str).to_numpy() if "reason" in frame.columns else None
        self.root, self.split, self.draft = (Path(root) if root else None), split, draft
        self.targets = None if targets is None else torch.tensor(np.asarray(targets), dtype=torch.int64)
        self.transform, self.decode = transform, decode

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, index: int) -> str:
        if self.paths is not None:
            return self.paths[index]
        return str(image_path(self.root, self.ids[index], self.split))

    def __getitem__(self, index: int):
        if self.reasons is not None and self.reasons[index]:
            return Reject(self.ids[index], self.paths[index] if self.paths is not None else "", self.reasons[index])
        path = self.path(index)
        try:
            img = self.decode(path, draft=self.draft)
        except ImageError as err:
            return Reject(self.ids[index], path, str(err))
        target = self.targets[index] if self.targets is not None else torch.tensor(-1)
        return {"image": self.transform(img), "target": target, "index": index}


def write_rejects(rejects, path: str | Path) -> None:
    """``id,path,reason`` of each :class:`Reject` (a dict of them or a list) to a CSV
    (header only when there are none)."""
    values = rejects.values() if isinstance(rejects, dict) else rejects
    pd.DataFrame([(r.id, r.path, r.reason) for r in values], columns=["id", "path", "reason"]).to_csv(path, index=False)


def collate(items: list) -> tuple[dict | None, list[Reject]]:
    """Batch the good samples, pass rejects through: ``(batch or None, rejects)``."""
    rejects = [x for x in items if isinstance(x, Reject)]
    good = [x for x in items if not isinstance(x, Reject)]
    return (default_collate(good) if good else None), rejects


def image_loader(frame: pd.DataFrame, transform, *, batch_size: int, workers: int, draft: int | None = None,
                 targets=None, threads: bool = False) -> DataLoader | ThreadedBatches:
    """Batches ``(batch or None, rejects)`` (:func:`collate`) of :class:`ImageDataset` over
    ``frame`` (rows with ``id`` and ``path``), in frame order: a DataLoader with ``workers``
    processes, or with ``threads`` a :class:`ThreadedBatches` with ``workers`` threads.
    Photos are decoded by :func:`~landmark.data.images.load_uint8`: ``transform`` gets a
    uint8 tensor ``[3, H, W]`` (:meth:`landmark.data.Preprocess.decode_transform` takes it)."""
    dataset = ImageDataset(frame, transform, targets=targets, draft=draft, decode=load_uint8)
    if threads:
        return ThreadedBatches(dataset, batch_size, workers)
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)


class ThreadedBatches:
    """Batches ``(batch or None, rejects)`` (:func:`collate`) of a dataset, decoded by
    ``threads`` threads of this process while the caller works on the previous batch.

    For inference on the CPU, where the network and the decoding share the same cores:
    Pillow's JPEG decoder and torch's resize release the GIL, so threads decode in parallel
    without worker processes' start-up, pickling and shared memory, and a batch is decoded
    by all cores at once rather than by one process competing with the network's threads
    (ONNX Runtime int8 end to end at batch 32 on 2 cores: 145 against 110 photos/s with one
    worker process; docs/runtime.md).  Memory: two batches of decoded images.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, threads: int):
        self.dataset, self.batch_size, self.threads = dataset, max(1, batch_size), max(1, threads)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[dict | None, list[Reject]]]:
        n, size = len(self.dataset), self.batch_size
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="decode")
        pending: deque = deque()
        try:
            for start in range(0, n, size):
                pending.append([pool.submit(self.dataset.__getitem__, i) for i in range(start, min(start + size, n))])
                if len(pending) > 1:    # one batch decoding ahead of the one handed out
                    yield collate([f.result() for f in pending.popleft()])
            while pending:
                yield collate([f.result() for f in pending.popleft()])
        finally:
            # the caller stopped early, a decode raised or Ctrl-C: drop every decode not started,
            # those of the batch being collected too (it has left ``pending``), and wait only for
            # the ones running
            pool.shutdown(wait=True, cancel_futures=True)


def good_batches(loader, rejects: list | dict, desc: str, **progress) -> Iterator[dict]:
    """The decoded batches of a :func:`collate` loader, with a tqdm progress bar (``progress``:
    more tqdm options); each unreadable image is added to ``rejects`` (appended to a list, or
    stored by id in a dict), so none disappears silently."""
    with tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True, **progress) as bar:
        for batch, bad in bar:   # the bar is closed however the caller stops (a line printed next is its own)
            if isinstance(rejects, dict):
                rejects.update({r.id: r for r in bad})
            else:
                rejects.extend(bad)
            if batch is not None:
                yield batch
