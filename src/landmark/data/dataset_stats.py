"""Dataset statistics: class balance, long tail, duplicates and unreadable files.

Reads a GLDv2 folder or a folder-per-class tree with :func:`landmark.data.read_train`
and reports what the GLDv2 paper (Weyand et al., CVPR 2020, Sec. 3 and Fig. 2) and the
Kaggle landmark-recognition write-ups look at: images per class (min, median,
quantiles, max), how many classes have 1, 2-4, 5-9 and 10+ images, the share of all
images held by the most frequent 1 % of classes, byte-identical duplicates (SHA-1 of
the file) and optionally near-duplicates (identical 64-bit perceptual hash, pHash of
Zauner 2010 via ``imagehash``), and files that do not decode
(:func:`landmark.data.load_image`).

Memory per image is a 20-byte digest (+ 8 bytes of pHash), so GLDv2's 4.1M images cost
well under 1 GB on top of the frame itself.
"""
from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .gldv2 import category_name, image_path, is_gldv2, read_categories, read_train, without_no_landmark_folders
from .images import ImageError, load_image

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
BUCKETS = (("1", 1, 1), ("2-4", 2, 4), ("5-9", 5, 9), ("10+", 10, None))


def class_count_stats(counts: pd.Series) -> dict:
    """Balance figures from images per class (one value per class, any order).

    Returns:
        dict with ``classes``, ``images``, ``images_per_class`` (min, mean, median, max,
        and ``q10 .. q99``), ``classes_by_size`` (per bucket 1, 2-4, 5-9, 10+: classes and
        images) and ``top1pct`` (classes = ceil(1 % of classes), their share of images).
    """
    values = np.sort(counts.to_numpy(dtype=np.int64))[::-1]
    total = int(values.sum())
    per_class = {"min": int(values.min()), "mean": round(float(values.mean()), 3),
                 "median": float(np.median(values)), "max": int(values.max())}
    per_class.update({f"q{round(q * 100)}": round(float(np.quantile(values, q)), 3) for q in QUANTILES})
    buckets = {}
    for name, lo, hi in BUCKETS:
        mask = (values >= lo) & (values <= hi) if hi is not None else values >= lo
        buckets[name] = {"classes": int(mask.sum()), "images": int(values[mask].sum())}
    top = max(1, math.ceil(0.01 * len(values)))
    return {"classes": int(len(values)), "images": total, "images_per_class": per_class,
            "classes_by_size": buckets,
            "top1pct": {"classes": top, "images": int(values[:top].sum()),
                        "share": round(float(values[:top].sum()) / total, 4)}}


@dataclass
class FileCheck:
    """What one file gave: SHA-1 of its bytes, pHash (or 0) and a reject reason (or "")."""

    sha1: bytes
    phash: int
    reason: str


def check_file(path: str | Path, phash: bool = False) -> FileCheck:
    """Hash and decode one file (never raises for a bad or missing file)."""
    try:
        digest = hashlib.sha1()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        sha1 = digest.digest()
    except OSError as err:
        return FileCheck(b"", 0, "file not found" if isinstance(err, FileNotFoundError) else f"unreadable ({err})")
    try:
        img = load_image(path, draft=64)
    except ImageError as err:
        return FileCheck(sha1, 0, str(err))
    value = 0
    if phash:
        import imagehash
        value = int(str(imagehash.phash(img)), 16)
    return FileCheck(sha1, value, "")


def image_paths(root: Path, frame: pd.DataFrame, rows: np.ndarray | range) -> list[str]:
    """File paths of ``rows``: the ``path`` column, or the GLDv2 layout from the id."""
    if "path" in frame.columns:
        column = frame["path"].to_numpy()
        return [column[i] for i in rows]
    ids = frame["id"].to_numpy()
    reasons = frame["reason"].to_numpy() if "reason" in frame.columns else None
    return ["" if reasons is not None and reasons[i] else str(image_path(root, ids[i])) for i in rows]


def dataset_stats(root: str | Path, check_images: bool = True, near_duplicates: bool = False,
                  workers: int = 4, progress: bool = True) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Compute the statistics of the labelled images in ``root``.

    Args:
        root: GLDv2 folder (``train.csv``) or folder-per-class tree.
        check_images: read and decode every file (duplicates, unreadable files); with
            ``False`` only the label table is used.
        near_duplicates: also group images with identical pHash (64-bit, ``imagehash``).
        workers: threads reading and decoding files.

    Returns:
        (summary dict -- see :func:`class_count_stats`, plus ``duplicates``,
        ``near_duplicates``, ``unreadable`` and ``layout``; tables: ``class_counts``
        (landmark_id, name, images; most frequent first), ``duplicates`` (group, kind,
        id, landmark_id, path), ``unreadable`` (id, landmark_id, path, reason)).

    Raises:
        FileNotFoundError, ValueError: from :func:`read_train`; ValueError also when every photo is in a
            folder of no landmark (``no_landmark/``, never a class: no landmark to count).
    """
    root = Path(root)
    unusable: list = []   # empty train.csv labels, OS metadata files: listed as unreadable too
    frame = read_train(root, unusable=unusable)
    names = {k: category_name(v) for k, v in read_categories(root).items()}
    landmarks, apart = without_no_landmark_folders(frame)   # no_landmark/: photos, never a class
    if landmarks.empty:   # it was counted as 1 class (stats.md: "3 images in 1 classes")
        shown = ", ".join(f"{f}/" for f in dict.fromkeys(apart["landmark_id"].astype(str)))
        raise ValueError(f"every photo of {root} is in {shown}, photos without a landmark, which is never a class: "
                         f"no landmark to count; give one folder per landmark (nothing was written)")
    counts = landmarks["landmark_id"].value_counts(sort=False)
    counts = counts[counts > 0]
    order = np.lexsort((counts.index.astype(str).to_numpy(), -counts.to_numpy()))
    counts = counts.iloc[order]
    class_counts = pd.DataFrame({"landmark_id": counts.index.astype(str),
                                 "name": [names.get(str(k), "") for k in counts.index],
                                 "images": counts.to_numpy()})
    summary = {"root": str(root), "layout": "gldv2" if is_gldv2(root) else "folder tree",
               **class_count_stats(counts), "class_names": bool(names),
               "no_landmark_images": len(apart)}
    tables = {"class_counts": class_counts,
              "duplicates": pd.DataFrame(columns=["group", "kind", "id", "landmark_id", "path"]),
              "unreadable": pd.DataFrame(columns=["id", "landmark_id", "path", "reason"])}
    if not check_images:
        return summary, tables

    n = len(frame)
    sha1 = np.empty(n, dtype="S20")
    phashes = np.zeros(n, dtype=np.uint64)
    bad: list[tuple[int, str]] = []
    batch = 4096  # paths are built per batch: memory does not grow with the dataset
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=n, desc="stats", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch):
            rows = range(start, min(start + batch, n))
            for i, result in zip(rows, pool.map(lambda p: check_file(p, near_duplicates) if p else None,
                                                image_paths(root, frame, rows))):
                if result is None:  # a row refused before reading (bad id)
                    result = FileCheck(b"", 0, str(frame["reason"].iat[i]))
                sha1[i] = result.sha1
                phashes[i] = result.phash
                if result.reason:
                    bad.append((i, result.reason))
            bar.update(len(rows))
    labels = frame["landmark_id"].astype(str).to_numpy()
    ids = frame["id"].to_numpy()
    bad_index = np.array([i for i, _ in bad], dtype=np.int64)
    readable = np.ones(n, dtype=bool)
    readable[bad_index] = False
    tables["unreadable"] = pd.concat([
        pd.DataFrame({"id": ids[bad_index], "landmark_id": labels[bad_index],
                      "path": image_paths(root, frame, bad_index), "reason": [r for _, r in bad]}),
        pd.DataFrame(unusable, columns=["id", "landmark_id", "path", "reason"], dtype=str)], ignore_index=True)
    groups = [_groups(sha1, readable & (sha1 != b""), "same bytes", ids, labels=labels, root=root, frame=frame)]
    if near_duplicates:
        groups.append(_groups(phashes, readable, "same phash", ids, labels=labels, root=root, frame=frame))
    tables["duplicates"] = pd.concat(groups, ignore_index=True)
    for kind, key in (("same bytes", "duplicates"), ("same phash", "near_duplicates")):
        part = tables["duplicates"][tables["duplicates"]["kind"] == kind]
        summary[key] = None if (kind == "same phash" and not near_duplicates) else _dup_summary(part)
    summary["unreadable"] = {"files": len(bad) + len(unusable),
                             "reasons": _reason_counts([r for _, r in bad] + [u[3] for u in unusable])}
    return summary, tables


def _groups(keys: np.ndarray, valid: np.ndarray, kind: str, ids, labels, root: Path,
            frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sharing a key (groups of 2+), numbered by group."""
    index = np.flatnonzero(valid)
    table = pd.DataFrame({"key": keys[index], "row": index})
    table = table[table.duplicated("key", keep=False)]
    if table.empty:
        return pd.DataFrame(columns=["group", "kind", "id", "landmark_id", "path"])
    table["group"] = table.groupby("key", sort=True).ngroup()
    table = table.sort_values(["group", "row"])
    rows = table["row"].to_numpy()
    return pd.DataFrame({"group": table["group"].to_numpy(), "kind": kind, "id": ids[rows],
                         "landmark_id": labels[rows], "path": image_paths(root, frame, rows)})


def _dup_summary(part: pd.DataFrame) -> dict:
    """Groups, files in them, redundant copies, and groups spanning 2+ classes."""
    if part.empty:
        return {"groups": 0, "files": 0, "redundant": 0, "cross_class_groups": 0}
    per_group = part.groupby("group")
    return {"groups": int(per_group.ngroups), "files": int(len(part)),
            "redundant": int(len(part) - per_group.ngroups),
            "cross_class_groups": int((per_group["landmark_id"].nunique() > 1).sum())}


def _reason_counts(reasons: list[str]) -> dict[str, int]:
    keys = [r.split(":")[0] for r in reasons]
    return dict(sorted(pd.Series(keys, dtype=object).value_counts().items())) if keys else {}


def stats_markdown(summary: dict, class_counts: pd.DataFrame, figures: list[str], top: int = 10) -> str:
    """The summary as a Markdown report (tables of figures, most/least frequent classes).

    The ``top`` most and ``top`` least frequent classes are listed apart; with at most
    ``2 * top`` classes one table lists every class once (the lists never share a class).
    """
    per = summary["images_per_class"]
    lines = [f"# Dataset statistics: `{summary['root']}`", "",
             f"Layout: {summary['layout']}. **{summary['images']:,} images in {summary['classes']:,} classes.**"
             + (f" And {summary['no_landmark_images']:,} photos without a landmark (a `no_landmark/` folder: "
                f"never a class)." if summary.get("no_landmark_images") else ""), "",
             "## Images per class", "", "| min | q10 | q25 | median | mean | q75 | q90 | q99 | max |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {per['min']} | {per['q10']:g} | {per['q25']:g} | {per['median']:g} | {per['mean']:g} | "
             f"{per['q75']:g} | {per['q90']:g} | {per['q99']:g} | {per['max']} |", "",
             "| images per class | classes | images |", "|---|---:|---:|"]
    for name, cell in summary["classes_by_size"].items():
        lines.append(f"| {name} | {cell['classes']:,} | {cell['images']:,} |")
    top1 = summary["top1pct"]
    lines += ["", f"The most frequent 1 % of classes ({top1['classes']:,}) hold {top1['images']:,} images "
              f"({100 * top1['share']:.1f} % of all).", ""]

    top = max(1, top)

    def table(rows: pd.DataFrame) -> list[str]:
        out = ["| landmark_id | name | images |", "|---|---|---:|"]
        out += [f"| {r.landmark_id} | {r.name} | {r.images} |" for r in rows.itertuples()]
        return out

    if len(class_counts) <= 2 * top:  # few classes: each once, instead of overlapping lists
        lines += ["## Classes (most frequent first)", ""] + table(class_counts) + [""]
    else:
        lines += ["## Most frequent classes", ""] + table(class_counts.head(top))
        lines += ["", "## Least frequent classes", ""] + table(class_counts.tail(top).iloc[::-1]) + [""]
    if summary.get("duplicates") is not None:
        lines += ["## Duplicates and unreadable files", ""]
        for key, what in (("duplicates", "byte-identical files"), ("near_duplicates", "identical pHash")):
            d = summary.get(key)
            if d is not None:
                lines.append(f"- {what}: {d['groups']} groups, {d['files']} files, {d['redundant']} redundant "
                             f"copies, {d['cross_class_groups']} groups spanning several classes")
        u = summary["unreadable"]
        lines.append(f"- unreadable files: {u['files']}" + (f" ({u['reasons']})" if u["files"] else ""))
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures] + [""]
    return "\n".join(lines)
