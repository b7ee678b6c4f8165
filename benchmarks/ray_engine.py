"""``landmark embed --engine ray`` against the single-process command, on the same photos, in one run.

Run from the repository root (needs the extra: ``pip install 'landmark[ray]'``)::

    .venv/bin/python benchmarks/ray_engine.py [--data ../shared/data/landmarks13] [--checkpoint CKPT]
        [--size 224] [--part-size 100] [--batch-size 32] [--runtime torch] [--actors N] [--num-cpus C]

Both engines embed every photo of ``DATA/test`` and ``DATA/train`` (995 files of landmarks13)
into a folder of parts, as ``landmark embed --shard 0/1`` and ``landmark embed --engine ray``
do: ``embed_checkpoint_shard(engine="local")`` (one process, decoding threads beside the
network), then ``engine="ray"`` (a local Ray cluster on this machine's CPUs, started inside the
timed call; decoding tasks and a pool of model actors sized by ``plan_pool``).  Each row is
timed from the call to the last part written, model loading and cluster start-up included; a
second ``ray`` row times the pipeline on a cluster that is already running (``ray.init`` first,
as on a long-lived cluster).  The merged outputs are compared (largest difference of a vector
component, ids in the same order, the same rejects).

``CPU s/photo`` is the wall time multiplied by the machine's CPUs, divided by the photos: what a
photo costs in CPU time when the CPUs are saturated, so the GLDv2 estimate (4.1M photos on N
nodes of C CPUs, assuming throughput scales with CPUs as Ray schedules one decoding task or
actor per CPU) is ``4.1M x CPU s/photo / (N x C)``; it is printed for the measured rows.
Without ``--checkpoint`` an ImageNet EfficientNet-Lite0 with a seeded random 13-class head at
``--size`` px is used (the ``fast`` preset's network): speed is the same as a trained one.  The
CPU is shared with other work here: the load average before and after is printed, and Ray's
workers run at the driver's priority (``RAY_worker_niceness=0``; Ray's default makes them nicer).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray starts its workers 15 steps nicer than the driver (RAY_worker_niceness), which on a CPU
# shared with other work would slow the ray rows against the local one; same priority here.
os.environ.setdefault("RAY_worker_niceness", "0")
from landmark.memory import keep_freed_memory  # noqa: E402
from landmark.threads import spin_less  # noqa: E402

keep_freed_memory()
spin_less()   # as the `landmark` command does, before torch loads

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from landmark.models.runtime import cpu_count  # noqa: E402
from landmark.retrieval.pipeline import embed_checkpoint_shard, image_frame  # noqa: E402
from landmark.retrieval.shards import merge_shards  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "landmarks13"
GLDV2_PHOTOS = 4_100_000


def _checkpoint(args, work: Path) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    import torch

    from landmark.models import create_model, save_checkpoint
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 13, weights="imagenet")
    path = work / "run" / "checkpoints" / "best.pt"
    save_checkpoint(path, model, [str(i) for i in range(13)],
                    preprocess={"size": args.size, "mean": model.arch["mean"], "std": model.arch["std"]})
    return path


def _run(name: str, checkpoint: Path, frame: pd.DataFrame, out: Path, args, **engine) -> dict:
    start = time.perf_counter()
    summary = embed_checkpoint_shard(checkpoint, frame, out, part_size=args.part_size, batch_size=args.batch_size,
                                     runtime=args.runtime, **engine)
    wall = time.perf_counter() - start
    photos = summary["rows"] + summary["rejects"]
    print(f"  {name}: {wall:.1f} s for {photos} photos", file=sys.stderr)
    return {"engine": name, "photos": photos, "wall": wall, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--part-size", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--actors", type=int, default=None)
    parser.add_argument("--num-cpus", type=float, default=None)
    args = parser.parse_args()
    data = Path(args.data)
    frame = pd.concat([image_frame(images=data / "test"), image_frame(images=data / "train")], ignore_index=True)
    cpus = cpu_count()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = _checkpoint(args, work)
        ray_options = {"actors": args.actors, "actor_cpus": args.num_cpus}
        rows = [_run("local", checkpoint, frame, work / "local", args, engine="local"),
                _run("ray (cluster started in the call)", checkpoint, frame, work / "ray", args, engine="ray",
                     **ray_options)]
        import ray
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="warning")
        try:
            rows.append(_run("ray (cluster already running)", checkpoint, frame, work / "ray2", args, engine="ray",
                             **ray_options))
        finally:
            ray.shutdown()
        merged = {name: merge_shards(work / name, work / f"{name}.npy") for name in ("local", "ray", "ray2")}
        from landmark.retrieval.embeddings import load_embeddings, sidecar
        local = load_embeddings(work / "local.npy")
        diffs, same = [], True
        for name in ("ray", "ray2"):
            other = load_embeddings(work / f"{name}.npy")
            same &= local.ids.tolist() == other.ids.tolist()
            same &= pd.read_csv(sidecar(work / "local.npy", "rejects.csv")).equals(
                pd.read_csv(sidecar(work / f"{name}.npy", "rejects.csv")))
            diffs.append(float(np.abs(np.asarray(local.vectors, np.float32) - np.asarray(other.vectors, np.float32)).max()))
    load_after = os.getloadavg()
    plan = rows[1]["summary"]
    print(f"\nmachine: {cpus} CPUs; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(1 min); {len(frame)} photos of {data} (test + train), {merged['local']['rows']} embedded, "
          f"{merged['local']['rejects']} rejected; runtime {args.runtime}, {args.size} px, batch {args.batch_size}, "
          f"parts of {args.part_size}; ray pool: {plan.get('actors')} actors x {plan.get('actor_cpus')} CPU\n")
    print("| engine | photos | wall s | photos/s | CPU s/photo | GLDv2 4.1M on 1 node of "
          f"{cpus} CPUs | on 10 nodes of 16 CPUs |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        per_photo = row["wall"] * cpus / row["photos"]
        one = GLDV2_PHOTOS * per_photo / cpus / 3600
        ten = GLDV2_PHOTOS * per_photo / 160 / 3600
        print(f"| {row['engine']} | {row['photos']} | {row['wall']:.1f} | {row['photos'] / row['wall']:.1f} | "
              f"{per_photo:.3f} | {one:.1f} h | {ten:.1f} h |")
    print(f"\nray vs local: same ids in the same order and the same rejects: {same}; "
          f"largest vector difference {max(diffs):.2e} (float16 storage)")


if __name__ == "__main__":
    main()
