"""How ``landmark download`` fetches and stores (:class:`DownloadOptions`), in a module of
its own so that the command line takes its defaults from here without importing
requests, pandas or torch."""
from __future__ import annotations

from dataclasses import dataclass

#: Server of the official GLDv2 shards (https://github.com/cvdfoundation/google-landmark).
GLDV2_BASE_URL = "https://s3.amazonaws.com/google-landmark"


@dataclass
class DownloadOptions:
    """How to fetch and store (:func:`landmark.data.download.download_csv`,
    :func:`landmark.data.gldv2_shards.download_shards`).

    Attributes:
        max_width: pixels; wider images are shrunk to this width (aspect kept) and
            re-encoded as JPEG; ``0`` keeps every original byte for byte.
        workers: concurrent downloads (threads; for shards: threads decoding members).
        connect_timeout: seconds to establish a connection.
        timeout: seconds one attempt may take from request to last byte (a slow drip
            counts as a timeout too).
        retries: further attempts after a retryable failure (timeouts, connection
            errors, truncated bodies, HTTP 408/425/429/5xx); 404 and the like are final.
        backoff: seconds; retry k (1-based) waits ``backoff * 2**(k-1)`` plus up to 25 %
            jitter, or the server's ``Retry-After`` (capped at 60 s) when larger.
        rate_per_host: requests per second to one host name, ``0`` = unlimited.
        max_bytes: bodies larger than this are refused ("too large"); not for shards.
        max_redirects: redirects followed per request.
        jpeg_quality: quality of re-encoded (resized) JPEGs.
        split: folder under OUT (``train``, ``index``, ``test``).
        base_url: where the official GLDv2 shards live (``{split}/images_NNN.tar``,
            ``md5sum/...``); only for shards.

    Raises:
        ValueError: a split that is not ``train``, ``index`` or ``test``, a negative rate
            or backoff, or ``max_bytes`` <= 0.
    """

    max_width: int = 256
    workers: int = 16
    connect_timeout: float = 10.0
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    rate_per_host: float = 10.0
    max_bytes: int = 50 * 2**20
    max_redirects: int = 5
    jpeg_quality: int = 90
    split: str = "train"
    base_url: str = GLDV2_BASE_URL

    def __post_init__(self) -> None:
        if self.split not in ("train", "index", "test"):  # a folder name: never a path out of OUT
            raise ValueError(f"split {self.split!r}: use train, index or test")
        if self.rate_per_host < 0 or self.backoff < 0 or self.max_bytes <= 0:
            raise ValueError("rate_per_host and backoff must be >= 0 and max_bytes > 0")
