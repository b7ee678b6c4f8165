"""One factory for every model: a timm backbone, a head, and layer freezing.

Every :class:`LandmarkNet` has the same interface: ``forward_features`` (feature map),
``embed`` (pooled descriptor), ``forward`` (logits), ``freeze(n)``; and the metadata
needed to rebuild it from a checkpoint file alone (``arch``).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .heads import FCHead, GeMHead
from .margin import ArcMarginHead
from .weights import WeightsError, create_backbone

# Heads chosen by head="auto": the original work's VGG16 baseline gets the FC head,
# everything else (Xception and any other timm backbone) the GeM head.
FC_HEAD_BACKBONES = ("vgg",)


def backbone_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's *layers*, bottom (input side) first.

    A layer is a module that owns parameters directly (convolution, batch norm,
    linear, ...), listed in definition order, which for timm CNNs is the order of the
    forward pass.  Modules without parameters (activations, pooling, dropout) are not
    layers, so depths differ from Keras' layer indices; ``tf_efficientnet_lite0`` has
    98 layers, ``legacy_xception`` 114, ``vgg16`` 13.
    """
    return [(name, m) for name, m in backbone.named_modules() if any(True for _ in m.parameters(recurse=False))]


class LandmarkNet(nn.Module):
    """Backbone + head classifier over ``num_classes`` landmarks.

    Input: float tensor ``[B, 3, H, W]`` normalised with ``arch['mean']``/``arch['std']``.

    ``loss`` selects the classifier: ``softmax`` (linear layer, cross-entropy) or the
    angular-margin heads ``arcface`` / ``subcenter_arcface`` (``subcenters`` centres per
    class, logit scale ``arcface_s``, per-class ``margins`` in radians, see
    :mod:`landmark.models.margin`); margin heads always pool with GeM.  ``embedding_dim``
    adds a ``Linear + BatchNorm1d`` projection after GeM (``embed`` then returns
    ``[B, embedding_dim]``).

    Raises:
        ValueError: a margin loss with ``head="fc"``, or an unknown ``loss``.
    """

    def __init__(self, backbone: str = "tf_efficientnet_lite0", num_classes: int = 1000, head: str = "auto",
                 weights: str = "imagenet", dropout: float = 0.2, fc_dim: int = 256, gem_p: float = 3.0,
                 loss: str = "softmax", embedding_dim: int | None = None, subcenters: int = 1,
                 arcface_s: float = 30.0, margins: torch.Tensor | float = 0.0):
        super().__init__()
        if loss not in ("softmax", "arcface", "subcenter_arcface"):
            raise ValueError(f"loss must be softmax, arcface or subcenter_arcface, not {loss!r}")
        if head == "auto":
            head = "gem" if loss != "softmax" or not backbone.startswith(FC_HEAD_BACKBONES) else "fc"
        if loss != "softmax" and head != "gem":
            raise ValueError(f"loss {loss!r} needs the GeM head (head: gem or auto), not {head!r}")
        subcenters = subcenters if loss == "subcenter_arcface" else 1
        self.backbone = create_backbone(backbone, weights)
        channels = self.backbone.num_features
        if loss != "softmax":
            self.head = ArcMarginHead(channels, num_classes, embedding_dim, subcenters, arcface_s, margins, dropout,
                                      gem_p)
        elif head == "fc":
            self.head = FCHead(channels, num_classes, fc_dim, dropout)
        else:
            self.head = GeMHead(channels, num_classes, dropout, gem_p, embedding_dim)
        cfg = self.backbone.pretrained_cfg
        self.arch = {"backbone": backbone, "num_classes": num_classes, "head": head, "dropout": dropout,
                     "fc_dim": fc_dim, "gem_p": gem_p, "mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
                     "std": list(cfg.get("std", (0.229, 0.224, 0.225))), "loss": loss,
                     "embedding_dim": embedding_dim, "subcenters": subcenters, "arcface_s": arcface_s}
        self.frozen = 0
        self._frozen_norms: list[nn.Module] = []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> feature map ``[B, C, h, w]``."""
        return self.backbone.forward_features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> pooled (and projected, with ``embedding_dim``) descriptor ``[B, D]`` (not normalised)."""
        return self.head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> logits ``[B, num_classes]`` (float32); margin heads: ``s * cos(theta)``, no margin."""
        return self.head(self.forward_features(x))

    def loss_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The logits the training loss sees: ``logits`` itself for softmax, with the
        per-class angular margin on the target class for ArcFace heads.

        Args:
            logits: ``[B, K]`` from :meth:`forward`; target: int64 ``[B]``.
        """
        return self.head.margin_logits(logits, target) if getattr(self.head, "uses_margin", False) else logits

    def freeze(self, n: int | float, freeze_bn: bool = False) -> int:
        """Freeze the bottom ``n`` backbone layers (:func:`backbone_layers`).

        Args:
            n: a layer count, a fraction in (0, 1) of the backbone's layers (the same
                depth means the same share of any backbone), or -1 for all.
            freeze_bn: also keep the BatchNorm layers above ``n`` on their running
                statistics (eval mode; their affine parameters still train), so that
                unfreezing does not swap ImageNet statistics for small-batch ones.

        Frozen layers get ``requires_grad=False``; frozen batch norms also keep their
        running statistics (they stay in eval mode).  Layers above ``n`` are unfrozen.

        Returns:
            the number of layers frozen.
        """
        layers = backbone_layers(self.backbone)
        if isinstance(n, float) and 0.0 < n < 1.0:
            n = round(n * len(layers))
        n = len(layers) if n < 0 else min(int(n), len(layers))
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


def create_model(backbone: str = "tf_efficientnet_lite0", num_classes: int = 1000, **kwargs) -> LandmarkNet:
    """Create a :class:`LandmarkNet`; see its arguments.  Raises ``WeightsError`` (weights)."""
    return LandmarkNet(backbone, num_classes, **kwargs)


def save_checkpoint(path: str | Path, model: LandmarkNet, classes: list[str], **extra) -> None:
    """Write ``{arch, classes, state_dict, **extra}`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"arch": model.arch, "classes": list(classes), "state_dict": model.state_dict(), **extra}, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, hint: str = "", keys: tuple[str, ...] = (),
                    map_location: str = "cpu") -> dict:
    """Read a checkpoint file written by :func:`save_checkpoint` and check its entries.

    Args:
        hint: appended to error messages (what the user can do about it).
        keys: entries required beside ``arch``, ``classes`` and ``state_dict``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, an empty or truncated file, not a torch file, or a torch file
            that is not a landmark checkpoint (entries missing, classes that disagree with
            ``arch['num_classes']``, non-finite weights).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the checkpoint file, e.g. {path / 'checkpoints' / 'best.pt'}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a landmark checkpoint{hint}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # pickle, zip and torch errors of a truncated file or one that is no torch checkpoint
        raise ValueError(f"{path} is not a landmark checkpoint, or is truncated ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:160]}){hint}") from None
    missing = [k for k in ("arch", "classes", "state_dict", *keys) if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a landmark checkpoint (no {', '.join(map(repr, missing))} entry){hint}")
    arch = ckpt["arch"]
    if not isinstance(arch, dict) or not {"backbone", "num_classes", "head"} <= set(arch):
        raise ValueError(f"{path}: its 'arch' entry lacks backbone/num_classes/head{hint}")
    if len(ckpt["classes"]) != arch["num_classes"]:
        raise ValueError(f"{path} lists {len(ckpt['classes'])} classes but its architecture has "
                         f"{arch['num_classes']} outputs; the file was altered or mixed from two runs{hint}")
    bad = [k for k, v in ckpt["state_dict"].items() if torch.is_tensor(v) and v.is_floating_point()
           and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path} holds non-finite weights (NaN or inf in {bad[0]}"
                         f"{f' and {len(bad) - 1} more tensors' if len(bad) > 1 else ''}); it cannot predict{hint}")
    return ckpt


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[LandmarkNet, dict]:
    """Rebuild a model from a checkpoint file alone (checked by :func:`read_checkpoint`).

    Returns:
        (model in eval mode, the checkpoint dict: ``arch``, ``classes``, ``preprocess``...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a landmark checkpoint, or its weights do not fit its
            architecture (names the first tensors that differ).
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    arch = ckpt["arch"]
    try:
        model = LandmarkNet(arch["backbone"], arch["num_classes"], arch["head"], weights="none",
                            dropout=arch.get("dropout", 0.0), fc_dim=arch.get("fc_dim", 256),
                            gem_p=arch.get("gem_p", 3.0), loss=arch.get("loss", "softmax"),
                            embedding_dim=arch.get("embedding_dim"), subcenters=arch.get("subcenters", 1),
                            arcface_s=arch.get("arcface_s", 30.0))
    except WeightsError as err:
        raise ValueError(f"{path}: its architecture cannot be built ({err})") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:240]
        raise ValueError(f"{path}: its weights do not fit its architecture ({arch['backbone']}, "
                         f"{arch['num_classes']} classes): {detail}") from None
    return model.eval(), ckpt
