"""Inference runtimes compared: eager PyTorch, ONNX Runtime fp32 and int8, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/runtimes.py [--checkpoint runs/demo/checkpoints/best.pt]
        [--data ../shared/data/landmarks13] [--images 64] [--threads N] [--workers N]

It exports the checkpoint (``landmark.inference.export.export_onnx``: fp32, and int8
calibrated on 64 training photos) into a temporary folder, then measures for each runtime

1. **forward**: ``runtime(x)`` (logits and embedding) on a random ``[B, 3, S, S]`` tensor
   at batch 1, 32 and 30 (:data:`TTA10_INPUTS`: what ``tta=10`` at batch 32 feeds the
   network, 3 photos x 10 crops), after a warm-up, repeated for at least ``--min-seconds``;
2. **predict**: ``landmark.inference.predict_images`` end to end (decoding, resize or ten
   crops, ``--workers`` decoding threads, forward, softmax, voting) at
   batch 1 and 32 with ``tta=1`` on ``--images`` test photos, and at batch 32 with
   ``tta=10``;
3. **GAP**: ``predict_images`` with ``tta=1``, batch 32 over *all* of ``DATA/test``, scored
   against ``recognition_solution.csv`` (this pass is also the ``predict b32 all`` row), and
   the top-1 agreement of each runtime's labels with ONNX Runtime fp32's, over all photos
   and apart for photos of a landmark and of none (:func:`agreement_table`).

``CPU ms/image`` is the user + system time of the process (decoding threads included) per
image: unlike wall-clock rates it hardly depends on what else runs on the machine, so the
GLDv2 estimate (hours to embed 4.1M photos on N CPUs, one shard per CPU) is computed from it.

Each speed row is measured ``--rounds`` times (3), interleaved over the runtimes, and the
fastest is kept: on a shared CPU, load changes then hit every runtime alike.

Columns: ``x eager`` divides a row's images/s by the eager row of the same measurement
(``x eager (CPU)`` does the same with CPU time per image);
``share of forward`` divides a predict row's rate of network inputs (images, or crops for
``tta=10``) by the same runtime's forward rate at the batch the network got
(:func:`forward_batch`: 30 for ``tta=10`` at batch 32); ``share of forward (CPU)`` divides
the forward row's CPU time per input by the predict row's.  Without
``--checkpoint`` an ImageNet-initialised EfficientNet-Lite0 with an untrained 13-class head
is used: speed is the same, GAP is then meaningless.  Timings are wall-clock on whatever
else the machine does; the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from landmark.threads import spin_less  # noqa: E402

spin_less()   # as the `landmark` command does, before torch loads (landmark/threads.py)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from landmark.data import read_queries, read_train, with_paths  # noqa: E402
from landmark.evaluation import evaluate  # noqa: E402
from landmark.data.kaggle import write_submission  # noqa: E402
from landmark.inference import predict_images  # noqa: E402
from landmark.inference.export import export_onnx  # noqa: E402
from landmark.memory import keep_freed_memory  # noqa: E402
from landmark.models.runtime import OnnxRuntime, TorchRuntime, cpu_count, decode_workers  # noqa: E402
from landmark.models import create_model, load_model, save_checkpoint  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "landmarks13"
GLDV2_TRAIN_IMAGES = 4_132_914   # GLDv2 train.csv rows
TTA10_INPUTS = 30                # network inputs per forward of predict --tta 10 at batch 32: 3 photos x 10 crops


def forward_batch(what: str, batch: int, inputs_per_image: int) -> int:
    """The forward-only row a predict row is compared with: the batch the network really
    gets (``batch // tta`` photos x ``tta`` crops: 30 for ``tta=10`` at batch 32)."""
    return batch if what == "forward" else max(1, batch // inputs_per_image) * inputs_per_image


@dataclass
class Row:
    """One measurement: ``runtime``, ``what`` (forward / predict ...), ``batch``, network
    ``inputs_per_image`` (10 for tta=10), ``images`` timed, wall-clock ``seconds`` and
    ``cpu_seconds`` (user + system time of this process and of its finished decoding
    workers: what the work costs, whatever else shares the CPUs)."""

    runtime: str
    what: str
    batch: int
    images: int
    seconds: float
    inputs_per_image: int = 1
    cpu_seconds: float = float("nan")

    @property
    def rate(self) -> float:
        """Images per second."""
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def time_forward(name: str, runtime, batch: int, size: int, min_seconds: float, warmup: int = 2) -> Row:
    """``runtime(x)`` on a random ``[batch, 3, size, size]`` float32 tensor, repeated until
    ``min_seconds`` have passed (at least 3 times) after ``warmup`` untimed calls."""
    x = torch.randn(batch, 3, size, size)
    for _ in range(warmup):
        runtime(x)
    count, start, cpu = 0, time.perf_counter(), cpu_time()
    while count < 3 or time.perf_counter() - start < min_seconds:
        runtime(x)
        count += 1
    return Row(name, "forward", batch, count * batch, time.perf_counter() - start, 1, cpu_time() - cpu)


def time_predict(name: str, runtime, queries: pd.DataFrame, batch: int, tta: int, workers: int,
                 what: str = "predict", checkpoint: dict | None = None) -> tuple[Row, pd.DataFrame]:
    """``predict_images`` end to end over ``queries`` (after an untimed one-batch warm-up);
    ``checkpoint``: what the recogniser reads from the checkpoint (the "no landmark" thresholds).

    Returns:
        (the row, the predictions ``id, landmark_id, score, verdict``).
    """
    kwargs = dict(tta=tta, batch_size=batch, workers=workers, checkpoint=checkpoint)
    predict_images(runtime, runtime.classes, runtime.preprocess, queries.head(max(1, batch // tta)), **kwargs)
    start, cpu = time.perf_counter(), cpu_time()
    out, rejects = predict_images(runtime, runtime.classes, runtime.preprocess, queries, **kwargs)
    row = Row(name, f"{what} tta={tta}", batch, len(out) - len(rejects), time.perf_counter() - start, tta,
              cpu_time() - cpu)
    return row, out


def cpu_time() -> float:
    """CPU seconds (user + system) of this process plus its waited-for children (the
    ``DataLoader`` workers, counted once they have exited)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def gap_of(predictions: pd.DataFrame, solution: Path, work: Path) -> dict:
    """``landmark.evaluate`` of ``predictions`` against ``solution`` (GAP, accuracy ...)."""
    path = work / "submission.csv"
    write_submission(predictions, path)
    return evaluate(path, solution)


def sample_photos(data: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` training photos of a GLDv2 folder as ``id, path`` (fixed random sample)."""
    frame = read_train(data).sample(frac=1.0, random_state=seed).head(n)
    return with_paths(frame, data, "train")[["id", "path"]]


def prepare(checkpoint: Path | None, data: Path, work: Path, threads: int) -> dict:
    """Checkpoint (an untrained-head one when none is given), its fp32 and int8 exports, and
    the three runtimes ``{"eager": ..., "ort-fp32": ..., "ort-int8": ...}`` plus ``info``."""
    if checkpoint is None:
        model = create_model("tf_efficientnet_lite0", 13, weights="imagenet").eval()
        checkpoint = work / "untrained.pt"
        save_checkpoint(checkpoint, model, [str(k) for k in range(13)],
                        preprocess={"size": 224, "resize": 256, "mean": model.arch["mean"], "std": model.arch["std"]})
    calib = work / "calibration.csv"
    sample_photos(data, 64).to_csv(calib, index=False)
    reports = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        reports[name] = export_onnx(checkpoint, work / f"model.{name}.onnx", int8=int8, images=calib,
                                    verify_images=32, calibration_images=64, threads=threads)
    model, ckpt = load_model(checkpoint)
    runtimes = {"eager": TorchRuntime(model, ckpt["classes"], ckpt["preprocess"], device="cpu"),
                "ort-fp32": OnnxRuntime(work / "model.fp32.onnx", threads),
                "ort-int8": OnnxRuntime(work / "model.int8.onnx", threads)}
    return {"checkpoint": checkpoint, "runtimes": runtimes, "reports": reports,
            "thresholds": {"reject_threshold": ckpt.get("reject_threshold")}}


def agreement_table(quality: dict, predictions: dict, landmark_ids: set[str]) -> str:
    """GAP, accuracy and top-1 agreement of each runtime's labels with ``ort-fp32``'s, over all
    photos and separately over photos of a landmark and of none (``landmark_ids``: the ids
    whose solution lists a landmark).  On a photo of no landmark the classes' logits are often
    close together, so that is where a perturbed network changes its arg-max.  ``same answer``
    compares what a person reads instead (``verdict``: the landmark's name, or ``no landmark``
    below the checkpoint's threshold): two runtimes that both say "no landmark" agree."""
    ref = predictions["ort-fp32"].set_index("id")
    lines = ["| runtime | GAP | GAP - fp32 | accuracy | top-1 agreement with ort-fp32 | on landmark photos | "
             "on other photos | same answer as ort-fp32 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, q in quality.items():
        mine = predictions[name].set_index("id").reindex(ref.index)
        same, same_answer = mine["landmark_id"] == ref["landmark_id"], mine["verdict"] == ref["verdict"]
        is_landmark = ref.index.isin(list(landmark_ids))
        parts = [same.mean(), same[is_landmark].mean(), same[~is_landmark].mean(), same_answer.mean()]
        lines.append(f"| {name} | {q['gap']:.4f} | {q['gap'] - quality['ort-fp32']['gap']:+.4f} | {q['accuracy']:.4f} | "
                     + " | ".join(f"{v:.4f} ({int(round(v * n))}/{n})" for v, n in
                                  zip(parts, [len(same), int(is_landmark.sum()), int((~is_landmark).sum()), len(same)])) + " |")
    return "\n".join(lines)


def gldv2_estimate(rows: list[Row], images: int = GLDV2_TRAIN_IMAGES) -> str:
    """Hours to embed ``images`` photos, per runtime, from the CPU time per image of its
    ``predict all tta=1`` row (decoding + forward, what ``landmark embed`` does), assuming
    CPUs scale linearly (one process per shard: ``embed --shard i/n``)."""
    lines = ["| runtime | CPU ms/image | CPU-hours | 16 CPUs | 64 CPUs | 256 CPUs |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.what.startswith("predict all") and r.inputs_per_image == 1:
            hours = images * r.cpu_seconds / r.images / 3600
            lines.append(f"| {r.runtime} | {1000 * r.cpu_seconds / r.images:.1f} | {hours:.0f} | {hours / 16:.1f} h | "
                         f"{hours / 64:.1f} h | {hours / 256:.2f} h |")
    return "\n".join(lines)


def format_rows(rows: list[Row]) -> str:
    """Markdown table of the rows, with ``x eager`` and the shares of forward (module docstring)."""
    rate = {(r.runtime, r.what, r.batch): r.rate for r in rows}
    cpu = {(r.runtime, r.what, r.batch): r.cpu_seconds / r.images for r in rows}
    lines = ["| runtime | measurement | batch | images | images/s | ms/image | CPU ms/image | x eager | "
             "x eager (CPU) | share of forward | share of forward (CPU) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        eager, eager_cpu = rate.get(("eager", r.what, r.batch)), cpu.get(("eager", r.what, r.batch))
        key = (r.runtime, "forward", forward_batch(r.what, r.batch, r.inputs_per_image))
        fwd, fwd_cpu = rate.get(key), cpu.get(key)
        own_cpu = r.cpu_seconds / r.images / r.inputs_per_image   # CPU seconds per network input
        share = f"{100 * r.rate * r.inputs_per_image / fwd:.0f}%" if fwd and r.what != "forward" else "-"
        share_cpu = (f"{100 * fwd_cpu / own_cpu:.0f}%" if fwd_cpu and r.what != "forward" and own_cpu > 0
                     else "-")
        speedup = f"{r.rate / eager:.2f}" if eager else "n/a"
        speedup_cpu = f"{eager_cpu * r.images / r.cpu_seconds:.2f}" if eager_cpu and r.cpu_seconds > 0 else "n/a"
        lines.append(f"| {r.runtime} | {r.what} | {r.batch} | {r.images} | {r.rate:.1f} | {1000 / r.rate:.1f} | "
                     f"{1000 * r.cpu_seconds / r.images:.1f} | {speedup} | {speedup_cpu} | {share} | {share_cpu} |")
    return "\n".join(lines)


def run(args) -> int:
    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)
    load_before, start = os.getloadavg()[0], time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prep = prepare(args.checkpoint, args.data, work, threads)
        runtimes = prep["runtimes"]
        size = runtimes["eager"].preprocess["size"]
        test = read_queries(args.data / "test")
        queries = test.head(args.images)
        predictions, quality = {}, {}
        jobs = [lambda name, rt: time_forward(name, rt, 1, size, args.min_seconds),
                lambda name, rt: time_forward(name, rt, 32, size, args.min_seconds),
                lambda name, rt: time_forward(name, rt, TTA10_INPUTS, size, args.min_seconds),
                lambda name, rt: time_predict(name, rt, queries, 1, 1, args.workers)[0],
                lambda name, rt: time_predict(name, rt, queries, 32, 1, args.workers)[0],
                lambda name, rt: time_predict(name, rt, queries, 32, 10, args.workers)[0]]
        best: dict[tuple[str, int], Row] = {}
        for k in range(args.rounds):   # interleaved, so that load changes hit every runtime alike
            for j, job in enumerate(jobs):
                for name, runtime in runtimes.items():
                    r = job(name, runtime)
                    if (name, j) not in best or r.rate > best[(name, j)].rate:
                        best[(name, j)] = r
                    print(f"round {k + 1}: {r.runtime} {r.what} b{r.batch}: {r.rate:.1f} images/s", file=sys.stderr,
                          flush=True)
        for name, runtime in runtimes.items():
            rows += [best[(name, j)] for j in range(len(jobs))]
            row, predictions[name] = time_predict(name, runtime, test, 32, 1, args.workers, "predict all",
                                                   prep["thresholds"])
            rows.append(row)
            quality[name] = gap_of(predictions[name], args.data / "test" / "recognition_solution.csv", work)
        reports = prep["reports"]
    print("## Machine\n")
    workers = args.workers if args.workers is not None else decode_workers(threads=True)
    info = {"cpus": os.cpu_count(), "threads (torch and ONNX Runtime)": threads,
            "decoding threads (all runtimes compute on the CPU)": workers,
            "int8 blocks kept fp32 besides the stem": reports["int8"]["quantization"]["settings"].get("fp32_blocks"),
            "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "load average (1 min)": f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
            "wall time": f"{time.perf_counter() - start:.0f} s",
            "checkpoint": str(args.checkpoint or "none: ImageNet backbone, untrained 13-class head"),
            "int8": f"{reports['int8']['format']} ({reports['int8']['quantization']['why']})"}
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(f"\n## Speed ({size}x{size} pixels)\n")
    print(format_rows(rows))
    solution = pd.read_csv(args.data / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
    landmark_ids = set(solution.loc[solution["landmarks"].str.strip() != "", "id"])
    print(f"\n## Quality on {args.data.name}/test (tta=1, {len(test)} photos, {len(landmark_ids)} of them of a "
          "landmark)\n")
    print(agreement_table(quality, predictions, landmark_ids))
    print("\n## GLDv2 estimate (from CPU time, so independent of other load)\n")
    print(gldv2_estimate(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=".pt from landmark train (default: untrained head)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GLDv2 folder with train.csv and test/")
    parser.add_argument("--images", type=int, default=128, help="test photos timed per predict row")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="minimum timed seconds per forward row")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the fastest is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of torch and ORT (default: all CPUs)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding threads of predict (default: predict's, one per CPU)")
    args = parser.parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        print(f"error: checkpoint {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    if not (args.data / "test" / "recognition_solution.csv").is_file():
        print(f"error: {args.data}/test/recognition_solution.csv does not exist", file=sys.stderr)
        return 2
    keep_freed_memory()   # as the `landmark` command does (landmark/memory.py): eager PyTorch is 3x faster
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
