"""ArcFace / sub-center ArcFace heads with dynamic margins, projection neck, config and training."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from landmark.config import ModelConfig, load_config
from landmark.models import create_model, load_model, save_checkpoint
from landmark.models.margin import ArcMarginHead, add_angular_margin, class_counts, dynamic_margins

os.environ["HF_HUB_OFFLINE"] = "1"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
L13 = DATA / "landmarks13"


def _unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def _head_2d(centres: list[float], num_classes: int, subcenters: int, margins, scale: float = 10.0) -> ArcMarginHead:
    """Head over 2-d embeddings whose class centres sit at the given angles (radians)."""
    head = ArcMarginHead(2, num_classes, None, subcenters, scale, torch.tensor(margins), 0.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([_unit(a) for a in centres]) * 3.0)   # norm must not matter
    return head


def test_dynamic_margins_known_values():
    m = dynamic_margins([1, 16, 81, 10_000, 0], a=0.5, b=0.05, power=0.25)
    expected = [0.55, 0.05 + 0.5 / 2, 0.05 + 0.5 / 3, 0.05 + 0.5 / 10, 0.55]   # 0 counts as 1
    assert m.dtype == torch.float32
    assert m.tolist() == pytest.approx(expected, abs=1e-6)
    assert dynamic_margins([3, 300], a=0.0, b=0.4).tolist() == pytest.approx([0.4, 0.4])   # a=0: fixed margin
    with pytest.raises(ValueError):
        dynamic_margins([], 0.5, 0.05)
    with pytest.raises(ValueError):
        dynamic_margins([3], -0.1, 0.05)


def test_class_counts_follow_class_order():
    assert class_counts(["2", "10", "2", "x"], ["2", "5", "10"]).tolist() == [2, 0, 1]


def test_target_logit_is_s_cos_theta_plus_m():
    head = _head_2d([0.0, math.pi / 2], 2, 1, [0.3, 0.1], scale=10.0)
    emb = torch.tensor([_unit(0.5), _unit(0.5), _unit(3.0)]) * 7.0   # theta_0 = 0.5, theta_1 = pi/2 - 0.5
    logits = head.scale * head.cosine(emb)
    assert logits[0].tolist() == pytest.approx([10 * math.cos(0.5), 10 * math.cos(math.pi / 2 - 0.5)], abs=1e-5)
    out = head.margin_logits(logits, torch.tensor([0, 1, 0]))
    assert out[0].tolist() == pytest.approx([10 * math.cos(0.5 + 0.3), 10 * math.cos(math.pi / 2 - 0.5)], abs=1e-5)
    assert out[1].tolist() == pytest.approx([10 * math.cos(0.5), 10 * math.cos(math.pi / 2 - 0.5 + 0.1)], abs=1e-5)
    # theta_0 = 3.0 > pi - 0.3: cos(theta + m) would increase again; ArcFace uses cos(theta) - m sin(m)
    assert out[2, 0].item() == pytest.approx(10 * (math.cos(3.0) - 0.3 * math.sin(0.3)), abs=1e-5)


def test_subcenter_takes_the_max_over_k_centres():
    # class 0 centres at 0, 2, 4 rad; class 1 at 1, 3, 5 rad; embedding at 0.9 rad
    head = _head_2d([0.0, 2.0, 4.0, 1.0, 3.0, 5.0], 2, 3, [0.2, 0.2])
    cos = head.cosine(torch.tensor([_unit(0.9)]))
    assert cos[0].tolist() == pytest.approx([math.cos(0.9), math.cos(0.1)], abs=1e-6)
    # the margin is applied to the closest sub-centre's angle
    out = head.margin_logits(head.scale * cos, torch.tensor([1]))
    assert out[0, 1].item() == pytest.approx(10 * math.cos(0.1 + 0.2), abs=1e-5)


def test_fixed_margin_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(0)
    head = ArcMarginHead(16, 5, None, 3, 20.0, 0.35, 0.0)
    ref = pml.SubCenterArcFaceLoss(num_classes=5, embedding_size=16, margin=math.degrees(0.35), scale=20.0,
                                   sub_centers=3)
    with torch.no_grad():
        ref.W.copy_(head.weight.t())
    emb, y = torch.randn(12, 16), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    ours = F.cross_entropy(head.margin_logits(head.scale * head.cosine(emb), y), y)
    assert ours.item() == pytest.approx(ref(emb, y).item(), rel=1e-5)


def test_add_angular_margin_leaves_other_columns():
    cos = torch.tensor([[0.2, 0.5, -0.1]])
    out = add_angular_margin(cos, torch.tensor([1]), torch.tensor([0.0, 0.4, 0.0]))
    assert out[0, [0, 2]].tolist() == pytest.approx([0.2, -0.1])
    assert out[0, 1].item() == pytest.approx(math.cos(math.acos(0.5) + 0.4), abs=1e-6)


def test_neck_embedding_dim_and_inference_logits():
    model = create_model("tf_efficientnet_lite0", 4, weights="none", loss="subcenter_arcface", subcenters=3,
                         embedding_dim=32, arcface_s=16.0, class_counts=[5, 10, 20, 40]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        emb, logits = model.embed(x), model(x)
    assert emb.shape == (2, 32) and logits.shape == (2, 4)
    assert logits.abs().max().item() <= 16.0 + 1e-4          # s * cos, no margin at inference
    assert model.head.weight.shape == (12, 32)
    softmax = create_model("tf_efficientnet_lite0", 4, weights="none", embedding_dim=24).eval()
    with torch.no_grad():
        assert softmax.embed(x).shape == (2, 24)
        logits = softmax(x)
    assert torch.equal(softmax.loss_logits(logits, torch.tensor([0, 1])), logits)   # softmax: no margin
    model.train()
    model(torch.randn(1, 3, 64, 64))   # batch of one through BatchNorm1d must not fail in training


def test_config_fields_and_validation():
    cfg = load_config("arcface")
    assert (cfg.model.loss, cfg.model.subcenters, cfg.model.embedding_dim) == ("subcenter_arcface", 3, 512)
    assert cfg.model.head == "gem" and cfg.model.margin_a > 0
    assert ModelConfig().loss == "softmax"
    with pytest.raises(ValueError):
        ModelConfig(loss="arcface", head="fc")
    with pytest.raises(ValueError):
        ModelConfig(loss="cosface")
    with pytest.raises(ValueError):
        create_model("tf_efficientnet_lite0", 3, weights="none", head="fc", loss="arcface")


def test_arcface_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    margins = dynamic_margins([3, 30, 300])
    model = create_model("tf_efficientnet_lite0", 3, weights="none", loss="subcenter_arcface", subcenters=2,
                         embedding_dim=16, arcface_s=12.0, class_counts=[3, 30, 300]).eval()
    path = tmp_path / "arc.pt"
    save_checkpoint(path, model, ["a", "b", "c"], preprocess={"size": 64, "resize": 72, "mean": model.arch["mean"],
                                                               "std": model.arch["std"]})
    loaded, ckpt = load_model(path)
    assert ckpt["arch"]["loss"] == "subcenter_arcface" and ckpt["arch"]["embedding_dim"] == 16
    assert loaded.head.subcenters == 2 and loaded.head.scale == 12.0
    assert torch.equal(loaded.head.margins, margins)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
        assert torch.allclose(loaded.embed(x), model.embed(x), atol=1e-6)


@pytest.mark.slow
def test_short_arcface_training_lowers_the_loss(tmp_path):
    from landmark.training import train
    # 3 landmarks x 6 real photos as a folder-per-class tree of symlinks (no copies)
    noise = set(pd.read_csv(L13 / "known_noise.csv", dtype=str)["id"])
    frame = pd.read_csv(L13 / "train.csv", dtype=str)
    frame = frame[~frame["id"].isin(noise) & frame["landmark_id"].isin(["1", "4", "12"])]
    root = tmp_path / "data"
    for label, group in frame.groupby("landmark_id"):
        (root / label).mkdir(parents=True)
        for i in group["id"].head(6):
            (root / label / f"{i}.jpg").symlink_to(L13 / "train" / i[0] / i[1] / i[2] / f"{i}.jpg")
    cfg = load_config("arcface", {
        "data": {"val_frac": 0.3, "test_frac": 0.0, "cache_width": 128, "batch_size": 6, "workers": 0},
        "model": {"loss": "arcface", "embedding_dim": 64},
        "augment": {"hflip": 0.0, "rotation": 0.0, "translate": 0.0, "scale": [1.0, 1.0]},
        "stages": [{"name": "head", "epochs": 3, "lr": 1e-2, "freeze": -1,
                    "crop": {"p_start": 0.0, "p_end": 0.0, "resize": 96, "size": 96}}]})
    best = train(cfg, root, tmp_path / "run", device="cpu")
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    losses = [row["train_loss"] for row in history]
    assert losses[-1] < 0.7 * losses[0], losses
    model, ckpt = load_model(best)
    assert ckpt["arch"]["loss"] == "arcface" and model.embed(torch.randn(2, 3, 96, 96)).shape == (2, 64)
    # dynamic margins from the training split's class counts
    split = pd.read_csv(tmp_path / "run" / "split.csv", dtype=str)
    n = split[split["split"] == "train"].groupby("landmark_id").size().reindex(ckpt["classes"]).to_numpy()
    assert n.sum() < 18   # some images went to validation
    assert model.head.margins.tolist() == pytest.approx((0.5 * n ** -0.25 + 0.05).tolist(), abs=1e-6)
