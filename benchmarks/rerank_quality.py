"""Re-ranking quality and cost: a retrieval submission's top-k re-ordered by local-feature inliers.

Input: a Kaggle retrieval submission (``id,images``: query id, up to 100 index ids, best first; e.g.
``landmark retrieve``'s output or benchmarks/global_ranking.py's), its solution (``id,images,Usage``)
and the folders holding the photos (GLDv2 layout or any tree: every ``<id>.jpg`` below them is found).
For each query the first k candidates (k = each --top-k) are verified with
:func:`landmark.retrieval.local.verify_pair` and re-ranked as :func:`landmark.retrieval.local.rerank`
does, with the global score of rank r (0-based) taken as ``1 - r / 100`` (a submission has no scores).

Prints one table: mAP@100 (GLDv2 definition) and precision@10 of the global ranking and of each
re-ranking, ms per pair (matching + MAGSAC++, features read from the cache) and ms per query
(the sum over its k pairs, plus cache reads).  Features are extracted once into --cache (the first run
pays for extraction; its time is reported separately).

Run (unseen landmarks, subset of 40 queries):
  nice -n 10 .venv/bin/python benchmarks/rerank_quality.py --submission sub.csv --solution sol.csv \\
      --images ../shared/data/landmarks_many --images ../shared/data/landmarks13 --cache /tmp/lf --queries 40
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from landmark.evaluation.retrieval_metrics import mean_average_precision  # noqa: E402
from landmark.retrieval.config import LocalConfig, same_landmark_inliers  # noqa: E402
from landmark.retrieval.local import LocalFeatureCache, LocalMatcher, verify_pair  # noqa: E402


def read_ranked(path: Path) -> dict[str, list[str]]:
    """id -> space-separated ``images`` as a list (empty cells: [])."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {i: s.split() for i, s in zip(frame["id"], frame["images"])}


def precision_at(ranked: dict[str, list[str]], solution: dict[str, list[str]], k: int = 10) -> float:
    return float(np.mean([len(set(ranked.get(q, [])[:k]) & set(rel)) / k for q, rel in solution.items()]))


def reorder(ids: list[str], inliers: list[int], k: int, *, weight: float, cap: int, threshold: int) -> list[str]:
    """The first ``k`` of ``ids`` sorted by ``1 - r/100 + bonus`` (rerank's rule), the rest after."""
    score = [1 - r / 100 + (weight * min(m, cap) / cap if m >= threshold else 0.0)
             for r, m in enumerate(inliers[:k])]
    head = [ids[r] for r in sorted(range(len(score)), key=lambda r: -score[r])]
    return head + ids[k:]


def match_pairs(queries, submission, paths, cache, matcher, kmax):
    """(pairs frame, ids not found, photos extracted, extraction seconds) of every query's first kmax."""
    # 1. extraction (once; what is cached already costs a read)
    needed = {q for q in queries} | {c for q in queries for c in submission.get(q, [])[:kmax]}
    missing = sorted(i for i in needed if i not in paths)
    t0 = time.perf_counter()
    misses0 = cache.misses
    for i in sorted(needed - set(missing)):
        cache.get(paths[i])
    extract_s = time.perf_counter() - t0
    extracted = cache.misses - misses0

    # 2. matching, per (query, candidate), features from the cache
    rows = []
    for q in queries:
        if q not in paths:
            continue
        tq = time.perf_counter()
        fq = cache.get(paths[q])
        read_ms = 1000 * (time.perf_counter() - tq)
        for r, c in enumerate(submission.get(q, [])[:kmax]):
            if c not in paths:
                rows.append((q, c, r, 0, 0.0, read_ms))
                continue
            t = time.perf_counter()
            fc = cache.get(paths[c])
            t1 = time.perf_counter()
            m = verify_pair(matcher, fq, fc).num_inliers
            t2 = time.perf_counter()
            rows.append((q, c, r, m, 1000 * (t2 - t1), 1000 * (t1 - t) + (read_ms if r == 0 else 0.0)))
    pairs = pd.DataFrame(rows, columns=["query", "candidate", "rank", "inliers", "match_ms", "read_ms"])
    return pairs, missing, extracted, extract_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submission", type=Path, required=True)
    ap.add_argument("--solution", type=Path, required=True)
    ap.add_argument("--images", type=Path, action="append", required=True, help="folder of photos (repeat)")
    ap.add_argument("--cache", type=Path, required=True, help="local-feature cache folder")
    ap.add_argument("--top-k", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--queries", type=int, default=0, help="first N solution queries by id (0: all)")
    ap.add_argument("--features", default="aliked", choices=["aliked", "disk", "rootsift"])
    ap.add_argument("--matcher", default="lightglue", choices=["lightglue", "mnn"])
    ap.add_argument("--weight", type=float, nargs="+", default=[LocalConfig().weight])
    ap.add_argument("--min-inliers", type=int, default=None, help="default: same_landmark_inliers(features)")
    ap.add_argument("--cap", type=int, default=LocalConfig().inlier_cap)
    ap.add_argument("--pairs-csv", type=Path, help="write every (query, candidate, rank, inliers, ms) here")
    ap.add_argument("--from-pairs", type=Path, help="read the pairs of an earlier --pairs-csv instead of matching "
                                                     "(sweeps of --min-inliers / --weight)")
    args = ap.parse_args()

    submission, solution = read_ranked(args.submission), read_ranked(args.solution)
    solution = {q: rel for q, rel in solution.items() if rel}
    queries = sorted(solution)[:args.queries] if args.queries else sorted(solution)
    solution = {q: solution[q] for q in queries}
    paths: dict[str, Path] = {}
    for folder in args.images:
        for p in folder.rglob("*.jpg"):
            paths.setdefault(p.stem, p)
    matcher = LocalMatcher(LocalConfig(features=args.features, matcher=args.matcher))
    cache = LocalFeatureCache(args.cache, matcher)
    threshold = same_landmark_inliers(args.features, args.matcher) if args.min_inliers is None else args.min_inliers
    kmax = max(args.top_k)

    if args.from_pairs:
        pairs = pd.read_csv(args.from_pairs, dtype={"query": str, "candidate": str})
        pairs = pairs[pairs["query"].isin(set(queries)) & (pairs["rank"] < kmax)]
        missing, extracted, extract_s = [], 0, 0.0
    else:
        pairs, missing, extracted, extract_s = match_pairs(queries, submission, paths, cache, matcher, kmax)
        if args.pairs_csv:
            pairs.to_csv(args.pairs_csv, index=False)

    relevant = pd.Series([c in set(solution[q]) for q, c in zip(pairs["query"], pairs["candidate"])], dtype=bool)
    print(f"{len(queries)} queries ({len(missing)} photos not found), {args.features} + {args.matcher}, "
          f"{matcher.config.max_keypoints} keypoints at {matcher.config.max_side} px, threshold {threshold} inliers, "
          f"{len(pairs)} pairs; extraction of {extracted} photos: {extract_s:.0f} s "
          f"({1000 * extract_s / max(extracted, 1):.0f} ms per photo)")
    if len(pairs):
        print(f"inliers of relevant candidates: median {pairs.inliers[relevant].median():.0f}; "
              f"of others: median {pairs.inliers[~relevant].median():.0f}, "
              f"{(pairs.inliers[~relevant] >= threshold).mean():.1%} reach the threshold; "
              f"relevant reaching it: {(pairs.inliers[relevant] >= threshold).mean():.1%}\n")
    print("| ranking | mAP@100 | P@10 | ms per pair (median) | ms per query (median) |")
    print("|---|---:|---:|---:|---:|")
    base = {q: submission.get(q, []) for q in queries}
    print(f"| global only | {mean_average_precision(base, solution):.3f} | {precision_at(base, solution):.3f} | | |")
    by_query = {q: g.sort_values("rank") for q, g in pairs.groupby("query")}
    for k in args.top_k:
        sub = pairs[pairs["rank"] < k]
        per_query = sub.groupby("query").apply(lambda g: g.match_ms.sum() + g.read_ms.sum(), include_groups=False)
        for w in args.weight:
            ranked = {q: (reorder(base[q], by_query[q].inliers.tolist(), k, weight=w, cap=args.cap,
                                  threshold=threshold) if q in by_query else base[q]) for q in queries}
            print(f"| re-ranked top-{k}, weight {w:g} | {mean_average_precision(ranked, solution):.3f} | "
                  f"{precision_at(ranked, solution):.3f} | {sub.match_ms.median():.0f} | {per_query.median():.0f} |")


if __name__ == "__main__":
    main()
