"""MobileNet v1 (Howard et al., 2017) with a width multiplier; ``mobilenet_v1_025`` is the
paper's MobileNet-0.25 student. ReLU6 as in Keras' ``MobileNet`` so the two are comparable.
No ImageNet weights exist offline for it: it trains from scratch."""

from __future__ import annotations

from typing import Optional

import torch.nn as nn

from ..errors import ConfigError
from . import register_model
from .base import Backbone, EmbeddingNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (output channels at width 1.0, stride) of the 13 depthwise-separable blocks.
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


def _mobilenet_v1(width: float, embedding_dim, pretrained: str, image_size: Optional[int], name: str) -> EmbeddingNet:
    if pretrained != "none":
        raise ConfigError(
            f"no ImageNet weights are available for {name}; use --pretrained none (it trains from scratch)"
        )
    ch = lambda c: max(8, int(c * width))  # noqa: E731
    layers = [_conv_bn(3, ch(32), 3, 2)]
    cin = ch(32)
    for cout, stride in _BLOCKS:
        layers.append(nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, ch(cout), 1, 1)))
        cin = ch(cout)
    return EmbeddingNet(Backbone(layers), embedding_dim, IMAGENET_MEAN, IMAGENET_STD, name, image_size or 224)


@register_model
def mobilenet_v1_025(embedding_dim=512, pretrained="none", image_size=None):
    return _mobilenet_v1(0.25, embedding_dim, pretrained, image_size, "mobilenet_v1_025")


@register_model
def mobilenet_v1_050(embedding_dim=512, pretrained="none", image_size=None):
    return _mobilenet_v1(0.5, embedding_dim, pretrained, image_size, "mobilenet_v1_050")


@register_model
def mobilenet_v1_100(embedding_dim=512, pretrained="none", image_size=None):
    return _mobilenet_v1(1.0, embedding_dim, pretrained, image_size, "mobilenet_v1_100")
