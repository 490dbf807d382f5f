"""Supervised metric-learning losses for the teacher (and the student's own task term),
built from pytorch-metric-learning's losses and miners.

Collapse (every embedding the same, loss stuck at the margin) is the failure to watch for:
batch-hard triplet with a 0.2 margin collapsed on emoji here; batch-all and multi-similarity
did not. ``mean_pairwise_distance`` is logged so a collapse shows in ``metrics.csv``.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from ..errors import ConfigError
from . import register_loss


def mean_pairwise_distance(embeddings: torch.Tensor) -> float:
    """Mean Euclidean distance between distinct rows; near 0 means the embedding collapsed."""
    with torch.no_grad():
        d = torch.cdist(embeddings.float(), embeddings.float())
        n = d.shape[0]
        return float(d.sum() / max(n * (n - 1), 1))


@register_loss(name="triplet")
class TripletLoss(nn.Module):
    """Triplet loss on in-batch triplets.

    Args:
        margin: hinge margin; the seed code used 0 with batch-hard mining.
        mining: ``hard`` (hardest positive and negative per anchor, averaged over anchors, as the
            seed's MarginRankingLoss) or ``all`` (every valid triplet, averaged over the non-zero ones).
        soft_margin: softplus instead of the hinge.
    """

    def __init__(self, margin: float = 0.0, mining: str = "hard", soft_margin: bool = False):
        super().__init__()
        if mining not in ("hard", "all"):
            raise ConfigError(f"triplet mining must be 'hard' or 'all', got {mining!r}")
        reducer = pml_reducers.MeanReducer() if mining == "hard" else pml_reducers.AvgNonZeroReducer()
        self.loss = pml_losses.TripletMarginLoss(margin=margin, smooth_loss=soft_margin, reducer=reducer)
        self.miner = pml_miners.BatchHardMiner() if mining == "hard" else None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        triplets = self.miner(embeddings, labels) if self.miner is not None else None
        return {"triplet": self.loss(embeddings, labels, triplets)}


@register_loss(name="multi_similarity")
class MultiSimilarityLoss(nn.Module):
    """Multi-similarity loss (Wang et al., CVPR 2019) with its pair miner."""

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, epsilon: float = 0.1):
        super().__init__()
        self.loss = pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
        self.miner = pml_miners.MultiSimilarityMiner(epsilon=epsilon)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"multi_similarity": self.loss(embeddings, labels, self.miner(embeddings, labels))}


def metric_loss_from_config(cfg) -> nn.Module:
    """The task loss named by a ``TrainConfig``."""
    if cfg.loss == "triplet":
        return TripletLoss(cfg.margin, cfg.mining, cfg.soft_margin)
    return MultiSimilarityLoss(cfg.ms_alpha, cfg.ms_beta, cfg.ms_base)
