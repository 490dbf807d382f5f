"""The shapes every teacher source shares (``teacher_sources`` builds PyTorch ones, ``teacher_opaque``
ONNX files and precomputed rows): its input contract, the ``--teacher-*`` options, the wrapper that
gives every source one API, and the loaded ``Source``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError
from .models.base import Normalize
from .models.torchvision_nets import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Contract:
    """What the teacher expects: the input size and the normalisation of [0, 1] RGB images."""

    image_size: int
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"


@dataclass
class TeacherOptions:
    """The ``--teacher-*`` flags: contract overrides and where the weights come from."""

    weights: str = ""
    image_size: int = 0
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()
    embedding: str = "pre_logits"  # timm: pre_logits (pooled features) or logits
    images: str = ""  # precomputed embeddings: the list naming each row's image
    l2: bool = True
    extra: Dict = field(default_factory=dict)


class Wrapped(nn.Module):
    """Normalise with the contract -> the source's embedding -> L2 (optional); maps when it has them."""

    def __init__(self, net: nn.Module, contract: Contract, dim: int, arch: str, l2: bool = True,
                 feature_info: Optional[List[Dict]] = None, embed=None, intermediates=None):
        super().__init__()
        self.net, self.arch, self.l2 = net, arch, l2
        self.normalize = Normalize(contract.mean, contract.std)
        self.image_size, self.embedding_dim = int(contract.image_size), int(dim)
        self.feature_info = feature_info
        self._embed = embed or net
        self._intermediates = intermediates

    def _finish(self, e: torch.Tensor) -> torch.Tensor:
        e = e.flatten(1).float()
        return F.normalize(e, dim=1) if self.l2 else e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self._embed(self.normalize(x)))

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]):
        emb, maps = self._intermediates(self.normalize(x), list(indices))
        return self._finish(emb), maps


@dataclass
class Source:
    """A loaded teacher: the module, where it came from, its contract and its identity."""

    model: nn.Module
    kind: str
    spec: str
    digest: str
    contract: Contract
    info: Dict

    def record(self) -> Dict:
        return {"source": self.kind, "spec": self.spec, "sha256": self.digest, "contract": asdict(self.contract)}

    @property
    def opaque(self) -> bool:
        return getattr(self.model, "feature_info", None) is None


def resolved_contract(default: Contract, opts: TeacherOptions) -> Contract:
    """The source's own contract with the ``--teacher-image-size/-mean/-std`` overrides."""
    for name, value in (("mean", opts.mean), ("std", opts.std)):
        if value and len(value) != 3:
            raise ConfigError(f"--teacher-{name} takes 3 values (R,G,B), got {len(value)}")
    return Contract(image_size=opts.image_size or default.image_size, mean=tuple(opts.mean or default.mean),
                    std=tuple(opts.std or default.std), interpolation=default.interpolation)
