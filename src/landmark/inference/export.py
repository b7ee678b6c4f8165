"""Export a checkpoint to ONNX (fp32 or int8), verified against PyTorch on real photos.

The exported graph is :class:`~landmark.models.runtime.TwoOutputs`: input ``image``
float32 ``[batch, 3, size, size]`` (normalised), outputs ``logits`` ``[batch, K]`` and
``embedding`` ``[batch, D]``; the batch axis is dynamic.  The model's metadata
(``metadata_props['landmark']``, JSON) holds ``classes``, ``names``, ``preprocess``,
``spec`` (older exports: ``arch``, upgraded on reading), the SHA-256 of the checkpoint it came from and, for int8, how it was quantised,
so the ``.onnx`` file alone is enough to predict (:class:`OnnxRuntime`).

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter), opset 17.
torch 2.14 defaults to the ``torch.export``-based exporter, which needs ``onnxscript``;
the TorchScript one has no extra dependency and exports timm EfficientNets exactly
(max |difference| ~1e-5).

int8 (``int8=True``): ONNX Runtime *static* quantisation first (:data:`STATIC_INT8`: QDQ
format, per-channel weights in the 7-bit range, uint8 activations, MinMax calibration on
``calibration_images`` photos of the training split through the model's own preprocessing;
every convolution but those of the stem and of the first ``fp32_blocks`` blocks
(:data:`FP32_BLOCKS`), the ReLU6 after each folded into it, and the head's Gemm).
Chosen on the fast config's checkpoint against other settings (``docs/runtime.md``: table
of what was tried; on training and non-landmark photos, not the test set).  When static
quantisation does not meet the sanity gate :data:`INT8_MIN_AGREEMENT` /
:data:`INT8_MIN_COSINE` on the verification photos, *dynamic* quantisation (per-channel int8
weights, activations quantised per batch at run time) is tried; the report says which was
kept and why.  If neither passes, nothing is written.  The gate catches broken
quantisation; it is not the accuracy target (measure GAP and agreement with ``make bench``).

'Same' padding: the ``tf_`` EfficientNets pad their stride-2 convolutions asymmetrically,
computed from the input's shape at run time; the export fixes those pads for the
checkpoint's input size and folds them into the ``Conv`` nodes (:func:`static_padding`,
:func:`fold_pads`), so the graph takes ``size`` x ``size`` inputs only.

Verification: ONNX Runtime and eager PyTorch run the same ``verify_images`` real photos;
fp32 must agree within :data:`FP32_ATOL` (logits and L2-normalised embeddings), else
nothing is written.  The file appears at ``out`` only after it passed: every intermediate
file is written in a hidden work folder ``.NAME.onnx.<pid>.<random>`` beside ``out``
(removed when the export ends, however it ends short of ``kill -9``), the result is synced
and renamed over ``out``, so a crash at any step leaves the old ``out`` or the new one.  The
work folders of killed exports (their process gone) are removed by the next export to the
same folder.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import CALIBRATION_IMAGES, VERIFY_IMAGES
from ..io import fsync_dir, fsync_file, pid_alive
from ..models.runtime import METADATA_KEY, OnnxRuntime, Runtime, TorchRuntime, TwoOutputs, file_sha256

OPSET = 17
FP32_ATOL = 1e-3          # max |ORT - torch| for logits and for L2-normalised embeddings
INT8_MIN_AGREEMENT = 0.8  # top-1 agreement of int8 with PyTorch on the verification photos (sanity gate)
INT8_MIN_COSINE = 0.9     # mean cosine similarity of int8 and PyTorch embeddings (sanity gate)
# How ``--int8`` quantises statically (chosen on training photos and non-landmark photos of the
# fast config's checkpoint, docs/runtime.md): ORT ``quantize_static`` in QDQ format, per-channel
# weights with ``reduce_range`` (7 bits: this CPU has AVX2 without VNNI, where ORT's u8 x s8
# kernels add pairs of products in saturating int16 and full 8-bit weights overflowed),
# uint8 activations, MinMax calibration; ``Clip`` (ReLU6) quantised too, which folds it into
# the convolution before it (that output is then quantised over [0, 6], not over the
# convolution's raw range); the stem convolution and the first FP32_BLOCKS blocks stay fp32.
STATIC_INT8 = {"format": "QDQ", "per_channel": True, "reduce_range": True, "activations": "uint8",
               "weights": "int8 (7-bit range)", "calibration": "MinMax", "op_types": ["Conv", "MatMul", "Gemm", "Clip"]}
# Leading backbone blocks (timm's ``blocks.0``, ``blocks.1`` ...) kept fp32 besides the stem.  Chosen on
# training and non-landmark photos of the fast checkpoint (docs/runtime.md): quantising
# ``blocks.0`` (112 x 112 px activations) caused most of the int8 error and was not even
# faster; keeping it fp32 raised the mean embedding cosine with fp32 from 0.980 to 0.988 at
# 1.59 instead of 1.54 times ORT fp32's speed.  ``fp32_blocks=2`` reaches 0.993 at 1.45 times.
FP32_BLOCKS = 1


class ExportError(ValueError):
    """The exported model disagrees with PyTorch beyond the tolerance; nothing was written."""


def run_photos(checkpoint: str | Path, split: str) -> pd.DataFrame:
    """Photos of a training run's ``split`` (``train``, ``val``, ``test`` in ``split.csv``) as ``id, path``.

    The run folder is the folder above ``checkpoints/``; its ``run.json`` names the data.

    Raises:
        FileNotFoundError: the checkpoint is not inside a run folder with ``run.json`` and ``split.csv``.
    """
    from ..retrieval.embeddings import labelled_images
    from ..runs import RunFolder
    run = RunFolder.of_checkpoint(checkpoint)
    if not run.is_run() or not run.split_file.is_file():
        raise FileNotFoundError(f"{checkpoint} is not in a run folder (no run.json/split.csv in {run.root}); "
                                "give --images with real photos")
    data = run.info()["data"]
    split_rows = run.split()
    ids = split_rows.loc[split_rows["split"] == split, "id"]
    frame = labelled_images(data)
    return frame[frame["id"].isin(set(ids))][["id", "path"]].reset_index(drop=True)


def photo_batches(frame: pd.DataFrame, preprocess: dict, limit: int, batch: int = 16) -> list[torch.Tensor]:
    """Up to ``limit`` readable photos of ``frame`` (first rows first) through the evaluation
    preprocessing (resize to ``size``, normalise), as float32 batches ``[<=batch, 3, size, size]``.

    Raises:
        ValueError: none of the photos could be read.
    """
    from ..data import ImageDataset, collate
    from ..data.preprocess import Preprocess
    dataset = ImageDataset(frame.head(limit * 2), Preprocess.of(preprocess).transform())
    images = []
    for k in range(len(dataset)):
        item = dataset[k]
        if isinstance(item, dict):
            images.append(item["image"])
        if len(images) == limit:
            break
    if not images:
        raise ValueError("none of the photos for verification/calibration could be read")
    stacked = torch.stack(images)
    return list(stacked.split(batch))


def compare(reference: Runtime, candidate: Runtime, batches: list[torch.Tensor]) -> dict:
    """How far ``candidate`` is from ``reference`` on the same inputs.

    Returns:
        ``images``, ``max_abs_logits``, ``max_abs_embedding`` (L2-normalised),
        ``min_cosine``/``mean_cosine`` (embeddings) and ``top1_agreement`` (fraction).
    """
    diffs_l, diffs_e, cosines, agree, n = [], [], [], 0, 0
    for x in batches:
        (la, ea), (lb, eb) = reference(x), candidate(x)
        la, lb = la.float().cpu(), lb.float().cpu()
        ea, eb = F.normalize(ea.float().cpu(), dim=1), F.normalize(eb.float().cpu(), dim=1)
        diffs_l.append(float((la - lb).abs().max()))
        diffs_e.append(float((ea - eb).abs().max()))
        cosines.append((ea * eb).sum(1))
        agree += int((la.argmax(1) == lb.argmax(1)).sum())
        n += len(x)
    cos = torch.cat(cosines)
    return {"images": n, "max_abs_logits": max(diffs_l), "max_abs_embedding": max(diffs_e),
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "top1_agreement": agree / n}


class _StaticSamePad(nn.Module):
    """A timm ``Conv2dSame`` (TensorFlow 'SAME' padding, computed from the input's shape at
    every call) with the padding fixed for one input size: ``F.pad`` by constants, then the
    same convolution.  Identical outputs at that size; exported as a ``Pad`` with constant
    pads that ONNX Runtime fuses into the ``Conv``, instead of a shape computation and a
    run-time ``Pad`` (which also breaks ONNX Runtime's blocked NCHWc layout and, in int8,
    costs a dequantise/quantise pair around every such ``Pad``)."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]):
        super().__init__()
        self.conv, self.pads = conv, tuple(int(p) for p in pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Conv2d.forward(self.conv, F.pad(x, self.pads))


def static_padding(model: nn.Module, size: int) -> nn.Module:
    """A copy of ``model`` whose dynamic 'SAME'-padding convolutions (timm ``Conv2dSame``, in
    the ``tf_`` EfficientNets) pad by constants computed for ``[*, 3, size, size]`` inputs
    (:class:`_StaticSamePad`); ``model`` itself is returned when it has none.  The copy gives
    the same outputs at that input size (the exported graph only takes that size)."""
    import copy
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg
    if not any(isinstance(m, Conv2dSame) for m in model.modules()):
        return model
    model = copy.deepcopy(model).eval()
    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, Conv2dSame):
            hooks.append(m.register_forward_pre_hook(lambda mod, args, name=name: shapes.__setitem__(name, args[0].shape[-2:])))
    with torch.no_grad():
        model.forward_features(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for name, hw in shapes.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        conv = getattr(parent, child)
        setattr(parent, child, _StaticSamePad(conv, pad_same_arg(list(hw), conv.weight.shape[-2:], conv.stride,
                                                                  conv.dilation)))
    return model


def write_fp32(model: torch.nn.Module, size: int, path: Path, metadata: dict, opset: int = OPSET) -> None:
    """``torch.onnx.export`` of :class:`TwoOutputs` (dynamic batch) plus the JSON metadata, to ``path``.

    The graph takes ``size`` x ``size`` inputs only; 'SAME' paddings are fixed for that size
    (:func:`static_padding`)."""
    import onnx
    net = TwoOutputs(static_padding(model, size)).eval()
    x = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():   # the TorchScript exporter's deprecation notice (chosen on purpose),
        warnings.simplefilter("ignore", DeprecationWarning)   # and its note on Slice steps it leaves unfolded
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["logits", "embedding"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}})
    net.eval()  # the exporter restores the wrapper's mode, which would put the model in training mode
    fold_pads(path)
    set_metadata(path, metadata)
    onnx.checker.check_model(str(path))


def fold_pads(path: Path) -> int:
    """Fold every constant zero ``Pad`` that feeds a ``Conv`` into that ``Conv``'s ``pads``
    attribute, rewriting ``path``; returns how many ``Pad`` nodes went.

    The exporter writes the pads of ``F.pad`` through a small constant subgraph, so the
    graph is first constant-folded by ONNX Runtime's *basic* optimisations (portable ONNX
    rewrites: constant folding, redundant nodes; ``ORT_ENABLE_BASIC``), then onnxoptimizer's
    ``fuse_pad_into_conv`` pass folds the pads.  ONNX Runtime's own pad fusion does not fire
    on the exported form, and an unfused ``Pad`` costs a layout change around it in fp32 and
    a dequantise/quantise pair in int8 (measured in ``docs/runtime.md``).
    """
    import onnx
    import onnxoptimizer
    import onnxruntime as ort
    folded = path.with_name(path.stem + ".basic.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    proto = onnx.load(str(folded))
    folded.unlink()
    pads = sum(n.op_type == "Pad" for n in proto.graph.node)
    proto = onnxoptimizer.optimize(proto, ["fuse_pad_into_conv", "eliminate_unused_initializer"])
    onnx.save(proto, str(path))
    return pads - sum(n.op_type == "Pad" for n in proto.graph.node)


def set_metadata(path: Path, metadata: dict) -> None:
    """Store ``metadata`` as JSON under :data:`METADATA_KEY` in the model's ``metadata_props``."""
    import onnx
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))


class _Calibration:
    """ONNX Runtime ``CalibrationDataReader`` over float32 batches ``[B, 3, S, S]``."""

    def __init__(self, batches: list[torch.Tensor]):
        self.batches = [b.numpy() for b in batches]
        self.rewind()

    def get_next(self):
        return next(self.it, None)

    def rewind(self) -> None:
        self.it = iter({"image": b} for b in self.batches)


def quantize(fp32: Path, out: Path, mode: str, calibration: list[torch.Tensor] | None, work: Path,
             fp32_blocks: int = FP32_BLOCKS) -> list[str]:
    """Write the int8 version of ``fp32`` to ``out``; returns the convolutions kept fp32.

    Args:
        mode: ``static`` (:data:`STATIC_INT8`: QDQ, per-channel 7-bit weights, uint8
            activations with MinMax ranges over ``calibration`` batches, ReLU6 folded into
            the convolution before it) or ``dynamic`` (per-channel int8 weights, activations
            quantised per batch at run time).
        work: a folder for intermediate files.
        fp32_blocks: static only: the first convolution and every convolution of the backbone's
            first ``fp32_blocks`` blocks (ONNX node names with ``/blocks.K/``, timm's module
            paths; a backbone without such blocks keeps only its first convolution) stay fp32.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    if mode == "static":
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        kept = fp32_convolutions(convs, fp32_blocks)
        reader = type("Reader", (_Calibration, CalibrationDataReader), {})(calibration)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=STATIC_INT8["op_types"], nodes_to_exclude=kept,
                        calibrate_method=CalibrationMethod.MinMax)
        return kept
    quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    return []


def fp32_convolutions(convs: list[str], fp32_blocks: int) -> list[str]:
    """The convolutions (ONNX node names, graph order) that static int8 keeps fp32: the first
    (the stem) and those of blocks ``/blocks.K/`` with ``K < fp32_blocks`` (one test per name,
    whatever the count)."""
    block = re.compile(r"/blocks\.(\d+)/")
    return convs[:1] + [c for c in convs[1:] if (m := block.search(c)) and int(m.group(1)) < fp32_blocks]


def export_onnx(checkpoint: str | Path, out: str | Path, int8: bool = False, images: str | Path | None = None,
                verify_images: int = VERIFY_IMAGES, calibration_images: int = CALIBRATION_IMAGES, overwrite: bool = False,
                threads: int | None = None, opset: int = OPSET, fp32_blocks: int | None = None) -> dict:
    """Export ``checkpoint`` to ``out`` (module docstring) and verify it on real photos.

    Args:
        images: folder/CSV of real photos for verification and calibration (default:
            the run's ``test`` split for verification, ``train`` for calibration).
        verify_images / calibration_images: how many photos each uses.
        threads: ONNX Runtime threads for the verification.
        fp32_blocks: with ``int8``, leading backbone blocks kept fp32 (None: :data:`FP32_BLOCKS`;
            0 quantises all but the stem: less exact, and faster only where the CPU's int8 kernels are).

    Returns:
        report dict: ``onnx``, ``format`` (``fp32`` / ``int8-static`` / ``int8-dynamic``),
        ``bytes``, ``verification`` (:func:`compare` with PyTorch), and for int8
        ``quantization`` (mode, why, calibration photos, the tries).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        FileNotFoundError / ValueError: bad checkpoint (a ``.pt`` or its run folder) or photos;
            ``out`` is the checkpoint itself; ``fp32_blocks`` < 0, given without ``int8``, or more
            than the backbone's blocks.
        ExportError: the export disagrees with PyTorch beyond the tolerance.
    """
    from ..data import read_queries
    from ..models import load_model
    from .recognizer import resolve_checkpoint
    out = Path(out)
    asked, fp32_blocks = fp32_blocks, FP32_BLOCKS if fp32_blocks is None else fp32_blocks
    if isinstance(fp32_blocks, bool) or not isinstance(fp32_blocks, int) or fp32_blocks < 0:
        raise ValueError(f"fp32_blocks {fp32_blocks!r}: give a whole number >= 0 of leading blocks to keep fp32")
    if asked is not None and not int8:
        raise ValueError("--fp32-blocks applies to --int8 exports only; add --int8 or drop it")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the path of a .onnx file")
    checkpoint = resolve_checkpoint(checkpoint)
    if out.exists() and out.samefile(checkpoint):
        raise ValueError(f"--out {out} is the checkpoint itself; the export would replace it: "
                         f"choose a .onnx path beside it, e.g. {checkpoint.with_suffix('.onnx')}")
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out {out}: give a file name ending in .onnx (commands tell an export from a "
                         "checkpoint by it)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite or choose another --out")
    model, ckpt = load_model(checkpoint)
    blocks = len(getattr(model.backbone, "blocks", ()))
    if asked is not None and asked > blocks:
        raise ValueError(f"--fp32-blocks {asked}: {model.spec.backbone} has {blocks} blocks; "
                         f"give 0 to {blocks}")
    preprocess = ckpt["preprocess"]
    if images is not None:
        verify_frame = calib_frame = read_queries(images)
    else:
        calib_frame = run_photos(checkpoint, "train")
        verify_frame = next((f for f in (run_photos(checkpoint, s) for s in ("test", "val")) if len(f)), calib_frame)
    verify = photo_batches(verify_frame, preprocess, verify_images)
    metadata = {"format_version": 1, "classes": [str(c) for c in ckpt["classes"]], "names": ckpt.get("names"),
                "reject_threshold": ckpt.get("reject_threshold"),
                "preprocess": preprocess, "spec": ckpt["spec"], "checkpoint": str(Path(checkpoint).resolve()),
                "checkpoint_sha256": file_sha256(checkpoint), "opset": opset, "precision": "fp32"}
    reference = TorchRuntime(model, ckpt["classes"], preprocess, device="cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_dead_work(out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.{os.getpid()}.") as tmp:
        work = Path(tmp)
        fp32 = work / "fp32.onnx"
        write_fp32(model, preprocess["size"], fp32, metadata, opset=opset)
        check = compare(reference, OnnxRuntime(fp32, threads), verify)
        if check["max_abs_logits"] > FP32_ATOL or check["max_abs_embedding"] > FP32_ATOL:
            raise ExportError(f"ONNX Runtime differs from PyTorch by {check['max_abs_logits']:.2e} (logits) / "
                              f"{check['max_abs_embedding']:.2e} (embedding), tolerance {FP32_ATOL}")
        report = {"onnx": str(out), "format": "fp32", "verification": check}
        final = fp32
        if int8:
            final, report = _int8(fp32, work, metadata, reference, verify=verify, calib_frame=calib_frame,
                                  calibration_images=calibration_images, threads=threads,
                                  report=report, fp32_blocks=fp32_blocks)
        fsync_file(final)
        os.replace(final, out)
        fsync_dir(out.parent)
    report["bytes"] = out.stat().st_size
    return report


def clear_dead_work(out: str | Path) -> list[Path]:
    """Remove the work folders (``.NAME.onnx.<pid>.<random>``) of exports to ``out`` whose
    process is gone (a killed export); returns them.  Those of running exports stay."""
    import shutil
    out, gone = Path(out), []
    for work in out.parent.glob(f".{out.name}.*"):
        pid = work.name[len(out.name) + 2:].split(".")[0]
        if work.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(work, ignore_errors=True)
            gone.append(work)
    return gone


def _int8(fp32: Path, work: Path, metadata: dict, reference: Runtime, verify: list[torch.Tensor],
          calib_frame: pd.DataFrame, calibration_images: int, threads: int | None, report: dict,
          fp32_blocks: int = FP32_BLOCKS) -> tuple[Path, dict]:
    """Static quantisation, else dynamic (module docstring); returns (file, updated report).

    Raises:
        ExportError: neither meets the int8 thresholds.
    """
    calibration = photo_batches(calib_frame, metadata["preprocess"], calibration_images)
    tries = {}
    for mode in ("static", "dynamic"):
        path = work / f"int8_{mode}.onnx"
        try:
            kept = quantize(fp32, path, mode, calibration, work=work, fp32_blocks=fp32_blocks)
            set_metadata(path, {**metadata, "precision": f"int8-{mode}"})
            check = compare(reference, OnnxRuntime(path, threads), verify)
        except Exception as err:  # an op ORT cannot quantise/run in this mode: try the next one
            tries[mode] = {"error": f"{type(err).__name__}: {err}"}
            continue
        tries[mode] = check
        if check["top1_agreement"] >= INT8_MIN_AGREEMENT and check["mean_cosine"] >= INT8_MIN_COSINE:
            why = ("static quantisation met the thresholds" if mode == "static" else
                   f"static quantisation did not meet the thresholds ({_why(tries['static'])})")
            info = {"mode": mode, "why": why, "calibration_images": sum(len(b) for b in calibration)
                    if mode == "static" else 0, "tries": tries, "settings": {**STATIC_INT8, "fp32_blocks": fp32_blocks, "kept_fp32": kept}
                    if mode == "static" else
                    {"per_channel": True, "weights": "int8", "activations": "dynamic uint8"},
                    "thresholds": {"top1_agreement": INT8_MIN_AGREEMENT, "mean_cosine": INT8_MIN_COSINE}}
            set_metadata(path, {**metadata, "precision": f"int8-{mode}", "quantization": info})
            return path, {**report, "format": f"int8-{mode}", "fp32_verification": report["verification"],
                          "verification": check, "quantization": info}
    raise ExportError(f"int8 quantisation disagrees with PyTorch beyond the thresholds "
                      f"(top-1 agreement >= {INT8_MIN_AGREEMENT}, mean cosine >= {INT8_MIN_COSINE}): {tries}")


def _why(check: dict) -> str:
    if "error" in check:
        return check["error"]
    return f"top-1 agreement {check['top1_agreement']:.3f}, mean cosine {check['mean_cosine']:.4f}"
