"""Seeding. Every epoch re-seeds from (seed, epoch), so a resumed run replays exactly."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    # Large odd multiplier keeps (seed, epoch) pairs from colliding for small values.
    return (seed * 1_000_003 + epoch) % (2**63 - 1)
