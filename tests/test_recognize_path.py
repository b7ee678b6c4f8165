"""One photo's path through ``Recognizer.load`` + ``recognize`` (docs/architecture.md): the
checkpoint is read once, however many stages look at it (index provenance, runtime choice)."""
from __future__ import annotations

import torch

from landmark import Recognizer
from landmark.models import factory


def test_one_recognize_reads_the_checkpoint_once(recognizer_run, recognizer_index, l13, monkeypatch):
    photo = sorted((l13 / "test").rglob("*.jpg"))[0]
    reads, loads = [], []
    real_file, real_torch_load = factory.load_checkpoint_file, torch.load
    monkeypatch.setattr(factory, "load_checkpoint_file", lambda *a, **k: reads.append(a[0]) or real_file(*a, **k))
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_torch_load(*a, **k))
    answer, = Recognizer.load(recognizer_run, index=recognizer_index).recognize(photo)
    assert reads == [recognizer_run / "checkpoints" / "best.pt"] and len(loads) == 1
    assert answer.source == str(photo) and answer.neighbours
