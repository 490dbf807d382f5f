"""Parameter and FLOP counts (torch's own FlopCounterMode: one multiply-add = 2 FLOPs)."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, image_size: int) -> int:
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    return int(counter.get_total_flops())


def complexity(model: nn.Module, image_size: int) -> Dict[str, float]:
    return {
        "params": count_parameters(model),
        "gflops": round(count_flops(model, image_size) / 1e9, 4),
        "image_size": image_size,
    }
