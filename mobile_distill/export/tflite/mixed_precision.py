"""TFLite quantisation through ai-edge-quantizer recipes: per-op sensitivity, and mixed precision
that keeps the fewest, most sensitive ops in float until the file passes the gate.

A recipe is a list of ``{regex, operation, algorithm_key, op_config}`` rules matched (``re.search``,
last match wins) against each op's *scope*: its output tensor names joined by ``;`` with a trailing
``;``. litert-torch names tensors after the PyTorch module path, so an op's scope says which layer
it is. The graph's input and output stay float (the app feeds RGB floats or bytes and reads a
float embedding), and so does the L2 normalisation after the last weight op: it costs nothing
and int8 would round the unit vector.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..quiet import quiet as _quiet

# precision -> (ai-edge-quantizer preset name, needs calibration images)
RECIPES = {
    "int8": ("static_wi8_ai8", True),
    "int16act": ("static_wi8_ai16", True),
    "dynamic_int8": ("dynamic_wi8_afp32", False),
    "weight_int8": ("weight_only_wi8_afp32", False),
}
# --calibration name -> ai-edge-quantizer algorithm: min-max ranges (activations: moving average of
# each batch's min/max; weights: per-channel max), or weight ranges clipped to the least squared error
# (MSE) or by OCTAV's optimal clipping. Activation ranges are min-max for all three.
CALIBRATIONS = {"minmax": "min_max_uniform_quantize", "mse": "MSE", "octav": "OCTAV"}
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
# a mix that passes on the search's images but fails the final gate sends the search on; after this
# many the search stops, since choosing among more mixes on the gate's own images would make the
# gate's figures a selection rather than a check
MAX_GATE_REFUSALS = 3
WEIGHT_OP_NAMES = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE")  # ai-edge-quantizer's names


@dataclass
class Op:
    index: int
    type: str
    outputs: List[str]  # output tensor names
    label: str  # the PyTorch module path, for people
    params: int  # weight elements (0 for ops without weights)

    @property
    def scope(self) -> str:
        """What recipe regexes are matched against: the output names, ';'-joined, trailing ';'."""
        return ";".join(self.outputs) + ";"

    def regex(self) -> str:
        return "^" + re.escape(self.scope) + "$"

    def as_dict(self) -> Dict:
        return {"index": self.index, "type": self.type, "layer": self.label, "params": self.params}


def describe(op: Dict) -> str:
    """``backbone.0.0.0`` for a conv, ``backbone.0.0.0 [concatenation]`` for the ops fused around it."""
    return op["layer"] if op["type"] in WEIGHT_OPS else f"{op['layer']} [{op['type'].lower()}]"


def list_ops(model: bytes) -> List[Op]:
    """Every op of the main subgraph, in execution order."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sg = obj.subgraphs[0]
    ops = []
    for k, op in enumerate(sg.operators):
        code = obj.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        outs = [_name(sg.tensors[i]) for i in op.outputs if i >= 0]
        params = 0
        if kind in WEIGHT_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0:
            params = int(np.prod(sg.tensors[op.inputs[1]].shape))
        ops.append(Op(k, kind, outs, layer_label(outs[0] if outs else ""), params))
    return ops


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


def layer_label(tensor_name: str) -> str:
    """``.../InvertedResidual_0/torch.nn.modules.conv.Conv2d_conv_pwl;2`` -> ``backbone.2.0.conv_pwl``.

    litert-torch writes each level as ``<qualified type>_<attribute>``; fused ops list several
    locations (``;;``) and the last one is the op's own layer."""
    location = tensor_name.split(";;")[-1].split(";")[0]
    attrs = []
    for level in location.split("/"):
        typ = level.rsplit(".", 1)[-1].lstrip("_")
        if "_" in typ:
            attrs.append(typ.split("_", 1)[1])
    return ".".join(attrs[1:] if attrs[1:] and attrs[0] == "net" else attrs) or tensor_name


def io_boundary(model: bytes, ops: Sequence[Op]) -> List[str]:
    """Regexes of what stays float whatever the recipe: the graph's input and output tensors (as
    ai-edge-quantizer's virtual INPUT/OUTPUT ops), the ops that read the input, and every op after
    the last weight op (the L2 normalisation)."""
    from ai_edge_litert.tools import flatbuffer_utils

    sg = flatbuffer_utils.read_model_from_bytearray(bytearray(model)).subgraphs[0]
    io = [re.escape(_name(sg.tensors[i])) for i in list(sg.inputs) + list(sg.outputs)]
    raw = list(sg.operators)
    last_weight = max((op.index for op in ops if op.type in WEIGHT_OPS), default=len(ops))
    edge = [op.regex() for op in ops
            if op.index > last_weight or any(i in sg.inputs for i in raw[op.index].inputs)]
    return ["^" + r + ";$" for r in io] + edge


def build_recipe(model: bytes, precision: str, calibration: str = "minmax", float_ops: Sequence[Op] = (),
                 only: Optional[Op] = None) -> List[Dict]:
    """The precision's preset with ``calibration``'s algorithm, the I/O boundary and ``float_ops``
    kept float; with ``only``, that one op quantised and everything else float (the sensitivity probe)."""
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.qtyping import TFLOperationName as OpName

    if precision not in RECIPES:
        raise ValueError(f"no ai-edge-quantizer recipe for {precision!r}; choose from {', '.join(RECIPES)}")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {calibration!r}; choose from {', '.join(CALIBRATIONS)}")
    rm = recipe_manager.RecipeManager()
    scope = only.regex() if only is not None else ".*"

    def add(op_name, algorithm: str) -> None:
        if precision in ("int8", "int16act"):
            rm.add_static_config(scope, op_name, activation_num_bits=8 if precision == "int8" else 16,
                                 weight_num_bits=8, algorithm_key=algorithm)
        elif precision == "dynamic_int8":
            rm.add_dynamic_config(scope, op_name, num_bits=8, algorithm_key=algorithm)
        else:
            rm.add_weight_only_config(scope, op_name, num_bits=8, algorithm_key=algorithm)

    if calibration == "octav":
        # ai-edge-quantizer's OCTAV clips symmetric tensors only, and refuses the constant operands of
        # other ops (the input normalisation's mean and scale are asymmetric there): OCTAV clips the
        # weight ops' weights, and every other op keeps min-max ranges.
        add(OpName.ALL_SUPPORTED, CALIBRATIONS["minmax"])
        for op_name in WEIGHT_OP_NAMES:
            add(getattr(OpName, op_name), CALIBRATIONS["octav"])
    else:
        add(OpName.ALL_SUPPORTED, CALIBRATIONS[calibration])
    keep = io_boundary(model, list_ops(model)) + [op.regex() for op in float_ops]
    for regex in keep:
        rm.add_quantization_config(regex, OpName.ALL_SUPPORTED, None, "no_quantize")
    return rm.get_quantization_recipe()


class Quantiser:
    """One float model, its calibration statistics computed once, quantised under any recipe."""

    def __init__(self, float_model: bytes, spec, calib: Optional[np.ndarray], precision: str,
                 calibration: str = "minmax"):
        self.model, self.spec, self.precision, self.calibration = bytes(float_model), spec, precision, calibration
        self.ops = list_ops(self.model)
        self._qsv = None
        if RECIPES[precision][1]:
            if calib is None or len(calib) == 0:
                raise ValueError(f"{precision} needs calibration images")
            q = self._quantizer(build_recipe(self.model, precision, calibration))
            from ai_edge_litert.interpreter import Interpreter

            signature, io = next(iter(Interpreter(model_content=self.model).get_signature_list().items()))
            feed = [{io["inputs"][0]: x[None]} for x in spec.feed(calib)]
            with _quiet():
                self._qsv = q.calibrate({signature: feed}, num_threads=1)

    def _quantizer(self, recipe: List[Dict]):
        from ai_edge_quantizer import quantizer

        q = quantizer.Quantizer(bytearray(self.model))
        q.load_quantization_recipe(recipe)
        return q

    def recipe(self, float_ops: Sequence[Op] = (), only: Optional[Op] = None) -> List[Dict]:
        return build_recipe(self.model, self.precision, self.calibration, float_ops, only)

    def quantise(self, float_ops: Sequence[Op] = (), only: Optional[Op] = None) -> bytes:
        q = self._quantizer(self.recipe(float_ops, only))
        with _quiet():
            result = q.quantize(self._qsv, enable_progress_bar=False, enable_progress_report=False)
        return bytes(result.quantized_model)

    def weight_ops(self) -> List[Op]:
        return [op for op in self.ops if op.type in WEIGHT_OPS]

    def candidates(self) -> List[Op]:
        """The ops a recipe can keep float: with static recipes every op outside the I/O boundary
        (an ADD or MEAN with int8 output loses as much as a conv), otherwise the weight ops."""
        boundary = set(io_boundary(self.model, self.ops))
        static = RECIPES[self.precision][1]
        return [op for op in self.ops if op.regex() not in boundary and (static or op.type in WEIGHT_OPS)]


def embed(model: bytes, spec, images: np.ndarray) -> np.ndarray:
    from ...runtime.tflite import TfliteRunner

    return TfliteRunner(model, spec, threads=1)(images)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference - other) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference ** 2)) / noise)


def sensitivity(q: Quantiser, images: np.ndarray, reference: np.ndarray,
                log: Callable[[str], None] = lambda _: None) -> List[Dict]:
    """Each candidate op quantised alone (everything else float): the final embedding's cosine to
    ``reference`` (min and mean over ``images``) and SNR, worst first."""
    rows = []
    ops = q.candidates()
    for n, op in enumerate(ops):
        out = embed(q.quantise(only=op), q.spec, images)
        cos = cosine_rows(out, reference)
        rows.append({**op.as_dict(), "embedding_cosine_min": float(cos.min()),
                     "embedding_cosine_mean": float(cos.mean()), "embedding_snr_db": snr_db(reference, out)})
        if (n + 1) % 10 == 0:
            log(f"sensitivity: {n + 1}/{len(ops)} ops")
    return sorted(rows, key=lambda r: (r["embedding_cosine_mean"], r["embedding_cosine_min"]))


def layer_errors(q: Quantiser, images: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Every op's output in the fully quantised model against the float model (ai-edge-quantizer's
    ``validate``: cosine, and SNR in dB, per tensor), keyed by the op's index."""
    from ai_edge_quantizer.utils.validation_utils import ValidationErrorMetric as M
    from ai_edge_litert.interpreter import Interpreter

    aq = q._quantizer(q.recipe())
    with _quiet():
        aq.quantize(q._qsv, enable_progress_bar=False, enable_progress_report=False)
        signature, io = next(iter(Interpreter(model_content=q.model).get_signature_list().items()))
        feed = [{io["inputs"][0]: x[None]} for x in q.spec.feed(images)]
        result = aq.validate({signature: feed}, error_metrics=[M.COSINE_SIMILARITY, M.SNR], num_threads=1)
    tensors = result.get_all_tensor_results()
    out = {}
    for op in q.ops:
        if op.outputs and op.outputs[0] in tensors:
            t = tensors[op.outputs[0]]
            snr = float(t["snr"])
            out[op.index] = {"output_cosine": float(t["cosine_similarity"]),
                             "output_snr_db": float("inf") if not np.isfinite(snr) else 10 * np.log10(max(snr, 1e-30))}
    return out


def search(q: Quantiser, ranked: Sequence[Op], passes: Callable[[bytes], bool], max_float_fraction: float = 0.5,
           log: Callable[[str], None] = lambda _: None, accept: Optional[Callable[[bytes, List[Op]], bool]] = None,
           max_refusals: int = MAX_GATE_REFUSALS, refused: Sequence[frozenset] = ()) -> Dict:
    """The fewest of the ``ranked`` ops (most sensitive first) kept float so that ``passes``.

    Tries k = 1, 2, 3, ... of the ranking; stops at the first passing k, or when the float ops would
    hold more than ``max_float_fraction`` of the weights (the file would no longer be an int8 file).
    ``accept`` is the final gate on other images: a mix it refuses (the pruned one, then the one
    before pruning) sends the search on to k + 1, until ``max_refusals`` mixes (counting the sets of
    op indices in ``refused``, refused before the search) have been refused.
    """
    total = sum(op.params for op in q.weight_ops()) or 1
    tried: List[Dict] = []
    refused = set(refused)
    start = time.perf_counter()

    def result(model, kept):
        return {"model": model, "float_ops": kept, "tried": tried, "search_s": time.perf_counter() - start,
                "refusals": len(refused), "float_weight_fraction": sum(op.params for op in kept) / total}

    for k in range(1, len(ranked) + 1):
        kept = list(ranked[:k])
        fraction = sum(op.params for op in kept) / total
        if fraction > max_float_fraction:
            break
        model = q.quantise(float_ops=kept)
        ok = passes(model)
        tried.append({"float_ops": k, "float_weight_fraction": fraction, "passed": ok})
        log(f"mixed precision: {k} op(s) in float ({100 * fraction:.2f} % of weights): {'passes' if ok else 'fails'}")
        if not ok:
            continue
        for candidate, ops in (prune(q, model, kept, passes, total, tried, log), (model, kept)):
            key = frozenset(op.index for op in ops)
            if key in refused:
                continue
            if accept is None or accept(candidate, ops):
                return result(candidate, ops)
            refused.add(key)
            share = sum(op.params for op in ops) / total
            tried.append({"float_ops": len(ops), "float_weight_fraction": share, "passed": False, "gate": "refused"})
            log(f"mixed precision: the gate refuses the mix of {len(ops)} float op(s) ({100 * share:.2f} % of weights)")
            if len(refused) >= max_refusals:
                return result(None, [])
    return result(None, [])


def prune(q: Quantiser, model: bytes, kept: List[Op], passes: Callable[[bytes], bool], total: int,
          tried: List[Dict], log: Callable[[str], None], min_share: float = 0.01):
    """The ranking adds ops one at a time, so an op added early (a big head) may no longer be needed
    once later ones are float: each kept op holding at least ``min_share`` of the weights, biggest
    first, is quantised again wherever the file still passes. Returns the smaller file and its ops."""
    for op in sorted((o for o in kept if o.params >= min_share * total), key=lambda o: -o.params):
        trial = [o for o in kept if o is not op]
        candidate = q.quantise(float_ops=trial)
        ok = passes(candidate)
        fraction = sum(o.params for o in trial) / total
        tried.append({"float_ops": len(trial), "float_weight_fraction": fraction, "passed": ok, "requantised": op.label})
        log(f"mixed precision: {op.label} quantised again ({100 * fraction:.2f} % of weights in float): "
            f"{'passes, kept int8' if ok else 'fails, stays float'}")
        if ok:
            model, kept = candidate, trial
    return model, kept


def recipe_record(q: Quantiser, float_ops: Sequence[Op]) -> Dict:
    """What model.json keeps: enough to rebuild the file with ai-edge-quantizer."""
    import importlib.metadata as md

    return {"quantizer": "ai-edge-quantizer", "version": md.version("ai-edge-quantizer"),
            "preset": RECIPES[q.precision][0], "calibration": q.calibration,
            "float_ops": [op.as_dict() for op in float_ops], "recipe": _plain(q.recipe(float_ops))}


def _plain(x):
    """Enums -> their values, so the recipe is plain JSON."""
    import enum

    if isinstance(x, dict):
        return {str(_plain(k)): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, enum.Enum):
        return x.value
    return x
