"""Issue 8: one model specification, one preprocessing contract, a head registry."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import landmark
from landmark.config import ModelConfig, load_config
from landmark.data.preprocess import Preprocess
from landmark.models import ModelSpec, create_model, list_heads, load_model, register_head, save_checkpoint
from landmark.models.factory import HEADS, backbone_layers
from landmark.models.heads import Head
from landmark.models.margin import dynamic_margins

L13 = Path(__file__).resolve().parents[2] / "shared" / "data" / "landmarks13"
TINY = "test_efficientnet"


def test_config_and_factory_share_every_default():
    spec_fields = set(ModelSpec.model_fields)
    assert set(ModelConfig.model_fields) == spec_fields | {"weights"}
    assert ModelConfig().spec == ModelSpec()
    model = create_model(TINY, 3, weights="none", loss="subcenter_arcface")
    assert model.head.subcenters == ModelSpec().subcenters == 3          # config default reaches the head
    assert create_model(TINY, 3, weights="none", loss="arcface").head.subcenters == 1


def test_margins_reach_the_head_from_create_model():
    spec = ModelSpec()
    model = create_model(TINY, 4, weights="none", loss="arcface")
    assert torch.allclose(model.head.margins, torch.full((4,), spec.margin_a + spec.margin_b))
    counted = create_model(TINY, 3, weights="none", loss="arcface", class_counts=[1, 16, 81])
    assert counted.head.margins.tolist() == pytest.approx([0.55, 0.30, 0.05 + 0.5 / 3], abs=1e-6)
    assert torch.equal(counted.head.margins, dynamic_margins([1, 16, 81]))


def test_unknown_spec_field_and_unregistered_head_are_one_line_errors():
    with pytest.raises(ValueError, match=r"gem_pp: unknown key \(did you mean gem_p\?\)"):
        create_model(TINY, 3, weights="none", gem_pp=2.0)
    with pytest.raises(ValueError, match="head 'nope' is not registered; choose one of fc, gem"):
        create_model(TINY, 3, weights="none", head="nope")


def test_registered_head_is_built_saved_and_reloaded(tmp_path):
    class CosineHead(Head):
        def __init__(self, channels: int, num_classes: int):
            super().__init__()
            self.fc = nn.Linear(channels, num_classes, bias=False)

        def pool(self, features):
            return features.mean((2, 3))

        def classify(self, pooled, pre_logits=False):
            return pooled if pre_logits else self.fc(nn.functional.normalize(pooled, dim=1))

    register_head("cosine")(lambda spec, channels, k, margins: CosineHead(channels, k))
    try:
        assert "cosine" in list_heads()
        model = create_model(TINY, 2, weights="none", head="cosine").eval()
        save_checkpoint(tmp_path / "c.pt", model, ["a", "b"])
        loaded, ckpt = load_model(tmp_path / "c.pt")
        x = torch.randn(1, 3, 64, 64)
        assert ckpt["spec"]["head"] == "cosine" and torch.allclose(loaded(x), model(x))
        with pytest.raises(ValueError, match="'cosine' is already registered"):
            register_head("cosine")(lambda spec, channels, k, margins: CosineHead(channels, k))
        with pytest.raises(ValueError, match="'gem' is already registered"):
            landmark.register_head("gem")
    finally:
        HEADS.pop("cosine")


def test_spec_is_resolved_against_the_backbone():
    model = create_model("tf_efficientnet_lite0", 2, weights="none")
    assert model.spec.head == "gem" and model.spec.input_size == 224
    assert model.spec.mean == (0.5, 0.5, 0.5)          # lite0's own normalisation, not ImageNet's default
    assert model.preprocess == {"size": 224, "resize": 256, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert create_model("vgg16", 2, weights="none").spec.head == "fc"


def test_checkpoint_saved_through_the_public_api_loads_and_predicts(tmp_path):
    model = create_model("tf_efficientnet_lite0", 2, weights="imagenet").eval()
    landmark.save_checkpoint(tmp_path / "m.pt", model, ["1", "2"])
    ckpt = torch.load(tmp_path / "m.pt", weights_only=False)
    assert ckpt["format"] == 2 and "arch" not in ckpt and ckpt["preprocess"]["size"] == 224
    photos = sorted((L13 / "test").rglob("*.jpg"))[:3]
    preds, rejects = landmark.predict(tmp_path / "m.pt", photos[0], workers=0)
    assert len(preds) == 1 and preds.loc[0, "landmark_id"] in ("1", "2") and not rejects


def test_format1_checkpoint_is_upgraded(tmp_path):
    model = create_model(TINY, 2, weights="none", dropout=0.0).eval()
    arch = {"backbone": TINY, "num_classes": 2, "head": "gem", "dropout": 0.0, "fc_dim": 256, "gem_p": 3.0,
            "mean": list(model.spec.mean), "std": list(model.spec.std), "loss": "softmax",
            "embedding_dim": None, "subcenters": 1, "arcface_s": 30.0}
    torch.save({"arch": arch, "classes": ["a", "b"], "state_dict": model.state_dict(),
                "preprocess": {"size": 64, "resize": 72, "mean": arch["mean"], "std": arch["std"]}}, tmp_path / "old.pt")
    loaded, ckpt = load_model(tmp_path / "old.pt")
    assert ckpt["format"] == 1 and loaded.preprocess.size == 64 and loaded.preprocess.resize == 72
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(loaded(x), model(x))


def test_freeze_by_count_fraction_and_block_name():
    model = create_model("tf_efficientnet_lite0", 2, weights="none")
    layers = backbone_layers(model.backbone)
    assert len(layers) == 98
    assert model.freeze(0.5) == 49
    n = model.freeze("blocks.2")
    assert layers[n - 1][0].startswith("blocks.2.") and layers[n][0].startswith("blocks.3.")
    assert all(not p.requires_grad for _, m in layers[:n] for p in m.parameters(recurse=False))
    with pytest.raises(ValueError, match="names no block of this backbone; its blocks, bottom first: conv_stem, bn1, blocks.0, "
                       "blocks.1, blocks.2, blocks.3, blocks.4, blocks.5, blocks.6, conv_head, bn2"):
        model.freeze("block.2")


def test_preprocess_contract():
    pre = Preprocess(size=224)
    assert pre.resize == 256 and dict(pre) == pre.to_dict() and Preprocess.of(dict(pre)) == pre
    assert pre.transform(1)(__import__("PIL.Image").Image.new("RGB", (300, 200))).shape == (3, 224, 224)
    assert pre.transform(10)(__import__("PIL.Image").Image.new("RGB", (300, 200))).shape == (10, 3, 224, 224)
    with pytest.raises(ValueError, match="need 1 <= size <= resize"):
        Preprocess(size=224, resize=200)
    with pytest.raises(ValueError, match="has no 'size'"):
        Preprocess.of({"mean": [0, 0, 0]})


def test_config_input_size_comes_from_the_last_crop_and_epochs_spare_probes():
    cfg = load_config("finetune", epochs=1)
    assert cfg.model.input_size == cfg.stages[-1].crop.size
    assert [s.epochs for s in cfg.stages if not s.probe] == [1] * sum(not s.probe for s in cfg.stages)
    assert all(s.epochs == 1 for s in cfg.stages if s.probe)
    with pytest.raises(ValueError, match="model.input_size 300 differs from the last stage's crop.size"):
        load_config("fast", {"model": {"input_size": 300}})
    with pytest.raises(ValueError, match="freeze"):
        load_config("fast", {"stages": [{"freeze": -2}]})



@pytest.mark.parametrize("overrides", [{}, {"embedding_dim": 8}, {"loss": "subcenter_arcface"}, {"head": "fc"}])
def test_logits_and_embedding_equal_forward_and_embed(overrides):
    model = create_model(TINY, 3, weights="none", **overrides).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, emb = model.logits_and_embedding(x)
        assert torch.allclose(logits, model(x), atol=1e-6) and torch.allclose(emb, model.embed(x), atol=1e-6)


def test_load_model_points_an_onnx_file_to_the_runtime(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07onnx")
    with pytest.raises(ValueError, match="is an ONNX export, not a PyTorch checkpoint: run it with "
                                         "landmark.models.load_runtime"):
        load_model(tmp_path / "model.onnx")


def test_head_constructors_take_their_defaults_from_the_spec():
    """One set of head defaults: the ModelSpec's (issue 20)."""
    import inspect

    from landmark.models.heads import FCHead, GeM, GeMHead
    from landmark.models.margin import ArcMarginHead
    spec = ModelSpec()
    wanted = {"dropout": spec.dropout, "p": spec.gem_p, "hidden": spec.fc_dim, "scale": spec.arcface_s,
              "embedding_dim": spec.embedding_dim, "margins": spec.margin_a + spec.margin_b,
              "a": spec.margin_a, "b": spec.margin_b, "power": spec.margin_power}
    for fn in (GeM, GeMHead, FCHead, ArcMarginHead, dynamic_margins):
        for name, param in inspect.signature(fn).parameters.items():
            if name in wanted:
                assert param.default == pytest.approx(wanted[name]) if wanted[name] is not None \
                    else param.default is None, f"{fn.__name__}({name}={param.default})"
    assert ArcMarginHead(8, 2).margins.tolist() == pytest.approx([0.55, 0.55])
