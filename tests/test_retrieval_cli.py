"""End to end on real photos: build an index, enrol a landmark held out of it, recognise it by the kNN vote
(``landmark knn --scoring knn-vote``: an ImageNet backbone with an untrained head, so the vote alone)."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from landmark.cli import app
from landmark.data.gldv2 import image_path

KNOWN, NEW = "9,11", "10"  # machu picchu, petra | palace of versailles (31-37 train photos each)


@pytest.fixture(scope="module")
def imagenet_checkpoint(tmp_path_factory):
    from landmark.models import create_model, save_checkpoint
    model = create_model("tf_efficientnet_lite0", 13, weights="imagenet")
    path = tmp_path_factory.mktemp("ckpt") / "imagenet.pt"
    save_checkpoint(path, model, [str(i) for i in range(13)],
                    preprocess={"size": 160, "resize": 180, "mean": model.arch["mean"], "std": model.arch["std"]})
    return path


@pytest.mark.slow
def test_enrol_new_landmark_and_recognise_it(tmp_path, l13, imagenet_checkpoint, monkeypatch):
    runner = CliRunner()
    idx = tmp_path / "idx"
    result = runner.invoke(app, ["index", "build", "--checkpoint", str(imagenet_checkpoint), "--data", str(l13),
                                 "--landmarks", KNOWN, "--out", str(idx), "--workers", "0"])
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert built["kind"] == "flat" and built["landmarks"] == 2 and built["count"] == 37 + 31

    solution = pd.read_csv(l13 / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
    queries = solution[solution["landmarks"].isin(["9", "10", "11"])].copy()
    queries["path"] = [str(image_path(l13, i, "test")) for i in queries["id"]]
    queries[["id", "path"]].to_csv(tmp_path / "queries.csv", index=False)
    new_ids = set(queries.loc[queries["landmarks"] == NEW, "id"])
    assert len(new_ids) == 5  # 7 test photos, 2 of them marked other_place (no landmark)

    def recognise(name: str) -> pd.DataFrame:
        out = tmp_path / f"{name}.csv"
        res = runner.invoke(app, ["knn", str(imagenet_checkpoint), "--index", str(idx), "--images",
                                  str(tmp_path / "queries.csv"), "--out", str(out), "--scoring", "knn-vote", "--k", "5",
                                  "--workers", "0"])
        assert res.exit_code == 0, res.output
        from landmark.data.kaggle import read_submission
        return read_submission(out).set_index("id")

    before = recognise("before")
    assert not (before["landmark_id"] == NEW).any()  # cannot predict a landmark it has never seen

    # every enrolment within the same second, as on a fast machine: each still gets its own embeddings file
    monkeypatch.setattr("time.strftime", lambda *args: "20261202-120000")
    result = runner.invoke(app, ["index", "add", str(idx), "--data", str(l13), "--landmarks", NEW, "--workers", "0"])
    assert result.exit_code == 0, result.output
    added = json.loads(result.stdout.strip().splitlines()[-1])
    assert added["added"] == 33 and added["new_landmarks"] == [NEW] and added["count"] == 37 + 31 + 33
    # how well it is covered, in words, on stderr (the JSON alone on stdout)
    assert "Palace Of Versailles: 33 photos; its nearest other landmark is " in result.stderr   # by name, not id
    assert added["landmarks"][NEW]["summary"] in result.stderr

    after = recognise("after")
    hits = sum(after.loc[i, "landmark_id"] == NEW for i in new_ids)
    print(f"enrolled landmark: {hits} of {len(new_ids)} test photos recognised")
    assert hits >= 4, f"only {hits} of 5 enrolled-landmark photos recognised"
    known = queries.loc[queries["landmarks"] != NEW]
    assert (after.loc[known["id"], "landmark_id"].to_numpy() == known["landmarks"].to_numpy()).mean() >= 0.7
    # re-enrolling the same photos adds nothing
    again = runner.invoke(app, ["index", "add", str(idx), "--data", str(l13), "--landmarks", NEW, "--workers", "0"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped_duplicates"] == 33


def test_index_commands_refuse_bad_input(tmp_path):
    runner = CliRunner()
    # photos without a landmark id are indexed as an archive (tests/test_unlabelled_index.py), but a missing
    # checkpoint is refused before any embedding
    res = runner.invoke(app, ["index", "build", "--checkpoint", str(tmp_path / "any.pt"), "--images", str(tmp_path),
                              "--out", str(tmp_path / "idx")])
    assert res.exit_code == 2 and res.output == f"error: --checkpoint {tmp_path / 'any.pt'} does not exist\n"
    assert not (tmp_path / "idx").exists()
    res = runner.invoke(app, ["index", "add", str(tmp_path / "no_index")])
    assert res.exit_code == 2 and "does not exist" in res.output
    existing = tmp_path / "e.npy"
    existing.write_bytes(b"keep me")
    res = runner.invoke(app, ["embed", str(tmp_path / "any.pt"), "--images", str(tmp_path), "--out", str(existing)])
    assert res.exit_code == 2 and "--overwrite" in res.output and existing.read_bytes() == b"keep me"
