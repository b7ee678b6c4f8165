"""Re-ranking on whole directions: local-feature inliers over the default global ranking, verified QE, diffusion.

Reads the embeddings of ``benchmarks/retrieval_quality.py`` (``WORK/emb/*_TAG.npy``, ``--descriptor TAG``:
``224`` by default, e.g. ``ens448`` for the shipped ensemble) and ranks every query of the two unseen
directions (``many->l13``: validation, chooses every setting; ``l13->many``: the target, reported once) with
the default global method (alpha-QE 5 + DBA 5, alpha 3: ``RetrieveConfig``; with ``--diffusion 30 0.95``
the product's ranking, diffusion included, as ``retrieval_quality.py --descriptors TAG`` ranks it), then:

* **local re-ranking** (:func:`landmark.retrieval.local.rerank`'s rule): the first ``top`` candidates get
  ``score = global score + weight * min(inliers, cap) / cap`` when ``inliers >= min_inliers``
  (ALIKED, 512 keypoints at 512 px, mutual NN ratio 0.9 or LightGlue, MAGSAC++, banner masking; features
  from the on-disk cache ``--cache``, pairs cached in ``WORK/<direction>/pairs_<matcher>.csv``);
* **spatially verified query expansion** (Chum et al., ICCV 2007): the query's global descriptor plus the
  descriptors of its verified candidates (``inliers >= min_inliers`` among the first ``top``), searched again;
  verified candidates first (by the re-ranking score), then the new search's order;
* **diffusion** on the index's kNN graph (Iscen et al., CVPR 2017; :class:`landmark.retrieval.ranking.Diffusion`),
  seeded with the query's neighbours, and with its verified candidates added to the seed.

A pair is only matched when both photos' features are in the cache (``--depth``: how many ranks of every query;
a direction whose pairs are incomplete at that depth is reported as such).  ``--fill N`` first extracts the
missing features of every scored query and its first ``N`` global candidates into the cache (first the
queries and ranks 1-10 of every query, then the ranks after; resumable: a photo already cached is skipped).
Prints one Markdown table.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/rerank_directions.py --work runs/retrieval --cache runs/lf
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/rerank_directions.py --descriptor ens448 \
        --diffusion 30 0.95 --directions many->l13 --fill 20 --depth 10 20 --pairs runs/rerank_ens448
"""
from __future__ import annotations

import argparse
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_quality import directions, solution_of, stack  # noqa: E402

from landmark.evaluation.retrieval_metrics import mean_average_precision, precision_at_k  # noqa: E402
from landmark.retrieval.config import LocalConfig, RetrieveConfig, same_landmark_inliers  # noqa: E402
from landmark.retrieval.ranking import (Diffusion, alpha_query_expansion, database_augmentation, knn,  # noqa: E402
                                        normalise)

K = 100
CFG = RetrieveConfig()
DIRS = {"many->l13": "many_to_l13", "l13->many": "l13_to_many"}


def global_rank(q, db, qe, dba, alpha, diffusion=None):
    """(DBA'd database, expanded queries, scores [Q, K], rows [Q, K]) of the global method; with diffusion
    ``(k, alpha)`` its scores divided by each query's best (as ``landmark.retrieval.pipeline.rank_index``)."""
    db = database_augmentation(db, dba, alpha) if dba else db
    sims, rows = knn(q, db, max(K, qe))
    qx = alpha_query_expansion(q, db, qe, alpha, sims, rows) if qe else q
    if diffusion:
        sims, rows = Diffusion(db, k=diffusion[0], alpha=diffusion[1]).rank(qx, K, query_k=CFG.diffusion_seeds)
        sims = sims / np.maximum(sims[:, :1], 1e-12)
    else:
        sims, rows = knn(qx, db, K)
    return db, qx, sims, rows


def match_pairs(folder: Path, matcher_name: str, queries, index, rows, depth: int, cache_dir: Path):
    """{(query id, index id): inliers} of the first ``depth`` candidates whose features are cached (or None:
    not matched), plus per-pair ms; pairs already in ``pairs_<matcher>.csv`` are read, new ones appended."""
    from landmark.retrieval.local import LocalFeatureCache, LocalMatcher, verify_pair
    out_csv = folder / f"pairs_{matcher_name}.csv"
    known = {}
    if out_csv.is_file():
        old = pd.read_csv(out_csv, dtype={"query": str, "candidate": str})
        known = {(a, b): (int(m), float(t)) for a, b, m, t in zip(old["query"], old["candidate"], old.inliers,
                                                                   old.match_ms)}
    matcher = LocalMatcher(LocalConfig(features="aliked", matcher=matcher_name))
    cache = LocalFeatureCache(cache_dir, matcher)
    qpaths = dict(zip(queries["id"], queries["path"]))
    ipaths = index["path"].to_numpy()
    iids = index["id"].to_numpy()

    def cached(path):
        key = cache.key(path)
        return (cache.dir / key[:2] / f"{key}.npz").is_file()

    new, missing = [], 0
    for qi, qid in enumerate(queries["id"]):
        need = [(qid, iids[r], ipaths[r]) for r in rows[qi, :depth] if (qid, iids[r]) not in known]
        if not need:
            continue
        if not cached(qpaths[qid]):
            missing += len(need)
            continue
        fq = cache.get(qpaths[qid])
        for _, cid, cpath in need:
            if not cached(cpath):
                missing += 1
                continue
            fc = cache.get(cpath)
            t = time.perf_counter()
            m = verify_pair(matcher, fq, fc).num_inliers
            ms = 1000 * (time.perf_counter() - t)
            known[qid, cid] = (m, ms)
            new.append((qid, cid, m, ms))
    if new:
        frame = pd.DataFrame(new, columns=["query", "candidate", "inliers", "match_ms"])
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out_csv, mode="a", header=not out_csv.is_file(), index=False)
    return known, missing


def fill_cache(cache_dir: Path, matcher_name: str, queries: pd.DataFrame, index: pd.DataFrame, rows: np.ndarray,
               depth: int, first: int = 10) -> tuple[int, int]:
    """Extract into the feature cache what is missing among ``queries`` (their photos) and their first ``depth``
    candidates (``rows [Q, >= depth]``: index rows, best first): the queries and ranks ``1..first`` of every
    query first, then ranks ``first+1..depth``, so a partial fill leaves whole queries at the smaller depth.
    Resumable: photos already cached are skipped.  Returns (photos extracted now, photos that failed to
    decode or were missing on disk; they are left out and their pairs stay unmatched)."""
    from tqdm import tqdm

    from landmark.data.images import ImageError
    from landmark.retrieval.local import LocalFeatureCache, LocalMatcher
    cache = LocalFeatureCache(cache_dir, LocalMatcher(LocalConfig(features="aliked", matcher=matcher_name)))
    ipaths = index["path"].to_numpy()
    order, seen = [], set()
    for lo, hi in ((0, min(first, depth)), (min(first, depth), depth)):
        for qi, qpath in enumerate(queries["path"]):
            for path in ([qpath] if lo == 0 else []) + [ipaths[r] for r in rows[qi, lo:hi]]:
                if path not in seen:
                    seen.add(path)
                    order.append(path)

    def cached(path):
        key = cache.key(path)
        return (cache.dir / key[:2] / f"{key}.npz").is_file()

    todo = [p for p in order if not cached(p)]
    print(f"fill: {len(order)} photos, {len(order) - len(todo)} cached, {len(todo)} to extract", flush=True)
    failed = 0
    for path in tqdm(todo, desc="ALIKED features", unit="photo"):
        try:
            cache.get(path)
        except (ImageError, OSError) as err:
            failed += 1
            tqdm.write(f"skipped {path}: {err}")
    return len(todo) - failed, failed


def scores(ranked: dict, truth: dict) -> tuple[float, float]:
    return mean_average_precision(ranked, truth, K), precision_at_k(ranked, truth, 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/retrieval"))
    ap.add_argument("--descriptor", default="224", metavar="TAG", help="embeddings WORK/emb/*_TAG.npy "
                    "(e.g. ens448: the shipped ensemble); default 224")
    ap.add_argument("--pairs", type=Path, help="folder of the pair caches <direction>/pairs_<matcher>.csv "
                    "(default WORK; the pairs' inliers do not depend on the descriptor)")
    ap.add_argument("--fill", type=int, metavar="N", default=0, help="first extract the missing features of the "
                    "scored queries and their first N global candidates into --cache (resumable)")
    ap.add_argument("--cache", type=Path, default=Path("runs/lf"))
    ap.add_argument("--matcher", default="mnn", choices=["mnn", "lightglue"])
    ap.add_argument("--depth", type=int, nargs="+", default=[20, 50], help="candidates re-ranked per query")
    ap.add_argument("--diffusion", type=float, nargs=2, metavar=("K", "ALPHA"), help="global ranking with "
                    "diffusion over the QE + DBA default (the benchmark's default when it chose one)")
    ap.add_argument("--directions", nargs="+", default=["many->l13", "l13->many"], help="validation first")
    ap.add_argument("--grid", action="store_true", help="also print the validation mAP@100 of every "
                    "(weight, min inliers) of the local re-ranking at each depth (the grid the choice is made on)")
    ap.add_argument("--no-match", action="store_true", help="only the pairs already in pairs_<matcher>.csv")
    args = ap.parse_args()
    data = directions(args.work, args.descriptor)
    if not all(d in data for d in args.directions):
        raise SystemExit(f"no embeddings {args.work}/emb/*_{args.descriptor}.npy of every set of "
                         f"{', '.join(args.directions)}: run benchmarks/retrieval_quality.py first or change --descriptor")
    pairs_root = args.pairs or args.work
    thr0 = same_landmark_inliers("aliked", args.matcher)
    results, chosen = {}, {}
    for direction in args.directions:   # validation first: it chooses what the target gets
        queries, index, _ = data[direction]
        q, db0 = normalise(stack(queries)), normalise(stack(index))
        diff = (int(args.diffusion[0]), args.diffusion[1]) if args.diffusion else None
        db, qx, sims, rows = global_rank(q, db0, CFG.qe, CFG.dba, CFG.qe_alpha, diff)
        truth = solution_of(queries, index)
        keep = [i for i, qid in enumerate(queries["id"]) if qid in truth]
        qids = queries["id"].to_numpy()
        iids = index["id"].to_numpy()
        base = {qids[i]: list(iids[rows[i]]) for i in keep}
        res = results.setdefault(direction, {})
        if args.fill:
            done, failed = fill_cache(args.cache, args.matcher, queries.iloc[keep], index, rows[keep], args.fill)
            print(f"{direction}: extracted {done} photos, {failed} failed", flush=True)
        res[f"global {args.descriptor}: qe 5 + dba 5" + (f" + diffusion k {diff[0]} alpha {diff[1]:g}" if diff else "")] = \
            scores(base, truth) + ("",)
        # recall ceiling: relevant photos within the first 100 / depth (what re-ordering the head can reach)
        for d in (20, 50, 100):
            rec = np.mean([len(set(base[qids[i]][:d]) & set(truth[qids[i]])) / min(len(truth[qids[i]]), K)
                           for i in keep])
            res[f"(recall of the global top-{d})"] = (float(rec), float("nan"), "")
        depth = max(args.depth)
        if args.no_match:
            pairs, missing = match_pairs(pairs_root / DIRS[direction], args.matcher, queries.iloc[[]], index, rows,
                                         0, args.cache)
        else:
            pairs, missing = match_pairs(pairs_root / DIRS[direction], args.matcher, queries.iloc[keep], index,
                                         rows[keep], depth, args.cache)
        inl = np.full((len(queries), K), -1, dtype=np.int64)
        for i in keep:
            for r in range(K):
                hit = pairs.get((qids[i], iids[rows[i, r]]))
                if hit is not None:
                    inl[i, r] = hit[0]
        ms = np.array([t for (_, _), (_, t) in pairs.items()]) if pairs else np.array([0.0])
        print(f"{direction}: {len(keep)} queries, {len(index)} index photos, pairs matched {int((inl >= 0).sum())}, "
              f"missing features for {missing}", flush=True)
        graph = Diffusion(db, k=diff[0], alpha=diff[1]) if diff else None

        def search(x):
            if graph is None:
                return knn(x, db, K)[1]
            return graph.rank(x, K, query_k=CFG.diffusion_seeds)[1]

        def combined(top, w, thr, cap=100):
            bonus = np.where(inl[:, :top] >= thr, w * np.minimum(inl[:, :top], cap) / cap, 0.0)
            return sims[:, :top] + bonus

        def rerank(sub, top, w, thr):
            s = combined(top, w, thr)
            out = {}
            for i in sub:
                order = np.argsort(-s[i], kind="stable")
                out[qids[i]] = list(iids[rows[i, :top][order]]) + list(iids[rows[i, top:]])
            return out

        def vqe(sub, top, w, thr, beta):
            """verified QE: the (expanded) query + beta * each verified candidate's (DBA'd) descriptor, ranked
            again by the global method; verified candidates first (by the re-ranking score), then the rest."""
            s = combined(top, w, thr)
            ver = (inl[:, :top] >= thr).astype(np.float32)
            exp = normalise(qx + beta * np.einsum("qn,qnd->qd", ver, db[rows[:, :top]]))
            rows2 = search(exp[sub])
            out = {}
            for j, i in enumerate(sub):
                head = [iids[rows[i, c]] for c in np.argsort(-s[i], kind="stable") if ver[i, c]]
                seen = set(head)
                out[qids[i]] = head + [x for x in iids[rows2[j]] if x not in seen][:K - len(head)]
            return out

        for top in args.depth:
            sub = [i for i in keep if (inl[i, :top] >= 0).all()]   # queries whose first `top` pairs are matched
            if not sub:
                print(f"  top-{top}: no query has all its pairs matched yet", flush=True)
                continue
            t_sub = {qids[i]: truth[qids[i]] for i in sub}
            tag = f" [{len(sub)} of {len(keep)} queries]"
            res[f"global, the same queries{tag}"] = (*scores({qids[i]: base[qids[i]] for i in sub}, t_sub), "")
            grid = list(product((0.1, 0.25, 0.5, 1.0, 2.0, 5.0), sorted({thr0, 8, 12, 15, 20})))
            if direction == "many->l13":
                chosen[top, "rerank"] = max(grid, key=lambda g: mean_average_precision(rerank(sub, top, *g), t_sub, K))
                if args.grid:
                    print(f"  grid, local re-rank top-{top}: " + ", ".join(
                        f"w {g[0]:g} min {g[1]}: {mean_average_precision(rerank(sub, top, *g), t_sub, K):.3f}"
                        for g in grid), flush=True)
                w, t = chosen[top, "rerank"]
                chosen[top, "vqe"] = max(((w, t, b) for b in (0.25, 0.5, 1.0, 2.0)),
                                         key=lambda g: mean_average_precision(vqe(sub, top, *g), t_sub, K))
            if (top, "rerank") not in chosen:
                continue
            w, t = chosen[top, "rerank"]
            per_q = np.median([sum(pairs[qids[i], iids[r]][1] for r in rows[i, :top]) for i in sub])
            res[f"local re-rank top-{top} ({args.matcher}), weight {w:g}, min inliers {t}{tag}"] = (
                *scores(rerank(sub, top, w, t), t_sub), f"{np.median(ms):.0f} ms/pair, {per_q:.0f} ms/query")
            w, t, b = chosen[top, "vqe"]
            res[f"verified QE top-{top} ({args.matcher}), beta {b:g}, min inliers {t}{tag}"] = (
                *scores(vqe(sub, top, w, t, b), t_sub), "")
        print(direction, flush=True)
        for name, (m, p, note) in res.items():
            print(f"  {name}: {m:.3f} {p:.3f} {note}", flush=True)
    print("\n| direction | method | mAP@100 | P@10 | cost |")
    print("|---|---|---|---|---|")
    for direction, res in results.items():
        for name, (m, p, note) in res.items():
            print(f"| {direction} | {name} | {m:.3f} | {p:.3f} | {note} |")


if __name__ == "__main__":
    main()
