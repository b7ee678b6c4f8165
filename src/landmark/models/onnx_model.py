"""An exported model on ONNX Runtime, without PyTorch: the session and its metadata.

:class:`OnnxModel` opens a ``.onnx`` file written by ``landmark export`` and checks the
JSON metadata it carries (``classes``, ``names``, ``preprocess``, ``spec``,
``reject_threshold``, ``checkpoint_sha256``, ``precision``), so everything a recogniser needs
is read from the export alone; :meth:`OnnxModel.run` takes and returns numpy arrays.  This
module imports numpy and ONNX Runtime only (never torch): ``landmark recognize`` answers
with it in under a second, start-up included (docs/runtime.md).
:class:`landmark.models.runtime.OnnxRuntime` is the same model returning torch tensors.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..data.preprocess import Preprocess
from .runtime_info import MAX_THREADS_PER_CPU
from .spec import ModelSpec, spec_from_arch

METADATA_KEY = "landmark"   # metadata_props key of the exported model's JSON description
MAX_ONNX_BYTES = 2**31      # protobuf's limit for one message: no single-file .onnx is larger


class OnnxModel:
    """ONNX Runtime on the CPU: ``OnnxModel(path, threads=None)``.

    Args:
        path: a ``.onnx`` file written by ``landmark export`` (input ``image``
            ``[batch, 3, H, W]``, outputs ``logits`` and ``embedding``, JSON metadata).
        threads: intra-op threads (default: the CPUs this process may use; at most
            :data:`MAX_THREADS_PER_CPU` per CPU).

    Attributes:
        path, meta (the metadata dict), classes (landmark ids, logit column order), names
        (id -> name, or None), preprocess (a checked :class:`~landmark.data.preprocess.Preprocess`), spec
        (a :class:`~landmark.models.spec.ModelSpec`, or None).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ONNX model, or one without the landmark metadata; a preprocessing
            size that is not the graph's fixed input size; too many threads.
    """

    name = "onnx"

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
        sides = list(self.session.get_inputs()[0].shape or [])[2:]   # [batch, 3, H, W]: ints when fixed
        if any(isinstance(d, int) and d != preprocess.size for d in sides):
            raise ValueError(f"{path}: its '{METADATA_KEY}' metadata resizes photos to {preprocess.size} px, its graph "
                             f"takes {' x '.join(map(str, sides))} px; export it again")
        self.classes, self.preprocess = list(self.meta["classes"]), preprocess
        self.names, self.spec = self.meta.get("names"), spec
        self.input = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``[B, 3, S, S]`` normalised -> (logits float32 ``[B, K]``, embedding float32
        ``[B, D]``, not normalised)."""
        logits, emb = self.session.run(["logits", "embedding"], {self.input: np.ascontiguousarray(x, np.float32)})
        return logits, emb


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


def why_not(path: Path, meta: dict, checkpoint: str | Path, digest: str, fp32_only: bool = False,
            image_size: int | None = None) -> str:
    """Why the export at ``path`` (its metadata ``meta``) is not one to run for ``checkpoint``
    (of SHA-256 ``digest``), or "" when it is (the rules of
    :func:`landmark.models.runtime.exported_model`)."""
    if not isinstance(meta, dict) or "checkpoint_sha256" not in meta:
        return f"{path} was not written by landmark export (no '{METADATA_KEY}' metadata)"
    if meta["checkpoint_sha256"] != digest:
        return (f"{path} was exported from another checkpoint (re-export it, or export this one to "
                f"{Path(checkpoint).with_suffix('.onnx')})")
    if fp32_only and meta.get("precision", "fp32") != "fp32":
        return (f"{path} is {meta['precision']}, whose answers differ slightly "
                "(auto runs fp32 exports only; --runtime onnx runs it)")
    if image_size not in (None, size := (meta.get("preprocess") or {}).get("size")):
        return f"{path} takes {size} px inputs only, {image_size} px asked for"
    return ""


def candidate_files(checkpoint: str | Path) -> tuple[list[Path], list[str]]:
    """The :func:`onnx_candidates` files of ``checkpoint`` that exist and that protobuf can hold,
    and a sentence for each one passed over (none exists: one saying where it looked)."""
    candidates = onnx_candidates(checkpoint)
    found = [p for p in candidates if p.is_file()]
    if not found:
        return [], [f"no exported model beside {checkpoint} (looked for {', '.join(map(str, candidates))})"]
    usable, skipped = [], []
    for path in found:   # a file is read whole when opened: a huge one would exhaust memory
        if path.stat().st_size >= MAX_ONNX_BYTES:
            skipped.append(f"{path} is {path.stat().st_size / 2**30:.1f} GiB, too large for an ONNX model "
                           "(protobuf holds < 2 GiB; re-export it)")
        else:
            usable.append(path)
    return usable, skipped


def open_export(checkpoint: str | Path, fp32_only: bool = False, threads: int | None = None,
                image_size: int | None = None, opener: type[OnnxModel] = OnnxModel) -> tuple[OnnxModel | None, str]:
    """The first :func:`onnx_candidates` file exported from exactly this checkpoint, opened.

    The checkpoint is hashed (its bytes read, never unpickled) and each candidate's metadata
    read from its ONNX Runtime session, so nothing here imports torch or the ``onnx`` package.

    Args:
        fp32_only: skip int8 exports (``auto``: answers must equal PyTorch's within 1e-4).
        threads: ONNX Runtime intra-op threads.
        image_size: skip an export made for another input size.
        opener: the class that opens the file (:class:`landmark.models.runtime.OnnxRuntime`
            for torch tensors).

    Returns:
        (the opened model or None, a sentence saying why none fits).

    Raises:
        ValueError: ``threads`` too many.
    """
    check_threads(threads)
    found, skipped = candidate_files(checkpoint)
    digest = file_sha256(checkpoint) if found else ""
    for path in found:
        try:
            model = opener(path, threads)
        except ValueError as err:
            skipped.append(f"{err} (re-export it)")
            continue
        reason = why_not(path, model.meta, checkpoint, digest, fp32_only=fp32_only, image_size=image_size)
        if not reason:
            return model, ""
        skipped.append(reason)
    return None, "; ".join(skipped)
