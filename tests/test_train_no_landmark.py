"""A training tree's `no_landmark/` folder is never a class: `landmark train` uses its photos as the
photos without a landmark (as --nonlandmarks would), or leaves them out when --nonlandmarks is given."""
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import DATA
from landmark.data import read_train
from landmark.data.gldv2 import without_no_landmark_folders

LANDMARKS = ("0", "4", "9")   # Alhambra Palace, Colosseum Rome, Machu Picchu (landmarks13)


@pytest.fixture(scope="module")
def tree(l13, tmp_path_factory) -> Path:
    """3 landmarks of landmarks13, 5 real photos each, and no_landmark/ with 4 of nonlandmarks (symlinks)."""
    nonlandmarks = DATA / "nonlandmarks" / "images"
    if not nonlandmarks.is_dir():
        pytest.skip(f"real data missing: {nonlandmarks}")
    root = tmp_path_factory.mktemp("nl") / "tree"
    frame = read_train(l13)
    for lid in LANDMARKS:
        (root / f"landmark_{lid}").mkdir(parents=True)
        for image_id in frame.loc[frame["landmark_id"].astype(str) == lid, "id"].head(5):
            os.symlink(l13 / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg",
                       root / f"landmark_{lid}" / f"{image_id}.jpg")
    (root / "no_landmark").mkdir()
    for f in sorted(nonlandmarks.rglob("*.jpg"))[:4]:
        os.symlink(f, root / "no_landmark" / f.name)
    return root


def test_no_landmark_folder_is_kept_apart(tree):
    frame = read_train(tree)
    assert len(frame) == 19   # read_train still lists every photo (report's dataset counts)
    kept, apart = without_no_landmark_folders(frame)
    assert sorted(kept["landmark_id"].cat.categories) == [f"landmark_{lid}" for lid in LANDMARKS]
    assert len(kept) == 15 and len(apart) == 4 and set(apart["landmark_id"].astype(str)) == {"no_landmark"}
    gldv2 = read_train(DATA / "landmarks13")   # numeric ids: nothing apart
    assert len(without_no_landmark_folders(gldv2)[1]) == 0


def test_stats_count_no_landmark_photos_apart(tree):
    from landmark.data.dataset_stats import dataset_stats, stats_markdown
    summary, tables = dataset_stats(tree, check_images=False)
    assert (summary["images"], summary["classes"], summary["no_landmark_images"]) == (15, 3, 4)
    assert "no_landmark" not in set(tables["class_counts"]["landmark_id"])
    assert ("**15 images in 3 classes.** And 4 photos without a landmark (a `no_landmark/` folder: never a class)."
            in stats_markdown(summary, tables["class_counts"], []))


def test_the_line_says_what_happens_to_the_folder(tree, capsys):
    from landmark.config import load_config
    from landmark.training.trainer import _say_no_landmark
    frame = read_train(tree)
    apart = without_no_landmark_folders(frame)[1]
    config = load_config("fast")
    _say_no_landmark(apart, config)
    assert capsys.readouterr().err == (f"using {tree / 'no_landmark'} (4 photos) as the photos without a landmark, "
                                       f"as --nonlandmarks would\n")
    given = config.model_copy(update={"data": config.data.model_copy(update={"nonlandmarks": "/x/nl"})})
    _say_no_landmark(apart, given)
    assert capsys.readouterr().err.startswith(f"left out {tree / 'no_landmark'} (4 photos): photos without a "
                                              f"landmark are no class, and --nonlandmarks /x/nl gives those")


def test_a_tree_of_only_no_landmark_photos_is_refused_before_writing(tree, tmp_path):
    from landmark.cli import app
    only = tmp_path / "only"
    only.mkdir()
    os.symlink(tree / "no_landmark", only / "no_landmark")
    result = CliRunner().invoke(app, ["train", "--data", str(only), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and not (tmp_path / "run").exists()
    assert f"every photo of {only} is in {only / 'no_landmark'}, photos without a landmark" in result.output


def _gldv2(l13, root: Path, landmark_rows: int) -> Path:
    """A GLDv2-layout folder (train/ linked to landmarks13's) whose train.csv has ``landmark_rows`` photos of
    Alhambra Palace (0) and then 4 of Angkor Wat (1) labelled ``no_landmark``."""
    root.mkdir()
    os.symlink(l13 / "train", root / "train")
    frame = read_train(l13)
    ids = lambda lid, n: frame.loc[frame["landmark_id"].astype(str) == lid, "id"].head(n).tolist()  # noqa: E731
    rows = [f"{i},,0" for i in ids("0", landmark_rows)] + [f"{i},,no_landmark" for i in ids("1", 4)]
    (root / "train.csv").write_text("id,url,landmark_id\n" + "\n".join(rows) + "\n")
    return root


def test_gldv2_rows_labelled_no_landmark_are_named_by_their_train_csv(l13, tmp_path):
    """A GLDv2 train.csv's landmark_id no_landmark is photos without a landmark too; they are named by the file
    (it was an IndexError once the run folder was written, and `error: KeyError: 'path'` when every row was so)."""
    from landmark.cli import app
    from landmark.data.gldv2 import with_paths
    from landmark.training.trainer import no_landmark_folders
    mixed = _gldv2(l13, tmp_path / "mixed", 5)
    kept, apart = without_no_landmark_folders(read_train(mixed))
    assert (len(kept), len(apart)) == (5, 4)
    assert no_landmark_folders(with_paths(apart, mixed)) == f"the rows of {mixed / 'train.csv'} labelled no_landmark"
    only = _gldv2(l13, tmp_path / "only", 0)
    result = CliRunner().invoke(app, ["train", "--data", str(only), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and not (tmp_path / "run").exists(), result.output
    assert result.stderr == (f"error: every photo of {only} is in the rows of {only / 'train.csv'} labelled "
                             f"no_landmark, photos without a landmark, which is never a class: give one folder per "
                             f"landmark (nothing was written)\n")


PROBE = {"seed": 0, "data": {"cache_width": 96, "batch_size": 8, "workers": 0, "val_frac": 0.25, "test_frac": 0.0,
                             "final_fit": False},
         "stages": [{"name": "probe", "probe": True, "probe_iters": 20, "crop": {"resize": 72, "size": 64}}]}


@pytest.mark.slow   # a real (tiny) training run with its reference index
def test_train_uses_no_landmark_folder_as_nonlandmarks(tree, tmp_path):
    import yaml

    from landmark.cli import app
    from landmark.retrieval.index import LandmarkIndex
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump(PROBE))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(tree), "--config", str(config), "--out", str(run)])
    assert result.exit_code == 0, result.output
    folder = tree / "no_landmark"
    assert f"using {folder} (4 photos) as the photos without a landmark, as --nonlandmarks would" in result.stderr
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["classes"] == [f"landmark_{lid}" for lid in LANDMARKS]
    split = pd.read_csv(run / "split.csv", dtype=str)
    assert len(split) == 15 and "no_landmark" not in set(split["landmark_id"])
    index = LandmarkIndex.load(run / "index")
    nl_ids = set(read_train(tree).query("landmark_id == 'no_landmark'")["id"])
    assert len(index) == 12 and not nl_ids & set(index.items["id"])   # 15 photos, 3 in validation
    method = json.loads((run / "reference.json").read_text())["threshold_method"]
    assert (method["method"], method["nonlandmark_photos"], method["validation_photos"]) == (
        "non-landmark photos", 4, 3)
    assert method["nonlandmarks_from"] == str(folder)
    assert f"3 validation photos and 4 non-landmark photos ({folder})" in result.stdout


def test_resume_of_a_run_that_trained_no_landmark_as_a_class_is_refused(tree, tmp_path):
    """A run begun before no_landmark/ stopped being a class: its split.csv names it.  Resuming rejected its
    photos as 'in split.csv but no longer in the data folder' (rejects.csv rewritten), then refused the
    checkpoint for its classes with 'delete it to restart the run'; now one line says why and writes nothing."""
    from landmark.cli import app
    from landmark.config import dump_config, load_config
    from landmark.runs import RunFolder
    run = tmp_path / "old"
    run.mkdir()
    dump_config(load_config("fast"), RunFolder(run).config_file)
    RunFolder(run).write_info(tree, torch="2", python="3")
    read_train(tree).assign(split="train")[["id", "landmark_id", "split"]].to_csv(run / "split.csv", index=False)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: {run / 'split.csv'} trains no_landmark as a class (4 photos): this run began "
                             f"before 2026-12-08, when a folder of photos without a landmark was a class; it is never "
                             f"one now, so this run's classes and checkpoint no longer fit: start a new run (landmark "
                             f"train --data {tree.resolve()} --out NEW_RUN), where that folder's photos choose the 'no "
                             f"landmark' threshold (nothing was written)\n")
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    assert after == before and not (run / "rejects.csv").exists()


def test_stats_of_a_tree_of_only_no_landmark_photos_is_refused(tree, tmp_path):
    """It was counted as one class ("4 images in 1 classes", no_landmark_images 0), against 'never a class'."""
    from landmark.cli import app
    only = tmp_path / "only"
    only.mkdir()
    os.symlink(tree / "no_landmark", only / "no_landmark")
    result = CliRunner().invoke(app, ["stats", str(only), "--out", str(tmp_path / "st")])
    assert result.exit_code == 2 and not (tmp_path / "st").exists(), result.output
    assert result.stderr == (f"error: every photo of {only} is in no_landmark/, photos without a landmark, which is "
                             f"never a class: no landmark to count; give one folder per landmark (nothing was "
                             f"written)\n")


def test_folders_of_no_landmark_in_several_trees_never_clash(l13, tree, tmp_path):
    """`train --data A --data B`: A/no_landmark and B/No Landmark were refused as 'class folders that differ only
    in case ... if they are one landmark', and a GLDv2 train.csv's no_landmark rows beside a tree's no_landmark/ as
    'landmark_id no_landmark ... unnamed ... renumber'; folders of no landmark are never a class, so never clash."""
    from landmark.data.gldv2 import with_paths
    from landmark.training.trainer import no_landmark_folders
    other = tmp_path / "other"
    (other / "No Landmark").mkdir(parents=True)
    (other / "Petra").mkdir()
    for f in sorted((DATA / "nonlandmarks" / "images").rglob("*.jpg"))[4:6]:
        os.symlink(f, other / "No Landmark" / f.name)
    petra = read_train(l13).query("landmark_id == '11'")["id"].iloc[0]
    os.symlink(l13 / "train" / petra[0] / petra[1] / petra[2] / f"{petra}.jpg", other / "Petra" / f"{petra}.jpg")
    gldv2 = _gldv2(l13, tmp_path / "g", 0)
    kept, apart = without_no_landmark_folders(read_train([tree, other, gldv2]))
    assert sorted(kept["landmark_id"].cat.categories) == ["Petra"] + [f"landmark_{lid}" for lid in LANDMARKS]
    assert len(kept) == 16 and len(apart) == 4 + 2 + 4
    assert no_landmark_folders(with_paths(apart, tree)) == (f"{tree / 'no_landmark'} + {other / 'No Landmark'} + "
                                                            f"the rows of {gldv2 / 'train.csv'} labelled no_landmark")


@pytest.mark.slow   # a real (tiny) training run
def test_an_unreadable_no_landmark_photo_is_a_reject(tree, tmp_path):
    """A no_landmark/ photo that cannot be read was left out of the threshold silently (the line said 5 photos,
    4 were used, rejects.csv listed none); now rejects.csv names it, as any other photo of the tree."""
    bad = _train_with_empty_no_landmark_photo(tree, tmp_path, keep_readable=True)
    rejects = pd.read_csv(tmp_path / "run" / "rejects.csv", dtype=str, keep_default_na=False)
    assert rejects.to_dict("records") == [{"id": "empty", "path": str(bad / "no_landmark" / "empty.jpg"),
                                           "reason": "empty file"}]
    reference = json.loads((tmp_path / "run" / "reference.json").read_text())
    assert reference["threshold_method"]["nonlandmark_photos"] == 4 and "rejects" not in reference


@pytest.mark.slow   # a real (tiny) training run
def test_no_readable_no_landmark_photo_falls_back_to_leave_class_out(tree, tmp_path):
    """Every no_landmark/ photo unreadable: the threshold was 0 ('no landmark' never answered), 'chosen on 3
    validation photos alone (one landmark: none to leave out ...)' though the run has 3 landmarks; now it is
    chosen by leave-class-out, as without any photo of no landmark."""
    _train_with_empty_no_landmark_photo(tree, tmp_path, keep_readable=False)
    method = json.loads((tmp_path / "run" / "reference.json").read_text())["threshold_method"]
    assert (method["method"], method["simulated_unknown"], method["nonlandmark_photos"]) == ("leave-class-out", 3, 0)
    assert method["reference"] > 0
    assert pd.read_csv(tmp_path / "run" / "rejects.csv", dtype=str)["id"].tolist() == ["empty"]


def test_a_model_that_trained_no_landmark_as_a_class_is_warned_of(tmp_path):
    """A run begun before 2026-12-08 has the class no_landmark and answers 'No Landmark' as a landmark: loading
    it says so in one warning (a model without such a class: none)."""
    import warnings

    from landmark import Recognizer
    from landmark.data.names import NoLandmarkClassWarning
    from landmark.models import create_model, save_checkpoint
    preprocess = {"size": 32, "resize": 36, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "old.pt", create_model("test_efficientnet", 2, weights="none"), ["Petra", "No_Landmarks"],
                    preprocess=preprocess)
    with pytest.warns(NoLandmarkClassWarning) as caught:
        Recognizer.load(tmp_path / "old.pt", index=False)
    assert [str(w.message) for w in caught] == [
        "the model has a class 'No_Landmarks', photos without a landmark (trained before 2026-12-08, when a tree's "
        "no_landmark/ folder was a class): it can answer 'No Landmarks' as a landmark; train it again (that "
        "folder's photos then choose the 'no landmark' threshold)"]
    save_checkpoint(tmp_path / "new.pt", create_model("test_efficientnet", 2, weights="none"), ["Petra", "Taj_Mahal"],
                    preprocess=preprocess)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoLandmarkClassWarning)
        Recognizer.load(tmp_path / "new.pt", index=False)


def test_excluding_the_no_landmark_folder_as_before_is_not_refused(tree):
    """data.exclude_landmarks: [no_landmark] (how a config kept the folder out of the classes before 2026-12-08)
    was refused as 'names no_landmark, not landmarks of TREE'; it is never a class, so excluding it is no error."""
    from landmark.training.trainer import _check_exclusions
    frame = read_train(tree)
    _check_exclusions(frame, ["no_landmark"], tree)
    _check_exclusions(frame, ["no_landmark", "landmark_0"], tree)
    with pytest.raises(ValueError, match="^data.exclude_landmarks names Petra, not landmarks of "):
        _check_exclusions(frame, ["no_landmark", "Petra"], tree)


def _train_with_empty_no_landmark_photo(tree, tmp_path, keep_readable: bool):
    """Train the tiny probe on ``tree``'s landmarks and a no_landmark/ folder holding an empty file (and, with
    ``keep_readable``, the tree's readable no_landmark photos) into ``tmp_path/run``; returns the new tree."""
    import yaml

    from landmark.cli import app
    bad = tmp_path / "tree"
    bad.mkdir()
    for lid in LANDMARKS:
        os.symlink(tree / f"landmark_{lid}", bad / f"landmark_{lid}")
    (bad / "no_landmark").mkdir()
    if keep_readable:
        for f in (tree / "no_landmark").iterdir():
            os.symlink(f.resolve(), bad / "no_landmark" / f.name)
    (bad / "no_landmark" / "empty.jpg").write_bytes(b"")
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump(PROBE))
    result = CliRunner().invoke(app, ["train", "--data", str(bad), "--config", str(config), "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    return bad
