"""'No landmark' without ``--nonlandmarks``, and few-photo enrolment, on the open-set protocol (landmarks13).

For each hold-out of ``benchmarks/quality.py``'s ``HOLDOUTS`` (three landmarks out of training,
fixed before any result was seen) the ``fast`` preset is trained on landmarks13 without them,
without ``--nonlandmarks`` and without the final fit (so the checkpoint is the model its
thresholds were chosen with) into ``RUNS/fast-<k>`` (reused when complete).

Thresholds (all chosen on the run's validation photos, never on test):

* ``0 (before)``: what a run trained without ``--nonlandmarks`` stored before (every photo named);
* ``leave-class-out``: the default now, stored by ``landmark train``
  (:mod:`landmark.retrieval.reference`);
* ``non-landmark photos``: validation photos plus half of ``nonlandmarks`` (split by id), as
  ``train --nonlandmarks`` chooses it, on the same run.

Queries: landmarks13's test photos (those of trained landmarks must be named; those of the
held-out landmarks and the distractors must get "no landmark") and the other half of
``nonlandmarks``; answered by the run's recogniser with its index (reference scoring).

Enrolment: into a copy of the run's index, the first n (1, 3, 5) training photos of each
held-out landmark are enrolled (:func:`landmark.retrieval.pipeline.enrol_index`: per-landmark
calibrated thresholds); queries: the held-out landmarks' other photos (their other training
photos and their test photos), the non-landmark queries above and the trained landmarks'
test photos.  Where the ``local`` extra is installed the recogniser confirms enrolled landmarks
by local features (:mod:`landmark.retrieval.confirm`; ``--no-confirm``: the global scores
alone); the queries' features are extracted once (timed: ``ms per query: extraction``), then
each n is matched (``ms per query: matching``, features read from the disk cache).

    .venv/bin/python benchmarks/no_landmark.py --write docs/quality.md
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATA, HOLDOUTS, NONLANDMARKS, ROOT, markdown, write_section  # noqa: E402

ENROLLED = (1, 3, 5)


def ensure_run(runs: Path, k: int, held: tuple[str, ...]) -> Path:
    """The fast preset without the held-out landmarks, no ``--nonlandmarks``, no final fit."""
    import landmark
    run = runs / f"fast-{k}"
    if (run / "test_metrics.json").is_file():
        return run
    if (run / "config.yaml").is_file():
        landmark.resume(run)
    else:
        config = landmark.load_config("fast", {"data": {"exclude_landmarks": list(held), "final_fit": False}})
        landmark.train(config, DATA, run)
    return run


def half(frame: pd.DataFrame, which: int) -> pd.DataFrame:
    """A fixed half of the rows (by a hash of the id): 0 chooses, 1 evaluates."""
    bit = frame["id"].map(lambda i: hashlib.sha256(str(i).encode()).digest()[0] & 1)
    return frame[bit.to_numpy() == which].reset_index(drop=True)


def outputs(rec, paths: list[str], batch: int = 16) -> tuple[object, np.ndarray]:
    """Softmax ``[N, 1, C]`` and embeddings ``[N, D]`` of the photos (one pass each)."""
    import torch
    from landmark.data import load_image
    probs, vectors = [], []
    t = rec.transform(1)
    for start in range(0, len(paths), batch):
        x = torch.stack([t(load_image(p)) for p in paths[start:start + batch]])
        p, v = rec.forward(x, 1)
        probs.append(p)
        vectors.append(v)
    return torch.cat(probs), np.concatenate(vectors)


def best(rec, probs, vectors) -> tuple[np.ndarray, np.ndarray]:
    """The recogniser's answer (landmark id, score) of each photo."""
    ranked = rec._score(probs, vectors, 1)
    return (np.array([c[0][0] if c else "" for c in ranked]), np.array([c[0][1] if c else 0.0 for c in ranked]))


def threshold_rows(k: int, held, rec, run: Path, queries: pd.DataFrame, probs, vectors,
                   nonlandmarks_a: pd.DataFrame) -> list[dict]:
    """Right decisions on the open-set queries under each threshold."""
    from landmark.retrieval.embeddings import load_embeddings
    from landmark.retrieval.reference import choose_thresholds
    val = load_embeddings(run / "index" / "embeddings" / "validation.npy")
    nl_probs, nl_vectors = outputs(rec, nonlandmarks_a["path"].tolist())
    top = nl_probs[:, 0].topk(val.classes[0].shape[1], dim=1)
    nl_labels = np.asarray(rec.classes, dtype=object)[top.indices.numpy()].astype(str)
    truth = np.concatenate([val.items["landmark_id"].astype(str).to_numpy(), np.full(len(nonlandmarks_a), "")])
    chosen, record = choose_thresholds(
        rec.index, truth, np.concatenate([val.classes[0].astype(str), nl_labels]),
        np.concatenate([val.classes[1], top.values.numpy()]),
        np.concatenate([np.asarray(val.vectors, np.float32), nl_vectors]), simulate_unknown=False)
    lco = rec._checkpoint.get("threshold_method", {})
    labels, scores = best(rec, probs, vectors)
    truth = queries["truth"].to_numpy()
    known = truth != ""
    rows = []
    for name, t in (("0 (before)", 0.0), ("leave-class-out (default)", float(lco.get("reference", rec.threshold))),
                    (f"non-landmark photos ({len(nonlandmarks_a)})", chosen["reference"])):
        named = scores >= t
        right = np.where(known, named & (labels == truth), ~named)
        rows.append({"hold-out": " ".join(held), "threshold from": name, "threshold": round(t, 4),
                     "right decisions": round(float(right.mean()), 3),
                     "known named correctly": round(float(right[known].mean()), 3),
                     "held-out landmarks rejected": round(float(right[queries["kind"].eq("held-out").to_numpy()].mean()), 3),
                     "non-landmarks rejected": round(float(right[queries["kind"].eq("no landmark").to_numpy()].mean()), 3)})
    return rows


def enrolment_rows(k: int, held, rec, run: Path, work: Path, held_photos: pd.DataFrame, h_probs, h_vectors,
                   queries: pd.DataFrame, probs, vectors) -> list[dict]:
    """Recall on held-out landmarks after enrolling n of their photos, and what it costs the others."""
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.local import LocalFeatureCache
    from landmark.retrieval.pipeline import enrol_index
    original = rec.index
    rows, extract_ms = [], None
    for n in ENROLLED:
        folder = work / f"enrol-{k}-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(run / "index", folder, ignore=shutil.ignore_patterns("embeddings"))
        first = held_photos.groupby("landmark_id", sort=False).head(n).index.to_numpy()
        emb = Embeddings(h_vectors[first], held_photos.loc[first, ["id", "landmark_id", "path"]].reset_index(drop=True),
                         model=original.meta.get("model"))
        rec.index, result = enrol_index(folder, emb, classes=rec.classes, threshold=rec.threshold, name_of=rec.name)
        rec.rescore()
        rest = np.setdiff1d(np.arange(len(held_photos)), first)
        q_truth = np.concatenate([held_photos["landmark_id"].to_numpy()[rest], queries["truth"].to_numpy()])
        q_kind = np.concatenate([np.full(len(rest), "held-out"), queries["kind"].to_numpy()])
        import torch
        q_vectors = np.concatenate([h_vectors[rest], vectors])
        ranked = rec._score(torch.cat([h_probs[rest], probs]), q_vectors, 1)
        q_paths = [*held_photos["path"].to_numpy()[rest], *queries["path"]]
        if rec.confirmer is not None:   # local features (retrieval/confirm.py): extracted once, timed apart
            rec.confirmer.cache = LocalFeatureCache(work / "local-features", rec.confirmer.matcher)
            if extract_ms is None:
                start = time.perf_counter()
                misses = rec.confirmer.cache.misses
                for p in q_paths:
                    rec.confirmer.cache.get(p)
                done = rec.confirmer.cache.misses - misses
                extract_ms = round(1000 * (time.perf_counter() - start) / done) if done else "cached"
        ranked, inliers = rec.confirm_enrolled(ranked, q_paths, q_vectors)
        labels = np.array([c[0][0] if c else "" for c in ranked])
        scores = np.array([c[0][1] if c else 0.0 for c in ranked])
        named = np.array([rec.decide(lab, s, n)[0] for lab, s, n in zip(labels, scores, inliers)])
        c = rec.confirmer
        enrolled = q_kind == "held-out"
        non = q_kind == "no landmark"
        known = q_kind == "known"
        cover = result["landmarks"]
        rows.append({"hold-out": " ".join(held), "photos enrolled": n, "held-out queries": int(enrolled.sum()),
                     "held-out recognised": round(float((named & (labels == q_truth))[enrolled].mean()), 3),
                     "non-landmarks named as enrolled": round(float((named & np.isin(labels, held))[non].mean()), 3),
                     "known still right": round(float((named & (labels == q_truth))[known].mean()), 3),
                     "local features": "off" if c is None else f"mnn >= {c.min_inliers} inliers",
                     "ms per query: extraction": "" if c is None else extract_ms,
                     "ms per query: matching": "" if c is None or not c.queries else round(1000 * c.seconds / c.queries),
                     "thresholds": " ".join(f"{cover[h]['threshold']:.3f}" for h in held),
                     "coverage": " ".join(cover[h]["coverage"] for h in held)})
        shutil.rmtree(folder, ignore_errors=True)
    rec.index = original
    rec.rescore()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "no_landmark")
    parser.add_argument("--holdouts", type=int, default=len(HOLDOUTS), help="how many of the hold-outs")
    parser.add_argument("--write", type=Path, default=None, help="replace the tables in this markdown file")
    parser.add_argument("--no-confirm", action="store_true", help="no confirmation of enrolled landmarks by local features")
    args = parser.parse_args()
    from landmark import Recognizer
    from landmark.data import read_queries, read_train, with_paths
    from landmark.memory import keep_freed_memory
    keep_freed_memory()
    work = args.runs / "work"
    work.mkdir(parents=True, exist_ok=True)
    solution = pd.read_csv(DATA / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
    test = read_queries(DATA / "test").merge(solution[["id", "landmarks"]], on="id")
    nonlandmarks = read_queries(NONLANDMARKS)
    every = with_paths(read_train(DATA), DATA)
    every["landmark_id"] = every["landmark_id"].astype(str)
    t_rows, e_rows = [], []
    for k, held in enumerate(HOLDOUTS[:args.holdouts]):
        run = ensure_run(args.runs, k, held)
        rec = Recognizer.load(run, confirm_enrolled=False if args.no_confirm else None)
        truth = test["landmarks"].str.split().str[0].fillna("")
        kind = np.where(truth.isin(held), "held-out", np.where(truth == "", "no landmark", "known"))
        queries = pd.concat([
            pd.DataFrame({"path": test["path"], "truth": np.where(kind == "known", truth, ""), "kind": kind}),
            half(nonlandmarks, 1).assign(truth="", kind="no landmark")[["path", "truth", "kind"]]], ignore_index=True)
        probs, vectors = outputs(rec, queries["path"].tolist())
        t_rows += threshold_rows(k, held, rec, run, queries, probs, vectors, half(nonlandmarks, 0))
        held_photos = every[every["landmark_id"].isin(held)].reset_index(drop=True)
        h_probs, h_vectors = outputs(rec, held_photos["path"].tolist())
        # the held-out landmarks' test photos are enrolment queries: take them out of the other queries
        is_held = queries["kind"].eq("held-out").to_numpy()
        held_test = queries[is_held].assign(landmark_id=truth[kind == "held-out"].to_numpy())
        e_rows += enrolment_rows(
            k, held, rec, run, work,
            pd.concat([held_photos, held_test[["landmark_id", "path"]].assign(id=held_test["path"])], ignore_index=True),
            __import__("torch").cat([h_probs, probs[is_held]]), np.concatenate([h_vectors, vectors[is_held]]),
            queries[~is_held].reset_index(drop=True), probs[~is_held], vectors[~is_held])
        print(markdown(t_rows[-3:]), flush=True)
        print(markdown(e_rows[-3:]), flush=True)
    threshold_table, enrol_table = markdown(t_rows), markdown(e_rows)
    print(threshold_table)
    print(enrol_table)
    if args.write:
        write_section(args.write, "no-landmark", threshold_table)
        write_section(args.write, "enrolment", enrol_table)


if __name__ == "__main__":
    main()
