"""The input an exported file expects. Free of torch, so measuring processes stay lean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from ..errors import ConfigError

LAYOUTS = ("nhwc", "nchw")
INPUT_DTYPES = ("float32", "uint8")
# What the Android app's benchmark mode writes to result.json and `mdistill bench --adb` reads:
# field -> JSON type. The Kotlin golden test checks the app's output against this very table.
DEVICE_RESULT_FIELDS = {"latency_ms": "array", "count": "int", "embedding_dim": "int", "threads": "int",
                        "device": "object"}


def device_result_problems(result: dict) -> List[str]:
    """The ways ``result`` breaks ``DEVICE_RESULT_FIELDS`` (empty when it keeps it)."""
    kinds = {"array": list, "int": int, "object": dict}
    return [f"{k} is missing" if k not in result else f"{k} is not a JSON {t}"
            for k, t in DEVICE_RESULT_FIELDS.items()
            if k not in result or not isinstance(result[k], kinds[t]) or (t == "int" and isinstance(result[k], bool))]


@dataclass(frozen=True)
class InputSpec:
    """The input an exported file expects (recorded in model.json and the embedded metadata)."""

    image_size: int
    layout: str = "nchw"
    dtype: str = "float32"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ConfigError(f"unknown input layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if self.dtype not in INPUT_DTYPES:
            raise ConfigError(f"unknown input dtype {self.dtype!r}; choose one of {', '.join(INPUT_DTYPES)}")

    def shape(self, batch: int = 1) -> List[int]:
        s = self.image_size
        return [batch, s, s, 3] if self.layout == "nhwc" else [batch, 3, s, s]

    def describe(self) -> dict:
        return {
            "shape": self.shape(),
            "layout": self.layout.upper(),
            "dtype": self.dtype,
            "value_range": [0, 255] if self.dtype == "uint8" else [0.0, 1.0],
            "channel_order": "RGB",
        }

    def feed(self, images_u8: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 images -> the array this input expects."""
        x = images_u8 if self.layout == "nhwc" else images_u8.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        return x if self.dtype == "uint8" else x.astype(np.float32) / np.float32(255)

    def sample(self):
        """A (1, ...) torch tensor of this input's shape and dtype (the converters trace with it)."""
        import torch

        rng = np.random.default_rng(0)
        size = self.image_size
        return torch.from_numpy(self.feed(rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)))
