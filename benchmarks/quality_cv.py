"""The cross-validation behind the fast preset's choices (docs/quality.md), on frozen features.

Features: GeM-pooled ``forward_features`` of ImageNet ``tf_efficientnet_lite0`` at 224 px for
every landmarks13 training photo (and its mirror) and every ``../shared/data/nonlandmarks``
photo, computed once into ``runs/quality/cv_features.npz``.  5 folds over the training photos
(seed 0); each fold's validation queries are its held-out landmark photos plus the
non-landmark photos (every second one; the other half is the reference set of the penalty).
The head is the fast preset's probe: linear, L-BFGS, label smoothing 0.1, L2 1e-3.
The test set is never read.

    .venv/bin/python benchmarks/quality_cv.py [--write docs/quality.md]
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "runs" / "quality" / "cv_features.npz"


@torch.inference_mode()
def pooled(paths) -> np.ndarray:
    """GeM-pooled ImageNet EfficientNet-Lite0 descriptors at 224 px of each photo and its mirror,
    float32 ``[N, 2, C]`` (what the ``fast`` probe is fitted on)."""
    from landmark.data import load_image
    from landmark.data.transforms import eval_transform
    from landmark.models import create_backbone, gem
    backbone = create_backbone("tf_efficientnet_lite0", "imagenet").eval()
    cfg = backbone.pretrained_cfg
    transform = eval_transform(224, cfg["mean"], cfg["std"])
    out = []
    for k in range(0, len(paths), 32):
        x = torch.stack([transform(load_image(p)) for p in paths[k:k + 32]])
        out.append(torch.stack([gem(backbone.forward_features(v), 3.0) for v in (x, x.flip(3))], 1).numpy())
    return np.concatenate(out)


@torch.inference_mode()
def features() -> dict:
    """``train`` float32 ``[N, 2, C]`` (photo, mirror), ``labels``, ``ids``, ``noisy`` (by-eye noise),
    ``nonlandmarks`` ``[M, C]``; cached in :data:`CACHE`."""
    if CACHE.is_file():
        with np.load(CACHE, allow_pickle=True) as z:
            return dict(z)
    from landmark.data import read_queries, read_train, with_paths
    train = with_paths(read_train(DATA / "landmarks13"), DATA / "landmarks13")
    noise = pd.read_csv(DATA / "landmarks13" / "known_noise.csv", dtype=str)
    noisy = set(noise.loc[noise["kind"].isin(["other_place", "no_landmark", "graphic"]), "id"])
    out = {"train": pooled(list(train["path"])), "labels": train["landmark_id"].astype(str).to_numpy(),
           "ids": train["id"].to_numpy(), "noisy": train["id"].isin(noisy).to_numpy(),
           "nonlandmarks": pooled(list(read_queries(DATA / "nonlandmarks")["path"]))[:, 0]}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, **out)
    return out


def fit(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float = 1e-3,
        label_smoothing: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe: linear head by L-BFGS, cross-entropy with label smoothing 0.1 + 1e-3 * |W|^2
    (the fast preset's; ``weight_decay`` and ``label_smoothing`` change them)."""
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y, label_smoothing=label_smoothing) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def run(z: dict, confidence: str = "reference", train_on: str = "all", val_on: str = "all",
        share: float = 1.0, flip: bool = False, seed: int = 0) -> np.ndarray:
    """Mean over the folds of (gap, gap_landmarks_only, accuracy) for one setting."""
    from landmark.evaluation import recognition_scores
    from landmark.retrieval.knn import reference_confidence
    classes = sorted(set(z["labels"]), key=int)
    y = torch.tensor([classes.index(c) for c in z["labels"]])
    x, xf = torch.tensor(z["train"][:, 0]), torch.tensor(z["train"][:, 1])
    nl = torch.tensor(z["nonlandmarks"])
    rng = np.random.default_rng(seed)
    folds, keep = rng.integers(0, 5, len(y)), rng.random(len(y)) < share
    half = np.arange(len(nl)) % 2 == 0
    results = []
    for f in range(5):
        tr, va = (folds != f) & keep, folds == f
        if train_on == "clean":
            tr &= ~z["noisy"]
        if val_on == "clean":
            va &= ~z["noisy"]
        w, b = fit(torch.cat([x[tr], xf[tr]]), torch.cat([y[tr], y[tr]]), len(classes))
        q = torch.cat([x[va], nl[~half]])
        p = (q @ w + b).softmax(1)
        if flip:
            p = 0.5 * (p + (torch.cat([xf[va], nl[~half]]) @ w + b).softmax(1))
        prob, label = p.max(1)
        labels = np.asarray(classes)[label.numpy()]
        score = prob.numpy().astype(np.float64)
        if confidence == "reference":
            sims = (F.normalize(q, dim=1) @ F.normalize(x[tr], dim=1).T).numpy()
            score = reference_confidence(labels, score, sims, np.broadcast_to(z["labels"][tr], sims.shape))
        ids = list(z["ids"][va]) + [f"nl{k}" for k in np.flatnonzero(~half)]
        solution = {i: {c} for i, c in zip(z["ids"][va], z["labels"][va])} | {i: set() for i in ids[va.sum():]}
        pred = pd.DataFrame({"id": ids, "landmark_id": labels, "score": score})
        results.append(tuple(recognition_scores(pred, solution).values()))  # gap, gap_landmarks_only, accuracy
    return np.mean(results, axis=0)


def main() -> None:
    import argparse
    from landmark.memory import keep_freed_memory
    keep_freed_memory()   # as the `landmark` command does (landmark/memory.py)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="markdown file whose 'cv' table to replace")
    args = parser.parse_args()
    torch.set_num_threads(1)
    z = features()
    rows = [
        ("confidence: softmax probability", dict(confidence="softmax")),
        ("confidence: prob * s_ref^3 (shipped)", dict()),
        ("train on train_clean.csv photos", dict(train_on="clean")),
        ("validate on clean photos, train on all", dict(val_on="clean")),
        ("validate on clean photos, train on clean", dict(train_on="clean", val_on="clean")),
        ("85 % of the training photos (no final fit)", dict(share=0.85, seed=1)),
        ("100 % of the training photos (final fit), same folds", dict(seed=1)),
        ("+ mirrored query averaged in", dict(flip=True)),
    ]
    lines = ["| setting (5-fold CV, frozen lite0 224 px features) | gap | gap_landmarks_only | accuracy |",
             "|---|---:|---:|---:|"]
    print("\n".join(lines))
    for name, kwargs in rows:
        g, gl, acc = run(z, **kwargs)
        lines.append(f"| {name} | {g:.3f} | {gl:.3f} | {acc:.3f} |")
        print(lines[-1], flush=True)
    if args.write:
        from quality import write_section   # benchmarks/quality.py, beside this script
        write_section(args.write, "cv", "\n".join(lines))


if __name__ == "__main__":
    main()
