"""A retrieval submission and its solution from `landmark embed` outputs (global descriptors only).

For the unseen-landmark benchmark of issue 22 until `landmark retrieve` writes one: each query's 100
most similar index photos (exact inner product of the L2-normalised descriptors, FAISS), written as a
Kaggle retrieval submission (``id,images``), and the solution (``id,images,Usage``): the index photos
with the query's landmark (queries whose landmark has no index photo are left out).

Labels come from GLDv2 files: ``train.csv`` (id,landmark_id) or ``recognition_solution.csv``
(id,landmarks,Usage), each given with --labels (repeat).

  .venv/bin/python benchmarks/global_ranking.py --queries emb/many_test.npy --index emb/many_train.npy \\
      --index emb/l13_train.npy --labels ../shared/data/landmarks_many/train.csv \\
      --labels ../shared/data/landmarks_many/test/recognition_solution.csv \\
      --labels ../shared/data/landmarks13/train.csv --submission sub.csv --solution sol.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np
import pandas as pd


def read_embeddings(path: Path) -> tuple[np.ndarray, list[str]]:
    """float32 ``[N, D]`` vectors of NAME.npy and their ids (NAME.ids.csv)."""
    vectors = np.load(path, mmap_mode="r").astype(np.float32)
    ids = pd.read_csv(path.with_suffix(".ids.csv"), dtype=str)["id"].tolist()
    if len(ids) != len(vectors):
        raise SystemExit(f"{path}: {len(vectors)} vectors but {len(ids)} ids")
    return vectors, ids


def read_labels(paths: list[Path]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for p in paths:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False)
        column = "landmark_id" if "landmark_id" in frame else "landmarks"
        labels.update({i: str(v).split()[0] for i, v in zip(frame["id"], frame[column]) if str(v).strip()})
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--index", type=Path, action="append", required=True)
    ap.add_argument("--labels", type=Path, action="append", required=True)
    ap.add_argument("--submission", type=Path, required=True)
    ap.add_argument("--solution", type=Path, required=True)
    ap.add_argument("--top", type=int, default=100)
    args = ap.parse_args()

    q, q_ids = read_embeddings(args.queries)
    parts = [read_embeddings(p) for p in args.index]
    x = np.concatenate([v for v, _ in parts])
    x_ids = [i for _, ids in parts for i in ids]
    labels = read_labels(args.labels)
    _, nn = faiss.knn(q, x, min(args.top, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
    pd.DataFrame({"id": q_ids, "images": [" ".join(x_ids[j] for j in row if j >= 0) for row in nn]}).to_csv(
        args.submission, index=False)
    by_label: dict[str, list[str]] = {}
    for i in x_ids:
        if i in labels:
            by_label.setdefault(labels[i], []).append(i)
    rows = [(i, " ".join(by_label[labels[i]]), "Private") for i in q_ids if labels.get(i) in by_label]
    pd.DataFrame(rows, columns=["id", "images", "Usage"]).to_csv(args.solution, index=False)
    print(f"{len(q_ids)} queries ({len(rows)} with relevant index photos), {len(x_ids)} index photos")


if __name__ == "__main__":
    main()
