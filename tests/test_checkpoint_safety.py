"""Reading a file never runs code from it (issue 19, case 1): checkpoints are read with torch's
``weights_only`` loader, ground-truth pickles with a restricted unpickler, ``.npy`` files without
pickle; checkpoints this project writes still load, and none is written with non-finite weights."""
import builtins
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import run
from landmark.models import create_model, load_model, read_checkpoint, save_checkpoint

PRE = {"size": 32, "resize": 40, "mean": [0.5] * 3, "std": [0.5] * 3}


class Payload:
    """Pickles as a call of ``exec`` that writes ``marker``: what a booby-trapped file holds."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",)


def evil_checkpoint(path, marker):
    """A torch file that looks like a landmark checkpoint and runs code when unpickled."""
    model = create_model("tf_efficientnet_lite0", 2, weights="none")
    torch.save({"format": 2, "spec": model.spec.model_dump(mode="json"), "num_classes": 2, "classes": ["a", "b"],
                "preprocess": PRE, "state_dict": model.state_dict(), "names": Payload(marker)}, path)
    return path



def test_checkpoints_this_project_writes_load_with_the_safe_reader(tmp_path):
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 2, weights="none", head="gem")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    history = [{"epoch": 1, "stage": "s", "train_loss": np.float64(0.5), "val_gap": 0.25}]
    save_checkpoint(tmp_path / "new.pt", model, ["a", "b"], preprocess=PRE, history=history, epoch=1,
                    optimizer=optimizer.state_dict(), config={"seed": 1}, names={"a": "Alpha"},
                    reject_threshold={"classifier": 0.3})
    loaded, ckpt = load_model(tmp_path / "new.pt")
    assert ckpt["history"][0]["train_loss"] == 0.5 and type(ckpt["history"][0]["train_loss"]) is float
    assert ckpt["names"] == {"a": "Alpha"} and ckpt["optimizer"]["param_groups"][0]["lr"] == 1e-3
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    # a file the previous writer made (plain torch.save, numpy scalars left in the history) still reads
    old = torch.load(tmp_path / "new.pt", weights_only=True)
    old["history"][0]["train_loss"] = np.float64(0.5)
    torch.save(old, tmp_path / "old.pt")
    assert read_checkpoint(tmp_path / "old.pt")["history"][0]["train_loss"] == 0.5


def test_a_checkpoint_that_runs_code_is_refused_before_it_runs(tmp_path, monkeypatch, capsys):
    from landmark import Recognizer
    from landmark.inference.predict import predict
    marker = tmp_path / "MARKER"
    ckpt = evil_checkpoint(tmp_path / "best.pt", marker)
    Image.new("RGB", (40, 30), (90, 120, 200)).save(tmp_path / "q.jpg")
    for load in (lambda: Recognizer.load(ckpt), lambda: predict(ckpt, tmp_path / "q.jpg"), lambda: load_model(ckpt)):
        with pytest.raises(ValueError, match="refused, nothing in it was run") as err:
            load()
        assert "would run exec" in str(err.value) and "\n" not in str(err.value)
    code, out = run(monkeypatch, capsys, "predict", ckpt, "--images", tmp_path / "q.jpg", "--out", tmp_path / "s.csv")
    assert code == 2 and "Traceback" not in out and out.count("error:") == 1 and "refused" in out, out
    assert not marker.exists() and not (tmp_path / "s.csv").exists()


def test_a_diverged_model_is_never_written(tmp_path):
    model = create_model("tf_efficientnet_lite0", 2, weights="none", head="gem")
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, ["a", "b"], preprocess=PRE)
    before = path.read_bytes()
    with torch.no_grad():
        model.head.pool.p.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"non-finite values .* in head\.pool\.p"):
        save_checkpoint(path, model, ["a", "b"], preprocess=PRE, epoch=2)
    assert path.read_bytes() == before and not path.with_name("last.pt.tmp").exists()


def test_a_ground_truth_pickle_that_runs_code_is_refused(tmp_path):
    from landmark.evaluation.retrieval_metrics import read_revisited_gnd
    marker = tmp_path / "MARKER"
    good = {"imlist": ["a", "b"], "qimlist": ["q"],
            "gnd": [{"easy": np.array([0]), "hard": [], "junk": [1], "bbx": np.array([0.0, 1.5, 20.0, 30.0])}]}
    (tmp_path / "gnd_good.pkl").write_bytes(pickle.dumps(good))
    read = read_revisited_gnd(tmp_path / "gnd_good.pkl")
    assert read["gnd"][0]["easy"].tolist() == [0] and read["gnd"][0]["bbx"][3] == 30.0
    (tmp_path / "gnd_evil.pkl").write_bytes(pickle.dumps({**good, "imlist": Payload(marker)}))
    with pytest.raises(ValueError, match="refused: reading it would run builtins.exec"):
        read_revisited_gnd(tmp_path / "gnd_evil.pkl")
    assert not marker.exists()


def test_embeddings_holding_a_pickle_are_refused(tmp_path):
    import json

    from landmark.io import sidecar
    from landmark.retrieval.embeddings import load_embeddings
    marker = tmp_path / "MARKER"
    path = tmp_path / "e.npy"
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    sidecar(path, "ids.csv").write_text("id,landmark_id,path\nx,1,p.jpg\n")
    sidecar(path, "json").write_text(json.dumps({"rows": 1}))
    with pytest.raises(ValueError, match="Python objects"):
        load_embeddings(path)
    assert not marker.exists()
