"""Defects found by attacking the CPU decoding threads, the uint8 resize, the batch
normalisation and ``export --fp32-blocks`` (each test failed before its fix)."""
import threading
import time

import pytest
import torch


class _SlowDataset:
    """``n`` items that take ``delay`` seconds each to "decode"; item ``bad`` raises."""

    def __init__(self, n: int, delay: float, bad: int | None = None):
        self.n, self.delay, self.bad = n, delay, bad
        self.started, self.lock = 0, threading.Lock()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        with self.lock:
            self.started += 1
        time.sleep(self.delay)
        if i == self.bad:
            raise RuntimeError(f"decoder bug on item {i}")
        return {"image": torch.zeros(1), "target": torch.tensor(-1), "index": i}


def test_threaded_batches_drop_the_rest_of_a_batch_when_a_decode_raises():
    """A decode that raises (or Ctrl-C while the caller waits for a photo) used to wait for
    every other photo of the batch being collected to decode: that batch had left the queue of
    pending batches, so its futures were never cancelled (batch 200, 1 thread, 50 ms per
    photo: 10 s before the error came out; with GLDv2 batches, minutes after Ctrl-C)."""
    from landmark.data.dataset import ThreadedBatches
    before, photos = threading.active_count(), _SlowDataset(400, 0.05, bad=0)
    with pytest.raises(RuntimeError, match="decoder bug"):
        for _ in ThreadedBatches(photos, batch_size=200, threads=1):
            pass
    assert photos.started <= 3      # item 0, then at most the decode already running (was: all 200)
    assert threading.active_count() == before


def test_threaded_batches_drop_the_rest_of_a_batch_on_keyboard_interrupt():
    import _thread
    import signal
    from landmark.data.dataset import ThreadedBatches
    before, photos = threading.active_count(), _SlowDataset(400, 0.02)
    # interrupt_main() raises KeyboardInterrupt only through Python's own SIGINT handler, which a
    # library used earlier in the same process may have replaced (then it does nothing): set it here
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            for _ in ThreadedBatches(photos, batch_size=200, threads=1):
                pass
    finally:
        timer.join()
        signal.signal(signal.SIGINT, old)
    assert photos.started < 150     # interrupted after ~15 decodes; the rest dropped (was: all 200 first)
    assert threading.active_count() == before


def test_a_huge_fp32_blocks_selects_the_kept_convolutions_at_once():
    """``--fp32-blocks 1000000000`` (any count above the backbone's blocks keeps them all)
    used to test each convolution name against every ``/blocks.K/`` for K below the count:
    a billion string tests for each convolution outside the blocks (``conv_head``), minutes
    before quantisation even started."""
    from landmark.inference.export import fp32_convolutions
    convs = ["/conv_stem/Conv", "/blocks/blocks.0/blocks.0.0/conv_dw/Conv", "/blocks/blocks.1/blocks.1.0/conv_pw/Conv",
             "/blocks/blocks.10/blocks.10.0/conv_pw/Conv", "/conv_head/Conv"]
    assert fp32_convolutions(convs, 10**12) == convs[:4]     # the old loop over K would not return    assert fp32_convolutions(convs, 0) == convs[:1]
    assert fp32_convolutions(convs, 1) == convs[:2]
    assert fp32_convolutions(convs, 2) == convs[:3]      # blocks.10 is not blocks.1
    assert fp32_convolutions(convs, 11) == convs[:4]
    assert fp32_convolutions(["/layer1/conv1/Conv", "/layer1/conv2/Conv"], 3) == ["/layer1/conv1/Conv"]  # no blocks
