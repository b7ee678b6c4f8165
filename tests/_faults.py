"""Fault injection for crash-safety tests: kill a writer at its k-th file operation.

:func:`crash_points` runs ``write`` in a forked child once to count the file operations it
makes (opening a file for writing, ``os.open``, ``os.replace``/``rename``/``link``/``unlink``/
``remove``/``mkdir``/``rmdir``/``fsync``/``ftruncate``, ``shutil.rmtree``, ``np.save``,
``faiss.write_index``), then once per k = 1..count in a fresh child that ends with
``os._exit`` (no ``finally``, no clean-up: as ``kill -9``) just before its k-th operation.
After each crash the caller checks that the artifact loads and equals its old or its new
state.  Forking keeps each run to milliseconds (the parent's imports are shared); the child
runs one OpenMP/torch thread, as forked children must.
"""
from __future__ import annotations

import builtins
import io
import os
import shutil
import sys
from collections.abc import Callable, Iterator

CRASHED = 77   # exit status of a child killed by the fault
FAILED = 78    # exit status of a child whose write raised


def _writes(mode: str) -> bool:
    return any(c in mode for c in "wax+")


def _install(crash_at: int | None, counter: list[int]) -> None:
    """Patch the file operations in this (child) process: count each, exit before ``crash_at``."""
    import numpy as np

    def tick(name: str) -> None:
        counter[0] += 1
        if crash_at is not None and counter[0] >= crash_at:
            os._exit(CRASHED)

    def wrap(owner, attr, is_write=lambda *a, **k: True):
        real = getattr(owner, attr)

        def patched(*args, **kwargs):
            if is_write(*args, **kwargs):
                tick(attr)
            return real(*args, **kwargs)
        setattr(owner, attr, patched)

    def open_writes(file, mode="r", *args, **kwargs):
        return _writes(mode) if isinstance(mode, str) else False

    def os_open_writes(path, flags, *args, **kwargs):
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))

    real_open = builtins.open

    def patched_open(file, mode="r", *args, **kwargs):
        if open_writes(file, mode):
            tick("open")
        return real_open(file, mode, *args, **kwargs)
    builtins.open = io.open = patched_open
    wrap(os, "open", os_open_writes)
    for attr in ("replace", "rename", "link", "unlink", "remove", "mkdir", "rmdir", "fsync", "ftruncate"):
        wrap(os, attr)
    wrap(shutil, "rmtree")
    wrap(np, "save")
    if "faiss" in sys.modules:
        wrap(sys.modules["faiss"], "write_index")


def _child(write: Callable[[], None], crash_at: int | None) -> tuple[int, int]:
    """Run ``write`` in a forked child; returns (exit status, operations counted)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child
        os.close(read_fd)
        status = 0
        try:
            if "torch" in sys.modules:   # only what the parent loaded: importing here costs each child
                sys.modules["torch"].set_num_threads(1)
            if "faiss" in sys.modules:
                sys.modules["faiss"].omp_set_num_threads(1)
            counter = [0]
            _install(crash_at, counter)
            try:
                write()
            except BaseException:   # noqa: BLE001 - the parent sees FAILED
                import traceback
                traceback.print_exc()
                status = FAILED
            os.write(write_fd, str(counter[0]).encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        count = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), int(count or 0)


def count_operations(write: Callable[[], None]) -> int:
    """File operations one uninterrupted ``write`` makes (run in a child: this process is unchanged).

    Raises:
        AssertionError: the write failed.
    """
    status, count = _child(write, None)
    assert status == 0, f"the uninterrupted write failed (status {status})"
    return count


def crash_points(write: Callable[[], None]) -> Iterator[int]:
    """For k = 1..(operations of one write): run ``write`` in a child killed just before its
    k-th file operation, then yield k (the caller checks the artifact, then restores it if needed)."""
    total = count_operations(write)
    assert total > 0, "the write made no file operation: nothing was tested"
    for k in range(1, total + 1):
        status, _ = _child(write, k)
        assert status == CRASHED, f"crash point {k}/{total}: the child ended with {status}, not the crash"
        yield k
