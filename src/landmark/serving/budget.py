"""An enforced memory budget for the requests in flight (``landmark serve``).

Each request reserves twice each chunk of its body as the chunk arrives (the chunks and the
joined body; a declared length reserves nothing, so a client that declares 20 MB and sends
10 bytes holds 20 bytes), and before it decodes an image, the memory that image needs to be
answered, from the width and height in its header (:func:`needed_bytes`): the decoded pixels
and the resize to the network's input, whose separable first pass holds ``side x longest
side`` values (a 1 x 39,000,000 PNG would need 60 GB there).  What is reserved is held
until the request is answered.  A reservation that does not fit in what the other requests
hold is refused at once with 503 and ``Retry-After`` instead of growing the process, so the
server's memory stays near model + budget however many clients call at once; one that can
never fit (more than the whole budget) gets 413.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..data.images import open_image
from .uploads import Refusal

#: Bytes held per decoded pixel: the decoded image in its own mode (up to 4), the RGB image the
#: model gets (3) while the batch waits, and the tensor copied from it for the resize (3),
#: counted from what a flat 6000 x 6600 PNG took (about 7 per pixel) and rounded up.
BYTES_PER_PIXEL = 8

#: Bytes per value of the resize's intermediate image (3 channels of float32).
BYTES_PER_RESIZED = 12

#: Seconds a client is asked to wait when the budget is full (``Retry-After``).
RETRY_AFTER_S = 1


@dataclass
class MemoryBudget:
    """``limit`` bytes shared by the requests in flight; ``held`` is what they hold now, ``refused`` counts 503s."""

    limit: int
    held: int = 0
    peak: int = 0
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"memory budget {self.limit} bytes: give at least 1")

    def reservation(self) -> "Reservation":
        return Reservation(self)

    def _take(self, n: int) -> bool:
        with self._lock:
            if self.held + n > self.limit:
                self.refused += 1
                return False
            self.held += n
            self.peak = max(self.peak, self.held)
            return True

    def _give(self, n: int) -> None:
        with self._lock:
            self.held -= n


class Reservation:
    """What one request holds of a :class:`MemoryBudget`; a context manager that gives it all back."""

    def __init__(self, budget: MemoryBudget):
        self.budget, self.held = budget, 0

    def take(self, n: int, what: str) -> None:
        """Reserve ``n`` more bytes for ``what`` (words for the message).

        Raises:
            Refusal: 503 (retry later) when the budget is full now, 413 when ``n`` exceeds the whole budget.
        """
        n = max(0, int(n))
        if n > self.budget.limit:
            raise Refusal(413, f"{what} needs {_mb(n)} of memory, more than the server's budget of "
                               f"{_mb(self.budget.limit)}: send a smaller image")
        if not self.budget._take(n):
            raise Refusal(503, f"the server is busy ({_mb(self.budget.held)} of {_mb(self.budget.limit)} "
                               f"held by requests in flight): retry in {RETRY_AFTER_S} s")
        self.held += n

    def give_back(self, n: int) -> None:
        """Return ``n`` of the bytes held (e.g. a body shorter than declared)."""
        n = max(0, min(int(n), self.held))
        self.budget._give(n)
        self.held -= n

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc) -> None:
        self.give_back(self.held)


def needed_bytes(data: bytes, side: int) -> int:
    """Memory the image in ``data`` needs to be decoded and resized to ``side`` x ``side`` pixels,
    from its header (nothing decoded): ``width x height x BYTES_PER_PIXEL`` plus
    ``side x max(width, height) x BYTES_PER_RESIZED``; 0 when Pillow cannot read the header
    (the decoder then refuses the upload and says why)."""
    try:
        with open_image(data) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 -- not an image: decode_upload says why
        return 0
    return width * height * BYTES_PER_PIXEL + side * max(width, height) * BYTES_PER_RESIZED


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**20:.2f} MB"
