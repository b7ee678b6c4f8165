"""One factory for every model: a timm backbone, a registered head, layer freezing, checkpoints.

Every :class:`LandmarkNet` has the same interface: ``forward_features`` (feature map),
``embed`` (pooled descriptor), ``forward`` (logits), ``freeze(n)``; it carries its
resolved :class:`~landmark.models.spec.ModelSpec` (``spec``) and its
:class:`~landmark.data.preprocess.Preprocess` (``preprocess``), both stored in every
checkpoint, so that :func:`load_model` rebuilds it from the file alone.

Checkpoint format 2 (``ckpt["format"]``): ``spec`` (the resolved specification),
``num_classes``, ``classes``, ``preprocess``, ``state_dict`` and whatever the trainer adds
(``names``, ``history``, ``reject_threshold``...).  Format 1 files (an ``arch`` dict instead of
``spec``) are read and upgraded in memory.
"""
from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from ..data.preprocess import Preprocess
from .heads import FCHead, GeMHead, Head
from .margin import ArcMarginHead, dynamic_margins
from .spec import ModelSpec, spec_from_arch, validation_fields
from .weights import WeightsError, create_backbone

CHECKPOINT_FORMAT = 2
# what save_checkpoint writes itself (and read_checkpoint derives: arch); the rest is the caller's extra
STORED = ("format", "spec", "num_classes", "classes", "preprocess", "state_dict", "arch")

# name -> builder(spec, in_features, num_classes, margins [K] radians) -> Head
HeadBuilder = Callable[[ModelSpec, int, int, torch.Tensor], Head]
HEADS: dict[str, HeadBuilder] = {}


def register_head(name: str, replace: bool = False) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator: register a head builder under ``name`` (then ``model: head: NAME`` selects it).

    Raises:
        ValueError: ``auto`` (it means "fc or gem by backbone" and would never select the head);
            a name already registered, unless ``replace`` (checkpoints naming it would
            reload with another head).
    """
    if name == "auto":
        raise ValueError("'auto' is not a head name (head: auto chooses fc or gem); register under another name")
    if name in HEADS and not replace:
        raise ValueError(f"head {name!r} is already registered; choose another name (or replace=True)")

    def add(builder: HeadBuilder) -> HeadBuilder:
        HEADS[name] = builder
        return builder
    return add


def list_heads() -> list[str]:
    """Names of the registered heads (``fc``, ``gem``, and any registered since)."""
    return sorted(HEADS)


@register_head("fc")
def _fc_head(spec: ModelSpec, channels: int, num_classes: int, margins: torch.Tensor) -> Head:
    return FCHead(channels, num_classes, spec.fc_dim, spec.dropout)


@register_head("gem")
def _gem_head(spec: ModelSpec, channels: int, num_classes: int, margins: torch.Tensor) -> Head:
    if spec.loss == "softmax":
        return GeMHead(channels, num_classes, spec.dropout, spec.gem_p, embedding_dim=spec.embedding_dim)
    return ArcMarginHead(channels, num_classes, spec.embedding_dim, spec.centres, scale=spec.arcface_s, margins=margins,
                         dropout=spec.dropout, p=spec.gem_p)


def backbone_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's *layers*, bottom (input side) first.

    A layer is a module that owns parameters directly (convolution, batch norm,
    linear, ...), listed in definition order, which for timm CNNs is the order of the
    forward pass.  Modules without parameters (activations, pooling, dropout) are not
    layers, so depths differ from Keras' layer indices; ``tf_efficientnet_lite0`` has
    98 layers, ``legacy_xception`` 114, ``vgg16`` 13.
    """
    return [(name, m) for name, m in backbone.named_modules() if any(True for _ in m.parameters(recurse=False))]


def freeze_depth(layers: Sequence[tuple[str, nn.Module]], n: int | float | str) -> int:
    """How many bottom layers ``n`` means: a count, a fraction in (0, 1) of the layers, -1 for
    all, or the name of a backbone block (e.g. ``blocks.3``): every layer up to and including it.

    Raises:
        ValueError: a block name that names no module of the backbone.
    """
    if isinstance(n, str):
        inside = [k for k, (name, _) in enumerate(layers) if name == n or name.startswith(n + ".")]
        if not inside:
            blocks = dict.fromkeys(".".join(name.split(".")[:2]) if name.count(".") > 1 else name.split(".")[0]
                                   for name, _ in layers)   # definition order: bottom first
            raise ValueError(f"freeze: {n!r} names no block of this backbone; its blocks, bottom first: "
                             f"{', '.join(blocks)}")
        return inside[-1] + 1
    if isinstance(n, float) and 0.0 < n < 1.0:
        return round(n * len(layers))
    return len(layers) if n < 0 else min(int(n), len(layers))


class LandmarkNet(nn.Module):
    """Backbone + head classifier over ``num_classes`` landmarks, built from a :class:`ModelSpec`.

    Input: float tensor ``[B, 3, H, W]`` normalised with ``preprocess.mean``/``std``.

    Args:
        spec: the specification (resolved here against the backbone: ``self.spec``).
        num_classes: ``K``.
        weights: backbone weights: ``imagenet``, ``none`` or a state-dict path.
        class_counts: training images per class ``[K]``, for the dynamic margins of margin
            losses; None treats every class as one image (margin ``margin_a + margin_b``).

    Raises:
        ValueError: a head that is not registered.
        WeightsError: the weights cannot be had.
    """

    def __init__(self, spec: ModelSpec, num_classes: int, weights: str = "imagenet",
                 class_counts: Sequence[int] | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes must be a whole number >= 1, not {num_classes!r}")
        num_classes = int(num_classes)
        if spec.head != "auto" and spec.head not in HEADS:
            raise ValueError(f"head {spec.head!r} is not registered; choose one of {', '.join(list_heads())} or auto "
                             f"(a custom head: import the module that calls register_head first)")
        self.backbone = create_backbone(spec.backbone, weights)
        self.spec = spec.resolved(self.backbone.pretrained_cfg)
        self.num_classes = num_classes
        counts = class_counts if class_counts is not None else [1] * num_classes
        margins = dynamic_margins(counts, self.spec.margin_a, self.spec.margin_b, self.spec.margin_power)
        self.head = HEADS[self.spec.head](self.spec, self.backbone.num_features, num_classes, margins)
        self.preprocess: Preprocess = self.spec.preprocess()
        self.frozen = 0
        self._frozen_norms: list[nn.Module] = []

    @property
    def arch(self) -> dict:
        """A JSON view of the architecture: the resolved spec and ``num_classes``."""
        return {**self.spec.model_dump(mode="json"), "num_classes": self.num_classes}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> feature map ``[B, C, h, w]``."""
        return self.backbone.forward_features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> pooled (and projected, with ``embedding_dim``) descriptor ``[B, D]`` (not normalised)."""
        return self.head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> logits ``[B, num_classes]`` (float32); margin heads: ``s * cos(theta)``, no margin."""
        return self.head(self.forward_features(x))

    def logits_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs from one backbone pass and one pooling: ``[B, 3, H, W]`` -> (logits
        ``[B, num_classes]``, embedding ``[B, D]``), as :meth:`forward` and :meth:`embed` give them."""
        pooled = self.head.pool(self.forward_features(x))
        return self.head.classify(pooled), self.head.classify(pooled, pre_logits=True)

    def loss_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The logits the training loss sees: ``logits`` itself for softmax, with the
        per-class angular margin on the target class for ArcFace heads.

        Args:
            logits: ``[B, K]`` from :meth:`forward`; target: int64 ``[B]``.
        """
        return self.head.margin_logits(logits, target)

    def freeze(self, n: int | float | str, freeze_bn: bool = False) -> int:
        """Freeze the bottom backbone layers (:func:`backbone_layers`) that ``n`` names.

        Args:
            n: a layer count, a fraction in (0, 1) of the backbone's layers (the same
                depth means the same share of any backbone), -1 for all, or a block name
                (``blocks.3``: every layer up to and including that block); see :func:`freeze_depth`.
            freeze_bn: also keep the BatchNorm layers above ``n`` on their running
                statistics (eval mode; their affine parameters still train), so that
                unfreezing does not swap ImageNet statistics for small-batch ones.

        Frozen layers get ``requires_grad=False``; frozen batch norms also keep their
        running statistics (they stay in eval mode).  Layers above ``n`` are unfrozen.

        Returns:
            the number of layers frozen.
        Raises:
            ValueError: a block name that names no block.
        """
        layers = backbone_layers(self.backbone)
        n = freeze_depth(layers, n)
        self._frozen_norms = []
        for k, (_, module) in enumerate(layers):
            for p in module.parameters(recurse=False):
                p.requires_grad_(k >= n)
            if (k < n or freeze_bn) and isinstance(module, nn.modules.batchnorm._NormBase):
                self._frozen_norms.append(module)
        self.frozen = n
        self.train(self.training)
        return n

    def train(self, mode: bool = True) -> "LandmarkNet":
        super().train(mode)
        for module in self._frozen_norms:
            module.eval()
        return self


def create_model(backbone: str | None = None, num_classes: int = 1000, *, weights: str = "imagenet",
                 class_counts: Sequence[int] | None = None, spec: ModelSpec | None = None,
                 **overrides) -> LandmarkNet:
    """Create a :class:`LandmarkNet` from a spec, or from ``backbone`` and spec fields as keywords.

    ``create_model("tf_efficientnet_lite0", 13, loss="arcface", embedding_dim=512)`` is
    ``LandmarkNet(ModelSpec(backbone=..., loss="arcface", embedding_dim=512), 13)``; every
    field left out takes the :class:`ModelSpec` default.

    ``backbone`` None is the spec's (or :class:`ModelSpec`'s default); with ``spec=`` it must agree.

    Raises:
        ValueError: an unknown or invalid spec field (one line per field); an unregistered head;
            a ``backbone`` that differs from ``spec.backbone``.
        WeightsError: the weights cannot be had.
    """
    if spec is not None and backbone is not None and backbone != spec.backbone:
        raise ValueError(f"backbone {backbone!r} differs from spec.backbone {spec.backbone!r}; give one of them")
    if spec is None:
        try:
            spec = ModelSpec(**({"backbone": backbone} if backbone is not None else {}), **overrides)
        except ValidationError as err:
            raise ValueError(validation_fields(err, ModelSpec)) from None
    elif overrides:
        raise ValueError(f"give either spec= or spec fields ({', '.join(overrides)}), not both")
    return LandmarkNet(spec, num_classes, weights, class_counts)


def save_checkpoint(path: str | Path, model: LandmarkNet, classes: list[str],
                    preprocess: Preprocess | dict | None = None, **extra) -> None:
    """Write a format-2 checkpoint atomically (temp file + rename): ``format``, ``spec``,
    ``num_classes``, ``classes``, ``preprocess`` (``preprocess`` if given, else
    ``model.preprocess``), ``state_dict``, ``**extra``.

    Only plain data is stored (tensors, dicts, lists, str, numbers; numpy scalars become
    Python numbers), so that :func:`read_checkpoint` reads it with torch's ``weights_only``
    loader, which never runs code from the file.

    Raises:
        ValueError: ``classes`` does not have one entry per output of the model; a bad
            ``preprocess``; a non-finite weight or buffer (NaN or inf, e.g. a diverged GeM
            ``head.pool.p``): nothing is written, an older file at ``path`` stays as it was.
    """
    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model of {model.num_classes} outputs")
    preprocess = Preprocess.of(model.preprocess if preprocess is None else preprocess)
    write_checkpoint(path, {"format": CHECKPOINT_FORMAT, "spec": model.spec.model_dump(mode="json"),
                            "num_classes": model.num_classes, "classes": list(classes),
                            "preprocess": preprocess.to_dict(), "state_dict": model.state_dict(),
                            **{k: _plain(v) for k, v in extra.items()}})


def write_checkpoint(path: str | Path, ckpt: dict) -> None:
    """Write a checkpoint dict (as :func:`read_checkpoint` returns it, or :func:`save_checkpoint`
    builds it) atomically: temp file in the same folder, fsync, rename.

    Raises:
        ValueError: a floating-point tensor of ``ckpt["state_dict"]`` holds NaN or inf (nothing is
            written); an entry torch's ``weights_only`` loader could not read back.
    """
    path = Path(path)
    bad = non_finite(ckpt.get("state_dict", {}))
    if bad:
        raise ValueError(f"refusing to write {path}: non-finite values (NaN or inf) in {bad[0]}"
                         f"{f' and {len(bad) - 1} more tensors' if len(bad) > 1 else ''}; training diverged "
                         f"(lower the learning rate) and the last finite checkpoint is kept")
    ckpt = {k: v for k, v in ckpt.items() if k != "arch"}   # derived by read_checkpoint, never stored
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def non_finite(state_dict: dict) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold NaN or inf."""
    return [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()
            and not torch.isfinite(v).all()]


def _plain(value):
    """``value`` with numpy scalars and arrays turned into Python numbers and tensors
    (what torch's ``weights_only`` loader reads without allow-listing numpy)."""
    import numpy as np
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value) if type(value) in (list, tuple) else [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value


def load_checkpoint_file(path: str | Path, map_location: str = "cpu"):
    """``torch.load`` with the ``weights_only`` unpickler: tensors, dicts, lists, str and numbers
    are read; a file that asks to import anything else (e.g. ``os.system`` in a ``__reduce__``
    payload) is refused before any of it runs.

    Raises:
        pickle.UnpicklingError: the file needs a global torch's safe loader does not allow
            (:func:`refused_global` names it); other errors of a file that is no torch file.
    """
    _allow_numpy_scalars()
    return torch.load(path, map_location=map_location, weights_only=True)


@functools.cache
def _allow_numpy_scalars() -> None:
    """Let the ``weights_only`` loader rebuild numpy scalars (``np.float64(0.5)`` in the history of
    a checkpoint written before :func:`save_checkpoint` stored plain numbers): numpy's scalar
    constructor and its numeric, bool and string dtypes, which build values and run nothing else."""
    import numpy as np
    dtypes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGUS"}
    torch.serialization.add_safe_globals([np.dtype, *sorted(dtypes, key=str), _numpy_scalar(np)])


def _numpy_scalar(np):
    """numpy's scalar constructor (``numpy._core.multiarray.scalar``; ``numpy.core`` before numpy 2)."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


def refused_global(err: BaseException) -> str | None:
    """The global a ``weights_only`` load refused to import (``'posix.system'``), else None."""
    import pickle
    import re
    if not isinstance(err, pickle.UnpicklingError):
        return None
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return found.group(1) if found else "a Python object that is not plain data"


def read_checkpoint(path: str | Path, hint: str = "", keys: tuple[str, ...] = (),
                    map_location: str = "cpu") -> dict:
    """Read a checkpoint file written by :func:`save_checkpoint` and check its entries.

    Format-1 files (``arch`` instead of ``spec``) are upgraded in memory.  The returned dict
    also holds ``arch``, a JSON view of the spec with ``num_classes`` (not stored).

    Args:
        hint: appended to error messages (what the user can do about it).
        keys: entries required beside ``spec``, ``classes``, ``preprocess`` and ``state_dict``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, an empty or truncated file, not a torch file, or a torch file
            that is not a landmark checkpoint (entries missing, an invalid spec or
            preprocessing, classes that disagree with ``num_classes``, non-finite weights).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the checkpoint file, e.g. {path / 'checkpoints' / 'best.pt'}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a landmark checkpoint{hint}")
    if path.suffix.lower() == ".onnx":
        raise ValueError(f"{path} is an ONNX export, not a PyTorch checkpoint: run it with "
                         f"landmark.models.load_runtime(path, 'onnx') (CLI: --runtime onnx){hint}")
    try:
        ckpt = load_checkpoint_file(path, map_location=map_location)
    except Exception as err:  # pickle, zip and torch errors of a truncated file or one that is no torch checkpoint
        code = refused_global(err)
        if code:
            raise ValueError(f"{path} is not a landmark checkpoint: reading it would run {code} (a checkpoint "
                             f"holds only data); refused, nothing in it was run{hint}") from None
        raise ValueError(f"{path} is not a landmark checkpoint, or is truncated ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:160]}){hint}") from None
    if isinstance(ckpt, dict) and "spec" not in ckpt and isinstance(ckpt.get("arch"), dict):
        ckpt = _upgrade_format1(ckpt, path, hint)
    missing = [k for k in ("spec", "classes", "preprocess", "state_dict", *keys)
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a landmark checkpoint (no {', '.join(map(repr, missing))} entry){hint}")
    if ckpt.get("format", CHECKPOINT_FORMAT) not in (1, CHECKPOINT_FORMAT):
        raise ValueError(f"{path} is checkpoint format {ckpt['format']!r}; this landmark reads formats 1 and "
                         f"{CHECKPOINT_FORMAT} (a newer landmark wrote it, or the file was altered){hint}")
    wrong = [f"{k} ({type(ckpt.get(k)).__name__})" for k, kind in
             (("state_dict", dict), ("classes", (list, tuple)), ("num_classes", int))
             if not isinstance(ckpt.get(k), kind) or (kind is int and isinstance(ckpt.get(k), bool))]
    if wrong:
        raise ValueError(f"{path} is not a landmark checkpoint: wrong type of {', '.join(wrong)}; state_dict is a "
                         f"mapping, classes a list, num_classes an integer{hint}")
    try:
        spec = ModelSpec.model_validate(ckpt["spec"])
        preprocess = Preprocess.of(ckpt["preprocess"])
    except ValidationError as err:
        raise ValueError(f"{path}: its model specification is invalid ({validation_fields(err)[:240]}){hint}") from None
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: its model specification or preprocessing is invalid "
                         f"({' '.join(str(err).split())[:160]}){hint}") from None
    # every reader (predict, embed, export, saliency, the report) sees the checked values, not the file's text
    ckpt["spec"], ckpt["preprocess"] = spec.model_dump(mode="json"), preprocess.to_dict()
    if len(ckpt["classes"]) != ckpt.get("num_classes"):
        raise ValueError(f"{path} lists {len(ckpt['classes'])} classes but its architecture has "
                         f"{ckpt.get('num_classes')} outputs; the file was altered or mixed from two runs{hint}")
    bad = non_finite(ckpt["state_dict"])
    if bad:
        raise ValueError(f"{path} holds non-finite weights (NaN or inf in {bad[0]}"
                         f"{f' and {len(bad) - 1} more tensors' if len(bad) > 1 else ''}); it cannot predict{hint}")
    ckpt["arch"] = {**spec.model_dump(mode="json"), "num_classes": ckpt["num_classes"]}
    return ckpt


def _upgrade_format1(ckpt: dict, path: Path, hint: str) -> dict:
    """Format 1 (``arch`` dict, before the model specification) -> format 2, in memory."""
    arch = ckpt["arch"]
    if not {"backbone", "num_classes", "head"} <= set(arch):
        raise ValueError(f"{path}: its 'arch' entry lacks backbone/num_classes/head{hint}")
    try:
        spec = spec_from_arch(arch)
    except ValidationError as err:
        raise ValueError(f"{path}: its 'arch' entry is invalid ({validation_fields(err)[:240]}){hint}") from None
    except (KeyError, TypeError, ValueError) as err:   # mean without std, a number where a list belongs
        raise ValueError(f"{path}: its 'arch' entry is invalid ({type(err).__name__}: {err}){hint}") from None
    return {**ckpt, "format": 1, "spec": spec.model_dump(mode="json"), "num_classes": arch["num_classes"]}


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[LandmarkNet, dict]:
    """Rebuild a model from a checkpoint file alone (checked by :func:`read_checkpoint`):
    its ``spec``, ``num_classes``, ``preprocess`` and weights.

    Returns:
        (model in eval mode with ``model.preprocess`` from the file, the checkpoint dict:
        ``spec``, ``classes``, ``preprocess``, ``names``...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a landmark checkpoint, or its weights do not fit its
            specification (names the first tensors that differ).
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    spec = ModelSpec.model_validate(ckpt["spec"])
    try:
        model = LandmarkNet(spec, ckpt["num_classes"], weights="none")
    except (WeightsError, ValueError) as err:
        raise ValueError(f"{path}: its architecture cannot be built ({err})") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:240]
        raise ValueError(f"{path}: its weights do not fit its architecture ({spec.backbone}, "
                         f"{ckpt['num_classes']} classes): {detail}") from None
    model.preprocess = Preprocess.of(ckpt["preprocess"])
    return model.eval(), ckpt
