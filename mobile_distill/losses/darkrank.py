"""DarkRank (Chen et al., AAAI 2018, "DarkRank: Accelerating Deep Metric Learning via Cross Sample
Similarities Transfer"), the "hard" listwise variant of lenscloth/RKD ``metric/loss.py::HardDarkRank``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from . import register_loss
from .base import DistillLoss
from .relative import pairwise_distances


@register_loss(name="darkrank")
class DarkRankLoss(DistillLoss):
    """Hard DarkRank: the student's scores should rank each anchor's neighbours in the teacher's order.

    Scores ``s_ij = -alpha * d_ij^beta`` with ``d`` the in-batch Euclidean distances. For anchor i,
    ``pi_1..pi_K`` are the teacher's K = ``permute_len`` nearest neighbours (self excluded), nearest
    first; the loss is the Plackett-Luce negative log-likelihood of that order under the student's
    scores:

        ``L = -(1/N) sum_i sum_{k=1..K} [ s_{i,pi_k} - logsumexp_{l >= k} s_{i,pi_l} ]``

    Defaults are ``HardDarkRank``'s own (alpha 3, beta 3, permute_len 4), which Kim et al. also
    used; lenscloth's ``run_distill.py`` passes ``--dark_alpha 2`` (beta 3). lenscloth drops the
    anchor by taking sorted positions 1..K, which assumes the anchor sorts first; here the anchor's
    own score is set to -inf before sorting, which is the same except when a teacher distance ties
    at 0 (duplicate images).

    Args:
        alpha: score scale.
        beta: distance exponent.
        permute_len: K, the length of the ranked list per anchor; needs batch size > K.
    """

    name = "darkrank"

    def __init__(self, alpha: float = 3.0, beta: float = 3.0, permute_len: int = 4):
        super().__init__()
        if int(permute_len) < 1:
            raise ConfigError(f"darkrank: permute_len must be >= 1, got {permute_len}")
        self.alpha, self.beta, self.permute_len = float(alpha), float(beta), int(permute_len)

    def _scores(self, e: torch.Tensor) -> torch.Tensor:
        # d^beta as (d^2)^(beta/2) on squared distances floored at 1e-12: d^beta has an infinite
        # slope at d = 0 for beta < 1, and 0 * inf on the (unused) diagonal would give NaN gradients.
        d2 = pairwise_distances(e, squared=True).clamp(min=1e-12)  # (N, N)
        return -self.alpha * d2.pow(self.beta / 2.0)

    def compute_loss(self, s_emb, t_emb, s_feats=None, t_feats=None) -> torch.Tensor:
        n = s_emb.shape[0]
        if n <= self.permute_len:
            raise ConfigError(f"darkrank: a batch of {n} has fewer than permute_len={self.permute_len} "
                              f"neighbours per anchor; use a larger batch or a smaller permute_len")
        with torch.no_grad():
            score_t = self._scores(t_emb)  # (N, N)
            score_t.fill_diagonal_(float("-inf"))
            order = score_t.argsort(dim=1, descending=True)[:, : self.permute_len]  # (N, K), nearest first
        score_s = self._scores(s_emb)  # (N, N)
        ordered = torch.gather(score_s, 1, order)  # (N, K)
        # logsumexp over the tail l >= k of each list: the normaliser of picking item k next.
        tails = torch.stack([torch.logsumexp(ordered[:, k:], dim=1) for k in range(self.permute_len)], dim=1)
        log_prob = (ordered - tails).sum(dim=1)  # (N,)
        return -log_prob.mean()
