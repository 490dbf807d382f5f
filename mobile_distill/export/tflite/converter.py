"""TFLite through litert-torch (no TensorFlow), parity through the LiteRT interpreter.

Precisions (one file each, ``student_<precision>.tflite``):
  float32       litert-torch conversion of the PyTorch graph
  float16       float16 weights, float compute (ai-edge-quantizer float casting)
  int8          static int8: PT2E per-channel weights, activations calibrated on real training images
                (ai-edge-quantizer's static recipe with --calibration mse/octav or for mixed precision)
  int16act      int8 weights, int16 activations (ai-edge-quantizer static_wi8_ai16; not in the
                defaults: XNNPACK has no int16 kernels, so it runs on the slower reference kernels)
  dynamic_int8  int8 weights, activations quantised on the fly (ai-edge-quantizer)
  weight_int8   int8 weights dequantised to float before each op (ai-edge-quantizer)
A quantised file that fails the gate is retried in mixed precision (``convert_mixed``): the fewest,
most sensitive ops kept in float (mixed_precision.py).
The metadata document is a flatbuffer ``Metadata`` entry named ``mobile_distill`` whose buffer
holds the JSON (the standard TFLite mechanism; readable with any flatbuffer reader).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ...errors import MissingDependencyError
from ..registry import register_exporter
from ..quiet import quiet as _quiet

PRECISIONS = ("float32", "float16", "int8", "int16act", "dynamic_int8", "weight_int8")
DEFAULT_PRECISIONS = ("float32", "float16", "int8", "dynamic_int8", "weight_int8")
MIXED_PRECISIONS = ("int8", "int16act", "dynamic_int8", "weight_int8")
DEFAULT_LAYOUT = "nhwc"
SUFFIX = ".tflite"
FORMAT_NAME = "TFLite"
RUNTIME = "LiteRT interpreter"
METADATA_NAME = "mobile_distill"
ACCEPTS_QAT = True  # static int8 of a QAT checkpoint is its trained graph (export/api.py)

# The last float32 flatbuffer, which the quantisers start from. It holds its module, so that module
# stays alive: a key of id(module) alone could match a later module allocated at the freed address.
_float_cache: Dict[str, object] = {}


def check_installed() -> None:
    try:
        import ai_edge_litert  # noqa: F401
        import ai_edge_quantizer  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"TFLite export needs {e.name}: pip install 'mobile_distill[export]'") from None


def _convert_float(module, spec) -> bytes:
    import litert_torch

    if _float_cache.get("module") is not module or _float_cache.get("spec") != spec:
        with _quiet():
            edge = litert_torch.convert(module, (spec.sample(),))
        _float_cache.update(module=module, spec=spec, model=bytes(edge.model_content()))
    return _float_cache["model"]


def _convert_int8_static(module, spec, calib: np.ndarray) -> bytes:
    from litert_torch.quantize import pt2e_quantizer
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
    return _convert_pt2e(converted, spec, quantizer)


def _convert_pt2e(converted, spec, quantizer) -> bytes:
    """A PT2E-converted graph (quantise/dequantise pairs) to an int8 flatbuffer."""
    import litert_torch
    from litert_torch.quantize import quant_config

    with _quiet():
        edge = litert_torch.convert(converted, (spec.sample(),),
                                    quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return bytes(edge.model_content())


def _float16(float_model: bytes) -> bytes:
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    q = quantizer.Quantizer(bytearray(float_model))
    q.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=AlgorithmName.FLOAT_CASTING)
    with _quiet():
        return bytes(q.quantize(enable_progress_bar=False).quantized_model)


@register_exporter("tflite", SUFFIX)
def convert(module, spec, precision: str, path: Path, metadata: str, calib: Optional[np.ndarray] = None,
            calibration: str = "minmax") -> Dict:
    from . import mixed_precision as mp

    details: Dict = {}
    if precision == "float32":
        model = _convert_float(module, spec)
    elif precision == "float16":
        model = _float16(_convert_float(module, spec))
    elif precision == "int8" and calibration == "minmax" and getattr(module, "qat", None) is not None:
        model = _convert_pt2e(module.qat, spec, module.qat.net.quantizer)
        details["quantization"] = {"quantizer": "litert-torch PT2E", "config": "symmetric, per-channel weights; "
                                   "quantisation-aware trained (mdistill train --qat)", "calibration": "none: the "
                                   "activation ranges its QAT observers learned", "float_ops": [],
                                   "float_modules": list(module.qat.net.keep_float)}
    elif precision == "int8" and calibration == "minmax":
        if calib is None or len(calib) == 0:
            raise ValueError("static int8 needs calibration images")
        model = _convert_int8_static(module, spec, calib)
        details["quantization"] = {"quantizer": "litert-torch PT2E", "config": "symmetric, per-channel weights, "
                                   "activations by PT2E's histogram observers", "calibration": "minmax",
                                   "float_ops": []}
    else:
        q = mp.Quantiser(_convert_float(module, spec), spec, calib, precision, calibration)
        model = q.quantise()
        details["quantization"] = mp.recipe_record(q, [])
    return {**_write(model, metadata, path), **details}


def convert_mixed(module, spec, precision: str, path: Path, metadata: str, calib: Optional[np.ndarray],
                  probe: np.ndarray, probe_reference: np.ndarray, passes, calibration: str = "minmax",
                  log=lambda _: None, confirm=None) -> Dict:
    """Rank the weight ops by how much quantising each alone moves the embeddings of the ``probe``
    images, then keep the fewest most sensitive ones in float until ``passes(model_bytes)`` (and
    quantise the big ones again where the file passes without them). ``confirm()`` is the final
    gate on the file written at ``path``: where it refuses, the search goes on (a few times at most).
    Leaves ``path`` only when a mix passes; the details say what was tried either way."""
    from . import mixed_precision as mp

    q = mp.Quantiser(_convert_float(module, spec), spec, calib, precision, calibration)
    written: Dict = {}

    def accept(model: bytes, float_ops) -> bool:
        written.clear()
        written.update(_write(model, metadata, path))
        if confirm is None or confirm():
            return True
        Path(path).unlink()
        return False

    tried, first_s, refused = [], 0.0, []
    if precision == "int8" and calibration == "minmax":
        # the file that failed was litert-torch PT2E's (histogram observers); ai-edge-quantizer's own
        # min-max ranges with every op int8 are a different file, tried before any op is kept float
        start = time.perf_counter()
        model = q.quantise()
        tried.append({"float_ops": 0, "float_weight_fraction": 0.0, "passed": passes(model)})
        log(f"mixed precision: ai-edge-quantizer's all-int8 file: {'passes' if tried[0]['passed'] else 'fails'}")
        if tried[0]["passed"]:
            if accept(model, []):
                details = {"sensitivity": [], "mixed_search": tried, "quantization": mp.recipe_record(q, []),
                           "mixed_search_s": round(time.perf_counter() - start, 1), "gate_refusals": 0,
                           "float_weight_fraction": 0.0}
                return {**written, **details}
            refused.append(frozenset())
            tried.append({"float_ops": 0, "float_weight_fraction": 0.0, "passed": False, "gate": "refused"})
            log("mixed precision: the gate refuses ai-edge-quantizer's all-int8 file")
        first_s = time.perf_counter() - start
    log(f"tflite {precision}: measuring each op's sensitivity on {len(probe)} images")
    ranking = mp.sensitivity(q, probe, probe_reference, log)
    by_index = {op.index: op for op in q.ops}
    found = mp.search(q, [by_index[r["index"]] for r in ranking], passes, log=log, accept=accept,
                      refused=refused)
    details = {"sensitivity": ranking[:10], "mixed_search": tried + found["tried"],
               "mixed_search_s": round(first_s + found["search_s"], 1),  # the tries, not the ranking
               "gate_refusals": found["refusals"]}
    if found["model"] is None:
        return details
    details["quantization"] = mp.recipe_record(q, found["float_ops"])
    details["float_weight_fraction"] = found["float_weight_fraction"]
    return {**written, **details}


def _write(model: bytes, metadata: str, path: Path) -> Dict:
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

    data = Path(path).read_bytes()
    if data[4:8] != b"TFL3":  # the flatbuffer's file identifier: anything else is not a TFLite model
        raise ValueError(f"no TFLite file identifier (bytes 4-8 are {data[4:8]!r}, not b'TFL3')")
    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
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
    from ...runtime.tflite import TfliteRunner

    return TfliteRunner(path, spec, threads=1)(images)
