"""Absolute teacher (Yu et al., CVPR 2019, "Learning Metrics from Teachers: Compact Networks for
Image Embedding"): the student's embedding of an image should sit where the teacher's does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from . import register_loss
from .base import DistillLoss


@register_loss(name="absolute")
class AbsoluteLoss(DistillLoss):
    """Absolute teacher loss: ``L = mean_i ||s_i - t_i||_2`` on L2-normalised embeddings.

    The Euclidean norm is not squared, as in the seed code
    (``torch.mean(F.pairwise_distance(embed_feat, embed_feat_T))``, without its 1e-6 offset).

    Different embedding sizes: when ``student_dim != teacher_dim`` the student embedding goes
    through a train-time ``nn.Linear(student_dim, teacher_dim, bias=False)`` and is L2-normalised
    again before the comparison. That projection is a parameter of this loss: the trainer must give
    it to the optimizer together with the student, and it is never exported (the deployed student
    keeps its own ``student_dim`` embedding).

    Centring (``center=True``): the teacher's embeddings share a large common direction (on emoji
    the mean of the normalised teacher embeddings had norm ~0.48), so a student that outputs one
    constant vector already sits at the plain loss's plateau (``constant_output_level``) and the
    loss stalls there. The targets are therefore centred by a running mean ``mu`` of the
    normalised teacher embeddings and re-normalised, ``t'_i = normalize(t_i - mu)``, and the
    student is compared with ``t'``. ``mu`` is a buffer: in training mode it is updated before use,
    ``mu <- momentum * mu + (1 - momentum) * mean_i t_i`` (the first batch sets it); in eval mode
    it is only read (an eval call before any training batch centres by the batch's own mean).

    Args:
        student_dim: the student's embedding size D_s.
        teacher_dim: the teacher's embedding size D_t.
        center: centre the teacher targets by a running mean (see above).
        momentum: EMA momentum of the running mean, in [0, 1).
    """

    name = "absolute"

    def __init__(self, student_dim: int, teacher_dim: int, center: bool = False, momentum: float = 0.9):
        super().__init__()
        if int(student_dim) <= 0 or int(teacher_dim) <= 0:
            raise ConfigError(f"absolute: embedding sizes must be positive, got {student_dim} and {teacher_dim}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ConfigError(f"absolute: momentum must be in [0, 1), got {momentum}")
        self.student_dim, self.teacher_dim = int(student_dim), int(teacher_dim)
        self.center, self.momentum = bool(center), float(momentum)
        self.projection = (nn.Linear(self.student_dim, self.teacher_dim, bias=False)
                           if self.student_dim != self.teacher_dim else None)
        if self.center:
            self.register_buffer("running_mean", torch.zeros(self.teacher_dim))
            self.register_buffer("mean_initialized", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def constant_output_level(t_emb: torch.Tensor) -> torch.Tensor:
        """The plain (uncentred) loss of a student that outputs one constant unit vector.

        The constant is ``c = normalize(mean_i t_i)``, the best constant for the squared distance
        and close to the best for the Euclidean one; a student whose loss does not go below this
        level has learnt nothing image-specific.

        Args:
            t_emb: (N, D) teacher embeddings.

        Returns:
            Scalar ``mean_i ||c - normalize(t_i)||``.
        """
        t = F.normalize(t_emb.detach(), dim=1)  # (N, D)
        c = F.normalize(t.mean(dim=0, keepdim=True), dim=1)  # (1, D)
        return torch.linalg.vector_norm(t - c, dim=1).mean()

    def centred_targets(self, t_emb: torch.Tensor) -> torch.Tensor:
        """``normalize(t - mu)``; updates the running mean in training mode. (N, D) -> (N, D)."""
        t = F.normalize(t_emb.detach(), dim=1)
        batch_mean = t.mean(dim=0)  # (D,)
        if self.training:
            with torch.no_grad():
                if bool(self.mean_initialized):
                    new = self.momentum * self.running_mean.to(t.dtype) + (1.0 - self.momentum) * batch_mean
                else:
                    new = batch_mean
                self.running_mean.copy_(new.to(self.running_mean.dtype))
                self.mean_initialized.fill_(True)
            mu = self.running_mean.to(t.dtype)
        else:
            mu = self.running_mean.to(t.dtype) if bool(self.mean_initialized) else batch_mean
        return F.normalize(t - mu, dim=1)

    def compute_loss(self, s_emb, t_emb, s_feats=None, t_feats=None) -> torch.Tensor:
        if s_emb.shape[1] != self.student_dim or t_emb.shape[1] != self.teacher_dim:
            raise ConfigError(
                f"absolute: built for student/teacher sizes {self.student_dim}/{self.teacher_dim}, "
                f"got {s_emb.shape[1]}/{t_emb.shape[1]}"
            )
        s = s_emb if self.projection is None else self.projection(s_emb)  # (N, D_t)
        s = F.normalize(s, dim=1)
        t = self.centred_targets(t_emb) if self.center else F.normalize(t_emb, dim=1)  # (N, D_t)
        # vector_norm's gradient at a zero difference is 0 (not NaN), so s == t is safe.
        return torch.linalg.vector_norm(s - t, dim=1).mean()
