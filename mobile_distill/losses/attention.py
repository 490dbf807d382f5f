"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention"),
the activation-based variant as in lenscloth/RKD ``metric/loss.py::AttentionTransfer``.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import register_loss
from .base import DistillLoss


def _as_tuple(x) -> tuple:
    # A single stage index (``student_stages=-2`` from a CLI spec) means a one-element tuple.
    return (x,) if isinstance(x, int) else tuple(x)


def attention_map(f: torch.Tensor, size: Tuple[int, int] | None = None) -> torch.Tensor:
    """Spatial attention ``normalize(mean_c f^2)``, L2-normalised over positions.

    Args:
        f: (B, C, h, w) feature map.
        size: resize the (B, 1, h, w) channel mean to this (H, W) with bilinear interpolation
            before flattening, so maps of different resolutions can be compared.

    Returns:
        (B, H*W) unit vectors.
    """
    a = f.pow(2).mean(dim=1, keepdim=True)  # (B, 1, h, w)
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    return F.normalize(a.flatten(1), dim=1)  # (B, H*W)


@register_loss(name="attention")
class AttentionTransferLoss(DistillLoss):
    """Attention transfer: ``L = (1/P) sum_p mean_{b,x} (a_s^p(b, x) - a_t^p(b, x))^2``.

    ``a^p = normalize(mean_c f_p^2)`` per stage pair p (the channel mean of squared activations,
    L2-normalised over the spatial positions x). The per-pair term is lenscloth's
    ``(s_attention - t_attention).pow(2).mean()``; pairs are averaged (lenscloth's
    ``run_distill.py`` sums three stages, i.e. 3x this value at the same weight). Channel counts may
    differ between the networks. When resolutions differ, the student's channel-mean map is
    resized to the teacher's resolution (bilinear) *after* squaring and *before* the L2
    normalisation, so that both attention vectors live on the same grid and are unit length.

    Args:
        student_stages: student backbone stage indices (negative counts from the end).
        teacher_stages: teacher stage indices, paired with ``student_stages`` in order.
    """

    name = "attention"

    def __init__(self, student_stages: Sequence[int] = (-3, -2), teacher_stages: Sequence[int] = (-3, -2)):
        super().__init__()
        student_stages = tuple(int(i) for i in _as_tuple(student_stages))
        teacher_stages = tuple(int(i) for i in _as_tuple(teacher_stages))
        if not student_stages or len(student_stages) != len(teacher_stages):
            raise ConfigError(f"attention: student_stages {list(student_stages)} and teacher_stages "
                              f"{list(teacher_stages)} must be non-empty and of the same length")
        self.student_stages = student_stages
        self.teacher_stages = teacher_stages
        self.feature_stages = student_stages

    def compute_loss(self, s_emb, t_emb, s_feats, t_feats) -> torch.Tensor:
        if len(s_feats) != len(self.student_stages) or len(t_feats) != len(self.teacher_stages):
            raise ConfigError(f"attention: expected {len(self.student_stages)} feature maps per network, "
                              f"got {len(s_feats)} and {len(t_feats)}")
        terms = []
        for f_s, f_t in zip(s_feats, t_feats):
            a_t = attention_map(f_t.detach())  # (B, H_t*W_t)
            a_s = attention_map(f_s, size=tuple(f_t.shape[-2:]))  # (B, H_t*W_t)
            terms.append((a_s - a_t).pow(2).mean())
        return torch.stack(terms).mean()
