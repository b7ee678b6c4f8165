"""Training on several data folders at once (`landmark train --data A --data B`): the union of
their photos, read where they are, with every folder's landmark names; ids that collide refused."""
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import DATA
from landmark.data import image_path, read_train
from landmark.data.gldv2 import landmark_names, read_union

MANY = DATA / "landmarks_many"
# two landmarks of each folder, 6 photos each (landmark ids: landmarks13 0..12, landmarks_many 13..51)
PICK = {"landmarks13": ("0", "4"), "landmarks_many": ("13", "30")}
NAMES = {"0": "Alhambra Palace", "4": "Colosseum Rome", "13": "Christ the Redeemer", "30": "Iron Pillar of Delhi"}


@pytest.fixture(scope="module")
def many() -> Path:
    if not MANY.is_dir():
        pytest.skip(f"real data missing: {MANY}")
    return MANY


def gldv2_subset(source: Path, out: Path, landmarks, per_class: int = 6, category: dict | None = None,
                 skip: int = 0) -> Path:
    """A GLDv2 folder of ``per_class`` real photos (after the first ``skip``) of each landmark of
    ``source`` (symlinks), with ``source``'s train_label_to_category.csv rows (or ``category``:
    id -> category)."""
    frame = read_train(source)
    frame = frame[frame["landmark_id"].astype(str).isin(landmarks)]
    rank = frame.groupby("landmark_id", observed=True).cumcount()
    frame = frame[(rank >= skip) & (rank < skip + per_class)]
    for image_id in frame["id"]:
        target = image_path(out, image_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(image_path(source, image_id), target)
    frame.assign(url="")[["id", "url", "landmark_id"]].to_csv(out / "train.csv", index=False)
    cats = pd.read_csv(source / "train_label_to_category.csv", dtype=str)
    cats = cats[cats["landmark_id"].isin(landmarks)]
    if category is not None:
        cats = pd.DataFrame({"landmark_id": list(category), "category": list(category.values())})
    cats.to_csv(out / "train_label_to_category.csv", index=False)
    return out


@pytest.fixture(scope="module")
def two(l13, many, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("union")
    return (gldv2_subset(l13, root / "a", PICK["landmarks13"]),
            gldv2_subset(many, root / "b", PICK["landmarks_many"]))


def test_union_keeps_every_photo_where_it_is_and_every_name(two):
    a, b = two
    frame = read_train([a, b])
    assert len(frame) == 24 and frame["id"].is_unique
    assert sorted(frame["landmark_id"].astype(str).unique(), key=int) == ["0", "4", "13", "30"]
    # GLDv2 paths of each photo under its own folder: nothing copied
    for row in frame.itertuples():
        root = a if row.landmark_id in PICK["landmarks13"] else b
        assert row.path == str(image_path(root, row.id)) and Path(row.path).is_file()
    assert landmark_names([a, b], ["0", "4", "13", "30"]) == NAMES
    assert read_train([a]).equals(read_train(a))   # a list of one folder is that folder


def test_shared_landmark_id_with_other_name_is_refused(two, l13, tmp_path):
    a, _ = two
    # landmark_id 0 in both folders: named differently, then unnamed in the second
    other = gldv2_subset(l13, tmp_path / "other", ("0",), category={"0": "Category:Taj_Mahal"})
    with pytest.raises(ValueError, match=r"landmark_id 0 is in both .* named .*Alhambra.* and .*Taj_Mahal"):
        read_union([a, other])
    unnamed = gldv2_subset(l13, tmp_path / "unnamed", ("0",), category={})
    with pytest.raises(ValueError, match=r"landmark_id 0 is in both .* unnamed in .*unnamed"):
        read_train([a, unnamed])


def test_same_name_merges_and_repeated_photo_is_refused(two, l13, tmp_path):
    a, _ = two
    # the same landmark (same id, same category) from another folder joins its class ...
    later = gldv2_subset(l13, tmp_path / "later", ("0",), skip=6)
    frame = read_train([a, later])
    assert len(frame) == 18 and (frame["landmark_id"] == "0").sum() == 12
    assert landmark_names([a, later], ["0"]) == {"0": "Alhambra Palace"}
    # ... but a photo that both folders hold is refused (run files key photos by id)
    same = gldv2_subset(l13, tmp_path / "same", ("0",), per_class=8)
    with pytest.raises(ValueError, match=r"image id \w+ is in both .*\(6 such ids\)"):
        read_train([a, same])
    with pytest.raises(ValueError, match="given twice"):
        read_train([a, a])


def test_folder_trees_share_classes_by_folder_name(tmp_path):
    for root, files in (("t1", ("x/p1.jpg", "y/p2.jpg")), ("t2", ("x/p3.jpg", "z/p4.jpg"))):
        for f in files:
            (tmp_path / root / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / root / f).write_bytes(b"not decoded here")
    frame = read_train([tmp_path / "t1", tmp_path / "t2"])
    assert dict(zip(frame["id"], frame["landmark_id"].astype(str))) == {"p1": "x", "p2": "y", "p3": "x", "p4": "z"}
    assert landmark_names([tmp_path / "t1", tmp_path / "t2"], ["x", "z"]) == {"x": "x", "z": "z"}


PROBE = {"seed": 0, "data": {"cache_width": 96, "batch_size": 8, "workers": 0, "val_frac": 0.25, "test_frac": 0.0,
                             "final_fit": False, "reference_index": False},
         "stages": [{"name": "probe", "probe": True, "probe_iters": 20, "crop": {"resize": 72, "size": 64}}]}


@pytest.mark.slow   # a real (tiny) training run: ~25 s on the shared 2-core machine under load
def test_cli_trains_on_the_union_with_both_names(two, tmp_path):
    import yaml

    from landmark.cli import app
    from landmark.retrieval.reference import split_frames
    a, b = two
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump(PROBE))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(a), "--data", str(b), "--config", str(config),
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith(   # one line: no threshold, and why
        "no 'no landmark' threshold chosen: the run built no reference index (data.reference_index: false)")
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["classes"] == ["0", "4", "13", "30"] and best["names"] == NAMES
    assert json.loads((run / "run.json").read_text())["data"] == [str(a.resolve()), str(b.resolve())]
    split = pd.read_csv(run / "split.csv", dtype=str)
    assert len(split) == 24 and split.groupby("landmark_id")["split"].apply(lambda s: (s == "val").sum()).eq(2).all()
    # the run's files find each photo in its own folder again (reference index, report, resume)
    frames = split_frames(run)
    assert len(frames["train"]) == 16 and frames["train"]["path"].map(lambda p: Path(p).is_file()).all()


def test_cli_refuses_colliding_ids_in_one_line_before_writing(two, l13, tmp_path):
    from landmark.cli import app
    a, _ = two
    other = gldv2_subset(l13, tmp_path / "other", ("4",), category={"4": "Category:Taj_Mahal"})
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(a), "--data", str(other), "--out", str(run)])
    assert result.exit_code != 0
    assert "landmark_id 4 is in both" in result.output and len(result.output.strip().splitlines()) == 1
    assert not run.exists()


def test_resume_refuses_data_folders(two, tmp_path):
    """--resume reads the run's own folders from run.json; a --data beside it would be ignored."""
    from landmark.cli import app
    a, b = two
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run"), "--data", str(a), "--data", str(b)])
    assert result.exit_code == 2 and "--data" in result.output and "--resume" in result.output


def test_run_folder_of_several_folders_is_read_back(two, tmp_path):
    """A run's run.json with a list of folders: the reference index, the report and the saliency
    names find every photo and name again (no training needed to check the reading)."""
    from landmark.config import dump_config, load_config
    from landmark.reporting.analysis import class_names
    from landmark.reporting.report_data import data_paths, read_run
    from landmark.retrieval.reference import split_frames
    a, b = two
    run = tmp_path / "run"
    run.mkdir()
    dump_config(load_config("fast"), run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"data": [str(a), str(b)]}))
    frame = read_train([a, b])
    frame.assign(split=["val" if k % 4 == 0 else "train" for k in range(len(frame))])[
        ["id", "landmark_id", "split"]].to_csv(run / "split.csv", index=False)
    frames = split_frames(run)
    assert (len(frames["train"]), len(frames["val"])) == (18, 6)
    assert set(frames["val"]["path"]) == set(frame["path"][::4])
    info = read_run(run)
    assert info.data == [a, b] and len(data_paths(info.data)) == 24
    assert class_names(info.data) == NAMES


def test_index_build_and_embed_take_every_repeated_data_folder(two, recognizer_run, tmp_path):
    """`--data A --data B` on the retrieval commands reads both folders (typer kept only the last one)."""
    from landmark.cli import app
    from landmark.retrieval.index import LandmarkIndex
    a, b = two
    ckpt = recognizer_run / "checkpoints" / "best.pt"
    res = CliRunner().invoke(app, ["index", "build", "--checkpoint", str(ckpt), "--data", str(a), "--data", str(b),
                                   "--out", str(tmp_path / "idx"), "--workers", "0"])
    assert res.exit_code == 0, res.output
    index = LandmarkIndex.load(tmp_path / "idx")
    assert sorted(index.items["landmark_id"].astype(str).unique()) == sorted(NAMES)
    assert {index.meta["names"][k] for k in NAMES} == set(NAMES.values())
    again = CliRunner().invoke(app, ["index", "build", "--checkpoint", str(ckpt), "--data", str(a), "--data", str(a),
                                     "--out", str(tmp_path / "idx2")])
    assert again.exit_code == 2 and "given twice" in again.output
