"""Rows written to a .npy by positional writes (landmark.io.NpyRows): what is read back, what is
refused, and that writing embeddings does not keep the written file in memory."""
from pathlib import Path

import numpy as np
import pytest

from landmark.io import NpyRows
from landmark.retrieval.embeddings import _RowWriter


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024


def test_rows_written_in_any_order_read_back_as_a_npy(tmp_path):
    path = tmp_path / "v.npy"
    out = NpyRows(path, (5, 3), np.float16)
    out.write(3, np.array([[3.0, 3.5, 4.0], [5.0, 6.0, 7.0]]))
    out.write(0, np.array([[0.25, 1.0, 2.0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"rows 4..6 of shape \(2, 3\) do not fit a file of shape \(5, 3\)"):
        out.write(4, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="do not fit"):
        out.write(0, np.zeros((1, 4)))
    out.close()
    out.close()   # idempotent
    got = np.load(path)
    assert got.dtype == np.float16 and got.shape == (5, 3)
    assert got[0].tolist() == [0.25, 1.0, 2.0] and got[4].tolist() == [5.0, 6.0, 7.0]
    assert not got[1:3].any()   # never written: zeros of the sparse file


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmRSS from /proc")
def test_writing_embeddings_does_not_keep_them_in_memory(tmp_path):
    # 128 MB of float16 embeddings (1.6M photos: 4.1 GB): the writer's resident memory stays that
    # of one batch (through a memory map of the file every written page stayed resident: +128 MB)
    rows, dim, batch = 50_000, 1280, 5_000
    x = np.random.default_rng(0).normal(size=(batch, dim)).astype(np.float32)
    writer = _RowWriter(tmp_path / "e.npy", rows, "float16", classes=None, top_classes=0)
    before = _rss_bytes()
    for start in range(0, rows, batch):
        writer.store(x + start / rows, None, None, list(range(start, start + batch)))
    grown = _rss_bytes() - before
    writer.close()
    assert grown < 48 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB while writing 128 MB"
    got = np.load(tmp_path / "e.npy", mmap_mode="r")
    assert got.shape == (rows, dim) and writer.kept == list(range(rows))
    assert np.array_equal(got[45_001], (x[1] + 0.9).astype(np.float16))
