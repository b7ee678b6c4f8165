"""benchmarks/speed.py works: every measurement function on 2 real photos, 2 iterations.

No timing is asserted (speed figures live in docs/benchmarks.md); the counts of images
processed, the table arithmetic and the effect of freezing are.
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from landmark.models import backbone_layers

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
CPU = torch.device("cpu")
SIZE = 64  # pixels: small inputs keep the test fast


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op torch thread


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", SPEED)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(speed):
    torch.manual_seed(0)
    return speed.create_model("tf_efficientnet_lite0", speed.NUM_CLASSES, weights="none")


@pytest.fixture(scope="module")
def photos(speed, l13):
    return speed.load_photos(l13, 2)


def test_load_photos(photos, speed):
    assert list(photos.columns) == ["id", "path", "target"]
    assert len(photos) == 2
    assert all(Path(p).is_file() for p in photos["path"])
    assert photos["target"].between(0, speed.NUM_CLASSES - 1).all()


def test_bare_rows(speed, model):
    fwd = speed.bench_bare_forward(model, 2, SIZE, CPU, warmup=1, iters=2, min_seconds=0)
    assert (fwd.name, fwd.batch, fwd.images, fwd.reference) == ("bare forward b2", 2, 4, None)
    assert fwd.seconds > 0
    bwd = speed.bench_bare_backward(model, 2, SIZE, CPU, warmup=1, iters=2, min_seconds=0)
    assert (bwd.name, bwd.images) == ("bare forward+backward b2", 4)
    assert all(p.grad is None for p in model.parameters())  # gradients are not left behind


def test_train_rows_respect_freezing(speed, model, photos):
    layers = backbone_layers(model.backbone)
    bottom = [p.detach().clone() for p in layers[0][1].parameters()]
    top = [p.detach().clone() for p in layers[-1][1].parameters()]
    result = speed.bench_train(model, photos, SIZE, 60, CPU, batch=2, warmup=1, iters=2, workers=0)
    assert (result.name, result.batch, result.images, result.rejects) == ("train step freeze(60)", 2, 4, [])
    assert result.reference == "bare forward+backward b2"
    assert all(torch.equal(a, b) for a, b in zip(bottom, layers[0][1].parameters()))  # frozen: unchanged
    assert not all(torch.equal(a, b) for a, b in zip(top, layers[-1][1].parameters()))  # trained: changed
    assert model.frozen == 0  # the model is handed back unfrozen
    result = speed.bench_train(model, photos, SIZE, 0, CPU, batch=2, warmup=1, iters=2, workers=0)
    assert result.images == 4
    assert not all(torch.equal(a, b) for a, b in zip(bottom, layers[0][1].parameters()))


@pytest.mark.parametrize("batch,tta", [(1, 1), (2, 1), (2, 10)])
def test_predict_rows(speed, model, photos, batch, tta):
    result = speed.bench_predict(model, photos[["id", "path"]], SIZE, batch, tta, CPU, workers=0)
    assert (result.images, result.inputs_per_image, result.rejects) == (2, tta, [])
    assert result.reference == f"bare forward b{batch}"
    assert result.seconds > 0


def test_predict_rows_count_rejects(speed, model, photos, tmp_path):
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    queries = photos[["id", "path"]].copy()
    queries.loc[len(queries)] = ["empty", str(bad)]
    result = speed.bench_predict(model, queries, SIZE, 2, 1, CPU, warmup_images=0, workers=0)
    assert result.images == 2
    assert [(r.id, r.reason) for r in result.rejects] == [("empty", "empty file")]


def test_format_table_hand_computed(speed):
    rows = [speed.Result("bare forward b2", 2, 4, 2.0),  # 2 images/s, 500 ms/image
            speed.Result("train step freeze(0)", 2, 2, 2.0, reference="bare forward b2"),  # 1/s: 50%
            speed.Result("predict_images tta=10", 2, 1, 1.0, 10, "bare forward b2"),  # 1/s x 10 crops: 500%
            speed.Result("orphan", 2, 1, 1.0, reference="missing")]
    lines = speed.format_table(rows).splitlines()
    assert lines[2] == "| bare forward b2 | 2 | 4 | 2.0 | 500.0 | - | (reference) |"
    assert lines[3] == "| train step freeze(0) | 2 | 2 | 1.0 | 1000.0 | bare forward b2 | 50% |"
    assert lines[4].endswith("| bare forward b2 | 500% |")
    assert lines[5].endswith("| missing | n/a |")


def test_main_refuses_bad_arguments(speed):
    with pytest.raises(SystemExit) as err:
        speed.main(["--size", "8"])
    assert err.value.code == 2
