"""How many local-feature inliers confirm an enrolled landmark (``CONFIRM_INLIERS``), chosen
without the held-out landmarks or any test photo.

Each trained landmark of landmarks13 (all but ``quality.HOLDOUTS[0]``) plays an enrolled one:
its first 5 training photos are its photos; queries: its next 10 training photos (same), 10
training photos of other trained landmarks, and 10 photos of the choosing half of
``nonlandmarks`` (``no_landmark.half(..., 0)``).  Each query's count is its best photo's
inliers among the first 1, 3 or 5 (:func:`landmark.retrieval.local.verify_pair` with
:func:`landmark.retrieval.config.confirm_local_config`).  Prints the share confirmed at each
threshold; the chosen one is the smallest that confirms no other-landmark and no non-landmark
query with 5 photos.

    .venv/bin/python benchmarks/confirm_inliers.py --cache /tmp/lf --csv pairs.csv
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from no_landmark import half  # noqa: E402
from quality import DATA, HOLDOUTS, NONLANDMARKS, markdown  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/confirm_inliers/features"))
    parser.add_argument("--csv", type=Path, default=None, help="write each query's counts here")
    args = parser.parse_args()
    from landmark.data import read_queries, read_train, with_paths
    from landmark.retrieval.config import confirm_local_config
    from landmark.retrieval.local import LocalFeatureCache, LocalMatcher, verify_pair
    every = with_paths(read_train(DATA), DATA)
    every["landmark_id"] = every["landmark_id"].astype(str)
    trained = sorted(set(every["landmark_id"]) - set(HOLDOUTS[0]))
    others = half(read_queries(NONLANDMARKS), 0)["path"].tolist()[:10]
    matcher = LocalMatcher(confirm_local_config())
    cache = LocalFeatureCache(args.cache, matcher)
    rows = []
    for lid in trained:
        own = every.loc[every["landmark_id"] == lid, "path"].tolist()
        pool = every[(every["landmark_id"] != lid) & every["landmark_id"].isin(trained)]
        for kind, queries in (("same", own[5:15]), ("other landmark", pool["path"].sample(10, random_state=int(lid)).tolist()),
                              ("no landmark", others)):
            for q in queries:
                inliers = [verify_pair(matcher, cache.get(q), cache.get(e)).num_inliers for e in own[:5]]
                rows.append({"landmark": lid, "kind": kind, "query": q, **{f"n{k}": max(inliers[:k]) for k in (1, 3, 5)}})
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    table = []
    for t in (8, 10, 11, 12, 14, 16, 20):
        row = {"inliers >=": t}
        for kind, group in frame.groupby("kind", sort=False):
            for n in (1, 3, 5):
                row[f"{kind}, {n} photo{'s' if n > 1 else ''}"] = round(float((group[f"n{n}"] >= t).mean()), 2)
        table.append(row)
    print(markdown(table))


if __name__ == "__main__":
    main()
