"""Few-photo enrolment of landmarks the run has never seen, from other collections (issue 21).

The ``fast`` preset trained on all 13 landmarks of landmarks13 as ``landmark train --data
landmarks13 --config fast`` trains it (no ``--nonlandmarks``: the leave-class-out threshold)
into ``RUNS/fast`` (reused when complete).  Landmarks of ``../shared/data/landmarks_many``
(ids 13-51, six source collections, none a landmarks13 landmark) are enrolled into a copy of the
run's index with their first n (1, 3, 5) training photos (:func:`landmark.retrieval.pipeline.enrol_index`:
each gets its own calibrated threshold), all of a set at once.

Two sets of landmarks, fixed by rule before any result was seen:

* **reported** (:func:`landmark_sets`): the first two landmark ids (one where it has one) of each
  of the six source collections, among the landmarks with at least 6 training photos (5 to
  enrol and one more): 13 14 15 16 38 39 43 44 45 50.  Queries: their other training photos
  and their test photos; the other half of ``nonlandmarks`` (``no_landmark.half(..., 1)``) and
  landmarks13's test photos (the trained landmarks' must be named right, as before enrolment;
  its distractors must not be named after an enrolled landmark).
* **choosing**: every other landmarks_many landmark with at least 6 training photos (25, mostly
  Indian monuments of one collection).  Queries: their training photos 6 to 15 (the same for
  every n), and the choosing half of ``nonlandmarks``.  Settings are chosen on this set only
  (``--choose`` prints its table); the reported set is answered once per setting kept.

Answers: the run's :class:`~landmark.Recognizer` with the enrolled index (reference scoring,
enrolled landmarks confirmed by local features where the ``local`` extra is installed; their
features are cached in ``RUNS/local-features``).  ``0`` photos: nothing enrolled (the run as
trained).  On the choosing set the answers are also read under other thresholds for the
enrolled landmarks (:data:`RULES`); ``--mirror`` enrols each photo's mirror image as one more
photo of its landmark (measured, not part of enrolment: docs/quality.md).

    .venv/bin/python benchmarks/enrolment.py --write docs/quality.md
    .venv/bin/python benchmarks/enrolment.py --choose      # the choosing set's table only
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from no_landmark import half, outputs  # noqa: E402
from quality import DATA, NONLANDMARKS, ROOT, markdown, write_section  # noqa: E402
from landmark.retrieval.config import CONFIRM_INLIERS  # noqa: E402

MANY = ROOT.parent / "shared" / "data" / "landmarks_many"
ENROLLED = (0, 1, 3, 5)   # 0: nothing enrolled, the run as trained
MIN_TRAIN = 6          # photos a landmark needs to be used: 5 to enrol, one more to ask
CHOOSE_QUERIES = 10    # choosing set: its training photos 6..15


def ensure_run(runs: Path) -> Path:
    """The fast preset on all of landmarks13, as ``landmark train --config fast`` (no ``--nonlandmarks``)."""
    import landmark
    run = runs / "fast"
    if (run / "test_metrics.json").is_file() and (run / "index" / "meta.json").is_file():
        return run
    if (run / "config.yaml").is_file():
        landmark.resume(run)
    else:
        landmark.train(landmark.load_config("fast"), DATA, run)
    return run


def landmark_sets(train: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(reported, choosing) landmark ids of landmarks_many, by the rule of the module docstring."""
    sources = pd.read_csv(MANY / "source_files.csv", dtype=str, keep_default_na=False)
    repo = sources.drop_duplicates("landmark_id").set_index("landmark_id")["source_repo"]
    counts = train["landmark_id"].value_counts()
    eligible = sorted((lid for lid in counts.index if counts[lid] >= MIN_TRAIN), key=int)
    reported: list[str] = []
    for name in dict.fromkeys(repo[lid] for lid in sorted(repo.index, key=int)):
        reported += [lid for lid in eligible if repo[lid] == name][:2]
    return sorted(reported, key=int), [lid for lid in eligible if lid not in reported]


def cached_outputs(rec, paths: list[str], cache: Path, mirror: bool = False):
    """:func:`no_landmark.outputs` of ``paths`` (``mirror``: of the photos flipped left to right),
    kept in ``cache`` (``.npz``) for the next run."""
    import torch
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if saved["paths"].tolist() == list(paths):
            return torch.from_numpy(saved["probs"]), saved["vectors"]
    if mirror:
        from landmark.data import load_image
        t, probs, vectors = rec.transform(1), [], []
        for start in range(0, len(paths), 16):
            x = torch.stack([t(load_image(p)) for p in paths[start:start + 16]]).flip(-1)
            p, v = rec.forward(x, 1)
            probs.append(p)
            vectors.append(v)
        probs, vectors = torch.cat(probs), np.concatenate(vectors)
    else:
        probs, vectors = outputs(rec, list(paths))
    np.savez(cache, paths=np.asarray(paths), probs=probs.numpy(), vectors=vectors)
    return probs, vectors


def answer(rec, run: Path, work: Path, enrol: pd.DataFrame, e_vectors: np.ndarray, queries: pd.DataFrame,
           q_probs, q_vectors, tag: str) -> tuple[pd.DataFrame, dict, dict]:
    """Enrol ``enrol`` (rows ``id, landmark_id, path``, vectors ``[E, D]``) into a copy of the run's
    index and answer ``queries`` (``path, truth, kind``): one row per query (``label, score,
    threshold, inliers, named``), the enrolment's report per landmark, timings."""
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.pipeline import enrol_index
    original = rec.index
    folder = work / f"index-{tag}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(run / "index", folder, ignore=shutil.ignore_patterns("embeddings"))
    start = time.perf_counter()
    result = {"landmarks": {}}   # nothing enrolled: the run as trained (the baseline row)
    if len(enrol):
        emb = Embeddings(e_vectors, enrol[["id", "landmark_id", "path"]].reset_index(drop=True),
                         model=original.meta.get("model"))
        rec.index, result = enrol_index(folder, emb, classes=rec.classes, threshold=rec.threshold, name_of=rec.name)
    enrol_s = time.perf_counter() - start
    rec.rescore()
    ranked = rec._score(q_probs, q_vectors, 1)
    extract_ms = None
    if rec.confirmer is not None:
        from landmark.retrieval.local import LocalFeatureCache
        from landmark.retrieval.scoring import needs_confirmation
        rec.confirmer.cache = LocalFeatureCache(work.parent / "local-features", rec.confirmer.matcher)
        rec.confirmer.memo = MEMO
        start, misses = time.perf_counter(), rec.confirmer.cache.misses
        for path, cands in zip(queries["path"], ranked):   # the queries that will be matched, extracted apart
            if needs_confirmation(cands, frozenset(rec.classes), rec.threshold, rec.landmark_thresholds):
                rec.confirmer.cache.get(path)
        done = rec.confirmer.cache.misses - misses
        extract_ms = 1000 * (time.perf_counter() - start) / done if done else None
    ranked, inliers = rec.confirm_enrolled(ranked, queries["path"].tolist(), q_vectors)
    labels = [c[0][0] if c else "" for c in ranked]
    scores = [c[0][1] if c else 0.0 for c in ranked]
    decided = [rec.decide(lab, s, n) for lab, s, n in zip(labels, scores, inliers)]
    frame = queries[["path", "truth", "kind"]].assign(
        label=labels, score=scores, inliers=[-1 if n is None else n for n in inliers],
        named=[d[0] for d in decided], threshold=[d[1] for d in decided]).reset_index(drop=True)
    c = rec.confirmer
    timing = {"enrol_s": enrol_s, "extract_ms": extract_ms, "matching_ms": None if c is None or not c.queries else 1000 * c.seconds / c.queries,
              "min_inliers": None if c is None else c.min_inliers}
    rec.index = original
    rec.rescore()
    shutil.rmtree(folder, ignore_errors=True)
    return frame, result["landmarks"], timing


MEMO: dict = {}   # (query path, enrolled photo path) -> inliers, across the answers of one process


def rates(frame: pd.DataFrame, enrolled: list[str]) -> dict:
    """Shares of the queries of each kind answered as they should be."""
    named, right = frame["named"].to_numpy(), (frame["label"] == frame["truth"]).to_numpy()
    kind = frame["kind"].to_numpy()
    as_enrolled = named & frame["label"].isin(enrolled).to_numpy()
    out = {"enrolled queries": int((kind == "enrolled").sum()),
           "enrolled recognised": round(float((named & right)[kind == "enrolled"].mean()), 3),
           "enrolled named wrong": round(float((named & ~right)[kind == "enrolled"].mean()), 3),
           "non-landmarks named as enrolled": round(float(as_enrolled[kind == "no landmark"].mean()), 3)}
    if (kind == "unknown").any():
        out["unknown landmarks named as enrolled"] = round(float(as_enrolled[kind == "unknown"].mean()), 3)
    if (kind == "known").any():
        out["known still right"] = round(float((named & right)[kind == "known"].mean()), 3)
        out["known named as enrolled"] = round(float(as_enrolled[kind == "known"].mean()), 3)
    return out


def by_coverage(frame: pd.DataFrame, report: dict) -> str:
    """``enrolled recognised`` per coverage rating (``report[lid]["coverage"]``): the mean over the
    landmarks so rated of the share of each one's queries named right, and how many landmarks (brackets)."""
    enrolled = frame[frame["kind"] == "enrolled"]
    right = (enrolled["named"] & (enrolled["label"] == enrolled["truth"])).groupby(enrolled["truth"]).mean()
    rating = right.index.map({lid: r["coverage"] for lid, r in report.items()})
    return " ".join(f"{k} {right[rating == k].mean():.2f} ({int((rating == k).sum())})"
                    for k in ("good", "fair", "poor") if (rating == k).any())


RULES = {   # an enrolled landmark's threshold from its calibration (``calibrate_landmark``) and the run's
    "calibrated (now)": lambda c, floor: c["threshold"],
    "run's threshold": lambda c, floor: floor,
    **{f"max(run's, {m:g} x impostor)": (lambda m: lambda c, floor: max(floor, m * c["impostor_score"]))(m)
       for m in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)},
}


def threshold_rules(frame: pd.DataFrame, report: dict, floor: float, enrolled: list[str], n: int) -> list[dict]:
    """The choosing set's answers under other thresholds for the enrolled landmarks (the ranking and
    the local-feature inliers do not depend on them; trained landmarks keep the run's)."""
    out = []
    for name, rule in RULES.items():
        own = {lid: rule(report[lid], floor) for lid in enrolled}
        thr = frame["label"].map(own).fillna(floor).to_numpy()
        named = (frame["label"] != "").to_numpy() & ((frame["score"].to_numpy() >= thr) | (frame["inliers"].to_numpy() >= CONFIRM_INLIERS))
        named = np.where(frame["label"].isin(enrolled).to_numpy(), named, frame["named"].to_numpy())
        out.append({"photos enrolled": n, "threshold": name, **rates(frame.assign(named=named), enrolled)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "enrolment")
    parser.add_argument("--choose", action="store_true", help="answer the choosing set only and print its table")
    parser.add_argument("--write", type=Path, default=None, help="replace the enrolment table in this markdown file")
    parser.add_argument("--mirror", action="store_true", help="enrol each photo's mirror image too")
    parser.add_argument("--no-confirm", action="store_true", help="no confirmation of enrolled landmarks by local features")
    args = parser.parse_args()
    from landmark import Recognizer
    from landmark.data import read_queries, read_train, with_paths
    from landmark.memory import keep_freed_memory
    keep_freed_memory()
    work = args.runs / "work"
    work.mkdir(parents=True, exist_ok=True)
    run = ensure_run(args.runs)
    rec = Recognizer.load(run, confirm_enrolled=False if args.no_confirm else None)
    many = with_paths(read_train(MANY), MANY)
    many["landmark_id"] = many["landmark_id"].astype(str)
    reported, choosing = landmark_sets(many)
    print(f"reported: {' '.join(reported)}\nchoosing: {' '.join(choosing)}", flush=True)
    nonlandmarks = read_queries(NONLANDMARKS)
    rows, rule_rows = [], []
    for which, lids in (("choosing", choosing), ("reported", reported)):
        if which == "reported" and args.choose:
            break
        photos = many[many["landmark_id"].isin(lids)].copy()
        photos["rank"] = photos.groupby("landmark_id").cumcount()
        if which == "choosing":
            asked = photos[(photos["rank"] >= 5) & (photos["rank"] < 5 + CHOOSE_QUERIES)]
            # negatives: the choosing half of nonlandmarks, and the landmarks_many landmarks too small for
            # either set (never enrolled: unknown landmarks, which must not be named after an enrolled one)
            small = many[~many["landmark_id"].isin([*reported, *choosing])]
            extra = pd.concat([half(nonlandmarks, 0).assign(truth="", kind="no landmark"),
                               small.assign(truth="", kind="unknown")], ignore_index=True)
        else:
            solution = pd.read_csv(MANY / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
            test = read_queries(MANY / "test").merge(solution[["id", "landmarks"]], on="id")
            test = test[test["landmarks"].isin(lids)].assign(landmark_id=lambda f: f["landmarks"], rank=10 ** 6)
            photos = pd.concat([photos, test[["id", "landmark_id", "path", "rank"]]], ignore_index=True)
            asked = photos   # minus each n's enrolled photos below
            l13 = pd.read_csv(DATA / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
            l13 = read_queries(DATA / "test").merge(l13[["id", "landmarks"]], on="id")
            truth = l13["landmarks"].str.split().str[0].fillna("")
            extra = pd.concat([l13.assign(truth=truth, kind=np.where(truth == "", "no landmark", "known")),
                               half(nonlandmarks, 1).assign(truth="", kind="no landmark")], ignore_index=True)
        paths = list(dict.fromkeys([*photos["path"].astype(str), *extra["path"].astype(str)]))
        probs, vectors = cached_outputs(rec, paths, work / f"outputs-{which}.npz")
        if args.mirror:
            flipped = cached_outputs(rec, paths, work / f"outputs-{which}-mirror.npz", mirror=True)[1]
        where = {p: i for i, p in enumerate(paths)}
        for n in ENROLLED:
            enrol = photos[photos["rank"] < n]
            e_vectors = vectors[np.array([where[str(p)] for p in enrol["path"]], dtype=int)]
            if args.mirror:   # each photo's mirror image as one more photo of the landmark
                e_vectors = np.concatenate([e_vectors, flipped[np.array([where[str(p)] for p in enrol["path"]], dtype=int)]])
                enrol = pd.concat([enrol, enrol.assign(id=enrol["id"].astype(str) + "-mirror")], ignore_index=True)
            q = pd.concat([asked[asked["rank"] >= n].assign(truth=lambda f: f["landmark_id"], kind="enrolled"),
                           extra], ignore_index=True)[["path", "truth", "kind"]]
            qi = np.array([where[str(p)] for p in q["path"]])
            start = time.perf_counter()
            tag = f"{which}-{n}{'-mirror' if args.mirror else ''}"
            frame, report, timing = answer(rec, run, work, enrol, e_vectors, q, probs[qi], vectors[qi], tag)
            frame.to_csv(work / f"answers-{tag}.csv", index=False)
            (work / f"report-{tag}.json").write_text(json.dumps(report, indent=1, default=str))
            if which == "choosing" and n:
                rule_rows += threshold_rules(frame, report, rec.threshold, choosing, n)
            covered = pd.Series([report[lid]["coverage"] for lid in lids if lid in report]).value_counts()
            rows.append({"landmarks": f"{which} ({len(lids)})", "photos enrolled": n, **rates(frame, lids),
                         "local features": "off" if timing["min_inliers"] is None else f"mnn >= {timing['min_inliers']} inliers",
                         "ms per photo: extraction": "cached" if timing["extract_ms"] is None else round(timing["extract_ms"]),
                         "ms per query: matching": "" if timing["matching_ms"] is None else round(timing["matching_ms"]),
                         "thresholds (median)": round(float(np.median([report[lid]["threshold"] for lid in lids])), 3)
                         if report else "",
                         "coverage": " ".join(f"{k} {covered.get(k, 0)}" for k in ("good", "fair", "poor"))
                         if report else "",
                         "recognised by coverage": by_coverage(frame, report) if report else ""})
            print(markdown(rows[-1:]), f"({time.perf_counter() - start:.0f} s)", flush=True)
    pd.DataFrame([(q, e, n) for (q, e), n in MEMO.items()], columns=["query", "photo", "inliers"]).to_csv(
        work / "inliers.csv", index=False)   # every pair matched (choosing other inlier rules)
    print(markdown(rule_rows))
    columns = list(dict.fromkeys(c for r in rows for c in r))   # the reported set's rows have more columns
    table = markdown([{c: r.get(c, "") for c in columns} for r in rows])
    print(table)
    if args.write and not args.choose and not args.mirror:
        write_section(args.write, "enrolment-many", table)
        write_section(args.write, "enrolment-rules", markdown(rule_rows))


if __name__ == "__main__":
    main()
