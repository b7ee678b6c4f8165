"""Angular-margin heads: ArcFace and sub-center ArcFace with dynamic per-class margins.

- ArcFace: Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep
  Face Recognition", CVPR 2019.  Embedding and class centres are L2-normalised; the
  logit of class ``j`` is ``s * cos(theta_j)`` and, during training, the target class
  gets ``s * cos(theta_y + m)`` instead.
- Sub-center ArcFace: Deng, Guo, Liu, Gong, Zafeiriou, "Sub-center ArcFace: Boosting
  Face Recognition by Large-scale Noisy Web Faces", ECCV 2020.  Each class has ``k``
  centres and ``cos(theta_j) = max_k cos(theta_{j,k})``, so noisy or multi-view
  classes need not collapse to one centre.
- Dynamic margins: Ha, Liu, Liu, Liao, "Google Landmark Recognition 2020 Competition
  Third Place Solution", arXiv:2010.05350 (also used by the 2020 and 2021 winners,
  Henkel & Singer, arXiv:2010.01650 and arXiv:2110.03786): class ``j`` with ``n_j``
  training images gets ``m_j = a * n_j ** -power + b`` (power 1/4), so rare classes
  get larger margins.

pytorch-metric-learning's ``ArcFaceLoss``/``SubCenterArcFaceLoss`` (2.9) take one
fixed margin and keep the class centres inside the loss, so the head is written here;
it follows their conventions (target angle above ``pi - m``: ``cos(theta) - m sin(m)``)
and the tests check it against ``SubCenterArcFaceLoss`` for a fixed margin.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .heads import GeM, Head, Neck
from .spec import spec_default


def dynamic_margins(counts: Sequence[int] | np.ndarray | torch.Tensor, a: float = spec_default("margin_a"),
                    b: float = spec_default("margin_b"), power: float = spec_default("margin_power")) -> torch.Tensor:
    """Per-class angular margins ``m_j = a * n_j ** -power + b`` in radians.

    Ha et al., arXiv:2010.05350 (GLR 2020, 3rd place), with ``power = 1/4``.
    ``a = 0`` gives the fixed margin ``b`` of plain ArcFace.

    Args:
        counts: training images per class, ``[K]``; counts below 1 are treated as 1.
    Returns:
        float32 ``[K]``.
    Raises:
        ValueError: empty or non-finite ``counts``, or a negative ``a``/``b``/``power``.
    """
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    if n.ndim != 1 or n.numel() == 0 or not torch.isfinite(n).all():
        raise ValueError("counts must be a non-empty 1-d sequence of finite class sizes")
    n = n.clamp(min=1.0)
    if a < 0 or b < 0 or power < 0:
        raise ValueError(f"margin_a ({a}), margin_b ({b}) and margin_power ({power}) must be >= 0")
    return (a * n.pow(-power) + b).float()


def class_counts(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Images per class in ``classes`` order (int64 ``[K]``), from a column of labels."""
    index = {str(c): k for k, c in enumerate(classes)}
    counts = np.zeros(len(classes), dtype=np.int64)
    for label in labels:
        k = index.get(str(label))
        if k is not None:
            counts[k] += 1
    return counts


def add_angular_margin(cosine: torch.Tensor, target: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Replace the target column of ``cosine`` by ``cos(theta_y + m_y)``.

    Uses ``cos(t + m) = cos t cos m - sin t sin m`` (no ``acos``, finite gradients);
    where ``theta_y > pi - m_y`` (``cos(t + m)`` would stop decreasing) the value is
    ``cos(theta_y) - m_y sin(m_y)``, as ArcFace's reference code and
    pytorch-metric-learning do.

    Args:
        cosine: float ``[B, K]`` in [-1, 1].
        target: int64 ``[B]`` class indices.
        margins: float ``[K]`` radians.
    Returns:
        float ``[B, K]`` (unscaled).
    """
    cos_t = cosine.gather(1, target[:, None]).clamp(-1.0, 1.0)
    m = margins.to(cosine.dtype)[target][:, None]
    sin_t = (1.0 - cos_t * cos_t).clamp(min=0.0).sqrt()
    with_margin = cos_t * torch.cos(m) - sin_t * torch.sin(m)
    with_margin = torch.where(cos_t > torch.cos(math.pi - m), with_margin, cos_t - m * torch.sin(m))
    return cosine.scatter(1, target[:, None], with_margin)


class ArcMarginHead(Head):
    """GeM -> optional :class:`Neck` -> dropout -> cosine to (sub-)centres -> ``s * cos``.

    ``forward(features)`` returns ``s * cos(theta)`` ``[B, K]`` without margin (what
    inference and ``predict`` use); :meth:`margin_logits` turns those logits into the
    training logits with the per-class angular margin on the target class.

    Args:
        in_features: channels ``C`` of the backbone feature map ``[B, C, H, W]``.
        num_classes: ``K``.
        embedding_dim: width of the projection neck; None = the GeM descriptor (``C``).
        subcenters: centres per class (1 = ArcFace, k > 1 = sub-center ArcFace).
        scale: ``s``, the logit scale (norm of the embedding on the hypersphere).
        margins: radians, one per class ``[K]`` (see :func:`dynamic_margins`) or one
            float for all; kept as a buffer in the state dict, so a checkpoint
            restores them.
        dropout: on the embedding, before normalisation (training only).
        p: initial GeM exponent.

    Defaults are :class:`~landmark.models.spec.ModelSpec`'s (``margins``: ``margin_a +
    margin_b``, the dynamic margin of a class with one photo; ``subcenters`` 1: ArcFace).
    """

    def __init__(self, in_features: int, num_classes: int, embedding_dim: int | None = spec_default("embedding_dim"),
                 subcenters: int = 1, scale: float = spec_default("arcface_s"),
                 margins: torch.Tensor | float = spec_default("margin_a") + spec_default("margin_b"),
                 dropout: float = spec_default("dropout"), p: float = spec_default("gem_p")):
        super().__init__()
        if subcenters < 1:
            raise ValueError(f"subcenters must be >= 1, not {subcenters}")
        self.pool = GeM(p)
        self.neck = Neck(in_features, embedding_dim) if embedding_dim else nn.Identity()
        dim = embedding_dim or in_features
        self.dropout = nn.Dropout(dropout)
        self.num_classes, self.subcenters, self.scale = num_classes, subcenters, float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, dim))   # row c*k + j: centre j of class c
        nn.init.xavier_uniform_(self.weight)
        margins = torch.as_tensor(margins, dtype=torch.float32)
        self.register_buffer("margins", margins.expand(num_classes).clone() if margins.ndim == 0 else margins.clone())
        if self.margins.shape != (num_classes,):
            raise ValueError(f"margins must have one value per class ({num_classes}), got {tuple(self.margins.shape)}")

    def embedding(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> embedding ``[B, D]`` (not normalised)."""
        return self.neck(self.pool(features))

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` -> ``cos(theta)`` ``[B, K]``: max over each class's sub-centres."""
        cos = F.linear(F.normalize(embedding, dim=1), F.normalize(self.weight, dim=1))
        return cos.view(-1, self.num_classes, self.subcenters).amax(dim=2)

    def classify(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """GeM descriptor ``[B, C]`` -> ``s * cos`` ``[B, K]`` (``pre_logits``: the embedding ``[B, D]``)."""
        x = self.neck(pooled)
        return x if pre_logits else self.scale * self.cosine(self.dropout(x))

    def margin_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training logits: ``s * cos(theta_j)``, target class ``s * cos(theta_y + m_y)``.

        Args:
            logits: ``[B, K]`` from :meth:`forward` (``s * cos``).
            target: int64 ``[B]``.
        Returns:
            ``[B, K]``, for ``F.cross_entropy``.
        """
        return self.scale * add_angular_margin(logits / self.scale, target, self.margins)

    def extra_repr(self) -> str:
        m = self.margins
        return (f"classes={self.num_classes}, subcenters={self.subcenters}, s={self.scale}, "
                f"margins=[{float(m.min()):.3f}, {float(m.max()):.3f}]")
