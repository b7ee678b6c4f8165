"""Scale benchmark: every stage after the backbone, from cached features, at GLDv2 sizes.

    nice -n 10 .venv/bin/python benchmarks/scale.py --photos 100000 --classes 10000
    .venv/bin/python benchmarks/scale.py --photos 10000 --classes 1000 --json   # the last line only

Synthetic descriptors stand in for the backbone's (EfficientNet-Lite0 GeM: width 1280, every
photo and its mirror as the probe stores them): class centres (a shared positive mean plus a
class offset) plus noise, most of it in a 64-dimensional subspace (views of one landmark vary
along few directions) and a little in every dimension with a decaying spectrum, class sizes from GLDv2's long tail (a discrete power law with many singletons,
:func:`class_sizes`), validation queries drawn from the same classes.  Each stage runs in a
child process (this script with ``--stage``), so its wall seconds and peak resident memory
(``ru_maxrss`` of that process) are its own, and calls the library functions the real recipe
calls:

* ``features``: writes the training rows with :class:`landmark.training.head_fit.FeatureWriter`
  (not part of the fit: the recipe writes them during the backbone pass);
* ``fit``: :func:`~landmark.training.head_fit.choose_fit` with the ``fast`` preset's budget,
  then :func:`~landmark.training.probe.fit_lbfgs` or :func:`~landmark.training.probe.fit_streamed`;
* ``thresholds``: top-1 of the queries (:func:`~landmark.training.head_fit.top_classes`) and
  :func:`~landmark.evaluation.metrics.rejection_threshold` on the classifier's probability;
* ``index``: :meth:`LandmarkIndex.build` (``auto``: flat, or compressed when flat exceeds
  ``IndexParams.memory_gb``) over the L2-normalised photo descriptors;
* ``reference``: :func:`~landmark.retrieval.reference.answer_with_reference` (50 neighbours)
  and the reference threshold;
* ``knn``: :func:`~landmark.retrieval.knn.recognise` of the queries (queries per second);
* ``exact``: exact top-1 of the first ``--recall-queries`` queries (streamed, flat), cached in
  the work folder, so that it can run beside the fit and every index setting reuses it;
* ``recall``: the index's top-1 of those queries against the exact one (not part of the fit).

Stages read what earlier ones left in ``--work`` (keep it with ``--keep``), so any stage can
run alone, or again with other settings (``--stages knn,recall --nprobe 64``); ``index``
records what the library chose (cells, k-means training points and iterations) and its
k-means and add seconds apart (the first does not grow with N, the second does).

One JSON line per stage: ``stage, seconds, peak_rss_gb`` and what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 1280
STAGES = ("features", "fit", "thresholds", "index", "reference", "knn", "recall")   # and "exact" (below)
FIT_STAGES = ("fit", "thresholds", "index", "reference")


def class_sizes(photos: int, classes: int, seed: int = 0) -> np.ndarray:
    """``classes`` sizes summing to ``photos``, each >= 1: ``floor(U ** (-1 / b))`` (a discrete
    power law, Zipf-like tail) capped at 0.5 % of the photos (GLDv2-clean: its largest class has 0.4 %), ``b`` chosen by bisection so that
    the mean is ``photos / classes``; the rounding is spread over classes of 3 or more photos.
    At GLDv2's mean of about 20 photos per class, about half the classes have 1 photo."""
    u = np.random.default_rng(seed).random(classes)
    cap = max(1, photos // 200)
    lo, hi = 0.05, 20.0
    for _ in range(60):
        b = (lo + hi) / 2
        mean = np.minimum(np.floor(u ** (-1.0 / b)), cap).mean()
        lo, hi = (b, hi) if mean > photos / classes else (lo, b)
    sizes = np.minimum(np.floor(u ** (-1.0 / b)), cap).astype(np.int64)
    rng = np.random.default_rng(seed + 1)
    while (diff := photos - int(sizes.sum())) != 0:
        big = np.flatnonzero(sizes > (2 if diff > 0 else 3))
        if len(big) == 0:
            big = np.flatnonzero(sizes > (0 if diff > 0 else 1))
        step = rng.multinomial(abs(diff), sizes[big] / sizes[big].sum())
        sizes[big] = np.maximum(1, sizes[big] + np.sign(diff) * step)
    return sizes


def _generator(classes: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    base = np.abs(rng.normal(size=dim)).astype(np.float32)
    spectrum = (np.arange(1, dim + 1, dtype=np.float32) ** -0.5) * np.sqrt(dim / np.sum(np.arange(1, dim + 1) ** -1.0))
    spectrum = rng.permutation(spectrum).astype(np.float32)
    low_rank = (rng.normal(size=(64, dim)) / np.sqrt(dim)).astype(np.float32)
    centres_seed = seed + 1

    def centres(rows: np.ndarray) -> np.ndarray:
        """Class centres for class indices ``rows``, recomputed from per-class seeds (no [K, D] array)."""
        out = np.empty((len(rows), dim), dtype=np.float32)
        for j, k in enumerate(rows):
            out[j] = base + 0.12 * np.random.default_rng((centres_seed, int(k))).normal(size=dim)
        return out

    return centres, spectrum, low_rank


def synthesize(work: Path, photos: int, classes: int, queries: int, seed: int = 0, chunk: int = 32768) -> dict:
    """Write ``train.npy`` (every photo, then its mirror, as the probe stores them) and
    ``queries.npy`` (``queries`` photos of the same classes, weighted like the training photos)
    as FeatureFiles, and the class sizes."""
    from landmark.training.head_fit import FeatureWriter
    sizes = class_sizes(photos, classes, seed)
    rng = np.random.default_rng(seed + 7)
    labels = rng.permutation(np.repeat(np.arange(classes), sizes))   # photos in random order, as in train.csv
    centres, spectrum, low_rank = _generator(classes, DIM, seed)
    # the centres of all classes as float16 on disk would be K x D; recompute per chunk from a cache instead
    cache = {}

    def rows(y: np.ndarray, noise_rng: np.random.Generator) -> np.ndarray:
        missing = np.setdiff1d(np.unique(y), np.fromiter(cache.keys(), dtype=np.int64, count=len(cache)))
        if len(cache) + len(missing) > 200_000:
            cache.clear()
            missing = np.unique(y)
        for k, c in zip(missing, centres(missing)):
            cache[int(k)] = c.astype(np.float16)
        c = np.stack([cache[int(k)] for k in y]).astype(np.float32)
        return c + 0.15 * noise_rng.normal(size=c.shape).astype(np.float32) * spectrum \
            + noise_rng.normal(size=(len(c), len(low_rank))).astype(np.float32) @ low_rank

    train = FeatureWriter(work / "train.npy", 2 * photos, DIM, {"photos": photos, "classes": classes})
    noise = np.random.default_rng(seed + 11)
    for start in range(0, photos, chunk):
        y = labels[start:start + chunk]
        x = rows(y, noise)
        ids = np.char.add("p", np.arange(start, start + len(y)).astype(str))
        train.add(x, y, np.zeros(len(y)), ids)
        mirror = x + 0.05 * noise.normal(size=x.shape).astype(np.float32) * spectrum   # a mirror: close to its photo
        train.add(mirror, y, np.ones(len(y)), ids)
    train.finish()
    q_labels = labels[rng.choice(photos, size=queries, replace=queries > photos)]
    query = FeatureWriter(work / "queries.npy", queries, DIM)
    for start in range(0, queries, chunk):
        y = q_labels[start:start + chunk]
        query.add(rows(y, noise), y, np.zeros(len(y)), np.char.add("q", np.arange(start, start + len(y)).astype(str)))
    query.finish()
    return {"rows": 2 * photos, "singleton_classes": int((sizes == 1).sum()), "classes_le2": int((sizes <= 2).sum()),
            "largest_class": int(sizes.max()), "disk_gb": round(2 * photos * DIM * 2 / 2**30, 2)}


def _embeddings(features, rows: np.ndarray, path: Path, with_labels: bool = True):
    """L2-normalised float16 embeddings of ``rows`` of a FeatureFile (as the reference index
    stores the pooled descriptor of a GeM head without neck), memory-mapped, written in chunks."""
    import pandas as pd

    from landmark.retrieval.embeddings import Embeddings
    if not path.is_file():
        out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float16,
                                        shape=(len(rows), features.dim))
        for start in range(0, len(rows), 65536):
            x = np.asarray(features.x[rows[start:start + 65536]], dtype=np.float32)
            out[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        out.flush()
        del out
        os.replace(path.with_suffix(".tmp.npy"), path)
    items = pd.DataFrame({"id": features.ids[rows]})
    if with_labels:
        items["landmark_id"] = features.targets[rows].astype(str)
    return Embeddings(np.load(path, mmap_mode="r"), items)


def _exact_top1(work: Path, qs: np.ndarray) -> np.ndarray:
    """Row of the exact nearest indexed vector (inner product, float32) of each query ``[n, D]``,
    streamed over ``index_vectors.npy`` in blocks of 262,144 rows; cached in ``exact-top1-{n}.npy``
    (the first ``n`` queries), so every index setting is compared with one exact search."""
    import faiss
    cache = work / f"exact-top1-{len(qs)}.npy"
    if cache.is_file():
        return np.load(cache)
    best_s = np.full(len(qs), -np.inf, dtype=np.float32)
    best_i = np.full(len(qs), -1, dtype=np.int64)
    vectors = np.load(work / "index_vectors.npy", mmap_mode="r")
    for start in range(0, len(vectors), 262144):
        flat = faiss.IndexFlatIP(DIM)
        flat.add(np.asarray(vectors[start:start + 262144], dtype=np.float32))
        s, i = flat.search(qs, 1)
        better = s[:, 0] > best_s
        best_s[better], best_i[better] = s[better, 0], i[better, 0] + start
    np.save(cache.with_suffix(".tmp.npy"), best_i)
    os.replace(cache.with_suffix(".tmp.npy"), cache)
    return best_i


def run_stage(stage: str, work: Path, args, clock: dict) -> dict:
    import faiss
    import torch

    from landmark.config import load_config
    from landmark.evaluation.metrics import rejection_threshold
    from landmark.models.heads import GeMHead
    from landmark.retrieval.config import IndexParams, KnnConfig
    from landmark.retrieval.index import LandmarkIndex
    from landmark.retrieval.knn import recognise
    from landmark.retrieval.reference import answer_with_reference
    from landmark.training.head_fit import FeatureFile, choose_fit, lbfgs_bytes, top_classes
    from landmark.training.probe import fit_lbfgs, fit_streamed

    torch.manual_seed(0)
    clock["start"] = time.perf_counter()   # the stage's work starts: imports are not counted
    stage_cfg = load_config("fast").stages[-1]
    out: dict = {}
    if stage == "features":
        return synthesize(work, args.photos, args.classes, args.queries)
    train = FeatureFile.open(work / "train.npy")
    queries = FeatureFile.open(work / "queries.npy")
    head = GeMHead(DIM, args.classes)
    if stage == "fit":
        fit = choose_fit(len(train), args.classes, DIM, stage_cfg.probe_memory_gb, args.fit)
        out = {"fit": fit, "lbfgs_would_hold_gb": round(lbfgs_bytes(len(train), args.classes, DIM) / 2**30, 1)}
        if fit == "lbfgs":
            x = torch.from_numpy(np.asarray(train.x, dtype=np.float32))
            fit_lbfgs(head, x, torch.from_numpy(train.targets), stage_cfg)
        else:
            if args.epochs is not None:
                stage_cfg = stage_cfg.model_copy(update={"stream_epochs": args.epochs})
            if args.batch:
                stage_cfg = stage_cfg.model_copy(update={"stream_batch": args.batch})
            stats = fit_streamed(head, train, args.classes, stage_cfg, max_steps=args.max_steps)
            out.update({k: stats[k] for k in ("epochs", "init", "sampled_softmax", "steps", "steps_planned")})
            out["init_seconds"] = round(stats["init_seconds"], 1)
            out["batch"] = stage_cfg.stream_batch
            if stats["steps"] < stats["steps_planned"]:   # a fraction was run: extrapolate the steps
                per_step = (stats["seconds"] - stats["init_seconds"]) / max(stats["steps"], 1)
                out["seconds_per_step"] = round(per_step, 3)
                out["extrapolated_seconds"] = round(stats["init_seconds"] + per_step * stats["steps_planned"], 1)
                cpu_step = (stats["cpu_seconds"] - stats["init_cpu_seconds"]) / max(stats["steps"], 1)
                out.update(init_cpu_seconds=round(stats["init_cpu_seconds"], 1), cpu_seconds_per_step=round(cpu_step, 3),
                           extrapolated_cpu_seconds=round(stats["init_cpu_seconds"] + cpu_step * stats["steps_planned"], 1))
        if int(os.environ.get("RANK", "0")) == 0:
            torch.save({k: v.detach() for k, v in head.fc.state_dict().items()}, work / "head.pt")
        return out
    if stage == "thresholds":
        head.fc.load_state_dict(torch.load(work / "head.pt", weights_only=True))
        pred, prob = top_classes(head, queries.x)
        correct = pred[:, 0] == queries.targets
        np.savez(work / "answers.npz", pred=pred[:, 0], prob=prob[:, 0])
        return {"queries": len(queries), "accuracy": round(float(correct.mean()), 4),
                "threshold": round(rejection_threshold(prob[:, 0].astype(np.float64), correct), 4)}
    if stage == "exact":   # exact top-1 of the recall queries (not part of the fit), cached for every index setting
        _embeddings(train, np.flatnonzero(train.views == 0), work / "index_vectors.npy")
        q = _embeddings(queries, np.arange(len(queries)), work / "query_vectors.npy", with_labels=False)
        n = min(args.recall_queries, len(q))
        _exact_top1(work, np.asarray(q.vectors[:n], dtype=np.float32))
        return {"queries": n, "vectors": int(len(np.load(work / "index_vectors.npy", mmap_mode="r")))}
    if stage == "index":
        emb = _embeddings(train, np.flatnonzero(train.views == 0), work / "index_vectors.npy")
        params = IndexParams(kind=args.kind, **({"nprobe": args.nprobe} if args.nprobe else {}),
                             **({"nlist": args.nlist} if args.nlist else {}))
        # when k-means ends and adding starts (the add is linear in N, the training is not)
        phases = {"wall": time.perf_counter(), "cpu": time.process_time()}
        add_vectors = LandmarkIndex._add_vectors

        def timed_add(self, *a, **kw):
            phases["train_seconds"] = time.perf_counter() - phases["wall"]
            phases["train_cpu_seconds"] = time.process_time() - phases["cpu"]
            return add_vectors(self, *a, **kw)
        LandmarkIndex._add_vectors = timed_add
        index = LandmarkIndex.build(emb, params)
        add_seconds = time.perf_counter() - phases["wall"] - phases["train_seconds"]
        add_cpu = time.process_time() - phases["cpu"] - phases["train_cpu_seconds"]
        index.save(work / "index", overwrite=True)
        out = {"kind": index.kind, "vectors": len(index), "index_gb": round(
            os.path.getsize(work / "index" / "index.faiss") / 2**30, 3)}
        ivf = faiss.try_extract_index_ivf(index.searched)
        if ivf is not None:   # what the library chose for the cells
            out.update(nlist=int(ivf.nlist), train_points=min(len(index), params.train_size),
                       kmeans_iterations=int(ivf.cp.niter), nprobe=int(ivf.nprobe))
        out.update(train_seconds=round(phases["train_seconds"], 1), train_cpu_seconds=round(phases["train_cpu_seconds"], 1),
                   add_seconds=round(add_seconds, 1), add_cpu_seconds=round(add_cpu, 1))
        return out
    index = LandmarkIndex.load(work / "index")
    if args.nprobe:
        index.params.nprobe = args.nprobe
        index._tune()
    q = _embeddings(queries, np.arange(len(queries)), work / "query_vectors.npy", with_labels=False)
    if stage == "reference":
        answers = np.load(work / "answers.npz")
        labels = answers["pred"].astype(str)
        conf = answer_with_reference(index, np.asarray(q.vectors, dtype=np.float32), labels, answers["prob"])
        correct = answers["pred"] == queries.targets
        return {"queries": len(q), "threshold": round(rejection_threshold(conf, correct), 4)}
    if stage == "knn":
        tic = time.perf_counter()
        result = recognise(index, q, KnnConfig(nonlandmark_weight=0.0))
        seconds = time.perf_counter() - tic
        accuracy = float((result.predictions["landmark_id"].to_numpy() == queries.targets.astype(str)).mean())
        return {"queries": len(q), "queries_per_s": round(len(q) / seconds, 1), "knn_accuracy": round(accuracy, 4)}
    if stage == "recall":
        n = min(args.recall_queries, len(q))
        qs = np.asarray(q.vectors[:n], dtype=np.float32)
        tic = time.perf_counter()
        _, approx = index.search(qs, 1)
        search_seconds = time.perf_counter() - tic
        best_i = _exact_top1(work, qs)
        labels = index.labels
        out = {"search_queries_per_s": round(n / search_seconds, 1)}
        return {"queries": n, "recall_at_1": round(float((approx[:, 0] == best_i).mean()), 4),
                "same_landmark_at_1": round(float((labels[approx[:, 0]] == labels[best_i]).mean()), 4),
                "nprobe": index.params.nprobe if index.kind != "flat" else None, **out}
    raise ValueError(f"unknown stage {stage}")


def _child(args) -> None:
    clock = {"start": time.perf_counter()}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if ranks > 1:   # under torchrun (--ranks): the streaming fit's ranks sum their gradients over gloo
        import torch.distributed as dist
        dist.init_process_group("gloo")
    result = run_stage(args.stage, Path(args.work), args, clock)
    if ranks > 1:
        result["ranks"] = ranks
        if int(os.environ.get("RANK", "0")) != 0:
            return
    seconds = time.perf_counter() - clock["start"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 2**20   # Linux: KiB -> GiB
    print(json.dumps({"stage": args.stage, "photos": args.photos, "classes": args.classes,
                      "seconds": round(seconds, 1), "peak_rss_gb": round(peak, 2),
                      "cpu_seconds": round(usage.ru_utime + usage.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
                      **result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--fit", default="auto", choices=("auto", "lbfgs", "stream"))
    parser.add_argument("--max-steps", type=int, default=0,
                        help="fit: stop the streaming fit after this many minibatches and extrapolate (0: all)")
    parser.add_argument("--epochs", type=int, default=None, help="fit: streaming epochs (default: the preset's)")
    parser.add_argument("--batch", type=int, default=0, help="fit: streaming minibatch rows (0: the preset's)")
    parser.add_argument("--ranks", type=int, default=1,
                        help="fit: processes under torchrun (gloo), each streaming its slice (peak RSS: rank 0's)")
    parser.add_argument("--kind", default="auto", help="index kind (auto: the library's choice)")
    parser.add_argument("--nprobe", type=int, default=0, help="IVF cells searched (0: the library default)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF cells (0: the library default, ~4 sqrt(N))")
    parser.add_argument("--work", default=None, help="folder for the features (default /tmp/scale-N-K)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="print the last line only")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return _child(args)
    work = Path(args.work or f"/tmp/scale-{args.photos}-{args.classes}")
    work.mkdir(parents=True, exist_ok=True)
    lines, total = [], 0.0
    for stage in args.stages.split(","):
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                  str(args.ranks)] if stage == "fit" and args.ranks > 1 else [sys.executable]
        cmd = launch + [__file__, "--stage", stage, "--work", str(work)] + \
            [a for a in sys.argv[1:] if not a.startswith("--json")]
        load_before = round(os.getloadavg()[0], 2)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
        line = json.loads([x for x in done.stdout.strip().splitlines() if x.startswith("{")][-1])
        line["load_avg_1m"] = round(os.getloadavg()[0], 2)   # after the stage
        line["load_avg_1m_before"] = load_before
        if stage in FIT_STAGES:
            total += line.get("extrapolated_seconds", line["seconds"])   # a fraction of the fit: its extrapolation
            line["fit_total_seconds"] = round(total, 1)
        lines.append(line)
        if not args.json:
            print(json.dumps(line), flush=True)
    if args.json:
        print(json.dumps(lines[-1]))
    if not args.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
