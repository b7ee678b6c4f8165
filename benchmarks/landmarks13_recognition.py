"""Recognition on landmarks13: classifier vs kNN retrieval, + classifier, + non-landmark penalty, + verification.

Index = the train photos with their landmark_id; queries = test (154 landmark photos and
the non-landmark distractors); non-landmark reference set = ../shared/data/nonlandmarks
(never landmarks13's test distractors).  Prints one Markdown table of accuracy, GAP and
GAP over landmark queries only, with the wall time of each method:

* the shared query pass (embedding + classifier softmax of the 274 test photos) is
  timed once and added to every row; rows add their own step (search, voting,
  penalty, verification).  Embedding the index and the reference set is a one-off cost
  printed above the table.

    .venv/bin/python benchmarks/landmarks13_recognition.py /tmp/run1/checkpoints/best.pt --imagenet
    .venv/bin/python benchmarks/landmarks13_recognition.py CKPT --work /tmp/l13 --verify-top 3

With ``--work`` the embeddings are kept and reused by the next run of the same checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from landmark.data.kaggle import read_solution
from landmark.evaluation import recognition_scores
from landmark.data import read_queries
from landmark.retrieval.embeddings import load_embeddings
from landmark.retrieval.index import IndexParams, LandmarkIndex
from landmark.retrieval.config import KnnConfig, RetrievalConfig, VerifyConfig
from landmark.retrieval.knn import recognise, verification_inliers
from landmark.retrieval.pipeline import embed_checkpoint, image_frame

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cached_embed(checkpoint: Path, frame: pd.DataFrame, out: Path, top: int, workers: int) -> tuple[object, float]:
    """Embed unless ``out`` was made from the same checkpoint file (path, size, mtime); returns (emb, seconds)."""
    stamp = {"checkpoint": str(checkpoint.resolve()), "bytes": checkpoint.stat().st_size,
             "mtime": checkpoint.stat().st_mtime, "top": top, "rows_in": len(frame)}
    tag = out.with_suffix(".stamp.json")
    if out.exists() and tag.exists() and json.loads(tag.read_text()) == stamp:
        return load_embeddings(out), float("nan")
    tic = time.perf_counter()
    emb, rejects, _ = embed_checkpoint(checkpoint, frame, out, top_classes=top, workers=workers, overwrite=True)
    seconds = time.perf_counter() - tic
    tag.write_text(json.dumps(stamp))
    if rejects:
        print(f"{out.name}: {len(rejects)} unreadable images (see {out.with_suffix('.rejects.csv')})")
    return emb, seconds


def evaluate_checkpoint(name: str, checkpoint: Path, args, work: Path, solution: dict) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    train, t_index = cached_embed(checkpoint, image_frame(data=args.data), work / "train.npy", 0, args.workers)
    queries, t_query = cached_embed(checkpoint, read_queries(args.data / "test"), work / "test.npy", 5, args.workers)
    reference, t_ref = cached_embed(checkpoint, read_queries(args.nonlandmarks / "images"), work / "nonlandmarks.npy",
                                    0, args.workers)
    print(f"[{name}] embedding seconds (nan = reused from --work): index {t_index:.1f}, queries {t_query:.1f}, "
          f"non-landmark reference {t_ref:.1f}")
    shared = t_query if np.isfinite(t_query) else float("nan")
    index = LandmarkIndex.build(train, IndexParams(kind="flat"))
    rows = []

    top1 = pd.DataFrame({"id": queries.ids, "landmark_id": queries.classes[0][:, 0],
                         "score": queries.classes[1][:, 0].astype(float)})
    rows.append({"model": name, "method": "classifier", **recognition_scores(top1, solution), "step_s": 0.0})

    base = dict(k=args.k, p=args.p, nonlandmark_k=args.nonlandmark_k)
    variants = [
        ("kNN", KnnConfig(**base), None, None, None),
        (f"kNN + classifier (w={args.combine})", KnnConfig(**base, classifier_weight=args.combine), None, None,
         None),
        ("kNN + non-landmark penalty", KnnConfig(**base, nonlandmark_weight=args.penalty), reference, None, None),
        ("kNN + classifier + penalty", KnnConfig(**base, classifier_weight=args.combine,
                                                  nonlandmark_weight=args.penalty), reference, None, None),
    ]
    if args.verify_top and name != "imagenet":
        verify = VerifyConfig(top=args.verify_top, min_inliers=args.min_inliers)
        pair = verification_inliers(work / "local_features", verify)
        variants.append((f"kNN + penalty + verification (top {args.verify_top})",
                         KnnConfig(**base, nonlandmark_weight=args.penalty), reference, verify, pair))
    for label, config, ref, verify, pair in variants:
        tic = time.perf_counter()
        result = recognise(index, queries, config, ref, verify=verify, pair_inliers=pair)
        step = time.perf_counter() - tic
        extra = f" ({len(result.failures)} unverifiable pairs)" if result.failures else ""
        rows.append({"model": name, "method": label + extra, **recognition_scores(result.predictions, solution), "step_s": step})
    for row in rows:
        row["wall_s"] = shared + row["step_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=DATA / "landmarks13")
    parser.add_argument("--nonlandmarks", type=Path, default=DATA / "nonlandmarks")
    parser.add_argument("--work", type=Path, default=None, help="keep embeddings here (reused next time)")
    defaults = RetrievalConfig()
    parser.add_argument("--k", type=int, default=defaults.knn.k)
    parser.add_argument("--p", type=float, default=defaults.knn.p)
    parser.add_argument("--combine", type=float, default=0.2, help="classifier weight w")
    parser.add_argument("--penalty", type=float, default=1.0, help="non-landmark penalty weight lambda")
    parser.add_argument("--nonlandmark-k", type=int, default=defaults.knn.nonlandmark_k)
    parser.add_argument("--verify-top", type=int, default=3, help="0: skip the verification row")
    parser.add_argument("--min-inliers", type=int, default=20, help="20 in docs/retrieval.md's table; "
                        f"the library's same-landmark threshold is {defaults.verify.min_inliers}")
    parser.add_argument("--imagenet", action="store_true", help="also kNN with the plain ImageNet backbone")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    solution = read_solution(args.data / "test" / "recognition_solution.csv")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = evaluate_checkpoint("checkpoint", args.checkpoint, args, work / "checkpoint", solution)
        if args.imagenet:
            from landmark.models import create_model, load_model, save_checkpoint
            _, ckpt = load_model(args.checkpoint)
            model = create_model(ckpt["arch"]["backbone"], len(ckpt["classes"]), weights="imagenet")
            plain = work / "imagenet.pt"
            if not plain.exists():
                save_checkpoint(plain, model, ckpt["classes"], preprocess=ckpt["preprocess"])
            rows += [r for r in evaluate_checkpoint("imagenet", plain, args, work / "imagenet", solution)
                     if r["method"] in ("kNN", "kNN + non-landmark penalty")]
    table = pd.DataFrame(rows)
    print(f"\nlandmarks13 test ({len(solution)} queries, {sum(1 for v in solution.values() if v)} with a landmark); "
          f"k={args.k}, p={args.p}; wall_s = shared query pass + step_s\n")
    for col in ("accuracy", "gap", "gap_landmarks_only"):
        table[col] = table[col].map(lambda v: f"{v:.3f}")
    for col in ("step_s", "wall_s"):
        table[col] = table[col].map(lambda v: f"{v:.1f}")
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in table.itertuples(index=False)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
