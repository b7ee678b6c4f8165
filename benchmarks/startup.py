"""Start-up: how long ``landmark recognize PHOTO --model RUN`` takes as a whole command.

Each case runs in a fresh process, ``--repeats`` times (5), the cases interleaved round by
round so that a busy machine slows them alike; wall seconds (start to exit, start-up
included), CPU seconds (user + system) and peak resident memory (``ru_maxrss`` of that child
from ``os.wait4``) are reported as medians (min-max for wall).  The processes run on two CPUs
(``--cpus``, default the first two this process may use), as on the target laptop.

Cases:

* ``python -c "import torch"``: the floor any PyTorch path pays;
* ``recognize`` on RUN with its ONNX export (``RUN/model.onnx``, ``landmark export``): the
  torch-free recogniser (``landmark.inference.instant``);
* ``recognize`` on the same run without the export (a folder of links to everything but
  ``model.onnx``): eager PyTorch, as before;
* with ``--images DIR``: ``landmark predict RUN --images DIR`` with ``--runtime onnx`` and
  ``--runtime torch`` as whole commands (fewer repeats: ``--predict-repeats``).

Nothing is asserted (the targets are in docs/runtime.md); this prints a Markdown table, or
JSON with ``--json``.

    .venv/bin/python benchmarks/startup.py --run runs/l13 --photo ../shared/data/landmarks13/test/0/0/0/0003de5a85b027b5.jpg
    .venv/bin/python benchmarks/startup.py --run runs/l13 --images ../shared/data/landmarks13/test --json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PHOTO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "landmarks13" / "test" / "0" / "0" / \
    "0" / "0003de5a85b027b5.jpg"


def landmark_command() -> list[str]:
    """The ``landmark`` console script beside this interpreter, else ``python -m landmark.cli``."""
    script = Path(sys.executable).parent / "landmark"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "landmark.cli"]


def popen_wait4(command: list[str], cpus: set[int]) -> dict:
    """One fresh process (output to temporary files): wall and CPU seconds, peak RSS in MB, its stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {text[-500:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "stderr": text}


def without_export(run: Path, into: Path) -> Path:
    """A folder of symbolic links to everything in ``run`` but its ONNX export."""
    into.mkdir()
    for entry in run.iterdir():
        if entry.suffix != ".onnx":
            (into / entry.name).symlink_to(entry.resolve())
    return into


def summary(name: str, command: list[str], runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    runtime = next((line for line in runs[0]["stderr"].splitlines() if line.startswith("runtime:")), "")
    return {"case": name, "command": " ".join(command), "repeats": len(runs),
            "wall_s": statistics.median(walls), "wall_min_s": min(walls), "wall_max_s": max(walls),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs), "runtime": runtime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with checkpoints/best.pt and model.onnx")
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=Path, default=None, help="also time predict over this folder")
    parser.add_argument("--predict-repeats", type=int, default=3)
    parser.add_argument("--cpus", default=None, help="CPUs to run on, e.g. 0,1 (default: the first two allowed)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if not (args.run / "model.onnx").is_file():
        raise SystemExit(f"error: {args.run / 'model.onnx'} does not exist; run landmark export "
                         f"{args.run / 'checkpoints' / 'best.pt'} --out {args.run / 'model.onnx'} first")
    allowed = sorted(os.sched_getaffinity(0))
    cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else set(allowed[:2])
    cli = landmark_command()
    with tempfile.TemporaryDirectory() as tmp:
        bare = without_export(args.run, Path(tmp) / "run")
        cases = [("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
                 ("recognize, run with export", cli + ["recognize", str(args.photo), "--model", str(args.run)]),
                 ("recognize, run without export", cli + ["recognize", str(args.photo), "--model", str(bare)])]
        results = {name: [] for name, _ in cases}
        for _ in range(args.repeats):
            for name, command in cases:
                results[name].append(popen_wait4(command, cpus))
        rows = [summary(name, command, results[name]) for name, command in cases]
        if args.images is not None:
            out = Path(tmp) / "p.csv"
            predict = [(f"predict --runtime {r} ({args.images.name})",
                        cli + ["predict", str(args.run), "--images", str(args.images), "--out", str(out),
                               "--runtime", r, "--overwrite"]) for r in ("onnx", "torch")]
            done = {name: [] for name, _ in predict}
            for _ in range(args.predict_repeats):
                for name, command in predict:
                    done[name].append(popen_wait4(command, cpus))
            rows += [summary(name, command, done[name]) for name, command in predict]
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"cpus": sorted(cpus), "load_average_1min": load, "rows": rows}, indent=2))
        return
    print(f"CPUs {sorted(cpus)}, load average (1 min) at the end {load:.1f}; medians of {args.repeats} "
          f"(predict: {args.predict_repeats})\n")
    print("| case | wall s (median) | wall min-max | CPU s | peak RSS MB | runtime line |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['case']} | {r['wall_s']:.2f} | {r['wall_min_s']:.2f}-{r['wall_max_s']:.2f} | {r['cpu_s']:.2f} "
              f"| {r['peak_rss_mb']:.0f} | {r['runtime'][:90]} |")


if __name__ == "__main__":
    main()
