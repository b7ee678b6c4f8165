"""Which runtime a loaded model runs on, in words: ``runtime: onnx (runs/x/model.onnx, fp32)``.

``--runtime auto`` (the default, :data:`DEFAULT_RUNTIME`) picks ONNX Runtime when an export
of the very checkpoint sits beside it and the network runs on the CPU, and eager PyTorch
otherwise; this module says which one was picked, from what every runtime
of :mod:`landmark.models.runtime` exposes (``name``; ONNX Runtime: ``path`` and the
export's ``precision`` metadata; eager PyTorch: ``device``).

:func:`announce` logs the line on the ``landmark.runtime`` logger at INFO level: the
``landmark`` command prints it on stderr, Python users see it only when they turn logging
on (``logging.basicConfig(level=logging.INFO)``).
"""
from __future__ import annotations

import logging
from pathlib import Path

LOGGER = "landmark.runtime"
log = logging.getLogger(LOGGER)

RUNTIMES = ("torch", "onnx", "auto")
# The runtime every inference entry point (predict, embed, knn, index, recognize, serve, the
# Python API) loads by default: ``auto`` is ONNX Runtime when an export of this very
# checkpoint lies beside it and the network would run on the CPU (the same answers within
# 1e-5, 1.7 to 1.9 times as fast end to end on 2 cores: docs/benchmarks.md), eager PyTorch otherwise (no
# export, another checkpoint's export, or a GPU).
DEFAULT_RUNTIME = "auto"
# ONNX Runtime intra-op threads allowed per CPU of the process: more only wait for each other
# (100,000 threads hung at start-up).
MAX_THREADS_PER_CPU = 4

# Where batch prediction and embedding run: ``local`` (this process: decoding threads beside
# the network) or ``ray`` (Ray Data: decoding in CPU tasks, the network in an actor pool, on
# this machine or a cluster; landmark.models.ray_engine).  The optional extra installs Ray.
ENGINES = ("local", "ray")
DEFAULT_ENGINE = "local"
RAY_EXTRA = "pip install 'landmark[ray]'"


def check_engine(engine: str) -> None:
    """Refuse an unknown engine, or ``ray`` where Ray is not installed, in one line and
    before anything slow is imported (Ray and pyarrow are only looked up, not imported).

    Raises:
        ValueError: ``engine`` is not one of :data:`ENGINES`, or it is ``ray`` and the
            ``ray`` package (with Ray Data) is missing: the message says how to install it.
    """
    import importlib.util
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    # Ray Data needs pyarrow, which plain `pip install ray` leaves out; neither is imported here
    if engine == "ray" and (importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None):
        raise ValueError(f"--engine ray needs Ray, which is not installed: {RAY_EXTRA} (or pip install 'ray[data]')")


def runtime_info(runtime, paths: bool = True) -> dict:
    """``{name, model?, precision?, device?}`` of a loaded runtime.

    Args:
        runtime: a :mod:`landmark.models.runtime` runtime (``TorchRuntime``, ``OnnxRuntime``).
        paths: the exported model's full path (True) or its file name only (False, for
            answers that leave the machine, such as ``GET /health``).

    Returns:
        ``name`` (``torch``, ``onnx``); for ONNX Runtime ``model`` (the ``.onnx`` file) and
        ``precision`` (``fp32``, ``int8-static``, ``int8-dynamic``; absent in exports that
        do not record it); for eager PyTorch ``device`` (``cpu``, ``cuda:0`` ...).
    """
    info = {"name": str(getattr(runtime, "name", type(runtime).__name__))}
    path = getattr(runtime, "path", None)
    if path is not None:
        info["model"] = str(path) if paths else Path(path).name
    meta = getattr(runtime, "meta", None)
    if isinstance(meta, dict) and meta.get("precision"):
        info["precision"] = str(meta["precision"])
    device = getattr(runtime, "device", None)
    if device is not None and path is None:   # eager PyTorch's device varies; ONNX Runtime is always the CPU
        info["device"] = str(device)
    return info


def runtime_line(runtime, note: str = "") -> str:
    """``runtime: onnx (runs/x/model.onnx, fp32)`` or ``runtime: torch (cpu)``; ``note`` is
    appended after ``; `` inside the brackets (why ``auto`` did not pick ONNX Runtime)."""
    info = runtime_info(runtime)
    details = ", ".join(info[k] for k in ("model", "precision", "device") if k in info)
    details = "; ".join(part for part in (details, note) if part)
    return f"runtime: {info['name']}" + (f" ({details})" if details else "")


def announce(runtime, requested: str = DEFAULT_RUNTIME) -> None:
    """Log :func:`runtime_line` on the ``landmark.runtime`` logger (INFO).

    Args:
        requested: the ``runtime`` argument the model was loaded with; when ``auto`` ended
            on eager PyTorch, the line says why no export was used (none beside the
            checkpoint, or one made from another checkpoint: the reason
            :func:`~landmark.models.runtime.load_runtime` left on the runtime, not a second search).
    """
    if not log.isEnabledFor(logging.INFO):
        return
    note = ""
    why = getattr(runtime, "why_not_onnx", "") if requested == "auto" else ""
    if why:   # the reason load_runtime found, shortened when nothing was there at all
        note = "auto: no export of this checkpoint (landmark export writes one)" if why.startswith("no exported") \
            else f"auto: {why}"
    log.info("%s", runtime_line(runtime, note))
