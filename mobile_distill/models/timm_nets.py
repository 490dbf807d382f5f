"""Any timm architecture as a student: ``create_model("timm:NAME")`` (``--model timm:NAME``).

The timm network keeps its own stem, stages and pre-logits head (for MobileNetV4 and LCNet the
1280-wide ``conv_head``); our linear head and L2 follow, as for every registered architecture.
The input contract (mean, std, default size) comes from timm's ``pretrained_cfg``; feature maps
for the hint and attention losses come from timm's own ``feature_info`` and ``forward_intermediates``.

Re-parameterisable families (MobileOne, RepViT, FastViT) train with their multi-branch blocks;
``deploy_form`` folds them with timm's ``reparameterize_model`` before export, and the export gate
compares the files with that folded network.
"""

from __future__ import annotations

import difflib
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..errors import ConfigError, DownloadError
from .base import EmbeddingNet

PREFIX = "timm:"


class TimmBackbone(nn.Module):
    """A timm network up to its pooled pre-logits features, shaped (B, C, 1, 1) so that
    ``EmbeddingNet``'s pooling and head apply unchanged."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        # module names as seen from the EmbeddingNet (what --qat-float and the reports print)
        self.feature_info = [{**d, "module": f"backbone.net.{d['module']}"} for d in net.feature_info]
        self.num_features = int(getattr(net, "head_hidden_size", None) or net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)[:, :, None, None]


class TimmEmbeddingNet(EmbeddingNet):
    """``EmbeddingNet`` around a ``TimmBackbone``: maps come from timm's ``forward_intermediates``."""

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        net = self.backbone.net
        n = len(self.feature_info)
        wanted = sorted({int(i) % n for i in indices})
        final, maps = net.forward_intermediates(self.normalize(x), indices=wanted, intermediates_only=False)
        pooled = net.forward_head(final, pre_logits=True)[:, :, None, None]
        return self.forward_head(pooled), list(maps)


def timm_network(name: str, pretrained: bool, offline: str = "use --pretrained none", **kwargs) -> nn.Module:
    """``timm.create_model`` with the toolkit's errors: an unknown name lists timm's closest names;
    weights that cannot be fetched (offline) say how to go on without them (``offline``)."""
    import timm

    arch = name.split(".")[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        raise ConfigError(f"timm has no model {arch!r}" + (f"; close names: {', '.join(close)}" if close else ""))
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:  # hub and HTTP errors come in many types; the user needs the way out
        if not pretrained:
            raise ConfigError(f"timm cannot build {name!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        raise DownloadError(f"could not fetch timm weights for {name}: {str(e).splitlines()[0][:200]}. "
                            f"Offline, {offline}") from None


def create_timm_model(spec: str, embedding_dim: Optional[int], pretrained: str, image_size: Optional[int]) -> EmbeddingNet:
    """``timm:NAME`` -> a ``TimmEmbeddingNet``; ``pretrained`` is ``imagenet`` (timm's default
    weights for NAME, or the tag after a dot: ``timm:convnext_tiny.fb_in22k``) or ``none``."""
    name = spec[len(PREFIX):]
    net = timm_network(name, pretrained == "imagenet", "use --pretrained none (or, for mdistill export, --weights FILE)",
                       num_classes=0)
    if not hasattr(net, "forward_intermediates") or not getattr(net, "feature_info", None):
        raise ConfigError(f"timm model {name!r} has no forward_intermediates/feature_info, which the toolkit's "
                          "students need (timm 1.0 gives them to almost every family)")
    cfg = net.pretrained_cfg or {}
    default_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return TimmEmbeddingNet(TimmBackbone(net), embedding_dim, mean, std, spec, image_size or default_size)


def deploy_form(net: nn.Module) -> Tuple[nn.Module, int]:
    """The inference form of ``net``: a copy with every re-parameterisable block folded (timm's
    ``reparameterize_model``: MobileOne, RepViT, FastViT, ...), and how many blocks were folded.
    Our own architectures have none and come back unchanged (the same object, 0)."""
    from timm.utils.model import reparameterize_model

    foldable = [m for m in net.modules() if any(hasattr(m, a) for a in ("fuse", "reparameterize", "switch_to_deploy"))]
    if not foldable:
        return net, 0
    was_training = net.training
    folded = reparameterize_model(net.eval(), inplace=False)
    net.train(was_training)
    return folded.eval(), len(foldable)
