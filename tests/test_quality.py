"""The pieces of the quality recipe: lr schedule, probe stage, freezing by fraction, reference
confidence, the "no landmark" threshold, and a small real LP-FT run with its reference index."""
import os
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from landmark.config import Stage, load_config
from landmark.evaluation.metrics import rejection_threshold
from landmark.models import backbone_layers, create_model
from landmark.retrieval.knn import reference_confidence
from landmark.training.trainer import lr_factor


def test_cosine_schedule_with_warmup_on_known_steps():
    stage = Stage(epochs=2, schedule="cosine", warmup=0.25)
    # 8 steps in all: 2 warm-up steps at 1/3 and 2/3, then half a cosine from 1 down towards 0
    factors = [lr_factor(stage, 0, 8, t) for t in range(8)]
    assert factors[:2] == pytest.approx([1 / 3, 2 / 3])
    assert factors[2] == pytest.approx(1.0)
    assert factors[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert all(a > b for a, b in zip(factors[2:], factors[3:]))
    # the second epoch continues the same curve (offset = steps already taken)
    assert lr_factor(stage, 4, 8, 1) == pytest.approx(factors[5])
    assert [lr_factor(Stage(), 0, 10, t) for t in (0, 9)] == [1.0, 1.0]


def test_stage_rejects_bad_fractions_and_multi_epoch_probes():
    with pytest.raises(ValueError, match="fraction"):
        Stage(freeze=1.5)
    with pytest.raises(ValueError, match="epochs: 1"):
        Stage(probe=True, epochs=3)
    with pytest.raises(ValueError):
        Stage(lr=float("inf"))


def test_freeze_by_fraction_means_the_same_share_of_any_backbone():
    model = create_model("tf_efficientnet_lite0", 3, weights="none")
    layers = backbone_layers(model.backbone)
    assert model.freeze(0.5) == round(0.5 * len(layers)) == 49
    assert not any(p.requires_grad for _, m in layers[:49] for p in m.parameters(recurse=False))
    assert all(p.requires_grad for _, m in layers[49:] for p in m.parameters(recurse=False))
    # freeze_bn keeps every backbone BatchNorm in eval mode, trainable ones too
    model.freeze(0.5, freeze_bn=True)
    model.train()
    norms = [m for _, m in layers if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
    assert norms and not any(m.training for m in norms)
    assert any(p.requires_grad for m in norms for p in m.parameters())


def test_reference_confidence_on_hand_made_neighbours():
    labels = np.array(["a", "b", "c"])
    probs = np.array([0.9, 0.8, 0.5])
    sims = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.5, -0.2, -np.inf], [0.4, 0.3, 0.2, 0.1]])
    neighbours = np.array([["a", "a", "b", "a"], ["a", "b", "b", ""], ["a", "b", "a", "b"]])
    conf = reference_confidence(labels, probs, sims, neighbours, top=3, power=3)
    # a: top-3 same-label sims 0.9, 0.8, 0.6; b: 0.5 and a negative one (counts 0) and none; c: no neighbour
    assert conf == pytest.approx([0.9 * (2.3 / 3) ** 3, 0.8 * (0.5 / 3) ** 3, 0.0])
    with pytest.raises(ValueError):
        reference_confidence(labels, probs, sims[:2], neighbours[:2])


def test_rejection_threshold_makes_the_most_right_decisions():
    # two right answers above two wrong ones: cut in the middle of the gap
    assert rejection_threshold([0.9, 0.8, 0.3, 0.2], [True, True, False, False]) == pytest.approx(0.55)
    assert rejection_threshold([0.9, 0.8], [True, True]) == 0.0            # answer everything
    assert rejection_threshold([0.9, 0.8], [False, False]) > 0.9           # answer nothing
    # tie between accepting 1 and 3 answers: the wider gap (0.9-0.5 against 0.4-0.1) wins
    assert rejection_threshold([0.9, 0.5, 0.4, 0.1], [True, False, True, False]) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        rejection_threshold([0.5, float("nan")], [True, False])


@pytest.mark.slow
def test_probe_then_finetune_run_builds_an_index_and_thresholds(l13, tmp_path):
    """3 landmarks x 10 real photos: a probe stage fits the head (train loss falls far below
    chance), fine-tuning with a cosine schedule follows, the run gets its reference index."""
    from landmark.data import image_path, read_train
    from landmark.retrieval import reference as reference_module
    from landmark.retrieval.embeddings import load_embeddings
    from landmark.retrieval.index import LandmarkIndex
    from landmark.training import train
    root = tmp_path / "tree"
    frame = read_train(l13)
    for lid in ("2", "5", "9"):
        (root / lid).mkdir(parents=True)
        for image_id in frame[frame["landmark_id"] == lid]["id"].iloc[:10]:
            (root / lid / f"{image_id}.jpg").symlink_to(image_path(l13, image_id))
    config = load_config("fast", {
        "data": {"cache_width": 96, "batch_size": 8, "workers": 0, "val_frac": 0.3, "test_frac": 0.0,
                 "final_fit": False},
        "stages": [{"name": "probe", "probe": True, "weight_decay": 1e-3, "probe_iters": 50,
                    "crop": {"resize": 80, "size": 80}},
                   {"name": "finetune", "epochs": 1, "lr": 1e-4, "backbone_lr_scale": 0.5, "schedule": "cosine",
                    "warmup": 0.2, "freeze": 0.7, "freeze_bn": True, "label_smoothing": 0.1,
                    "crop": {"p_start": 0.5, "p_end": 0.5, "resize": 88, "size": 80}}]})
    run = tmp_path / "run"
    best = train(config, root, run)
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["stage"].tolist() == ["probe", "finetune"]
    assert metrics["frozen_layers"].tolist() == [98, round(0.7 * 98)]
    assert metrics.loc[0, "train_loss"] < 0.5 * math.log(3)       # the probe fitted the head
    assert metrics.loc[0, "train_images"] == 21 and metrics.loc[0, "val_images"] == 9
    index = LandmarkIndex.load(run / "index")
    assert len(index) == 21 and set(index.labels) == {"2", "5", "9"}
    from landmark.models.runtime import file_sha256   # the index records best.pt as it is after the thresholds
    assert index.meta["model"]["sha256"] == file_sha256(best) and index.meta["model"]["image_size"] == 80
    reference = json.loads((run / "reference.json").read_text())
    assert reference["validation_queries"] == 9
    stored = torch.load(best, weights_only=False)["reject_threshold"]
    assert set(stored) == {"classifier", "reference"} and 0.0 <= stored["classifier"] <= 1.0
    # the recogniser of the run folder scores by reference with the stored threshold
    from landmark import Recognizer
    rec = Recognizer.load(run)
    assert rec.scoring == "reference" and rec.threshold == stored["reference"]
    photo = str(image_path(l13, frame[frame["landmark_id"] == "5"]["id"].iloc[20]))
    answer, = rec.recognize(photo)
    plain = Recognizer.load(run, index=False)
    alone, = plain.recognize(photo)
    assert plain.scoring == "classifier" and plain.threshold == stored["classifier"]
    # the same classifier answer, its confidence confirmed (lowered) by the reference photos
    assert answer.landmark_id == alone.landmark_id and 0.0 < answer.score < alone.score


#: A probe-only fast run with final_fit on 64 px inputs (the two tests below).
FINAL_FIT_PROBE = {"data": {"cache_width": 80, "workers": 0, "val_frac": 0.25, "final_fit": True},
                   "stages": [{"name": "probe", "probe": True, "weight_decay": 1e-3, "probe_iters": 30,
                               "crop": {"resize": 72, "size": 64}}]}


def _two_landmarks(l13, root):
    """Landmarks 1 and 6 of landmarks13, 8 real photos each, as a folder-per-class tree (symlinks)."""
    from landmark.data import image_path, read_train
    frame = read_train(l13)
    for lid in ("1", "6"):
        (root / lid).mkdir(parents=True)
        for image_id in frame[frame["landmark_id"] == lid]["id"].iloc[:8]:
            (root / lid / f"{image_id}.jpg").symlink_to(image_path(l13, image_id))
    return root


@pytest.mark.slow
def test_final_fit_refits_the_probe_on_every_labelled_photo(l13, tmp_path, monkeypatch):
    """A probe-only run with data.final_fit: thresholds are chosen on validation first, then the
    head is refitted on train + validation photos and the index holds all of them, with the
    vectors already computed for the first index and the validation queries."""
    from landmark.retrieval import reference as reference_module
    from landmark.retrieval.embeddings import load_embeddings
    from landmark.retrieval.index import LandmarkIndex
    from landmark.training import train
    root = _two_landmarks(l13, tmp_path / "tree")
    config = load_config("fast", FINAL_FIT_PROBE)
    embedded = []   # photos passed through embed_images: the final index reuses the first index and queries
    embed = reference_module.embed_images
    monkeypatch.setattr(reference_module, "embed_images", lambda model, pre, frame, *a, **k: (
        embedded.append(len(frame)), embed(model, pre, frame, *a, **k))[1])
    best = train(config, root, tmp_path / "run")
    reference = json.loads((tmp_path / "run" / "reference.json").read_text())
    ckpt = torch.load(best, weights_only=False)
    assert ckpt["final_fit"]["images"] == 16 and len(LandmarkIndex.load(tmp_path / "run" / "index")) == 16
    assert reference["validation_queries"] == 4 and reference["final_fit"] and reference["count"] == 16
    assert ckpt["reject_threshold"] == reference["reject_threshold"]
    assert embedded == [12, 4]
    # the copied vectors are those of embedding every labelled photo again with the refitted checkpoint
    shutil.copytree(tmp_path / "run", tmp_path / "again")
    reference_module.build_reference(tmp_path / "again", workers=0, splits=("train", "val"),
                                     thresholds=ckpt["reject_threshold"])
    assert embedded == [12, 4, 16]
    copied, fresh = (load_embeddings(tmp_path / run / "index" / "embeddings" / "train.npy") for run in ("run", "again"))
    pd.testing.assert_frame_equal(copied.items, fresh.items)
    np.testing.assert_allclose(copied.vectors, fresh.vectors, atol=1e-3)
    with pytest.raises(ValueError, match="last stage must have probe"):
        load_config("finetune", {"data": {"final_fit": True}})


def _one_and_two_processes(l13, tmp_path, overrides: dict) -> tuple[dict, dict]:
    """The best checkpoints of `fast` with ``overrides`` trained on two landmarks by one process
    (``tmp_path/one``) and by `landmark train` under torchrun, 2 CPU processes (gloo; ``tmp_path/two``)."""
    import subprocess
    import sys

    import yaml

    from landmark.training import train
    root = _two_landmarks(l13, tmp_path / "tree")
    single = torch.load(train(load_config("fast", overrides), root, tmp_path / "one"), weights_only=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(load_config("fast", overrides).model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "landmark.cli", "train", "--data", str(root), "--config", str(config),
                             "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return single, torch.load(tmp_path / "two" / "checkpoints" / "best.pt", weights_only=False)


def test_probe_under_torchrun_fits_every_photo_like_one_process(l13, tmp_path):
    """torchrun, 2 CPU processes (gloo): the probe is fitted on the descriptors of every training
    photo, gathered from both ranks (it was fitted on rank 0's half), and the final refit on rank 0
    reads every labelled photo (it read rank 0's shard): the head equals one process's."""
    single, ddp = _one_and_two_processes(l13, tmp_path, FINAL_FIT_PROBE)
    assert ddp["final_fit"]["images"] == single["final_fit"]["images"] == 16
    assert ddp["history"][0]["train_images"] == single["history"][0]["train_images"] == 12
    # the same fit up to the batch-dependent last bits of the descriptors, which L-BFGS amplifies in
    # the parameters (bias 3e-3 apart) but not in what the head does: its losses agree to 1e-4
    assert ddp["final_fit"]["train_loss"] == pytest.approx(single["final_fit"]["train_loss"], abs=1e-4)
    assert ddp["history"][0]["train_loss"] == pytest.approx(single["history"][0]["train_loss"], abs=1e-4)
    assert ddp["history"][0]["val_gap"] == pytest.approx(single["history"][0]["val_gap"], abs=1e-6)
    for name, value in single["state_dict"].items():
        if name.startswith("head."):
            torch.testing.assert_close(ddp["state_dict"][name], value, atol=1e-2, rtol=0)


def test_streaming_probe_under_torchrun_fits_like_one_process(l13, tmp_path):
    """torchrun, 2 CPU processes (gloo), the streaming probe fit forced: each rank writes its shard's
    descriptors, rank 0 joins them into one file in one process's row order, the ranks fit on their
    slices of it, and rank 0 alone refits on every labelled photo after (it used to be refused under
    torchrun, and the final refit hung waiting for the other ranks): the losses and heads agree with
    one process's (the joined file's row order: test_head_fit)."""
    from landmark.training.head_fit import FeatureFile
    streamed = {**FINAL_FIT_PROBE, "stages": [{**FINAL_FIT_PROBE["stages"][0], "probe_fit": "stream"}]}
    single, ddp = _one_and_two_processes(l13, tmp_path, streamed)
    assert ddp["history"][0]["train_fit"] == single["history"][0]["train_fit"] == "stream"
    assert ddp["history"][0]["train_images"] == single["history"][0]["train_images"] == 12
    # rank 0's final refit on all 16 photos streamed in one process (it waited for ranks that had left)
    assert ddp["final_fit"]["images"] == single["final_fit"]["images"] == 16
    assert ddp["final_fit"]["fit"] == single["final_fit"]["fit"] == "stream"
    assert ddp["final_fit"]["train_loss"] == pytest.approx(single["final_fit"]["train_loss"], abs=1e-3)
    assert not list((tmp_path / "two" / "features").glob("*rank*"))   # the shards' files are gone
    assert len(FeatureFile.open(tmp_path / "two" / "features" / "probe.npy")) == 32
    assert ddp["history"][0]["train_loss"] == pytest.approx(single["history"][0]["train_loss"], abs=1e-3)
    assert ddp["history"][0]["val_gap"] == pytest.approx(single["history"][0]["val_gap"], abs=1e-6)
    for name, value in single["state_dict"].items():
        if name.startswith("head."):
            torch.testing.assert_close(ddp["state_dict"][name], value, atol=1e-2, rtol=0)


def test_accurate_preset_is_fast_at_320_px():
    """`accurate` changes only the input size (and the resize/cache widths that follow it) of `fast`."""
    fast, accurate = load_config("fast").model_dump(), load_config("accurate").model_dump()
    assert accurate["stages"][0]["crop"]["size"] == 320 and accurate["stages"][0]["crop"]["resize"] == 366
    assert accurate["data"]["cache_width"] == 412 and accurate["model"]["input_size"] == 320
    for part in (fast, accurate):
        part["stages"][0].pop("crop")
        part["data"].pop("cache_width")
        part["model"].pop("input_size")
    assert accurate == fast
