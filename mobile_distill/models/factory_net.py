"""A network from a person's own code: ``create_model("py:package.module:function")``.

The factory returns an ``nn.Module`` that maps a normalised RGB batch (B, 3, S, S) to features
(B, C) or (B, C, 1, 1). Its input contract comes from attributes on the module (``image_size``,
``mean``, ``std``; ImageNet's constants otherwise), and the normalisation runs inside our wrapper,
so it is part of every export. A module that also has ``feature_info`` and
``forward_intermediates`` (timm's shape of API) gives the hint and attention losses their maps.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..errors import ConfigError
from .base import EmbeddingNet

PREFIX = "py:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def call_factory(spec: str) -> nn.Module:
    """Import ``package.module`` and call ``function()``: the module it returns, or one line naming the
    factory and what went wrong (the user's code raised, or returned something else)."""
    target = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    module_name, _, function = target.partition(":")
    if not module_name or not function:
        raise ConfigError(f"{spec!r}: write py:package.module:function")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:  # as `python -m` would: the working directory first
        sys.path.insert(0, str(Path.cwd()))
    try:
        net = getattr(importlib.import_module(module_name), function)()
    except Exception as e:  # the user's code: its own message, no traceback
        raise ConfigError(f"factory {target} failed: {type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"factory {target} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def contract_of(net: nn.Module) -> Tuple[int, Tuple[float, ...], Tuple[float, ...]]:
    """(image size, mean, std) from the module's attributes, ImageNet's where it has none."""
    return (int(getattr(net, "image_size", 224)), tuple(getattr(net, "mean", IMAGENET_MEAN)),
            tuple(getattr(net, "std", IMAGENET_STD)))


class FactoryBackbone(nn.Module):
    """The factory's network, its output shaped (B, C, 1, 1) for ``EmbeddingNet``'s head."""

    def __init__(self, net: nn.Module, image_size: int):
        super().__init__()
        self.net = net
        with torch.no_grad():
            was_training = net.training
            self.num_features = int(net.eval()(torch.zeros(1, 3, image_size, image_size)).flatten(1).shape[1])
            net.train(was_training)
        maps = getattr(net, "feature_info", None) if hasattr(net, "forward_intermediates") else None
        self.feature_info = [dict(d) for d in maps] if maps else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)[:, :, None, None]


class FactoryEmbeddingNet(EmbeddingNet):
    """``EmbeddingNet`` around a factory's module; maps only where the module has them."""

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        final, maps = self.backbone.net.forward_intermediates(self.normalize(x), list(indices))
        return self.forward_head(final.flatten(1)[:, :, None, None]), list(maps)


def create_factory_model(spec: str, embedding_dim: Optional[int], pretrained: str, image_size: Optional[int]) -> EmbeddingNet:
    """``py:package.module:function`` -> a ``FactoryEmbeddingNet``. The factory owns its weights:
    ``pretrained`` is not used (load a file with ``--weights`` at export)."""
    net = call_factory(spec)
    size, mean, std = contract_of(net)
    size = image_size or size
    return FactoryEmbeddingNet(FactoryBackbone(net, size), embedding_dim, mean, std, spec, size)
