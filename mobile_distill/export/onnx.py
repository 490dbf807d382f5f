"""ONNX: ``torch.onnx.export(dynamo=True)``, opset 18, dynamic batch, simplified with onnxslim,
metadata in ``metadata_props``; parity through ONNX Runtime."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..errors import MissingDependencyError
from .registry import register_exporter

PRECISIONS = ("float32",)
DEFAULT_PRECISIONS = ("float32",)
DEFAULT_LAYOUT = "nchw"
SUFFIX = ".onnx"
FORMAT_NAME = "ONNX"
RUNTIME = "ONNX Runtime"
OPSET = 18


def check_installed() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        import onnxslim  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"ONNX export needs {e.name}: pip install 'mobile_distill[export]'") from None


@register_exporter("onnx", SUFFIX)
def convert(module, spec, precision: str, path: Path, metadata: str, calib=None, **_) -> Dict:
    import onnx
    import onnxslim

    sample = spec.sample()
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        module, (sample,), dynamo=True, opset_version=OPSET, input_names=["image"],
        output_names=["embedding"], dynamic_shapes={"x": {0: batch}}, verbose=False,
    )
    model = onnxslim.slim(program.model_proto)
    entry = model.metadata_props.add()
    entry.key, entry.value = "mobile_distill", metadata
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"opset": OPSET, "ops": dict(Counter(n.op_type for n in model.graph.node).most_common())}


def run(path: Path, spec, images: np.ndarray, batch_size: int = 64) -> Optional[np.ndarray]:
    from ..runtime.onnx import OnnxRunner

    runner = OnnxRunner(path, spec, threads=0)  # 0: ONNX Runtime picks the thread count
    return np.concatenate([runner(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def read_metadata(path: Path) -> Optional[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == "mobile_distill"), None)
