"""One runner per runtime: load a model with a pinned thread count, embed a batch of images.

Every runner takes the same (N, H, W, 3) uint8 images and feeds them the way its file expects
(``InputSpec.feed``), so every format is measured on identical inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..export.spec import InputSpec


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


class TfliteRunner:
    """The LiteRT interpreter with its default XNNPACK delegate; litert-torch files have batch 1."""

    max_batch: Optional[int] = 1

    def __init__(self, path: Union[Path, bytes], spec: InputSpec, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(path, (bytes, bytearray)):  # a file still in memory (mixed-precision search)
            self.interp = Interpreter(model_content=bytes(path), num_threads=threads)
        else:
            self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        inp = self.interp.get_input_details()[0]
        if tuple(inp["shape"]) != tuple(spec.shape()) or inp["dtype"] != np.dtype(spec.dtype):
            raise ValueError(f"the file's input is {np.dtype(inp['dtype']).name}{list(inp['shape'])}, "
                             f"expected {spec.dtype}{spec.shape()}")
        self.inp = inp["index"]
        self.out = self.interp.get_output_details()[0]["index"]
        self.spec = spec

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = self.spec.feed(images)
        result = []
        for i in range(len(x)):
            self.interp.set_tensor(self.inp, x[i:i + 1])
            self.interp.invoke()
            result.append(self.interp.get_tensor(self.out)[0].copy())
        return np.stack(result)


class CoremlRunner:
    """CoreML prediction exists only on macOS (``available()`` says whether it runs here)."""

    max_batch: Optional[int] = 1

    @staticmethod
    def available() -> bool:
        from ..export.coreml import can_run

        return can_run()

    def __init__(self, path: Path, spec: InputSpec, threads: int):
        import coremltools as ct

        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        self.spec = spec

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = self.spec.feed(images)
        return np.stack([self.model.predict({"image": x[i:i + 1]})["embedding"][0] for i in range(len(x))])


RUNNERS = {"pytorch": TorchRunner, "onnx": OnnxRunner, "tflite": TfliteRunner, "coreml": CoremlRunner}
