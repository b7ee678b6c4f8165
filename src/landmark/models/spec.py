"""The model specification: everything that defines a network's architecture, in one place.

:class:`ModelSpec` is embedded in the training config (``model:``), consumed by the
factory (:func:`landmark.models.create_model`) and stored in every checkpoint
(``ckpt["spec"]``, resolved: head chosen, mean/std filled in), so that
:func:`landmark.models.load_model` rebuilds the network from the file alone.  Each
default below is the only one: the factory, the heads and the trainer take their
values from here.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..data.preprocess import MAX_SIDE, Preprocess
from .fields import refuse_bool_numbers, validation_fields  # noqa: F401  (re-exported)

LOSSES = ("softmax", "arcface", "subcenter_arcface")
# Heads chosen by head="auto": the original work's VGG16 baseline gets the FC head,
# everything else (Xception and any other timm backbone) the GeM head.
FC_HEAD_BACKBONES = ("vgg",)


class ModelSpec(BaseModel):
    """Backbone (a timm name), pooling, neck, head and loss, input size and normalisation.

    The network is ``backbone -> pooling (GeM, or average for the FC head) -> [neck:
    Linear + BatchNorm1d to embedding_dim] -> head``.  ``head`` names an entry of the head
    registry (:func:`landmark.models.list_heads`) or ``auto``.  Margin losses
    (``arcface``, ``subcenter_arcface``) give the GeM head angular-margin logits: class
    ``j`` with ``n_j`` training images gets margin ``margin_a * n_j ** -margin_power +
    margin_b`` radians (:func:`landmark.models.dynamic_margins`).

    Raises (on validation):
        pydantic.ValidationError: unknown keys, values out of range, a margin loss with
            the FC head, a std that is not positive.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    backbone: str = "tf_efficientnet_lite0"
    head: str = Field("auto", description="a registered head (fc, gem) or auto: fc for VGG, else gem")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    fc_dim: int = Field(256, ge=1, description="width of the two hidden FC layers of the 'fc' head")
    gem_p: float = Field(3.0, gt=0.0, description="initial GeM exponent")
    loss: Literal["softmax", "arcface", "subcenter_arcface"] = Field(
        "softmax", description="classifier/loss: linear+softmax, ArcFace, or sub-center ArcFace (GeM head only)")
    embedding_dim: int | None = Field(None, ge=1, description="Linear+BatchNorm1d neck after GeM; null = none")
    arcface_s: float = Field(30.0, gt=0.0, description="ArcFace logit scale s")
    margin_a: float = Field(0.5, ge=0.0, description="dynamic margin m = a * n^-power + b (radians); 0 = fixed b")
    margin_b: float = Field(0.05, ge=0.0, description="dynamic margin offset b (radians)")
    margin_power: float = Field(0.25, ge=0.0, description="dynamic margin exponent (1/4 in GLR 2020 solutions)")
    subcenters: int = Field(3, ge=1, description="centres per class (subcenter_arcface only; others use 1)")
    input_size: int | None = Field(None, ge=16, le=MAX_SIDE, description="pixels, network input side; null = the last "
                                   "training stage's crop size (training) or the backbone's default")
    mean: tuple[float, float, float] | None = Field(None, description="RGB normalisation; null = the backbone's")
    std: tuple[float, float, float] | None = Field(None, description="RGB normalisation; null = the backbone's")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value, info: ValidationInfo):
        return refuse_bool_numbers(cls, value, info)

    @model_validator(mode="after")
    def _margin_head(self) -> "ModelSpec":
        if self.loss != "softmax" and self.head == "fc":
            raise ValueError(f"loss {self.loss} needs the GeM head; set head: gem (or auto)")
        return self

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if std is not None and min(std) <= 0:
            raise ValueError(f"every value must be > 0 (inputs are divided by it), not {list(std)}")
        return std

    @property
    def centres(self) -> int:
        """Centres per class the head really has: ``subcenters`` for sub-center ArcFace, else 1."""
        return self.subcenters if self.loss == "subcenter_arcface" else 1

    def resolved(self, pretrained_cfg: dict | None = None) -> "ModelSpec":
        """This spec with ``head`` chosen and ``input_size``/``mean``/``std`` filled in from the
        backbone's timm ``pretrained_cfg`` (``input_size`` ``(3, H, W)``, ``mean``, ``std``)."""
        cfg = pretrained_cfg or {}
        head = self.head
        if head == "auto":
            head = "fc" if self.loss == "softmax" and self.backbone.startswith(FC_HEAD_BACKBONES) else "gem"
        default = Preprocess(size=int(cfg.get("input_size", (3, 224, 224))[-1]))
        return self.model_copy(update={
            "head": head, "input_size": self.input_size or default.size,
            "mean": tuple(self.mean or cfg.get("mean") or default.mean),
            "std": tuple(self.std or cfg.get("std") or default.std)})

    def preprocess(self, resize: int = 0) -> Preprocess:
        """The evaluation preprocessing of a resolved spec (``resize`` 0: ``input_size / 0.875``).

        Raises:
            ValueError: the spec is not resolved (no ``input_size``).
        """
        if self.input_size is None:
            raise ValueError("resolve the spec first (ModelSpec.resolved): it has no input_size")
        return Preprocess(size=self.input_size, resize=resize, mean=self.mean, std=self.std)


def spec_from_arch(arch: dict) -> ModelSpec:
    """A :class:`ModelSpec` from the ``arch`` dict of a format-1 checkpoint (written before
    the specification existed: its missing keys had these meanings then)."""
    known = {k: arch[k] for k in ModelSpec.model_fields if k in arch and arch[k] is not None}
    if "mean" in known:
        known["mean"], known["std"] = tuple(known["mean"]), tuple(known["std"])
    known.setdefault("dropout", 0.0)
    known.setdefault("subcenters", 1)
    return ModelSpec(**known)


def spec_default(name: str):
    """The :class:`ModelSpec` default of field ``name``: the one home of the head constructors'
    defaults (``models/heads.py``, ``models/margin.py``).

    Raises:
        KeyError: no such field.
    """
    return ModelSpec.model_fields[name].default
