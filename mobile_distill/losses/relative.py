"""Relative teacher (Yu et al., CVPR 2019, "Learning Metrics from Teachers: Compact Networks for
Image Embedding"): the student copies the teacher's in-batch distance matrix, not its coordinates.

Also home of ``pairwise_distances``, the in-batch Euclidean distance matrix the relational losses
(``relative``, ``rkd``, ``relaxed``, ``darkrank``) share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import register_loss
from .base import DistillLoss


def pairwise_distances(e: torch.Tensor, squared: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """In-batch Euclidean distance matrix with finite gradients, lenscloth/RKD's ``pdist``.

    ``sqrt`` has an infinite derivative at 0, and the diagonal is exactly 0. Squared distances
    come from the Gram matrix and are clamped at ``eps`` before the root (the clamp's gradient is 0
    below ``eps``, so duplicated rows give a zero rather than an inf/NaN gradient); the diagonal is
    then zeroed by a mask multiply, which also keeps autograd away from in-place writes.

    Args:
        e: (N, D) embeddings.
        squared: return squared distances.
        eps: floor of the squared distance before the square root.

    Returns:
        (N, N) distances, 0 on the diagonal.
    """
    sq = e.pow(2).sum(dim=1)  # (N,)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (e @ e.t())).clamp(min=eps)  # (N, N)
    d = d2 if squared else d2.sqrt()
    off_diag = 1.0 - torch.eye(e.shape[0], dtype=e.dtype, device=e.device)
    return d * off_diag


@register_loss(name="relative")
class RelativeLoss(DistillLoss):
    """Relative teacher loss: ``L = ||D_S - D_T||_F``.

    ``D_S`` and ``D_T`` are the full (N, N) in-batch Euclidean distance matrices of the
    L2-normalised student and teacher embeddings. Exactly as the seed code
    (yulu0724/EmbeddingDistillation, ``torch.norm(dis - dis_T, p=2)``) the Frobenius norm is
    neither squared nor averaged, so its value grows roughly linearly with the batch size N
    (N^2 entries under a square root): a loss weight tuned at one batch size does not transfer to
    another. ``normalize=True`` divides by N, which keeps the value roughly batch-size independent.

    Both inputs are L2-normalised here; the models already output unit vectors, and normalising a
    unit vector again changes neither the value nor the gradient that reaches the network.

    Args:
        normalize: divide the Frobenius norm by the batch size N.
    """

    name = "relative"

    def __init__(self, normalize: bool = False):
        super().__init__()
        self.normalize = bool(normalize)

    def compute_loss(self, s_emb, t_emb, s_feats=None, t_feats=None) -> torch.Tensor:
        d_s = pairwise_distances(F.normalize(s_emb, dim=1))  # (N, N)
        d_t = pairwise_distances(F.normalize(t_emb, dim=1))  # (N, N)
        loss = torch.linalg.vector_norm(d_s - d_t)  # Frobenius norm; its gradient at 0 is 0, not NaN
        return loss / s_emb.shape[0] if self.normalize else loss
