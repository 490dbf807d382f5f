"""The shape every distillation loss shares (pytorch-metric-learning's template method).

``forward`` checks inputs, then calls ``compute_loss``, which subclasses implement; the result is
a dict of named scalar terms so that the training log shows each part separately.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError


class DistillLoss(nn.Module):
    """Base class of teacher -> student losses.

    Attributes:
        name: the key of this loss in the returned dict (and in ``--distill NAME:WEIGHT``).
        feature_stages: backbone stage indices whose feature maps the loss needs from both
            networks (empty for embedding-only losses); the trainer passes them as ``s_feats``
            / ``t_feats`` in the same order.
        uses_labels: the loss also reads the batch's labels (``labels=``, -1 for unlabelled rows).
    """

    name: str = "distill"
    feature_stages: Sequence[int] = ()
    uses_labels: bool = False

    def forward(self, s_emb: torch.Tensor, t_emb: torch.Tensor,
                s_feats: Optional[Sequence[torch.Tensor]] = None,
                t_feats: Optional[Sequence[torch.Tensor]] = None,
                labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if s_emb.dim() != 2 or t_emb.dim() != 2 or s_emb.shape[0] != t_emb.shape[0]:
            raise ConfigError(
                f"{self.name}: student and teacher embeddings must be (B, D) with the same B, "
                f"got {tuple(s_emb.shape)} and {tuple(t_emb.shape)}"
            )
        if self.feature_stages and (s_feats is None or t_feats is None):
            raise ConfigError(f"{self.name} needs feature maps of stages {list(self.feature_stages)}")
        if self.uses_labels:
            return {self.name: self.compute_loss(s_emb, t_emb.detach(), s_feats, t_feats, labels=labels)}
        return {self.name: self.compute_loss(s_emb, t_emb.detach(), s_feats, t_feats)}

    def compute_loss(self, s_emb, t_emb, s_feats, t_feats) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
