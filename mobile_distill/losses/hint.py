"""Hint learning (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets"): a student stage's
feature map, through a learnt regressor, should reproduce a teacher stage's feature map.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from . import register_loss
from .base import DistillLoss


@register_loss(name="hint")
class HintLoss(DistillLoss):
    """FitNets hint loss: ``L = mean_{b,c,h,w} (r(f_s)_{bchw} - f_t_{bchw})^2``.

    ``r`` is a 1x1 convolution with bias (student_channels -> teacher_channels), the regressor of
    FitNets, trained with the student and never exported. When the two maps differ in spatial
    size, the regressed student map is resized to the teacher's with bilinear interpolation
    (``align_corners=False``); regressing first keeps the interpolation on the teacher's channel
    layout, and because both are linear the order does not change the result. lenscloth/RKD's
    ``FitNet`` differs in two details: no bias and a U(-0.005, 0.005) initialisation.

    The trainer requests ``student_stages`` from the student and ``teacher_stages`` from the
    teacher and passes the maps in that order (``feature_stages`` mirrors ``student_stages`` for
    the base class's check).

    Args:
        student_channels: channels of the student's map (its ``feature_info[stage]["num_chs"]``).
        teacher_channels: channels of the teacher's map.
        student_stage: backbone stage index of the student (negative counts from the end).
        teacher_stage: backbone stage index of the teacher.
    """

    name = "hint"

    def __init__(self, student_channels: int, teacher_channels: int, student_stage: int = -2,
                 teacher_stage: int = -2):
        super().__init__()
        if int(student_channels) <= 0 or int(teacher_channels) <= 0:
            raise ConfigError(f"hint: channel counts must be positive, got {student_channels} and {teacher_channels}")
        self.student_stages: Sequence[int] = (int(student_stage),)
        self.teacher_stages: Sequence[int] = (int(teacher_stage),)
        self.feature_stages = self.student_stages
        self.regressor = nn.Conv2d(int(student_channels), int(teacher_channels), kernel_size=1, bias=True)

    def compute_loss(self, s_emb, t_emb, s_feats, t_feats) -> torch.Tensor:
        f_s, f_t = s_feats[0], t_feats[0].detach()  # (B, C_s, h_s, w_s), (B, C_t, h_t, w_t)
        r = self.regressor(f_s)  # (B, C_t, h_s, w_s)
        if r.shape[-2:] != f_t.shape[-2:]:
            r = F.interpolate(r, size=f_t.shape[-2:], mode="bilinear", align_corners=False)
        return F.mse_loss(r, f_t)
