"""Bad input at the command line ends in one 'error:' line and exit code 2, never a traceback,
and nothing is written for a run that cannot start."""
import sys

import pandas as pd
import pytest

from conftest import DIRTY
from landmark.cli import main


def run(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["landmark", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    return done.value.code, captured.out + captured.err


def test_not_a_checkpoint(monkeypatch, capsys, tmp_path):
    (tmp_path / "fake.pt").write_text("hello")
    code, out = run(monkeypatch, capsys, "predict", tmp_path / "fake.pt", "--images", tmp_path, "--out",
                    tmp_path / "s.csv")
    assert code == 2 and "not a landmark checkpoint" in out and "Traceback" not in out


def test_train_fails_fast_and_writes_nothing(monkeypatch, capsys, tmp_path, l13):
    (tmp_path / "bad.yaml").write_text("stages: [\n")
    code, out = run(monkeypatch, capsys, "train", "--data", l13, "--config", tmp_path / "bad.yaml", "--out",
                    tmp_path / "r1")
    assert code == 2 and "not valid YAML" in out
    (tmp_path / "empty.yaml").write_text("")
    code, out = run(monkeypatch, capsys, "train", "--data", l13, "--config", tmp_path / "empty.yaml", "--out",
                    tmp_path / "r1")
    assert code == 2 and "empty file" in out
    code, out = run(monkeypatch, capsys, "train", "--data", tmp_path / "nope", "--out", tmp_path / "r2")
    assert code == 2 and "does not exist" in out
    code, out = run(monkeypatch, capsys, "train", "--data", l13, "--weights", tmp_path / "bad.yaml", "--out",
                    tmp_path / "r3")
    assert code == 2 and "state dict" in out
    code, out = run(monkeypatch, capsys, "train", "--data", l13, "--epochs", "0", "--out", tmp_path / "r4")
    assert code == 2
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "r3", "r4"))


def test_config_errors_are_one_line_saying_what_to_change(monkeypatch, capsys, tmp_path, l13):
    """A training config and a retrieval config with a typo'd key, a value out of range and a
    wrong type: the same one-line report, each bad field with what to change; nothing written."""
    (tmp_path / "bad.yaml").write_text("model:\n  backbon: tf_efficientnet_lite0\nstages:\n  - lr: -0.001\n"
                                       "data:\n  batch_size: big\n")
    code, out = run(monkeypatch, capsys, "train", "--data", l13, "--config", tmp_path / "bad.yaml", "--out",
                    tmp_path / "r1")
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert out.startswith(f"error: invalid config {tmp_path / 'bad.yaml'}: ")
    for problem in ("data.batch_size: Input should be a valid integer", "(got 'big')",
                    "model.backbon: unknown key (did you mean backbone?)",
                    "stages.0.lr: Input should be greater than 0 (got -0.001)"):
        assert problem in out, problem
    (tmp_path / "bad_knn.yaml").write_text("knn:\n  kk: 3\n  p: -1\nindex:\n  nprobe: many\n")
    code, out = run(monkeypatch, capsys, "knn", tmp_path / "m.pt", "--index", tmp_path, "--images", tmp_path,
                    "--preset", tmp_path / "bad_knn.yaml", "--out", tmp_path / "k.csv")
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert out.startswith(f"error: invalid retrieval config {tmp_path / 'bad_knn.yaml'}: index.nprobe: ")
    for problem in ("(got 'many')", "knn.p: Input should be greater than 0 (got -1)",
                    "knn.kk: unknown key (did you mean k?)"):
        assert problem in out, problem
    (tmp_path / "broken.yaml").write_text("stages: [\n  {lr: 1\n")   # YAML parser errors span lines
    code, out = run(monkeypatch, capsys, "train", "--data", l13, "--config", tmp_path / "broken.yaml", "--out",
                    tmp_path / "r1")
    assert code == 2 and len(out.strip().splitlines()) == 1 and "not valid YAML: line " in out, out
    assert not (tmp_path / "r1").exists() and not (tmp_path / "k.csv").exists()


def test_predict_bad_device_and_single_image(monkeypatch, capsys, tmp_path):
    from landmark.models import create_model, save_checkpoint
    model = create_model("tf_efficientnet_lite0", 2, weights="none")
    save_checkpoint(tmp_path / "m.pt", model, ["a", "b"], preprocess={"size": 32, "resize": 40,
                                                                       "mean": [0.5] * 3, "std": [0.5] * 3})
    code, out = run(monkeypatch, capsys, "predict", tmp_path / "m.pt", "--images", DIRTY, "--device", "tpu",
                    "--out", tmp_path / "s.csv")
    assert code == 2 and "unknown device" in out
    # one image file is a query set of one (it used to be refused)
    code, out = run(monkeypatch, capsys, "predict", tmp_path / "m.pt", "--images", DIRTY / "synthetic_1x1.jpg",
                    "--out", tmp_path / "s.csv", "--workers", "0")
    assert code == 0, out
    rows = pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False)
    assert rows["id"].tolist() == ["synthetic_1x1"] and rows["landmarks"].iloc[0].split()[0] in ("a", "b")
    named = pd.read_csv(tmp_path / "s.answers.csv", dtype=str, keep_default_na=False)
    assert named.loc[0, "path"] == str(DIRTY / "synthetic_1x1.jpg") and named.loc[0, "name"] in ("A", "B")   # class folders a, b shown readable (display_name)


def test_evaluate_guards(monkeypatch, capsys, tmp_path):
    (tmp_path / "sol.csv").write_text("id,landmarks,Usage\nq1,1,Public\nq2,2,Private\n")
    (tmp_path / "empty_sub.csv").write_text("id,landmarks\n")
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "empty_sub.csv", "--solution", tmp_path / "sol.csv")
    assert code == 0 and '"gap": 0.0' in out and '"missing_predictions": 2' in out
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "empty_sub.csv", "--solution",
                    tmp_path / "sol.csv", "--usage", "Bogus")
    assert code == 2 and "Public or Private" in out
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "metrics.json").write_text("{}")
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "empty_sub.csv", "--solution",
                    tmp_path / "sol.csv", "--out", tmp_path / "ev")
    assert code == 2 and "--overwrite" in out and (tmp_path / "ev" / "metrics.json").read_text() == "{}"


def test_download_split_cannot_leave_out(monkeypatch, capsys, tmp_path):
    (tmp_path / "rows.csv").write_text("id,url,landmark_id\nabc123,http://127.0.0.1:9/x.jpg,1\n")
    code, out = run(monkeypatch, capsys, "download", "--csv", tmp_path / "rows.csv", "--out", tmp_path / "dl",
                    "--split", "../../evil")
    assert code == 2 and "train, index or test" in out
    assert not (tmp_path / "dl").exists() and not (tmp_path.parent / "evil").exists()


def test_knn_checks_its_inputs_before_writing(monkeypatch, capsys, tmp_path, l13):
    (tmp_path / "fake.pt").write_text("hello")
    code, out = run(monkeypatch, capsys, "knn", tmp_path / "fake.pt", "--index", tmp_path,
                    "--images", l13 / "test", "--nonlandmarks", tmp_path / "nope", "--out", tmp_path / "k.csv")
    assert code == 2 and "--nonlandmarks" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.pt"]
