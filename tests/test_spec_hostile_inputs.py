"""Hostile inputs to the redesigned model specification, checkpoint format 2, preprocessing
contract and config loading (issue 8): each is refused with one clear error, or works the
same everywhere; never a traceback, a killed process or a silently wrong answer."""
import copy
import math

import pytest
import torch

from landmark.config import load_config
from landmark.data.preprocess import Preprocess
from landmark.models import ModelSpec, create_model, load_model, read_checkpoint, save_checkpoint
from landmark.retrieval.config import load_retrieval_config
from test_reliability import run


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random-weight 2-class model at 32 px and its checkpoint dict."""
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    torch.manual_seed(0)
    save_checkpoint(path, create_model("tf_efficientnet_lite0", 2, weights="none", input_size=32), ["a", "b"])
    return path, torch.load(path, weights_only=False)


def altered(saved, tmp_path, change) -> str:
    ckpt = copy.deepcopy(saved[1])
    change(ckpt)
    torch.save(ckpt, tmp_path / "bad.pt")
    return tmp_path / "bad.pt"


# --- the preprocessing contract -----------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"size": 224, "mean": (math.nan, 0.5, 0.5)}, {"size": 224, "std": (math.inf, 1.0, 1.0)},
    {"size": True}, {"size": 224, "resize": True}, {"size": 224.7}, {"size": 224, "resize": 0.5},
    {"size": 10 ** 6}, {"size": 224, "resize": 10 ** 6}, {"size": 224, "mean": None}, {"size": [224]},
    {"size": "abc"}])
def test_preprocess_refuses_values_that_would_run_silently_wrong_or_exhaust_memory(fields):
    with pytest.raises(ValueError, match="preprocess"):
        Preprocess(**fields)


def test_preprocess_takes_numbers_written_as_text_or_integral_floats():
    assert dict(Preprocess(size="224", resize=256.0)) == dict(Preprocess(224, 256))


@pytest.mark.parametrize("change", [
    lambda c: c["preprocess"].update(mean=[math.nan, 0.5, 0.5]),   # NaN logits, silently
    lambda c: c["preprocess"].update(size=True, resize=True),       # a 1-pixel network input, silently
    lambda c: c["preprocess"].update(size=10 ** 6, resize=10 ** 6),  # killed the process for memory
])
def test_a_checkpoint_with_an_unusable_preprocessing_is_refused_when_read(saved, tmp_path, change):
    with pytest.raises(ValueError, match="preprocessing is invalid"):
        read_checkpoint(altered(saved, tmp_path, change))


def test_a_preprocessing_written_as_text_reaches_every_reader_as_numbers(saved, tmp_path):
    """predict normalised it but embed, export and saliency read ckpt['preprocess'] raw (a traceback)."""
    path = altered(saved, tmp_path, lambda c: c["preprocess"].update(size="32", resize="37"))
    ckpt = read_checkpoint(path)
    assert ckpt["preprocess"] == {"size": 32, "resize": 37, "mean": [0.5] * 3, "std": [0.5] * 3}
    model, ckpt = load_model(path)
    assert ckpt["preprocess"] == dict(model.preprocess)


# --- checkpoint entries of the wrong type ------------------------------------------------------

@pytest.mark.parametrize("change, match", [
    (lambda c: c.update(state_dict=None), "state_dict"),
    (lambda c: c.update(state_dict=[1, 2]), "state_dict"),
    (lambda c: c.update(classes=None), "classes"),
    (lambda c: c.update(classes="ab"), "classes"),
    (lambda c: c.update(num_classes="2"), "num_classes"),
    (lambda c: c.update(format=3), "format 3"),
])
def test_checkpoint_entries_of_the_wrong_type_are_named(saved, tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        read_checkpoint(altered(saved, tmp_path, change))


def format1(ckpt, **arch):
    entry = {"backbone": "tf_efficientnet_lite0", "head": "gem", "num_classes": 2, "dropout": 0.2,
             "mean": [0.5] * 3, "std": [0.5] * 3, **arch}
    for key in ("spec", "format", "num_classes"):
        ckpt.pop(key)
    ckpt["arch"] = {k: v for k, v in entry.items() if v is not ...}


@pytest.mark.parametrize("arch", [{"std": ...}, {"mean": 5}, {"mean": "abc", "std": "abc"}])
def test_a_format1_file_with_a_damaged_arch_gives_one_error_line(saved, tmp_path, monkeypatch, capsys, arch):
    path = altered(saved, tmp_path, lambda c: format1(c, **arch))
    with pytest.raises(ValueError, match="'arch' entry is invalid"):
        read_checkpoint(path)
    code, out = run(monkeypatch, capsys, "predict", path, "--images", tmp_path, "--out", tmp_path / "s.csv")
    assert code == 2 and "Traceback" not in out and "'arch' entry is invalid" in out


def test_a_format1_file_still_loads(saved, tmp_path):
    model, ckpt = load_model(altered(saved, tmp_path, format1))
    assert ckpt["format"] == 1 and model.spec.dropout == 0.2 and model.preprocess.size == 32


# --- the specification -------------------------------------------------------------------------

@pytest.mark.parametrize("std", [(0.0, 0.0, 0.0), (-1.0, 1.0, 1.0)])
def test_a_spec_std_that_cannot_normalise_is_refused_by_the_spec(std):
    """It passed the config and failed after config.yaml, split.csv and the cache were written."""
    with pytest.raises(ValueError, match="std"):
        ModelSpec(std=std)
    with pytest.raises(ValueError, match="model.std"):
        load_config("fast", {"model": {"std": list(std)}})


def test_input_size_beyond_any_network_is_refused():
    with pytest.raises(ValueError, match="input_size"):
        ModelSpec(input_size=10 ** 6)
    with pytest.raises(ValueError, match="crop.size"):
        load_config("fast", {"model": {"input_size": 100000},
                             "stages": [{"probe": True, "crop": {"size": 100000, "resize": 100000}}]})


def test_create_model_refuses_a_backbone_that_disagrees_with_spec():
    """create_model("vgg16", 3, spec=ModelSpec()) built EfficientNet-Lite0, silently."""
    with pytest.raises(ValueError, match="vgg16"):
        create_model("vgg16", 3, spec=ModelSpec(), weights="none")
    assert create_model(num_classes=3, spec=ModelSpec(input_size=32), weights="none").spec.backbone \
        == "tf_efficientnet_lite0"


# --- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_true_is_refused_not_read_as_one_layer(freeze):
    with pytest.raises(ValueError, match="freeze"):
        load_config("fast", {"stages": [{"probe": True, "freeze": freeze}]})


def test_a_folder_named_like_a_preset_does_not_hide_the_preset(tmp_path, monkeypatch):
    """A run folder called 'fast' in the working directory made --config fast fail."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").mkdir()
    (tmp_path / "exact").mkdir()
    assert load_config("fast").stages[0].probe
    assert load_retrieval_config("exact").index.kind == "flat"
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileNotFoundError, match="folder"):
        load_config("mine")


def test_a_last_crop_below_the_smallest_input_size_is_refused_by_the_config():
    """crop.size 8 filled model.input_size without validation; training wrote config.yaml, split.csv and the
    cache, then failed with pydantic's raw multi-line error when it built the spec."""
    with pytest.raises(ValueError, match="crop.size 8"):
        load_config("fast", {"stages": [{"probe": True, "crop": {"size": 8, "resize": 10}}]})


@pytest.mark.parametrize("preprocess, match", [
    ({"size": 10 ** 6, "resize": 10 ** 6}, "preprocess"), ({"size": 32, "mean": [math.nan, 0, 0]}, "preprocess"),
    ("abc", "preprocess"), (None, "preprocess")])
def test_an_onnx_file_with_unusable_preprocessing_metadata_is_refused_when_opened(tmp_path, preprocess, match):
    """The ONNX runtime took its metadata's preprocessing unchecked (predict normalised it, embed read it raw)."""
    from landmark.inference.export import set_metadata, write_fp32
    from landmark.models.runtime import OnnxRuntime
    path = tmp_path / "m.onnx"
    model = create_model("test_efficientnet", 2, weights="none", input_size=32).eval()
    write_fp32(model, 32, path, {"classes": ["a", "b"], "preprocess": dict(model.preprocess)})
    assert OnnxRuntime(path, threads=1).preprocess == dict(model.preprocess)
    set_metadata(path, {"classes": ["a", "b"], "preprocess": preprocess})
    with pytest.raises(ValueError, match=match):
        OnnxRuntime(path, threads=1)
    set_metadata(path, {"preprocess": dict(model.preprocess)})
    with pytest.raises(ValueError, match="classes"):
        OnnxRuntime(path, threads=1)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, "3", True])
def test_create_model_names_a_bad_number_of_classes(num_classes):
    """0 said 'counts must be a non-empty 1-d sequence'; 2.5 and '3' were TypeErrors from deep inside."""
    with pytest.raises(ValueError, match="num_classes"):
        create_model("tf_efficientnet_lite0", num_classes, weights="none")


def test_non_finite_class_counts_are_refused_not_turned_into_nan_margins():
    with pytest.raises(ValueError, match="counts"):
        create_model("tf_efficientnet_lite0", 3, weights="none", loss="arcface", class_counts=[math.nan, 1, 1])


def test_a_head_cannot_be_registered_as_auto():
    from landmark.models import register_head
    with pytest.raises(ValueError, match="auto"):
        register_head("auto")


@pytest.mark.parametrize("flag", [("--epochs", "5"), ("--weights", "none")])
def test_train_resume_refuses_flags_it_would_ignore(monkeypatch, capsys, tmp_path, flag):
    """--resume continues the run's saved config: --epochs 5 / --weights were silently ignored."""
    (tmp_path / "run").mkdir()
    code, out = run(monkeypatch, capsys, "train", "--resume", tmp_path / "run", *flag)
    assert code == 2 and "Traceback" not in out and flag[0] in out and "--resume" in out


@pytest.mark.parametrize("section, overrides", [
    ("model", {"model": {"embedding_dim": True}}),        # a 1-d embedding
    ("model", {"model": {"subcenters": True}}),
    ("data", {"data": {"batch_size": True}}),
    ("stages", {"stages": [{"probe": True, "probe_iters": True}]}),
])
def test_true_where_a_number_belongs_is_refused_not_read_as_one(section, overrides):
    with pytest.raises(ValueError, match=f"{section}.*true/false where a number belongs"):
        load_config("fast", overrides)


def test_true_where_a_retrieval_number_belongs_is_refused():
    with pytest.raises(ValueError, match="verify.top.*true/false where a number belongs"):
        load_retrieval_config("exact", {"verify": {"top": True}})
    assert load_config("fast", {"data": {"clean": True, "final_fit": False}}).data.clean is True   # booleans stay


def test_a_misspelt_preprocess_key_is_refused_not_replaced_by_the_default(tmp_path):
    """{"size": 128, "Mean": ...} normalised with ImageNet's mean, silently."""
    with pytest.raises(ValueError, match="'Mean'"):
        Preprocess.of({"size": 128, "Mean": [0.5, 0.5, 0.5]})
    model = create_model("tf_efficientnet_lite0", 2, weights="none", input_size=32)
    with pytest.raises(ValueError, match="'means'"):
        save_checkpoint(tmp_path / "m.pt", model, ["a", "b"], preprocess={"size": 32, "means": [0.5] * 3})


def test_an_image_size_beyond_any_network_is_refused_before_anything_is_written(saved, tmp_path, monkeypatch,
                                                                                capsys):
    """--image-size 1000000 (or image_size= in the library) resized every photo to 10^6 pixels a side."""
    import pandas as pd
    from landmark.retrieval.embeddings import embed_images
    from landmark.retrieval.shards import embed_shard
    model, ckpt = load_model(saved[0])
    frame = pd.DataFrame({"id": ["x"], "path": [str(tmp_path / "x.jpg")]})
    with pytest.raises(ValueError, match="image_size"):
        embed_images(model, ckpt["preprocess"], frame, tmp_path / "e.npy", image_size=10 ** 6)
    with pytest.raises(ValueError, match="image_size"):
        embed_shard(model, ckpt["preprocess"], frame, tmp_path / "shards", image_size=10 ** 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    code, out = run(monkeypatch, capsys, "embed", saved[0], "--images", tmp_path, "--out", tmp_path / "e.npy",
                    "--image-size", 10 ** 6)
    assert code == 2 and "Traceback" not in out
