"""Inference runtimes: one tiny interface over eager PyTorch and ONNX Runtime.

A *runtime* is a callable ``runtime(x) -> (logits, embedding)``:

* ``x``: float32 tensor ``[B, 3, H, W]``, already normalised with ``preprocess['mean']``
  / ``preprocess['std']`` (what :func:`landmark.data.transforms.eval_transform` makes);
* ``logits``: float32 tensor ``[B, K]`` (the classifier; softmax them for probabilities);
* ``embedding``: float32 tensor ``[B, D]``, the pooled (projected) descriptor of
  ``LandmarkNet.embed``, *not* L2-normalised.

Both come from one backbone pass.  Every runtime also carries ``name`` (``torch``,
``onnx``), ``classes`` (landmark ids, index = logit column), ``names`` (landmark names or
None), ``preprocess`` (a :class:`~landmark.data.preprocess.Preprocess`: ``size``, ``resize``,
``mean``, ``std``; ``preprocess.transform()`` builds the photos' transform) and ``spec`` (the
network's :class:`~landmark.models.spec.ModelSpec`: ``backbone`` ...; None for an export
whose metadata names none), so callers need nothing but the runtime.

:class:`TorchRuntime` wraps a :class:`~landmark.models.LandmarkNet`; :class:`OnnxRuntime`
runs a file written by :func:`landmark.inference.export.export_onnx` (the class list and
preprocessing are in its metadata, so the ``.onnx`` file is self-describing).
:func:`load_runtime` picks one for a checkpoint path and ``torch | onnx | auto``.

Agreement (measured, see ``docs/runtime.md``): ONNX Runtime fp32 matches eager PyTorch to
about 1e-5 in logits and embeddings (tested with tolerance 1e-3 absolute); int8 models
differ more (top-1 agreement and GAP difference reported by ``landmark export --int8``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..data.preprocess import Preprocess
from ..devices import resolve_device
from .onnx_model import (  # noqa: F401  (re-exported: the torch-free half of this module)
    MAX_ONNX_BYTES, METADATA_KEY, OnnxModel, candidate_files, check_threads, cpu_count, file_sha256, metadata_spec,
    onnx_candidates, open_export, why_not)
from .runtime_info import DEFAULT_RUNTIME, RUNTIMES
from .spec import ModelSpec


class Runtime(Protocol):
    """What :func:`landmark.inference.predict_images` and ``embed_images`` need (module docstring)."""

    name: str
    device: torch.device     # where the network computes (``cpu`` for ONNX Runtime)
    classes: list[str]
    names: dict[str, str] | None   # landmark id -> readable name
    preprocess: Preprocess
    spec: ModelSpec | None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class TwoOutputs(nn.Module):
    """``LandmarkNet`` with both outputs from one backbone pass: ``x`` ``[B, 3, H, W]`` ->
    (logits ``[B, K]``, embedding ``[B, D]``); the module that is exported to ONNX."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.logits_and_embedding(x)


class TorchRuntime:
    """Eager PyTorch: ``TorchRuntime(model, classes, preprocess, device=None)``.

    ``device`` as :func:`landmark.devices.resolve_device` (default: cuda when available).
    Inputs are moved to the device; outputs stay there, as float32.
    """

    name = "torch"
    why_not_onnx = ""   # set by load_runtime when ``auto`` found no usable export

    def __init__(self, model: nn.Module, classes: list[str], preprocess: Preprocess | dict,
                 names: dict[str, str] | None = None, device: str | None = None):
        from ..devices import resolve_device
        self.device = resolve_device(device)
        self.net = TwoOutputs(model).to(self.device).eval()
        self.classes, self.preprocess, self.names = list(classes), Preprocess.of(preprocess), names
        self.spec: ModelSpec | None = getattr(model, "spec", None)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, emb = self.net(x.to(self.device))
        return logits.float(), emb.float()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | None = None,
                        loaded: tuple[nn.Module, dict] | None = None) -> "TorchRuntime":
        """Load a ``.pt`` checkpoint (raises as :func:`landmark.models.load_model`), or wrap
        ``loaded``, what :func:`~landmark.models.load_model` already returned for it."""
        from .factory import load_model
        model, ckpt = loaded or load_model(checkpoint)
        return cls(model, ckpt["classes"], ckpt["preprocess"], ckpt.get("names"), device=device)


class OnnxRuntime(OnnxModel):
    """ONNX Runtime on the CPU: ``OnnxRuntime(path, threads=None)``, an
    :class:`~landmark.models.onnx_model.OnnxModel` (arguments, attributes and errors there)
    called with and returning torch tensors."""

    device = torch.device("cpu")

    def __call__(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        logits, emb = self.run(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
        return torch.from_numpy(logits), torch.from_numpy(emb)


class EnsembleRuntime:
    """Several networks as one descriptor: ``EnsembleRuntime([runtime_a, runtime_b])``.

    Each member embeds the same input ``x`` ``[B, 3, H, W]``; its ``[B, D_i]`` embedding is
    L2-normalised, the normalised parts are concatenated and scaled by ``1/sqrt(n)``, so the
    ``[B, sum D_i]`` float32 result has unit norm and its inner product is the mean of the
    members' cosines (the concatenation of descriptors of several backbones that landmark-retrieval
    ensembles use, e.g. the GLDv2 retrieval winners; measured in docs/retrieval.md: lite0 | lite2).
    ``logits``, ``classes``, ``names``, ``spec`` are the first member's (the classifier answers from
    one model).  ``checkpoints`` names each member's file, for the vectors' record.

    Raises:
        ValueError: fewer than two members, or members normalising their inputs differently
            (another ``mean`` / ``std``: one tensor feeds them all).
    """

    def __init__(self, members: list, checkpoints: list[str | Path]):
        if len(members) < 2 or len(members) != len(checkpoints):
            raise ValueError(f"an ensemble needs two or more models, one checkpoint each (got {len(members)})")
        first = members[0].preprocess
        for member, path in zip(members[1:], checkpoints[1:]):
            if (member.preprocess.mean, member.preprocess.std) != (first.mean, first.std):
                raise ValueError(f"{path} normalises its inputs with mean {member.preprocess.mean} / std "
                                 f"{member.preprocess.std}, {checkpoints[0]} with {first.mean} / {first.std}: "
                                 "an ensemble's models must share them (one photo tensor feeds all)")
        self.members, self.checkpoints = list(members), [Path(c) for c in checkpoints]
        self.name = "+".join(m.name for m in members)
        self.device = members[0].device
        self.classes, self.names, self.spec = members[0].classes, members[0].names, members[0].spec
        self.preprocess = first
        # auto's reasons, each with its member's file (runtime_info.announce shortens a lone model's only)
        self.why_not_onnx = "; ".join(
            f"{path.name}: {'no export of it (landmark export writes one)' if w.startswith('no exported') else w}"
            for m, path in zip(members, self.checkpoints) if (w := getattr(m, "why_not_onnx", "")))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts, logits = [], None
        for member in self.members:
            out_logits, emb = member(x)
            logits = out_logits if logits is None else logits
            parts.append(torch.nn.functional.normalize(emb.float().to(self.device), dim=1))
        return logits, torch.cat(parts, dim=1) / float(np.sqrt(len(parts)))


def load_runtimes(checkpoints: list[str | Path], runtime: str = DEFAULT_RUNTIME, device: str | None = None,
                  threads: int | None = None, image_size: int | None = None) -> Runtime:
    """:func:`load_runtime` of one checkpoint, or an :class:`EnsembleRuntime` of several (each
    loaded by :func:`load_runtime` with the same arguments).

    Raises:
        ValueError: no checkpoint, the same one twice, and as :func:`load_runtime` / :class:`EnsembleRuntime`.
        FileNotFoundError: as :func:`load_runtime`.
    """
    paths = [Path(c) for c in checkpoints]
    if not paths:
        raise ValueError("give a checkpoint")
    if len({p.resolve() for p in paths}) < len(paths):
        raise ValueError(f"the same checkpoint is given twice ({', '.join(map(str, paths))}): an ensemble needs "
                         "different models")
    loaded = [load_runtime(p, runtime, device, threads, image_size=image_size) for p in paths]
    return loaded[0] if len(loaded) == 1 else EnsembleRuntime(loaded, paths)


def decode_threads(runtime: Runtime) -> bool:
    """Whether images for ``runtime`` are decoded by threads of the calling process (it computes
    on the CPU: ONNX Runtime, or PyTorch on the CPU) rather than by worker processes (a GPU).

    On the CPU the network and the decoding share the cores: threads decode each batch with
    all of them, without processes' start-up, pickling and contention with the network's
    threads (:class:`landmark.data.dataset.ThreadedBatches`).  A GPU computes beside the CPUs,
    so DataLoader processes decode there, beyond the reach of the GIL.
    """
    return torch.device(getattr(runtime, "device", "cpu")).type == "cpu"


def decode_workers(threads: bool = False) -> int:
    """Default image decoders beside the network: with ``threads`` (:func:`decode_threads`)
    one thread per CPU, else half the CPUs as processes, at least 1.

    Measured on 2 cores with ONNX Runtime int8 at batch 32 over the 274 landmarks13 test photos
    (``docs/runtime.md``): 2 decoding threads, 141 to 151 photos/s end to end; 1 thread, 115 to
    123; 1 worker process, 110 to 114; 2 processes beside 2 network threads fell further behind.
    """
    return cpu_count() if threads else max(1, cpu_count() // 2)


def exported_model(checkpoint: str | Path, fp32_only: bool = False,
                   image_size: int | None = None) -> tuple[Path | None, str]:
    """The first :func:`onnx_candidates` file exported from exactly this checkpoint.

    Args:
        fp32_only: skip int8 exports (``auto``: answers must equal PyTorch's within 1e-4).
        image_size: skip an export made for another input size (its graph takes one size only).

    Returns:
        (path or None, a sentence saying why none fits, for error messages).
    """
    import onnx
    found, skipped = candidate_files(checkpoint)
    digest = file_sha256(checkpoint) if found else ""
    for path in found:
        try:
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            meta = json.loads(props.get(METADATA_KEY, "{}"))
        except Exception as err:   # protobuf's DecodeError, bad JSON, an unreadable file: not an export to use
            skipped.append(f"{path} is not a readable ONNX model ({type(err).__name__}; re-export it)")
            continue
        reason = why_not(path, meta, checkpoint, digest, fp32_only=fp32_only, image_size=image_size)
        if reason:
            skipped.append(reason)
        else:
            return path, ""
    return None, "; ".join(skipped)


def load_runtime(checkpoint: str | Path, runtime: str = DEFAULT_RUNTIME, device: str | None = None,
                 threads: int | None = None, loaded: tuple[nn.Module, dict] | None = None,
                 image_size: int | None = None) -> Runtime:
    """A runtime for a ``.pt`` checkpoint or a ``.onnx`` export.

    Args:
        checkpoint: ``.pt`` written by ``landmark train`` or ``.onnx`` by ``landmark export``.
        runtime: ``torch`` (eager PyTorch; needs a ``.pt``), ``onnx`` (the given ``.onnx``,
            or the export of the ``.pt`` found by :func:`exported_model`), or ``auto``
            (the default, :data:`~landmark.models.runtime_info.DEFAULT_RUNTIME`: a ``.onnx``
            runs on ONNX Runtime; a ``.pt`` does too when an export made from this very
            checkpoint (SHA-256 checked) lies beside it and ``device`` resolves to the CPU,
            else on eager PyTorch, which then carries the reason in ``why_not_onnx``).
        device: for ``torch`` only (ONNX Runtime runs on the CPU here); with ``auto``, a
            GPU (given, or found when ``device`` is None) means eager PyTorch on it.
        threads: ONNX Runtime intra-op threads (default: all CPUs of the process).
        loaded: ``(model, checkpoint dict)`` of this ``.pt`` as ``load_model`` returned them,
            wrapped instead of loading the file again when eager PyTorch runs it.
        image_size: the input size the caller will feed (None: the checkpoint's); with
            ``auto``, an export (which takes its own size only) is not used for another size.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown ``runtime``; ``torch`` with a ``.onnx`` file; ``onnx`` without
            a matching export; a GPU ``device`` for ONNX Runtime (a ``.onnx`` or ``onnx``); a bad file.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    check_threads(threads)   # before auto tries an export, which would otherwise be blamed
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    onnx_only = path.suffix.lower() == ".onnx" or runtime == "onnx"
    if onnx_only and device is not None and (asked := resolve_device(device)).type != "cpu":
        raise ValueError(f"--device {device}: ONNX Runtime runs on the CPU here; for {asked} give the .pt "
                         "checkpoint with --runtime torch or auto")
    if path.suffix.lower() == ".onnx":
        if runtime == "torch":
            raise ValueError(f"{path} is an ONNX model; use --runtime onnx or auto (the default), "
                             "or give the .pt checkpoint")
        return OnnxRuntime(path, threads)
    if runtime == "torch":
        return TorchRuntime.from_checkpoint(path, device, loaded)
    if runtime == "auto" and (target := resolve_device(device)).type != "cpu":
        on_gpu = TorchRuntime.from_checkpoint(path, device, loaded)
        on_gpu.why_not_onnx = f"the network runs on {target}, ONNX Runtime on the CPU only"
        return on_gpu
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the checkpoint file, e.g. {path / 'checkpoints' / 'best.pt'}, "
                         "or its .onnx export")
    auto = runtime == "auto"
    # the usual case, an export of this checkpoint that loads, without importing the onnx package
    # (1 s of CPU): its metadata read from the ONNX Runtime session that then runs it
    opened, _ = open_export(path, fp32_only=auto, threads=threads, image_size=image_size if auto else None,
                            opener=OnnxRuntime)
    if opened is not None:
        return opened
    onnx_path, why = exported_model(path, fp32_only=auto, image_size=image_size if auto else None)
    if onnx_path is not None:
        try:
            return OnnxRuntime(onnx_path, threads)
        except Exception as err:   # ONNX Runtime refuses the graph: auto falls back, onnx says why
            if runtime == "onnx":
                raise ValueError(f"{onnx_path}: ONNX Runtime cannot load it ({type(err).__name__}: {err}); "
                                 f"re-export it with landmark export") from err
            why = f"ONNX Runtime cannot load {onnx_path} ({type(err).__name__}; re-export it)"
    if runtime == "onnx":
        stale = [p for p in onnx_candidates(path) if p.is_file()]
        target = stale[0] if stale else onnx_candidates(path)[2 if path.parent.name == "checkpoints" else 0]
        raise ValueError(f"--runtime onnx: {why}; run `landmark export {path} --out {target}"
                         + (" --overwrite`" if stale else "`"))
    fallback = TorchRuntime.from_checkpoint(path, device, loaded)
    fallback.why_not_onnx = why   # auto's reason, for the runtime line (runtime_info.announce)
    return fallback


def as_runtime(model, classes: list[str] | None = None, preprocess: dict | None = None,
               device: str | None = None) -> Runtime:
    """``model`` itself when it is a runtime, else a :class:`TorchRuntime` around the ``nn.Module``."""
    if isinstance(model, nn.Module):
        return TorchRuntime(model, classes or [], preprocess or {}, device=device)
    return model
