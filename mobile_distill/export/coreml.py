"""CoreML through coremltools: ML program, iOS 16 target, FLOAT32 or FLOAT16 compute precision,
metadata in ``user_defined_metadata``.

Numeric parity: on macOS the gate runs Core ML itself (``MLModel.predict``) and cross-checks it
against the reference interpreter; elsewhere Core ML does not exist, so the gate runs the saved
program in the reference interpreter (``runtime/coreml_reference.py``: coremltools' loader, torch
kernels, float16 rounded wherever the program is typed float16), and the row says so. Structural
checks run everywhere: the saved package reloads, its input/output shapes and dtypes match, the
metadata is there, and the first and last layers' weights read back equal to PyTorch's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import MissingDependencyError
from .registry import register_exporter
from ..runtime.coreml import can_run
from .quiet import quiet

PRECISIONS = ("float32", "float16")
DEFAULT_PRECISIONS = PRECISIONS
DEFAULT_LAYOUT = "nchw"
INPUT_DTYPES = ("float32",)  # ML program tensor inputs have no uint8 type (an ImageType would)
SUFFIX = ".mlpackage"
FORMAT_NAME = "CoreML package"
RUNTIME = "Core ML (macOS)" if can_run() else "CoreML reference interpreter"
REFERENCE_NOTE = ("numeric parity from the CoreML reference interpreter (the saved program run with torch "
                  "kernels, float16 where it is typed float16), not Core ML itself, which needs macOS")
METADATA_KEY = "mobile_distill"


def check_installed() -> None:
    try:
        import coremltools  # noqa: F401
    except ImportError:
        raise MissingDependencyError("CoreML export needs coremltools: pip install 'mobile_distill[export]'") from None


@register_exporter("coreml", SUFFIX)
def convert(module, spec, precision: str, path: Path, metadata: str, calib=None, **_) -> Dict:
    import coremltools as ct

    sample = spec.sample()
    program = torch.export.export(module, (sample,)).run_decompositions({})
    with quiet():  # coremltools draws three tqdm bars per conversion, frame by frame off a terminal
        model = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=ct.precision.FLOAT16 if precision == "float16" else ct.precision.FLOAT32,
            inputs=[ct.TensorType(name="image", shape=tuple(sample.shape), dtype=np.float32)],
            outputs=[ct.TensorType(name="embedding", dtype=np.float32)],
        )
    model.user_defined_metadata[METADATA_KEY] = metadata
    model.short_description = "mobile_distill image embedding (L2-normalised)"
    model.save(str(path))
    return {"deployment_target": "iOS16", "compute_precision": precision.upper()}


def run(path: Path, spec, images: np.ndarray) -> np.ndarray:
    """Core ML's embeddings on macOS, the reference interpreter's elsewhere."""
    if can_run():
        from ..runtime.coreml import CoremlRunner

        return CoremlRunner(path, spec, threads=1)(images).astype(np.float32)
    return _reference(path, spec, images)


def parity_note() -> Optional[str]:
    """What the row's parity figures come from, when that is not the format's own runtime."""
    return None if can_run() else REFERENCE_NOTE


def _reference(path: Path, spec, images: np.ndarray) -> np.ndarray:
    from ..runtime.coreml_reference import ReferenceRunner

    # mode float16 runs the program as typed: a float32 program is not rounded anywhere
    return ReferenceRunner(path, spec, threads=1, mode="float16")(images).astype(np.float32)


def cross_check(path: Path, spec, images: np.ndarray, exported: np.ndarray, precision: str) -> Tuple[List[str], Dict]:
    """Where Core ML runs (macOS), compare it with the reference interpreter on the same images: a
    float32 program must agree as closely as the float32 gate asks; a float16 one is reported only
    (Core ML's float16 kernels may accumulate in float16, the interpreter does not)."""
    if not can_run():
        return [], {}
    from .tflite.mixed_precision import cosine_rows

    cos = cosine_rows(_reference(path, spec, images), exported)
    figures = {"coreml_vs_reference_cosine_min": float(cos.min()),
               "coreml_vs_reference_cosine_mean": float(cos.mean())}
    floor = 0.9999
    if precision == "float32" and not cos.min() >= floor:
        return [f"Core ML and the reference interpreter disagree: cosine min {cos.min():.6f} < {floor}"], figures
    return [], figures


def read_metadata(path: Path) -> Optional[str]:
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    return dict(spec.description.metadata.userDefined).get(METADATA_KEY)


def _array_shape(feature) -> List[int]:
    return [int(d) for d in feature.type.multiArrayType.shape]


def _closest_const(consts: Dict[str, np.ndarray], reference: np.ndarray) -> float:
    """Smallest max-abs difference between ``reference`` and any weight const of its shape."""
    diffs = [float(np.abs(np.asarray(c, dtype=np.float64) - reference).max())
             for c in consts.values() if np.shape(c) == reference.shape]
    return min(diffs) if diffs else float("inf")


def weight_consts(model) -> Dict[str, np.ndarray]:
    """Every array-valued ``const`` of a saved ML program, by op name, read back from the package.

    coremltools' own ``get_weights_metadata`` fails on programs where a const feeds an op whose
    input is a list (EfficientNet-Lite's padding ``concat``: 'list' object has no attribute 'val'),
    so this walks the program itself."""
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.models import utils as model_utils

    prog = model_utils._convert_model_spec_to_pymil_prog(model, model.get_spec().specificationVersion,
                                                          milproto_load.load)
    consts: Dict[str, np.ndarray] = {}

    def walk(block):
        for op in block.operations:
            for inner in op.blocks:
                walk(inner)
            value = op.val.val if op.op_type == "const" else None
            if isinstance(value, np.ndarray) and value.size > 1:
                consts[op.name] = value

    for function in prog.functions.values():
        walk(function)
    return consts


def structural_checks(path: Path, net, spec, precision: str) -> tuple[List[str], Dict]:
    """Checks that need no CoreML runtime. Returns (failures, figures)."""
    import coremltools as ct

    failures: List[str] = []
    model = ct.models.MLModel(str(path), skip_model_load=True)
    desc = model.get_spec().description
    f32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    if len(desc.input) != 1 or _array_shape(desc.input[0]) != spec.shape() \
            or desc.input[0].type.multiArrayType.dataType != f32:
        failures.append(f"input is not float32{spec.shape()}")
    if len(desc.output) != 1 or _array_shape(desc.output[0]) != [1, net.embedding_dim] \
            or desc.output[0].type.multiArrayType.dataType != f32:
        failures.append(f"output is not float32[1, {net.embedding_dim}]")
    if METADATA_KEY not in desc.metadata.userDefined:
        failures.append("metadata missing")
    consts = weight_consts(model)
    tol = 1e-3 if precision == "float16" else 1e-6
    # The first layer is the normalisation (its mean); the last is the embedding head.
    first = net.normalize.mean.numpy().astype(np.float64)
    last = getattr(net.head, "weight", None)
    figures = {"first_layer_max_abs_diff": _closest_const(consts, first)}
    if last is not None:
        last = last.detach().numpy().astype(np.float64)
        figures["last_layer_max_rel_diff"] = _closest_const(consts, last) / max(float(np.abs(last).max()), 1e-12)
    for name, diff in figures.items():
        if not diff <= tol:
            failures.append(f"{name.replace('_', ' ')} {diff:.2e} > {tol:g}")
    return failures, figures
