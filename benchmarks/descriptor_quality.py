"""Retrieval quality of descriptors that differ per model: each direction embedded by the model trained for it.

benchmarks/retrieval_quality.py embeds every direction with one checkpoint (the frozen ImageNet
descriptor of the ``fast`` linear probe is the same whatever it was trained on).  A descriptor
fine-tuned for retrieval (the ``arcface`` preset's 512-d neck, the ``finetune`` preset's GeM) is
not: **seen** and **l13->many** must be embedded by the model trained on landmarks13 alone,
**many->l13** (the validation side) by the model trained on landmarks_many alone.  A descriptor
here is ``NAME=L13TAG:MANYTAG``: embeddings ``WORK/emb/{set}_{L13TAG}.npy`` (sets l13_train,
l13_test, nonl, many_train, many_test, written by ``landmark embed`` of the landmarks13 model) for
seen and l13->many, ``WORK/emb/{set}_{MANYTAG}.npy`` (the landmarks_many model) for many->l13; the
same tag twice is a single-checkpoint descriptor, as in retrieval_quality.py.  Each is scored with
cosine and with the product's ranking (:class:`RetrieveConfig`: QE 5 + DBA 5 + diffusion k 30
alpha 0.95, retrieval_quality.rank): mAP@100, P@10, recall@100 (the share of a query's relevant
photos, at most 100, in its first 100: the ceiling of re-ordering), one Markdown table.

    PYTHONPATH=src python benchmarks/descriptor_quality.py --work runs/desc \\
        frozen-ar448=ar448:ar448 arcface-160=arc_l13_160:arc_many_160
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from landmark.evaluation.retrieval_metrics import mean_average_precision, precision_at_k
from retrieval_quality import K, directions, normalise, rank, solution_of, stack

DIRECTIONS = ("seen", "l13->many", "many->l13")


def recall_at(ranked: dict[str, list[str]], truth: dict[str, list[str]], depth: int = K) -> float:
    """Mean over queries of ``|relevant in the first depth| / min(|relevant|, depth)`` (in [0, 1])."""
    return float(np.mean([len(set(ranked[q][:depth]) & set(rel)) / min(len(rel), depth) for q, rel in truth.items()]))


def score(work: Path, tag: str, direction: str, options: dict, qe_alpha: float) -> dict | None:
    """mAP@100, P@10, recall@100 of one direction embedded under ``tag`` (None: a set is not embedded)."""
    sets = directions(work, tag)
    if direction not in sets:
        return None
    queries, index, _ = sets[direction]
    rows, _ = rank(normalise(stack(queries)), normalise(stack(index)), alpha=qe_alpha, **options)
    ids = index["id"].to_numpy()
    truth = solution_of(queries, index)
    ranked = {qid: list(ids[r]) for qid, r in zip(queries["id"], rows) if qid in truth}
    return {"map": mean_average_precision(ranked, truth, K), "p10": precision_at_k(ranked, truth, 10),
            "r100": recall_at(ranked, truth), "queries": len(truth), "index": len(index)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/desc"))
    parser.add_argument("--skip", default="", help="directions left out, comma-separated (e.g. l13->many: "
                        "score the validation side first, read the target once per candidate)")
    parser.add_argument("descriptors", nargs="+", help="NAME=L13TAG:MANYTAG (embedding tags of the "
                        "landmarks13 model and of the landmarks_many model)")
    args = parser.parse_args()
    from landmark.retrieval.config import RetrieveConfig
    cfg = RetrieveConfig()
    product = {"qe": cfg.qe, "dba": cfg.dba, "diffusion": (cfg.diffusion, cfg.diffusion_alpha, cfg.diffusion_seeds)}
    label = f"QE {cfg.qe} + DBA {cfg.dba} + diffusion k {cfg.diffusion} alpha {cfg.diffusion_alpha:g}"
    skip = set(filter(None, args.skip.split(",")))
    print("| descriptor | ranking | " + " | ".join(f"{d} {m}" for d in DIRECTIONS
                                                  for m in ("mAP@100", "P@10", "R@100")) + " |")
    print("|---|---|" + "---|" * 9)
    for spec in args.descriptors:
        name, _, tags = spec.partition("=")
        l13_tag, _, many_tag = tags.partition(":")
        if not l13_tag or not many_tag:
            raise SystemExit(f"descriptor {spec!r}: write NAME=L13TAG:MANYTAG (e.g. arcface=arc_l13_160:arc_many_160)")
        for ranking, options in (("cosine", {}), (label, product)):
            cells = []
            for direction in DIRECTIONS:
                r = None if direction in skip else score(
                    args.work, many_tag if direction == "many->l13" else l13_tag, direction, options, cfg.qe_alpha)
                cells += [f"{r['map']:.3f}", f"{r['p10']:.3f}", f"{r['r100']:.3f}"] if r else ["", "", ""]
            print(f"| {name} | {ranking} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
