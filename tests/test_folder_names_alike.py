"""Class folders whose names differ only in case, '_' or spaces (Petra and petra) are refused when
the data loads, in one line naming both folders and what to change: they were two landmarks shown
with one name (or, for Porto Cathedral and Porto_Cathedral, one landmark made of two folders)."""
import pytest
from typer.testing import CliRunner

from landmark.data import image_path, read_train
from landmark.data.gldv2 import folder_key, same_name_folders

PHOTOS = ["20edec4333593175", "40a3effbdea65066", "552d5550d046b122", "09b94794cb834d50"]   # landmarks13 test


def _tree(l13, root, folders):
    for k, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        (root / folder / f"{PHOTOS[k]}.jpg").symlink_to(image_path(l13, PHOTOS[k], "test"))
    return root


def test_names_alike():
    assert folder_key("Porto_Cathedral") == folder_key("porto  cathedral") == "porto cathedral"
    assert same_name_folders(["Alhambra", "Petra", "petra"]) == ("Petra", "petra")
    assert same_name_folders(["Petra", "Petra Jordan", "Sacré-Cœur", "sacre-coeur"]) is None   # accents differ


@pytest.mark.parametrize("a, b", [("Petra", "petra"), ("Porto Cathedral", "Porto_Cathedral"), ("ROME", "rome")])
def test_a_tree_with_two_folders_named_alike_is_refused_in_one_line(l13, tmp_path, a, b):
    tree = _tree(l13, tmp_path / "mine", ["Alhambra", a, b])
    first, second = sorted([a, b])
    with pytest.raises(ValueError) as refused:
        read_train(tree)
    message = str(refused.value)
    assert "\n" not in message and f"class folders {tree / first} and {tree / second} differ only in case" in message
    assert "move the photos of one into the other" in message and "rename one" in message
    from landmark.cli import app
    result = CliRunner().invoke(app, ["train", "--data", str(tree), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.stderr.startswith("error: class folders") \
        and result.stderr.count("\n") == 1, result.output
    assert not (tmp_path / "run").exists()


def test_two_trees_with_folders_named_alike_are_refused_and_the_same_name_is_one_landmark(l13, tmp_path):
    one = _tree(l13, tmp_path / "one", ["Petra", "Alhambra"])
    (tmp_path / "two" / "petra").mkdir(parents=True)
    (tmp_path / "two" / "petra" / f"{PHOTOS[3]}.jpg").symlink_to(image_path(l13, PHOTOS[3], "test"))
    with pytest.raises(ValueError, match=f"class folders {one / 'Petra'} and {tmp_path / 'two' / 'petra'} differ"):
        read_train([one, tmp_path / "two"])
    (tmp_path / "two" / "petra").rename(tmp_path / "two" / "Petra")   # the same name: one landmark from both
    frame = read_train([one, tmp_path / "two"])
    assert (frame["landmark_id"].astype(str) == "Petra").sum() == 2
