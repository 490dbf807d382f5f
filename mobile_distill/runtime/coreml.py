"""Core ML prediction through coremltools: it exists only on macOS (coremltools has no Linux
runtime for ML programs; ``coreml_reference`` runs the saved program anywhere, for parity only)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from .spec import InputSpec


def can_run() -> bool:
    return sys.platform == "darwin"


class CoremlRunner:
    """CoreML prediction exists only on macOS (``available()`` says whether it runs here)."""

    max_batch: Optional[int] = 1

    @staticmethod
    def available() -> bool:
        return can_run()

    def __init__(self, path: Path, spec: InputSpec, threads: int):
        import coremltools as ct

        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        self.spec = spec

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = self.spec.feed(images)
        return np.stack([self.model.predict({"image": x[i:i + 1]})["embedding"][0] for i in range(len(x))])
