"""Image decoding by content: any format Pillow reads, EXIF orientation, RGB.

The file extension is never trusted (GLDv2 and web-scraped sets hold WebP and
AVIF files named ``.jpg``); Pillow identifies the format from the bytes.
"""
from __future__ import annotations

import functools
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

# Limits that bound the work a file can ask for, whatever its size on disk; all are checked
# from the header, before any pixel is decoded (check_shape).  A real photo never reaches them:
# a 100-Mpixel camera (11,648 x 8,736) and a 1:8 phone panorama pass.
MAX_PIXELS = 120_000_000            # width x height: a decompression bomb (20,000 x 20,000 px) is refused
MAX_SIDE = 30_000                   # pixels along either side
MAX_ASPECT = 20                     # long side / short side; the resize of 1 x 39,000,000 px asked for 26 GB
MAX_DECODED_BYTES = 480 * 10**6     # the decoded pixels in the file's own mode (120 Mpixel x 4 bytes)
#: How the reason of an image refused by one of these limits starts (:func:`check_shape`): the
#: service answers it 413, a download records it as it is.
LIMIT_PREFIXES = ("too large", "aspect ratio")
# Pillow's own bomb check (a warning from 89.5 Mpixel on) would refuse photos under
# MAX_PIXELS; it is moved to MAX_PIXELS, which load_image checks itself.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)


#: Formats Pillow reads that are never opened: the size an ICO or ICNS header declares is not
#: the size of the PNG it holds (Pillow decodes an ICO's image while opening it, a 0.9 MB
#: "16 x 16" ICO decoded to 900 MB before any limit was checked), and EPS runs Ghostscript,
#: an external interpreter, on the file.  No camera or web photo comes in these.
REFUSED_FORMATS = frozenset({"ICO", "ICNS", "EPS"})


@functools.cache
def _formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in Image.OPEN if f not in REFUSED_FORMATS)


def open_image(source: str | Path | bytes | BinaryIO) -> Image.Image:
    """``Image.open`` (lazy: the header only) of the formats this package reads (all Pillow
    reads but :data:`REFUSED_FORMATS`); ``source`` as :func:`load_image` takes it.

    Raises:
        PIL.UnidentifiedImageError: not an image, or a refused format; as ``Image.open`` otherwise.
    """
    return Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source, formats=_formats())

EXIF_ORIENTATION = 0x0112   # EXIF tag: how the camera was turned (1: upright)


class ImageError(Exception):
    """An image file could not be decoded; ``str(err)`` is the reason for reject reports."""


def check_shape(width: int, height: int, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose decoding or resizing would cost more than a photo can.

    Args:
        width, height: pixels, as the file's header declares them.
        mode: Pillow mode of the decoded pixels (bytes per pixel: ``L`` 1, ``RGB`` 3, ``RGBA`` 4...).
        max_pixels: width x height limit (:data:`MAX_PIXELS`; the service passes its own).

    Raises:
        ImageError: a side of 0 or over :data:`MAX_SIDE`, an aspect ratio over :data:`MAX_ASPECT`:1,
            over ``max_pixels``, or over :data:`MAX_DECODED_BYTES` decoded; the message starts
            with one of :data:`LIMIT_PREFIXES` ("aspect ratio" for a too narrow or too wide
            image, "too large" for the others) and names the limit.
    """
    if width < 1 or height < 1:
        raise ImageError(f"not an image: {width}x{height} pixels")
    if max(width, height) > MAX_SIDE:
        raise ImageError(f"too large: {width}x{height} pixels, a side over the limit of {MAX_SIDE} px")
    if max(width, height) > MAX_ASPECT * min(width, height):
        ratio, digits = max(width, height) / min(width, height), 2
        while round(ratio, digits) <= MAX_ASPECT and digits < 9:   # 20001x1000 is 20.001:1, not 20:1
            digits += 1
        ratio = f"{ratio:.{digits}f}".rstrip("0").rstrip(".")      # 20000x1 is 20000:1 (was 2e+04:1)
        raise ImageError(f"aspect ratio {ratio}:1 over the limit of {MAX_ASPECT}:1: {width}x{height} pixels is too "
                         f"{'wide' if width > height else 'tall'} (long side / short side; a panorama up to "
                         f"{MAX_ASPECT}:1 is read)")
    if width * height > max_pixels:
        raise ImageError(f"too large: {width}x{height} pixels (limit {max_pixels})")
    decoded = width * height * _bytes_per_pixel(mode)
    if decoded > MAX_DECODED_BYTES:
        raise ImageError(f"too large: {width}x{height} pixels of mode {mode} decode to {decoded / 1e6:.0f} MB "
                         f"(limit {MAX_DECODED_BYTES / 1e6:.0f} MB)")


def probe(source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` of an image from its header alone, after :func:`check_shape`.

    Raises:
        ImageError: as :func:`load_image`, without decoding any pixel.
    """
    if isinstance(source, (str, os.PathLike)):
        _check_regular_file(source)
    try:
        with open_image(source) as img:
            check_shape(img.width, img.height, img.mode, max_pixels)
            return img.width, img.height
    except Exception as err:  # noqa: BLE001 - any decoder's error is a reason, never a crash
        raise _reason(err, source) from None


def load_image(path: str | Path | bytes | BinaryIO, draft: int | None = None,
               max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image file (or its bytes) by content and return it upright in RGB.

    JPEG, PNG, WebP, AVIF, GIF (first frame), BMP, TIFF and the rest of what Pillow
    reads but :data:`REFUSED_FORMATS`; EXIF orientation applied; transparency composited onto white; 16-bit
    greyscale scaled to 8 bits (a plain ``convert('RGB')`` would clip it); CMYK,
    palette and greyscale converted to RGB.

    Args:
        path: image file, its content as ``bytes``, or a binary file object (an upload);
            a file's extension is ignored.
        draft: optional pixels; lets the JPEG decoder shrink by a power of two
            while keeping both sides >= ``draft`` (faster decoding of large photos).
        max_pixels: width x height above which the image is refused before decoding
            (the header is read, the pixels are not).

    Raises:
        ImageError: the file is missing, not a regular file (a folder, FIFO or device,
            which could block forever), empty, not an image, truncated, corrupt (whatever the
            decoder raises: ``RuntimeError`` of a damaged AVIF, ``NotImplementedError`` of an odd
            DDS...), or beyond a limit of :func:`check_shape` (checked from the header); the
            message says which.
    """
    if isinstance(path, (str, os.PathLike)):
        _check_regular_file(path)
    try:
        # No warnings.catch_warnings() here: it swaps process-wide filters and is not thread-safe
        # (decoding threads, the service's pool); the size check below refuses what Pillow's
        # bomb warning (moved to MAX_PIXELS above) would have flagged.
        with open_image(path) as img:
            check_shape(img.width, img.height, img.mode, max_pixels)
            img.seek(0)  # first frame of GIF / animated WebP
            if draft and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except Exception as err:  # noqa: BLE001 - any decoder's error is a reject with a reason, never a crash
        raise _reason(err, path) from None


def _refused_kind(source) -> str | None:
    """Which of :data:`REFUSED_FORMATS` the first bytes of ``source`` announce (Pillow's own
    format check on 16 bytes; nothing is decoded), else None."""
    try:
        if isinstance(source, (bytes, bytearray)):
            head = bytes(source[:16])
        elif isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                head = f.read(16)
        else:
            at = source.tell()
            source.seek(0)
            head = source.read(16)
            source.seek(at)
    except (OSError, AttributeError, ValueError):
        return None
    Image.init()
    return next((kind for kind in sorted(REFUSED_FORMATS)
                 if kind in Image.OPEN and Image.OPEN[kind][1] and Image.OPEN[kind][1](head)), None)


def _reason(err: Exception, source) -> ImageError:
    """The :class:`ImageError` for whatever opening or decoding ``source`` raised."""
    if isinstance(err, ImageError):
        return err
    if isinstance(err, FileNotFoundError):
        return ImageError("file not found")
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError(f"too large: {err}")
    if isinstance(err, Image.UnidentifiedImageError):
        if _size(source) == 0:
            return ImageError("empty file")
        kind = _refused_kind(source)
        return ImageError(f"not an image (a {kind} file: {', '.join(sorted(REFUSED_FORMATS))} are refused)" if kind
                          else "not an image (unidentified format)")
    if isinstance(err, MemoryError):
        return ImageError("too large: out of memory while decoding")
    detail = " ".join(str(err).split())[:160]
    if isinstance(err, (OSError, SyntaxError, ValueError, EOFError)):
        return ImageError(f"corrupt or truncated: {detail}")
    return ImageError(f"corrupt or undecodable ({type(err).__name__}: {detail})")


def _bytes_per_pixel(mode: str) -> int:
    """Bytes of one decoded pixel in Pillow ``mode`` (4 when unknown: the largest common one)."""
    try:
        return max(1, Image.getmodebands(mode) * (2 if ";16" in mode else 4 if mode in ("I", "F") else 1))
    except (KeyError, ValueError):
        return 4


def load_uint8(path: str | Path, draft: int | None = None, max_pixels: int = MAX_PIXELS):
    """:func:`load_image` as a uint8 tensor ``[3, H, W]`` (RGB), what the evaluation resize takes.

    A JPEG in colour (YCbCr) or greyscale that ``draft`` would not shrink (a side under
    twice ``draft``) and that no EXIF tag rotates is decoded by TorchCodec's libjpeg-turbo
    straight into the tensor: the same pixels as Pillow's (tested; all 274 photos of
    landmarks13/test are identical) without Pillow's 4-bytes-per-pixel image and its copy
    into a tensor, which saves about 0.5 ms of CPU per 500 x 400 photo, a sixth of what
    decoding costs beside an ONNX Runtime forward pass (docs/runtime.md).  Every other file,
    any the fast path cannot decode, and every file when TorchCodec cannot be loaded (it is
    built for particular torch versions) go through :func:`load_image`, so rejects and their
    reasons are the same.

    Args:
        path: an image file (any format :func:`load_image` reads).
        draft, max_pixels: as :func:`load_image`.

    Raises:
        ImageError: as :func:`load_image`.
    """
    import torch
    _check_regular_file(path)
    decode_jpeg = _torchcodec_jpeg()
    if decode_jpeg is not None:
        try:
            data = Path(path).read_bytes()
            with open_image(data) as img:   # the header only
                check_shape(img.width, img.height, img.mode, max_pixels)
                plain = (img.format == "JPEG" and img.mode in ("RGB", "L")
                         and not (draft and min(img.width, img.height) >= 2 * draft)
                         and img.getexif().get(EXIF_ORIENTATION, 1) == 1)
            if plain:
                return decode_jpeg(data, mode="RGB")
        except Exception:   # noqa: BLE001 - anything odd in the file: load_image decodes it or says what is wrong
            pass
    return torch.from_numpy(np.array(load_image(path, draft=draft, max_pixels=max_pixels))).permute(2, 0, 1)


@functools.cache
def _torchcodec_jpeg():
    """TorchCodec's ``decode_jpeg``, or None where it does not load (another torch version)."""
    try:
        from torchcodec.decoders import decode_jpeg
    except Exception:   # noqa: BLE001 - ImportError, or its C++ library refusing this torch (OSError, RuntimeError)
        return None
    return decode_jpeg


def _size(source) -> int:
    """Bytes in a file, a bytes object or a seekable file object (0 when unknown)."""
    if isinstance(source, (bytes, bytearray)):
        return len(source)
    if isinstance(source, (str, Path)):
        return Path(source).stat().st_size if Path(source).exists() else 0
    try:
        return source.seek(0, io.SEEK_END)
    except (AttributeError, OSError, ValueError):
        return 0


def _check_regular_file(path: str | os.PathLike) -> None:
    """Raise :class:`ImageError` unless ``path`` is a regular file (a FIFO would block forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as err:
        raise ImageError(f"unreadable ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise ImageError(f"not a regular file ({kind})")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def resize_to_width(img: Image.Image, width: int) -> Image.Image:
    """Shrink so the width is at most ``width`` pixels, keeping aspect (never enlarges)."""
    if img.width <= width:
        return img
    height = max(1, round(img.height * width / img.width))
    return img.resize((width, height), Image.Resampling.LANCZOS)
