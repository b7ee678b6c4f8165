"""An index folder read for answering only, without pandas: :class:`ReadOnlyIndex`.

``landmark recognize`` with an ONNX export answers one photo in under a second, start-up
included; pandas alone takes 0.4 s or more to import on a shared CPU, so the torch-free
recogniser (:mod:`landmark.inference.instant`) reads the run's reference index here: the
FAISS file and ``meta.json`` as :class:`~landmark.retrieval.index.LandmarkIndex` reads them
(the same checks, shared with it), ``items.csv`` with the standard ``csv`` module.  Nothing
here writes or enrols; use :class:`~landmark.retrieval.index.LandmarkIndex` for that.
"""
from __future__ import annotations

import csv
import mmap
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ..io import INDEX_FILES as FILES, artifact_files, read_artifact
from .config import IndexParams

ITEM_COLUMNS = ["id", "landmark_id", "path"]
# meta.json entries that describe the files rather than the vectors (not kept in ``meta``)
FILE_KEYS = ("dim", "count", "landmarks", "unlabelled", "files", "version", "bytes")
#: the ``landmark_id`` of a photo indexed without a landmark (``landmark index build --images DIR`` without
#: ``--label``: an archive searched by ``landmark retrieve``); the one rule, :func:`unlabelled_count`
UNLABELLED = ""
#: what to do instead, in :func:`refuse_unlabelled`'s line: for the readers that name landmarks, for enrolment
RECOGNISE_UNLABELLED_FIX = ("to name landmarks, give an index built from photos with landmarks (landmark index build "
                            "--data DIR, or --images DIR --label NAME), or leave --index out (the run's own index)")
ENROL_UNLABELLED_FIX = ("enrolled landmarks could not be recognised in it; build an index of photos with landmarks "
                        "(landmark index build --data DIR, or --images DIR --label NAME) and enrol into that one "
                        "(more photos without a landmark: index add --images DIR without --label)")


def unlabelled_count(landmark_ids) -> int:
    """How many of ``landmark_ids`` (str ``[N]``: an index's ``labels``) are :data:`UNLABELLED`
    (0 for None or an empty sequence)."""
    if landmark_ids is None or not len(landmark_ids):
        return 0
    return int((np.asarray(landmark_ids).astype(str) == UNLABELLED).sum())


def unlabelled_note(count: int, total: int) -> str:
    """The line ``index build`` prints for an index holding ``count`` (> 0) unlabelled photos of ``total``."""
    which = "every one" if count == total else f"{count} of them"
    return (f"index of {total} photo{'s' if total != 1 else ''}, {which} without a landmark: it serves `landmark "
            f"retrieve` and `serve --retrieval-index` (recognize, predict, knn, tag and serve --index need photos "
            f"with landmarks: --label NAME or --data DIR; index add takes more photos without a landmark)")


def refuse_unlabelled(landmark_ids, use: str, fix: str = RECOGNISE_UNLABELLED_FIX) -> None:
    """Refuse an index holding :data:`UNLABELLED` photos for ``use`` (what needs every photo's
    landmark: ``"recognition"``), in one line ending with ``fix``.

    Raises:
        ValueError: any of ``landmark_ids`` is unlabelled.
    """
    count = unlabelled_count(landmark_ids)
    if count:
        total = len(landmark_ids)
        which = "photos" if count == total else f"of its {total} photos"
        raise ValueError(f"the index holds {count} {which} without a landmark (indexed without --label): it "
                         f"serves `landmark retrieve` only, not {use}; {fix}")


def is_kind(index: faiss.Index, kind: object) -> bool:
    """Whether ``index`` (read from a file) is what an index of ``kind`` is built as: a
    record that names another kind would make the search-time tuning fail with a FAISS traceback."""
    types = {"flat": (faiss.IndexFlat,), "hnsw": (faiss.IndexHNSWFlat,), "hnswsq": (faiss.IndexHNSWSQ,),
             "ivf": (faiss.IndexIVFFlat,), "ivfsq": (faiss.IndexIVFScalarQuantizer,), "ivfpq": (faiss.IndexIVFPQ,)}
    if isinstance(index, faiss.IndexPreTransform):   # a whitened index: its kind is the inner index's
        index = faiss.downcast_index(index.index)
    return isinstance(kind, str) and isinstance(index, types.get(kind, ()))


def check_marker(folder: Path) -> Path:
    """``folder/meta.json``, the index's record.

    Raises:
        FileNotFoundError: no index in ``folder``.
        ValueError: no ``meta.json`` beside the files (an interrupted build or add).
    """
    marker = folder / "meta.json"
    if not marker.is_file():
        for name in FILES[:2]:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} does not exist (build it with `landmark index build`)")
        raise ValueError(f"{folder} holds an unfinished index (no meta.json: an interrupted build or add); "
                         f"build it again with --overwrite")
    return marker


def read_faiss(folder: Path, meta: dict) -> tuple[faiss.Index, dict[str, Path]]:
    """The FAISS index the record ``meta`` names, checked against its kind, and where each file is.

    Raises:
        FileNotFoundError: a file the record names is gone.
        ValueError: no kind in the record, a damaged FAISS file, or one of another kind.
    """
    if "kind" not in meta:
        raise ValueError(f"{folder / 'meta.json'} is not an index record (no kind); build the index again")
    files = artifact_files(folder / "meta.json", meta, [folder / name for name in FILES[:2]])
    for name, path in files.items():
        if path is None or not path.is_file():
            raise FileNotFoundError(f"{folder / name} does not exist (build it with `landmark index build`)")
    try:
        index = faiss.read_index(str(files["index.faiss"]))
    except RuntimeError as err:   # FAISS raises RuntimeError for damaged or truncated files
        raise ValueError(f"{folder / 'index.faiss'} is damaged ({str(err).splitlines()[-1][:120]}); "
                         f"build the index again") from None
    if not is_kind(index, meta["kind"]):
        raise ValueError(f"{folder / 'meta.json'} says kind {meta['kind']!r}, index.faiss holds a "
                         f"{type(index).__name__}; build the index again")
    return index, files


def read_params(folder: Path, meta: dict) -> IndexParams:
    """The index's settings (``meta['params']``).

    Raises:
        ValueError: settings the index cannot have (one line naming the file).
    """
    try:
        return IndexParams.model_validate(meta.get("params", {}))
    except ValueError as err:   # pydantic's ValidationError: several lines, no file named
        first = err.errors()[0] if hasattr(err, "errors") else {"loc": (), "msg": str(err)}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(f"{folder / 'meta.json'} has bad index settings ({where}: {first.get('msg')}); "
                         f"build the index again") from None


def check_count(folder: Path, items: int, index: faiss.Index, meta: dict) -> None:
    """Refuse an ``items.csv`` of another length than the FAISS index or the record's count."""
    if not items == index.ntotal == meta.get("count", index.ntotal):
        raise ValueError(f"{folder}: items.csv lists {items} images, the index holds {index.ntotal}, "
                         f"meta.json says {meta.get('count')}; build it again with --overwrite")


def tune(index: faiss.Index, kind: str, params: IndexParams) -> None:
    """Search-time settings: ``nprobe`` of IVF kinds, ``efSearch`` of HNSW."""
    if kind in ("ivf", "ivfsq", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = params.nprobe
    elif kind in ("hnsw", "hnswsq"):   # a whitened index searches its inner index
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
        inner.hnsw.efSearch = params.ef_search


def drop_pages(vectors: np.ndarray) -> None:
    """Unmap the pages read so far from a read-only memory-mapped array (``np.load(mmap_mode="r")``,
    ``np.memmap`` or a view of one): they stay in the page cache, not in this process's resident
    memory, which otherwise grows with the file (a 1.6M x 1280 float16 file: 4.1 GB).  Nothing for
    other arrays, or for copy-on-write maps, whose private changes ``MADV_DONTNEED`` would discard."""
    mapped = getattr(vectors, "_mmap", None) if getattr(vectors, "mode", None) == "r" else None
    if mapped is not None and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED)


def iter_chunks(vectors: np.ndarray, chunk: int = 65536):
    """Yield ``(start, float32 [<=chunk, D])`` slices of a (memory-mapped) array.

    Raises:
        ValueError: a row holds NaN or inf (a hand-made or damaged file: an index of such
            vectors answered every photo "no landmark" with an empty name).
    """
    for start in range(0, len(vectors), chunk):
        x = np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32)
        drop_pages(vectors)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            raise ValueError(f"row {start + int(np.flatnonzero(~finite)[0])} of the vectors holds NaN or inf "
                             f"(a damaged or hand-made embeddings file); embed again")
        yield start, x


def search(index: faiss.Index, queries: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar indexed vectors of each query.

    Args:
        queries: ``[Q, D]`` float16/32 (L2-normalised).
    Returns:
        (similarities float32 ``[Q, k]`` descending, row indices int64 ``[Q, k]``; -1 with
        similarity -inf where fewer than k exist).

    Raises:
        ValueError: a query holds NaN or inf.
    """
    k = max(1, int(k))
    sims = np.empty((len(queries), k), dtype=np.float32)
    idx = np.empty((len(queries), k), dtype=np.int64)
    for start, q in iter_chunks(queries, chunk):
        s, i = index.search(q, k)
        s[i < 0] = -np.inf
        sims[start:start + len(q)], idx[start:start + len(q)] = s, i
    return sims, idx


@dataclass
class ReadOnlyIndex:
    """An index folder as :class:`~landmark.retrieval.index.LandmarkIndex` reads it, without
    pandas: ``index`` (FAISS), ``ids``, ``landmark_ids`` and ``paths`` (str per row), ``kind``,
    ``meta`` (``role``, ``model``, ``names``, ``reject_threshold`` ...).  Build with :meth:`load`."""

    index: faiss.Index
    ids: list[str]
    landmark_ids: list[str]
    paths: list[str]
    kind: str
    meta: dict

    @property
    def dim(self) -> int:
        """Dimension D of the indexed vectors."""
        return self.index.d

    @property
    def labels(self) -> np.ndarray:
        """Landmark id (str) of each vector, ``[N]``."""
        return np.asarray(self.landmark_ids, dtype=str)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`LandmarkIndex.search <landmark.retrieval.index.LandmarkIndex.search>` (:func:`search`)."""
        return search(self.index, queries, k)

    @classmethod
    def load(cls, folder: str | Path) -> "ReadOnlyIndex":
        """Read an index folder written by ``landmark train`` or ``landmark index build``.

        Raises:
            FileNotFoundError: no index in ``folder``.
            ValueError: as :meth:`LandmarkIndex.load <landmark.retrieval.index.LandmarkIndex.load>`.
        """
        folder = Path(folder)
        return read_artifact(check_marker(folder), lambda meta: cls._read(folder, meta))

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "ReadOnlyIndex":
        index, files = read_faiss(folder, meta)
        with open(files["items.csv"], newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        header = rows[0] if rows else []
        if missing := [c for c in ITEM_COLUMNS[:2] if c not in header]:
            raise ValueError(f"{folder / 'items.csv'} has no column {', '.join(missing)}; build the index again")
        columns = {name: header.index(name) for name in ITEM_COLUMNS if name in header}
        rows = [row for row in rows[1:] if row]   # blank lines skipped, as pandas does
        if any(len(row) != len(header) for row in rows):
            raise ValueError(f"{folder / 'items.csv'} has rows of another width than its header; build the index again")
        check_count(folder, len(rows), index, meta)
        tune(index, meta["kind"], read_params(folder, meta))
        column = lambda name: [row[columns[name]] for row in rows] if name in columns else [""] * len(rows)  # noqa: E731
        return cls(index=index, ids=column("id"), landmark_ids=column("landmark_id"), paths=column("path"),
                   kind=meta["kind"], meta={k: v for k, v in meta.items() if k not in (*FILE_KEYS, "kind", "params")})
