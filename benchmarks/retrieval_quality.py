"""Photo retrieval quality on ../shared/data: seen and unseen landmarks, every global method alone and together.

Three directions (positives = index photos of the query's landmark id; mAP@100 is GLDv2's,
``landmark.evaluation.retrieval_metrics``):

* ``seen``: landmarks13's test landmark photos as queries; index = its training photos + its
  non-landmark test photos + ../shared/data/nonlandmarks (distractors).
* ``l13->many`` (unseen): a model trained on landmarks13 alone; queries = landmarks_many's test
  photos; index = its training photos + every landmarks13 photo.
* ``many->l13`` (unseen, the reverse): a model trained on landmarks_many alone; queries =
  landmarks13's test landmark photos; index = landmarks13's training photos + every
  landmarks_many photo.  The validation side: the default method and the settings combined are
  the best here (``--validation``), never chosen on the unseen target ``l13->many``.

The ``fast`` preset is a linear probe on a frozen ImageNet backbone, so both models give the
same global descriptor (GeM, p=3, of tf_efficientnet_lite0): what a model "trained on" a set
changes here is what its whitening is fitted on (its own training photos; ``fit=index``: the
index's photos, no labels used).

Methods (``landmark.retrieval.ranking``): ``whiten d`` (PCA-whitening to d dims), ``ms``
(multi-scale 224, 158, 317 px averaged), ``317px`` (one larger scale), ``qe n`` (alpha-QE over n
neighbours, alpha 3), ``dba n`` (database-side augmentation over n neighbours, alpha 3).

Embeddings come from ``landmark embed CKPT --image-size S`` into ``WORK/emb/{set}_{S}.npy``
(sets: l13_train, l13_test, nonl, many_train, many_test; see docs/retrieval.md for the commands);
directions whose files are missing are skipped, scales likewise.  Writes, per direction,
``WORK/<direction>/solution.csv`` (id,images,Usage), ``index.csv`` / ``queries.csv`` (id,
landmark_id, path) and ``submission_<method>.csv`` for the baseline and the chosen default, the
global rankings the re-ranking benchmark reads; prints one Markdown table.

    PYTHONPATH=src python benchmarks/retrieval_quality.py --work runs/retrieval
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from landmark.data.kaggle import read_solution, write_retrieval_submission
from landmark.evaluation.retrieval_metrics import mean_average_precision, precision_at_k
from landmark.retrieval.embeddings import load_embeddings
from landmark.retrieval.ranking import (WHITEN_EPSILON, Diffusion, alpha_query_expansion, database_augmentation,
                                        fit_whitening, knn, multiscale, normalise, whiten)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZES = {"1": 224, "1/sqrt2": 158, "sqrt2": 317}
K = 100
ALPHA = 3.0


def load_set(work: Path, name: str, size: int) -> pd.DataFrame | None:
    """Items (id, landmark_id, path) and vectors of one photo set at one size; None when not embedded."""
    path = work / "emb" / f"{name}_{size}.npy"
    parts = sorted(path.with_suffix("").glob("*.npy")) if path.with_suffix("").is_dir() else [path]
    if not all(p.with_suffix(".json").is_file() for p in parts):
        return None
    frames = []
    for part in parts:   # a folder: several embeddings files of one set (e.g. a run's RUN/index/embeddings)
        emb = load_embeddings(part)
        items = emb.items.copy()
        if "landmark_id" not in items:
            items["landmark_id"] = ""
        items["vector"] = list(np.asarray(emb.vectors, dtype=np.float32))
        frames.append(items)
    frame = pd.concat(frames).drop_duplicates("id")   # a run index lists its validation photos in both files
    return frame.sort_values("id", kind="stable").reset_index(drop=True)   # rows aligned across scales


def labelled_tests(items: pd.DataFrame, solution: Path) -> pd.DataFrame:
    """Test photos with their landmark id from recognition_solution.csv ('' for none)."""
    truth = read_solution(solution)
    items = items.copy()
    items["landmark_id"] = [next(iter(truth.get(i, set())), "") for i in items["id"]]
    return items


def directions(work: Path, size: int) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """{direction: (queries, index, whitening fit set)} of frames (id, landmark_id, path, vector)."""
    sets = {name: load_set(work, name, size) for name in ("l13_train", "l13_test", "nonl", "many_train", "many_test")}
    if sets["l13_test"] is not None:
        sets["l13_test"] = labelled_tests(sets["l13_test"], DATA / "landmarks13" / "test" / "recognition_solution.csv")
    if sets["many_test"] is not None:
        sets["many_test"] = labelled_tests(sets["many_test"],
                                           DATA / "landmarks_many" / "test" / "recognition_solution.csv")
    out = {}

    def have(*names):
        return all(sets[n] is not None for n in names)

    if have("l13_train", "l13_test", "nonl"):
        test = sets["l13_test"]
        distractors = test[test["landmark_id"] == ""].assign(landmark_id="distractor")
        nonl = sets["nonl"].assign(landmark_id="distractor")
        out["seen"] = (test[test["landmark_id"] != ""], pd.concat([sets["l13_train"], distractors, nonl]),
                       sets["l13_train"])
    if have("l13_train", "l13_test", "many_train", "many_test"):
        l13_all = pd.concat([sets["l13_train"], sets["l13_test"].assign(landmark_id="l13:" + sets["l13_test"]
                                                                          ["landmark_id"])])
        out["l13->many"] = (sets["many_test"], pd.concat([sets["many_train"], l13_all]), sets["l13_train"])
        test = sets["l13_test"]
        out["many->l13"] = (test[test["landmark_id"] != ""],
                            pd.concat([sets["l13_train"], sets["many_train"], sets["many_test"].assign(
                                landmark_id="many:" + sets["many_test"]["landmark_id"])]), sets["many_train"])
    return {k: tuple(f.reset_index(drop=True) for f in v) for k, v in out.items()}


def solution_of(queries: pd.DataFrame, index: pd.DataFrame) -> dict[str, list[str]]:
    """{query id: index ids of its landmark} (queries without any are left out, as GLDv2 does)."""
    by_landmark = index.groupby("landmark_id")["id"].apply(list).to_dict()
    return {q: by_landmark[lid] for q, lid in zip(queries["id"], queries["landmark_id"]) if lid in by_landmark}


def stack(frame: pd.DataFrame) -> np.ndarray:
    return np.stack(frame["vector"].to_numpy()).astype(np.float32)


def rank(q: np.ndarray, db: np.ndarray, *, qe: int = 0, dba: int = 0,
         diffusion: tuple | None = None, alpha: float = ALPHA) -> tuple[np.ndarray, float]:
    """Top-100 rows of each query (alpha-QE / DBA / diffusion ``(k, alpha, query_k)`` as asked) and the
    seconds per query of the search."""
    if dba:
        db = database_augmentation(db, dba, alpha)   # index-side, built once: not counted per query
    graph = Diffusion(db, k=diffusion[0], alpha=diffusion[1]) if diffusion else None   # index-side too
    start = time.perf_counter()
    sims, rows = knn(q, db, max(K, qe))
    if qe:
        sims, rows = knn(alpha_query_expansion(q, db, qe, alpha, sims, rows), db, K)
    if graph is not None:
        _, rows = graph.rank(q if not qe else alpha_query_expansion(q, db, qe, alpha), K, query_k=diffusion[2])
    return rows[:, :K], (time.perf_counter() - start) / max(1, len(q))


def methods(dims: list[int]) -> list[dict]:
    """Every method row: descriptor (scale, whitening) x re-ranking-free expansions."""
    rows = [{"name": "baseline (224 px, cosine)"},
            {"name": "317 px", "scale": "sqrt2"}, {"name": "ms (multi-scale)", "scale": "ms"}]
    rows += [{"name": f"whiten {d} eps {eps:g} (fit: {fit})", "whiten": d, "eps": eps, "fit": fit}
             for fit in ("train", "index") for eps in (WHITEN_EPSILON, 1.0) for d in dims]
    rows += [{"name": f"qe {n}", "qe": n} for n in (2, 5, 10)]
    rows += [{"name": f"dba {n}", "dba": n} for n in (3, 5)]
    return rows


def combos(best: dict) -> list[dict]:
    """Combinations of the best single settings measured on the seen side."""
    w, qe, dba = best.get("whiten"), best.get("qe", 2), best.get("dba", 3)
    white = {"whiten": w, "fit": best.get("fit", "train"), "eps": best.get("eps", WHITEN_EPSILON)}
    tag = f"whiten {w} eps {white['eps']:g} ({white['fit']})"
    return [{"name": f"{tag} + qe {qe}", **white, "qe": qe},
            {"name": f"{tag} + dba {dba}", **white, "dba": dba},
            {"name": f"{tag} + qe {qe} + dba {dba}", **white, "qe": qe, "dba": dba},
            {"name": f"qe {qe} + dba {dba}", "qe": qe, "dba": dba},
            {"name": f"ms + qe {qe} + dba {dba}", "scale": "ms", "qe": qe, "dba": dba},
            {"name": f"ms + {tag} + qe {qe} + dba {dba}", "scale": "ms", **white, "qe": qe, "dba": dba}]


def _common(parts: tuple) -> list[pd.DataFrame]:
    """The frames of one set at several scales, restricted to the ids all of them hold, in one order."""
    ids = set(parts[0]["id"]).intersection(*(set(p["id"]) for p in parts[1:]))
    return [p[p["id"].isin(ids)].drop_duplicates("id").sort_values("id").reset_index(drop=True) for p in parts]


def evaluate(method: dict, data: dict, direction: str) -> dict | None:
    """mAP@100, precision@10 and ms per query of one method in one direction (None: scale missing)."""
    scale = method.get("scale", "1")
    names = [n for n in SIZES if direction in data[n]] if scale == "ms" else [scale]   # ms: the scales embedded
    if any(direction not in data[n] for n in names) or (scale == "ms" and len(names) < 2):
        return None
    method["scales"] = "+".join(str(SIZES[n]) for n in names)
    q_parts, db_parts, fit_parts = zip(*(data[n][direction] for n in names))
    queries, index, fit = q_parts[0], db_parts[0], fit_parts[0]
    if len(names) > 1:   # multi-scale averages rows of the same photos: those embedded at every scale
        q_parts, db_parts, fit_parts = (_common(parts) for parts in (q_parts, db_parts, fit_parts))
        queries, index, fit = q_parts[0], db_parts[0], fit_parts[0]
    q = multiscale([stack(p) for p in q_parts]) if scale == "ms" else stack(queries)
    db = multiscale([stack(p) for p in db_parts]) if scale == "ms" else stack(index)
    f = multiscale([stack(p) for p in fit_parts]) if scale == "ms" else stack(fit)
    if method.get("whiten"):
        pca = fit_whitening(db if method.get("fit") == "index" else f, method["whiten"],
                            method.get("eps", WHITEN_EPSILON))
        q, db = whiten(pca, q), whiten(pca, db)
    rows, seconds = rank(normalise(q), normalise(db), qe=method.get("qe", 0), dba=method.get("dba", 0),
                         diffusion=method.get("diffusion"))
    ids = index["id"].to_numpy()
    ranked = {qid: list(ids[r]) for qid, r in zip(queries["id"], rows)}
    truth = solution_of(queries, index)
    ranked_known = {k: v for k, v in ranked.items() if k in truth}
    return {"map@100": mean_average_precision(ranked_known, truth, K),
            "precision@10": precision_at_k(ranked_known, truth, 10), "ms_per_query": 1000 * seconds,
            "queries": len(truth), "index": len(index), "ranked": ranked, "truth": truth}


def write_files(folder: Path, direction: tuple, result: dict, name: str) -> None:
    """solution.csv, index.csv, queries.csv and submission_<name>.csv of one direction."""
    queries, index, _ = direction
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": q, "images": " ".join(result["truth"].get(q, [])) or "None",
             "Usage": "Public" if q in result["truth"] else "Ignored"} for q in queries["id"]]
    pd.DataFrame(rows).to_csv(folder / "solution.csv", index=False)
    index[["id", "landmark_id", "path"]].to_csv(folder / "index.csv", index=False)
    queries[["id", "landmark_id", "path"]].to_csv(folder / "queries.csv", index=False)
    write_retrieval_submission(result["ranked"], folder / f"submission_{name}.csv")


def recall_at(ranked: dict[str, list[str]], truth: dict[str, list[str]], depth: int = K) -> float:
    """Mean over queries of the fraction of their relevant photos (at most ``depth``) within the first
    ``depth`` of the ranking: the ceiling that re-ordering those can reach (mAP@100 <= recall@100)."""
    return float(np.mean([len(set(ranked[q][:depth]) & set(rel)) / min(len(rel), depth) for q, rel in truth.items()]))


def descriptor_rows(work: Path, tags: list[str]) -> None:
    """``--descriptors``: each descriptor ``TAG`` (embeddings ``WORK/emb/{set}_{TAG}.npy``, e.g. ``224``,
    ``317``, ``ar448`` from ``landmark embed --max-side 448``; ``A+B``: the two averaged, multi-scale)
    with cosine and with the product's ranking (:class:`RetrieveConfig`'s QE + DBA + diffusion), in
    every direction: mAP@100, P@10, recall@100 and ms per query, one Markdown table."""
    from landmark.retrieval.config import RetrieveConfig
    cfg = RetrieveConfig()
    product = {"qe": cfg.qe, "dba": cfg.dba, "diffusion": (cfg.diffusion, cfg.diffusion_alpha, cfg.diffusion_seeds)}
    label = f"diffusion k {cfg.diffusion} alpha {cfg.diffusion_alpha:g} + qe {cfg.qe} + dba {cfg.dba}"
    print("| descriptor | ranking | " + " | ".join(f"{d} {m}" for d in ("seen", "l13->many", "many->l13")
                                                  for m in ("mAP@100", "P@10", "R@100")) + " | ms/query (seen) |")
    print("|---|---|" + "---|" * 10)
    for tag in tags:
        parts = [directions(work, part) for part in tag.split("+")]
        cells = {}
        for ranking, options in (("cosine", {}), (label, product)):
            row = []
            for direction in ("seen", "l13->many", "many->l13"):
                if not all(direction in p for p in parts):
                    row += ["", "", ""]
                    continue
                frames = [p[direction] for p in parts]
                q_parts, db_parts = (_common(f) if len(f) > 1 else list(f) for f in
                                     ([fr[0] for fr in frames], [fr[1] for fr in frames]))
                queries, index = q_parts[0], db_parts[0]
                q = multiscale([stack(f) for f in q_parts]) if len(parts) > 1 else stack(queries)
                db = multiscale([stack(f) for f in db_parts]) if len(parts) > 1 else stack(index)
                rows, seconds = rank(normalise(q), normalise(db), alpha=cfg.qe_alpha, **options)
                ids = index["id"].to_numpy()
                truth = solution_of(queries, index)
                ranked = {qid: list(ids[r]) for qid, r in zip(queries["id"], rows) if qid in truth}
                row += [f"{mean_average_precision(ranked, truth, K):.3f}", f"{precision_at_k(ranked, truth, 10):.3f}",
                        f"{recall_at(ranked, truth):.3f}"]
                if direction == "seen":
                    cells["ms"] = f"{1000 * seconds:.2f}"
            print(f"| {tag} | {ranking} | " + " | ".join(row) + f" | {cells.get('ms', '')} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/retrieval"))
    parser.add_argument("--dims", default="32,512", help="whitening dimensions tried")
    parser.add_argument("--validation", default="many->l13", help="direction that chooses the default and the "
                        "combined settings (not the unseen target l13->many; seen when it is missing)")
    parser.add_argument("--diffusion", action="store_true", help="also the kNN-graph diffusion rows (slower)")
    parser.add_argument("--default", default=None, help="method name to write as submission_default.csv "
                        "(default: the best on --validation)")
    parser.add_argument("--descriptors", default=None, help="only compare these descriptors, comma-separated "
                        "embedding tags (224, 317, ar448 = --max-side 448, ar448+ar317 averaged), cosine and the "
                        "product's ranking, with recall@100")
    args = parser.parse_args()
    if args.descriptors:
        descriptor_rows(args.work, args.descriptors.split(","))
        return
    data = {name: directions(args.work, size) for name, size in SIZES.items()}
    found = sorted(set().union(*(set(d) for d in data.values())), key=["seen", "l13->many", "many->l13"].index)
    print(f"directions: {found}; scales embedded: {[n for n in SIZES if data[n]]}")
    singles = methods([int(d) for d in args.dims.split(",")])
    results = {}

    def run(method: dict) -> None:
        for direction in found:
            r = evaluate(method, data, direction)
            if r is not None:
                results[method["name"], direction] = (method, r)
                print(f"  {method['name']} | {direction} | mAP@100 {r['map@100']:.3f} | P@10 {r['precision@10']:.3f} "
                      f"| {r['ms_per_query']:.2f} ms/query", flush=True)

    for method in singles:
        run(method)
    # the best single setting of each family on the validation side, then their combinations
    side = args.validation if args.validation in found else "seen"
    seen = {m["name"]: (m, r) for (name, d), (m, r) in results.items() if d == side}
    best = {}
    for key in ("whiten", "qe", "dba"):
        family = [(r["map@100"], m) for m, r in seen.values() if key in m and "scale" not in m]
        if family:
            best.update({k: v for k, v in max(family, key=lambda t: t[0])[1].items() if k != "name"})
    for method in combos(best) if best.get("whiten") else []:
        run(method)
    if args.diffusion:   # kNN-graph diffusion (Iscen et al. 2017), alone and over the QE + DBA default
        expansions = [{}] + ([{"qe": best["qe"], "dba": best["dba"]}] if "qe" in best and "dba" in best else [])
        grid = [(dk, da, extra) for dk in (10, 30) for da in (0.8, 0.95) for extra in expansions]
        grid += [(dk, da, expansions[-1]) for dk, da in ((50, 0.8), (50, 0.95), (30, 0.99))] if len(expansions) > 1 \
            else []
        for dk, da, extra in grid:
            tag = f" + qe {extra['qe']} + dba {extra['dba']}" if extra else ""
            run({"name": f"diffusion k {dk} alpha {da:g}{tag}", "diffusion": (dk, da, 10), **extra})
    # the best expansion (QE + DBA, with the best diffusion when measured) at the larger and mixed scales
    on_side = [(r["map@100"], m) for (name, d), (m, r) in results.items()
               if d == (args.validation if args.validation in found else "seen") and "scale" not in m
               and ("qe" in m and "dba" in m) and not m.get("whiten")]
    if on_side:
        top = max(on_side, key=lambda t: t[0])[1]
        for scale, label in (("sqrt2", "317 px"), ("ms", "ms")):
            run({**{k: v for k, v in top.items() if k not in ("name", "scales")}, "scale": scale,
                 "name": f"{label} + {top['name']}"})
            run({"name": f"{label} + qe {top['qe']} + dba {top['dba']}", "scale": scale, "qe": top["qe"],
                 "dba": top["dba"]}) if scale == "sqrt2" else None
    names = list(dict.fromkeys(name for name, _ in results))
    seen_map = {name: results[name, side][1]["map@100"] for name in names if (name, side) in results}
    # the default: best on the validation side among the methods that keep the seen side at the baseline or above
    # (a whitening fitted on the very landmarks it then separates can wreck it)
    base_seen = results[names[0], "seen"][1]["map@100"] if (names[0], "seen") in results else None
    safe = {n: v for n, v in seen_map.items()
            if base_seen is None or ((n, "seen") in results and results[n, "seen"][1]["map@100"] >= base_seen)}
    chosen = args.default or max(safe or seen_map, key=(safe or seen_map).get)
    header = ["method"] + [f"{d} {m}" for d in found for m in ("mAP@100", "P@10")] + ["ms/query (seen)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        scales = next((m.get("scales") for (n, _), (m, _) in results.items() if n == name and m.get("scales")), None)
        cells = [name + (f" [{scales} px]" if scales and "ms" in name else "") + (" **(default)**" if name == chosen else "")]
        for d in found:
            r = results.get((name, d), (None, None))[1]
            cells += [f"{r['map@100']:.3f}", f"{r['precision@10']:.3f}"] if r else ["", ""]
        r = results.get((name, "seen"), (None, None))[1]
        cells.append(f"{r['ms_per_query']:.2f}" if r else "")
        print("| " + " | ".join(cells) + " |")
    for d in found:
        r0 = results[names[0], d][1]
        print(f"{d}: {r0['queries']} queries, {r0['index']} index photos")
        folder = args.work / d.replace("->", "_to_")
        for label, name in (("baseline", names[0]), ("default", chosen)):
            if (name, d) in results:
                write_files(folder, data["1"][d], results[name, d][1], label)
    print(f"default (best mAP@100 on the validation side, {side}, of those not below the baseline on seen): "
          f"{chosen}; submissions in {args.work}/<direction>/")


if __name__ == "__main__":
    main()
