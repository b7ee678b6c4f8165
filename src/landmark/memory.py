"""Process memory settings for the command line and the service (standard library only).

Eager PyTorch on the CPU allocates and frees the activations of every forward pass (tens to
hundreds of MB at batch 32 and 224 px).  With glibc's defaults the freed memory goes back to
the operating system after each pass and is faulted in again by the next one, so most of the
time goes to the kernel: ``landmark predict`` with eager PyTorch over the 274 landmarks13 test
photos spent 14 to 19 s of system time against 18 to 24 s of user time.  Keeping up to
:data:`MALLOC_TOP_PAD` of freed memory at the top of the heap removed nearly all of it (system
1.7 s; wall clock 26 -> 16 s on 2 shared cores, same predictions; peak memory +0.1 to 0.4 GB).
ONNX Runtime has its own memory arena and is unaffected.
"""
from __future__ import annotations

import ctypes
import os
import sys

#: Bytes of freed memory glibc keeps mapped at the top of the heap (``M_TOP_PAD``); 64 and 256 MB
#: did not help in the measurement of the module docstring, 1 GiB did.
MALLOC_TOP_PAD = 1 << 30
_M_TOP_PAD = -2   # glibc's mallopt parameter number (malloc.h)


def keep_freed_memory(top_pad: int = MALLOC_TOP_PAD) -> bool:
    """Ask glibc's ``malloc`` to keep ``top_pad`` bytes of freed memory instead of returning it
    to the operating system after every batch (module docstring).

    Process-wide, so the CLI and the service call it at start-up; a library user may call it
    too.  The environment variable ``MALLOC_TOP_PAD_`` (glibc's own) wins when set.

    Returns:
        True when applied; False off Linux/glibc (e.g. macOS, musl) or when ``MALLOC_TOP_PAD_`` is set.
    """
    if sys.platform != "linux" or os.environ.get("MALLOC_TOP_PAD_") is not None:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_TOP_PAD, ctypes.c_int(min(int(top_pad), 2**31 - 1))))
    except (OSError, AttributeError):
        return False
