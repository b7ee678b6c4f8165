"""Embedding at scale: sharded, resumable extraction and a streaming merge.

The images (rows of a frame, in a fixed order) are cut into *parts* of ``part_size``
rows; part ``k`` belongs to shard ``k mod n``.  ``embed --shard i/n`` embeds the parts of
shard ``i`` (one process per shard, on one machine or many sharing a folder):

* each part is written as a complete embeddings file (:mod:`.embeddings`) into a
  temporary folder ``.part-K.tmp-PID`` and then renamed to ``part-K`` (a folder rename
  is atomic), so a ``part-K`` folder is always complete;
* a part whose folder exists is skipped, so a killed run restarted with the same
  arguments resumes after the last finished part and every image ends up embedded
  exactly once; stale temporary folders of the shard are removed on restart;
* ``manifest.json`` pins the image list (count, SHA-256 of the ids), part size,
  preprocessing and the model (its checkpoint's SHA-256: :mod:`.provenance`); a shard run
  with a different list, settings or checkpoint is refused, and so is a merge of parts whose
  records disagree;
* one process per shard: ``.shard-I.lock`` (:func:`landmark.io.folder_lock`); the same shard
  started twice at once is refused in one line instead of deleting the other's work.

:func:`merge_shards` copies the parts, in order, into one memory-mapped ``NAME.npy``
(with ``NAME.ids.csv``, ``NAME.rejects.csv``, ``NAME.json``), one part in memory at a
time, published like every embeddings file (:func:`landmark.io.commit`: a crash at any step
leaves the old file or the new one); ``landmark index build --embeddings NAME.npy`` then builds the FAISS index (IVF-PQ
for millions: trained on a sample, vectors added in chunks from the memory map).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import Reject, write_rejects
from ..defaults import BATCH_SIZE, EMBED_DTYPE, PART_SIZE, TOP_CLASSES
from ..io import NpyRows, commit, embedding_files, folder_lock, refuse_existing, temp_path
from .embeddings import DTYPES, check_image_size, embed_images, load_embeddings, sidecar
from .provenance import check_model, describe, known, same_model

MANIFEST = "manifest.json"


#: rows of a part copied at a time by :func:`merge_shards` (65,536 x 1280 float16 = 160 MB)
_COPY_ROWS = 65_536


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Raises:
        ValueError: anything else.
    """
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: write i/n, e.g. 0/4 (shards are numbered from 0)") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def part_name(k: int) -> str:
    """Folder name of part ``k``."""
    return f"part-{k:05d}"


def shard_parts(rows: int, part_size: int, shard: tuple[int, int]) -> list[int]:
    """Parts of shard ``(i, n)`` among ``ceil(rows / part_size)``: ``k`` with ``k mod n == i``."""
    i, n = shard
    return list(range(i, math.ceil(rows / part_size), n))


def _manifest(frame: pd.DataFrame, part_size: int, settings: dict) -> dict:
    ids = "\n".join(frame["id"].astype(str)).encode()
    return {"rows": len(frame), "part_size": part_size, "parts": math.ceil(len(frame) / part_size),
            "ids_sha256": hashlib.sha256(ids).hexdigest(), **settings}


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (temp + rename), or check an existing one matches.

    Raises:
        ValueError: the folder holds a run over other images or settings.
    """
    path = folder / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        mine, theirs = manifest.get("model_sha256"), old.get("model_sha256")
        if mine and theirs and mine != theirs:
            from .provenance import ModelMismatch
            raise ModelMismatch(f"the parts in {folder} were made by model sha256 {theirs[:12]}, this checkpoint is "
                                f"sha256 {mine[:12]}: embed with the other shards' checkpoint, or another --out")
        diff = sorted(k for k in manifest if old.get(k) != manifest[k] and k != "model_sha256")
        if diff:
            raise ValueError(f"{folder} holds shards of another run (differs in {', '.join(diff)}); "
                             "use the same images and options, or another --out")
        return
    tmp = folder / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, path)


def embed_shard(model, preprocess: dict, frame: pd.DataFrame, folder: str | Path, *, shard: tuple[int, int] = (0, 1),
                part_size: int = PART_SIZE, classes: list[str] | None = None, top_classes: int = TOP_CLASSES,
                dtype: str = EMBED_DTYPE, image_size: int | None = None, batch_size: int = BATCH_SIZE,
                workers: int | None = None, device: str | None = None, model_info: dict | None = None,
                max_side: int | None = None) -> dict:
    """Embed the parts of ``shard`` of ``frame`` into ``folder`` (module docstring).

    Args:
        model: a ``LandmarkNet`` or a runtime (:mod:`landmark.models.runtime`).
        frame: rows ``id``, ``path`` (and ``landmark_id``), the same list in every shard.
        part_size: rows per part (the unit of atomic writing and of resuming).
        model_info: the model's record (:func:`~landmark.retrieval.provenance.model_record`),
            pinned in the manifest and stored with every part.
        max_side: photos resized to this longer side, aspect kept, one per forward pass (instead of
            ``image_size`` squares); pinned in the manifest.
        others: as :func:`~landmark.retrieval.embeddings.embed_images`.

    Returns:
        ``{folder, shard, parts, done_before, embedded, rejects, rows}``: the shard's part
        count, parts skipped as already done, parts embedded now, their rejects and rows.

    Raises:
        ValueError: a bad shard, part size or dtype, an empty frame, or a folder of another run
            (other images, settings or model).
        landmark.io.LockedError: this shard is running in another process.
    """
    check_shard_request(frame, part_size=part_size, dtype=dtype, image_size=image_size)
    check_image_size(max_side, "max_side")
    if max_side is not None and image_size is not None:
        raise ValueError(f"image_size {image_size} and max_side {max_side}: give one (max_side keeps the aspect "
                         f"ratio, image_size squashes to a square)")
    folder = Path(folder)
    size = max_side or image_size or preprocess["size"]
    with shard_lock(folder, shard):
        parts, todo = pending_parts(folder, frame, shard=shard, part_size=part_size, dtype=dtype, image_size=size,
                                    top_classes=top_classes, model_info=model_info, max_side=max_side)
        embedded = rejects = rows = 0
        for k in todo:
            n, bad = _embed_part(model, preprocess, frame.iloc[k * part_size:(k + 1) * part_size], folder, k=k,
                                 classes=classes, top_classes=top_classes, dtype=dtype, image_size=image_size,
                                 max_side=max_side, batch_size=batch_size, workers=workers, device=device,
                                 model_info=model_info)
            rows, rejects, embedded = rows + n, rejects + bad, embedded + 1
    return {"folder": str(folder), "shard": f"{shard[0]}/{shard[1]}", "parts": len(parts),
            "done_before": len(parts) - len(todo), "embedded": embedded, "rejects": rejects, "rows": rows}


def check_shard_request(frame: pd.DataFrame, *, part_size: int, dtype: str, image_size: int | None) -> None:
    """The ValueErrors of a sharded embedding's arguments, before any work (every engine).

    Raises:
        ValueError: ``part_size`` under 1, an unknown ``dtype``, an empty ``frame`` or an
            ``image_size`` no network takes.
    """
    if part_size < 1:
        raise ValueError("part_size must be >= 1")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    if len(frame) == 0:
        raise ValueError("no images to embed")
    check_image_size(image_size)


@contextmanager
def shard_lock(folder: Path, shard: tuple[int, int]) -> Iterator[None]:
    """Hold shard ``shard``'s lock in ``folder`` (made if missing): one process per shard, so a
    second run of the same shard cannot remove the first's unfinished parts.

    Raises:
        landmark.io.LockedError: this shard is running in another process.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder, name=f".shard-{shard[0]}-of-{shard[1]}.lock"):
        yield


def pending_parts(folder: Path, frame: pd.DataFrame, *, shard: tuple[int, int], part_size: int, dtype: str,
                  image_size: int, top_classes: int, model_info: dict | None = None,
                  max_side: int | None = None) -> tuple[list[int], list[int]]:
    """Open ``folder`` for shard ``shard`` of ``frame``: write its manifest (or check that it
    matches), remove the shard's stale temporary parts; every engine starts here.  ``max_side``
    (aspect-kept photos) is pinned only when set, so manifests of square runs read as before.

    Returns:
        (the shard's parts, those not finished yet).

    Raises:
        ValueError: the folder holds a run over other images or settings.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pinned = {"dtype": dtype, "image_size": image_size, "shards_of": shard[1], "top_classes": top_classes,
              **({"max_side": int(max_side)} if max_side else {})}
    if model_info is not None:
        pinned["model_sha256"] = model_info.get("sha256")
    write_manifest(folder, _manifest(frame, part_size, pinned))
    parts = shard_parts(len(frame), part_size, shard)
    for k in parts:
        for stale in folder.glob(f".{part_name(k)}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    return parts, [k for k in parts if not (folder / part_name(k)).is_dir()]


def write_part(folder: Path, k: int, fill) -> tuple[int, int]:
    """Write part ``k`` into a temporary folder renamed to ``part-K`` when done (a folder rename
    is atomic): ``fill(tmp / "part.npy")`` writes the embeddings file and returns (rows, rejects)."""
    tmp = folder / f".{part_name(k)}.tmp-{os.getpid()}"
    tmp.mkdir()
    rows, rejects = fill(tmp / "part.npy")
    os.replace(tmp, folder / part_name(k))
    return rows, rejects


def _embed_part(model, preprocess: dict, chunk: pd.DataFrame, folder: Path, k: int, **options) -> tuple[int, int]:
    """Embed part ``k`` (``chunk``) with :func:`write_part`; returns (rows embedded, rejects).
    A part of unreadable images only is a finished part."""
    def fill(path: Path) -> tuple[int, int]:
        try:
            emb, bad = embed_images(model, preprocess, chunk, path, **options)
            return len(emb), len(bad)
        except ValueError as err:
            if "could be read" not in str(err):
                raise
            return 0, len(_rejects_of(path.parent / "part.rejects.csv"))
    return write_part(folder, k, fill)


def _rejects_of(path: Path) -> list[Reject]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return [Reject(r.id, r.path, r.reason) for r in table.itertuples()]


def merge_shards(folder: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Concatenate every part of ``folder``, in order, into one embeddings file ``out``.

    Streams part by part into a ``.npy`` under a temporary name (positional writes,
    :class:`~landmark.io.NpyRows`); memory holds 65,536 rows at a time.  Every part must record the same model (that of
    the manifest); the merged file records it too.  Published like every embeddings file
    (:func:`landmark.io.commit`): a crash at any step leaves ``out`` as it was or merged.

    Returns:
        ``{embeddings, rows, dim, parts, rejects}``.

    Raises:
        FileNotFoundError: no manifest in ``folder``.
        FileExistsError: ``out`` or one of its side files (``NAME.ids.csv`` ...) exists and
            ``overwrite`` is False.
        ValueError: parts are missing (their shards have not finished).
        landmark.retrieval.provenance.ModelMismatch: parts made by different models.
        landmark.io.LockedError: another process is writing ``out``.
    """
    from .embeddings import embeddings_path
    folder, path = Path(folder), embeddings_path(out)
    manifest, parts = _finished_parts(folder)
    refuse_existing(embedding_files(path), overwrite)
    files = [p / "part.npy" for p in parts if (p / "part.npy").is_file()]
    if not files:
        raise ValueError(f"no image of {folder} could be read")
    model = _parts_model(folder, files, manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path.parent, name=f".{path.name}.lock"):
        temps = {p: temp_path(p) for p in embedding_files(path)}
        try:
            items, classes, dim = _copy_parts(files, temps[path], DTYPES[manifest["dtype"]])
            items.to_csv(temps[sidecar(path, "ids.csv")], index=False)
            rejects = [r for p in parts for r in _rejects_of(p / "part.rejects.csv")]
            write_rejects(rejects, temps[sidecar(path, "rejects.csv")])
            staged = [(temps[p], p) for p in (path, sidecar(path, "ids.csv"), sidecar(path, "rejects.csv"))]
            if classes is not None:
                with open(temps[sidecar(path, "classes.npz")], "wb") as fh:  # a file object: no suffix added
                    np.savez(fh, labels=classes[0], probs=classes[1])
                staged.append((temps[sidecar(path, "classes.npz")], sidecar(path, "classes.npz")))
            commit(staged, sidecar(path, "json"),
                   {"rows": len(items), "dim": dim, "dtype": manifest["dtype"], "image_size": manifest["image_size"],
                    **({"max_side": manifest["max_side"]} if manifest.get("max_side") else {}), "model": model, "rejects": len(rejects), "merged_from": str(folder), "parts": len(parts),
                    "complete": True}, members=embedding_files(path)[:-1])
        finally:
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
    return {"embeddings": str(path), "rows": len(items), "dim": dim, "parts": len(parts), "rejects": len(rejects)}


def _parts_model(folder: Path, files: list[Path], manifest: dict) -> dict | None:
    """The one model every part records (None when none records one, as written by older versions).

    Raises:
        ModelMismatch: two parts, or a part and the manifest, name different models.
    """
    from ..io import read_record
    from .provenance import ModelMismatch
    models = [(f, (read_record(sidecar(f, "json")) or {}).get("model")) for f in files]
    recorded = [(f, m) for f, m in models if known(m)]
    pinned = manifest.get("model_sha256")
    first = recorded[0] if recorded else None
    for f, m in recorded:
        if not same_model(m, first[1]) or (pinned and m["sha256"] != pinned):
            raise ModelMismatch(f"the vectors of {f.parent.name} were made by model {describe(m)}, those of "
                                f"{first[0].parent.name} by {describe(first[1])}: re-embed {folder} with one "
                                "checkpoint (delete the parts of the other, then run its shards again)")
    if len(recorded) < len(models):
        check_model(None, first[1] if first else None, f"some parts of {folder}", "the merged file",
                    fix="merge only parts of one checkpoint")
    return first[1] if first else None


def _finished_parts(folder: Path) -> tuple[dict, list[Path]]:
    """The manifest and every part folder of a sharded run, in order.

    Raises:
        FileNotFoundError: no manifest.
        ValueError: parts are missing (their shards have not finished).
    """
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"{folder} has no {MANIFEST}; write it with `landmark embed --shard i/n`")
    manifest = _checked_manifest(folder)
    # loops bounded by the folders that exist, not by the number the manifest claims
    done = {p.name for p in folder.iterdir() if p.name.startswith("part-") and p.is_dir()}
    parts, n = manifest["parts"], manifest["shards_of"]
    have = sum(1 for name in done if name[5:].isdigit() and int(name[5:]) < parts and name == part_name(int(name[5:])))
    if have < parts:
        missing = [k for k in range(min(parts, len(done) + n)) if part_name(k) not in done]   # the first ones
        shards = ", ".join(f"{s}/{n}" for s in sorted({k % n for k in missing}))
        raise ValueError(f"{parts - have} of {parts} parts are not done yet (e.g. {part_name(missing[0])}); "
                         f"finish shard(s) {shards} first")
    return manifest, [folder / part_name(k) for k in range(parts)]


def _checked_manifest(folder: Path) -> dict:
    """``manifest.json`` of ``folder`` as :func:`_manifest` writes it.

    Raises:
        ValueError: not a JSON object, or counts that are not whole numbers that agree
            (``parts`` = ceil(``rows`` / ``part_size``)), or an unknown ``dtype``: a hand-edited
            ``"parts": 1000000000`` made embed-merge look for a billion folders.
    """
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:
        raise ValueError(f"{path} is unreadable ({type(err).__name__}); run `landmark embed --shard i/n` "
                         "into a new --out") from None
    whole = {k: manifest.get(k) if isinstance(manifest, dict) else None
             for k in ("rows", "part_size", "parts", "shards_of")}
    bad = [f"{k}={v!r}" for k, v in whole.items()
           if not isinstance(v, int) or isinstance(v, bool) or v < (0 if k in ("rows", "parts") else 1)]
    if not bad and whole["parts"] != math.ceil(whole["rows"] / whole["part_size"]):
        bad = [f"parts={whole['parts']} for rows={whole['rows']} in parts of {whole['part_size']}"]
    if not bad and manifest.get("dtype") not in DTYPES:
        bad = [f"dtype={manifest.get('dtype')!r}"]
    if bad:
        raise ValueError(f"{path} is not a shard manifest ({', '.join(bad)}); run `landmark embed --shard i/n` "
                         "into a new --out")
    return manifest


def _copy_parts(files: list[Path], path: Path, dtype) -> tuple[pd.DataFrame, tuple[np.ndarray, np.ndarray] | None, int]:
    """Copy the parts' vectors, in order, into one ``path`` (:class:`~landmark.io.NpyRows`: 65,536
    rows in memory at a time); returns their items, when stored their classifier top-k ``(labels, probs)``,
    and the width D."""
    shapes = [np.load(f, mmap_mode="r", allow_pickle=False).shape for f in files]
    widths = sorted({s[1] for s in shapes})
    if len(widths) > 1:
        raise ValueError(f"the parts hold vectors of widths {widths}: made by different models; re-embed with one")
    vectors = NpyRows(path, (sum(s[0] for s in shapes), shapes[0][1]), dtype)
    row, items, labels, probs = 0, [], [], []
    for f in files:
        part = load_embeddings(f)
        for start in range(0, len(part), _COPY_ROWS):   # rows of the part in memory at a time
            vectors.write(row + start, part.vectors[start:start + _COPY_ROWS])
        row += len(part)
        items.append(part.items)
        if part.classes is not None:
            labels.append(part.classes[0])
            probs.append(part.classes[1])
        del part
    vectors.close()
    classes = (np.concatenate(labels), np.concatenate(probs)) if labels else None
    return pd.concat(items, ignore_index=True), classes, widths[0]
