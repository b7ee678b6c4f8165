"""``landmark serve`` as one library call: settings checked, port bound, model loaded, uvicorn run.

Importable without torch: every setting (:mod:`landmark.serving.settings`) and the port are
checked before the model loads, so a bad one costs a fraction of a second and one line.
"""
from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path

from ..models.runtime_info import DEFAULT_RUNTIME
from .settings import ServeSettings, read_token, settings as check_settings

#: glibc malloc arenas of the service (:func:`landmark.memory.limit_arenas`): the event loop, the
#: decoding threads and the forward thread share them instead of one arena per thread.
SERVICE_ARENAS = 2


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (what uvicorn then serves on).

    Raises:
        ValueError: the port is in use, the address is not this machine's, or binding is not allowed.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn does: a TIME_WAIT port is free
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:   # socket.gaierror (an unknown host name) included
        sock.close()
        reason = {errno.EADDRINUSE: "is in use by another program: stop it or choose another --port",
                  errno.EACCES: "needs privileges (ports below 1024): choose a port of 1024 or more",
                  errno.EADDRNOTAVAIL: "is not an address of this machine: give one of its addresses, e.g. "
                                       "127.0.0.1 or 0.0.0.0"}.get(err.errno, f"cannot be opened ({err.strerror})")
        raise ValueError(f"{host}:{port} {reason}") from None
    return sock


def serve(model: str | Path, *, index: str | Path | None = None, nonlandmarks: str | Path | None = None,
          token: str | None = None, token_file: str | Path | None = None, device: str | None = None,
          runtime: str = DEFAULT_RUNTIME, announce: Callable[[str], None] = print, ready: Callable | None = None,
          retrieval_index: str | Path | None = None, **options) -> None:
    """Serve ``model`` over HTTP until interrupted (the ``landmark serve`` command).

    Args:
        model: run folder, ``.pt`` or ``.onnx``; its own ``RUN/index`` scores answers, but
            enrolment needs ``index`` (a folder outside the run: the run is never written).
        index: index folder for kNN scores, nearest photos and enrolment.
        retrieval_index: another index folder that ``POST /v1/retrieve`` searches instead, with the
            model(s) it records (:meth:`Recognizer.use_retrieval_index`: an ensemble or ``--max-side``
            index, or an archive of unlabelled photos); recognition and enrolment keep ``index``.
        token, token_file: enrolment password, given directly or as the first line of a file
            (keeps it out of ``ps``); neither: enrolment off.
        announce: receives the start-up line (which says whether enrolment is on).
        ready: called with the :class:`uvicorn.Server` before it runs (tests stop it through this).
        options: :class:`~landmark.serving.settings.ServeSettings` fields (host, port, threshold,
            max_mb, max_pixels, batch_window_ms, max_batch, memory_budget_mb, decoders, threads);
            None means the default.

    Raises:
        ValueError: a setting out of range, a blank token, a port in use, a model or index refused.
        FileNotFoundError: a missing model, index, non-landmark folder or token file.
    """
    chosen: ServeSettings = check_settings(**options, token=read_token(token, token_file))
    sock = bind(chosen.host, chosen.port)   # before the model loads: a port in use is one line at once
    try:
        from ..memory import limit_arenas
        limit_arenas(SERVICE_ARENAS)
        import torch
        import uvicorn

        from ..inference.recognizer import Recognizer
        from .app import create_app
        from .uploads import Limits
        if chosen.threads is not None:
            torch.set_num_threads(chosen.threads)
        rec = Recognizer.load(model, index=index, nonlandmarks=nonlandmarks, threshold=chosen.threshold,
                              device=device, runtime=runtime, threads=chosen.threads)
        if retrieval_index is not None:
            rec.use_retrieval_index(retrieval_index, runtime=runtime, threads=chosen.threads)
        app = create_app(rec, token=chosen.token, index_dir=index, window=chosen.batch_window_ms / 1000,
                         max_batch=chosen.max_batch, memory_budget_mb=chosen.memory_budget_mb,
                         decoders=chosen.decoders,
                         limits=Limits(max_bytes=int(chosen.max_mb * 2**20), max_pixels=chosen.max_pixels))
        enrolment = ("enrolment on (POST /v1/landmarks/ID/images with the token)" if chosen.token and index
                     else "enrolment off (start with --index DIR to enrol)" if chosen.token
                     else "enrolment off (no token)")
        port = sock.getsockname()[1]   # the one chosen by the system for --port 0
        known = len(set(rec.classes) | set(rec.index.labels)) if rec.index is not None else len(rec.classes)
        searched = (f"; /v1/retrieve searches {retrieval_index} ({len(rec.retrieval.index)} photos)"
                    if rec.retrieval is not None else "")
        announce(f"landmark: {known} landmarks ({len(rec.classes)} classifier classes), {rec.scoring} scoring; http://{chosen.host}:{port}/ "
                 f"(API docs at /docs); {enrolment}; at most {chosen.memory_budget_mb:g} MB of requests in flight"
                 f"{searched}")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        if ready is not None:
            ready(server)
        server.run(sockets=[sock])
    finally:
        sock.close()
