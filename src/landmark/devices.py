"""Device names given by users (``cpu``, ``cuda``, ``cuda:1``), checked once."""
from __future__ import annotations

import torch


def resolve_device(device: str | None) -> torch.device:
    """``device`` as a torch device; None picks ``cuda`` when available, else ``cpu``.

    Raises:
        ValueError: not a device name torch knows, or CUDA asked for on a machine without it.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    return out
