"""PyTorch eager: the reference every exported file is compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .spec import InputSpec


class TorchRunner:
    """PyTorch eager, the reference: float32 NCHW in [0, 1]."""

    max_batch: Optional[int] = None  # any batch size

    def __init__(self, checkpoint: Path, spec: InputSpec, threads: int):
        import torch

        from ..checkpoint import load_checkpoint, model_from_checkpoint

        torch.set_num_threads(threads)
        self.torch = torch
        from ..qat import reference_checkpoint

        self.model = model_from_checkpoint(reference_checkpoint(load_checkpoint(checkpoint)), str(checkpoint)).eval()
        self.spec = spec

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(self.spec.feed(images))).numpy()
