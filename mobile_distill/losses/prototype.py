"""Backward-compatible influence term (BCT: Shen et al., CVPR 2020, "Towards Backward-Compatible
Representation Learning"): the *teacher's* class prototypes classify the *student's* embedding, so a
student query lands in the teacher-embedded region of its class.

BCT keeps the old model's classifier; a metric-learning teacher has none, so its prototypes are
taken where the batch has them: the mean teacher embedding of each labelled class in the batch
(the P x K sampler gives every class several images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import register_loss
from .base import DistillLoss
from .contrastive import student_projection


@register_loss(name="prototype")
class PrototypeLoss(DistillLoss):
    """``L = mean_i CE(softmax_c(s_i . p_c / tau), c = y_i)`` over the labelled rows, with
    ``p_c = normalize(mean_{j: y_j = c} normalize(t_j))`` for each class ``c`` of the batch.

    Unlabelled rows (label < 0) and a batch with fewer than two classes contribute 0.

    Args:
        student_dim, teacher_dim: embedding sizes (a train-time projection joins different sizes).
        temperature: tau of the softmax.
    """

    name = "prototype"
    uses_labels = True

    def __init__(self, student_dim: int, teacher_dim: int, temperature: float = 0.05):
        super().__init__()
        if not float(temperature) > 0:
            raise ConfigError(f"prototype: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.projection = student_projection(student_dim, teacher_dim, "prototype")

    def compute_loss(self, s_emb, t_emb, s_feats=None, t_feats=None, labels=None) -> torch.Tensor:
        if labels is None:
            raise ConfigError("prototype: needs the batch's labels (a labelled data set)")
        rows = labels >= 0
        classes, target = torch.unique(labels[rows], return_inverse=True)  # (C,), (L,)
        if len(classes) < 2:
            return s_emb.sum() * 0.0  # keeps the graph: every step has a gradient entry
        t = F.normalize(t_emb[rows], dim=1)  # (L, D_t)
        sums = torch.zeros(len(classes), t.shape[1], dtype=t.dtype, device=t.device).index_add_(0, target, t)
        prototypes = F.normalize(sums, dim=1)  # (C, D_t)
        s = s_emb[rows] if self.projection is None else self.projection(s_emb[rows])
        logits = F.normalize(s, dim=1) @ prototypes.T  # (L, C)
        return F.cross_entropy(logits / self.temperature, target)
