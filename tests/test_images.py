"""Every real bad file of ../shared/data/dirty does what its manifest says."""
import csv

import numpy as np
import pytest
import torch

from landmark.data import ImageDataset, ImageError, collate, load_image
from landmark.data.transforms import eval_transform

from conftest import DIRTY

MANIFEST = list(csv.DictReader(open(DIRTY / "MANIFEST.csv"))) if DIRTY.is_dir() else []


@pytest.mark.parametrize("row", MANIFEST, ids=[r["file"] for r in MANIFEST])
def test_dirty_file_decodes_or_is_rejected_as_manifest_says(row):
    if row["expected"] == "decodes":
        img = load_image(DIRTY / row["file"])
        assert img.mode == "RGB" and img.width > 0 and img.height > 0
    else:
        with pytest.raises(ImageError) as err:
            load_image(DIRTY / row["file"])
        assert str(err.value)


def test_exif_orientation_applied_and_special_modes_converted():
    if not DIRTY.is_dir():
        pytest.skip("no dirty data")
    assert load_image(DIRTY / "synthetic_exif_rotate90.jpg").size == (480, 270)
    gray16 = np.asarray(load_image(DIRTY / "synthetic_gray16.png"))
    assert gray16.mean() < 200 and gray16.std() > 20  # scaled, not clipped to white
    rgba = np.asarray(load_image(DIRTY / "synthetic_rgba.png"))
    assert (rgba[:, 0] == 255).all()  # fully transparent column composited onto white
    assert load_image(DIRTY / "0544d9b0-aaa3-480d-8eba-6c117dd3438d.jpg", draft=256).size == (6032, 4200)  # WebP: no draft


def test_missing_file_and_reasons():
    with pytest.raises(ImageError, match="not found"):
        load_image(DIRTY / "no_such_file.jpg")
    with pytest.raises(ImageError, match="empty"):
        load_image(DIRTY / "synthetic_zero_bytes.jpg")
    with pytest.raises(ImageError, match="not an image"):
        load_image(DIRTY / "synthetic_html_page.jpg")
    with pytest.raises(ImageError, match="truncated"):
        load_image(DIRTY / "synthetic_truncated_half.jpg")


def test_dataset_skips_and_reports_rejects():
    import pandas as pd
    files = [r["file"] for r in MANIFEST]
    frame = pd.DataFrame({"id": files, "path": [str(DIRTY / f) for f in files]})
    dataset = ImageDataset(frame, eval_transform(32, [0.5] * 3, [0.5] * 3))
    batch, rejects = collate([dataset[i] for i in range(len(dataset))])
    bad = {r["file"] for r in MANIFEST if r["expected"] == "rejected"}
    assert {r.id for r in rejects} == bad and all(r.reason for r in rejects)
    assert batch["image"].shape == (len(files) - len(bad), 3, 32, 32) and batch["image"].dtype == torch.float32
