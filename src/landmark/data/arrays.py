"""The preprocessing contract in numpy alone (no torch): photos -> the network's input array.

:func:`resize_uint8` is torch's antialiased bilinear resize of uint8 images (what
:func:`landmark.data.transforms.resize_uint8` runs through torchvision) written in numpy,
with the same arithmetic, so its pixels are *identical* (tested on real photos, up- and
down-scaling): a triangle filter widened by the scale factor when shrinking, separable,
horizontal pass first, each output pixel ``(2^(p-1) + sum(pixel * coef)) >> p`` clipped to
0..255 with int16 fixed-point coefficients of ``p`` bits, ``p`` the largest that keeps
every coefficient below 2^15.  That is Pillow-SIMD's resampling, which PyTorch's uint8 kernel
follows (``aten/src/ATen/native/cpu/UpSampleKernel.cpp``, ``_compute_index_ranges_int16_weights``;
Pillow's ``libImaging/Resample.c`` for the filter and support).  Pillow's own resize uses
other fixed-point precision and differed by one grey level in about 0.2% of the values,
which moved reference scores by up to 3% relative: hence this twin.

:func:`eval_input` applies a whole :class:`~landmark.data.preprocess.Preprocess` (one view).
"""
from __future__ import annotations

import numpy as np

from .preprocess import Preprocess


def _taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(source index int64 ``[out, K]``, int32 coefficients ``[out, K]``, precision bits) of
    the antialiased bilinear filter from ``in_size`` to ``out_size`` pixels."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0          # bilinear: half-width 1, widened when shrinking
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    starts, rows = [], []
    for i in range(out_size):
        center = scale * (i + 0.5)
        first = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - first
        w = np.maximum(1.0 - np.abs((np.arange(count) + first - center + 0.5) * invscale), 0.0)
        total = w.sum()
        starts.append(first)
        rows.append(w / total if total != 0 else w)
    width = max(len(r) for r in rows)
    weights = np.zeros((out_size, width))
    for i, r in enumerate(rows):
        weights[i, :len(r)] = r
    precision, largest = 0, weights.max()
    while precision < 22 and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    coefs = (weights * (1 << precision) + 0.5).astype(np.int32)   # truncation after +0.5: C's (int) cast
    index = np.minimum(np.asarray(starts)[:, None] + np.arange(width), in_size - 1)   # padding taps weigh 0
    return index, coefs, precision


def _resample(pixels: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One separable pass of :func:`resize_uint8` along ``axis`` (0: rows, 1: columns)."""
    index, coefs, precision = _taps(pixels.shape[axis], out_size)
    shape = [1] * pixels.ndim
    shape[axis] = out_size
    acc = np.full(pixels.shape[:axis] + (out_size,) + pixels.shape[axis + 1:], 1 << (precision - 1), dtype=np.int32)
    for k in range(index.shape[1]):
        acc += np.take(pixels, index[:, k], axis=axis).astype(np.int32) * coefs[:, k].reshape(shape)
    return np.clip(acc >> precision, 0, 255).astype(np.uint8)


def resize_uint8(pixels: np.ndarray, side: int) -> np.ndarray:
    """uint8 ``[H, W, C]`` -> uint8 ``[side, side, C]``, antialiased bilinear, equal to
    :func:`landmark.data.transforms.resize_uint8` (module docstring).

    Raises:
        ValueError: not a uint8 ``[H, W, C]`` array, or ``side`` < 1.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or side < 1:
        raise ValueError(f"resize_uint8 takes uint8 [H, W, C] and side >= 1, not {pixels.dtype} {pixels.shape}, {side}")
    if pixels.shape[1] != side:
        pixels = _resample(pixels, side, 1)
    if pixels.shape[0] != side:
        pixels = _resample(pixels, side, 0)
    return pixels


def eval_input(photos: list, preprocess: Preprocess) -> np.ndarray:
    """RGB PIL images -> float32 ``[N, 3, size, size]``: :func:`resize_uint8` to ``size``, scaled to
    [0, 1], normalised with ``mean`` / ``std``; the numpy twin of
    :meth:`Preprocess.transform(1) <landmark.data.preprocess.Preprocess.transform>` (equal within 1e-6)."""
    preprocess = Preprocess.of(preprocess)
    mean = np.asarray(preprocess.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(preprocess.std, dtype=np.float32).reshape(1, 3, 1, 1)
    pixels = np.stack([resize_uint8(np.asarray(photo.convert("RGB")), preprocess.size) for photo in photos])
    x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)
