"""Speed benchmark of the main job: training steps, prediction and the bare backbone.

Run from the repository root::

    .venv/bin/python benchmarks/speed.py [--backbone tf_efficientnet_lite0] [--size 160]
                                         [--images N] [--device cpu] [--data ../shared/data/landmarks13]

and it prints machine information and a markdown table of images per second and
milliseconds per image for

1. **training**: full steps of ``landmark.models.create_model(backbone, 13)`` on real
   photos of ``DATA/train``: ``ImageDataset`` + ``train_transform`` (the ``fast``
   config's augmentation and its fine-tune stage's crop) in a ``DataLoader`` + forward +
   cross-entropy + backward + Adam step, batch 32, with the backbone partly frozen as in
   the fast config (``freeze(60)``) and fully unfrozen (``freeze(0)``);
2. **prediction** through ``landmark.inference.predict_images`` (JPEG decoding, resize,
   its own ``DataLoader`` and workers included) at batch 1 and 32 with ``tta=1``, and at
   batch 32 with ``tta=10`` (10 crops per image, so ``32 // 10 = 3`` images per batch);
3. **bare** ``model.backbone.forward_features`` on random tensors under
   ``torch.inference_mode`` at batch 1 and 32, and bare forward + backward (``sum()`` of
   the feature map, every parameter trainable) at batch 32: the reference rates.

The ``share`` column divides a pipeline row's rate of *network inputs* (images, or
crops for ``tta=10``) by the rate of the bare row it is compared with, so it says how
much of the raw network speed the pipeline keeps (data loading, augmentation, head,
optimizer and, for frozen training, the skipped gradients make it differ from 100%).

Every row warms up first (untimed iterations), is timed with ``time.perf_counter``,
and synchronises the device on CUDA.  Bad images are skipped by the data pipeline,
counted, and listed after the table; only images actually processed are counted.
Timings are wall-clock on whatever else the machine is doing: run it on an idle
machine for publishable figures.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from landmark.config import load_config  # noqa: E402
from landmark.data import ImageDataset, Reject, collate, image_path, read_train  # noqa: E402
from landmark.data.transforms import find_scheduled_crop, train_transform  # noqa: E402
from landmark.memory import keep_freed_memory  # noqa: E402
from landmark.inference import predict_images  # noqa: E402
from landmark.models import LandmarkNet, WeightsError, create_model  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "landmarks13"
NUM_CLASSES = 13
TRAIN_BATCH = 32
# Crops (training and TTA) resize to ``resize`` then crop ``size``: the fast config's last stage uses 200 for 160.
RESIZE_RATIO = 200 / 160


@dataclass
class Result:
    """One measured row.

    Attributes:
        name: what was measured.
        batch: images per batch (for ``tta > 1`` the network sees ``batch // tta * tta`` crops).
        images: images processed in the timed part (rejects excluded).
        seconds: wall-clock seconds of the timed part (``time.perf_counter``).
        inputs_per_image: network inputs per image (crops for test-time voting, else 1).
        reference: name of the bare row this one is compared with, or None for bare rows.
        rejects: images the data pipeline could not decode (skipped, listed after the table).
    """

    name: str
    batch: int
    images: int
    seconds: float
    inputs_per_image: int = 1
    reference: str | None = None
    rejects: list[Reject] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        """Images per second (NaN when nothing was timed)."""
        return self.images / self.seconds if self.seconds > 0 and self.images else float("nan")

    @property
    def ms_per_image(self) -> float:
        """Milliseconds of wall-clock time per image."""
        return 1000.0 / self.images_per_s


# --- timing helpers ----------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA kernels (no-op on CPU), so that a clock reading covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], int], device: torch.device, warmup: int, iters: int,
               min_seconds: float = 0.0) -> tuple[int, float]:
    """Call ``step`` ``warmup`` times untimed, then at least ``iters`` times (and until
    ``min_seconds`` have passed) timed.

    Args:
        step: does one iteration and returns the number of images it processed.
    Returns:
        (images processed while timed, seconds).
    """
    for _ in range(warmup):
        step()
    synchronize(device)
    images, count, start = 0, 0, time.perf_counter()
    while count < iters or time.perf_counter() - start < min_seconds:
        images += step()
        count += 1
        synchronize(device)
    return images, time.perf_counter() - start


# --- bare backbone -----------------------------------------------------------------------------------------------

def bench_bare_forward(model: LandmarkNet, batch: int, size: int, device: torch.device, warmup: int = 3,
                       iters: int = 5, min_seconds: float = 2.0) -> Result:
    """``model.backbone.forward_features`` on a random float tensor ``[batch, 3, size, size]``
    under ``torch.inference_mode`` in eval mode: no data loading, no head."""
    model.to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)

    def step() -> int:
        with torch.inference_mode():
            model.backbone.forward_features(x)
        return batch

    images, seconds = time_steps(step, device, warmup, iters, min_seconds)
    return Result(f"bare forward b{batch}", batch, images, seconds)


def bench_bare_backward(model: LandmarkNet, batch: int, size: int, device: torch.device, warmup: int = 2,
                        iters: int = 3, min_seconds: float = 2.0) -> Result:
    """Forward + backward of ``model.backbone.forward_features(x).sum()`` on a random
    ``[batch, 3, size, size]`` tensor in train mode with every backbone layer trainable
    (``freeze(0)``); no data loading, head or optimizer."""
    model.to(device)
    model.freeze(0)
    model.train()
    x = torch.randn(batch, 3, size, size, device=device)

    def step() -> int:
        model.zero_grad(set_to_none=True)
        model.backbone.forward_features(x).sum().backward()
        return batch

    images, seconds = time_steps(step, device, warmup, iters, min_seconds)
    model.zero_grad(set_to_none=True)
    return Result(f"bare forward+backward b{batch}", batch, images, seconds)


# --- training ----------------------------------------------------------------------------------------------------

def bench_train(model: LandmarkNet, frame: pd.DataFrame, size: int, freeze: int, device: torch.device,
                batch: int = TRAIN_BATCH, warmup: int = 2, iters: int = 3, workers: int = 1,
                config: str = "finetune") -> Result:
    """Full training steps as ``landmark.training`` does them, on the images of ``frame``.

    Pipeline: ``ImageDataset`` (decoding the original photos) + ``train_transform`` (the
    config's augmentation; the crop of its last stage with ``size`` pixels, at its final
    crop probability ``p_end``) in a ``DataLoader`` with ``workers`` processes, then
    forward + ``F.cross_entropy`` + backward + ``torch.optim.Adam`` step over the
    trainable parameters after ``model.freeze(freeze)``.  The time includes waiting for
    data.  ``frame`` is repeated when it holds fewer than ``(warmup + iters) * batch`` rows.

    Args:
        frame: rows with ``id``, ``path`` and ``target`` (int class index < num_classes).
    """
    cfg = load_config(config)
    stage = cfg.stages[-1]
    crop = stage.crop.model_copy(update={"size": size, "resize": round(size * RESIZE_RATIO)})
    transform = train_transform(cfg.augment, crop, model.arch["mean"], model.arch["std"])
    find_scheduled_crop(transform).p = crop.p_end
    rows = frame.iloc[np.resize(np.arange(len(frame)), (warmup + iters) * batch)].reset_index(drop=True)
    dataset = ImageDataset(rows, transform, targets=rows["target"].to_numpy())
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate,
                        drop_last=True)
    model.to(device)
    model.freeze(freeze)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=stage.lr)
    batches = iter(loader)
    rejects: list[Reject] = []

    def step() -> int:
        good, bad = next(batches)
        rejects.extend(bad)
        if good is None:
            return 0
        x, y = good["image"].to(device, non_blocking=True), good["target"].to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(y)

    images, seconds = time_steps(step, device, warmup, iters)
    del batches  # shuts the workers down
    model.freeze(0)
    model.zero_grad(set_to_none=True)
    return Result(f"train step freeze({freeze})", batch, images, seconds, 1, f"bare forward+backward b{batch}",
                  rejects)


# --- prediction --------------------------------------------------------------------------------------------------

def bench_predict(model: LandmarkNet, queries: pd.DataFrame, size: int, batch: int, tta: int,
                  device: torch.device, warmup_images: int | None = None, workers: int = 2) -> Result:
    """``landmark.inference.predict_images`` over ``queries`` (``id``, ``path``): decoding,
    resizing (or ten-cropping), its ``DataLoader`` with ``workers`` processes (started
    inside the timed call, as in a real run), softmax and voting.

    A first untimed call on ``warmup_images`` queries (default: one batch) warms up.
    """
    preprocess = {"size": size, "resize": round(size * RESIZE_RATIO), "mean": model.arch["mean"],
                  "std": model.arch["std"]}
    classes = [str(k) for k in range(model.arch["num_classes"])]
    per_batch = max(1, batch // tta)
    warm = queries.head(warmup_images if warmup_images is not None else per_batch)
    dev = str(device)
    if len(warm):
        predict_images(model, classes, preprocess, warm, tta=tta, batch_size=batch, workers=workers, device=dev)
    synchronize(device)
    start = time.perf_counter()
    out, rejects = predict_images(model, classes, preprocess, queries, tta=tta, batch_size=batch, workers=workers,
                                  device=dev)
    synchronize(device)
    seconds = time.perf_counter() - start
    return Result(f"predict_images tta={tta}", batch, len(out) - len(rejects), seconds, tta, f"bare forward b{batch}",
                  rejects)


# --- data, machine and table -------------------------------------------------------------------------------------

def load_photos(data: str | Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` labelled photos of a GLDv2 folder (random, fixed ``seed``), all when ``n`` exceeds them.

    Returns:
        frame with ``id``, ``path`` (``DATA/train/a/b/c/id.jpg``) and ``target`` (int64
        class index by sorted landmark id, modulo :data:`NUM_CLASSES` so that any data
        folder fits the 13-class model).

    Raises:
        FileNotFoundError, ValueError: from :func:`landmark.data.read_train`.
    """
    frame = read_train(data)
    frame = frame.sample(n=min(n, len(frame)), random_state=seed).reset_index(drop=True)
    if "path" not in frame.columns:
        frame["path"] = [str(image_path(Path(data), i)) for i in frame["id"]]
    codes = frame["landmark_id"].astype(str).astype("category").cat.codes.to_numpy()
    frame["target"] = (codes % NUM_CLASSES).astype(np.int64)
    return frame[["id", "path", "target"]]


def load_average() -> str:
    """1-minute load average (runnable processes; above the CPU count means the CPUs were shared)."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def machine_info(device: torch.device) -> dict[str, str]:
    """CPU count, torch version, intra-op threads, device name, Python, platform and load average."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"cpus": str(os.cpu_count()), "torch": torch.__version__, "threads": str(torch.get_num_threads()),
            "device": f"{device} ({name})", "python": platform.python_version(), "platform": platform.platform(),
            "load average (1 min)": load_average()}


def format_table(results: list[Result]) -> str:
    """Markdown table: row, batch, images timed, images/s, ms/image, reference and share.

    ``share`` = (images/s x inputs per image) / reference images/s, in percent.
    """
    rates = {r.name: r.images_per_s for r in results}
    lines = ["| measurement | batch | images timed | images/s | ms/image | compared with | share of bare rate |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for r in results:
        ref = rates.get(r.reference) if r.reference else None
        share = f"{100 * r.images_per_s * r.inputs_per_image / ref:.0f}%" if ref else "(reference)" \
            if r.reference is None else "n/a"
        lines.append(f"| {r.name} | {r.batch} | {r.images} | {r.images_per_s:.1f} | {r.ms_per_image:.1f} | "
                     f"{r.reference or '-'} | {share} |")
    return "\n".join(lines)


def build_model(backbone: str) -> tuple[LandmarkNet, str]:
    """The 13-class model with ImageNet weights, or random weights when none are available
    offline (speed does not depend on the values).  Returns (model, weights used)."""
    try:
        return create_model(backbone, NUM_CLASSES, weights="imagenet"), "imagenet"
    except WeightsError as err:
        print(f"note: {err}; timing random weights instead", file=sys.stderr)
        return create_model(backbone, NUM_CLASSES, weights="none"), "none"


def run(backbone: str, size: int, images: int, device: torch.device, data: Path, train_iters: int = 3,
        warmup: int = 2, min_seconds: float = 2.0, freeze: int | None = None) -> list[Result]:
    """Measure every row (bare first, then training, then prediction), printing each as it is done."""
    model, _ = build_model(backbone)
    photos = load_photos(data, max(images, (warmup + train_iters) * TRAIN_BATCH))
    queries = photos.head(images)[["id", "path"]]
    freeze = load_config("finetune").stages[-1].freeze if freeze is None else freeze
    jobs: list[Callable[[], Result]] = [
        lambda: bench_bare_forward(model, 1, size, device, min_seconds=min_seconds),
        lambda: bench_bare_forward(model, TRAIN_BATCH, size, device, min_seconds=min_seconds),
        lambda: bench_bare_backward(model, TRAIN_BATCH, size, device, min_seconds=min_seconds),
        lambda: bench_train(model, photos, size, freeze, device, warmup=warmup, iters=train_iters),
        lambda: bench_train(model, photos, size, 0, device, warmup=warmup, iters=train_iters),
        lambda: bench_predict(model, queries, size, 1, 1, device),
        lambda: bench_predict(model, queries, size, TRAIN_BATCH, 1, device),
        lambda: bench_predict(model, queries, size, TRAIN_BATCH, 10, device),
    ]
    results = []
    for k, job in enumerate(jobs, 1):
        result = job()
        results.append(result)
        print(f"[{k}/{len(jobs)}] {result.name} (batch {result.batch}): {result.images_per_s:.1f} images/s "
              f"({result.images} images in {result.seconds:.1f} s)", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm backbone name")
    parser.add_argument("--size", type=int, default=160, help="pixels, side of the network input")
    parser.add_argument("--images", type=int, default=64, help="photos timed per prediction row")
    parser.add_argument("--train-iters", type=int, default=3, help="timed training steps (batch 32) per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps before timing")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="minimum timed seconds of each bare row")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GLDv2-layout folder with train.csv")
    args = parser.parse_args(argv)
    if args.size < 32 or args.images < 1 or args.train_iters < 1 or args.warmup < 0:
        parser.error("--size must be >= 32 pixels, --images and --train-iters >= 1, --warmup >= 0")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build or machine has no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()   # as the `landmark` command does (landmark/memory.py)
    load_before, start = load_average(), time.perf_counter()
    try:
        results = run(args.backbone, args.size, args.images, device, args.data, args.train_iters, args.warmup,
                      args.min_seconds)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("## Machine\n")
    info = machine_info(device)
    info["load average (1 min)"] = f"{load_before} before, {info['load average (1 min)']} after"
    info["benchmark wall time"] = f"{time.perf_counter() - start:.0f} s"
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(f"\n## Speed: {args.backbone}, {args.size}x{args.size} pixels, {NUM_CLASSES} classes\n")
    print(format_table(results))
    rejects = {(r.id, r.path, r.reason) for res in results for r in res.rejects}
    if rejects:
        print(f"\n{len(rejects)} image(s) skipped as unreadable:")
        for image_id, path, reason in sorted(rejects):
            print(f"- {image_id} ({path}): {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
