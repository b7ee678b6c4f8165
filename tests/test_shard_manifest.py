"""``embed-merge`` reads a shard folder's ``manifest.json`` like any file from someone else:
counts that are not whole numbers, that disagree (``parts`` != ceil(``rows`` / ``part_size``)),
a ``shards_of`` of 0 or an unknown ``dtype`` are refused in one line, and the search for
missing parts is bounded by the folders that exist (a hand-edited ``"parts": 1000000000``
looked for a billion folders; ``"parts": "x"`` was a TypeError traceback)."""
import json

import pytest

from landmark.retrieval.shards import merge_shards

GOOD = {"rows": 6, "part_size": 10000, "parts": 1, "ids_sha256": "0" * 64, "dtype": "float16",
        "image_size": 128, "shards_of": 2, "top_classes": 0}



def shard_folder(tmp_path, **change):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({**GOOD, **change}))
    return folder


@pytest.mark.parametrize("change, words", [
    ({"parts": 1_000_000_000}, "parts=1000000000 for rows=6"),
    ({"parts": "x"}, "parts='x'"),
    ({"part_size": 0}, "part_size=0"),
    ({"shards_of": 0}, "shards_of=0"),
    ({"rows": -5}, "rows=-5"),
    ({"rows": True}, "rows=True"),
    ({"dtype": "object"}, "dtype='object'"),
])
def test_a_hostile_manifest_is_refused_in_one_line(tmp_path, change, words, no_hang):
    with pytest.raises(ValueError, match="is not a shard manifest") as err:
        merge_shards(shard_folder(tmp_path, **change), tmp_path / "out.npy")
    assert words in str(err.value)


def test_a_manifest_nested_past_the_parser_depth_is_refused(tmp_path, no_hang):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="unreadable"):
        merge_shards(folder, tmp_path / "out.npy")


def test_a_billion_consistent_parts_are_counted_from_the_folders_that_exist(tmp_path, no_hang):
    folder = shard_folder(tmp_path, rows=1_000_000_000, part_size=1, parts=1_000_000_000)
    (folder / "part-00000").mkdir()
    with pytest.raises(ValueError, match=r"999999999 of 1000000000 parts are not done yet \(e.g. part-00001\)"):
        merge_shards(folder, tmp_path / "out.npy")
