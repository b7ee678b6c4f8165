"""Inlier counts of geometric verification on real photos: where to put the rejection threshold.

Pairs drawn from ../shared/data/landmarks13 (train images, without those marked by eye
as other_place / no_landmark / graphic in known_noise.csv) and ../shared/data/nonlandmarks:

- ``same``: two photos of the same landmark (all pairs among up to ``--per-class`` images per class);
- ``different``: two photos of different landmarks (random, as many as ``same``);
- ``different_stock``: different landmarks, both stock previews (banner + watermark, known_noise ``stock_banner``);
- ``nonlandmark``: a landmark photo and a non-landmark photo (random, as many as ``same``).

Prints the inlier-count distribution of each group for both RANSAC models and, per
threshold, the fraction of pairs accepted (inliers >= threshold).  Features are cached
in ``--cache`` (default /tmp/landmark_verification_cache).

    .venv/bin/python benchmarks/verification_inliers.py --per-class 12
"""
from __future__ import annotations

import argparse
import itertools
import random
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from landmark.data import ImageError, image_path, read_train
from landmark.retrieval.verification import FeatureCache, match

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NOISE_KINDS = {"other_place", "no_landmark", "graphic"}
THRESHOLDS = (8, 10, 12, 15, 20, 25, 30, 40, 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/landmark_verification_cache"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, default=None, help="also write every pair's counts here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = args.data / "landmarks13"
    noise = pd.read_csv(root / "known_noise.csv", dtype=str)
    bad = set(noise.loc[noise["kind"].isin(NOISE_KINDS), "id"])
    stock = set(noise.loc[noise["kind"] == "stock_banner", "id"])
    train = read_train(root)
    train = train[~train["id"].isin(bad)]
    chosen = train.sample(frac=1.0, random_state=args.seed).groupby("landmark_id", observed=True).head(args.per_class)
    images = {i: image_path(root, i) for i in chosen["id"]}
    label = dict(zip(chosen["id"], chosen["landmark_id"].astype(str)))
    nonl = pd.read_csv(args.data / "nonlandmarks" / "nonlandmarks.csv", dtype=str)
    for i in nonl["id"]:
        images[i] = image_path(args.data / "nonlandmarks", i, "images")

    cache = FeatureCache(args.cache)
    feats, rejects = {}, []
    for i, path in tqdm(images.items(), desc="features", unit="img"):
        try:
            feats[i] = cache.get(i, path)
        except ImageError as err:
            rejects.append((i, str(path), str(err)))
    for r in rejects:
        print("reject", *r)

    ids = [i for i in chosen["id"] if i in feats]
    same = [p for p in itertools.combinations(ids, 2) if label[p[0]] == label[p[1]]]
    cross = [p for p in itertools.combinations(ids, 2) if label[p[0]] != label[p[1]]]
    stock_cross = [p for p in cross if p[0] in stock and p[1] in stock]
    nonl_ids = [i for i in nonl["id"] if i in feats]
    groups = {
        "same": same,
        "different": rng.sample(cross, min(len(cross), len(same))),
        "different_stock": stock_cross[:len(same)],
        "nonlandmark": [(rng.choice(ids), rng.choice(nonl_ids)) for _ in range(len(same))],
    }
    rows = []
    for group, pairs in groups.items():
        for a, b in tqdm(pairs, desc=group, unit="pair"):
            row = {"group": group, "a": a, "b": b}
            for model in ("fundamental", "homography"):
                res = match(feats[a], feats[b], model=model)
                row["matches"] = len(res.matches)
                row[model] = res.num_inliers
            rows.append(row)
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    pd.set_option("display.width", 200)
    for column in ("matches", "fundamental", "homography"):
        print(f"\n== {column}: distribution per group (pairs, percentiles) ==")
        q = frame.groupby("group")[column].describe(percentiles=[.5, .9, .95, .99])
        print(q[["count", "mean", "50%", "90%", "95%", "99%", "max"]].round(1).to_string())
    for column in ("fundamental", "homography"):
        print(f"\n== {column}: fraction of pairs with inliers >= threshold ==")
        table = pd.DataFrame({t: frame.groupby("group")[column].apply(lambda s: float(np.mean(s >= t)))
                              for t in THRESHOLDS})
        print(table.round(3).to_string())


if __name__ == "__main__":
    main()
