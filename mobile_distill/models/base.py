"""The one model shape every architecture shares: normalise -> backbone stages -> pool -> linear -> L2.

Backbones are sequences of *stages* grouped by output stride, so hint / attention losses can
tap any stage and every architecture exposes the same ``feature_info`` (timm-style).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class Normalize(nn.Module):
    """``(x - mean) / std`` with the constants as buffers, so exports fold them into the graph."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Backbone(nn.Module):
    """Stages of a convolutional network, grouped where the output stride changes.

    Attributes:
        stages: ``nn.ModuleList``; stage i outputs ``feature_info[i]["num_chs"]`` channels at
            stride ``feature_info[i]["reduction"]``.
        num_features: channels of the last stage (the pooled feature size).
    """

    def __init__(self, modules: Sequence[nn.Module], in_chans: int = 3):
        super().__init__()
        self.stages, self.feature_info = _group_by_stride(list(modules), in_chans)
        self.num_features = self.feature_info[-1]["num_chs"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


@torch.no_grad()
def _group_by_stride(modules: List[nn.Module], in_chans: int, probe: int = 64):
    # A dry run on a small image finds where the resolution halves, so no per-architecture
    # table of layer indices is needed. eval() keeps BatchNorm statistics untouched.
    seq = nn.Sequential(*modules)
    was_training = seq.training
    seq.eval()
    x = torch.zeros(1, in_chans, probe, probe)
    groups: List[List[nn.Module]] = []
    info: List[Dict] = []
    for m in modules:
        x = m(x)
        reduction = probe // x.shape[-1]
        if info and info[-1]["reduction"] == reduction:
            groups[-1].append(m)
            info[-1]["num_chs"] = x.shape[1]
        else:
            groups.append([m])
            info.append({"num_chs": x.shape[1], "reduction": reduction})
    seq.train(was_training)
    stages = nn.ModuleList(g[0] if len(g) == 1 else nn.Sequential(*g) for g in groups)
    for i, d in enumerate(info):
        d["module"] = f"backbone.stages.{i}"
    return stages, info


class EmbeddingNet(nn.Module):
    """RGB image in [0, 1], shape (B, 3, H, W) -> L2-normalised embedding (B, D).

    Args:
        backbone: a ``Backbone``.
        embedding_dim: size of the linear head; ``None`` keeps the pooled backbone features
            (used to measure untuned ImageNet features as a baseline).
        mean, std: per-channel normalisation applied inside the model (part of every export).
        arch: registry name, recorded in checkpoints.
        image_size: the input size the model is meant for (recorded, not enforced).
    """

    def __init__(
        self,
        backbone: Backbone,
        embedding_dim: Optional[int],
        mean: Sequence[float],
        std: Sequence[float],
        arch: str,
        image_size: int,
    ):
        super().__init__()
        self.arch = arch
        self.image_size = image_size
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.num_features = backbone.num_features
        self.embedding_dim = embedding_dim or backbone.num_features
        self.head = nn.Linear(backbone.num_features, embedding_dim) if embedding_dim else nn.Identity()
        self.feature_info = backbone.feature_info

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))  # (B, C, h, w)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # keepdim + flatten (not mean over (2, 3) directly) lets converters keep NHWC to the end:
        # LiteRT otherwise inserts a TRANSPOSE back to NCHW before the pooling.
        x = x.mean(dim=(2, 3), keepdim=True).flatten(1)  # (B, C)
        if pre_logits:
            return x
        return F.normalize(self.head(x), dim=1)  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Embedding plus the feature maps of the requested stages (negative indices count back)."""
        n = len(self.backbone.stages)
        wanted = {i % n for i in indices}
        maps = []
        x = self.normalize(x)
        for i, stage in enumerate(self.backbone.stages):
            x = stage(x)
            if i in wanted:
                maps.append(x)
        return self.forward_head(x), maps

    def model_info(self) -> Dict:
        """The ``model`` block of checkpoints and model cards (DESIGN §2)."""
        return {
            "arch": self.arch,
            "embedding_dim": int(self.embedding_dim),
            "head": isinstance(self.head, nn.Linear),
            "image_size": int(self.image_size),
            "mean": [float(v) for v in self.normalize.mean.flatten()],
            "std": [float(v) for v in self.normalize.std.flatten()],
            "channel_order": "RGB",
            "input_range": [0.0, 1.0],
            "layout": "NCHW",
        }
