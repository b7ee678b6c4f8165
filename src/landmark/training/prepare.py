"""Turn a data folder and a config into the frames a run trains on.

Writes into the run folder: ``split.csv`` (id, landmark_id, split),
``split_summary.json`` (class selection and split counts, what happened to small
classes), ``rejects.csv`` (unreadable images with the reason).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import DataConfig
from ..runs import RunFolder
from ..data import Reject, read_train, select_classes, split_per_class, with_paths
from ..data.cache import build_cache
from ..data.gldv2 import DataSource, data_source, natural_key, without_no_landmark_folders

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The rows of each split (``id``, ``landmark_id``, ``path``), the class list, the rejects, and
    the photos of the data's folders of no landmark (``id, landmark_id, path``; never a class)."""

    frames: dict[str, pd.DataFrame]
    classes: list[str]
    rejects: list[Reject] = field(default_factory=list)
    no_landmark: pd.DataFrame | None = None

    def targets(self, split: str):
        index = {c: k for k, c in enumerate(self.classes)}
        return self.frames[split]["landmark_id"].astype(str).map(index).to_numpy()


def _small_classes(frame: pd.DataFrame) -> dict:
    """Classes of 1 and 2 kept photos (GLDv2 has tens of thousands): trained on like any other."""
    counts = frame["landmark_id"].value_counts()
    return {"classes_with_1_photo": int((counts == 1).sum()), "classes_with_2_photos": int((counts == 2).sum())}


def refuse_no_landmark_class(split: pd.DataFrame, split_file: Path, data: DataSource) -> None:
    """Refuse to resume a run whose ``split.csv`` (``id, landmark_id, split``) trains a folder of no
    landmark as a class (a run begun before 2026-12-08, when a tree's ``no_landmark/`` was one): its
    photos would be rejected as gone from the data folder and the checkpoint refused for its classes.

    Raises:
        ValueError: one line naming the class and what to run instead (nothing written).
    """
    apart = without_no_landmark_folders(split)[1]
    if len(apart):
        shown = ", ".join(dict.fromkeys(apart["landmark_id"].astype(str)))
        roots = " ".join(f"--data {r}" for r in ([data] if isinstance(data, (str, Path)) else data))
        raise ValueError(f"{split_file} trains {shown} as a class ({len(apart)} photos): this run began before "
                         f"2026-12-08, when a folder of photos without a landmark was a class; it is never one now, so "
                         f"this run's classes and checkpoint no longer fit: start a new run (landmark train {roots} --out NEW_RUN), where that folder's photos "
                         f"choose the 'no landmark' threshold (nothing was written)")


def prepare_data(data: DataSource, config: DataConfig, seed: int, run_dir: Path) -> Prepared:
    """Read, select classes, split (or reread ``split.csv`` on resume), cache, and list rejects.

    ``data``: one folder, or several read as one set (:func:`landmark.data.gldv2.read_union`).
    A tree's folders of no landmark (``no_landmark/``) are never a class: their photos are kept
    apart in ``Prepared.no_landmark`` (:func:`~landmark.data.gldv2.without_no_landmark_folders`).

    On resume, ids of ``split.csv`` that the data folder no longer has are rejects too
    (never silently dropped).
    """
    data, run_dir = data_source(data), Path(run_dir)
    split_file = RunFolder(run_dir).split_file
    unusable: list = []   # rows and files read_train leaves out (empty labels, OS metadata): rejects too
    frame, no_landmark = without_no_landmark_folders(read_train(data, clean=config.clean, unusable=unusable))
    gone: list[Reject] = [Reject(str(i), path, reason) for i, _, path, reason in unusable]
    if split_file.exists():
        saved = pd.read_csv(split_file, dtype=str, keep_default_na=False)
        refuse_no_landmark_class(saved, split_file, data)
        frame = frame[frame["id"].isin(saved["id"])].merge(saved[["id", "split"]], on="id")
        gone += [Reject(i, "", "in split.csv but no longer in the data folder (removed or renamed?)")
                 for i in saved.loc[~saved["id"].isin(frame["id"]), "id"]]
    else:
        if config.exclude_landmarks:
            frame = frame[~frame["landmark_id"].astype(str).isin(config.exclude_landmarks)].reset_index(drop=True)
        frame, selection = select_classes(frame, config.min_images_per_class, config.max_classes)
        labels, summary = split_per_class(frame, config.val_frac, config.test_frac, seed)
        frame["split"] = labels
        frame[["id", "landmark_id", "split"]].to_csv(split_file, index=False)
        small = _small_classes(frame)
        log.info("%d classes with 1 photo and %d with 2 are trained on (min_images_per_class %d); %d classes have "
                 "no validation photo, so their answers are not validated", small["classes_with_1_photo"],
                 small["classes_with_2_photos"], config.min_images_per_class, summary.classes_without_val)
        RunFolder(run_dir).split_summary.write_text(json.dumps(
            {"selection": selection, "split": summary.as_dict(), "small_classes": small,
             "note": "classes too small to split keep at least one image in train; test gives way first, "
                     "then val (see landmark.data.split.split_per_class)"}, indent=2))
    frame = with_paths(frame, data)
    classes = sorted(frame["landmark_id"].astype(str).unique(), key=natural_key)
    rejects: list[Reject] = gone
    if config.cache_width:
        frame, cache_rejects = build_cache(frame, run_dir / "cache" / f"w{config.cache_width}", config.cache_width,
                                           workers=max(2, config.workers))
        rejects = gone + cache_rejects
    frames = {s: frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    return Prepared(frames, classes, rejects, no_landmark=with_paths(no_landmark, data))
