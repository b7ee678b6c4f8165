"""The run's store of frozen-backbone descriptors: each photo and view passes the backbone once,
and what is reused equals what would have been computed (probe fit, validation, final fit)."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from landmark.config import Stage
from landmark.data import ImageDataset, collate
from landmark.data.transforms import eval_transform
from landmark.models import create_model
from landmark.training import trainer
from landmark.training.features import FeatureStore
from landmark.training.probe import fit_probe, refits_embedding


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """7 random 40x48 photos of 3 classes, and one file that is not an image."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(7):
        path = root / f"p{k}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        rows.append((f"p{k}", str(k % 3), str(path)))
    (root / "bad.jpg").write_text("not an image")
    rows.insert(3, ("bad", "0", str(root / "bad.jpg")))
    return pd.DataFrame(rows, columns=["id", "landmark_id", "path"])


@pytest.fixture()
def model():
    torch.manual_seed(0)
    net = create_model("test_efficientnet", 3, weights="none")
    net.freeze(-1)
    calls = []
    forward = net.forward_features
    net.forward_features = lambda x: (calls.append(len(x)), forward(x))[1]
    net.calls = calls   # images passed through the backbone, per call
    return net.eval()


def loader(model, frame, batch_size=3):
    transform = eval_transform(32, model.preprocess.mean, model.preprocess.std)
    targets = frame["landmark_id"].astype(int).to_numpy()
    return DataLoader(ImageDataset(frame, transform, targets=targets), batch_size=batch_size, collate_fn=collate)


def naive(model, data):
    """The descriptors as computed before the store: each batch and its mirror through the backbone."""
    feats, targets = [], []
    with torch.no_grad():
        for batch, _ in data:
            for view in (batch["image"], batch["image"].flip(3)):
                feats.append(model.head.pool(model.forward_features(view)))
                targets.append(batch["target"])
    order = list(range(0, len(feats), 2)) + list(range(1, len(feats), 2))
    return torch.cat([feats[i] for i in order]), torch.cat([targets[i] for i in order])


def test_each_photo_and_view_passes_the_backbone_once(model, photos):
    train, val = photos.iloc[:6], photos.iloc[6:]
    expected, expected_targets = naive(model, loader(model, train))
    model.calls.clear()
    store, rejects = FeatureStore(), {}
    x, y, index = store.pooled(model, loader(model, train), "cpu", rejects)
    assert sum(model.calls) == 2 * 5 and set(rejects) == {"bad"}          # 5 readable photos, 2 views
    assert torch.equal(x, expected) and torch.equal(y, expected_targets) and index.tolist() == [0, 1, 2, 4, 5]
    # the 2 validation photos (plain view), then every labelled photo with its mirror (the final fit)
    store.pooled(model, loader(model, val), "cpu", rejects, views=1)
    x, y, _ = store.pooled(model, loader(model, photos, batch_size=4), "cpu", rejects)
    assert sum(model.calls) == 2 * 5 + 2 + 2 and (store.computed, store.reused) == (14, 12)
    assert torch.equal(x, naive(model, loader(model, photos, batch_size=4))[0])
    assert x.shape == (14, model.backbone.num_features) and x.dtype == torch.float32 and len(y) == 14


def test_a_changed_backbone_or_transform_is_computed_again(model, photos):
    store = FeatureStore()
    store.pooled(model, loader(model, photos), "cpu", {})
    with torch.no_grad():
        next(model.backbone.parameters()).add_(0.1)
    model.calls.clear()
    x, _, _ = store.pooled(model, loader(model, photos), "cpu", {})
    assert sum(model.calls) == 2 * 7 and torch.equal(x, naive(model, loader(model, photos))[0])
    data = loader(model, photos)
    data.dataset.transform = eval_transform(40, model.preprocess.mean, model.preprocess.std)
    model.calls.clear()
    store.pooled(model, data, "cpu", {})
    assert sum(model.calls) == 2 * 7
    bounded = FeatureStore(max_bytes=3 * 4 * model.backbone.num_features)   # room for 3 photo views
    bounded.pooled(model, loader(model, photos), "cpu", {})
    assert len(bounded.rows) == 3


def test_probe_fit_and_validation_equal_the_path_without_store(model, photos):
    stage = Stage(probe=True, probe_iters=20, weight_decay=1e-3, label_smoothing=0.1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    plain = fit_probe(model, loader(model, photos), "cpu", {}, stage)
    fitted = {k: v.clone() for k, v in model.head.state_dict().items()}
    model.load_state_dict(start)
    store = FeatureStore()
    store.pooled(model, loader(model, photos), "cpu", {})
    model.calls.clear()
    assert fit_probe(model, loader(model, photos), "cpu", {}, stage, store) == plain
    assert model.calls == []
    for k, v in model.head.state_dict().items():
        torch.testing.assert_close(v, fitted[k], rtol=0, atol=0)
    rejects = {}
    with_store = trainer._probe_validation(model, loader(model, photos), "cpu", rejects, store)
    assert model.calls == [] and set(rejects) == {"bad"}
    assert with_store == trainer._epoch(model, loader(model, photos), "cpu", {})


def test_refits_embedding_says_whether_the_final_index_can_reuse_vectors():
    assert not refits_embedding(create_model("test_efficientnet", 3, weights="none"))   # GeM: the pooled descriptor
    assert refits_embedding(create_model("test_efficientnet", 3, weights="none", embedding_dim=8))   # neck
    model = create_model("test_efficientnet", 3, weights="none", head="fc")   # hidden FC layers
    model.freeze(-1)
    flags = [p.requires_grad for p in model.parameters()]
    assert refits_embedding(model) and flags == [p.requires_grad for p in model.parameters()]
