"""Recognition quality on landmarks13: every recipe, every way of answering, and the open-set protocol.

For each recipe (a training preset or a YAML in ``benchmarks/recipes/``) the run is trained
into ``RUNS/<recipe>`` (or reused when it is complete; an interrupted one is resumed), then
the 274 test queries (154 landmark photos, 120 distractors; the 12 test photos that show
another place or none count as non-landmark queries) are answered five ways:

* ``classifier``: softmax arg-max and its probability, one view;
* ``classifier tta10``: 10-crop voting (``landmark.predict(tta=10)``);
* ``kNN``: similarity-weighted vote of the 10 nearest training photos (k=10, p=3);
* ``classifier x reference``: the classifier's answer with the confidence
  ``prob * s_ref^3`` (:func:`landmark.retrieval.knn.reference_confidence`), the index being
  the run's own training photos: what ``landmark predict`` answers for a run with an index;
* ``tta10 x reference``: the same on the 10-crop vote.

Open-set protocol (``--open-set``): whole landmarks are held out of training (three fixed
choices of three landmarks), their test photos are scored as non-landmark queries next to
the 132 others; reported: ``gap``, ``gap_landmarks_only``, how many held-out photos rank
above the median correct answer, and the kNN accuracy on the held-out landmarks' test
photos after enrolling their training photos into the index (no retraining).

    .venv/bin/python benchmarks/quality.py                      # all recipes (trains what is missing)
    .venv/bin/python benchmarks/quality.py --recipes fast --open-set
    .venv/bin/python benchmarks/quality.py --write docs/quality.md   # replace the generated tables there

Settings are never chosen here: this script reports the test set once per recipe.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "landmarks13"
NONLANDMARKS = ROOT.parent / "shared" / "data" / "nonlandmarks"   # help choose the "no landmark" thresholds
RECIPES = {   # name -> preset name or YAML path; in the order of the table
    "frozen-probe": ROOT / "benchmarks" / "recipes" / "frozen_probe.yaml",
    "fast-v1": ROOT / "benchmarks" / "recipes" / "fast_v1.yaml",
    "lpft": ROOT / "benchmarks" / "recipes" / "lpft.yaml",
    "lpft-clean-gentle": ROOT / "benchmarks" / "recipes" / "lpft_clean_gentle.yaml",
    "fast": "fast",
}

HOLDOUTS = [("0", "5", "10"), ("3", "7", "12"), ("1", "8", "11")]   # fixed before any result was seen
METHODS = ["classifier", "classifier tta10", "kNN", "classifier x reference", "tta10 x reference"]


def ensure_run(recipe: str, source, runs: Path, overrides: dict | None = None, tag: str = "",
               data=DATA) -> Path:
    """Train ``recipe`` on ``data`` (a folder, or a list trained on as one) into ``runs/<recipe><tag>``
    unless a finished run is there; returns the run folder."""
    import landmark
    from landmark.retrieval.reference import build_reference
    run = runs / f"{recipe}{tag}"
    if (run / "test_metrics.json").is_file():
        if not (run / "index" / "index.faiss").is_file():
            build_reference(run, NONLANDMARKS)
        return run
    if (run / "config.yaml").is_file():
        landmark.resume(run)
    else:
        overrides = {**(overrides or {}), "data": {**(overrides or {}).get("data", {}),
                                                   "nonlandmarks": str(NONLANDMARKS)}}
        landmark.train(landmark.load_config(source, overrides), data, run)
    return run


def enrolment_photos(run: Path, held: tuple[str, ...]) -> pd.DataFrame:
    """The run's indexed training photos plus every labelled photo of the held-out landmarks
    (those the open-set protocol enrols without retraining)."""
    from landmark.data import read_train, with_paths
    from landmark.retrieval.reference import split_frames
    every = with_paths(read_train(DATA), DATA)
    every = every.assign(landmark_id=every["landmark_id"].astype(str))
    return pd.concat([split_frames(run)["train"], every[every["landmark_id"].isin(held)]], ignore_index=True)


def embed(checkpoint: Path, frame: pd.DataFrame, out: Path, top: int) -> tuple[object, float]:
    """Embeddings (with classifier top-``top``) of ``frame``; returns (embeddings, images/s)."""
    from landmark.retrieval.pipeline import embed_checkpoint
    tic = time.perf_counter()
    emb, _, _ = embed_checkpoint(checkpoint, frame, out, top_classes=top, dtype="float32", workers=2,
                                overwrite=True)
    return emb, len(frame) / (time.perf_counter() - tic)


def answers(run: Path, work: Path, tta: bool = True, queries_from=DATA / "test") -> tuple[dict, float]:
    """Predictions of every method (frames ``id, landmark_id, score``) for the queries of
    ``queries_from`` (a folder or a CSV ``id,path``) and the predict images/s; the reference
    index is the run's own (``run/index``: its training photos)."""
    import landmark
    from landmark.data import read_queries
    from landmark.retrieval.index import LandmarkIndex
    from landmark.retrieval.knn import knn_vote, reference_confidence
    from landmark.retrieval.reference import REFERENCE_K
    ckpt = run / "checkpoints" / "best.pt"
    queries = read_queries(queries_from)
    n_classes = len(landmark.load_model(ckpt)[1]["classes"])
    q, rate = embed(ckpt, queries, work / "queries.npy", n_classes)
    index = LandmarkIndex.load(run / "index")
    sims, rows = index.search(np.asarray(q.vectors, dtype=np.float32), REFERENCE_K)
    neighbours = np.where(rows >= 0, index.labels[np.clip(rows, 0, None)], "")
    ids = q.ids
    label, prob = q.classes[0][:, 0], q.classes[1][:, 0].astype(np.float64)
    out = {"classifier": pd.DataFrame({"id": ids, "landmark_id": label, "score": prob})}
    votes = knn_vote(sims[:, :10], neighbours[:, :10], 3.0).drop_duplicates("query")
    out["kNN"] = pd.DataFrame({"id": ids[votes["query"]], "landmark_id": votes["landmark_id"].to_numpy(),
                               "score": votes["knn"].to_numpy()})
    out["classifier x reference"] = pd.DataFrame({"id": ids, "landmark_id": label, "score": reference_confidence(
        label, prob, sims, neighbours)})
    if tta:
        pred, _ = landmark.predict(ckpt, queries_from, tta=10, index=False)
        pred = pred.set_index("id").loc[ids].reset_index()
        out["classifier tta10"] = pred
        out["tta10 x reference"] = pred.assign(score=reference_confidence(
            pred["landmark_id"].to_numpy(str), pred["score"].to_numpy(), sims, neighbours))
    return out, rate


def recipe_rows(recipe: str, source, runs: Path, work: Path) -> list[dict]:
    from landmark.data.kaggle import read_solution
    from landmark.evaluation import recognition_scores
    import torch
    from landmark.config import load_config
    run = ensure_run(recipe, source, runs)
    cache, stamp = run / "quality_rows.json", (run / "checkpoints" / "best.pt").stat().st_mtime
    if cache.is_file() and json.loads(cache.read_text())["best_mtime"] == stamp:   # answered already
        return json.loads(cache.read_text())["rows"]
    config = load_config(run / "config.yaml")
    history = pd.read_csv(run / "metrics.csv")
    preds, rate = answers(run, work / recipe)
    solution = read_solution(DATA / "test" / "recognition_solution.csv")
    stored = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True).get(
        "reject_threshold") or {}
    base = {"recipe": recipe, "backbone": config.model.backbone.replace("tf_efficientnet_", ""),
            "input": config.stages[-1].crop.size, "train min": round(history["seconds"].sum() / 60, 1),
            "predict img/s": round(rate, 1)}
    thresholds = {"classifier": stored.get("classifier"), "classifier x reference": stored.get("reference")}
    rows = [{**base, "method": m, **recognition_scores(preds[m], solution),
             "verdicts right": verdicts_right(preds[m], solution, thresholds.get(m))} for m in METHODS if m in preds]
    cache.write_text(json.dumps({"best_mtime": stamp, "rows": rows}))
    return rows


def verdicts_right(pred: pd.DataFrame, solution: dict, threshold: float | None) -> str:
    """Share of queries whose landmark / "no landmark" verdict at the run's stored threshold is
    right: a correct landmark at or above it, or a query without that landmark below it."""
    if threshold is None:
        return "-"
    accepted = pred["score"].to_numpy() >= threshold
    correct = np.array([lab in solution[i] for i, lab in zip(pred["id"], pred["landmark_id"])])
    return f"{float(np.mean(np.where(accepted, correct, ~correct))):.3f}"


def open_set_rows(recipe: str, source, runs: Path, work: Path) -> list[dict]:
    """The open-set protocol of the module docstring for one recipe, one row per hold-out choice."""
    from landmark.data import read_queries
    from landmark.data.kaggle import read_solution
    from landmark.evaluation import recognition_scores
    from landmark.retrieval.index import IndexParams, LandmarkIndex
    from landmark.retrieval.knn import knn_vote
    solution = read_solution(DATA / "test" / "recognition_solution.csv")
    rows = []
    for k, held in enumerate(HOLDOUTS):
        run = ensure_run(recipe, source, runs / "open_set", {"data": {"exclude_landmarks": list(held)}}, f"-{k}")
        preds, _ = answers(run, work / f"open_set_{recipe}_{k}", tta=False)
        open_solution = {i: (set() if v & set(held) else v) for i, v in solution.items()}
        pred = preds["classifier x reference"]
        m = recognition_scores(pred, open_solution)
        held_ids = {i for i, v in solution.items() if v & set(held)}
        correct = pred[[bool(open_solution[i] & {lab}) for i, lab in zip(pred["id"], pred["landmark_id"])]]
        median = float(correct["score"].median())
        above = int((pred["id"].isin(held_ids) & (pred["score"] > median)).sum())
        # enrolment: index every training photo, held-out landmarks included, embedded by this model
        ckpt = run / "checkpoints" / "best.pt"
        every, _ = embed(ckpt, enrolment_photos(run, held), work / f"enrol_{k}.npy", 0)
        index = LandmarkIndex.build(every, IndexParams(kind="flat"))
        held_queries = read_queries(DATA / "test").merge(pred.loc[pred["id"].isin(held_ids), ["id"]], on="id")
        q, _ = embed(ckpt, held_queries, work / f"held_{k}.npy", 0)
        sims, idx = index.search(np.asarray(q.vectors, dtype=np.float32), 10)
        top = knn_vote(sims, index.labels[idx], 3.0).drop_duplicates("query")
        enrolled = np.mean([lab in solution[i] for i, lab in zip(q.ids[top["query"]], top["landmark_id"])])
        rows.append({"recipe": recipe, "held out": " ".join(held), "held-out photos": len(held_ids),
                     **m, "held-out above median": above, "enrolled kNN accuracy": round(float(enrolled), 3)})
    return rows


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) and v <= 1.0 else f"{v:g}" if isinstance(v, float) else str(v)
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] +
                     ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows])


def write_section(path: Path, name: str, table: str) -> None:
    """Replace the text between ``<!-- quality:NAME -->`` and ``<!-- /quality:NAME -->`` in ``path``."""
    text = path.read_text()
    start, end = f"<!-- quality:{name} -->", f"<!-- /quality:{name} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    path.write_text(head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from landmark.memory import keep_freed_memory
    keep_freed_memory()   # as the `landmark` command does (landmark/memory.py)
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--open-set", nargs="*", default=None, metavar="RECIPE",
                        help="run the open-set protocol for these recipes (default with the flag: fast)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--write", type=Path, help="markdown file whose generated tables to replace")
    args = parser.parse_args()
    work = args.runs / "work"
    rows = []
    for name in args.recipes:
        rows += recipe_rows(name, RECIPES[name], args.runs, work)
        print(markdown(rows), flush=True)   # progress: the table so far
    table = markdown(sorted(rows, key=lambda r: list(RECIPES).index(r["recipe"])))   # stable: methods keep order
    print(table)
    if args.write:
        write_section(args.write, "recipes", table)
    if args.open_set is not None:
        names = args.open_set or ["fast"]
        open_table = markdown([r for name in names for r in open_set_rows(name, RECIPES[name], args.runs, work)])
        print("\nOpen set\n\n" + open_table)
        if args.write:
            write_section(args.write, "open-set", open_table)


if __name__ == "__main__":
    main()
