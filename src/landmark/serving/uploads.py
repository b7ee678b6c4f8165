"""Reading uploads safely: a byte cap while the body streams in, plain names, decoding by content.

Every refusal is an :class:`Refusal` carrying the HTTP status and a message for the
JSON body ``{"error": "..."}``; nothing a client sends is ever used as a path.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ..data import ImageError
from ..data.images import LIMIT_PREFIXES, probe
from ..data.names import first_hidden
from ..inference.recognizer import decode


class Refusal(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    """Upload limits.

    Every limit is checked before any pixel is decoded: the body while it streams in, the
    rest from the images' headers (also each image's side, aspect ratio and decoded bytes:
    :func:`landmark.data.images.check_shape`).  A 20 MB body of real JPEG photos holds
    about 60 Mpixel, so ``max_request_pixels`` only stops files that compress far better
    than photos (a 38 KB single-colour PNG of 6000 x 6600 px decodes to 119 MB).

    Attributes:
        max_bytes: request body size in bytes (all files together), checked while reading.
        max_pixels: width x height of one image, checked from its header before decoding.
        max_files: images per request.
        max_request_pixels: width x height of all the images of one request together (at
            least ``max_pixels``: one image within that limit always passes).
        body_seconds: time the whole body may take to arrive (408 after it). A client that
            declares 20 MB and then sends nothing held the memory reserved for its body for as
            long as it kept the connection open; 60 s is nginx's ``proxy_read_timeout`` default
            (a proxy in front buffers the body, so proxied uploads arrive at once).
    """

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    max_files: int = 16
    max_request_pixels: int = 100_000_000
    body_seconds: float = 60.0


# a file name is shown back to the client, never used to open anything; still, refuse
# names that only make sense as paths
_PLAIN_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")


async def read_body(request: Request, max_bytes: int, seconds: float | None = None,
                    arrived: Callable[[int], None] | None = None) -> bytes:
    """The request body, refusing (413) a declared or actual length above ``max_bytes``
    before reading past it (chunked bodies are counted as they stream in), and (408) a body
    still arriving after ``seconds``.  ``arrived(n)`` is called with each chunk's length
    before it is kept (the service reserves memory for what arrived, not for what a client
    declares: raising there stops the read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise Refusal(413, f"upload of {int(declared)} bytes is over the limit of {_mb(max_bytes)}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise Refusal(413, f"upload is over the limit of {_mb(max_bytes)}")
                if arrived is not None:
                    arrived(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise Refusal(408, f"the upload took over {seconds:g} s ({size} bytes arrived): send it again "
                           f"on a faster connection") from None
    return b"".join(chunks)


async def read_images(request: Request, limits: Limits, arrived: Callable[[int], None] | None = None
                      ) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """Uploaded images as ``(name, bytes)``: multipart fields named ``file`` (other text
    fields are returned as a dict), or the raw body (name ``upload``).

    Raises:
        Refusal: 413 too large, 400 empty / malformed / no ``file`` field / path-like
            file name, 400 more than ``limits.max_files`` images; from the images' headers,
            before any is decoded (:func:`check_headers`): 413 an image beyond a limit or
            all of them over ``limits.max_request_pixels``, 415 not an image, 400 corrupt.
    """
    body = await read_body(request, limits.max_bytes, limits.body_seconds, arrived)
    if not body:
        raise Refusal(400, "empty body: send an image as the multipart field 'file' or as the raw request body")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return [("upload", body)], {}

    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=limits.max_files,
                                     max_fields=32).parse()
    except MultiPartException as err:
        raise Refusal(400, f"malformed multipart body: {err}") from None
    files, fields = [], {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "file":
                raise Refusal(400, f"unexpected file field {key!r}: name the fields 'file'")
            name = value.filename or "upload"
            if not _PLAIN_NAME.match(name) or name in (".", ".."):
                raise Refusal(400, f"file name {name!r} looks like a path: send a plain file name")
            hidden = first_hidden(name)
            if hidden is not None:   # bidi overrides, zero-width and C1 characters would be echoed as `source`
                raise Refusal(400, f"file name {name!r} holds the control character {name[hidden]!r}: "
                                   f"send a file name of printable characters")
            files.append((name, await value.read()))
        else:
            fields[key] = str(value)
    if not files:
        raise Refusal(400, "no image: send one or more multipart fields named 'file'")
    if len(files) > limits.max_files:
        raise Refusal(400, f"{len(files)} images in one request; the limit is {limits.max_files}")
    check_headers(files, limits)
    return files, fields


def check_headers(files: list[tuple[str, bytes]], limits: Limits) -> int:
    """Read each upload's header (no pixel decoded) and refuse what would cost too much to decode.

    Returns:
        the request's pixels, width x height summed over its images.

    Raises:
        Refusal: 400 an empty file; 413 an image beyond a limit of
            :func:`landmark.data.images.check_shape` or ``limits.max_pixels``, or all images
            together over ``limits.max_request_pixels``; 415 not an image; 400 a corrupt header.
    """
    total = 0
    for name, data in files:
        if not data:
            raise Refusal(400, f"{name}: empty file")
        try:
            width, height = probe(data, limits.max_pixels)
        except ImageError as err:
            raise _refusal(name, err) from None
        total += width * height
    limit = max(limits.max_request_pixels, limits.max_pixels)   # one image within max_pixels always passes
    if total > limit:
        raise Refusal(413, f"{len(files)} images of {total / 1e6:.1f} Mpixel together: over the limit of "
                           f"{limit / 1e6:g} Mpixel per request; send fewer or smaller images")
    return total


def decode_upload(name: str, data: bytes, max_pixels: int, draft: int | None = None) -> Image.Image:
    """Decode one upload by content (:func:`landmark.inference.recognizer.decode`; a JPEG to at
    least ``draft`` pixels a side, as the recogniser decodes a file: the same answers).

    Raises:
        Refusal: 400 empty / truncated, 413 over ``max_pixels``, 415 not an image.
    """
    if not data:
        raise Refusal(400, f"{name}: empty file")
    try:
        return decode(data, max_pixels=max_pixels, draft=draft)
    except ImageError as err:
        raise _refusal(name, err) from None


def _refusal(name: str, err: ImageError) -> Refusal:
    """413 an image beyond a limit, 415 not an image, 400 anything else (corrupt, truncated)."""
    reason = str(err)
    status = 413 if reason.startswith(LIMIT_PREFIXES) else 415 if reason.startswith("not an image") else 400
    return Refusal(status, f"{name}: {reason}")


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"
