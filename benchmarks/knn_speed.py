"""kNN index speed: build and query time, recall@1 and memory for 10k / 100k / 1M 512-d embeddings.

Synthetic, clustered data: database rows are unit vectors around n/20 random centres
(cosine ~0.74 between members of a cluster, like photos of one landmark); each query is
a database row plus noise (cosine ~0.89 to it), so its true nearest neighbour stands out
as a second photo of the same scene would.  For each size: exact search
(``IndexFlatIP``, the reference), IVF-Flat, IVF-PQ and HNSW built by
:class:`landmark.retrieval.index.LandmarkIndex`.  To keep the whole run near 5 minutes on
2 CPU cores the benchmark trains IVF on at most 30 points per cell with nlist ~ sqrt(n)
(the library default is ~4 sqrt(n), better recall per probe, slower to train), builds
HNSW with M=16, efConstruction=40 and skips HNSW above ``--hnsw-max`` (its build is the
slowest step: ~n log n graph insertions).  Recall@1 = share of queries whose approximate
top-1 is the exact top-1.  Memory is the serialised index size (what ``index.faiss``
takes on disk and, roughly, in RAM).  Nothing is asserted; this prints a Markdown table.

    .venv/bin/python benchmarks/knn_speed.py
    .venv/bin/python benchmarks/knn_speed.py --sizes 10000 --queries 200 --threads 2
"""
from __future__ import annotations

import argparse
import math
import time

import faiss
import numpy as np
import pandas as pd

from landmark.retrieval.embeddings import Embeddings
from landmark.retrieval.index import IndexParams, LandmarkIndex

KINDS = ("flat", "ivf", "ivfpq", "hnsw")


def synthetic(n: int, d: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """``[n, d]`` float32 unit vectors around ``max(1, n // 20)`` Gaussian centres (chunked)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 20), d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(len(centres), size=m)] + 0.6 * rng.normal(size=(m, d)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def index_bytes(index: faiss.Index, kind: str, n: int, d: int) -> int:
    if kind == "flat":
        return n * d * 4  # serialising 2 GB just to measure it would be wasteful; this is exact
    return int(faiss.serialize_index(index).nbytes)


def measure(n: int, d: int, n_queries: int, kinds: list[str], hnsw_max: int) -> list[dict]:
    base = synthetic(n, d, seed=n)
    rng = np.random.default_rng(n + 1)
    queries = base[rng.choice(n, n_queries, replace=False)] + 0.5 * rng.normal(size=(n_queries, d)) / np.sqrt(d)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    nlist = 2 ** round(math.log2(math.sqrt(n)))
    params = dict(nlist=nlist, train_size=30 * nlist, hnsw_m=16, ef_construction=40)
    items = pd.DataFrame({"id": np.arange(n).astype(str), "landmark_id": "x", "path": ""})
    emb = Embeddings(base, items)
    rows, exact = [], None
    for kind in kinds:
        if kind == "hnsw" and n > hnsw_max:
            rows.append({"n": n, "kind": kind, "note": f"skipped (n > --hnsw-max {hnsw_max})"})
            continue
        tic = time.perf_counter()
        index = LandmarkIndex.build(emb, IndexParams(kind=kind, **params))
        build = time.perf_counter() - tic
        tic = time.perf_counter()
        _, idx = index.search(queries, 10)
        query = time.perf_counter() - tic
        if kind == "flat":
            exact = idx[:, 0]
        recall = float((idx[:, 0] == exact).mean()) if exact is not None else float("nan")
        rows.append({"n": n, "kind": kind, "nlist": nlist if kind.startswith("ivf") else "", "build_s": round(build, 2), "query_ms": round(1000 * query / n_queries, 3),
                     "qps": round(n_queries / query), "recall@1": round(recall, 3),
                     "memory_MB": round(index_bytes(index.index, kind, n, d) / 2**20, 1), "note": ""})
        print(rows[-1], flush=True)
        del index
    return rows


def markdown(table: pd.DataFrame) -> str:
    """A Markdown pipe table (pandas' to_markdown needs the tabulate package)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated database sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="skip HNSW above this size (slow build)")
    parser.add_argument("--threads", type=int, default=1,
                        help="FAISS threads (0: FAISS default; on shared CPUs OpenMP spinning makes 2 slower than 1)")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rows = []
    start = time.perf_counter()
    for n in (int(s) for s in args.sizes.split(",")):
        rows += measure(n, args.dim, args.queries, args.kinds.split(","), args.hnsw_max)
    table = pd.DataFrame(rows)
    print(f"\nd={args.dim}, {args.queries} queries, top-10, FAISS threads {faiss.omp_get_max_threads()}, "
          f"total {time.perf_counter() - start:.0f} s\n")
    print(markdown(table.fillna("")))


if __name__ == "__main__":
    main()
