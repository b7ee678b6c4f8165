"""A FAISS index of labelled global descriptors, saved to and loaded from a folder.

Similarity is the inner product, which for the L2-normalised rows of an embeddings file
is the cosine similarity in [-1, 1].  Kinds (Johnson, Douze, Jegou, "Billion-scale
similarity search with GPUs", IEEE TBD 2019; FAISS wiki "Guidelines to choose an index"):

* ``flat``: exact search (``IndexFlatIP``), 4*D bytes per vector;
* ``hnsw``: graph search (``IndexHNSWFlat``, Malkov & Yashunin, TPAMI 2018), no training,
  about 4*D + 8*M bytes per vector, fast and accurate, slower to build;
* ``hnswsq``: the same graph over 8-bit scalar-quantised vectors (``IndexHNSWSQ``, ``QT_8bit``),
  about ``D + 8*M`` bytes per vector;
* ``ivf``: inverted file over ``nlist`` k-means cells (``IndexIVFFlat``), probes
  ``nprobe`` cells per query;
* ``ivfsq``: the same cells with 8-bit scalar-quantised vectors (``IndexIVFScalarQuantizer``,
  ``QT_8bit``), ``D`` bytes per vector: a quarter of ``ivf``, nearly its recall;
* ``ivfpq``: the same cells with product-quantised vectors (``IndexIVFPQ``,
  Jegou et al., TPAMI 2011), ``pq_m`` bytes per vector: for millions of images.

``kind='auto'`` (:func:`choose_kind`) picks ``flat`` below 100k vectors, then the least
compressed of ``ivf`` (below 2M vectors), ``ivfsq`` and ``ivfpq`` whose vectors fit
``IndexParams.memory_gb`` (4 GiB: GLDv2-clean's 1.6M x 1280 descriptors are 8.2 GB float32
as flat or ivf, 2.0 GB as ivfsq; docs/scale.md measures recall and speed).
``benchmarks/knn_speed.py`` measured IVF-Flat building ~40x faster than HNSW at 100k
(4 s vs 155 s on one shared CPU core) for the same recall@1 (0.985 vs 0.975), so HNSW is
only built when asked for.

Folder layout: ``index.faiss`` (``faiss.write_index``), ``items.csv`` (``id,landmark_id,
path``; row i is FAISS id i; ``landmark_id`` empty, :data:`UNLABELLED`, for a photo indexed without
a landmark: such an index serves ``landmark retrieve`` only, and every reader that names landmarks
refuses it, :func:`refuse_unlabelled`) and ``meta.json`` (kind, dimension, parameters, the model the
embeddings came from: :mod:`landmark.retrieval.provenance`).  ``meta.json`` is also the
pointer to the current files (:func:`landmark.io.commit`): a save writes the new files under
hidden versioned names, then replaces ``meta.json`` in one rename, so a crash at any step
leaves the old index or the new one, never neither.  Writers hold ``.lock`` in the folder
(:func:`landmark.io.folder_lock`) and :meth:`LandmarkIndex.update` reloads the saved index
under it before changing it, so two processes enrolling into one folder both keep their
photos; readers take no lock.  Folders written before versions existed (no ``files`` in
``meta.json``) load as they are.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from ..io import INDEX_FILES as FILES, commit, folder_lock, read_artifact, refuse_existing, temp_path
from .config import KINDS, IndexParams
from .embeddings import Embeddings, iter_chunks
from .index_reader import FILE_KEYS, ITEM_COLUMNS, check_count, check_marker, drop_pages, read_faiss, read_params, search, tune
# the unlabelled-photo rule lives in index_reader (ReadOnlyIndex, read without pandas, needs it too); here for callers
from .index_reader import (ENROL_UNLABELLED_FIX, RECOGNISE_UNLABELLED_FIX, UNLABELLED, refuse_unlabelled,  # noqa: F401
                           unlabelled_count, unlabelled_note)
from .ranking import check_whiten_dim, fit_whitening, whitening_chain

T = TypeVar("T")
AUTO_FLAT_BELOW = 100_000
AUTO_IVF_BELOW = 2_000_000
#: seconds a writer waits for another process saving the same index folder
LOCK_WAIT = 60.0


def vector_bytes(kind: str, n: int, d: int, pq_m: int = 64) -> int:
    """Bytes the ``n`` stored vectors of dimension ``d`` take in an index of ``kind`` (codes
    only: IVF lists add 8 bytes of id per vector, the coarse centroids ``4 * d * nlist``)."""
    per = {"flat": 4 * d, "ivf": 4 * d, "hnsw": 4 * d, "hnswsq": d, "ivfsq": d, "ivfpq": pq_m}[kind]
    return n * per


def choose_kind(n: int, d: int = 0, memory_gb: float = float("inf"), pq_m: int = 64) -> str:
    """The ``auto`` choice for ``n`` vectors of dimension ``d`` within ``memory_gb`` GiB
    (module docstring); ``ivfpq`` when nothing else fits."""
    budget = memory_gb * 2**30
    if n < AUTO_FLAT_BELOW and vector_bytes("flat", n, d) <= budget:
        return "flat"
    if n < AUTO_IVF_BELOW and vector_bytes("ivf", n, d) <= budget:
        return "ivf"
    return "ivfsq" if d and vector_bytes("ivfsq", n, d) <= budget else "ivfpq"


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: ~4 sqrt(n) rounded to a power of two, at most n / 39
    (FAISS warns below 39 training points per centroid), at least 1."""
    if n < 39:
        return 1
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    return int(max(1, min(nlist, n // 39)))


def check_cells(params: IndexParams, n: int, d: int = 0) -> None:
    """Refuse IVF settings that ``n`` vectors cannot train: k-means needs at least one training
    vector per cell, and FAISS stops with an exception otherwise.  Called before anything is
    written (by :meth:`LandmarkIndex.build` and, before embedding, by ``index_embeddings``).

    Raises:
        ValueError: ``params.nlist`` above ``min(n, params.train_size)`` for an IVF kind (explicit or
            auto; ``d``, the vectors' width when known, lets ``auto`` weigh the memory budget).
    """
    kind = choose_kind(n, d, params.memory_gb, params.pq_m) if params.kind == "auto" else params.kind
    trainable = min(n, params.train_size)
    if kind in ("ivf", "ivfsq", "ivfpq") and params.nlist and params.nlist > trainable:
        raise ValueError(f"--nlist {params.nlist}: an IVF index learns its cells from its {trainable} training "
                         f"vectors, so it can have at most {trainable} cells; give --nlist "
                         f"{default_nlist(n)} (or 0 for ~4 sqrt(N)), or --kind flat for so few photos")


@dataclass
class LandmarkIndex:
    """FAISS index + the id, landmark and file of each vector.

    Build with :meth:`build`, enrol more with :meth:`add`, query with :meth:`search`,
    persist with :meth:`save` / :meth:`load`.
    """

    index: faiss.Index
    items: pd.DataFrame
    kind: str
    params: IndexParams = field(default_factory=IndexParams)
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Dimension D of the indexed vectors."""
        return self.index.d

    @property
    def labels(self) -> np.ndarray:
        """Landmark id (str) of each vector, ``[N]`` (:data:`UNLABELLED` for a photo without one)."""
        return self.items["landmark_id"].astype(str).to_numpy()

    @property
    def unlabelled(self) -> int:
        """How many indexed photos have no landmark (:func:`unlabelled_count`)."""
        return unlabelled_count(self.labels)

    @property
    def landmark_count(self) -> int:
        """Distinct landmarks of the labelled photos."""
        labels = self.items["landmark_id"].astype(str)
        return int(labels[labels != UNLABELLED].nunique())

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def searched(self) -> faiss.Index:
        """The index that holds the vectors as searched: the inner index of a whitened one."""
        if isinstance(self.index, faiss.IndexPreTransform):
            return faiss.downcast_index(self.index.index)
        return self.index

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors ``[N, D]`` as the index compares them: whitened and L2-normalised
        (``[N, params.whiten]``) for a whitened index, else unchanged; float32."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if not isinstance(self.index, faiss.IndexPreTransform):
            return x
        for k in range(self.index.chain.size()):
            x = self.index.chain.at(k).apply(x)
        return x

    def stored(self, rows: np.ndarray) -> np.ndarray:
        """The indexed vectors of ``rows`` (int ``[M]``) as searched (after whitening), float32
        ``[M, d]``: exact for flat, HNSW and IVF-Flat kinds, decoded codes for ivfsq / ivfpq."""
        inner = self.searched
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None and not ivf.direct_map.type:
            ivf.make_direct_map()
        rows = np.asarray(rows, dtype=np.int64)
        return inner.reconstruct_batch(rows) if len(rows) else np.zeros((0, inner.d), dtype=np.float32)

    @classmethod
    def build(cls, embeddings: Embeddings, params: IndexParams | None = None, meta: dict | None = None,
              chunk: int = 65536) -> "LandmarkIndex":
        """Build an index over embeddings (streamed in chunks of ``chunk`` rows).  Rows without a
        landmark (no ``landmark_id`` column, or an empty one) are indexed as :data:`UNLABELLED`
        photos: the index then serves ``landmark retrieve`` only (module docstring).

        Raises:
            ValueError: empty embeddings, unknown kind,
                ``pq_m`` not dividing the dimension, more IVF cells than vectors (:func:`check_cells`).
        """
        params = params or IndexParams()
        if len(embeddings) == 0:
            raise ValueError("no embeddings to index")
        if params.kind not in KINDS:
            raise ValueError(f"index kind {params.kind!r}: choose one of {KINDS}")
        n, d = embeddings.vectors.shape
        check_cells(params, n, d)
        kind = choose_kind(n, d, params.memory_gb, params.pq_m) if params.kind == "auto" else params.kind
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n, size=min(n, params.train_size), replace=False))
        if params.whiten:
            check_whiten_dim(params.whiten, len(sample), d)
            chain = whitening_chain(fit_whitening(embeddings.vectors[sample], params.whiten))
            index = faiss.IndexPreTransform(_new_index(kind, params.whiten, n, params))
            for transform in reversed(chain):
                index.prepend_transform(transform)
        else:
            index = _new_index(kind, d, n, params)
        if not index.is_trained:
            train = np.ascontiguousarray(embeddings.vectors[sample], dtype=np.float32)
            drop_pages(embeddings.vectors)   # the sample touched most pages of a memory-mapped file
            index.train(train)
            del train
        out = cls(index, _items(embeddings.items), kind, params, meta=dict(meta or {}))
        out._add_vectors(embeddings.vectors, chunk)
        out._tune()
        return out

    def add(self, embeddings: Embeddings, chunk: int = 65536, unlabelled: bool = False) -> tuple[int, list[str]]:
        """Enrol more labelled images (new photos or whole new landmarks), no retraining; with
        ``unlabelled``, photos without a landmark instead (an archive's: every row :data:`UNLABELLED`).

        Images whose id is already in the index are skipped and returned.  For IVF kinds
        the cells stay those learnt at build time, so enrolling many images of very
        different content lowers recall; rebuild then.

        Returns:
            (number added, ids skipped as duplicates).

        Raises:
            ValueError: no ``landmark_id`` column or an empty one (:data:`UNLABELLED`), or with
                ``unlabelled`` a row that has one; another dimension.
        """
        if unlabelled:
            if embeddings.labels is not None and unlabelled_count(embeddings.labels) < len(embeddings):
                raise ValueError("some photos to add to this archive of photos without a landmark have one; "
                                 "add photos without --label / --labels (an index of labelled photos is built apart)")
        elif embeddings.labels is None or unlabelled_count(embeddings.labels):
            raise ValueError("the photos to enrol have no landmark (landmark_id column missing or empty); enrolment "
                             "needs each photo's landmark: --label NAME, --data DIR or --labels CSV")
        if embeddings.vectors.shape[1] != self.dim:
            raise ValueError(f"embeddings have dimension {embeddings.vectors.shape[1]}, the index {self.dim}")
        known = set(self.items["id"])
        fresh = ~embeddings.items["id"].isin(known).to_numpy()
        skipped = embeddings.items.loc[~fresh, "id"].tolist()
        rows = np.flatnonzero(fresh)
        if len(rows):
            self._add_vectors(embeddings.vectors, chunk, rows)
            self.items = pd.concat([self.items, _items(embeddings.items.iloc[rows])], ignore_index=True)
        return len(rows), skipped

    def search(self, queries: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed vectors of each query.

        Args:
            queries: ``[Q, D]`` float16/32 (L2-normalised).
        Returns:
            (similarities float32 ``[Q, k]`` descending, row indices int64 ``[Q, k]``
            into :attr:`items`; -1 with similarity -inf where fewer than k exist).
        """
        return search(self.index, queries, k, chunk)

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write ``index.faiss``, ``items.csv`` and ``meta.json`` into ``folder`` (module docstring:
        a crash at any step leaves the folder's old index or this one).

        Raises:
            FileExistsError: one of the three files exists and ``overwrite`` is False.
            landmark.io.LockedError: another process kept the folder locked for :data:`LOCK_WAIT` s.
        """
        folder = Path(folder)
        refuse_existing([folder / name for name in FILES], overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(folder, wait=LOCK_WAIT):
            self._write(folder)
        return folder

    @classmethod
    def update(cls, folder: str | Path, change: Callable[["LandmarkIndex"], T]) -> tuple["LandmarkIndex", T]:
        """Change a saved index safely against other processes: under the folder's lock, load
        the index as saved now, call ``change(index)`` (e.g. ``lambda i: i.add(embeddings)``)
        and save it when its items or metadata changed (or a killed writer left files to tidy).

        Returns:
            (the index as saved, what ``change`` returned).

        Raises:
            FileNotFoundError / ValueError: as :meth:`load`; whatever ``change`` raises (nothing is saved).
            landmark.io.LockedError: another process kept the folder locked for :data:`LOCK_WAIT` s.
        """
        folder = Path(folder)
        with folder_lock(folder, wait=LOCK_WAIT):
            index = cls.load(folder)
            count, meta = len(index), json.dumps(index.meta, sort_keys=True, default=str)
            result = change(index)
            leftovers = any(next(folder.glob(f".{name}.*"), None) for name in FILES)   # of a killed writer
            if len(index) != count or json.dumps(index.meta, sort_keys=True, default=str) != meta or leftovers:
                index._write(folder)
        return index, result

    def _write(self, folder: Path) -> None:
        """The files under temporary names, then :func:`landmark.io.commit` (the caller holds the lock)."""
        tmp = {name: temp_path(folder / name) for name in FILES[:2]}
        try:
            faiss.write_index(self.index, str(tmp["index.faiss"]))
            self.items.to_csv(tmp["items.csv"], index=False)
            unlabelled = self.unlabelled
            meta = {**self.meta, "kind": self.kind, "dim": self.dim, "count": len(self),
                    "landmarks": self.landmark_count, **({"unlabelled": unlabelled} if unlabelled else {}),
                    "params": self.params.model_dump()}
            commit([(tmp[name], folder / name) for name in FILES[:2]], folder / "meta.json", meta)
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: str | Path) -> "LandmarkIndex":
        """Read an index folder written by :meth:`save` (the files ``meta.json`` names).

        Raises:
            FileNotFoundError: no index in ``folder``.
            ValueError: ``meta.json`` is missing (a build by an older version interrupted),
                unreadable, or names files that disagree in length or are damaged.
        """
        folder = Path(folder)
        marker = check_marker(folder)
        return read_artifact(marker, lambda meta: cls._read(folder, meta))

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "LandmarkIndex":
        """The index the record ``meta`` (``meta.json``'s content) names."""
        index, files = read_faiss(folder, meta)
        items = pd.read_csv(files["items.csv"], dtype=str, keep_default_na=False)
        if missing := [c for c in ITEM_COLUMNS[:2] if c not in items.columns]:
            raise ValueError(f"{folder / 'items.csv'} has no column {', '.join(missing)}; build the index again")
        check_count(folder, len(items), index, meta)
        params = read_params(folder, meta)
        meta = dict(meta)
        meta.pop("params", None)
        out = cls(index, items, meta.pop("kind"), params, meta={k: v for k, v in meta.items() if k not in FILE_KEYS})
        out._tune()
        return out

    def _add_vectors(self, vectors: np.ndarray, chunk: int, rows: np.ndarray | None = None) -> None:
        total = len(vectors) if rows is None else len(rows)
        with tqdm(total=total, desc=f"index add ({self.kind})", unit="vec", dynamic_ncols=True,
                  disable=total < chunk) as bar:
            if rows is None:
                for _, x in iter_chunks(vectors, chunk):
                    self.index.add(x)
                    bar.update(len(x))
            else:
                for start in range(0, len(rows), chunk):
                    x = np.ascontiguousarray(vectors[rows[start:start + chunk]], dtype=np.float32)
                    self.index.add(x)
                    bar.update(len(x))

    def _tune(self) -> None:
        tune(self.index, self.kind, self.params)


def _new_index(kind: str, d: int, n: int, params: IndexParams) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, ip)
        index.hnsw.efConstruction = params.ef_construction
        return index
    if kind == "hnswsq":
        index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, params.hnsw_m, ip)
        index.hnsw.efConstruction = params.ef_construction
        return index
    nlist = params.nlist or default_nlist(n)
    quantizer = faiss.IndexFlatIP(d)
    if kind == "ivf":
        return faiss.IndexIVFFlat(quantizer, d, nlist, ip)
    if kind == "ivfsq":
        return faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    if kind == "ivfpq":
        if d % params.pq_m:
            raise ValueError(f"pq_m={params.pq_m} must divide the dimension {d}")
        # 8-bit codes need ~39 * 256 training vectors; smaller sets get fewer bits
        nbits = int(min(8, max(1, math.floor(math.log2(max(2, min(n, params.train_size) // 39))))))
        return faiss.IndexIVFPQ(quantizer, d, nlist, params.pq_m, nbits, ip)
    raise ValueError(f"index kind {kind!r}: choose one of {KINDS}")


def _items(frame: pd.DataFrame) -> pd.DataFrame:
    """``id, landmark_id, path`` as str; a missing value (None, NaN: a library caller's photo without a
    landmark) is empty, :data:`UNLABELLED`, as ``items.csv`` reads it back (it was a landmark NaN in memory)."""
    out = frame.reset_index(drop=True).copy()
    for col in ITEM_COLUMNS:
        if col not in out.columns:
            out[col] = ""
    return out[ITEM_COLUMNS].fillna("").astype(str)
