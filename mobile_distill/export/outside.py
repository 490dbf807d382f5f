"""A student trained elsewhere, made exportable: ``export(model=...)`` and
``mdistill export --model timm:NAME --weights FILE``.

The model becomes an ``EmbeddingNet`` (its contract's normalisation inside, L2 at the end) and is
written as a toolkit checkpoint at ``OUT/source/NAME.pt`` (once it is known to export: a model
whose embeddings are degenerate leaves nothing). From there the export is the one every
trained student gets: the same gates, the same model card, and ``mdistill verify`` / ``bench``
find the PyTorch model through the card like any other. A ``timm:`` or ``py:`` model is rebuilt
from that checkpoint by name; an ``nn.Module`` handed over in Python is exported from memory, and
its checkpoint only holds the weights (``verify`` and ``bench`` then need a ``py:`` factory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch.nn as nn

from ..errors import ConfigError
from ..models.base import EmbeddingNet, Normalize


@dataclass(frozen=True)
class Contract:
    """The input contract of an outside model: the size it is fed at and the normalisation of
    [0, 1] RGB images. Zero and empty mean "the model's own" (timm's ``pretrained_cfg``, the
    factory module's attributes)."""

    image_size: int = 0
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()

    def __post_init__(self):
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value and len(value) != 3:
                raise ConfigError(f"--{name} takes 3 values (R,G,B), got {len(value)}")
        if self.std and min(self.std) <= 0:
            raise ConfigError(f"--std must be positive, got {self.std}")
        if self.image_size < 0:
            raise ConfigError(f"--image-size must be positive, got {self.image_size}")


def outside_net(model, weights: Optional[str] = None, contract: Contract = Contract()) -> EmbeddingNet:
    """``timm:NAME`` / ``py:package.module:function`` (weights from ``weights`` or, for timm, its
    hub when online), or an ``nn.Module`` that maps a normalised batch to embeddings."""
    from ..models import create_model
    from ..models.factory_net import FactoryBackbone, FactoryEmbeddingNet, contract_of
    from ..teacher_sources import fit_state, read_state

    if isinstance(model, nn.Module):
        size, mean, std = contract_of(model)
        size = contract.image_size or size
        arch = f"module:{type(model).__module__}.{type(model).__qualname__}"
        net = FactoryEmbeddingNet(FactoryBackbone(model, size), None, mean, std, arch, size)
        if weights:
            fit_state(model, read_state(weights), weights, arch)
    elif isinstance(model, str) and model.startswith(("timm:", "py:")):
        pretrained = "none" if weights or model.startswith("py:") else "imagenet"
        net = create_model(model, embedding_dim=None, pretrained=pretrained, image_size=contract.image_size or None)
        if weights:
            inner = net.backbone.net
            fit_state(inner, _without_classifier(model, read_state(weights), inner), weights, model)
    else:
        raise ConfigError(f"--model {model!r}: give timm:NAME or py:package.module:function (or, in Python, an "
                          "nn.Module); a checkpoint of this toolkit is exported by its path")
    if contract.mean or contract.std:
        net.normalize = Normalize(contract.mean or tuple(net.normalize.mean.flatten().tolist()),
                                  contract.std or tuple(net.normalize.std.flatten().tolist()))
    return net.eval()


def _without_classifier(spec: str, state, headless: nn.Module):
    """A timm classifier's own state dict minus its classifier: the student embeds with the
    pooled pre-logits features, so the ImageNet (or fine-tuned) class layer is not part of it."""
    if not spec.startswith("timm:"):
        return state
    from ..models.timm_nets import timm_network

    full = set(timm_network(spec[len("timm:"):], pretrained=False).state_dict())
    classifier = full - set(headless.state_dict())
    return {k: v for k, v in state.items() if k not in classifier}


def source_payload(net: EmbeddingNet, data: str, model, weights: Optional[str]) -> Dict:
    """The outside model as a toolkit checkpoint's payload (``save_checkpoint`` writes it)."""
    from ..checkpoint import FORMAT, VERSION
    from ..utils.io import file_digest

    source = {"spec": model if isinstance(model, str) else net.arch, "weights": str(weights or ""),
              "weights_sha256": file_digest(weights) if weights else ""}
    return {"format": FORMAT, "version": VERSION, "model": net.model_info(), "state_dict": net.state_dict(),
            "config": {"data": data, "eval_resize": 1.0}, "source": source}


def parse_rgb(text: Optional[str], flag: str) -> Sequence[float]:
    """``--mean 0.5,0.5,0.5`` -> (0.5, 0.5, 0.5); empty -> ()."""
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} takes three numbers R,G,B, got {text!r}") from None
