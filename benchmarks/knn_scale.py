"""kNN at scale: recall@1 against exact search and queries/s of FAISS index options, a Pareto table.

    nice -n 10 .venv/bin/python benchmarks/knn_scale.py --work /tmp/scale/1.6M --subset 200000 \
        --specs "IVF1024,SQ8,Refine(SQfp16)" "HNSW32,SQ8" "HNSW32"
    .venv/bin/python benchmarks/knn_scale.py --work /tmp/scale/1.6M --saved   # the index scale.py built

Reads the vectors :mod:`benchmarks.scale` wrote (``index_vectors.npy``: the L2-normalised
float16 training photos, ``query_vectors.npy``: the queries), takes the first ``--subset``
training vectors (0: all; they are in random class order), computes the exact top-1 of
``--queries`` queries by streamed flat search (cached in the work folder), then for each
FAISS factory string (inner product; ``Refine(SQfp16)`` re-ranks ``k_factor`` x k candidates
from float16 copies, Johnson et al. 2019; ``HNSW32``: Malkov & Yashunin 2018) builds it
(train + add seconds) and, for each search setting (``nprobe`` x ``k_factor`` for IVF,
``efSearch`` for HNSW), searches all queries in one batch with ``--threads`` OpenMP threads
and prints one JSON line: ``spec, n, setting, recall_at_1, queries_per_s, build_s, index_gb``.
``--saved`` also sweeps the index in ``WORK/index`` (the recipe's ``auto`` choice), with and
without a float16 re-ranking copy.  The last line is the Pareto front (fastest setting per
recall level).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def exact_top1(vectors: np.ndarray, queries: np.ndarray, cache: Path) -> np.ndarray:
    """Exact inner-product top-1 row of each query, ``[Q]`` int64, streamed over ``vectors``."""
    import faiss
    if cache.is_file():
        return np.load(cache)
    best_s = np.full(len(queries), -np.inf, dtype=np.float32)
    best_i = np.full(len(queries), -1, dtype=np.int64)
    for start in range(0, len(vectors), 262144):
        flat = faiss.IndexFlatIP(queries.shape[1])
        flat.add(np.asarray(vectors[start:start + 262144], dtype=np.float32))
        s, i = flat.search(queries, 1)
        better = s[:, 0] > best_s
        best_s[better], best_i[better] = s[better, 0], i[better, 0] + start
    np.save(cache, best_i)
    return best_i


def _timed_search(index, queries: np.ndarray, params=None) -> tuple[np.ndarray, float]:
    tic = time.perf_counter()
    _, i = index.search(queries, 1, params=params) if params is not None else index.search(queries, 1)
    return i[:, 0], time.perf_counter() - tic


def sweep(index, name: str, queries: np.ndarray, truth: np.ndarray, base: dict, args) -> list[dict]:
    """Search ``queries`` under each setting of ``index`` and score recall@1 against ``truth``."""
    import faiss
    rows = []
    if "HNSW" in name and "IVF" not in name:
        hnsw = index if hasattr(index, "hnsw") else faiss.downcast_index(index.base_index)
        settings = [{"efSearch": ef} for ef in args.ef]
    else:
        settings = [{"nprobe": p, "k_factor": k} for p in args.nprobe for k in (args.k_factor if "Refine" in name
                                                                                  else [1])]
    for setting in settings:
        if "efSearch" in setting:
            hnsw.hnsw.efSearch = setting["efSearch"]
            params = None
        else:
            faiss.extract_index_ivf(index).nprobe = setting["nprobe"]
            params = faiss.IndexRefineSearchParameters(k_factor=setting["k_factor"]) if "Refine" in name else None
        found, seconds = _timed_search(index, queries, params)
        row = {**base, **setting, "recall_at_1": round(float((found == truth).mean()), 4),
               "queries_per_s": round(len(queries) / seconds, 1),
               "load_avg_1m": round(os.getloadavg()[0], 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def pareto(rows: list[dict]) -> list[dict]:
    """The settings no other setting beats on both recall@1 and queries/s."""
    front = [r for r in rows if not any(o["recall_at_1"] >= r["recall_at_1"] and o["queries_per_s"] > r["queries_per_s"]
                                        or o["recall_at_1"] > r["recall_at_1"] and o["queries_per_s"] >= r["queries_per_s"]
                                        for o in rows)]
    return sorted(front, key=lambda r: r["recall_at_1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--subset", type=int, default=0, help="index the first N training vectors (0: all)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--specs", nargs="*", default=[], help="FAISS factory strings (inner product)")
    parser.add_argument("--saved", action="store_true", help="also sweep WORK/index (scale.py's auto index)")
    parser.add_argument("--nprobe", type=int, nargs="*", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--k-factor", type=float, nargs="*", default=[1, 4, 16])
    parser.add_argument("--ef", type=int, nargs="*", default=[16, 32, 64, 128, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=200_000)
    args = parser.parse_args()
    import faiss
    faiss.omp_set_num_threads(args.threads)
    work = Path(args.work)
    vectors = np.load(work / "index_vectors.npy", mmap_mode="r")
    n = args.subset or len(vectors)
    vectors = vectors[:n]
    queries = np.ascontiguousarray(np.load(work / "query_vectors.npy", mmap_mode="r")[:args.queries], dtype=np.float32)
    tic = time.perf_counter()
    truth = exact_top1(vectors, queries, work / f"exact-{n}-{len(queries)}.npy")
    print(json.dumps({"exact": n, "queries": len(queries), "seconds": round(time.perf_counter() - tic, 1)}), flush=True)
    rows = []
    if args.saved:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from landmark.retrieval.index import LandmarkIndex
        saved = LandmarkIndex.load(work / "index").index
        base = {"spec": f"saved {type(saved).__name__}", "n": int(saved.ntotal), "build_s": None,
                "index_gb": round(os.path.getsize(next((work / "index").glob("*index.faiss*"))) / 2**30, 3)}
        rows += sweep(saved, base["spec"], queries, truth, base, args)
        tic = time.perf_counter()   # re-ranking copy: float16 vectors, no training
        refine = faiss.IndexRefine(saved, faiss.IndexScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16,
                                                                     faiss.METRIC_INNER_PRODUCT))
        for start in range(0, n, 65536):
            refine.refine_index.add(np.asarray(vectors[start:start + 65536], dtype=np.float32))
        refine.ntotal = saved.ntotal
        base = {**base, "spec": base["spec"] + ",Refine(SQfp16)", "build_s": round(time.perf_counter() - tic, 1),
                "index_gb": round(base["index_gb"] + n * vectors.shape[1] * 2 / 2**30, 3)}
        rows += sweep(refine, base["spec"], queries, truth, base, args)
        del refine, saved
    for spec in args.specs:
        index = faiss.index_factory(vectors.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        tic = time.perf_counter()
        if not index.is_trained:
            sample = np.sort(np.random.default_rng(0).choice(n, size=min(n, args.train_size), replace=False))
            index.train(np.asarray(vectors[sample], dtype=np.float32))
        train_s = time.perf_counter() - tic
        for start in range(0, n, 65536):
            index.add(np.asarray(vectors[start:start + 65536], dtype=np.float32))
        build_s = time.perf_counter() - tic
        base = {"spec": spec, "n": n, "train_s": round(train_s, 1), "build_s": round(build_s, 1),
                "index_gb": round(faiss.serialize_index(index).nbytes / 2**30, 3),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
        rows += sweep(index, spec, queries, truth, base, args)
        del index
    print(json.dumps({"pareto": [{k: r[k] for k in ("spec", "n", "recall_at_1", "queries_per_s") if k in r}
                                 | {k: r[k] for k in ("nprobe", "k_factor", "efSearch") if k in r}
                                 for r in pareto(rows)]}), flush=True)


if __name__ == "__main__":
    main()
