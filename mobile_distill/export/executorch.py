"""ExecuTorch: ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner ->
``.pte``; parity through ``executorch.runtime`` (the XNNPACK backend, as on a phone's CPU).

Precisions (one file each, ``student_<precision>.pte``):
  float32   the exported graph, lowered to XNNPACK
  int8      static int8 by PT2E with ``XNNPACKQuantizer``: symmetric per-channel weights, activations
            calibrated on the same real training images as the TFLite int8 file; a QAT checkpoint's
            int8 graph is exported as it was trained
The metadata document is a constant method of the program, ``mobile_distill_metadata()``, returning
the JSON (``constant_methods``: ExecuTorch has no free-form metadata field); any ExecuTorch runtime
reads it by loading that method.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..errors import MissingDependencyError
from .quiet import quiet
from .registry import register_exporter

PRECISIONS = ("float32", "int8")
DEFAULT_PRECISIONS = PRECISIONS
DEFAULT_LAYOUT = "nchw"
SUFFIX = ".pte"
FORMAT_NAME = "ExecuTorch program"
RUNTIME = "ExecuTorch runtime (XNNPACK)"
ACCEPTS_QAT = True  # static int8 of a QAT checkpoint is its trained graph (export/api.py)
QAT_FOLD_QUANTIZE = True  # XNNPACK takes int8 weight constants, not float weights quantised at run time
METADATA_METHOD = "mobile_distill_metadata"


def check_installed() -> None:
    from ..runtime.executorch import quiet_import

    try:
        with quiet_import():
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"ExecuTorch export needs {e.name}: pip install 'mobile_distill[export]'") \
            from None


def _quantised(module, spec, calib: np.ndarray):
    """``module`` with quantise/dequantise pairs around every op XNNPACK runs in int8."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(module, (spec.sample(),)).module(), quantizer)
    with torch.no_grad():
        for x in spec.feed(calib):
            prepared(torch.from_numpy(x[None]))
    return convert_pt2e(prepared)


@register_exporter("executorch", SUFFIX)
def convert(module, spec, precision: str, path: Path, metadata: str, calib: Optional[np.ndarray] = None,
            calibration: str = "minmax", **_) -> Dict:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    details: Dict = {}
    if precision == "int8" and getattr(module, "qat", None) is not None:
        module = module.qat
        details["quantization"] = {"quantizer": "PT2E (litert-torch's quantizer, trained with it)",
                                   "config": "symmetric, per-channel weights; quantisation-aware trained "
                                             "(mdistill train --qat)",
                                   "calibration": "none: the activation ranges its QAT observers learned"}
    elif precision == "int8":
        if calib is None or len(calib) == 0:
            raise ValueError("static int8 needs calibration images")
        module = _quantised(module, spec, calib)
        details["quantization"] = {
            "quantizer": "PT2E XNNPACKQuantizer", "config": "symmetric, per-channel weights, activations by "
            "PT2E's histogram observers", "calibration": f"{len(calib)} training images (--calibration "
            f"{calibration} applies to TFLite only)" if calibration != "minmax" else f"{len(calib)} training images"}
    with quiet():
        program = torch.export.export(module, (spec.sample(),))
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                           constant_methods={METADATA_METHOD: metadata})
        buffer = edge.to_executorch().buffer
    Path(path).write_bytes(buffer)
    return {**_placement(edge), **details}


def _placement(edge) -> Dict:
    """How much of the graph XNNPACK took: its partitions, and every op left to ExecuTorch's portable
    (reference) kernels, which are much slower on a phone."""
    nodes = [n for n in edge.exported_program().graph.nodes if n.op == "call_function"]
    delegated = sum(1 for n in nodes if getattr(n.target, "__name__", "") == "executorch_call_delegate")
    portable = Counter(str(getattr(n.target, "__name__", n.target)) for n in nodes
                       if getattr(n.target, "__name__", "") not in ("executorch_call_delegate", "getitem", "alloc"))
    return {"backend": "XNNPACK", "delegated_partitions": delegated, "portable_ops": dict(portable.most_common())}


def run(path: Path, spec, images: np.ndarray) -> np.ndarray:
    from ..runtime.executorch import ExecutorchRunner

    return ExecutorchRunner(path, spec, threads=1)(images)


def read_metadata(path: Path) -> Optional[str]:
    from ..runtime.executorch import read_constant

    data = Path(path).read_bytes()[:8]
    if data[4:8] != b"ET12":  # the program's file identifier: anything else is not an ExecuTorch program
        raise ValueError(f"no ExecuTorch file identifier (bytes 4-8 are {data[4:8]!r}, not b'ET12')")
    return read_constant(path, METADATA_METHOD)
