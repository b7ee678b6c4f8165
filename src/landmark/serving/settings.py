"""Settings of ``landmark serve`` and their bounds: one home, importable without torch.

``landmark serve`` validates its options here before anything heavy loads (pydantic only),
so a setting that would hang the server (``--batch-window-ms inf``), answer every photo
alike (``--threshold 5``) or leave enrolment open (``--token ""``) is refused in one line.
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..retrieval.config import check_threshold

#: Longest micro-batching window, in milliseconds: every request may wait this long for others
#: to join its forward pass, so more than a second is a typing mistake (``1e9``, ``inf``).
MAX_BATCH_WINDOW_MS = 1000.0

#: Memory the requests in flight may hold together by default, in MB: their bodies and their
#: decoded pixels (:mod:`landmark.serving.budget`).  Beyond it a request gets 503 with ``Retry-After``.
MEMORY_BUDGET_MB = 512

#: Peak resident memory of one ``landmark serve`` process with the default settings and an
#: EfficientNet-Lite0 model, in MB: what docs/serving.md states and ``benchmarks/serve_load.py``
#: checks (50 clients posting photos, a few hostile uploads among them).
MEMORY_CEILING_MB = 2560

#: Threads that decode uploads (the forward pass has a thread of its own).
DECODERS = 2

#: Longest landmark name accepted at enrolment, in characters.
MAX_NAME_CHARS = 200


class ServeSettings(BaseModel):
    """What ``landmark serve`` is started with (besides the model and index paths).

    Attributes:
        host, port: where to listen (127.0.0.1: this machine only; port 0: a free one, shown at start-up).
        token: the enrolment password, visible ASCII (no spaces), or None: enrolment off.
        threshold: "no landmark" below this score, in [0, 1]; None: the model's.
        max_mb: largest request body, MB.  max_pixels: largest image (width x height) decoded.
        batch_window_ms: micro-batching window, 0 to :data:`MAX_BATCH_WINDOW_MS` ms.
        max_batch: photos per forward pass.
        memory_budget_mb: memory the requests in flight may hold (bodies + decoded pixels), MB.
        decoders: threads that decode uploads.
        threads: CPU threads of one forward pass (None: torch's default).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = None
    threshold: float | None = None
    max_mb: float = Field(20.0, gt=0, le=1024)
    max_pixels: int = Field(40_000_000, ge=1)
    batch_window_ms: float = Field(10.0, ge=0, le=MAX_BATCH_WINDOW_MS)
    max_batch: int = Field(16, ge=1, le=256)
    memory_budget_mb: float = Field(MEMORY_BUDGET_MB, ge=1)
    decoders: int = Field(DECODERS, ge=1, le=64)
    threads: int | None = Field(None, ge=1)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        return check_token(value)

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: float | None) -> float | None:
        return check_threshold(value)


#: the environment variable that may hold the enrolment token
TOKEN_ENV = "LANDMARK_TOKEN"


def check_token(token: str | None) -> str | None:
    """The enrolment token unchanged, or None (enrolment off).

    A token is compared byte for byte with what follows ``Bearer `` (``hmac.compare_digest``);
    HTTP strips spaces around a header value, so a token must be visible ASCII (``!`` to ``~``),
    which also refuses an empty or blank one (``--token ""`` would otherwise be matched by a
    header holding only a non-breaking space).

    Raises:
        ValueError: an empty token, or one with spaces, control or non-ASCII characters.
    """
    if token is None:
        return None
    if not token.strip():
        raise ValueError("the enrolment token is empty or blank: give a real one (--token-file, LANDMARK_TOKEN), "
                         "or none to keep enrolment off")
    bad = sorted({c for c in token if not "!" <= c <= "~"})
    if bad:
        raise ValueError(f"the enrolment token holds {', '.join(repr(c) for c in bad[:3])}: use visible ASCII "
                         f"characters without spaces (e.g. the output of `openssl rand -hex 24`)")
    return token


def read_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The token given directly, as the first line of ``token_file`` (which keeps it out of ``ps``)
    or in the environment variable :data:`TOKEN_ENV` (also when set but empty), checked.

    Raises:
        ValueError: both given; the token refused by :func:`check_token`.
        FileNotFoundError: ``token_file`` missing.
    """
    if token is not None and token_file is not None:
        raise ValueError("give the token once: --token (or LANDMARK_TOKEN) or --token-file")
    if token is None and token_file is None:
        token = os.environ.get(TOKEN_ENV)   # set but empty: refused below (click treats it as unset)
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise FileNotFoundError(f"token file {path} does not exist")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"token file {path} is empty: write the token on its first line")
    return check_token(token)


def settings(**values) -> ServeSettings:
    """:class:`ServeSettings` from keywords (None means the default), errors as one ``ValueError`` line.

    Raises:
        ValueError: ``--name: what is wrong (got value)`` for every bad setting.
    """
    from pydantic import ValidationError
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return ServeSettings(**given)
    except ValidationError as err:
        parts = []
        for e in err.errors():
            name = "--" + str(e["loc"][0]).replace("_", "-") if e["loc"] else "settings"
            message = str(e["msg"]).removeprefix("Value error, ")
            echo = name != "--token" and e["type"] != "value_error"   # a token is never echoed
            shown = f" (got {e['input']!r})" if echo else ""
            parts.append(f"{name}: {message}{shown}")
        raise ValueError("; ".join(parts)) from None

