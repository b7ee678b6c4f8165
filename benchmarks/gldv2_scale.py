"""GLDv2-scale benchmark: read a 4.1M-row train.csv, select classes, split per class.

Writes a synthetic GLDv2-shaped ``train.csv`` into a temporary folder -- 4,132,914 rows,
203,094 classes, long-tailed like GLDv2 (one class of 10,247 images, tens of thousands
of singletons; Lomax-distributed class sizes) with 16-hex-digit ids and ~90-character
URLs -- then runs, in a fresh subprocess so that peak memory is its own:

    read_train (-> read_train_csv) ; select_classes(min 10 images, top 6,401 classes as
    in the original work) ; split_per_class(70/20/10) on the selection ; and
    split_per_class on all 4.1M rows

and prints wall time and peak resident memory (``resource.getrusage(...).ru_maxrss``)
after each step.  Targets on the 2-core development machine: under 60 s and 4 GB.

Usage:  python benchmarks/gldv2_scale.py [--scale 1.0] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS, CLASSES, TOP = 4_132_914, 203_094, 10_247


def class_sizes(n_classes: int, n_rows: int, top: int, seed: int = 0) -> np.ndarray:
    """Long-tailed class sizes summing to ``n_rows`` with maximum ``top`` (one class)."""
    rng = np.random.default_rng(seed)
    x = rng.pareto(1.2, n_classes)
    lo, hi = 1e-3, 1e3
    for _ in range(60):  # scale so that the capped sizes sum to n_rows
        s = (lo * hi) ** 0.5
        if np.minimum(1 + np.floor(s * x), top).sum() < n_rows:
            lo = s
        else:
            hi = s
    sizes = np.sort(np.minimum(1 + np.floor(lo * x), top).astype(np.int64))[::-1]
    capped = int((sizes == top).sum())
    sizes[:capped] = np.maximum((top * np.arange(1, capped + 1) ** -0.7).astype(np.int64), 1)
    while residual := n_rows - int(sizes.sum()):  # spread the rounding error over mid-sized classes
        step = 1 if residual > 0 else -1
        eligible = np.flatnonzero((sizes >= 2) & (sizes + step < sizes[0]))
        if len(eligible) == 0:
            raise ValueError(f"cannot reach {n_rows} rows with {n_classes} classes of at most {top}")
        picks = rng.choice(eligible, size=min(abs(residual), len(eligible)), replace=False)
        sizes[picks] += step
    return sizes


def write_train_csv(path: Path, scale: float) -> dict:
    n_classes, n_rows = max(10, int(CLASSES * scale)), max(100, int(ROWS * scale))
    sizes = class_sizes(n_classes, n_rows, TOP if scale >= 1 else max(10, int(TOP * scale ** 0.5)))
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(rng.permutation(n_classes), sizes))
    ids = np.char.mod("%016x", rng.integers(0, 2**62, len(labels), dtype=np.int64))
    with open(path, "w") as fh:
        fh.write("id,url,landmark_id\n")
        for start in range(0, len(labels), 500_000):
            part_ids, part_labels = ids[start:start + 500_000], labels[start:start + 500_000]
            fh.write("".join(f"{i},https://upload.wikimedia.org/wikipedia/commons/{i[0]}/{i[:2]}/"
                             f"Landmark_photo_{i}.jpg,{lab}\n" for i, lab in zip(part_ids, part_labels)))
    return {"rows": int(len(labels)), "classes": n_classes, "max": int(sizes.max()),
            "singletons": int((sizes == 1).sum()), "2-4": int(((sizes >= 2) & (sizes <= 4)).sum()),
            "5-9": int(((sizes >= 5) & (sizes <= 9)).sum()), "10+": int((sizes >= 10).sum()),
            "median": float(np.median(sizes)), "csv_mb": round(path.stat().st_size / 2**20, 1)}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(data: Path) -> None:
    """Child process: run the steps and print one JSON line per step."""
    from landmark.data import read_train, select_classes, split_per_class
    steps = [{"step": "imports", "seconds": 0.0, "peak_rss_mb": peak_mb()}]

    def run(name, fn):
        t0 = time.perf_counter()
        result = fn()
        steps.append({"step": name, "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_mb()})
        return result

    frame = run("read_train (read_train_csv)", lambda: read_train(data))
    kept, summary = run("select_classes(min 10, top 6401)", lambda: select_classes(frame, 10, 6401))
    run("split_per_class(selection)", lambda: split_per_class(kept, 0.2, 0.1, seed=0))
    labels, _ = run("split_per_class(all rows)", lambda: split_per_class(frame, 0.2, 0.1, seed=0))
    steps.append({"step": "check", "rows": len(frame), "classes": int(frame["landmark_id"].nunique()),
                  "kept_classes": summary["classes_kept"], "kept_images": summary["images_kept"],
                  "test_rows": int((labels == "test").sum())})
    print(json.dumps(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of GLDv2's size (quick trials)")
    parser.add_argument("--keep", type=Path, help="write train.csv here instead of a temporary folder")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    with tempfile.TemporaryDirectory(prefix="gldv2_scale_") as tmp:
        data = args.keep or Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        shape = write_train_csv(data / "train.csv", args.scale)
        print(f"synthetic train.csv: {json.dumps(shape)} written in {time.perf_counter() - t0:.1f} s")
        child = subprocess.run([sys.executable, __file__, "--measure", str(data)], capture_output=True, text=True)
        if child.returncode:
            sys.exit(child.stderr)
        steps = json.loads(child.stdout.strip().splitlines()[-1])
    check = steps.pop()
    print("\n| step | seconds | peak RSS (MB) |\n|---|---:|---:|")
    for s in steps:
        print(f"| {s['step']} | {s['seconds']:.2f} | {s['peak_rss_mb']:.0f} |")
    total = sum(s["seconds"] for s in steps)
    peak = max(s["peak_rss_mb"] for s in steps)
    print(f"| **total** | **{total:.2f}** | **{peak:.0f}** |")
    print(f"\ncheck: {json.dumps(check)}")
    print(f"targets: total < 60 s: {'OK' if total < 60 else 'MISSED'}; peak < 4096 MB: "
          f"{'OK' if peak < 4096 else 'MISSED'}")


if __name__ == "__main__":
    main()
