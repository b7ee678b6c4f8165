"""``landmark embed --engine ray`` against the single-process command, on the same photos, in one run.

Run from the repository root (needs the extra: ``pip install 'landmark[ray]'``)::

    .venv/bin/python benchmarks/ray_engine.py [--data ../shared/data/landmarks13] [--checkpoint CKPT]
        [--size 224] [--part-size 100] [--batch-size 32] [--runtime torch] [--actors N] [--num-cpus C]

Both engines embed every photo of ``DATA/test`` and ``DATA/train`` (994 photos of landmarks13)
into a folder of parts, as ``landmark embed --shard 0/1`` and ``landmark embed --engine ray``
do: ``embed_checkpoint_shard(engine="local")`` (one process, decoding threads beside the
network), then ``engine="ray"`` (a local Ray cluster on this machine's CPUs, started and stopped
inside the timed row; decoding tasks and a pool of model actors sized by ``plan_pool``).  Each
row is timed from the call to the last part written, model loading and cluster start-up
included.  The merged outputs are compared (largest difference of a vector component, ids in
the same order, the same rejects).

``CPU s/photo`` is the CPU time (user + system) of this process and of every process it
started (Ray's workers, raylet and GCS included, read from /proc before the cluster stops), per photo: on
a CPU shared with other work it hardly depends on the load, unlike wall time, so the GLDv2
estimate (4.1M photos on N nodes of C CPUs, throughput assumed to scale with CPUs as Ray
schedules one decoding task or actor per CPU) is ``4.1M x CPU s/photo / (N x C)``.  The ray
row is also split at its first part written: before it, the cluster's start-up, the actor's
model load and the pipeline's fill (paid once per job); after it, the steady state, the cost
per photo that a 4.1M-photo job pays.  Without
``--checkpoint`` an ImageNet EfficientNet-Lite0 with a seeded random 13-class head at
``--size`` px is used (the ``fast`` preset's network): speed is the same as a trained one.  The
CPU is shared with other work here: the load average before and after is printed, and Ray's
workers run at the driver's priority (``RAY_worker_niceness=0``; Ray's default makes them nicer).
"""
from __future__ import annotations

import argparse
import os
import resource
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


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _descendants_cpu_seconds() -> float:
    """User + system CPU seconds of every live descendant of this process (and of their reaped
    children), from /proc (Linux): Ray's raylet, GCS and workers are not reaped by this process."""
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")   # utime stime cutime cstime
    me, total = os.getpid(), 0.0
    for pid in times:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, me):
            ancestor = parents.get(ancestor)
        total += times[pid] if ancestor == me else 0.0
    return total


def _run(name: str, checkpoint: Path, frame: pd.DataFrame, out: Path, args, **engine) -> dict:
    """One engine over ``frame``; the ray row starts its cluster here (timed) so that its processes'
    CPU time can be read from /proc before it stops."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    first = {}   # wall and CPU seconds when the first part is written: start-up behind, steady state after
    if engine.get("engine") == "ray":
        import ray
        ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, logging_level="warning")

        def on_part(k: int) -> None:
            if not first:
                first.update(wall=time.perf_counter() - start, cpu=_cpu_seconds() - cpu + _descendants_cpu_seconds())
        engine = {**engine, "on_part": on_part}
    try:
        summary = embed_checkpoint_shard(checkpoint, frame, out, part_size=args.part_size,
                                         batch_size=args.batch_size, runtime=args.runtime, **engine)
    finally:
        children = _descendants_cpu_seconds()
        if engine.get("engine") == "ray":
            ray.shutdown()
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu + children
    photos = summary["rows"] + summary["rejects"]
    print(f"  {name}: {wall:.1f} s, {cpu:.1f} CPU s for {photos} photos; first part {first}", file=sys.stderr)
    steady = None
    if first:
        rest = photos - min(args.part_size, photos)
        steady = {"wall": (wall - first["wall"]) / rest, "cpu": (cpu - first["cpu"]) / rest} if rest else None
    return {"engine": name, "photos": photos, "wall": wall, "cpu": cpu, "summary": summary, "first": first,
            "steady": steady}


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
                _run("ray", checkpoint, frame, work / "ray", args, engine="ray", **ray_options)]
        merged = {name: merge_shards(work / name, work / f"{name}.npy") for name in ("local", "ray")}
        from landmark.retrieval.embeddings import load_embeddings, sidecar
        local, other = load_embeddings(work / "local.npy"), load_embeddings(work / "ray.npy")
        same = local.ids.tolist() == other.ids.tolist() and pd.read_csv(sidecar(work / "local.npy", "rejects.csv")).equals(
            pd.read_csv(sidecar(work / "ray.npy", "rejects.csv")))
        diff = float(np.abs(np.asarray(local.vectors, np.float32) - np.asarray(other.vectors, np.float32)).max())
    load_after = os.getloadavg()
    plan = rows[1]["summary"]
    print(f"\nmachine: {cpus} CPUs; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(1 min); {len(frame)} photos of {data} (test + train), {merged['local']['rows']} embedded, "
          f"{merged['local']['rejects']} rejected; runtime {args.runtime}, {args.size} px, batch {args.batch_size}, "
          f"parts of {args.part_size}; ray pool: {plan.get('actors')} actors x {plan.get('actor_cpus')} CPU\n")
    print("| engine | photos | wall s | photos/s | CPU s | CPU s/photo | GLDv2 4.1M: CPU-hours | "
          "1 node of 16 CPUs | 10 nodes of 16 CPUs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        per_photo = row["cpu"] / row["photos"]
        hours = GLDV2_PHOTOS * per_photo / 3600
        print(f"| {row['engine']} | {row['photos']} | {row['wall']:.1f} | {row['photos'] / row['wall']:.1f} | "
              f"{row['cpu']:.0f} | {per_photo:.3f} | {hours:.0f} | {hours / 16:.1f} h | {hours / 160:.2f} h |")
        if row["steady"]:
            steady = row["steady"]
            hours = GLDV2_PHOTOS * steady["cpu"] / 3600
            print(f"| {row['engine']}, after its first part (start-up: {row['first']['wall']:.0f} s, "
                  f"{row['first']['cpu']:.0f} CPU s) | {row['photos'] - min(args.part_size, row['photos'])} | | "
                  f"{1 / steady['wall']:.1f} | | {steady['cpu']:.3f} | {hours:.0f} | {hours / 16:.1f} h | "
                  f"{hours / 160:.2f} h |")
    print(f"\nray vs local: same ids in the same order and the same rejects: {same}; "
          f"largest vector difference {diff:.2e} (float16 storage)")


if __name__ == "__main__":
    main()
