"""read_train's fast duplicate-id check equals pandas' drop_duplicates on every kind of id."""
import numpy as np
import pandas as pd

from landmark.data.gldv2 import duplicated_ids, read_train


def test_duplicated_ids_matches_pandas():
    rng = np.random.default_rng(0)
    hex_ids = list(np.char.mod("%016x", rng.integers(0, 2**62, 1000)))
    cases = [
        hex_ids + hex_ids[:10],                                  # GLDv2 ids: packed path
        ["00000000000000ff", "00000000000000FF", "00000000000000ff"],  # upper case is another id
        ["0123456789abcdef", "0123456789abcdef0", "0123456789abcdef"],  # 17 chars: not truncated
        ["abc", "abd", "abc", "", ""],                            # short ids: string path
        ["é1234567890abcde", "é1234567890abcde"],                 # non-ASCII
        [],
    ]
    for ids in cases:
        got = duplicated_ids(np.array(ids, dtype=object))
        assert got.tolist() == pd.Series(ids, dtype=object).duplicated().tolist(), ids[:3]
    assert duplicated_ids(np.array(hex_ids + hex_ids[:10], dtype=object)).sum() == 10


def test_read_train_drops_repeated_ids_keeping_the_first(tmp_path):
    (tmp_path / "train.csv").write_text("id,url,landmark_id\n"
                                        "00000000000000aa,,1\n00000000000000bb,,2\n00000000000000aa,,3\n,,4\n")
    frame = read_train(tmp_path)
    assert frame["id"].tolist() == ["00000000000000aa", "00000000000000bb"]
    assert frame["landmark_id"].tolist() == ["1", "2"]
    assert frame["landmark_id"].dtype == "category"
