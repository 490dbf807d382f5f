"""Asymmetric contrastive distillation (InfoNCE against the teacher's embeddings): the student's
query must find its own image's teacher embedding among the teacher embeddings of other images.

This is the term that makes a student *compatible* with a teacher-embedded index (phone query,
server gallery; Budnik & Avrithis, CVPR 2021, "Asymmetric metric learning"; D3still, CVPR 2024):
``absolute`` pulls ``s_i`` towards ``t_i`` but never asks it to be nearer to ``t_i`` than to
``t_j``, which is what a search against the teacher's gallery needs.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from . import register_loss
from .base import DistillLoss


def student_projection(student_dim: int, teacher_dim: int, who: str) -> Optional[nn.Linear]:
    """A train-time ``Linear(D_s, D_t)`` when the sizes differ (never exported), else None."""
    if int(student_dim) <= 0 or int(teacher_dim) <= 0:
        raise ConfigError(f"{who}: embedding sizes must be positive, got {student_dim} and {teacher_dim}")
    return nn.Linear(int(student_dim), int(teacher_dim), bias=False) if int(student_dim) != int(teacher_dim) else None


@register_loss(name="contrastive")
class ContrastiveLoss(DistillLoss):
    """``L = mean_i CE(softmax_j(s_i . k_j / tau), j = i)`` over keys ``k`` = the batch's teacher
    embeddings, then a FIFO queue of earlier batches' teacher embeddings (MoCo's memory queue).

    Embeddings are L2-normalised and *not* centred: a softmax over one query's scores is unchanged
    by a component every key shares, and the server searches its index as it was embedded.

    Args:
        student_dim, teacher_dim: embedding sizes (a train-time projection joins different sizes,
            as in ``absolute``; ``mdistill eval`` applies it to the queries).
        temperature: tau of the softmax.
        queue: how many earlier teacher embeddings are kept as extra negatives (0: the batch only).
        hard: when > 0, each query keeps only its ``hard`` highest-scoring queue keys (negatives
            mined in the teacher's gallery); the batch keys are always kept.
        mask_same_class: keys of the query's own class (labelled rows, in the batch and in the
            queue) are not negatives: a search that returns them is right.
    """

    name = "contrastive"
    uses_labels = True

    def __init__(self, student_dim: int, teacher_dim: int, temperature: float = 0.05, queue: int = 0,
                 hard: int = 0, mask_same_class: bool = False):
        super().__init__()
        if not float(temperature) > 0:
            raise ConfigError(f"contrastive: temperature must be > 0, got {temperature}")
        if int(queue) < 0 or int(hard) < 0:
            raise ConfigError(f"contrastive: queue and hard must be >= 0, got {queue} and {hard}")
        if int(hard) and not int(queue):
            raise ConfigError("contrastive: hard negatives are mined in the queue; set queue=N as well")
        self.student_dim, self.teacher_dim = int(student_dim), int(teacher_dim)
        self.temperature, self.hard, self.mask_same_class = float(temperature), int(hard), bool(mask_same_class)
        self.projection = student_projection(student_dim, teacher_dim, "contrastive")
        self.register_buffer("queue_keys", torch.zeros(int(queue), self.teacher_dim))
        self.register_buffer("queue_labels", torch.full((int(queue),), -1, dtype=torch.long))
        self.register_buffer("queue_size", torch.zeros((), dtype=torch.long))  # filled entries
        self.register_buffer("queue_next", torch.zeros((), dtype=torch.long))  # where the next key goes

    def _enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        capacity = self.queue_keys.shape[0]
        if capacity == 0:
            return
        keys, labels = keys[-capacity:], labels[-capacity:]
        slots = (int(self.queue_next) + torch.arange(len(keys), device=keys.device)) % capacity
        self.queue_keys[slots] = keys.to(self.queue_keys.dtype)
        self.queue_labels[slots] = labels
        self.queue_next.fill_((int(self.queue_next) + len(keys)) % capacity)
        self.queue_size.fill_(min(capacity, int(self.queue_size) + len(keys)))

    def compute_loss(self, s_emb, t_emb, s_feats=None, t_feats=None, labels=None) -> torch.Tensor:
        n = s_emb.shape[0]
        labels = torch.full((n,), -1, dtype=torch.long, device=s_emb.device) if labels is None else labels.long()
        s = F.normalize(s_emb if self.projection is None else self.projection(s_emb), dim=1)  # (N, D_t)
        t = F.normalize(t_emb, dim=1)  # (N, D_t)
        logits = s @ t.T  # (N, N); the positive of row i is column i
        own = torch.eye(n, dtype=torch.bool, device=s.device)
        if self.mask_same_class:
            same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
            logits = logits.masked_fill(same & ~own, float("-inf"))
        filled = int(self.queue_size)
        if filled:
            # copies: the enqueue below writes into the buffers that backward still needs
            keys, key_labels = self.queue_keys[:filled].clone().to(s.dtype), self.queue_labels[:filled].clone()
            extra = s @ keys.T  # (N, Q)
            if self.mask_same_class:
                extra = extra.masked_fill((labels[:, None] == key_labels[None, :]) & (labels[:, None] >= 0),
                                          float("-inf"))
            if self.hard and self.hard < filled:
                extra = extra.topk(self.hard, dim=1).values  # (N, hard); selection without gradient effect
            logits = torch.cat([logits, extra], dim=1)
        loss = F.cross_entropy(logits / self.temperature, torch.arange(n, device=s.device))
        if self.training:
            with torch.no_grad():
                self._enqueue(t.detach(), labels)
        return loss
