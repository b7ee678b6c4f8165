"""Batch inference on Ray Data: photos decoded in CPU tasks, the network in an actor pool.

``--engine ray`` of ``landmark embed`` and ``landmark predict`` (:data:`~landmark.models.runtime_info.ENGINES`)
runs one Ray Data pipeline (https://docs.ray.io/en/latest/data/batch_inference.html)::

    rows (id, path) --map_batches--> decode tasks (1 CPU each)      uint8 [B, 3, S, S] or a reject reason
                    --map_batches--> model actors (ActorPoolStrategy) outputs per row
                    --iter_batches--> the caller, in row order (preserve_order), which writes the results

* Decoding goes through the project's own decoder (:class:`~landmark.data.ImageDataset` with
  :func:`~landmark.data.images.load_uint8` and the checkpoint's
  :meth:`~landmark.data.Preprocess.decode_transform`), so pixels, rejects and their reasons are
  those of the single-process command; the actors normalise (:meth:`Preprocess.finish_batch`)
  and run the model (:func:`~landmark.models.runtime.load_runtime`: PyTorch, or the ONNX export).
* **No deadlock on small machines**: an actor pool that holds every CPU leaves none to its own
  decoding tasks and never finishes (seen with Ray 2.60 on 2 CPUs).  :func:`plan_pool` sizes the
  pool so that at least one CPU (a quarter of the cluster's by default) stays with decoding, and
  refuses a pool that would take them all.
* The two stages stay separate processes: Ray fuses consecutive map stages whose resources
  are equal (ray-project/ray#54433), which would decode inside the actor, one batch at a time.
  Each actor reserves :data:`ACTOR_MEMORY` (so a node gets no more actors than its memory
  holds), which the decoding tasks do not, and that keeps the stages apart.
* Failures: Ray Data's defaults, which retry without limit what a lost node was running
  (decoding tasks ``max_retries=-1``; actors ``max_restarts=-1`` with their batches retried);
  an exception raised by our code (not a lost process) stops the job, and the parts written so
  far stay (resume).
* Without ``--ray-address`` (nor ``RAY_ADDRESS``) a local Ray cluster starts on this machine (about
  3 to 7 s) and stops at the end; with one the job joins that cluster (docs/distributed.md).
  A cluster this process already joined (``ray.init`` in a notebook or a test) is used as it is.

Ray is imported inside the functions only: ``import landmark`` and the local engine never load it.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.dataset import ImageDataset, Reject
from ..data.images import load_uint8
from .runtime import cpu_count

# Share of the cluster's CPUs left to the decoding tasks by default (at least one CPU).  Decoding
# and resizing a photo costs about a fifth of an EfficientNet-Lite0 forward pass on the CPU.
DECODE_SHARE = 0.25
# Rows per input block: the unit a decoding task takes (several model batches).
BLOCK_ROWS = 256
# Bytes of memory each model actor reserves with Ray's scheduler (an EfficientNet-Lite0 actor
# with PyTorch loaded and batches of 32 at 224 px stays under it); see the module docstring.
ACTOR_MEMORY = 2**30


@dataclass(frozen=True)
class PoolPlan:
    """How the model actors are sized on a cluster.

    Attributes:
        actors: model actors (a fixed-size ``ActorPoolStrategy``).
        actor_cpus: CPUs each actor reserves (and its intra-op threads).
        actor_gpus: GPUs each actor reserves (0: the network runs on the CPU).
        decode_cpus: CPUs of the cluster the actors leave to the decoding tasks (>= 1).
    """

    actors: int
    actor_cpus: float
    actor_gpus: float
    decode_cpus: float

    @property
    def device(self) -> str:
        """Where each actor's network computes: ``cuda`` (its own GPU, Ray sets ``CUDA_VISIBLE_DEVICES``) or ``cpu``."""
        return "cuda" if self.actor_gpus > 0 else "cpu"

    @property
    def threads(self) -> int:
        """Intra-op threads of each actor's network: its CPUs, at least one."""
        return max(1, int(self.actor_cpus))


def plan_pool(cpus: float, gpus: float = 0, *, memory: float | None = None, actors: int | None = None,
              actor_cpus: float | None = None, actor_gpus: float | None = None) -> PoolPlan:
    """Size the actor pool for a cluster of ``cpus`` CPUs and ``gpus`` GPUs (module docstring).

    Defaults: with GPUs in the cluster, one actor per GPU holding 1 CPU (decoding gets the other
    CPUs); without, actors of 1 CPU (2 where the actors get 4 CPUs or more) filling the cluster
    but a quarter of its CPUs (:data:`DECODE_SHARE`, at least 1), which decode.  On 2 CPUs: one
    actor of 1 CPU, one CPU decoding.

    Args:
        cpus, gpus: the cluster's totals (``ray.cluster_resources()``).
        memory: bytes of the cluster's ``memory`` resource (None: not limiting); at most one
            actor per :data:`ACTOR_MEMORY` of it, or Ray could never start the whole pool.
        actors: model actors (None: as many as fit).
        actor_cpus: CPUs per actor (None: as above).
        actor_gpus: GPUs per actor, may be fractional (0.5: two actors share a GPU); None: 1
            when the cluster has GPUs, else 0.

    Raises:
        ValueError: a pool that would leave no CPU to decoding (it would never finish), more
            GPUs or memory than the cluster has, or non-positive sizes.
    """
    if actors is not None and actors < 1 or actor_cpus is not None and actor_cpus <= 0 \
            or actor_gpus is not None and actor_gpus < 0:
        raise ValueError(f"--actors {actors}, --num-cpus {actor_cpus}, --num-gpus {actor_gpus}: give actors >= 1, "
                         "CPUs > 0 and GPUs >= 0 per actor")
    if cpus < 2:
        raise ValueError(f"the Ray cluster has {cpus:g} CPU: decoding tasks and model actors need at least 2 "
                         "(start Ray with more CPUs, or use --engine local)")
    given_actors = actors is not None
    if actor_gpus is None:
        actor_gpus = 1.0 if gpus >= 1 else 0.0
    if actor_gpus > 0:
        actor_cpus = 1.0 if actor_cpus is None else actor_cpus
        actors = actors or max(1, math.floor(gpus / actor_gpus + 1e-9))
        if actors * actor_gpus > gpus + 1e-9:
            raise ValueError(f"{actors} actors x {actor_gpus:g} GPU need {actors * actor_gpus:g} GPUs, the Ray cluster "
                             f"has {gpus:g}; give --num-gpus 0 to run the network on CPUs")
    else:
        free = cpus - max(1.0, round(cpus * DECODE_SHARE))
        actor_cpus = actor_cpus or (2.0 if free >= 4 else 1.0)
        actors = actors or max(1, math.floor(free / actor_cpus + 1e-9))
    fit = math.inf if memory is None else math.floor(memory / ACTOR_MEMORY)
    if actors > fit:
        if not given_actors and fit >= 1:
            actors = fit
        else:
            raise ValueError(f"{actors} model actors need {actors * ACTOR_MEMORY / 2**30:g} GiB of memory, the Ray "
                             f"cluster offers {(memory or 0) / 2**30:.1f} GiB; give --actors {max(1, fit)} or fewer, "
                             "or add memory")
    taken = actors * actor_cpus
    if taken > cpus - 1 + 1e-9:
        raise ValueError(f"{actors} actors x {actor_cpus:g} CPU would take {taken:g} of the cluster's {cpus:g} CPUs "
                         f"and leave none to decode photos (the job would never finish); give --actors and --num-cpus "
                         f"with actors x CPUs <= {cpus - 1:g}")
    return PoolPlan(actors=int(actors), actor_cpus=float(actor_cpus), actor_gpus=float(actor_gpus),
                    decode_cpus=float(cpus - taken))


@contextlib.contextmanager
def cluster(address: str | None = None) -> Iterator[dict]:
    """Join the Ray cluster at ``address`` (None: the ``RAY_ADDRESS`` environment variable's,
    when set), or start a local one on this machine's CPUs, for the duration of the ``with``
    block (a cluster this process had already joined is used and left running).

    Yields:
        ``ray.cluster_resources()``: ``{"CPU": ..., "GPU": ..., "memory": ...}``.

    Raises:
        ValueError: the cluster at ``address`` cannot be reached.
    """
    import os

    import ray
    started = not ray.is_initialized()
    address = address or os.environ.get("RAY_ADDRESS") or None   # set by `ray job submit` and KubeRay's RayJob
    if started:
        options = {"num_cpus": cpu_count()} if address is None else {}
        try:
            ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else ""
            raise ValueError(f"cannot join the Ray cluster at {address} (--ray-address or RAY_ADDRESS; "
                             f"{type(err).__name__}: {first}); start it with `ray start --head`, or give neither "
                             "for a local cluster") from None
    try:
        yield ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()


def decode_batch(batch: pd.DataFrame, side: int, draft: int) -> dict:
    """A decoding task: the photos of ``batch`` (``row``, ``id``, ``path``, optional ``reason``)
    decoded and resized as the single-process command does (module docstring).

    Returns:
        ``{"row": int64 [B], "image": uint8 [B, 3, side, side] (zeros for a reject),
        "reason": str [B] ("" when decoded), "reject_path": str [B], "path": str [B] (the file)}``.
    """
    import torch

    from ..data.transforms import resize_uint8
    torch.set_num_threads(1)   # a task holds one CPU
    data = ImageDataset(batch.reset_index(drop=True), resize_uint8(side), draft=draft, decode=load_uint8)
    images = np.zeros((len(batch), 3, side, side), np.uint8)
    reasons, paths = [""] * len(batch), [""] * len(batch)
    for i in range(len(batch)):
        item = data[i]
        if isinstance(item, Reject):
            reasons[i], paths[i] = item.reason, item.path
        else:
            images[i] = item["image"].numpy()
    return {"row": batch["row"].to_numpy(np.int64), "image": images, "reason": np.array(reasons, dtype=object),
            "reject_path": np.array(paths, dtype=object), "path": batch["path"].astype(str).to_numpy(dtype=object)}


def run_pipeline(frame: pd.DataFrame, rows: np.ndarray, *, side: int, draft: int, model, model_args: dict,
                 batch_size: int, plan: PoolPlan) -> Iterator[dict]:
    """Stream ``frame`` through decoding tasks and a pool of ``model`` actors (module docstring);
    arguments as :func:`build_pipeline`.  Call inside :func:`cluster`.

    Yields:
        the actors' output batches (numpy dicts), in row order.
    """
    data = build_pipeline(frame, rows, side=side, draft=draft, model=model, model_args=model_args,
                          batch_size=batch_size, plan=plan)
    batches = data.iter_batches(batch_size=None, batch_format="numpy")
    try:
        yield from batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def build_pipeline(frame: pd.DataFrame, rows: np.ndarray, *, side: int, draft: int, model, model_args: dict,
                   batch_size: int, plan: PoolPlan):
    """The Ray Data ``Dataset`` of :func:`run_pipeline` (lazy: nothing runs until it is iterated).

    Args:
        frame: rows with ``id`` and ``path`` (and an optional ``reason``: a bad id, not read).
        rows: int64 ``[len(frame)]``: the number each row carries through the pipeline.
        side, draft: :meth:`~landmark.data.Preprocess.side` and the JPEG draft size, as the local path.
        model: a callable class, constructed once per actor with ``model_args``, taking the
            decoded batch (numpy dict of :func:`decode_batch`) and returning a numpy dict with ``row``.
        batch_size: rows per decoding call and per forward pass.
        plan: :func:`plan_pool`'s sizes.

    Returns:
        a ``ray.data.Dataset`` of the actors' output batches.
    """
    import ray.data
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True   # the caller writes parts and CSVs in row order
    context.enable_progress_bars = False               # the caller shows one bar over photos
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    columns = [c for c in ("id", "path", "reason") if c in frame.columns]
    table = frame[columns].astype(str).assign(row=np.asarray(rows, np.int64)).reset_index(drop=True)
    blocks = [table.iloc[start:start + BLOCK_ROWS] for start in range(0, len(table), BLOCK_ROWS)]
    data = ray.data.from_pandas(blocks)
    decoded = data.map_batches(decode_batch, fn_kwargs={"side": side, "draft": draft}, batch_size=batch_size,
                               batch_format="pandas", num_cpus=1)
    return decoded.map_batches(model, fn_constructor_kwargs=model_args, batch_size=batch_size, batch_format="numpy",
                               compute=ray.data.ActorPoolStrategy(size=plan.actors), num_cpus=plan.actor_cpus,
                               num_gpus=plan.actor_gpus or None, memory=ACTOR_MEMORY)


def set_actor_threads(plan_threads: int) -> None:
    """Intra-op threads of eager PyTorch in a model actor: the CPUs it holds."""
    import torch
    torch.set_num_threads(max(1, int(plan_threads)))
