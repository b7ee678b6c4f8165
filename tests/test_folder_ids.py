"""Class folders named as people name them ("Porto Cathedral") give landmark ids without spaces,
so a model trained on them writes Kaggle submissions that read back."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from landmark.data.gldv2 import folder_landmark_id, read_folder_tree
from landmark.data.kaggle import read_submission, write_submission
from landmark.data.names import display_name
from landmark.evaluation.evaluate import folder_solution


def _tree(root: Path) -> Path:
    for folder in ("Porto Cathedral", "Torre  dos\tClérigos", "no_landmark"):
        (root / folder).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (8, 8), (k * 80, 10, 10)).save(root / folder / f"{folder[:3].strip()}{k}.jpg")
    return root


def test_class_folder_ids_have_no_spaces_and_show_as_the_folder_name(tmp_path):
    frame = read_folder_tree(_tree(tmp_path / "trips"))
    ids = set(frame["landmark_id"].astype(str))
    assert {"Porto_Cathedral", "Torre_dos_Clérigos"} <= ids
    assert not any(" " in i or "\t" in i for i in ids)
    assert display_name("Porto_Cathedral") == "Porto Cathedral"
    assert folder_landmark_id("  Christ the   Redeemer ") == "Christ_the_Redeemer"


def test_a_labelled_tree_scores_against_the_ids_training_gave(tmp_path):
    queries, summary = folder_solution(_tree(tmp_path / "held"))
    assert summary["folders"]["Porto Cathedral"] == "Porto_Cathedral"
    assert summary["folders"]["no_landmark"] == ""
    # with a model's names the folder is matched to the model's id
    _, named = folder_solution(tmp_path / "held", names={"Porto_Cathedral": "Porto_Cathedral"})
    assert named["folders"]["Porto Cathedral"] == "Porto_Cathedral"


def test_submission_round_trips_and_refuses_an_id_with_a_space(tmp_path):
    rows = pd.DataFrame({"id": ["a", "b"], "landmark_id": ["Porto_Cathedral", ""], "score": [0.5, 0.0]})
    write_submission(rows, tmp_path / "sub.csv")
    back = read_submission(tmp_path / "sub.csv")
    assert back["landmark_id"].tolist() == ["Porto_Cathedral", ""]
    rows.loc[0, "landmark_id"] = "Porto Cathedral"
    with pytest.raises(ValueError, match="holds a space"):
        write_submission(rows, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_a_label_with_spaces_is_enrolled_under_its_id_and_keeps_its_name(tmp_path):
    from landmark.retrieval.pipeline import image_frame, source_names
    photos = tmp_path / "photos.csv"
    pd.DataFrame({"id": ["a", "b"], "path": ["a.jpg", "b.jpg"]}).to_csv(photos, index=False)
    frame = image_frame(images=photos, label="India  Gate")
    assert frame["landmark_id"].tolist() == ["India_Gate", "India_Gate"]
    assert source_names(label="India  Gate") == {"India_Gate": "India  Gate"}
    assert source_names(label="7") is None   # an id already: no name to keep
    with pytest.raises(ValueError, match="--label"):
        image_frame(images=photos, label="  ")


def test_the_refusal_of_a_spaced_id_says_how_an_enrolled_one_is_mended(tmp_path):
    rows = pd.DataFrame({"id": ["a"], "landmark_id": ["India Gate"], "score": [0.5]})
    with pytest.raises(ValueError, match="--label NAME") as err:
        write_submission(rows, tmp_path / "bad.csv")
    assert "build the index again" in str(err.value) and "\n" not in str(err.value)


def test_index_add_says_the_nearest_landmark_by_its_name_not_its_id(tmp_path):
    """A class tree's landmark is stored named as its id (Gateway_of_India): the coverage report
    of `index add` reads "Gateway of India", as the service's reply does."""
    import numpy as np
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.index import IndexParams, LandmarkIndex
    from landmark.retrieval.pipeline import enrol

    def photos(n, prefix, landmark, seed):
        x = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return Embeddings(x, pd.DataFrame({"id": [f"{prefix}{i}" for i in range(n)], "landmark_id": landmark}))
    LandmarkIndex.build(photos(6, "g", "Gateway_of_India", 0), IndexParams(kind="flat"),
                        {"names": {"Gateway_of_India": "Gateway_of_India"}}).save(tmp_path / "idx")
    with pytest.warns(UserWarning, match="no model recorded"):   # vectors made in memory
        report = enrol(tmp_path / "idx", photos(4, "n", "India_Gate", 1), names={"India_Gate": "India Gate"},
                       classes=[], threshold=0.1, confirm=False)
    cover = report["landmarks"]["India_Gate"]
    assert cover["nearest_landmark"] == "Gateway_of_India" and cover["nearest_name"] == "Gateway of India"
    assert "its nearest other landmark is Gateway of India (similarity" in cover["summary"]
