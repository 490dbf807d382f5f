"""Model registry: ``create_model(name, embedding_dim=512, pretrained="imagenet")`` -> ``EmbeddingNet``.

Architecture modules register entry points with ``@register_model``; each entry point takes
``(embedding_dim, pretrained, image_size)`` and returns an ``EmbeddingNet``. Two prefixes open the
registry to outside networks with the same API: ``timm:NAME`` (any timm architecture,
``timm_nets.py``) and ``py:package.module:function`` (a person's own factory, ``factory_net.py``).
"""

from __future__ import annotations

from typing import List, Optional

from ..errors import ConfigError
from ..registry import Registry
from .base import Backbone, EmbeddingNet

MODELS = Registry("model")
register_model = MODELS.register

PRETRAINED_CHOICES = ("imagenet", "none")


def create_model(
    name: str,
    embedding_dim: Optional[int] = 512,
    pretrained: str | bool | None = "none",
    image_size: Optional[int] = None,
) -> EmbeddingNet:
    """Build an embedding network by registry name.

    Args:
        name: e.g. ``efficientnet_lite0``, ``resnet18``, ``mobilenet_v1_025`` (see ``list_models()``),
            ``timm:mobilenetv4_conv_small`` or ``py:package.module:function``.
        embedding_dim: output size D; ``None`` or 0 returns the pooled backbone features instead.
        pretrained: ``"imagenet"`` or ``"none"`` (``True``/``False`` accepted).
        image_size: the input size the model is meant for (default: the architecture's own).

    Raises:
        RegistryError: unknown name. ConfigError: bad ``pretrained``.
        DownloadError: ImageNet weights could not be fetched (offline users get the reason).
    """
    _import_architectures()
    if pretrained is True:
        pretrained = "imagenet"
    elif pretrained in (False, None):
        pretrained = "none"
    if pretrained not in PRETRAINED_CHOICES:
        raise ConfigError(f"pretrained must be one of {PRETRAINED_CHOICES}, got {pretrained!r}")
    if embedding_dim is not None and embedding_dim < 0:
        raise ConfigError(f"embedding_dim must be positive (or 0 for pooled features), got {embedding_dim}")
    if name.startswith(("timm:", "py:")):
        from .factory_net import create_factory_model
        from .timm_nets import create_timm_model

        build = create_timm_model if name.startswith("timm:") else create_factory_model
        return build(name, embedding_dim or None, pretrained, image_size)
    return MODELS.get(name)(embedding_dim=embedding_dim or None, pretrained=pretrained, image_size=image_size)


def list_models() -> List[str]:
    _import_architectures()
    return MODELS.names()


def _import_architectures() -> None:
    from . import efficientnet_lite, mobilenet_v1, torchvision_nets  # noqa: F401


__all__ = ["Backbone", "EmbeddingNet", "MODELS", "create_model", "list_models", "register_model"]
