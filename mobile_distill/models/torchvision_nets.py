"""torchvision ResNets and MobileNets as embedding backbones.

ImageNet weights are fetched from torchvision's URLs with the project's downloader (checked
against the sha256 prefix in torchvision's file name) into ``$MDISTILL_HOME/weights``.
``MDISTILL_WEIGHTS_URL`` replaces the URL's directory, for mirrors and for tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn as nn
import torchvision

from .. import paths
from ..errors import CheckpointError, DownloadError
from . import register_model
from .base import Backbone, EmbeddingNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fetch_torchvision_weights(name: str) -> Path:
    """Download (once) the default ImageNet weights of torchvision model ``name``."""
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    filename = url.rsplit("/", 1)[-1]
    mirror = os.environ.get("MDISTILL_WEIGHTS_URL")
    if mirror:
        url = mirror.rstrip("/") + "/" + filename
    dest = paths.home() / "weights" / filename
    if dest.exists():
        return dest
    from ..data.archive import download_file
    from ..utils.io import atomic_path, file_digest

    # torchvision names files <arch>-<first 8 hex of sha256>.pth; checked before the rename.
    prefix = filename.rsplit("-", 1)[-1].split(".")[0]
    with atomic_path(dest) as tmp:
        try:
            download_file(url, tmp, checksum=None)
        except DownloadError as e:
            raise DownloadError(
                f"could not fetch ImageNet weights for {name}: {e}. Without internet use --pretrained none, "
                f"or copy {filename} to {dest}"
            ) from None
        if not file_digest(tmp).startswith(prefix):
            raise DownloadError(f"ImageNet weights for {name} from {url} failed their checksum (sha256 prefix {prefix})")
    return dest


def _torchvision(name: str, pretrained: str) -> nn.Module:
    net = torchvision.models.get_model(name, weights=None)
    if pretrained == "imagenet":
        path = fetch_torchvision_weights(name)
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError) as e:
            raise CheckpointError(f"weights file {path} does not fit {name}: {e}") from None
    return net


def _resnet_modules(net: nn.Module) -> List[nn.Module]:
    return [nn.Sequential(net.conv1, net.bn1, net.relu), net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4]


def _build(name: str, embedding_dim, pretrained: str, image_size: Optional[int]) -> EmbeddingNet:
    net = _torchvision(name, pretrained)
    modules = _resnet_modules(net) if name.startswith("resnet") else list(net.features)
    return EmbeddingNet(Backbone(modules), embedding_dim, IMAGENET_MEAN, IMAGENET_STD, name, image_size or 224)


def _register(name: str) -> None:
    def entry(embedding_dim=512, pretrained="none", image_size=None):
        return _build(name, embedding_dim, pretrained, image_size)

    entry.__name__ = name
    register_model(entry)


for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"):
    _register(_name)
