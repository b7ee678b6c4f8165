"""Same-landmark / different-landmark inlier distributions of learned local features (LightGlue + MAGSAC++).

Photos: landmarks13's training photos (not those marked other_place, no_landmark or graphic in
known_noise.csv) and landmarks_many's training photos.  Pairs, drawn with --seed: same landmark
(two photos of one landmark), different landmarks, and different landmarks where both photos are
stock previews (stock_banner in known_noise.csv).  Landmarks with an even id form the "choose"
split (the threshold is chosen there: the smallest inlier count that no more than --fp of its
different-landmark pairs reach), odd ids the "check" split (where it is reported).

Prints, per split and group: pairs, median / 90% / 99% / max of raw inliers and of counted inliers
(static inliers discounted where a banner is detected), and the fraction accepted at thresholds.
Run: nice -n 10 .venv/bin/python benchmarks/local_inliers.py --pairs 60 --features aliked --cache /tmp/lf
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from landmark.retrieval.config import LocalConfig  # noqa: E402
from landmark.retrieval.local import LocalFeatureCache, LocalMatcher, verify_pair  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
THRESHOLDS = (10, 15, 20, 25, 30, 40, 50, 75, 100)


def photo(root: Path, split: str, image_id: str) -> Path:
    return root / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def photos(data: Path) -> pd.DataFrame:
    """id, landmark_id, path, stock of the usable training photos of landmarks13 + landmarks_many."""
    l13 = data / "landmarks13"
    noise = pd.read_csv(l13 / "known_noise.csv", dtype=str)
    bad = set(noise[noise.kind.isin(["other_place", "no_landmark", "graphic"])].id)
    stock = set(noise[noise.kind == "stock_banner"].id)
    frames = []
    for root in (l13, data / "landmarks_many"):
        t = pd.read_csv(root / "train.csv", dtype={"id": str, "landmark_id": int})
        t = t[~t.id.isin(bad)].copy()
        t["path"] = [str(photo(root, "train", i)) for i in t.id]
        frames.append(t[["id", "landmark_id", "path"]])
    out = pd.concat(frames, ignore_index=True)
    out["stock"] = out.id.isin(stock)
    return out


def draw_pairs(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n same, n different and up to n//2 stock-different pairs per split."""
    rows = []
    for split, parity in (("choose", 0), ("check", 1)):
        part = frame[frame.landmark_id % 2 == parity]
        groups = {k: g.index.to_numpy() for k, g in part.groupby("landmark_id") if len(g) >= 2}
        keys = sorted(groups)
        for _ in range(n):
            k = keys[rng.integers(len(keys))]
            a, b = rng.choice(groups[k], 2, replace=False)
            rows.append((split, "same landmark", a, b))
        idx = part.index.to_numpy()
        while sum(r[0] == split and r[1] == "different landmarks" for r in rows) < n:
            a, b = rng.choice(idx, 2, replace=False)
            if frame.landmark_id[a] != frame.landmark_id[b]:
                rows.append((split, "different landmarks", a, b))
        st = part[part.stock].index.to_numpy()
        tries = 0
        while len(st) > 1 and sum(r[0] == split and r[1] == "different, both stock" for r in rows) < n // 2 and tries < 10_000:
            tries += 1
            a, b = rng.choice(st, 2, replace=False)
            if frame.landmark_id[a] != frame.landmark_id[b]:
                rows.append((split, "different, both stock", a, b))
    return pd.DataFrame(rows, columns=["split", "group", "a", "b"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--pairs", type=int, default=60, help="same and different pairs per split")
    ap.add_argument("--features", default="aliked", choices=["aliked", "disk", "rootsift"])
    ap.add_argument("--matcher", default="lightglue", choices=["lightglue", "mnn"])
    ap.add_argument("--max-keypoints", type=int, default=LocalConfig().max_keypoints)
    ap.add_argument("--max-side", type=int, default=LocalConfig().max_side)
    ap.add_argument("--cache", type=Path, required=True, help="feature cache folder")
    ap.add_argument("--fp", type=float, default=0.01, help="largest fraction of different pairs accepted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", type=Path, help="also write every pair's counts here")
    args = ap.parse_args()

    frame = photos(args.data)
    pairs = draw_pairs(frame, args.pairs, np.random.default_rng(args.seed))
    matcher = LocalMatcher(LocalConfig(features=args.features, matcher=args.matcher, max_keypoints=args.max_keypoints,
                                       max_side=args.max_side))
    cache = LocalFeatureCache(args.cache, matcher)
    raw, counted, ms = [], [], []
    for a, b in zip(pairs.a, pairs.b):
        fa, fb = cache.get(frame.path[a]), cache.get(frame.path[b])
        t0 = time.perf_counter()
        r = verify_pair(matcher, fa, fb)
        ms.append(1000 * (time.perf_counter() - t0))
        raw.append(int(r.inliers.sum()))
        counted.append(r.num_inliers)
    pairs["raw"], pairs["inliers"], pairs["ms"] = raw, counted, ms
    pairs["a_id"], pairs["b_id"] = frame.id[pairs.a].to_numpy(), frame.id[pairs.b].to_numpy()
    if args.csv:
        pairs.to_csv(args.csv, index=False)

    print(f"{args.features} + {args.matcher}, {args.max_keypoints} keypoints at {args.max_side} px; {len(pairs)} pairs; "
          f"matching + MAGSAC++ median {np.median(ms):.0f} ms per pair\n")
    print("| split | group | pairs | median raw | max raw | median | 90% | 99% | max |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (split, group), g in pairs.groupby(["split", "group"], sort=False):
        q = np.percentile(g.inliers, [50, 90, 99])
        print(f"| {split} | {group} | {len(g)} | {np.median(g.raw):.0f} | {g.raw.max()} | {q[0]:.0f} | {q[1]:.0f} | "
              f"{q[2]:.0f} | {g.inliers.max()} |")
    diff = pairs[(pairs.split == "choose") & (pairs.group != "same landmark")].inliers.to_numpy()
    chosen = next((t for t in range(1, 1000) if (diff >= t).mean() <= args.fp), 1000)
    print(f"\nchosen on the choose split: {chosen} inliers (<= {args.fp:.0%} of its different-landmark pairs)\n")
    ts = sorted(set(THRESHOLDS) | {chosen})
    print("| split | group | " + " | ".join(f">= {t}" for t in ts) + " |")
    print("|---|---|" + "---:|" * len(ts))
    for (split, group), g in pairs.groupby(["split", "group"], sort=False):
        print(f"| {split} | {group} | " + " | ".join(f"{(g.inliers >= t).mean():.2f}" for t in ts) + " |")


if __name__ == "__main__":
    main()
