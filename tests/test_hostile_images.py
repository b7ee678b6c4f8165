"""Hostile image files and data folders (issue 19, cases 2 to 4): whatever a decoder raises is a
reject with a reason; limits bound the work a file asks for (checked from its header); photos
and rows are used or listed as rejects, never silently dropped.  Files are made here, the AVIF
from a real one of the dirty set."""
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from conftest import DIRTY
from _helpers import blank_png, run
from landmark.data import ImageError, load_image, load_uint8, read_train
from landmark.data import images as images_module
from landmark.models import create_model, save_checkpoint

PRE = {"size": 32, "resize": 40, "mean": [0.5] * 3, "std": [0.5] * 3}
AVIF = DIRTY / "32aad146-2d5a-49a3-b45e-462982af3cb1.jpg"   # AVIF RGB 626x626 (MANIFEST.csv)
TINY = {"seed": 1, "model": {"weights": "none"},
        "data": {"cache_width": 48, "batch_size": 4, "workers": 0, "val_frac": 0.2, "test_frac": 0.0,
                 "min_images_per_class": 1, "final_fit": False},
        "stages": [{"name": "s", "epochs": 1, "lr": 1e-3, "freeze": 0,
                    "crop": {"p_start": 0.0, "p_end": 0.0, "resize": 36, "size": 32}}]}


def photo(path: Path, seed: int, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, "JPEG")
    return path


def corrupt_avif(path: Path) -> Path:
    """A real AVIF with 64 bytes zeroed in the middle: libavif raises RuntimeError decoding it."""
    if not AVIF.is_file():
        pytest.skip(f"real data missing: {AVIF}")
    data = bytearray(AVIF.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def dds_header(path: Path) -> Path:
    """A minimal DDS header, unknown FourCC pixel format: Pillow raises NotImplementedError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + bytes(44)
                     + struct.pack("<2I", 32, 0x4) + b"XXXX" + bytes(40))
    return path


def tall_png(path: Path, size=(1, 39_000_000)) -> Path:
    """A 76 KB PNG of 1 x 39,000,000 px: within MAX_PIXELS, its resize once asked for 26 GB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blank_png(*size))
    return path




@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    return {"avif": corrupt_avif(folder / "bad.avif"), "dds": dds_header(folder / "bad.dds"),
            "tall": tall_png(folder / "tall.png"), "wide": tall_png(folder / "wide.png", (5000, 200))}


REASONS = {"avif": "RuntimeError: Failed to decode", "dds": "NotImplementedError",
           "tall": "a side over the limit of 30000 px", "wide": "aspect ratio 25:1 over the limit of 20:1: 5000x200 pixels is too wide"}


@pytest.mark.parametrize("decode", ["load_image", "load_uint8", "load_uint8 via torchcodec"])
def test_every_decoder_error_is_an_image_error_with_a_reason(hostile, decode, monkeypatch):
    if decode == "load_uint8 via torchcodec":   # the fast path's decoder failing falls back, never escapes
        def broken(data, mode):
            raise RuntimeError("libjpeg-turbo: corrupt")
        monkeypatch.setattr(images_module, "_torchcodec_jpeg", lambda: broken)
    read = load_image if decode == "load_image" else load_uint8
    for kind, path in hostile.items():
        with pytest.raises(ImageError, match=REASONS[kind]):
            read(path)
    good = photo(hostile["avif"].parent / "good.jpg", 3)
    assert tuple(np.asarray(read(good)).shape) in ((30, 40, 3), (3, 30, 40))


def test_limits_admit_real_photos_and_bound_in_memory_images():
    from landmark.data.images import check_shape
    from landmark.inference.recognizer import decode
    check_shape(11_648, 8_736)           # a 100-Mpixel camera (101.8 Mpixel)
    with pytest.raises(ImageError, match="limit 120000000"):
        check_shape(20_000, 20_000)      # a decompression bomb
    check_shape(16_000, 2_000)           # a 1:8 phone panorama
    check_shape(8_000, 12_000, "RGBA")
    check_shape(10_000, 10_000, "RGBA", max_pixels=200_000_000)
    with pytest.raises(ImageError, match="decode to 600 MB .limit 480 MB"):   # a caller's larger pixel limit: bytes still bound
        check_shape(15_000, 10_000, "RGBA", max_pixels=200_000_000)
    with pytest.raises(ImageError, match="aspect ratio"):
        decode(np.zeros((10, 400, 3), np.uint8))
    with pytest.raises(ImageError, match="a side over"):
        decode(Image.new("L", (1, 40_000)))


def test_recognize_answers_the_good_photo_beside_corrupt_ones(hostile, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", create_model("tf_efficientnet_lite0", 2, weights="none"), ["a", "b"],
                    preprocess=PRE)
    good = photo(tmp_path / "good.jpg", 1)
    code, out = run(monkeypatch, capsys, "recognize", hostile["avif"], hostile["dds"], hostile["tall"], good,
                    "--model", tmp_path / "m.pt")
    assert code == 1 and "Traceback" not in out, out
    assert any(line.startswith(f"{good}  ") and "unreadable" not in line for line in out.splitlines()), out
    for kind in ("avif", "dds", "tall"):
        assert f"{hostile[kind]}  unreadable: " in out and REASONS[kind] in out


@pytest.mark.slow
def test_train_stats_and_predict_list_hostile_files_as_rejects(hostile, tmp_path, monkeypatch, capsys):
    """A class tree with the hostile files, hidden photos (``.x.jpg``) and OS metadata: train
    and stats use every photo and list every other file with its reason; predict answers the rest."""
    tree = tmp_path / "tree"
    for c in range(2):
        for k in range(5):
            photo(tree / str(c) / (f".hidden{k}.jpg" if k % 2 else f"p{k}.jpg"), 10 * c + k)
    for kind, path in hostile.items():
        (tree / "0" / path.name).write_bytes(path.read_bytes())
    (tree / "1" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (tree / "1" / "._p0.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(TINY))
    code, out = run(monkeypatch, capsys, "train", "--data", tree, "--config", tmp_path / "cfg.yaml", "--out",
                    tmp_path / "run", "--device", "cpu")
    assert code == 0 and "Traceback" not in out, out
    rejects = pd.read_csv(tmp_path / "run" / "rejects.csv", dtype=str)
    reasons = dict(zip(rejects["path"].map(lambda p: Path(p).name), rejects["reason"]))
    for kind, path in hostile.items():
        assert REASONS[kind] in reasons[path.name]
    assert "AppleDouble" in reasons["._p0.jpg"] and "macOS folder settings" in reasons[".DS_Store"]
    split = pd.read_csv(tmp_path / "run" / "split.csv", dtype=str)
    assert len(split) == 10 + 4 and len(rejects) == 6   # 10 photos (4 hidden) + 4 hostile files; 2 OS files

    summary_code, out = run(monkeypatch, capsys, "stats", tree, "--out", tmp_path / "stats")
    assert summary_code == 0 and "Traceback" not in out, out
    unreadable = pd.read_csv(tmp_path / "stats" / "unreadable.csv", dtype=str)
    assert len(unreadable) == 6 and set(unreadable["path"].map(lambda p: Path(p).name)) == set(reasons)

    code, out = run(monkeypatch, capsys, "predict", tmp_path / "run", "--images", tree / "0", "--out",
                    tmp_path / "s.csv", "--classifier-only")
    assert code == 0 and "Traceback" not in out, out
    answers = pd.read_csv(tmp_path / "s.answers.csv", dtype=str, keep_default_na=False)
    assert (answers["landmark_id"] != "").sum() == 5 and len(answers) == 9
    assert len(pd.read_csv(tmp_path / "s.rejects.csv")) == 4


def test_empty_ids_and_labels_of_train_csv_are_listed_not_dropped(tmp_path):
    root = tmp_path / "gld"
    root.mkdir()
    (root / "train.csv").write_text("id,url,landmark_id\nabc001,,1\n,,1\nabc002,,\nabc003,,2\n")
    unusable: list = []
    frame = read_train(root, unusable=unusable)
    assert frame["id"].tolist() == ["abc001", "abc003"]
    assert unusable == [("train.csv:3", "1", "", "empty id: train.csv line 3 names no photo"),
                        ("abc002", "", "", "empty landmark_id: train.csv line 4 is unlabelled, it cannot train")]


def test_hidden_photos_are_read_and_os_metadata_is_named(tmp_path):
    for c in range(4):
        for k in range(6):
            photo(tmp_path / "tree" / str(c) / (f".x{k}.jpg" if k else f"p{k}.jpg"), 10 * c + k)
    (tmp_path / "tree" / "2" / ".DS_Store").write_bytes(b"Bud1")
    (tmp_path / "tree" / "3" / "._x1.jpg").write_bytes(b"\x00\x05\x16\x07")
    unusable: list = []
    frame = read_train(tmp_path / "tree", unusable=unusable)
    assert len(frame) == 24 and frame["id"].is_unique
    assert sorted(u[0] for u in unusable) == ["2/.DS_Store", "3/._x1.jpg"]


def test_temporary_files_of_a_killed_write_are_not_photos(tmp_path):
    """A killed ``landmark tag --in-place`` leaves ``.p0.jpg.tmp<pid>``, a whole copy of the photo, and
    a sidecar write ``.p0.jpg.xmp.tmp<pid>``: predict read the copy as one more photo and the other
    as an unreadable one, train trained on the copy; now both are metadata with a reason."""
    from landmark.data.gldv2 import read_queries
    for c in range(2):
        for k in range(3):
            photo(tmp_path / "tree" / str(c) / f"p{k}.jpg", 10 * c + k)
    folder = tmp_path / "tree" / "1"
    (folder / ".p0.jpg.tmp4242").write_bytes((folder / "p0.jpg").read_bytes())
    (folder / ".p0.jpg.xmp.tmp4242").write_text("<x:xmpmeta")
    (folder / ".p9.jpg").write_bytes((folder / "p1.jpg").read_bytes())   # a hidden photo is still a photo
    assert sorted(read_queries(folder)["id"]) == ["_p9", "p0", "p1", "p2"]
    unusable: list = []
    assert len(read_train(tmp_path / "tree", unusable=unusable)) == 7
    assert sorted((u[0], u[-1]) for u in unusable) == [
        ("1/.p0.jpg.tmp4242", "temporary file of an interrupted write (.p0.jpg.tmp4242), not a photo"),
        ("1/.p0.jpg.xmp.tmp4242", "temporary file of an interrupted write (.p0.jpg.xmp.tmp4242), not a photo")]


def test_an_aspect_ratio_refusal_says_what_is_wrong_and_the_limit():
    """Not "too large": the ratio, the limit, which way, and that the service and downloads keep it."""
    from landmark.data.download import image_reason
    from landmark.data.images import LIMIT_PREFIXES, MAX_ASPECT, check_shape
    with pytest.raises(ImageError) as refused:
        check_shape(200, 4100)
    assert str(refused.value) == ("aspect ratio 20.5:1 over the limit of 20:1: 200x4100 pixels is too tall "
                                  "(long side / short side; a panorama up to 20:1 is read)")
    assert "too large" not in str(refused.value) and str(refused.value).startswith(LIMIT_PREFIXES)
    assert image_reason(refused.value) == str(refused.value)
    check_shape(200 * MAX_ASPECT, 200)   # exactly at the limit: read
    for (width, height), ratio in {(20000, 1): "20000", (1, 2999): "2999", (20001, 1000): "20.001",
                                   (2101, 100): "21.01", (1000, 25001): "25"}.items():
        with pytest.raises(ImageError, match=rf"^aspect ratio {re.escape(ratio)}:1 over the limit of 20:1: "):
            check_shape(width, height)   # was '2e+04:1', and '20:1 over the limit of 20:1'
