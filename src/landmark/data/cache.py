"""Preprocessing cache: every image decoded once, shrunk to a fixed width, saved as JPEG.

As in the original work (images resized to width 256, keeping aspect) this makes
each epoch cheap and finds unreadable files once, before training starts.  The
cache is resumable: files already cached are not decoded again.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .dataset import Reject
from .gldv2 import image_path, with_paths
from .images import ImageError, load_image, resize_to_width


def build_cache(frame: pd.DataFrame, cache_dir: str | Path, width: int = 256, root: str | Path | None = None,
                split: str = "train", workers: int = 4) -> tuple[pd.DataFrame, list[Reject]]:
    """Cache the images of ``frame`` at ``cache_dir/a/b/c/id.jpg``, width <= ``width`` pixels.

    Args:
        frame: rows with ``id`` and ``path`` (or ids in the GLDv2 layout under ``root``).
        width: pixels; wider images are shrunk with LANCZOS keeping aspect, never enlarged.
        workers: decoding threads (Pillow releases the GIL while decoding).

    Images JPEG cannot hold (a side over 65,535 pixels, e.g. a 1 x 100,000 strip) are
    cached as PNG under the same name (decoding goes by content); an image that cannot
    be cached at all, or a row with a ``reason`` (bad id), is a reject.

    Returns:
        (the rows whose image is cached, with ``path`` pointing into the cache;
        the rejects with their reasons).  Rows are never reordered.
    """
    cache_dir = Path(cache_dir)
    ids = frame["id"].astype(str).tolist()
    sources = with_paths(frame, root, split)["path"].astype(str).tolist()
    reasons = frame["reason"].astype(str).tolist() if "reason" in frame.columns else [""] * len(ids)

    def one(k: int):
        if reasons[k]:
            return None, Reject(ids[k], sources[k], reasons[k])
        target = image_path(cache_dir, ids[k], ".")
        if target.exists():
            return str(target), None
        try:
            img = resize_to_width(load_image(sources[k], draft=2 * width), width)
        except ImageError as err:
            return None, Reject(ids[k], sources[k], str(err))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _save(img, target)
        except (OSError, ValueError) as err:
            return None, Reject(ids[k], sources[k], f"cannot be cached ({err})")
        return str(target), None

    cached, rejects = [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for path, reject in tqdm(pool.map(one, range(len(ids))), total=len(ids), desc=f"cache w{width}",
                                 unit="img", leave=False):
            cached.append(path)
            if reject:
                rejects.append(reject)
    out = frame.assign(path=cached)
    return out[out["path"].notna()].reset_index(drop=True), rejects


def _save(img, target: Path) -> None:
    """Write ``img`` to ``target`` atomically: JPEG (quality 90), or PNG when JPEG
    cannot hold it (sides over 65,535 pixels).

    Raises:
        OSError, ValueError: neither format could write it (the temporary file is removed).
    """
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        try:
            img.save(tmp, "JPEG", quality=90)
        except (OSError, ValueError):
            img.save(tmp, "PNG")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
