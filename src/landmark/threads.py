"""How idle compute threads wait: a start-up setting for the command line and the service
(standard library only; it must run before PyTorch loads its OpenMP runtime).

PyTorch's intra-op threads (GNU OpenMP, ``libgomp``) busy-wait for the next parallel region
before they sleep: 300,000 spins by default (``GOMP_SPINCOUNT``, libgomp manual, section
"Environment Variables").  When images are decoded by threads beside the network
(``predict``, ``embed`` and the recogniser on the CPU, ``data.dataset.ThreadedBatches``),
each decoding thread's resize runs its own small OpenMP team, whose idle threads then spin
on the cores the network needs.  With :data:`SPIN_COUNT` spins instead (a tenth), measured
on 2 cores over the 274 landmarks13 test photos at batch 32 (docs/runtime.md):

- ONNX Runtime fp32 end to end: 14.6 to 15.1 -> 13.7 to 14.2 ms of CPU per photo, 128 to
  134 -> 137 to 143 photos/s; decoding alone (a network that returns at once): 2.9 to 3.6
  -> 2.0 to 2.8 ms per photo;
- eager PyTorch forward at batch 1 and 32: unchanged (55 to 57 and 83 to 87 images/s in
  three interleaved rounds each), whereas ``OMP_WAIT_POLICY=PASSIVE`` (no spinning at all)
  cost 22% at batch 1.

ONNX Runtime's own threads do not use OpenMP (they never spin: ``models/runtime.py``).
"""
from __future__ import annotations

import os
import sys

#: Busy-wait spins of an idle OpenMP thread before it sleeps (libgomp's default: 300,000).
SPIN_COUNT = 30_000


def spin_less(spin_count: int = SPIN_COUNT) -> bool:
    """Set ``GOMP_SPINCOUNT`` to ``spin_count`` for this process (module docstring).

    Call it before ``import torch``: libgomp reads its environment once, when it is loaded.
    The user's own ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` wins.

    Returns:
        True when set in time; False when either variable was already set, or when torch is
        already imported (too late: nothing is changed then).
    """
    if "torch" in sys.modules or any(os.environ.get(v) is not None for v in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")):
        return False
    os.environ["GOMP_SPINCOUNT"] = str(int(spin_count))
    return True
