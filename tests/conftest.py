import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
L13 = DATA / "landmarks13"
DIRTY = DATA / "dirty"


@pytest.fixture(scope="session")
def l13() -> Path:
    if not L13.is_dir():
        pytest.skip(f"real data missing: {L13}")
    return L13
