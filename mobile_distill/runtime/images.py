"""The images every runtime is fed: (N, H, W, 3) uint8 with the evaluation transform, so parity
(export) and timing (bench) see identical inputs."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def load_images(samples: Sequence, image_size: int, dataset: str, eval_resize: float = 1.0) -> np.ndarray:
    """(N, H, W, 3) uint8 images with the evaluation transform (resize + centre crop)."""
    from ..data.base import load_image
    from ..data.transforms import eval_transform

    tf = eval_transform(image_size, eval_resize)
    out = np.empty((len(samples), image_size, image_size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        # ToTensor gave k/255; multiplying back and rounding recovers the exact byte.
        out[i] = (tf(load_image(path, dataset)).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return out
