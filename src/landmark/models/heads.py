"""Pooling and classification heads.

Every head has the same interface (:class:`Head`): ``pool(features)`` (``[B, C, H, W]``
-> ``[B, C]``), ``classify(pooled, pre_logits)`` and ``margin_logits(logits, target)``,
so the model, the linear probe and export never ask which head they hold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import spec_default


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalized-mean pooling over the spatial dimensions.

    ``(mean over h, w of x.clamp(min=eps) ** p) ** (1 / p)``; p=1 is average pooling and
    p -> inf max pooling.  Radenovic, Tolias, Chum, "Fine-tuning CNN Image Retrieval
    with No Human Annotation", TPAMI 2018.

    Args:
        x: float tensor ``[B, C, H, W]``.
    Returns:
        float tensor ``[B, C]``.
    """
    return F.adaptive_avg_pool2d(x.clamp(min=eps).pow(p), 1).pow(1.0 / p).flatten(1)


class GeM(nn.Module):
    """:func:`gem` with a learnable exponent ``p`` (initial value ``p``)."""

    def __init__(self, p: float = spec_default("gem_p"), eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.detach().item():.3f}, eps={self.eps}"


class Neck(nn.Sequential):
    """Projection neck ``Linear(in, dim) -> BatchNorm1d(dim)``: ``[B, in]`` -> ``[B, dim]``.

    As between GeM and the ArcFace head in the GLR 2020/2021 winning models
    (Henkel & Singer, arXiv:2010.01650); it sets the retrieval embedding width.
    """

    def __init__(self, in_features: int, dim: int):
        super().__init__(nn.Linear(in_features, dim), nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, norm = self[0](x), self[1]
        if self.training and x.shape[0] == 1:   # batch statistics need 2+ rows: use the running ones
            return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        return norm(x)


class Head(nn.Module):
    """The head contract: ``forward(features, pre_logits=False)`` = ``classify(pool(features))``.

    Subclasses define ``pool`` (feature map ``[B, C, H, W]`` -> pooled ``[B, C]``) and
    ``classify`` (pooled ``[B, C]`` -> logits ``[B, K]``, or with ``pre_logits`` the
    embedding ``[B, D]``); margin heads override :meth:`margin_logits`.
    """

    pool: nn.Module   # a submodule or a method: [B, C, H, W] -> [B, C]

    def classify(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.classify(self.pool(features), pre_logits)

    def margin_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The logits the training loss sees (``[B, K]``, target int64 ``[B]``): ``logits``
        itself, except for angular-margin heads."""
        return logits


class GeMHead(Head):
    """GeM pooling -> [neck] -> dropout -> linear: features ``[B, C, H, W]`` -> logits ``[B, K]``.

    The head of the original work's Xception model.  ``pool`` (then the optional
    projection neck ``Linear(C, embedding_dim) -> BatchNorm1d``) gives the embedding
    ``[B, C]`` (``[B, embedding_dim]``) used by retrieval.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = spec_default("dropout"),
                 p: float = spec_default("gem_p"), embedding_dim: int | None = spec_default("embedding_dim")):
        super().__init__()
        self.pool = GeM(p)
        if embedding_dim:   # only then, so state dicts of neck-less heads keep their keys
            self.neck = Neck(in_features, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embedding_dim or in_features, num_classes)

    def classify(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled descriptor ``[B, C]`` -> logits ``[B, K]`` (``pre_logits``: the embedding ``[B, D]``)."""
        x = self.neck(pooled) if hasattr(self, "neck") else pooled
        return x if pre_logits else self.fc(self.dropout(x))


class FCHead(Head):
    """Average pooling -> FC-``hidden``/ReLU -> FC-``hidden``/ReLU -> dropout -> linear.

    The original work's VGG16 baseline head (FC-256, FC-256, softmax).  Global average
    pooling replaces Keras' ``Flatten`` so that any input size works.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = spec_default("fc_dim"),
                 dropout: float = spec_default("dropout")):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> global average ``[B, C]``."""
        return F.adaptive_avg_pool2d(features, 1).flatten(1)

    def classify(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled ``[B, C]`` -> logits ``[B, K]`` (``pre_logits``: the hidden ``[B, hidden]``)."""
        x = self.mlp(pooled)
        return x if pre_logits else self.fc(self.dropout(x))
