"""The student's embedding and the feature maps the hint and attention losses need, in one forward
(``forward_intermediates`` of any registered model, timm's or our own)."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch


def collect_features(model, x: torch.Tensor, stages: Sequence[int]) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
    """Run ``model`` once; return its embedding and the maps of ``stages`` as ``{stage: map}``.

    ``forward_intermediates`` returns maps in backbone order, one per distinct stage, so the
    requested indices (negative ones included) are matched to maps through ``index % n``.
    """
    if not stages:
        return model(x), {}
    n = len(model.feature_info)
    distinct = sorted({int(i) % n for i in stages})
    emb, maps = model.forward_intermediates(x, distinct)
    by_stage = dict(zip(distinct, maps))
    return emb, {int(i): by_stage[int(i) % n] for i in stages}
