"""Loss registry. Each loss is a small ``nn.Module`` whose ``forward`` returns a dict of named
scalar terms (pytorch-metric-learning style), so a training log shows every part separately.

``create_loss("triplet", margin=0.0, mining="hard")`` builds one by name.
"""

from __future__ import annotations

from typing import List

from ..registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register
# Losses that tie the student's coordinates to the teacher's (asymmetric search needs one), in the
# order a train-time projection between different embedding sizes is taken from.
BRIDGE_LOSSES = ("absolute", "contrastive", "prototype")


def create_loss(name: str, **kwargs):
    _import_losses()
    return LOSSES.get(name)(**kwargs)


def list_losses() -> List[str]:
    _import_losses()
    return LOSSES.names()


def _import_losses() -> None:
    from . import absolute, attention, contrastive, darkrank, hint, metric, prototype, relative, relaxed, rkd  # noqa: F401


__all__ = ["BRIDGE_LOSSES", "LOSSES", "create_loss", "list_losses", "register_loss"]
