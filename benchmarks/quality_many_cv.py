"""Cross-validation at 52 classes (landmarks13 + landmarks_many): do the fast preset's choices,
made on 13 classes, still win? On frozen features; the test sets are never read.

Features: GeM-pooled ``forward_features`` of ImageNet ``tf_efficientnet_lite0`` at 224 px of
every training photo of both folders (and its mirror) and every ``../shared/data/nonlandmarks``
photo, computed once into ``runs/many/cv_features.npz`` (as ``quality_cv.py`` does for
landmarks13).  5 folds over the 2,771 photos (seed 0); each fold's validation queries are its
held-out photos plus half of the non-landmark photos.  The head is the fast preset's probe
(``quality_cv.fit``: linear, L-BFGS, label smoothing 0.1, L2 1e-3) unless a row changes it.
``acc l13``: accuracy on the validation photos of landmarks13's 13 landmarks, the number that
shows what adding 39 classes costs them (row "13 classes only": trained on landmarks13's
photos of the same folds).

    .venv/bin/python benchmarks/quality_many_cv.py [--write docs/quality.md]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_cv  # noqa: E402  (benchmarks/quality_cv.py: fit)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FOLDERS = [DATA / "landmarks13", DATA / "landmarks_many"]


@torch.inference_mode()
def features(cache: Path) -> dict:
    """``train`` float32 ``[N, 2, C]`` (photo, mirror), ``labels``, ``ids``, ``nonlandmarks`` ``[M, C]``."""
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return dict(z)
    from landmark.data import read_queries, read_train
    pooled = quality_cv.pooled
    train = read_train(FOLDERS)
    out = {"train": pooled(list(train["path"])), "labels": train["landmark_id"].astype(str).to_numpy(),
           "ids": train["id"].to_numpy(dtype=str), "nonlandmarks": pooled(list(read_queries(DATA / "nonlandmarks")["path"]))[:, 0]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def run(z: dict, confidence: str = "reference", only13: bool = False, weight_decay: float = 1e-3,
        label_smoothing: float = 0.1, seed: int = 0) -> np.ndarray:
    """Mean over 5 folds of (gap, gap_landmarks_only, accuracy, acc l13)."""
    from landmark.evaluation import recognition_scores
    from landmark.evaluation.metrics import accuracy
    from landmark.retrieval.knn import reference_confidence
    labels_all = z["labels"].astype(str)
    x, xf = torch.tensor(z["train"][:, 0]), torch.tensor(z["train"][:, 1])
    nl = torch.tensor(z["nonlandmarks"])
    is13 = np.array([int(c) < 13 for c in labels_all])
    rng = np.random.default_rng(seed)
    folds = rng.integers(0, 5, len(labels_all))
    half = np.arange(len(nl)) % 2 == 0
    results = []
    for f in range(5):
        tr, va = folds != f, folds == f
        if only13:
            tr, va = tr & is13, va & is13
        classes = sorted(set(labels_all[tr]), key=int)
        index = {c: k for k, c in enumerate(classes)}
        y = torch.tensor([index[c] for c in labels_all[tr]])
        w, b = quality_cv.fit(torch.cat([x[tr], xf[tr]]), torch.cat([y, y]), len(classes), weight_decay, label_smoothing)
        q = torch.cat([x[va], nl[~half]])
        prob, label = (q @ w + b).softmax(1).max(1)
        labels = np.asarray(classes)[label.numpy()]
        score = prob.numpy().astype(np.float64)
        if confidence == "reference":
            sims = (F.normalize(q, dim=1) @ F.normalize(x[tr], dim=1).T).numpy()
            score = reference_confidence(labels, score, sims, np.broadcast_to(labels_all[tr], sims.shape))
        ids = list(z["ids"][va]) + [f"nl{k}" for k in np.flatnonzero(~half)]
        solution = {i: {c} for i, c in zip(z["ids"][va], labels_all[va])} | {i: set() for i in ids[va.sum():]}
        pred = pd.DataFrame({"id": ids, "landmark_id": labels, "score": score})
        l13 = {i: {c} for i, c, k in zip(z["ids"][va], labels_all[va], is13[va]) if k}
        results.append((*recognition_scores(pred, solution).values(), accuracy(pred, l13)))
    return np.mean(results, axis=0)


ROWS = [
    ("13 classes only (landmarks13's photos of the same folds)", dict(only13=True)),
    ("52 classes: confidence softmax probability", dict(confidence="softmax")),
    ("52 classes: prob * s_ref^3 (shipped)", dict()),
    ("52 classes: L2 1e-4", dict(weight_decay=1e-4)),
    ("52 classes: L2 3e-3", dict(weight_decay=3e-3)),
    ("52 classes: no label smoothing", dict(label_smoothing=0.0)),
]


def main() -> None:
    import argparse
    from landmark.memory import keep_freed_memory
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "many")
    parser.add_argument("--write", type=Path, help="markdown file whose 'many-cv' table to replace")
    args = parser.parse_args()
    z = features(args.runs / "cv_features.npz")
    torch.set_num_threads(1)
    lines = ["| setting (5-fold CV, frozen lite0 224 px features, 52 classes) | gap | gap_landmarks_only | accuracy "
             "| acc l13 |", "|---|---:|---:|---:|---:|"]
    print("\n".join(lines))
    for name, kwargs in ROWS:
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in run(z, **kwargs)) + " |")
        print(lines[-1], flush=True)
    if args.write:
        from quality import write_section
        write_section(args.write, "many-cv", "\n".join(lines))


if __name__ == "__main__":
    main()
