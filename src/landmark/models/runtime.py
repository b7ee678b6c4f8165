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

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..data.preprocess import Preprocess
from ..devices import resolve_device
from .runtime_info import DEFAULT_RUNTIME, MAX_THREADS_PER_CPU, RUNTIMES
from .spec import ModelSpec, spec_from_arch

METADATA_KEY = "landmark"   # metadata_props key of the exported model's JSON description
MAX_ONNX_BYTES = 2**31      # protobuf's limit for one message: no single-file .onnx is larger


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


class OnnxRuntime:
    """ONNX Runtime on the CPU: ``OnnxRuntime(path, threads=None)``.

    Args:
        path: a ``.onnx`` file written by ``landmark export`` (input ``image``
            ``[batch, 3, H, W]``, outputs ``logits`` and ``embedding``, JSON metadata).
        threads: intra-op threads (default: the CPUs this process may use; at most
            :data:`MAX_THREADS_PER_CPU` per CPU).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ONNX model, or one without the landmark metadata; too many threads.
    """

    name = "onnx"
    device = torch.device("cpu")

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist (write it with `landmark export`)")
        check_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_count()
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: beside decoding workers and on CPUs
        # shared with other work, spinning threads burnt CPU the decoders needed (measured:
        # docs/runtime.md); with one thread there is nothing to spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types for bad files
            raise ValueError(f"{path} is not a loadable ONNX model ({type(err).__name__}: {err})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise ValueError(f"{path} has no '{METADATA_KEY}' metadata; export it with `landmark export`")
        try:
            self.path, self.meta = path, json.loads(meta)
        except (ValueError, RecursionError) as err:   # RecursionError: JSON nested past the parser's depth
            raise ValueError(f"{path}: its '{METADATA_KEY}' metadata is not JSON ({type(err).__name__}); "
                             f"export it again") from None
        if not isinstance(self.meta, dict) or not isinstance(self.meta.get("classes"), list):
            raise ValueError(f"{path}: its '{METADATA_KEY}' metadata has no list of classes; export it again")
        _check_metadata(path, self.meta, self.session)
        try:   # checked like a checkpoint's: a huge or NaN preprocessing must not reach the photos
            preprocess = Preprocess.of(self.meta.get("preprocess"))
            spec = metadata_spec(self.meta)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: its '{METADATA_KEY}' metadata has an invalid preprocessing or spec "
                             f"({' '.join(str(err).split())[:160]}); export it again") from None
        self.classes, self.preprocess = list(self.meta["classes"]), preprocess
        self.names, self.spec = self.meta.get("names"), spec
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        logits, emb = self.session.run(["logits", "embedding"], {self.input: np.ascontiguousarray(x, np.float32)})
        return torch.from_numpy(logits), torch.from_numpy(emb)


def metadata_spec(meta: dict) -> ModelSpec | None:
    """The :class:`ModelSpec` an export's metadata records: its ``spec``, or (exports written
    before the spec existed) the ``arch`` dict upgraded as a format-1 checkpoint's is; None
    when it records neither.

    Raises:
        ValueError: the recorded spec or arch is invalid (pydantic's ValidationError is one).
    """
    if isinstance(meta.get("spec"), dict):
        return ModelSpec.model_validate(meta["spec"])
    if isinstance(meta.get("arch"), dict):
        return spec_from_arch(meta["arch"])
    return None


def _check_metadata(path: Path, meta: dict, session) -> None:
    """Refuse an export whose metadata cannot describe its graph: classes that are not distinct
    strings or do not match the width of the ``logits`` output (every photo would fail with a
    reshape traceback), ``names`` / ``spec`` / ``arch`` (older exports) that are not objects.

    Raises:
        ValueError: one line naming the file and what is wrong.
    """
    classes = meta["classes"]
    bad = (f"{len(classes)} classes" if not classes else
           "classes that are not strings" if not all(isinstance(c, str) for c in classes) else
           "repeated classes" if len(set(classes)) != len(classes) else None)
    widths = [o.shape[-1] for o in session.get_outputs() if o.name == "logits" and o.shape]
    if bad is None and widths and isinstance(widths[0], int) and widths[0] != len(classes):
        bad = f"{len(classes)} classes for a graph of {widths[0]} logits"
    for key in ("names", "spec", "arch"):
        if bad is None and meta.get(key) is not None and not isinstance(meta[key], dict):
            bad = f"'{key}' that is not an object"
    if bad is not None:
        raise ValueError(f"{path}: its '{METADATA_KEY}' metadata has {bad}; export it again")


def check_threads(threads: int | None) -> None:
    """Refuse an ONNX Runtime thread count above :data:`MAX_THREADS_PER_CPU` per CPU.

    Raises:
        ValueError: too many threads (the message says how many this process may use).
    """
    if threads is not None and threads > MAX_THREADS_PER_CPU * cpu_count():
        raise ValueError(f"--threads {threads}: this process may use {cpu_count()} CPUs; give at most "
                         f"{MAX_THREADS_PER_CPU * cpu_count()} (more threads only wait for each other)")


def cpu_count() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks); ties an export to its checkpoint."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_candidates(checkpoint: str | Path) -> list[Path]:
    """Where an exported model of ``checkpoint`` is looked for, in order:
    ``CKPT.onnx`` beside it (``best.pt`` -> ``best.onnx``), ``model.onnx`` in its folder,
    ``model.onnx`` in the run folder (the folder above ``checkpoints/``)."""
    checkpoint = Path(checkpoint)
    return [checkpoint.with_suffix(".onnx"), checkpoint.parent / "model.onnx", checkpoint.parent.parent / "model.onnx"]


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
    found = [p for p in onnx_candidates(checkpoint) if p.is_file()]
    if not found:
        looked = ", ".join(map(str, onnx_candidates(checkpoint)))
        return None, f"no exported model beside {checkpoint} (looked for {looked})"
    digest, skipped = file_sha256(checkpoint), []
    for path in found:
        if path.stat().st_size >= MAX_ONNX_BYTES:   # read whole by onnx.load: a huge file would exhaust memory
            skipped.append(f"{path} is {path.stat().st_size / 2**30:.1f} GiB, too large for an ONNX model "
                           "(protobuf holds < 2 GiB; re-export it)")
            continue
        try:
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            meta = json.loads(props.get(METADATA_KEY, "{}"))
        except Exception as err:   # protobuf's DecodeError, bad JSON, an unreadable file: not an export to use
            skipped.append(f"{path} is not a readable ONNX model ({type(err).__name__}; re-export it)")
            continue
        if not isinstance(meta, dict) or "checkpoint_sha256" not in meta:
            skipped.append(f"{path} was not written by landmark export (no '{METADATA_KEY}' metadata)")
        elif meta["checkpoint_sha256"] != digest:
            skipped.append(f"{path} was exported from another checkpoint (re-export it, or export this one to "
                           f"{Path(checkpoint).with_suffix('.onnx')})")
        elif fp32_only and meta.get("precision", "fp32") != "fp32":
            skipped.append(f"{path} is {meta['precision']}, whose answers differ slightly "
                           "(auto runs fp32 exports only; --runtime onnx runs it)")
        elif image_size not in (None, size := (meta.get("preprocess") or {}).get("size")):
            skipped.append(f"{path} takes {size} px inputs only, {image_size} px asked for")
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
