"""Diffusion on each query's own candidates against diffusion on the whole index's graph.

``landmark retrieve`` diffuses an index of up to ``DIFFUSION_MAX_DENSE`` photos on its whole
kNN graph (a dense inverse computed once per index) and a larger one per query, on the graph of
the query's ``diffusion_candidates`` nearest photos (``landmark.retrieval.ranking.local_diffusion``).
This compares the two on the retrieval benchmark's directions (benchmarks/retrieval_quality.py:
its embeddings in ``WORK/emb``), through the product's own ``rank_index`` (QE 5, DBA 5, k 30,
alpha 0.95), with the local path forced on these 3k-photo indexes; prints one Markdown table:
mAP@100, precision@10, ms per query (search + diffusion; the dense inverse and DBA, paid once
per index, apart).

    PYTHONPATH=src python benchmarks/local_diffusion.py --work runs/retrieval --size 224 --candidates 300 1000
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import landmark.retrieval.ranking as ranking
from landmark.evaluation.retrieval_metrics import mean_average_precision, precision_at_k
from landmark.retrieval.config import IndexParams, RetrieveConfig
from landmark.retrieval.embeddings import Embeddings
from landmark.retrieval.index import LandmarkIndex
from landmark.retrieval.pipeline import augmented_database, rank_index
from retrieval_quality import K, directions, solution_of, stack


def score(index: LandmarkIndex, queries: pd.DataFrame, items: pd.DataFrame, config: RetrieveConfig,
          dense_limit: int) -> dict:
    """mAP@100, P@10 and ms per query of ``rank_index`` with ``DIFFUSION_MAX_DENSE`` set to ``dense_limit``."""
    saved = ranking.DIFFUSION_MAX_DENSE
    ranking.DIFFUSION_MAX_DENSE = dense_limit
    try:
        tic = time.perf_counter()
        augmented_database(index, config)   # index-side work, once per index
        once = time.perf_counter() - tic
        tic = time.perf_counter()
        _, rows = rank_index(index, stack(queries), config)
        per_query = (time.perf_counter() - tic) / max(1, len(queries))
    finally:
        ranking.DIFFUSION_MAX_DENSE = saved
    ids = items["id"].to_numpy()
    ranked = {q: list(ids[r[r >= 0]]) for q, r in zip(queries["id"], rows)}
    truth = solution_of(queries, items)
    ranked = {k: v for k, v in ranked.items() if k in truth}
    return {"map": mean_average_precision(ranked, truth, K), "p10": precision_at_k(ranked, truth, 10),
            "ms": 1000 * per_query, "index_s": once}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/retrieval"))
    parser.add_argument("--size", default="224", help="embedding tag: WORK/emb/<set>_<size>.npy")
    parser.add_argument("--candidates", type=int, nargs="+", default=[300, 1000])
    args = parser.parse_args()
    rows = []
    for direction, (queries, items, _) in directions(args.work, args.size).items():
        index = LandmarkIndex.build(Embeddings(items=items[["id", "landmark_id", "path"]].reset_index(drop=True),
                                               vectors=stack(items)), IndexParams(kind="flat"))
        config = RetrieveConfig(top_k=K)
        settings = [("whole graph (dense inverse)", config, ranking.DIFFUSION_MAX_DENSE)] + [
            (f"local, {m} candidates", config.model_copy(update={"diffusion_candidates": m}), 0)
            for m in args.candidates]
        for name, cfg, limit in settings:
            index._augmented = None   # each setting pays its own index-side work
            r = score(index, queries, items, cfg, limit)
            rows.append(f"| {direction} | {name} | {r['map']:.3f} | {r['p10']:.3f} | {r['ms']:.1f} | {r['index_s']:.1f} |")
            print(rows[-1], flush=True)
    print("\n| direction | diffusion | mAP@100 | P@10 | ms/query | index-side s |\n|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
