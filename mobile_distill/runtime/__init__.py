"""One module per runtime, below both ``export`` (the parity gate) and ``bench`` (timing):
``pytorch`` (the reference), ``onnx`` (ONNX Runtime), ``tflite`` (the LiteRT interpreter),
``coreml`` (Core ML, macOS only), ``executorch`` (ExecuTorch's runtime with XNNPACK), ``coreml_reference`` (the saved ML program run with torch
kernels anywhere: CoreML parity off macOS, never timed). Each runner loads a file with a pinned thread count and embeds a
batch of ``images.load_images`` images the way its file expects (``spec.InputSpec.feed``).
Adding a format means one converter module in ``export`` and one runtime module here.
"""

from .coreml import CoremlRunner
from .executorch import ExecutorchRunner
from .onnx import OnnxRunner
from .pytorch import TorchRunner
from .spec import InputSpec
from .tflite import TfliteRunner

RUNNERS = {"pytorch": TorchRunner, "onnx": OnnxRunner, "tflite": TfliteRunner, "coreml": CoremlRunner,
           "executorch": ExecutorchRunner}

__all__ = ["RUNNERS", "InputSpec", "TorchRunner", "OnnxRunner", "TfliteRunner", "CoremlRunner", "ExecutorchRunner"]
