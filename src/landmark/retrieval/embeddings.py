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

Rows are written batch by batch into a ``numpy.lib.format.open_memmap`` file sized for
all images; if some are rejected, the file is shrunk at the end by rewriting the shape in
its header and truncating (no copy), so memory stays flat whatever the number of images.

Every file is first written under a temporary name and moved into place at the end,
``NAME.json`` last (:func:`landmark.io.commit`): ``NAME.json`` is the completion marker,
and :func:`load_embeddings` refuses a ``NAME.npy`` without it or whose row count differs
from it, so an interrupted ``embed`` is never read as a finished one.
"""
from __future__ import annotations

import json
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
from ..models.runtime import Runtime, as_runtime, decode_threads, decode_workers
from ..io import clear_temps, commit, embedding_files, embeddings_path, refuse_existing, sidecar, temp_path
from ..models import LandmarkNet

DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class Embeddings:
    """An embeddings file in memory-mapped form.

    Attributes:
        vectors: ``[N, D]`` float16/float32 (memory-mapped), rows L2-normalised.
        items: frame with ``id`` and, when known, ``landmark_id`` and ``path`` (N rows).
        classes: optional ``(labels str [N, k], probs float32 [N, k])`` classifier top-k.
    """

    vectors: np.ndarray
    items: pd.DataFrame
    classes: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def ids(self) -> np.ndarray:
        """Image id (str) of each row, ``[N]``."""
        return self.items["id"].astype(str).to_numpy()

    @property
    def labels(self) -> np.ndarray | None:
        """Landmark id (str) of each row, ``[N]``; None for unlabelled embeddings."""
        return self.items["landmark_id"].astype(str).to_numpy() if "landmark_id" in self.items else None

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
                 classes: list[str] | None = None, top_classes: int = 0, dtype: str = "float16",
                 image_size: int | None = None, batch_size: int = 32, workers: int | None = None,
                 device: str | None = None, overwrite: bool = False) -> tuple[Embeddings, list[Reject]]:
    """Embed the images of ``frame`` into an embeddings file (module docstring).

    Each image is resized to ``image_size`` x ``image_size`` pixels (default: the
    checkpoint's ``preprocess['size']``), passed through the model's runtime interface
    (:mod:`landmark.models.runtime`: one backbone pass gives logits and the ``[B, D]``
    descriptor of ``LandmarkNet.embed``, GeM-pooled features or a learned projection) and
    L2-normalised in float32 before storing as ``dtype``.

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

    Returns:
        (the written :class:`Embeddings` ``[N, D]``, memory-mapped, N = readable images; the
        rejects, also written to ``NAME.rejects.csv``).

    Raises:
        FileExistsError: ``out`` or one of its side files exists and ``overwrite`` is False.
        ValueError: unknown ``dtype``, ``top_classes`` without ``classes``, an empty
            frame, an ``image_size`` other than an ONNX export's own, or no image could be read.
    """
    _check_request(frame, dtype, classes, top_classes)
    check_image_size(image_size)
    runtime = as_runtime(model, classes, preprocess, device)
    if runtime.name == "onnx" and image_size not in (None, preprocess["size"]):
        raise ValueError(f"an ONNX export takes {preprocess['size']} px inputs only; embed at {image_size} px "
                         f"with the .pt checkpoint (--runtime torch), or drop --image-size")
    path = embeddings_path(out)
    refuse_existing(embedding_files(path), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_temps(embedding_files(path))  # left by a killed run; never read
    contract = Preprocess(size=image_size or preprocess["size"], mean=preprocess["mean"], std=preprocess["std"])
    size = contract.size
    writer = _RowWriter(temp_path(path), len(frame), dtype, classes if top_classes else None, top_classes)
    rejects = writer.consume(runtime, contract, _loader(frame, runtime, contract, batch_size, workers))
    if writer.rows == 0:
        write_rejects(rejects, sidecar(path, "rejects.csv"))
        raise ValueError(f"none of the {len(frame)} images could be read; see {sidecar(path, 'rejects.csv')}")
    _commit_files(path, writer, frame.iloc[writer.kept], rejects, {"dtype": dtype, "image_size": size})
    return load_embeddings(path), rejects


def _check_request(frame: pd.DataFrame, dtype: str, classes: list[str] | None, top_classes: int) -> None:
    """The ValueErrors of :func:`embed_images` about its arguments, before any work."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    if top_classes and not classes:
        raise ValueError("top_classes needs the checkpoint's classes")
    if len(frame) == 0:
        raise ValueError("no images to embed")


def check_image_size(image_size: int | None) -> None:
    """Refuse an ``image_size`` no network takes (None: the checkpoint's, already checked).

    Raises:
        ValueError: outside 16..:data:`~landmark.data.preprocess.MAX_SIDE` pixels.
    """
    if image_size is not None and not 16 <= image_size <= MAX_SIDE:
        raise ValueError(f"image_size {image_size}: give 16 to {MAX_SIDE} pixels, or none for the checkpoint's size")


def _loader(frame: pd.DataFrame, runtime: Runtime, contract: Preprocess, batch_size: int,
            workers: int | None) -> DataLoader | ThreadedBatches:
    """Batches of ``contract.size`` px uint8 images (:meth:`Preprocess.decode_transform`) with
    their rejects, decoded by threads or processes as :func:`~landmark.models.runtime.decode_threads` says."""
    threads = decode_threads(runtime)
    workers = decode_workers(threads) if workers is None else workers
    return image_loader(frame, contract.decode_transform(), batch_size=batch_size, workers=workers,
                        draft=2 * contract.size, threads=threads and workers > 0)


class _RowWriter:
    """L2-normalised embeddings (and the classifier's top-k) written row by row into a
    memory-mapped ``.npy`` sized for every image; ``kept`` are the frame rows written."""

    def __init__(self, path: Path, capacity: int, dtype: str, classes: list[str] | None, top_classes: int):
        self.path, self.capacity, self.dtype = path, capacity, DTYPES[dtype]
        self.classes, self.top_classes = classes, top_classes
        self.vectors: np.ndarray | None = None
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
        if self.vectors is None:
            self.dim = int(vectors.shape[1])
            self.vectors = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype,
                                                     shape=(self.capacity, self.dim))
        self.vectors[self.rows:self.rows + len(vectors)] = vectors.astype(self.dtype)
        self.rows += len(vectors)
        self.kept += rows
        if self.top_classes:
            self.top_probs.append(probs)
            self.top_labels.append(np.asarray(self.classes, dtype=object)[indices].astype(str))

    def close(self) -> None:
        """Flush the array and cut it to the rows written (rejects leave it shorter)."""
        if self.vectors is None:
            return
        self.vectors.flush()
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
                     dtype: str = "float16", image_size: int, classes: list[str] | None = None,
                     probs: np.ndarray | None = None, indices: np.ndarray | None = None) -> None:
    """Write rows computed elsewhere (:func:`stored_outputs` of a model actor: ``landmark embed
    --engine ray``) as the embeddings file :func:`embed_images` would: the same files, the same
    temporary names and ``NAME.json`` completion marker last.

    Args:
        items: ``id`` (``landmark_id``, ``path``) of each row, ``N`` rows.
        vectors: float32 ``[N, D]``, L2-normalised; stored as ``dtype``.
        probs, indices: the top-k ``[N, k]`` with ``classes`` (the checkpoint's), or None.
        image_size: pixels the photos were embedded at (recorded in ``NAME.json``).

    Raises:
        ValueError: no rows, or ``items`` and ``vectors`` differ in length.
    """
    if len(vectors) == 0 or len(items) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors for {len(items)} items: need as many, at least one")
    path = embeddings_path(out)
    top = 0 if probs is None else int(probs.shape[1])
    writer = _RowWriter(temp_path(path), len(vectors), dtype, classes if top else None, top)
    writer.store(np.asarray(vectors, np.float32), probs, indices, list(range(len(vectors))))
    writer.close()
    _commit_files(path, writer, items, rejects, {"dtype": dtype, "image_size": image_size})


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
    else:
        sidecar(path, "classes.npz").unlink(missing_ok=True)  # an older one would not belong to these rows
    commit(files, sidecar(path, "json"), json.dumps({"rows": writer.rows, "dim": writer.dim, **info,
                                                     "rejects": len(rejects), "complete": True}))


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
    """Open an embeddings file written by :func:`embed_images` (memory-mapped).

    Raises:
        FileNotFoundError: the ``.npy`` or its ``.ids.csv`` is missing.
        ValueError: ``NAME.json`` (the completion marker) is missing or unreadable, or the
            array, the ids and the marker disagree in length: an interrupted write.
    """
    path = embeddings_path(path)
    ids_file, marker = sidecar(path, "ids.csv"), sidecar(path, "json")
    for p in (path, ids_file):
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist (write it with `landmark embed`)")
    unfinished = f"{path} is unfinished (an interrupted `landmark embed`?): "
    try:
        rows = json.loads(marker.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(unfinished + f"{marker} is missing or unreadable; embed again with --overwrite") from None
    try:
        vectors = np.load(path, mmap_mode="r")
    except ValueError as err:
        raise ValueError(unfinished + f"{err}; embed again with --overwrite") from None
    items = pd.read_csv(ids_file, dtype=str, keep_default_na=False)
    if not len(items) == len(vectors) == rows:
        raise ValueError(unfinished + f"{len(vectors)} rows, {len(items)} ids in {ids_file}, {rows} in {marker}; "
                         f"embed again with --overwrite")
    classes = None
    if sidecar(path, "classes.npz").is_file():
        with np.load(sidecar(path, "classes.npz")) as npz:
            classes = (npz["labels"].astype(str), npz["probs"])
    return Embeddings(vectors, items, classes)


def iter_chunks(vectors: np.ndarray, chunk: int = 65536):
    """Yield ``(start, float32 [<=chunk, D])`` slices of a (memory-mapped) array."""
    for start in range(0, len(vectors), chunk):
        yield start, np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32)

