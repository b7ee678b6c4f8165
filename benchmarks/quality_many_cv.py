"""Cross-validation at 52 classes (landmarks13 + landmarks_many): do the fast preset's choices,
made on 13 classes, still win, and what lifts GAP and protects landmarks13's photos? On frozen
features; the test sets are never read.

Features: GeM-pooled ``forward_features`` of ImageNet ``tf_efficientnet_lite0`` at 224 px (plain
resize) of every training photo of both folders (and its mirror) and every
``../shared/data/nonlandmarks`` photo, computed once into ``runs/many/cv_features.npz`` (as
``quality_cv.py`` does for landmarks13); other backbones and sizes (``--extract lite2@260``) into
``cv_features_<backbone>_<size>.npz``.  5 folds over the 2,771 photos (seed 0); each fold's
validation queries are its held-out photos plus half of the non-landmark photos.  The head is the
fast preset's probe (``quality_cv.fit``: linear, L-BFGS, label smoothing 0.1, L2 1e-3) unless a row
changes it (L2, label smoothing, class-balanced or logit-adjusted loss); each fitted head is scored
several ways (:data:`SCORINGS`: the softmax, the shipped ``prob * s_ref^3``, post-hoc logit
adjustment, temperature, classifier probabilities averaged with kNN votes).  ``acc l13``: accuracy on
the validation photos of landmarks13's 13 landmarks, the number that shows what adding 39 classes
costs them (row "13 classes only": trained on landmarks13's photos of the same folds); ``l13 to
new``: share of them answered with one of the 39 new landmarks.  Rows already measured are kept in
``runs/many/cv_rows.json``.

    .venv/bin/python benchmarks/quality_many_cv.py [--extract lite0@224 lite2@260 lite0@320] [--write docs/quality.md]
"""
from __future__ import annotations

import os
import sys
import time
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
def pooled(paths, backbone: str = "tf_efficientnet_lite0", size: int = 224) -> np.ndarray:
    """GeM-pooled ImageNet ``backbone`` descriptors at ``size`` px (plain resize) of each photo and its
    mirror, float32 ``[N, 2, C]`` (``quality_cv.pooled`` for any backbone and size)."""
    from landmark.data import load_image
    from landmark.data.transforms import eval_transform
    from landmark.models import create_backbone, gem
    net = create_backbone(backbone, "imagenet").eval()
    cfg = net.pretrained_cfg
    transform = eval_transform(size, cfg["mean"], cfg["std"])
    out = []
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(0, len(paths), 32):
        x = torch.stack([transform(load_image(p)) for p in paths[k:k + 32]])
        out.append(torch.stack([gem(net.forward_features(v), 3.0) for v in (x, x.flip(3))], 1).numpy())
        done, wall = k + len(x), time.perf_counter() - start
        print(f"{backbone}@{size}: {done}/{len(paths)} photos (x2 with mirrors), {wall:.0f} s wall, "
              f"{time.process_time() - cpu:.0f} s CPU, {done / wall:.2f} photos/s, load {os.getloadavg()[0]:.1f}",
              file=sys.stderr, flush=True)
    return np.concatenate(out)


def feature_cache(runs: Path, backbone: str = "tf_efficientnet_lite0", size: int = 224) -> Path:
    """Where :func:`features` keeps the features of ``backbone`` at ``size`` px."""
    if (backbone, size) == ("tf_efficientnet_lite0", 224):
        return runs / "cv_features.npz"
    return runs / f"cv_features_{backbone.replace('tf_efficientnet_', '')}_{size}.npz"


@torch.inference_mode()
def features(cache: Path, backbone: str = "tf_efficientnet_lite0", size: int = 224) -> dict:
    """``train`` float32 ``[N, 2, C]`` (photo, mirror), ``labels``, ``ids``, ``nonlandmarks`` ``[M, C]``."""
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return dict(z)
    from landmark.data import read_queries, read_train
    train = read_train(FOLDERS)
    out = {"train": pooled(list(train["path"]), backbone, size), "labels": train["landmark_id"].to_numpy(dtype=str),
           "ids": train["id"].to_numpy(dtype=str),
           "nonlandmarks": pooled(list(read_queries(DATA / "nonlandmarks")["path"]), backbone, size)[:, 0]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    os.replace(tmp, cache)
    return out


def fit(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float = 1e-3, label_smoothing: float = 0.1,
        balance: float = 0.0, la_tau: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast preset's probe (``quality_cv.fit``: linear, L-BFGS, label smoothing, L2) with two long-tail
    options: ``balance`` weighs each photo's loss by ``n_c ** -balance`` (``n_c``: its class's photos;
    re-weighting of Cui et al., CVPR 2019, with the effective number replaced by a power), ``la_tau`` adds
    ``la_tau * log prior`` to the logits during training only (the logit-adjusted loss of Menon et al.,
    ICLR 2021, "Long-tail learning via logit adjustment")."""
    if balance == 0.0 and la_tau == 0.0:
        return quality_cv.fit(x, y, classes, weight_decay, label_smoothing)
    counts = torch.bincount(y, minlength=classes).clamp(min=1).float()
    weight = counts ** -balance
    weight = weight * len(y) / (weight[y].sum())
    offset = la_tau * torch.log(counts / counts.sum())
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b + offset, y, weight=weight, label_smoothing=label_smoothing) \
            + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def knn_votes(sims: np.ndarray, neighbours: np.ndarray, classes: list, k: int = 10, power: float = 3.0) -> np.ndarray:
    """Similarity-weighted kNN votes per class, float ``[Q, len(classes)]`` in [0, 1]: the sum of
    ``max(s, 0) ** power`` over the query's ``k`` nearest training photos of each class, over ``k``."""
    top = np.argsort(-sims, axis=1)[:, :k]
    s = np.clip(np.take_along_axis(sims, top, 1), 0, None) ** power
    col = {c: j for j, c in enumerate(classes)}
    lab = np.vectorize(col.get)(np.take_along_axis(neighbours, top, 1))
    out = np.zeros((len(sims), len(classes)))
    np.add.at(out, (np.repeat(np.arange(len(sims)), k), lab.ravel()), s.ravel())
    return out / k


#: scoring of one fitted head, all from the same fit: name -> (tau, temperature, knn weight, confidence)
SCORINGS = {
    "softmax": (0.0, 1.0, 0.0, "softmax"),
    "shipped": (0.0, 1.0, 0.0, "reference"),
    "post-hoc logit adjustment tau 0.5": (0.5, 1.0, 0.0, "reference"),
    "post-hoc logit adjustment tau 1": (1.0, 1.0, 0.0, "reference"),
    "temperature 0.5": (0.0, 0.5, 0.0, "reference"),
    "temperature 2": (0.0, 2.0, 0.0, "reference"),
    "classifier + 0.5 kNN": (0.0, 1.0, 0.5, "reference"),
    "classifier + 1 kNN": (0.0, 1.0, 1.0, "reference"),
}


def run(z: dict, only13: bool = False, seed: int = 0, scorings=("shipped",), confusion: dict | None = None,
        **fit_kwargs) -> dict[str, np.ndarray]:
    """Mean over 5 folds of (gap, gap_landmarks_only, accuracy, acc l13, l13 to new) for each scoring
    of :data:`SCORINGS` named in ``scorings``; one fit per fold (``fit_kwargs``: :func:`fit`'s).
    ``l13 to new``: share of landmarks13's validation photos answered with a landmarks_many landmark.
    ``confusion``: filled with ``(true, predicted) -> photos`` of landmarks13's wrong answers (shipped)."""
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
    results = {name: [] for name in scorings}
    for f in range(5):
        tr, va = folds != f, folds == f
        if only13:
            tr, va = tr & is13, va & is13
        classes = sorted(set(labels_all[tr]), key=int)
        index = {c: k for k, c in enumerate(classes)}
        y = torch.tensor([index[c] for c in labels_all[tr]])
        w, b = fit(torch.cat([x[tr], xf[tr]]), torch.cat([y, y]), len(classes), **fit_kwargs)
        q = torch.cat([x[va], nl[~half]])
        logits = (q @ w + b).numpy().astype(np.float64)
        log_prior = np.log(np.bincount(y.numpy(), minlength=len(classes)) / len(y))
        sims = (F.normalize(q, dim=1) @ F.normalize(x[tr], dim=1).T).numpy()
        neighbours = np.broadcast_to(labels_all[tr], sims.shape)
        votes = None
        ids = list(z["ids"][va]) + [f"nl{k}" for k in np.flatnonzero(~half)]
        solution = {i: {c} for i, c in zip(z["ids"][va], labels_all[va])} | {i: set() for i in ids[va.sum():]}
        l13 = {i: {c} for i, c, k in zip(z["ids"][va], labels_all[va], is13[va]) if k}
        for name in scorings:
            tau, temperature, knn, confidence = SCORINGS[name]
            prob = torch.tensor((logits - tau * log_prior) / temperature).softmax(1).numpy()
            if knn:
                votes = knn_votes(sims, neighbours, classes) if votes is None else votes
                prob = (prob + knn * votes) / (1 + knn)
            label = prob.argmax(1)
            labels = np.asarray(classes)[label]
            score = prob[np.arange(len(label)), label]
            if confidence == "reference":
                score = reference_confidence(labels, score, sims, neighbours)
            pred = pd.DataFrame({"id": ids, "landmark_id": labels, "score": score})
            n13 = int(is13[va].sum())
            to_new = float(np.mean([int(c) >= 13 for c in labels[:va.sum()][is13[va]]])) if n13 else 0.0
            results[name].append((*recognition_scores(pred, solution).values(), accuracy(pred, l13), to_new))
            if confusion is not None and name == "shipped":
                truth = labels_all[va][is13[va]]
                for t, p in zip(truth, labels[:va.sum()][is13[va]]):
                    if t != p:
                        confusion[(t, p)] = confusion.get((t, p), 0) + 1
    return {name: np.mean(v, axis=0) for name, v in results.items()}


#: (row label, feature set, run() keywords); a feature set is "backbone@size" or two joined by "+" (concatenated)
ROWS = [
    ("13 classes only (landmarks13's photos of the same folds)", "lite0@224", dict(only13=True)),
    ("52 classes", "lite0@224", dict(scorings=tuple(SCORINGS))),
    ("52 classes: class-balanced loss n^-0.5", "lite0@224", dict(balance=0.5)),
    ("52 classes: logit-adjusted loss tau 1", "lite0@224", dict(la_tau=1.0)),
    ("52 classes: lite2 at 260 px", "lite2@260", dict(scorings=("shipped", "classifier + 0.5 kNN"))),
    ("13 classes only, lite2 at 260 px", "lite2@260", dict(only13=True)),
    ("52 classes: lite0 at 320 px", "lite0@320", dict(scorings=("shipped", "classifier + 0.5 kNN"))),
    ("13 classes only, lite0 at 320 px", "lite0@320", dict(only13=True)),
    ("52 classes: lite0 224 + 320 px concatenated", "lite0@224+lite0@320", dict(scorings=("shipped", "classifier + 0.5 kNN"))),
    ("52 classes: class-balanced loss n^-1", "lite0@224", dict(balance=1.0)),
    ("52 classes: L2 1e-4", "lite0@224", dict(weight_decay=1e-4)),
    ("52 classes: L2 3e-3", "lite0@224", dict(weight_decay=3e-3)),
    ("52 classes: no label smoothing", "lite0@224", dict(label_smoothing=0.0)),
]


def feature_set(runs: Path, spec: str) -> dict | None:
    """The features of ``spec`` (see :data:`ROWS`), or None where one part is not cached yet."""
    parts = []
    for one in spec.split("+"):
        name, size = one.split("@")
        cache = feature_cache(runs, f"tf_efficientnet_{name}", int(size))
        if not cache.is_file():
            return None
        parts.append(features(cache))
    z = dict(parts[0])
    z["train"] = np.concatenate([p["train"] for p in parts], axis=2)
    z["nonlandmarks"] = np.concatenate([p["nonlandmarks"] for p in parts], axis=1)
    return z


def main() -> None:
    import argparse
    import json
    from landmark.memory import keep_freed_memory
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "many")
    parser.add_argument("--extract", nargs="*", default=["lite0@224"], metavar="BACKBONE@SIZE",
                        help="feature sets to compute first when not cached (e.g. lite2@260)")
    parser.add_argument("--measured-only", action="store_true", help="print and write the rows measured so far")
    parser.add_argument("--write", type=Path, help="markdown file whose 'many-cv' tables to replace")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for spec in args.extract:
        name, size = spec.split("@")
        features(feature_cache(args.runs, f"tf_efficientnet_{name}", int(size)), f"tf_efficientnet_{name}", int(size))
    done_path = args.runs / "cv_rows.json"   # rows already measured (a row is 5 fits: minutes on 2 shared cores)
    done = json.loads(done_path.read_text()) if done_path.is_file() else {}
    lines = ["| setting (5-fold CV, frozen 224 px lite0 features unless named, 52 classes) | scoring | gap "
             "| gap_landmarks_only | accuracy | acc l13 | l13 to new |", "|---|---|---:|---:|---:|---:|---:|"]
    print("\n".join(lines))
    confusion: dict = {}
    for label, spec, kwargs in ROWS:
        key = json.dumps([label, spec, kwargs], sort_keys=True)
        if key not in done and args.measured_only:
            continue
        if key not in done or (kwargs.get("scorings") == tuple(SCORINGS) and "confusion" not in done):
            z = feature_set(args.runs, spec)
            if z is None and key not in done:
                lines.append(f"| {label} | not measured: features not computed (--extract {' '.join(spec.split('+'))}) |")
                print(lines[-1], flush=True)
                continue
            if z is not None:   # else: measured, only the confusion list waits for the features
                got = run(z, confusion=confusion if kwargs.get("scorings") == tuple(SCORINGS) else None, **kwargs)
                done[key] = {k: list(map(float, v)) for k, v in got.items()}
                if confusion:
                    done["confusion"] = [[t, p, n] for (t, p), n in sorted(confusion.items(), key=lambda kv: -kv[1])]
                done_path.write_text(json.dumps(done))
        for scoring, values in done[key].items():
            lines.append(f"| {label} | {scoring} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in values) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    if "confusion" in done:
        text += "\n\n" + confusion_text(done["confusion"])
        print(text.split("\n\n")[-1])
    if args.write:
        from quality import write_section
        write_section(args.write, "many-cv", text)


def confusion_text(pairs: list) -> str:
    """Where landmarks13's wrong validation answers go (5 folds, shipped scoring, 52 classes): how many
    go to a landmarks_many landmark, which new landmarks take them and whose photos they are."""
    from collections import Counter
    from landmark.data.gldv2 import landmark_names
    names = landmark_names(FOLDERS, sorted({str(c) for t, p, _ in pairs for c in (t, p)}, key=int))
    wrong = sum(n for _, _, n in pairs)
    stolen = [(t, p, n) for t, p, n in pairs if int(p) >= 13]
    takers, losers = Counter(), Counter()
    for t, p, n in stolen:
        takers[names[p]] += n
        losers[names[t]] += n
    fmt = lambda c: ", ".join(f"{k} {v}" for k, v in c.most_common())
    return (f"landmarks13's wrong validation answers (5 folds, 720 photos, shipped scoring): {wrong}, "
            f"{wrong - sum(n for *_, n in stolen)} to another landmarks13 landmark and {sum(n for *_, n in stolen)} "
            f"to {len(takers)} of the 39 new landmarks. Taken by: {fmt(takers)}. Taken from: {fmt(losers)}.")


if __name__ == "__main__":
    main()
