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


@pytest.mark.parametrize("torchcodec", [True, False], ids=["torchcodec", "without torchcodec"])
def test_uint8_decoding_gives_load_images_pixels_and_rejects(tmp_path, monkeypatch, torchcodec):
    """load_uint8 (TorchCodec's libjpeg-turbo for plain JPEGs, Pillow for the rest or where
    TorchCodec does not load) gives exactly the pixels of load_image on real photos, greyscale
    and progressive JPEGs, with or without draft shrinking; every dirty file decodes the same
    or is rejected with the same reason."""
    from PIL import Image
    from conftest import L13
    from landmark.data import images, load_uint8
    decode_jpeg, fast = images._torchcodec_jpeg(), []
    assert decode_jpeg is not None   # a dependency: the fast path is what is tested
    counted = lambda data, mode: fast.append(1) or decode_jpeg(data, mode=mode)   # noqa: E731
    monkeypatch.setattr(images, "_torchcodec_jpeg", (lambda: counted) if torchcodec else (lambda: None))
    photos = sorted((L13 / "test").rglob("*.jpg"))[:12] + sorted((L13.parent / "nonlandmarks").rglob("*.jpg"))[:12]
    Image.open(photos[0]).convert("L").save(tmp_path / "grey.jpg", quality=90)
    Image.open(photos[1]).save(tmp_path / "progressive.jpg", progressive=True, quality=85)
    files = photos + [tmp_path / "grey.jpg", tmp_path / "progressive.jpg"] + [DIRTY / r["file"] for r in MANIFEST]
    decoded = 0
    for path in files:
        for draft in (None, 128, 448):
            try:
                want = torch.from_numpy(np.array(load_image(path, draft=draft))).permute(2, 0, 1)
            except ImageError as err:
                with pytest.raises(ImageError) as got:
                    load_uint8(path, draft=draft)
                assert str(got.value) == str(err)
                continue
            got = load_uint8(path, draft=draft)
            assert got.dtype == torch.uint8 and torch.equal(got, want), (path, draft)
            decoded += 1
    assert decoded >= 3 * 26
    assert len(fast) >= (26 if torchcodec else 0) and (torchcodec or not fast)   # real photos at draft None at least


def _dirty_frame():
    import pandas as pd
    if not MANIFEST:
        pytest.skip("no dirty data")
    files = [r["file"] for r in MANIFEST]
    return pd.DataFrame({"id": files, "path": [str(DIRTY / f) for f in files]})


def test_threaded_batches_equal_the_dataloaders_with_the_same_rejects():
    """Decoding threads (CPU inference) hand out what DataLoader processes would: the same
    images in frame order, batch by batch, and the same rejects with their reasons."""
    from landmark.data.dataset import ThreadedBatches, image_loader
    from landmark.data.transforms import resize_uint8
    frame = _dirty_frame()
    threaded = image_loader(frame, resize_uint8(32), batch_size=5, workers=2, threads=True)
    assert isinstance(threaded, ThreadedBatches) and len(threaded) == -(-len(frame) // 5)
    loader = image_loader(frame, resize_uint8(32), batch_size=5, workers=0)
    got, want = list(threaded), list(loader)
    assert len(got) == len(want) == len(threaded)
    for (batch, bad), (ref, ref_bad) in zip(got, want):
        assert [(r.id, r.reason) for r in bad] == [(r.id, r.reason) for r in ref_bad]
        assert (batch is None) == (ref is None)
        if batch is not None:
            assert torch.equal(batch["image"], ref["image"]) and batch["index"].tolist() == ref["index"].tolist()
    assert sum(len(bad) for _, bad in got) == sum(r["expected"] == "rejected" for r in MANIFEST) > 0


def test_threaded_batches_stop_early_without_hanging():
    import threading
    from landmark.data.dataset import image_loader
    from landmark.data.transforms import resize_uint8
    before = threading.active_count()
    batches = iter(image_loader(_dirty_frame(), resize_uint8(16), batch_size=2, workers=2, threads=True))
    next(batches)
    batches.close()     # the caller stops after one batch: pending decodes are dropped, threads end
    assert threading.active_count() == before


def test_decoding_threads_for_cpu_runtimes_processes_beside_a_gpu():
    from types import SimpleNamespace

    from landmark.models.runtime import OnnxRuntime, cpu_count, decode_threads, decode_workers
    assert OnnxRuntime.device.type == "cpu" and decode_threads(OnnxRuntime)
    assert decode_threads(SimpleNamespace(device=torch.device("cpu")))
    assert not decode_threads(SimpleNamespace(device="cuda:0"))
    assert decode_workers(True) == cpu_count() and decode_workers(False) == max(1, cpu_count() // 2)
