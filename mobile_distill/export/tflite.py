"""TFLite through litert-torch (no TensorFlow), parity through the LiteRT interpreter.

Precisions (one file each, ``student_<precision>.tflite``):
  float32       litert-torch conversion of the PyTorch graph
  float16       float16 weights, float compute (ai-edge-quantizer float casting)
  int8          static int8: PT2E per-channel weights, activations calibrated on real training images
  dynamic_int8  int8 weights, activations quantised on the fly (ai-edge-quantizer)
  weight_int8   int8 weights dequantised to float before each op (ai-edge-quantizer)
The metadata document is a flatbuffer ``Metadata`` entry named ``mobile_distill`` whose buffer
holds the JSON (the standard TFLite mechanism; readable with any flatbuffer reader).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..errors import MissingDependencyError

PRECISIONS = ("float32", "float16", "int8", "dynamic_int8", "weight_int8")
DEFAULT_PRECISIONS = PRECISIONS
DEFAULT_LAYOUT = "nhwc"
SUFFIX = ".tflite"
RUNTIME = "LiteRT interpreter"
METADATA_NAME = "mobile_distill"

_float_cache: Dict[tuple, bytes] = {}  # float32 flatbuffer per (module, spec): quantisers start from it


def check_installed() -> None:
    try:
        import ai_edge_litert  # noqa: F401
        import ai_edge_quantizer  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"TFLite export needs {e.name}: pip install 'mobile_distill[export]'") from None


@contextlib.contextmanager
def _quiet():
    """The converters print progress trees and quantisation summaries; keep the console to our table."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _convert_float(module, spec) -> bytes:
    import litert_torch

    key = (id(module), spec)
    if key not in _float_cache:
        _float_cache.clear()
        with _quiet():
            edge = litert_torch.convert(module, (spec.sample(),))
        _float_cache[key] = bytes(edge.model_content())
    return _float_cache[key]


def _convert_int8_static(module, spec, calib: np.ndarray) -> bytes:
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    sample = spec.sample()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    with _quiet():
        graph = torch.export.export(module, (sample,)).module()
        prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in spec.feed(calib):
                prepared(torch.from_numpy(x[None]))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        edge = litert_torch.convert(converted, (sample,),
                                    quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return bytes(edge.model_content())


def _quantize_from_float(float_model: bytes, precision: str) -> bytes:
    from ai_edge_quantizer import quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    q = quantizer.Quantizer(bytearray(float_model))
    if precision == "float16":
        q.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
    elif precision == "dynamic_int8":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    else:
        q.load_quantization_recipe(recipe.weight_only_wi8_afp32())
    with _quiet():
        return bytes(q.quantize(enable_progress_bar=False).quantized_model)


def convert(module, spec, precision: str, path: Path, metadata: str, calib: Optional[np.ndarray] = None) -> Dict:
    if precision == "float32":
        model = _convert_float(module, spec)
    elif precision == "int8":
        if calib is None or len(calib) == 0:
            raise ValueError("static int8 needs calibration images")
        model = _convert_int8_static(module, spec, calib)
    else:
        model = _quantize_from_float(_convert_float(module, spec), precision)
    model = embed_metadata(model, metadata)
    Path(path).write_bytes(model)
    ops = op_histogram(model)
    return {"ops": ops, "transpose_ops": ops.get("TRANSPOSE", 0)}


def embed_metadata(model: bytes, document: str) -> bytes:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    buf = schema.BufferT()
    buf.data = np.frombuffer(document.encode("utf-8"), dtype=np.uint8)
    obj.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(obj.buffers) - 1
    obj.metadata = [m for m in (obj.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    obj.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def read_metadata(path: Path) -> Optional[str]:
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model(str(path))
    for m in obj.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        if name == METADATA_NAME:
            return bytes(np.asarray(obj.buffers[m.buffer].data, dtype=np.uint8)).decode("utf-8")
    return None


def op_histogram(model: bytes) -> Dict[str, int]:
    """Builtin op name -> count over all subgraphs, read from the flatbuffer (not the runtime,
    whose XNNPACK delegate hides the ops it takes over)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts: Counter = Counter()
    for sg in obj.subgraphs:
        for op in sg.operators:
            code = obj.operatorCodes[op.opcodeIndex]
            counts[names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")] += 1
    return dict(counts.most_common())


def run(path: Path, spec, images: np.ndarray) -> Optional[np.ndarray]:
    from ..bench.runners import TfliteRunner

    return TfliteRunner(path, spec, threads=1)(images)
