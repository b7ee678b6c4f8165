"""Process memory settings for the command line and the service (standard library only).

Eager PyTorch on the CPU allocates and frees the activations of every forward pass (tens to
hundreds of MB at batch 32 and 224 px).  With glibc's defaults the freed memory goes back to
the operating system after each pass and is faulted in again by the next one, so most of the
time goes to the kernel: ``landmark predict`` with eager PyTorch over the 274 landmarks13 test
photos spent 14 to 19 s of system time against 18 to 24 s of user time.  Two glibc settings
keep freed memory for the next batch:

- ``M_TOP_PAD`` = :data:`MALLOC_TOP_PAD`: the heap grows, and is trimmed back, with this much
  to spare, so a batch's activations are carved from memory already mapped (64 and 256 MB
  did not help at 224 px and batch 32, 1 GiB did): system time 1.7 s, wall clock 26 -> 16 s
  on 2 shared cores, the same predictions, peak memory +0.1 to 0.4 GB;
- ``M_MMAP_MAX`` = 0: no allocation gets its own ``mmap`` (which ``free`` unmaps at once);
  without it, a process whose heap top was taken by other work (the benchmark's ONNX export
  before its eager rows) still fell back to mapping each large activation: eager forward at
  batch 32 ran at 17 images/s there against 72 to 74 with both settings.

ONNX Runtime has its own memory arena and is unaffected.  The cost: memory freed in the
middle of the heap is reused but not returned to the system until the process ends.
"""
from __future__ import annotations

import ctypes
import os
import sys

#: Bytes of freed memory glibc keeps mapped at the top of the heap (``M_TOP_PAD``); 64 and 256 MB
#: did not help in the measurement of the module docstring, 1 GiB did.
MALLOC_TOP_PAD = 1 << 30
_M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -2, -4, -8   # glibc's mallopt parameter numbers (malloc.h)


def keep_freed_memory(top_pad: int = MALLOC_TOP_PAD) -> bool:
    """Ask glibc's ``malloc`` to keep freed memory for the next batch instead of returning it to
    the operating system (``M_TOP_PAD`` = ``top_pad`` bytes, ``M_MMAP_MAX`` = 0; module docstring).

    Process-wide, so the CLI and the service call it at start-up; a library user may call it
    too.  glibc's own environment variables ``MALLOC_TOP_PAD_`` / ``MALLOC_MMAP_MAX_`` win when set.

    Returns:
        True when applied; False off Linux/glibc (e.g. macOS, musl) or when either variable is set.
    """
    if sys.platform != "linux" or any(os.environ.get(v) is not None for v in ("MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_TOP_PAD, ctypes.c_int(min(int(top_pad), 2**31 - 1)))
                    and libc.mallopt(_M_MMAP_MAX, ctypes.c_int(0)))
    except (OSError, AttributeError):
        return False


def limit_arenas(arenas: int) -> bool:
    """Let at most ``arenas`` glibc malloc arenas exist (``M_ARENA_MAX``), as a long-running
    service with many threads should: glibc gives a thread that finds the arenas busy a new one
    (up to 8 per core), each arena keeps what it freed (``M_TOP_PAD`` is per arena: the module
    docstring), so threads that each allocated once hold that memory forever.  Call before the
    threads start; arenas already made stay.  glibc's ``MALLOC_ARENA_MAX`` wins when set.

    Returns:
        True when applied; False off Linux/glibc or when ``MALLOC_ARENA_MAX`` is set.

    Raises:
        ValueError: ``arenas`` below 1.
    """
    if arenas < 1:
        raise ValueError(f"arenas {arenas}: give at least 1")
    if sys.platform != "linux" or os.environ.get("MALLOC_ARENA_MAX") is not None:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, ctypes.c_int(int(arenas))))
    except (OSError, AttributeError):
        return False
