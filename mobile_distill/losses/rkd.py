"""Relational knowledge distillation (Park et al., CVPR 2019, "Relational Knowledge Distillation"),
following lenscloth/RKD ``metric/loss.py`` (``RkdDistance``, ``RKdAngle``) line for line.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import register_loss
from .base import DistillLoss
from .relative import pairwise_distances


def rkd_distance(s_emb: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
    """Distance term: SmoothL1 between ``psi(i, j) = ||e_i - e_j|| / mu`` of student and teacher.

    ``mu`` is the mean of the non-zero in-batch distances of each network. As in lenscloth, the
    SmoothL1 (beta 1) is averaged over the full (N, N) matrix, diagonal included (it contributes
    0 but counts in the denominator N^2).
    """
    with torch.no_grad():
        t_d = pairwise_distances(t_emb)  # (N, N)
        t_d = t_d / t_d[t_d > 0].mean()
    d = pairwise_distances(s_emb)  # (N, N)
    d = d / d[d > 0].mean()
    return F.smooth_l1_loss(d, t_d, reduction="mean", beta=1.0)


def _angles(e: torch.Tensor) -> torch.Tensor:
    # angle[i, j, k] = <normalize(e_j - e_i), normalize(e_k - e_i)>; F.normalize maps the zero
    # vector (j == i or k == i) to 0, so those entries are 0 in both networks.
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # (N, N, D): diff[i, j] = e_j - e_i
    unit = F.normalize(diff, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)  # (N^3,)


def rkd_angle(s_emb: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
    """Angle term: SmoothL1 between the cosines of all anchored triples (i; j, k), mean over N^3."""
    with torch.no_grad():
        t_angle = _angles(t_emb)
    return F.smooth_l1_loss(_angles(s_emb), t_angle, reduction="mean", beta=1.0)


@register_loss(name="rkd")
class RKDLoss(DistillLoss):
    """RKD: ``L = distance_weight * L_dist + angle_weight * L_angle``.

    ``L_dist = mean_{i,j} SmoothL1(psi_S(i,j) - psi_T(i,j))`` with ``psi(i,j) = ||e_i - e_j|| / mu``,
    mu the mean of the non-zero distances of that network (the teacher's without gradient).
    ``L_angle = mean_{i,j,k} SmoothL1(cos_S(i;j,k) - cos_T(i;j,k))`` with ``cos(i;j,k)`` the cosine
    between ``e_j - e_i`` and ``e_k - e_i`` (0 when j or k equals i). Means run over the full
    N^2 / N^3 tensors, as in lenscloth/RKD. Embeddings are used as given (RKD does not L2-normalise
    the student; ours are unit vectors already). Defaults are the paper's weights 1 and 2.

    The angle term builds (N, N, D) and (N, N, N) tensors, O(N^3) memory; batches above
    ``max_angle_batch`` are refused rather than left to run out of memory.

    Args:
        distance_weight: weight of the distance term.
        angle_weight: weight of the angle term; 0 skips it (and the batch-size limit).
        max_angle_batch: largest batch size the angle term accepts.

    Attributes:
        last_terms: ``{"rkd_distance", "rkd_angle"}`` of the latest call, unweighted and detached,
            for logging.
    """

    name = "rkd"

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0, max_angle_batch: int = 256):
        super().__init__()
        if distance_weight < 0 or angle_weight < 0:
            raise ConfigError(f"rkd: weights must be >= 0, got distance_weight={distance_weight}, "
                              f"angle_weight={angle_weight}")
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        self.max_angle_batch = int(max_angle_batch)
        self.last_terms: Dict[str, torch.Tensor] = {}

    def _check_angle_batch(self, e: torch.Tensor) -> None:
        n, dim = e.shape
        if n <= self.max_angle_batch:
            return
        # Student and teacher angle tensors, the SmoothL1 difference and its gradient (4 x N^3),
        # plus the (N, N, D) difference and unit-vector tensors of both networks (4 x N^2 D).
        need = (4 * n ** 3 + 4 * n * n * dim) * e.element_size()
        raise ConfigError(
            f"rkd: the angle term on a batch of {n} embeddings needs about {need / 2 ** 30:.1f} GiB "
            f"(O(N^3) memory), above max_angle_batch={self.max_angle_batch}; use a smaller batch "
            f"(at most {self.max_angle_batch}), raise max_angle_batch "
            f"(--distill rkd:1:max_angle_batch={n}), or drop the angle term (--distill rkd:1:angle_weight=0)"
        )

    def terms(self, s_emb: torch.Tensor, t_emb: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The two unweighted terms ``{"rkd_distance": ..., "rkd_angle": ...}`` (a skipped term is 0)."""
        t_emb = t_emb.detach()
        zero = s_emb.new_zeros(())
        dist = rkd_distance(s_emb, t_emb) if self.distance_weight > 0 else zero
        if self.angle_weight > 0:
            self._check_angle_batch(s_emb)
            angle = rkd_angle(s_emb, t_emb)
        else:
            angle = zero
        return {"rkd_distance": dist, "rkd_angle": angle}

    def compute_loss(self, s_emb, t_emb, s_feats=None, t_feats=None) -> torch.Tensor:
        terms = self.terms(s_emb, t_emb)
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return self.distance_weight * terms["rkd_distance"] + self.angle_weight * terms["rkd_angle"]
