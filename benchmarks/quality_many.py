"""Recognition quality at 52 classes: landmarks13 and landmarks_many trained on together.

Each recipe is trained with ``landmark.train(config, [landmarks13, landmarks_many], run)``
(the two GLDv2 folders read as one set: 2,771 photos of 52 landmarks, 3 to 92 per
landmark) into ``RUNS/<recipe>`` (reused when complete, resumed when interrupted), then
answers the two test sets together: 740 queries, 608 of them landmark photos (142 of
landmarks13, 466 of landmarks_many) and 132 non-landmark queries (landmarks13's 120
distractors and 12 photos of another place or none). The methods are those of
``benchmarks/quality.py``; the table adds the accuracy on each test set's landmark photos
(``acc l13``, ``acc many``) and the run's best validation GAP (``val gap``: softmax on the
run's validation photos, what the trainer keeps the best epoch by).

``--open-set``: four landmarks of the 52 are held out of training (three fixed choices,
mixing both folders and the long tail), their test photos are scored as non-landmark
queries; as in ``quality.py``.

The fast recipe's rows also re-score its single-view answers by each scoring of
``quality_many_cv.SCORINGS`` (post-hoc logit adjustment, temperature, classifier + kNN votes),
from its cached class probabilities and embeddings: each one tried in cross-validation is read
once on the test sets.  ``--stopped RECIPE``: a run stopped before its end (CPU time) gets one
validation row per finished epoch, its test columns marked "not run".

``--analysis``: per-class accuracy of the fast preset (``classifier x reference``, what
``landmark predict`` answers) against the landmark's training photos (``train.csv`` rows:
the final fit trains on all of them), Pearson and Spearman coefficients, accuracy per bin
of training photos, and ``docs/many_class_accuracy.png``.

    .venv/bin/python benchmarks/quality_many.py --open-set --analysis --write docs/quality.md   # every recipe
    .venv/bin/python benchmarks/quality_many.py --recipes fast-320 --write docs/quality.md --keep   # add one recipe

Settings are never chosen here: this script reports the test set once per recipe.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (benchmarks/quality.py: ensure_run, answers, embed, markdown, write_section)

ROOT = quality.ROOT
SHARED = ROOT.parent / "shared" / "data"
DATA = [SHARED / "landmarks13", SHARED / "landmarks_many"]
RECIPES = {   # name -> (preset or YAML, overrides); in the order of the table
    "fast": ("fast", {}),
    # the arcface preset's head fitted as fast's probe (same features, split and final fit)
    "arcface-probe": (ROOT / "benchmarks" / "recipes" / "arcface_probe.yaml", {}),
    # the preset as shipped, but on fast's validation split (same fractions and seed: the same photos),
    # so that the two validation GAPs compare; no held-out test split (the test sets are the benchmark's).
    # 3 + 5 epochs: 13.9 min of epochs at a load average of 2 to 7 on the shared 2-core machine
    "arcface": ("arcface", {"data": {"val_frac": 0.15, "test_frac": 0.0}}),
    # the same, cut to 1 frozen + 1 fine-tuning epoch (benchmarks/recipes/arcface_short.yaml): what fitted
    # a session at a load average of 10 to 22 (51 min of epochs), before the full preset was run
    "arcface-short": (ROOT / "benchmarks" / "recipes" / "arcface_short.yaml", {}),
    # the `accurate` preset (fast at 320 px): the one backbone/resolution that led in
    # cross-validation (quality_many_cv.py)
    "fast-320": ("accurate", {}),
    # the finetune preset (LP-FT: fast's softmax probe, then the top 70 % of lite0 at 224 px, 6 epochs) on
    # fast's photos and validation split: train.csv (not train_clean.csv, which `clean: auto` would read)
    # and every class kept, as fast, so that the 417 validation photos are the same
    "finetune": ("finetune", {"data": {"clean": False, "min_images_per_class": 1}}),
    # the finetune preset cut to 1 fine-tuning epoch (benchmarks/recipes/finetune_short.yaml), same split:
    # started when the probe features ran at 11 s per batch (load 6 to 7); the full preset then fitted too
    "finetune-short": (ROOT / "benchmarks" / "recipes" / "finetune_short.yaml", {}),
    # the finetune preset at 320 px (crop 366 / 320, cache width 412, as accurate.yaml changes fast)
    "finetune-320": (ROOT / "benchmarks" / "recipes" / "finetune_320.yaml", {}),
}
#: what ``--recipes`` trains and answers when not given (``make quality``): every recipe of the table,
#: so that a regeneration keeps every row docs/quality.md shows
#: (finetune adds 36 and finetune-short 13.5 minutes of epochs at a load of 4 to 9; finetune-320 is defined, not
#: run: over an hour at that load, and it has no rows to keep)
TABLE_RECIPES = [r for r in RECIPES if r != "finetune-320"]
#: recipes answered without 10-crop voting (CPU time: 740 queries x 10 crops took ~35 min under load)
NO_TTA = {"arcface-probe", "arcface", "arcface-short", "finetune-short"}
#: fixed before any result was seen: one landmarks13 landmark, three of landmarks_many (head and tail)
HOLDOUTS = [("0", "16", "29", "44"), ("6", "26", "36", "48"), ("12", "19", "39", "46")]
PLOT = ROOT / "docs" / "many_class_accuracy.png"


def query_csv(work: Path) -> tuple[Path, dict, dict]:
    """Both test sets as one query CSV (``id,path``) in ``work``; returns it, the merged solution
    ``{id: set of landmark ids}`` and ``{id: folder name}``.

    Raises:
        ValueError: an id in both test sets (the solution would be ambiguous).
    """
    from landmark.data import read_queries
    from landmark.data.kaggle import read_solution
    frames, solution, origin = [], {}, {}
    for root in DATA:
        frames.append(read_queries(root / "test"))
        part = read_solution(root / "test" / "recognition_solution.csv")
        if set(part) & set(solution):
            raise ValueError(f"{root}: test ids repeat another test set's")
        solution.update(part)
        origin.update({i: root.name for i in part})
    queries = pd.concat(frames, ignore_index=True)
    queries = queries[queries["id"].isin(solution.keys())]
    work.mkdir(parents=True, exist_ok=True)
    path = work / "queries.csv"
    queries[["id", "path"]].to_csv(path, index=False)
    return path, solution, origin


def subset(solution: dict, origin: dict, folder: str) -> dict:
    return {i: v for i, v in solution.items() if origin[i] == folder}


def cached_answers(run: Path, work: Path, csv: Path, tta: bool) -> tuple[dict, float]:
    """``quality.answers`` of ``run`` on the queries of ``csv``, kept in ``run/quality_many.json``
    until ``best.pt`` changes."""
    stamp = (run / "checkpoints" / "best.pt").stat().st_mtime
    cache = run / "quality_many.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["best_mtime"] == stamp and saved["tta"] >= tta:
            return {m: pd.DataFrame(v) for m, v in saved["preds"].items()}, saved["rate"]
    preds, rate = quality.answers(run, work, tta=tta, queries_from=csv)
    cache.write_text(json.dumps({"best_mtime": stamp, "rate": rate, "tta": tta,
                                 "preds": {m: p.astype({"landmark_id": str}).to_dict("list") for m, p in preds.items()}}))
    return preds, rate


def recipe_rows(recipe: str, runs: Path, work: Path) -> tuple[list[dict], dict]:
    """Rows of the recipe table and the predictions of every method (cached per best.pt)."""
    from landmark.evaluation import recognition_scores
    from landmark.evaluation.metrics import accuracy
    source, overrides = RECIPES[recipe]
    run = quality.ensure_run(recipe, source, runs, overrides, data=DATA)
    csv, solution, origin = query_csv(work)
    preds, rate = cached_answers(run, work / recipe, csv, tta=recipe not in NO_TTA)
    history = pd.read_csv(run / "metrics.csv")
    base = {"recipe": recipe, "train min": round(history["seconds"].sum() / 60, 1),
            "val gap": round(float(history["val_gap"].max()), 3), "predict img/s": round(rate, 1)}
    l13, many = subset(solution, origin, "landmarks13"), subset(solution, origin, "landmarks_many")
    rows = [{**base, "method": m, **recognition_scores(p, solution), "acc l13": accuracy(p, l13),
             "acc many": accuracy(p, many)} for m, p in ((m, preds[m]) for m in quality.METHODS if m in preds)]
    if recipe == "fast":
        rows += scoring_rows(run, work / recipe, base)
    return rows, preds


def unfinished_rows(recipe: str, runs: Path) -> list[dict]:
    """One row per finished epoch of a run stopped before its end (no test answers: the test columns
    say so), from its ``metrics.csv``; none when no epoch finished."""
    path = runs / recipe / "metrics.csv"
    if not path.is_file():
        return []
    history = pd.read_csv(path)
    return [{"recipe": f"{recipe} (stopped)", "train min": round(history["seconds"][:k + 1].sum() / 60, 1),
             "val gap": round(float(r.val_gap), 3), "predict img/s": "-",
             "method": f"epoch {r.epoch} ({r.stage}), val accuracy {r.val_accuracy:.3f}", "gap": "not run"}
            for k, r in enumerate(history.itertuples())]


def scoring_rows(run: Path, work: Path, base: dict) -> list[dict]:
    """The fast run's single-view answers re-scored by each scoring of ``quality_many_cv.SCORINGS``
    (post-hoc logit adjustment, temperature, classifier + kNN votes; all then ``x reference``) from its
    cached query embeddings and class probabilities (``work/queries.*``, no image is read again), so that
    each one tried in cross-validation is read once on the test sets too.  The prior of the logit
    adjustment: the landmark's share of ``train.csv`` rows (the final fit trains on all of them)."""
    import quality_many_cv as cv
    import torch
    from landmark.data import read_train
    from landmark.evaluation import recognition_scores
    from landmark.evaluation.metrics import accuracy
    from landmark.retrieval.embeddings import load_embeddings
    from landmark.retrieval.index import LandmarkIndex
    from landmark.retrieval.knn import reference_confidence
    from landmark.retrieval.reference import REFERENCE_K
    q = load_embeddings(work / "queries.npy")
    top_labels, top_probs = q.classes
    classes = sorted(set(top_labels[0]), key=int)
    col = {c: j for j, c in enumerate(classes)}
    probs = np.zeros((len(q), len(classes)))
    rows_ = np.repeat(np.arange(len(q)), top_labels.shape[1])
    probs[rows_, np.vectorize(col.get)(top_labels).ravel()] = top_probs.ravel()
    counts = read_train(DATA)["landmark_id"].astype(str).value_counts()
    log_prior = np.log(np.array([counts[c] for c in classes]) / counts.sum())
    index = LandmarkIndex.load(run / "index")
    sims, found = index.search(np.asarray(q.vectors, dtype=np.float32), REFERENCE_K)
    neighbours = np.where(found >= 0, index.labels[np.clip(found, 0, None)], "")
    votes = cv.knn_votes(np.where(found >= 0, sims, -1.0), np.where(found >= 0, neighbours, classes[0]), classes)
    _, solution, origin = query_csv(work.parent)
    l13, many = subset(solution, origin, "landmarks13"), subset(solution, origin, "landmarks_many")
    out = []
    for name, (tau, temperature, knn, confidence) in cv.SCORINGS.items():
        if name in ("softmax", "shipped"):   # the table's classifier and classifier x reference rows
            continue
        prob = torch.tensor((np.log(np.clip(probs, 1e-30, None)) - tau * log_prior) / temperature).softmax(1).numpy()
        prob = (prob + knn * votes) / (1 + knn)
        label = prob.argmax(1)
        labels = np.asarray(classes)[label]
        score = reference_confidence(labels, prob[np.arange(len(label)), label], sims, neighbours)
        pred = pd.DataFrame({"id": q.ids, "landmark_id": labels, "score": score})
        out.append({**base, "method": f"{name} x reference", **recognition_scores(pred, solution),
                    "acc l13": accuracy(pred, l13), "acc many": accuracy(pred, many)})
    return out


def analysis(preds: dict, work: Path, method: str = "classifier x reference") -> tuple[str, dict]:
    """Per-class accuracy against training photos (module docstring): markdown and the stats."""
    from landmark.data import read_train
    from landmark.data.gldv2 import landmark_names
    from landmark.evaluation import per_class_accuracy
    from landmark.reporting.analysis import accuracy_by_count_bin, accuracy_vs_count
    from landmark.reporting.charts import plot_accuracy_by_class
    _, solution, _ = query_csv(work)
    landmarks = {i: v for i, v in solution.items() if v}
    counts = read_train(DATA)["landmark_id"].astype(str).value_counts()
    table, stats = accuracy_vs_count(per_class_accuracy(preds[method], landmarks), counts)
    names = landmark_names(DATA, table["landmark_id"])
    groups = {lid: ("landmarks13" if int(lid) < 13 else "landmarks_many") for lid in table["landmark_id"]}
    plot_accuracy_by_class(table, stats, names, PLOT, groups=groups)
    bins = accuracy_by_count_bin(table)
    lines = [f"{stats['classes']} classes, `{method}`: Pearson r = {stats['pearson']:.2f} "
             f"(p = {stats['pearson_p']:.2g}), Spearman ρ = {stats['spearman']:.2f} (p = {stats['spearman_p']:.2g})",
             "", quality.markdown(bins.to_dict("records")), "",
             "Lowest accuracy: " + "; ".join(
                 f"{names[r.landmark_id]} {r.correct}/{r.queries} ({r.train_images} photos)"
                 for r in table.sort_values(["accuracy", "queries"], ascending=[True, False]).head(8).itertuples())]
    return "\n".join(lines), stats


def open_set_rows(recipe: str, runs: Path, work: Path, choices: int = len(HOLDOUTS)) -> list[dict]:
    """The open-set protocol at 52 classes, one row per hold-out choice (the first ``choices``
    of :data:`HOLDOUTS`; no test-time voting)."""
    from landmark.evaluation import recognition_scores
    source, overrides = RECIPES[recipe]
    csv, solution, _ = query_csv(work)
    rows = []
    for k, held in enumerate(HOLDOUTS[:choices]):
        extra = {**overrides, "data": {**overrides.get("data", {}), "exclude_landmarks": list(held)}}
        run = quality.ensure_run(recipe, source, runs / "open_set", extra, f"-{k}", data=DATA)
        preds, _ = cached_answers(run, work / f"open_set_{recipe}_{k}", csv, tta=False)
        open_solution = {i: (set() if v & set(held) else v) for i, v in solution.items()}
        pred = preds["classifier x reference"]
        held_ids = {i for i, v in solution.items() if v & set(held)}
        correct = pred[[bool(open_solution[i] & {lab}) for i, lab in zip(pred["id"], pred["landmark_id"])]]
        median = float(correct["score"].median())
        rows.append({"recipe": recipe, "held out": " ".join(held), "held-out photos": len(held_ids),
                     **recognition_scores(pred, open_solution),
                     "held-out above median": int((pred["id"].isin(held_ids) & (pred["score"] > median)).sum())})
    return rows


def kept_rows(path: Path, recipes_now: set) -> list[dict]:
    """The rows of ``path``'s generated 'many' table whose recipe is not in ``recipes_now`` (cells as
    text), so that a recipe read once on the test sets keeps its rows when another is added
    (``--keep``); none when the file has no table there."""
    text = path.read_text()
    start, end = "<!-- quality:many -->", "<!-- /quality:many -->"
    if start not in text or end not in text:
        return []
    lines = [ln for ln in text.split(start, 1)[1].split(end, 1)[0].splitlines() if ln.startswith("|")]
    if len(lines) < 3:
        return []
    cells = lambda ln: [c.strip() for c in ln.strip().strip("|").split("|")]
    header = cells(lines[0])
    rows = [dict(zip(header, cells(ln))) for ln in lines[2:]]
    return [r for r in rows if r.get("recipe", "").removesuffix(" (stopped)") not in recipes_now]


def recipe_order(row: dict) -> int:
    """Position of the row's recipe in :data:`RECIPES` (the table's order)."""
    names = list(RECIPES)
    name = str(row["recipe"]).removesuffix(" (stopped)")
    return names.index(name) if name in names else len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from landmark.memory import keep_freed_memory
    keep_freed_memory()
    parser.add_argument("--recipes", nargs="*", default=TABLE_RECIPES, choices=list(RECIPES),
                        help="recipes to train (or reuse) and answer (default: every recipe of the table)")
    parser.add_argument("--stopped", nargs="*", default=[], choices=list(RECIPES),
                        help="recipes whose run was stopped before its end: a validation row per finished epoch")
    parser.add_argument("--open-set", nargs="*", default=None, metavar="RECIPE",
                        help="run the open-set protocol for these recipes (default with the flag: fast)")
    parser.add_argument("--holdouts", type=int, default=len(HOLDOUTS), choices=range(1, len(HOLDOUTS) + 1),
                        help="open set: how many of the fixed hold-out choices to run (each trains a run)")
    parser.add_argument("--analysis", action="store_true", help="per-class analysis of the fast preset")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "many")
    parser.add_argument("--write", type=Path, help="markdown file whose generated tables to replace")
    parser.add_argument("--keep", action="store_true",
                        help="with --write: keep the table's rows of the recipes not run now (their test sets "
                             "were read once already; no retraining to add a recipe)")
    args = parser.parse_args()
    work = args.runs / "work"
    rows, fast_preds = [], None
    for name in args.recipes:
        got, preds = recipe_rows(name, args.runs, work)
        rows += got
        fast_preds = preds if name == "fast" else fast_preds
        print(quality.markdown(rows), flush=True)
    for name in args.stopped:
        rows += unfinished_rows(name, args.runs)
        print(quality.markdown(rows[-1:]) if rows else "", flush=True)
    if rows and args.write:
        if args.keep:
            now = {str(r["recipe"]).removesuffix(" (stopped)") for r in rows}
            rows = sorted(kept_rows(args.write, now) + rows, key=recipe_order)
        quality.write_section(args.write, "many", quality.markdown(rows))
    if args.analysis:
        if fast_preds is None:
            fast_preds = recipe_rows("fast", args.runs, work)[1]
        text, _ = analysis(fast_preds, work)
        print("\n" + text)
        if args.write:
            quality.write_section(args.write, "many-analysis", text)
    if args.open_set is not None:
        table = quality.markdown([r for n in args.open_set or ["fast"] for r in open_set_rows(n, args.runs, work, args.holdouts)])
        print("\nOpen set, 52 classes\n\n" + table)
        if args.write:
            quality.write_section(args.write, "many-open-set", table)


if __name__ == "__main__":
    main()
