"""torch.distributed glue: the same trainer runs in one process or under ``torchrun`` (DDP).

``torchrun --nproc_per_node=N -m landmark.cli train ...`` starts N processes; each
trains on its shard of every epoch (``DistributedSampler``), gradients are averaged
by ``DistributedDataParallel``, metrics are gathered from all ranks, and rank 0 alone
writes files.  Backend: NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..devices import resolve_device


def setup(device: str | None) -> torch.device:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); pick the device."""
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return resolve_device(device)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and when not distributed): the process that writes files."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when not distributed."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def rank_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) when not distributed."""
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()
