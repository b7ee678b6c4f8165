"""`landmark export` killed at any file operation leaves the old model or the new one at --out,
and the work folder of a killed export is removed by the next export."""
import json
import os
import shutil

import onnx
import pandas as pd
import pytest
import torch

from _faults import crash_points
from landmark.inference.export import clear_dead_work, export_onnx
from landmark.models import create_model, save_checkpoint
from landmark.models.runtime import METADATA_KEY, OnnxRuntime, file_sha256

PREPROCESS = {"size": 32, "resize": 36, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two(l13, tmp_path_factory):
    """Two tiny checkpoints, 2 real photos, and an export of the first."""
    work = tmp_path_factory.mktemp("export")
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        save_checkpoint(work / name, create_model("test_efficientnet", 3, weights="none").eval(), ["x", "y", "z"],
                        preprocess=PREPROCESS)
    files = sorted((l13 / "test").rglob("*.jpg"))[:2]
    pd.DataFrame({"id": [f.stem for f in files], "path": [str(f) for f in files]}).to_csv(work / "p.csv", index=False)
    export_onnx(work / "a.pt", work / "model.onnx", images=work / "p.csv", verify_images=2, threads=1)
    return work


def exported_from(path) -> str:
    """SHA-256 of the checkpoint the export at ``path`` came from (after checking it runs)."""
    OnnxRuntime(path, 1)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props[METADATA_KEY])["checkpoint_sha256"]


@pytest.mark.slow   # one tiny export per file operation: 13-20 s on 2 shared cores
def test_export_killed_at_every_step_leaves_the_old_or_the_new_model(two):
    work = two
    old, new = file_sha256(work / "a.pt"), file_sha256(work / "b.pt")
    pristine = (work / "model.onnx").read_bytes()

    def write():
        export_onnx(work / "b.pt", work / "model.onnx", images=work / "p.csv", verify_images=2, threads=1,
                    overwrite=True)
    seen = []
    for k in crash_points(write):
        seen.append(exported_from(work / "model.onnx"))
        assert seen[-1] in (old, new), f"crash before file operation {k}"
        (work / "model.onnx").write_bytes(pristine)
    assert set(seen) == {old, new}
    left = list(work.glob(".model.onnx.*"))
    assert left, "the killed exports left work folders (kill -9 runs no clean-up)"
    write()   # the next export removes them
    assert exported_from(work / "model.onnx") == new and not list(work.glob(".model.onnx.*"))


def test_only_the_work_of_dead_exports_is_removed(tmp_path):
    out = tmp_path / "model.onnx"
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (tmp_path / f".model.onnx.{dead}.abc").mkdir()
    (tmp_path / f".model.onnx.{dead}.abc" / "fp32.onnx").write_bytes(b"x" * 1000)
    (tmp_path / f".model.onnx.{os.getpid()}.def").mkdir()   # a running export's (this process)
    (tmp_path / ".other.onnx.1.x").mkdir()                   # another output's
    assert clear_dead_work(out) == [tmp_path / f".model.onnx.{dead}.abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".model.onnx.{os.getpid()}.def", ".other.onnx.1.x"]
    shutil.rmtree(tmp_path / f".model.onnx.{os.getpid()}.def")
