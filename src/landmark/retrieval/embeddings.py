"""Global descriptors: stream images through the model (``LandmarkNet.embed``) into a memory-mapped file.

An *embeddings file* ``NAME.npy`` is a plain NumPy array ``[N, D]`` (float16 or float32),
one L2-normalised row per readable image, opened with ``np.load(path, mmap_mode='r')`` so
that nothing has to fit in memory.  Beside it:

* ``NAME.ids.csv``: ``id`` (and ``landmark_id``, ``path`` when known), row ``i`` naming
  row ``i`` of the array;
* ``NAME.rejects.csv``: ``id,path,reason`` of the images that could not be decoded
  (header only when none).
* optionally ``NAME.classes.npz``: the classifier's top-``k`` classes and probabilities
  per row (``labels`` str ``[N, k]``, ``probs`` float32 ``[N, k]``), computed in the same
  pass, for combining kNN with the classifier.

Rows are written batch by batch into a ``.npy`` sized for all images, by positional writes
(:class:`landmark.io.NpyRows`: a memory map would keep every written page resident); if some are rejected, the file is shrunk at the end by rewriting the shape in
its header and truncating (no copy), so memory stays flat whatever the number of images.

Every file is first written under a temporary name, synced, and published by
:func:`landmark.io.commit`: ``NAME.json`` is the completion record and the pointer to the
current files, replaced in one rename, so a crash at any step (``embed --overwrite``,
``embed-merge --overwrite``) leaves the old embeddings or the new ones, never a mix.
:func:`load_embeddings` reads the files ``NAME.json`` names and refuses a ``NAME.npy``
without it or whose row count differs from it.  ``NAME.json`` also records the model
that made the vectors (``model``: :mod:`landmark.retrieval.provenance`).  One writer at a
time: ``.NAME.npy.lock`` beside the file (:func:`landmark.io.folder_lock`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data import Reject, read_train, with_paths, write_rejects
from ..data.dataset import ThreadedBatches, good_batches, image_loader
from ..data.preprocess import MAX_SIDE, Preprocess
from ..defaults import EMBED_DTYPE, TOP_CLASSES
from ..models.runtime import Runtime, as_runtime, decode_threads, decode_workers
from ..io import (NpyRows, artifact_files, clear_temps, commit, embedding_files, embeddings_path, folder_lock,
                  read_artifact, refuse_existing, sidecar, temp_path)
from ..models import LandmarkNet
from .index_reader import iter_chunks  # noqa: F401  (re-exported: numpy only, below this module)

DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class Embeddings:
    """An embeddings file in memory-mapped form.

    Attributes:
        vectors: ``[N, D]`` float16/float32 (memory-mapped), rows L2-normalised.
        items: frame with ``id`` and, when known, ``landmark_id`` and ``path`` (N rows).
        classes: optional ``(labels str [N, k], probs float32 [N, k])`` classifier top-k.
        model: the model that made the vectors (:func:`~landmark.retrieval.provenance.model_record`;
            None: unknown, a file written before models were recorded, or vectors made in memory).
    """

    vectors: np.ndarray
    items: pd.DataFrame
    classes: tuple[np.ndarray, np.ndarray] | None = None
    model: dict | None = None

    @property
    def ids(self) -> np.ndarray:
        """Image id (str) of each row, ``[N]``."""
        return self.items["id"].astype(str).to_numpy()

    @property
    def labels(self) -> np.ndarray | None:
        """Landmark id (str) of each row, ``[N]`` (a missing one, None or NaN, empty: no landmark); None for
        unlabelled embeddings."""
        return self.items["landmark_id"].fillna("").astype(str).to_numpy() if "landmark_id" in self.items else None

    def __len__(self) -> int:
        return len(self.vectors)


def labelled_images(root: str | Path, landmarks: list[str] | None = None, split: str = "train") -> pd.DataFrame:
    """Labelled images of a GLDv2 folder or folder-per-class tree as ``id, landmark_id, path``.

    Args:
        landmarks: keep only these landmark ids (None: all).

    Raises:
        FileNotFoundError / ValueError: from :func:`landmark.data.read_train`; ValueError
            also when ``landmarks`` selects nothing.
    """
    frame = with_paths(read_train(root), root, split)
    frame["landmark_id"] = frame["landmark_id"].astype(str)
    if landmarks is not None:
        frame = frame[frame["landmark_id"].isin([str(x) for x in landmarks])].reset_index(drop=True)
        if frame.empty:
            raise ValueError(f"{root} has no images of landmark(s) {landmarks}")
    return frame[["id", "landmark_id", "path"]]


@torch.no_grad()
def embed_images(model: LandmarkNet | Runtime, preprocess: dict, frame: pd.DataFrame, out: str | Path, *,
                 classes: list[str] | None = None, top_classes: int = TOP_CLASSES, dtype: str = EMBED_DTYPE,
                 image_size: int | None = None, max_side: int | None = None, batch_size: int = 32,
                 workers: int | None = None, device: str | None = None, overwrite: bool = False,
                 model_info: dict | None = None) -> tuple[Embeddings, list[Reject]]:
    """Embed the images of ``frame`` into an embeddings file (module docstring).

    Each image is resized to ``image_size`` x ``image_size`` pixels (default: the
    checkpoint's ``preprocess['size']``), passed through the model's runtime interface
    (:mod:`landmark.models.runtime`: one backbone pass gives logits and the ``[B, D]``
    descriptor of ``LandmarkNet.embed``, GeM-pooled features or a learned projection) and
    L2-normalised in float32 before storing as ``dtype``.

    With ``max_side``, each image is instead resized so that its *longer* side is
    ``max_side`` pixels, its aspect ratio kept (neither cropped nor squashed:
    :func:`~landmark.data.transforms.resize_longer_uint8`), and the descriptor pools the whole
    ``[C, h, w]`` feature map; photos then go through the network one at a time (their shapes
    differ), so ``batch_size`` is ignored.  ``NAME.json`` records ``max_side``.

    ``model`` is a ``LandmarkNet`` (eager, on ``device``) or any runtime of
    :mod:`landmark.models.runtime` (e.g. ONNX Runtime).  JPEGs are decoded at reduced
    size (Pillow ``draft``) down to no less than twice ``image_size``.

    Args:
        preprocess: ``size``, ``mean``, ``std`` (the checkpoint's ``preprocess``).
        frame: rows with ``id``, ``path`` and optionally ``landmark_id``.
        out: ``NAME.npy`` (suffix added when missing).
        classes: the checkpoint's class names; with ``top_classes > 0`` the classifier's
            top-k classes and softmax probabilities are stored too (``NAME.classes.npz``;
            from the same backbone pass as the embedding).
        dtype: ``float16`` (half the disk) or ``float32``.
        workers: image decoders: threads when the network computes on the CPU, processes on a
            GPU (None: :func:`~landmark.models.runtime.decode_workers`).
        model_info: the model's record (:func:`~landmark.retrieval.provenance.model_record`),
            stored in ``NAME.json``.

    Returns:
        (the written :class:`Embeddings` ``[N, D]``, memory-mapped, N = readable images; the
        rejects, also written to ``NAME.rejects.csv``).

    Raises:
        FileExistsError: ``out`` or one of its side files exists and ``overwrite`` is False.
        landmark.io.LockedError: another process is writing ``out``.
        ValueError: unknown ``dtype``, ``top_classes`` without ``classes``, an empty
            frame, an ``image_size`` other than an ONNX export's own, ``max_side`` with an ONNX
            export (its graph takes one square size) or with ``image_size``, or no image could be read.
    """
    _check_request(frame, dtype, classes, top_classes)
    check_image_size(image_size)
    check_image_size(max_side, "max_side")
    if max_side is not None and image_size is not None:
        raise ValueError(f"image_size {image_size} and max_side {max_side}: give one (max_side keeps the aspect "
                         f"ratio, image_size squashes to a square)")
    runtime = as_runtime(model, classes, preprocess, device)
    # an export, alone or in an ensemble, takes its own size only (an ensemble's photos are made at its first
    # member's size, or image_size)
    members = getattr(runtime, "members", None)
    size = image_size or preprocess["size"]
    for member in (m for m in (members or [runtime]) if m.name == "onnx"):
        own, which = member.preprocess["size"], f" ({member.path})" if members else ""
        if max_side is not None:
            raise ValueError(f"an ONNX export{which} takes {own} px squares only; embed with --max-side "
                             f"{max_side} with the .pt checkpoint (--runtime torch)")
        if size != own:
            fix = "drop --image-size" if image_size is not None and own == preprocess["size"] else \
                f"give --image-size {own}"
            raise ValueError(f"an ONNX export{which} takes {own} px inputs only; embed at {size} px "
                             f"with the .pt checkpoint (--runtime torch), or {fix}")
    path = embeddings_path(out)
    refuse_existing(embedding_files(path), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path.parent, name=f".{path.name}.lock"):
        return _embed_locked(runtime, preprocess, frame, path, image_size=image_size, max_side=max_side, dtype=dtype,
                             classes=classes, top_classes=top_classes,
                             batch_size=batch_size, workers=workers, model_info=model_info)


def _embed_locked(runtime: Runtime, preprocess: dict, frame: pd.DataFrame, path: Path, image_size: int | None,
                  max_side: int | None, dtype: str, classes: list[str] | None, top_classes: int, batch_size: int,
                  workers: int | None,
                  model_info: dict | None) -> tuple[Embeddings, list[Reject]]:
    """:func:`embed_images` once the arguments are checked and ``path``'s lock is held."""
    record = read_record_of(path)
    clear_temps(embedding_files(path), keep=_named(path, record))  # left by a killed run; never read
    contract = Preprocess(size=max_side or image_size or preprocess["size"], mean=preprocess["mean"],
                          std=preprocess["std"])
    size = contract.size
    writer = _RowWriter(temp_path(path), len(frame), dtype, classes if top_classes else None, top_classes=top_classes)
    rejects = writer.consume(runtime, contract, _loader(frame, runtime, contract, batch_size, workers=workers,
                                                        keep_aspect=max_side is not None))
    if writer.rows == 0:
        write_rejects(rejects, sidecar(path, "rejects.csv"))
        raise ValueError(f"none of the {len(frame)} images could be read; see {sidecar(path, 'rejects.csv')}")
    info = {"dtype": dtype, "image_size": size, **({"max_side": max_side} if max_side else {}), "model": model_info}
    _commit_files(path, writer, frame.iloc[writer.kept], rejects, info=info)
    return load_embeddings(path), rejects


def read_record_of(path: str | Path) -> dict | None:
    """The completion record ``NAME.json`` of an embeddings file (None: missing or unreadable)."""
    from ..io import read_record
    return read_record(sidecar(embeddings_path(path), "json"))


def _named(path: Path, record: dict | None) -> list[Path]:
    """The files the record names (kept by the clean-up of a killed writer's leftovers)."""
    if not record:
        return []
    return [p for p in artifact_files(sidecar(path, "json"), record, embedding_files(path)[:-1]).values() if p]


def _check_request(frame: pd.DataFrame, dtype: str, classes: list[str] | None, top_classes: int) -> None:
    """The ValueErrors of :func:`embed_images` about its arguments, before any work."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    if top_classes and not classes:
        raise ValueError("top_classes needs the checkpoint's classes")
    if len(frame) == 0:
        raise ValueError("no images to embed")


def check_image_size(image_size: int | None, name: str = "image_size") -> None:
    """Refuse an ``image_size`` (or ``max_side``, named ``name``) no network takes (None: the
    checkpoint's, already checked).

    Raises:
        ValueError: outside 16..:data:`~landmark.data.preprocess.MAX_SIDE` pixels.
    """
    if image_size is not None and not 16 <= image_size <= MAX_SIDE:
        raise ValueError(f"{name} {image_size}: give 16 to {MAX_SIDE} pixels, or none for the checkpoint's size")


def _loader(frame: pd.DataFrame, runtime: Runtime, contract: Preprocess, batch_size: int,
            workers: int | None, keep_aspect: bool = False) -> DataLoader | ThreadedBatches:
    """Batches of ``contract.size`` px uint8 images (:meth:`Preprocess.decode_transform`) with
    their rejects, decoded by threads or processes as :func:`~landmark.models.runtime.decode_threads` says;
    with ``keep_aspect``, batches of one image whose longer side is ``contract.size``
    (:func:`~landmark.data.transforms.resize_longer_uint8`)."""
    from ..data.transforms import resize_longer_uint8
    threads = decode_threads(runtime)
    workers = decode_workers(threads) if workers is None else workers
    transform = resize_longer_uint8(contract.size) if keep_aspect else contract.decode_transform()
    return image_loader(frame, transform, batch_size=1 if keep_aspect else batch_size, workers=workers,
                        draft=2 * contract.size, threads=threads and workers > 0)


class _RowWriter:
    """L2-normalised embeddings (and the classifier's top-k) written row by row into a
    ``.npy`` sized for every image (:class:`~landmark.io.NpyRows`); ``kept`` are the frame rows written."""

    def __init__(self, path: Path, capacity: int, dtype: str, classes: list[str] | None, top_classes: int):
        self.path, self.capacity, self.dtype = path, capacity, DTYPES[dtype]
        self.classes, self.top_classes = classes, top_classes
        self.vectors: NpyRows | None = None
        self.rows, self.dim = 0, 0
        self.kept: list[int] = []
        self.top_labels: list[np.ndarray] = []
        self.top_probs: list[np.ndarray] = []

    def consume(self, runtime: Runtime, contract: Preprocess, loader) -> list[Reject]:
        """Normalise (``contract``) and embed every uint8 batch of ``loader``; returns the rejects."""
        rejects: list[Reject] = []
        for batch in good_batches(loader, rejects, "embed"):
            logits, emb = runtime(contract.finish_batch(batch["image"]))
            self.add(emb, logits, batch["index"].tolist())
        self.close()
        return rejects

    def add(self, emb: torch.Tensor, logits: torch.Tensor, rows: list[int]) -> None:
        """Store ``emb`` ``[B, D]`` (normalised here) and, when asked, the top classes of ``logits`` ``[B, K]``."""
        self.store(*stored_outputs(emb, logits, self.top_classes, len(self.classes or [])), rows)

    def store(self, vectors: np.ndarray, probs: np.ndarray | None, indices: np.ndarray | None, rows: list[int]) -> None:
        """Store rows of :func:`stored_outputs` (``vectors`` float32 ``[B, D]`` normalised; the
        top-k ``probs`` float32 and class ``indices`` int ``[B, k]`` when asked)."""
        if self.vectors is None:   # positional writes: a memory map would keep every written page resident
            self.dim = int(vectors.shape[1])
            self.vectors = NpyRows(self.path, (self.capacity, self.dim), self.dtype)
        self.vectors.write(self.rows, vectors)
        self.rows += len(vectors)
        self.kept += rows
        if self.top_classes:
            self.top_probs.append(probs)
            self.top_labels.append(np.asarray(self.classes, dtype=object)[indices].astype(str))

    def close(self) -> None:
        """Flush the array and cut it to the rows written (rejects leave it shorter)."""
        if self.vectors is None:
            return
        self.vectors.close()
        self.vectors = None
        if self.rows < self.capacity:
            shrink_npy(self.path, self.rows)


def stored_outputs(emb: torch.Tensor, logits: torch.Tensor, top_classes: int = 0,
                   num_classes: int = 0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """What an embeddings file keeps of one forward pass (``emb`` ``[B, D]``, ``logits`` ``[B, K]``):
    the L2-normalised embeddings float32 ``[B, D]`` and, with ``top_classes``, the classifier's
    top-k softmax probabilities float32 ``[B, k]`` and class indices int64 ``[B, k]``
    (``k = min(top_classes, num_classes)``; None and None without)."""
    vectors = F.normalize(emb.float(), dim=1).cpu().numpy()
    if not top_classes:
        return vectors, None, None
    prob, idx = logits.float().softmax(1).topk(min(top_classes, num_classes), dim=1)
    return vectors, prob.cpu().numpy(), idx.cpu().numpy()


def write_embeddings(out: str | Path, items: pd.DataFrame, vectors: np.ndarray, rejects: list[Reject], *,
                     dtype: str = EMBED_DTYPE, image_size: int, classes: list[str] | None = None,
                     probs: np.ndarray | None = None, indices: np.ndarray | None = None,
                     model_info: dict | None = None) -> None:
    """Write rows computed elsewhere (:func:`stored_outputs` of a model actor: ``landmark embed
    --engine ray``) as the embeddings file :func:`embed_images` would: the same files, the same
    temporary names and ``NAME.json`` completion marker last.

    Args:
        items: ``id`` (``landmark_id``, ``path``) of each row, ``N`` rows.
        vectors: float32 ``[N, D]``, L2-normalised; stored as ``dtype``.
        probs, indices: the top-k ``[N, k]`` with ``classes`` (the checkpoint's), or None.
        image_size: pixels the photos were embedded at (recorded in ``NAME.json``).
        model_info: the model's record (:func:`~landmark.retrieval.provenance.model_record`),
            stored in ``NAME.json`` as :func:`embed_images` stores it.

    Raises:
        ValueError: no rows, or ``items`` and ``vectors`` differ in length.
    """
    if len(vectors) == 0 or len(items) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors for {len(items)} items: need as many, at least one")
    path = embeddings_path(out)
    top = 0 if probs is None else int(probs.shape[1])
    writer = _RowWriter(temp_path(path), len(vectors), dtype, classes if top else None, top_classes=top)
    writer.store(np.asarray(vectors, np.float32), probs, indices, list(range(len(vectors))))
    writer.close()
    _commit_files(path, writer, items, rejects, info={"dtype": dtype, "image_size": image_size, "model": model_info})


def _commit_files(path: Path, writer: _RowWriter, items: pd.DataFrame, rejects: list[Reject], info: dict) -> None:
    """Write the side files under temporary names, then move everything into place,
    ``NAME.json`` (the completion marker) last."""
    work = {p: temp_path(p) for p in embedding_files(path)}  # final -> temporary name (landmark.io.commit)
    write_rejects(rejects, work[sidecar(path, "rejects.csv")])
    items = items.reset_index(drop=True)
    cols = [c for c in ("id", "landmark_id", "path") if c in items.columns]
    items[cols].to_csv(work[sidecar(path, "ids.csv")], index=False)
    files = [(work[p], p) for p in (path, sidecar(path, "ids.csv"), sidecar(path, "rejects.csv"))]
    if writer.top_classes:
        with open(work[sidecar(path, "classes.npz")], "wb") as fh:  # a file object: np.savez adds no suffix
            np.savez(fh, labels=np.concatenate(writer.top_labels), probs=np.concatenate(writer.top_probs))
        files.append((work[sidecar(path, "classes.npz")], sidecar(path, "classes.npz")))
    commit(files, sidecar(path, "json"), {"rows": writer.rows, "dim": writer.dim, **info, "rejects": len(rejects),
                                          "complete": True}, members=embedding_files(path)[:-1])


def shrink_npy(path: str | Path, rows: int) -> None:
    """Cut a C-ordered ``.npy`` file to its first ``rows`` rows in place.

    The header's shape is rewritten with the same header length (padding absorbs the
    shorter number) and the file is truncated; no data is copied.

    Raises:
        ValueError: ``rows`` is larger than the file's, or the file is Fortran-ordered.
    """
    path = Path(path)
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        start = f.tell()
        if fortran or rows > shape[0]:
            raise ValueError(f"cannot shrink {path} (shape {shape}, fortran={fortran}) to {rows} rows")
        new_shape = (rows,) + tuple(shape[1:])
        text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": new_shape})
        prefix = 10 if version == (1, 0) else 12
        header = text.ljust(start - prefix - 1) + "\n"
        f.seek(prefix)
        f.write(header.encode("latin1"))
        f.truncate(start + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def load_embeddings(path: str | Path) -> Embeddings:
    """Open an embeddings file written by :func:`embed_images` (memory-mapped): the files its
    completion record ``NAME.json`` names.

    A file without a model record (written by an older version) loads; readers that compare
    models then warn (:func:`~landmark.retrieval.provenance.check_model`).

    Raises:
        FileNotFoundError: the ``.npy`` or its ``.ids.csv`` is missing.
        ValueError: ``NAME.json`` (the completion record) is missing or unreadable, or the
            array, the ids and the record disagree in length or width: an interrupted write.
    """
    path = embeddings_path(path)
    for p in (path, sidecar(path, "ids.csv")):
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist (write it with `landmark embed`)")
    return read_artifact(sidecar(path, "json"), lambda record: _read(path, record))


def _read(path: Path, record: dict) -> Embeddings:
    """The embeddings the completion record ``record`` names."""
    marker = sidecar(path, "json")
    unfinished = f"{path} is unfinished (an interrupted `landmark embed`?): "
    if not isinstance(record.get("rows"), int):
        raise ValueError(unfinished + f"{marker} is missing or unreadable; embed again with --overwrite")
    rows = record["rows"]
    files = artifact_files(marker, record, embedding_files(path)[:-1])
    ids_file = files[sidecar(path, "ids.csv").name]
    if files[path.name] is None or ids_file is None:
        raise ValueError(unfinished + f"{marker} names no array or ids; embed again with --overwrite")
    try:
        vectors = np.load(files[path.name], mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise ValueError(unfinished + f"{err}; embed again with --overwrite") from None
    if vectors.dtype.kind != "f":   # a complex array lost its imaginary part silently, ints read as vectors
        raise ValueError(unfinished + f"its array holds {vectors.dtype}, not floating-point vectors; "
                         f"embed again with --overwrite")
    items = pd.read_csv(ids_file, dtype=str, keep_default_na=False)
    if not len(items) == len(vectors) == rows or vectors.ndim != 2 or \
            record.get("dim", vectors.shape[1]) != vectors.shape[1]:
        raise ValueError(unfinished + f"{len(vectors)} rows, {len(items)} ids in {ids_file}, {rows} in {marker}; "
                         f"embed again with --overwrite")
    classes = None
    npz = files[sidecar(path, "classes.npz").name]
    if npz is not None:
        with np.load(npz, allow_pickle=False) as stored:
            classes = (stored["labels"].astype(str), stored["probs"])
    model = record.get("model")
    return Embeddings(vectors, items, classes, model if isinstance(model, dict) else None)


