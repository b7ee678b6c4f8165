"""The streaming head fit under torch.distributed: 2 gloo processes, each reading its slice of
every chunk of one FeatureFile, with summed gradients, fit the head one process fits."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from landmark.models.heads import GeMHead
from landmark.training.head_fit import FeatureFile, FeatureWriter, fit_stream

TOLERANCE = 1e-4   # max |W_2 ranks - W_1 process|: only the order of float32 sums differs
SETTINGS = (64, 5)   # 12 classes: full softmax, then sampled softmax (5 columns or the minibatch's classes)


def _tiny(path, rows=600, classes=12, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(classes, dim))
    y = rng.integers(0, classes, size=rows)
    x = (centres[y] + rng.normal(size=(rows, dim))).astype(np.float32)
    writer = FeatureWriter(path, rows, dim)
    writer.add(x, y, np.zeros(rows), [f"i{k}" for k in range(rows)])
    return writer.finish()


def _fit(path, classes, sampled_above):
    torch.manual_seed(0)
    head = GeMHead(FeatureFile.open(path).dim, classes)
    # chunks of 250 rows (odd slices per rank), minibatches of 64 crossing the slice borders
    stats = fit_stream(head, FeatureFile.open(path), classes, epochs=2, batch=64, lr=1e-2, weight_decay=1e-4,
                       label_smoothing=0.1, sampled_above=sampled_above, chunk=250)
    return head, stats


def _worker(rank, world, port, path, classes, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for sampled_above in SETTINGS:
            head, stats = _fit(path, classes, sampled_above)
            if rank == 0:
                torch.save({"w": head.fc.weight.detach(), "b": head.fc.bias.detach(), "loss": stats["loss"],
                            "ranks": stats["ranks"], "steps": stats["steps"]}, out / f"{sampled_above}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow   # starts two processes that import torch (a minute under load here)
def test_two_gloo_ranks_fit_the_head_one_process_fits(tmp_path):
    classes = 12
    path = tmp_path / "f.npy"
    _tiny(path, classes=classes)
    mp.spawn(_worker, args=(2, _free_port(), path, classes, tmp_path), nprocs=2, join=True)
    for sampled_above in SETTINGS:
        _check(path, classes, sampled_above, torch.load(tmp_path / f"{sampled_above}.pt", weights_only=True))


def _check(path, classes, sampled_above, two):
    one, stats = _fit(path, classes, sampled_above)
    assert stats["ranks"] == 1 and stats["steps"] == 2 * (4 + 4 + 2)   # chunks of 250, 250, 100 rows
    assert two["ranks"] == 2 and two["steps"] == stats["steps"]
    assert torch.allclose(two["w"], one.fc.weight, atol=TOLERANCE, rtol=0)
    assert torch.allclose(two["b"], one.fc.bias, atol=TOLERANCE, rtol=0)
    assert two["loss"] == pytest.approx(stats["loss"], abs=1e-5)
    # and the epochs did something: the head moved far beyond the tolerance from its class-mean start
    start = GeMHead(16, classes)   # the class-mean start alone (no epochs)
    fit_stream(start, FeatureFile.open(path), classes, epochs=0, batch=64, lr=1e-2, weight_decay=1e-4,
               label_smoothing=0.1, sampled_above=sampled_above, chunk=250)
    assert float((one.fc.weight - start.fc.weight).detach().abs().max()) > 100 * TOLERANCE
