"""ONNX Runtime (CPU execution provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .spec import InputSpec


class OnnxRunner:
    max_batch: Optional[int] = None

    def __init__(self, path: Path, spec: InputSpec, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name
        self.spec = spec

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.name: self.spec.feed(images)})[0]
