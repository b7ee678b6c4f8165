"""Table, growth exponents and log-log plot of benchmarks/scale.py runs.

    .venv/bin/python benchmarks/scale_plot.py runs/scale-*.jsonl --png docs/scale.png

Reads the JSON lines of several ``scale.py`` runs (one file per size), prints a Markdown table
(seconds and peak RSS per stage and size), each stage's growth exponent ``b`` of
``seconds ~ N^b`` (least squares over the sizes measured) and its extrapolation to GLDv2's
4,132,914 photos, and draws time and memory against N on log-log axes.  A stage run on a
fraction (``scale.py --max-steps``) counts with its ``extrapolated_seconds`` (marked ``*``);
``--cpu`` uses CPU seconds instead of wall seconds (on a shared machine the wall time of a
stage depends on the load; its CPU time much less).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

GLDV2 = 4_132_914


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--png", default=None)
    parser.add_argument("--cpu", action="store_true", help="CPU seconds instead of wall seconds")
    args = parser.parse_args()
    rows = [json.loads(line) for path in args.runs for line in Path(path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["stage"] != "exact"]   # the benchmark's ground truth, not a stage of the recipe
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    sizes = sorted({(r["photos"], r["classes"]) for r in rows})
    by = {(r["stage"], r["photos"]): r for r in rows}

    def secs(r: dict) -> float:
        if args.cpu:
            return r.get("extrapolated_cpu_seconds", r["cpu_seconds"])
        return r.get("extrapolated_seconds", r["seconds"])

    unit = "CPU s" if args.cpu else "s"
    print("| stage | " + " | ".join(f"{n:,} x {k:,}: {unit} / GB" for n, k in sizes) + " | exponent | at 4.1M (s) |")
    print("|---|" + "---|" * (len(sizes) + 2))
    fits = {}
    for stage in stages:
        pts = [(n, secs(by[stage, n])) for n, _ in sizes if (stage, n) in by and secs(by[stage, n]) > 0]
        cells = [f"{secs(by[stage, n]):.1f}{'*' if 'extrapolated_seconds' in by[stage, n] else ''} / "
                 f"{by[stage, n]['peak_rss_gb']:.2f}" if (stage, n) in by else "-" for n, _ in sizes]
        if len(pts) >= 2:
            b, a = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)
            fits[stage] = (b, a)
            extra = f"{b:.2f} | {np.exp(a) * GLDV2 ** b:,.0f}"
        else:
            extra = "- | -"
        print(f"| {stage} | " + " | ".join(cells) + f" | {extra} |")
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
        for stage in stages:
            ns = [n for n, _ in sizes if (stage, n) in by]
            left.loglog(ns, [secs(by[stage, n]) for n in ns], "o-", label=stage, ms=3)
            right.loglog(ns, [by[stage, n]["peak_rss_gb"] for n in ns], "o-", label=stage, ms=3)
        left.set(xlabel="photos N", ylabel=f"{'CPU' if args.cpu else 'wall'} seconds", title="time per stage")
        right.set(xlabel="photos N", ylabel="peak RSS (GB)", title="memory per stage")
        left.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(args.png, dpi=80)


if __name__ == "__main__":
    main()
