"""``landmark embed --engine ray``: the sharded, resumable embedding of :mod:`.shards` on Ray Data.

The photos of the parts not yet written go through the pipeline of
:mod:`landmark.models.ray_engine` (decoding in CPU tasks, :class:`EmbedActor` model actors on
CPUs or GPUs); this process receives the rows in order and writes each part as soon as its last
row arrives, exactly as ``embed --shard i/n`` does (:func:`.shards.pending_parts`,
:func:`.shards.write_part`, :func:`.embeddings.write_embeddings`): the same manifest, the same
``part-K`` folders and completion markers, merged by ``landmark embed-merge``.  A job killed
part-way resumes with the parts it had not finished, and a folder begun by one engine is
finished by the other (same part size and settings).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import Reject, write_rejects
from ..data.preprocess import Preprocess
from ..defaults import EMBED_DTYPE, PART_SIZE, TOP_CLASSES
from ..models.ray_engine import cluster, plan_pool, run_pipeline, set_actor_threads
from ..models.runtime import load_runtime
from ..models.runtime_info import LOGGER, announce
from .embeddings import sidecar, stored_outputs, write_embeddings
from .provenance import runtime_record
from .shards import check_shard_request, pending_parts, shard_lock, write_part

log = logging.getLogger(LOGGER)


class EmbedActor:
    """A model actor: loads the checkpoint once, then turns decoded batches into stored rows.

    Args:
        checkpoint, runtime, threads, device, image_size: as :func:`~landmark.models.runtime.load_runtime`.
        top_classes: classifier top-k to keep (0: none).
        cpus: the CPUs the actor holds (eager PyTorch's threads).
    """

    def __init__(self, checkpoint: str, runtime: str, threads: int | None, device: str, image_size: int | None,
                 top_classes: int, cpus: float):
        import torch
        set_actor_threads(cpus)
        self.runtime = load_runtime(checkpoint, runtime, device, threads, image_size=image_size)
        pre = self.runtime.preprocess
        self.contract = Preprocess(size=image_size or pre["size"], mean=pre["mean"], std=pre["std"])
        self.top = top_classes
        self.k = min(top_classes, len(self.runtime.classes)) if top_classes else 0
        side = self.contract.size
        self.dim = int(self.runtime(torch.zeros(1, 3, side, side))[1].shape[1])   # rows of rejects get zeros

    def __call__(self, batch: dict) -> dict:
        """``batch``: :func:`~landmark.models.ray_engine.decode_batch`'s columns ->
        ``row, reason, reject_path, vector float32 [B, D]`` (+ ``probs``, ``indices`` ``[B, k]``)."""
        import torch
        good = batch["reason"] == ""
        n = len(good)
        out = {"row": batch["row"], "reason": batch["reason"], "reject_path": batch["reject_path"],
               "vector": np.zeros((n, self.dim), np.float32)}
        if self.k:
            out["probs"], out["indices"] = np.zeros((n, self.k), np.float32), np.zeros((n, self.k), np.int64)
        if good.any():
            logits, emb = self.runtime(self.contract.finish_batch(torch.from_numpy(np.ascontiguousarray(batch["image"][good]))))
            vectors, probs, indices = stored_outputs(emb, logits, self.top, len(self.runtime.classes))
            out["vector"][good] = vectors
            if self.k:
                out["probs"][good], out["indices"][good] = probs, indices
        return out


def embed_shard_ray(checkpoint: str | Path, frame: pd.DataFrame, folder: str | Path, *, shard: tuple[int, int] = (0, 1),
                    part_size: int = PART_SIZE, top_classes: int = TOP_CLASSES, dtype: str = EMBED_DTYPE,
                    image_size: int | None = None, batch_size: int = 32, runtime: str = "auto",
                    threads: int | None = None, device: str | None = None, ray_address: str | None = None,
                    actors: int | None = None, actor_cpus: float | None = None, actor_gpus: float | None = None,
                    on_part=None) -> dict:
    """Embed the unfinished parts of shard ``shard`` of ``frame`` into ``folder`` on Ray (module docstring).

    Args:
        checkpoint: ``.pt`` (or its ``.onnx`` export), readable at the same path on every node.
        frame: rows ``id``, ``path`` (and ``landmark_id``); paths readable on every node.
        part_size, top_classes, dtype, image_size, batch_size: as :func:`.shards.embed_shard`.
        runtime, threads: how each actor runs the model (``threads``: ONNX Runtime's, default the actor's CPUs).
        device: the actors' device (default: ``cuda`` for actors holding a GPU, else ``cpu``).
        ray_address: a running cluster to join (None: a local cluster for the call).
        actors, actor_cpus, actor_gpus: the model pool (:func:`~landmark.models.ray_engine.plan_pool`).
        on_part: called with ``k`` after part ``k`` is written (a progress hook).

    Returns:
        ``{folder, shard, parts, done_before, embedded, rejects, rows, engine, actors, actor_cpus,
        actor_gpus}``, the first keys as :func:`.shards.embed_shard`'s.

    Raises:
        FileNotFoundError / ValueError: as :func:`.shards.embed_shard` and
            :func:`~landmark.models.ray_engine.plan_pool`; an unreachable ``ray_address``.
    """
    check_shard_request(frame, part_size=part_size, dtype=dtype, image_size=image_size)
    probe = load_runtime(checkpoint, runtime, "cpu", threads, image_size=image_size)   # bad files fail here, before Ray
    announce(probe, runtime)
    if probe.name == "onnx" and image_size not in (None, probe.preprocess["size"]):
        raise ValueError(f"an ONNX export takes {probe.preprocess['size']} px inputs only; embed at {image_size} px "
                         f"with the .pt checkpoint (--runtime torch), or drop --image-size")
    classes, pre = list(probe.classes), probe.preprocess
    model_info = runtime_record(probe, checkpoint, image_size)
    del probe
    folder = Path(folder)
    with shard_lock(folder, shard):
        return _embed_locked(checkpoint, frame, folder, shard=shard, part_size=part_size, top_classes=top_classes,
                             dtype=dtype, image_size=image_size, batch_size=batch_size, runtime=runtime,
                             threads=threads, device=device, ray_address=ray_address, actors=actors,
                             actor_cpus=actor_cpus, actor_gpus=actor_gpus, on_part=on_part, classes=classes,
                             size=image_size or pre["size"], model_info=model_info)


def _embed_locked(checkpoint, frame: pd.DataFrame, folder: Path, *, shard, part_size, top_classes, dtype, image_size,
                  batch_size, runtime, threads, device, ray_address, actors, actor_cpus, actor_gpus, on_part,
                  classes: list[str], size: int, model_info: dict) -> dict:
    """:func:`embed_shard_ray` once the checkpoint is read and the shard's lock is held."""
    parts, todo = pending_parts(folder, frame, shard=shard, part_size=part_size, dtype=dtype, image_size=size,
                                top_classes=top_classes, model_info=model_info)
    summary = {"folder": str(folder), "shard": f"{shard[0]}/{shard[1]}", "parts": len(parts),
               "done_before": len(parts) - len(todo), "embedded": 0, "rejects": 0, "rows": 0, "engine": "ray"}
    if not todo:
        return summary
    rows = np.concatenate([np.arange(k * part_size, min((k + 1) * part_size, len(frame))) for k in todo])
    with cluster(ray_address) as resources:
        plan = plan_pool(resources.get("CPU", 0), resources.get("GPU", 0), memory=resources.get("memory"),
                         actors=actors, actor_cpus=actor_cpus, actor_gpus=actor_gpus)
        if plan.actor_gpus > 0 and (runtime == "onnx" or Path(checkpoint).suffix.lower() == ".onnx"):
            raise ValueError("ONNX Runtime runs on the CPU here: give the .pt checkpoint (--runtime auto or torch) "
                             "for GPU actors, or --num-gpus 0")
        log.info("engine: ray (%d model actors x %g CPU%s; %g CPUs decode)", plan.actors, plan.actor_cpus,
                 f", {plan.actor_gpus:g} GPU" if plan.actor_gpus else "", plan.decode_cpus)
        summary.update(actors=plan.actors, actor_cpus=plan.actor_cpus, actor_gpus=plan.actor_gpus)
        args = {"checkpoint": str(Path(checkpoint).resolve()), "runtime": runtime, "threads": threads or plan.threads,
                "device": device or plan.device, "image_size": image_size, "top_classes": top_classes,
                "cpus": plan.actor_cpus}
        stream = run_pipeline(frame.iloc[rows], rows, side=size, draft=2 * size, model=EmbedActor, model_args=args,
                              batch_size=batch_size, plan=plan)
        writer = _PartWriter(frame, folder, part_size, todo, dtype=dtype, image_size=size, classes=classes,
                             model_info=model_info)
        from tqdm import tqdm
        with tqdm(total=len(rows), desc="embed (ray)", unit="photo", dynamic_ncols=True) as bar:
            for batch in stream:
                for k, n, bad in writer.add(batch):   # one part at a time: the hook may stop the job between two
                    summary["embedded"] += 1
                    summary["rows"] += n
                    summary["rejects"] += bad
                    if on_part is not None:
                        on_part(k)
                bar.update(len(batch["row"]))
    if writer.left:   # never seen; a photo must not vanish silently if Ray ever lost rows
        raise RuntimeError(f"Ray returned no rows for parts {sorted(writer.left)}; run the same command again "
                           "to embed them")
    return summary


class _PartWriter:
    """Collects the rows of each part as they stream in and writes a part when its last row
    has arrived (:func:`.shards.write_part` + :func:`.embeddings.write_embeddings`)."""

    def __init__(self, frame: pd.DataFrame, folder: Path, part_size: int, todo: list[int], **options):
        self.frame, self.folder, self.part_size, self.options = frame, folder, part_size, options
        self.ids = frame["id"].astype(str).to_numpy()
        self.left = {k: min(part_size, len(frame) - k * part_size) for k in todo}
        self.pieces: dict[int, list[dict]] = {k: [] for k in todo}

    def add(self, batch: dict):
        """Take a batch of actor rows; yields ``(k, rows, rejects)`` after writing each part it completes."""
        parts = batch["row"] // self.part_size
        for k in np.unique(parts):
            k = int(k)
            mask = parts == k
            self.pieces[k].append({name: column[mask] for name, column in batch.items()})
            self.left[k] -= int(mask.sum())
            if self.left[k] == 0:
                del self.left[k]
                yield (k, *self._write(k))

    def _write(self, k: int) -> tuple[int, int]:
        pieces = self.pieces.pop(k)
        part = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
        order = np.argsort(part["row"], kind="stable")
        part = {name: column[order] for name, column in part.items()}
        good = part["reason"] == ""
        rejects = [Reject(self.ids[r], str(p), str(why)) for r, p, why
                   in zip(part["row"][~good], part["reject_path"][~good], part["reason"][~good])]
        items = self.frame.iloc[part["row"][good]]

        def fill(path: Path) -> tuple[int, int]:
            if not good.any():   # a part of unreadable photos only: its rejects, as embed_shard leaves it
                write_rejects(rejects, sidecar(path, "rejects.csv"))
                return 0, len(rejects)
            top = {"probs": part["probs"][good], "indices": part["indices"][good]} if "probs" in part else {}
            write_embeddings(path, items, part["vector"][good], rejects, **self.options, **top)
            return int(good.sum()), len(rejects)
        return write_part(self.folder, k, fill)
