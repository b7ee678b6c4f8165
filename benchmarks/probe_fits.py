"""The two probe fits on real descriptors: full-batch L-BFGS against the streaming fit.

    nice -n 10 .venv/bin/python benchmarks/probe_fits.py --data ../shared/data/landmarks13 --data ../shared/data/landmarks_many

For each data folder, the ``fast`` preset's split (validation 15 %), its ImageNet
EfficientNet-Lite0 GeM descriptors of the training photos and their mirrors and of the
validation photos (computed once, cached under ``--cache``), then the head fitted by
:func:`landmark.training.probe.fit_lbfgs` (what ``fast`` uses at this size) and by
:func:`landmark.training.probe.fit_streamed` (what it uses above ``probe_memory_gb``) with a
few settings, printing validation accuracy and GAP and the fit's seconds as a Markdown table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def descriptors(data: Path, cache: Path) -> dict:
    """``x`` float32 [2N, C] (photos, then mirrors), ``y`` [2N], ``vx`` [V, C], ``vy`` [V], ``classes``."""
    out = cache / f"{data.name}.npz"
    if out.is_file():
        with np.load(out) as f:
            return dict(f)
    from landmark.config import load_config
    from landmark.models import create_model
    from landmark.training.features import FeatureStore
    from landmark.training.prepare import prepare_data
    from landmark.training.trainer import _loader
    config = load_config("fast")
    with tempfile.TemporaryDirectory() as run:
        prepared = prepare_data(data, config.data, config.seed, Path(run))
        model = create_model(spec=config.model.spec, num_classes=len(prepared.classes), weights="imagenet")
        model.preprocess = model.spec.preprocess(resize=config.preprocess_resize)
        model.freeze(-1)
        store, rejects = FeatureStore(), {}
        transform = model.preprocess.transform()
        x, y, _ = store.pooled(model, _loader(prepared, "train", transform, config, False), "cpu", rejects)
        vx, vy, _ = store.pooled(model, _loader(prepared, "val", transform, config, False), "cpu", rejects, views=1)
    result = {"x": x.numpy(), "y": y.numpy(), "vx": vx.numpy(), "vy": vy.numpy(),
              "classes": np.array(len(prepared.classes))}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(out, **result)
    return result


def evaluate(head, vx: np.ndarray, vy: np.ndarray) -> tuple[float, float]:
    import pandas as pd

    from landmark.evaluation.metrics import gap
    from landmark.training.head_fit import top_classes
    pred, prob = top_classes(head, vx)
    frame = pd.DataFrame({"id": np.arange(len(vy)).astype(str), "landmark_id": pred[:, 0].astype(str),
                          "score": prob[:, 0].astype(np.float64)})
    solution = {str(i): {str(t)} for i, t in enumerate(vy)}
    return float((pred[:, 0] == vy).mean()), gap(frame, solution)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--cache", default="/tmp/probe_fits")
    args = parser.parse_args()
    from landmark.config import load_config
    from landmark.models.heads import GeMHead
    from landmark.training.head_fit import FeatureWriter
    from landmark.training.probe import fit_lbfgs, fit_streamed
    stage = load_config("fast").stages[-1]
    print("| data | classes | train photos | fit | val accuracy | val GAP | seconds |")
    print("|---|---|---|---|---|---|---|")
    for data in map(Path, args.data):
        d = descriptors(data, Path(args.cache))
        classes = int(d["classes"])
        with tempfile.TemporaryDirectory() as tmp:
            writer = FeatureWriter(Path(tmp) / "f.npy", len(d["y"]), d["x"].shape[1])
            n = len(d["y"]) // 2
            writer.add(d["x"], d["y"], np.repeat([0, 1], n), np.tile(np.arange(n).astype(str), 2))
            features = writer.finish()
            runs = [("L-BFGS (fast, 300 iterations)", None)]
            runs += [("stream: class means only", stage.model_copy(update={"stream_epochs": 0})),
                     (f"stream (fast: {stage.stream_epochs} epochs, at least {stage.stream_min_steps} steps of "
                      f"{stage.stream_batch}, lr {stage.stream_lr:g})", stage),
                     ("stream, at least 600 steps", stage.model_copy(update={"stream_min_steps": 600}))]
            for name, cfg in runs:
                torch.manual_seed(0)
                head = GeMHead(d["x"].shape[1], classes)
                tic = time.perf_counter()
                if cfg is None:
                    fit_lbfgs(head, torch.from_numpy(d["x"]), torch.from_numpy(d["y"]), stage)
                else:
                    fit_streamed(head, features, classes, cfg)
                seconds = time.perf_counter() - tic
                acc, g = evaluate(head, d["vx"], d["vy"])
                print(f"| {data.name} | {classes} | {n} | {name} | {acc:.3f} | {g:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
