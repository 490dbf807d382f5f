"""The LiteRT interpreter (ai-edge-litert), with its default XNNPACK delegate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from .spec import InputSpec


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
