"""Relaxed contrastive loss (Kim et al., CVPR 2021, "Embedding Transfer with Label Relaxation for
Improved Metric Learning"), following the official code tjddus9597/LabelRelaxation-CVPR21
``code/Relaxed_losses.py::Relaxed_Contra``.

Reading the official code: its ``forward(t_emb, s_emb)`` names the *target* model (the student
being trained) ``t_emb`` and the *source* model (the teacher) ``s_emb``, and ``train_target.py``
calls ``relaxedcontra_criterion(t_emb, s_emb)`` with ``s_emb`` computed under ``no_grad``. So the
pair weights come from the (L2-normalised) teacher and the distances from the student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import register_loss
from .base import DistillLoss
from .relative import pairwise_distances


@register_loss(name="relaxed")
class RelaxedContrastiveLoss(DistillLoss):
    """Relaxed contrastive loss: a contrastive loss whose positive/negative labels are soft
    teacher similarities.

    ``w_ij = exp(-||t_i - t_j||^2 / sigma)`` on the L2-normalised teacher embeddings (no gradient).
    Student distances ``d_ij = ||s_i - s_j||`` are divided by their row mean
    ``m_i = (1/N) sum_j d_ij`` -- the official ``T_dist.mean(1)``, which averages over all N entries
    including the zero self-distance, i.e. ``sum_{j != i} d_ij / N``; it is not detached, so the
    gradient flows through ``m_i`` too. Then

        ``L = (1/N) * sum_{i != j} [ w_ij * dn_ij^2 + (1 - w_ij) * relu(delta - dn_ij)^2 ]``

    with ``dn_ij = d_ij / m_i`` and N the batch size (official: ``(pull.sum() + push.sum()) /
    len(t_emb)`` over the entries with ``dn > 0``, i.e. the off-diagonal ones). The student is used
    as given (the official code does not normalise it; ours are unit vectors already).

    Args:
        sigma: bandwidth of the teacher similarity kernel.
        delta: margin of the push term, in units of the row-mean distance.
    """

    name = "relaxed"

    def __init__(self, sigma: float = 1.0, delta: float = 1.0):
        super().__init__()
        if sigma <= 0:
            raise ConfigError(f"relaxed: sigma must be > 0, got {sigma}")
        self.sigma, self.delta = float(sigma), float(delta)

    def compute_loss(self, s_emb, t_emb, s_feats=None, t_feats=None) -> torch.Tensor:
        n = s_emb.shape[0]
        with torch.no_grad():
            t_d2 = pairwise_distances(F.normalize(t_emb, dim=1), squared=True)  # (N, N)
            w = torch.exp(-t_d2 / self.sigma)  # (N, N) soft "same class" weights
        d = pairwise_distances(s_emb)  # (N, N), 0 on the diagonal
        # Scale-free distances: the student's overall scale is not the teacher's (delta is in units
        # of each anchor's mean distance).
        dn = d / d.mean(dim=1, keepdim=True)
        pull = w * dn.pow(2)
        push = (1.0 - w) * torch.relu(self.delta - dn).pow(2)
        off_diag = ~torch.eye(n, dtype=torch.bool, device=s_emb.device)
        return (pull[off_diag].sum() + push[off_diag].sum()) / n
