"""Cost of geometric verification per image pair at 640 px, features extracted once and cached.

Target: under 30 ms per pair (DELF + RANSAC is reported at about 0.5 s per pair).
Extraction is paid once per image (then read back from the :class:`FeatureCache`);
each pair then costs matching (FAISS exact 2-NN both ways, mutual + ratio test) plus
RANSAC (OpenCV USAC MAGSAC++).  Prints one table: median / mean / p90 milliseconds.

    .venv/bin/python benchmarks/verification_speed.py --images 30 --threads 1
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import cv2
import faiss
import pandas as pd
from tqdm import tqdm

from landmark.data import ImageError, image_path, load_image, read_train
from landmark.retrieval.verification import FeatureCache, local_features, mutual_matches, ransac_inliers

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "landmarks13")
    parser.add_argument("--images", type=int, default=30, help="images; all their pairs are matched")
    parser.add_argument("--threads", type=int, default=1, help="FAISS/OpenCV threads")
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--max-keypoints", type=int, default=1000)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    frame = read_train(args.data).sample(args.images, random_state=0)
    rows: list[tuple[str, float]] = []
    feats, rejects = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp, args.max_keypoints, args.max_side)
        for i in tqdm(frame["id"], desc="extract", unit="img"):
            path = image_path(args.data, i)
            try:
                tic = time.perf_counter()
                img = load_image(path)
                rows.append(("decode (per image, once)", time.perf_counter() - tic))
                tic = time.perf_counter()
                local_features(img, args.max_keypoints, args.max_side)
                rows.append(("SIFT + RootSIFT (per image, once)", time.perf_counter() - tic))
                cache.get(i, img)                       # store
                tic = time.perf_counter()
                feats.append(cache.get(i, path))        # read back
                rows.append(("cache read (per image)", time.perf_counter() - tic))
            except ImageError as err:
                rejects.append((i, str(err)))
    for model in ("fundamental", "homography"):
        for a, b in tqdm(list(itertools.combinations(feats, 2)), desc=model, unit="pair"):
            tic = time.perf_counter()
            matches = mutual_matches(a, b)
            t_match = time.perf_counter() - tic
            tic = time.perf_counter()
            ransac_inliers(a, b, matches, model)
            t_ransac = time.perf_counter() - tic
            if model == "fundamental":
                rows.append(("matching (per pair)", t_match))
            rows.append((f"RANSAC {model} (per pair)", t_ransac))
            rows.append((f"total per pair, {model}", t_match + t_ransac))
    table = pd.DataFrame(rows, columns=["stage", "s"]).groupby("stage", sort=False)["s"]
    out = pd.DataFrame({"n": table.size(), "median_ms": table.median() * 1e3, "mean_ms": table.mean() * 1e3,
                        "p90_ms": table.quantile(0.9) * 1e3}).round(2)
    print(f"\n{len(feats)} images at <= {args.max_side} px, <= {args.max_keypoints} keypoints, "
          f"{args.threads} thread(s); rejects: {rejects or 'none'}")
    print(out.to_string())
    total = out.loc["total per pair, fundamental", "median_ms"]
    print(f"\nverification per pair (cached features, fundamental): {total:.1f} ms median; target < 30 ms: "
          f"{'met' if total < 30 else 'NOT met'}; DELF+RANSAC ~500 ms")


if __name__ == "__main__":
    main()
