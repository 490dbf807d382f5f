"""A reference interpreter for saved Core ML ML programs: numeric parity where Core ML cannot run.

coremltools has no runtime off macOS. This reads the ``.mlpackage`` through coremltools' own MIL
loader (the program and its weight blobs, exactly as saved) and executes it op by op with torch
kernels, following MIL's documented semantics. Two modes:

- ``float32``: every op computes in float32 (a FLOAT16 program's fp16 weights are used as stored).
- ``float16``: every value the program types as fp16 is rounded to float16 after the op that makes
  it, as a FLOAT16-precision program stores its activations. Inside an op the arithmetic stays
  float32, so device kernels that also accumulate in fp16 can drift further than this shows.

An op it does not implement raises ``UnsupportedOpError`` naming the op: it never passes silently.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedOpError
from .spec import InputSpec

MODES = ("float32", "float16")


def load_program(path: Path):
    """The saved package's MIL program, read with coremltools' loaders (weights from its blob file)."""
    with contextlib.redirect_stderr(io.StringIO()):  # its import warns about untested torch/sklearn
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto import load as milproto_load
        from coremltools.models import utils as model_utils

    model = ct.models.MLModel(str(path), skip_model_load=True)
    return model_utils._convert_model_spec_to_pymil_prog(model, model.get_spec().specificationVersion,
                                                         milproto_load.load)


def _t(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float32))


def _ints(value) -> List[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _spatial_pads(op, a, x: torch.Tensor, kernel: List[int], strides: List[int], dilations: List[int]) -> List[int]:
    """(before, after) per spatial dim, in MIL's order: 'valid', 'custom', 'same' (extra at the end)
    or 'same_lower' (extra at the start)."""
    pad_type = str(a.get("pad_type", "valid"))
    n = len(kernel)
    if pad_type == "valid":
        return [0] * (2 * n)
    if pad_type == "custom":
        return _ints(a["pad"])
    if pad_type not in ("same", "same_lower"):
        raise UnsupportedOpError(f"op {op.op_type} with pad_type {pad_type!r} unsupported by the reference interpreter")
    out = []
    for size, k, s, d in zip(x.shape[-n:], kernel, strides, dilations):
        total = max(0, s * math.ceil(size / s) - size + (k - 1) * d + 1 - s)
        small, big = total // 2, total - total // 2
        out += [small, big] if pad_type == "same" else [big, small]
    return out


def _torch_pad(pads: List[int]) -> List[int]:
    """MIL lists (before, after) from the first padded dim; F.pad wants them from the last."""
    pairs = [pads[i:i + 2] for i in range(0, len(pads), 2)]
    return [p for pair in reversed(pairs) for p in pair]


def _conv(op, a):
    x, w = _t(a["x"]), _t(a["weight"])
    n = w.dim() - 2
    strides = _ints(a.get("strides", [1] * n))
    dilations = _ints(a.get("dilations", [1] * n))
    pads = _spatial_pads(op, a, x, list(w.shape[2:]), strides, dilations)
    x = F.pad(x, _torch_pad(pads))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    bias = _t(a["bias"]) if a.get("bias") is not None else None
    return fn(x, w, bias, stride=strides, dilation=dilations, groups=int(a.get("groups", 1)))


def _pool(kind: str):
    def run(op, a):
        x = _t(a["x"])
        kernel, strides = _ints(a["kernel_sizes"]), _ints(a["strides"])
        if len(kernel) != 2:
            raise UnsupportedOpError(f"op {op.op_type} over {len(kernel)} dims unsupported by the reference interpreter")
        pads = _spatial_pads(op, a, x, kernel, strides, [1, 1])
        if bool(a.get("ceil_mode", False)):  # the last window may start inside the padding's end
            for i, (size, k, s) in enumerate(zip(x.shape[-2:], kernel, strides)):
                span = size + pads[2 * i] + pads[2 * i + 1] - k
                pads[2 * i + 1] += (math.ceil(span / s) * s) - span
        if kind == "max":
            return F.max_pool2d(F.pad(x, _torch_pad(pads), value=-math.inf), kernel, strides)
        total = F.avg_pool2d(F.pad(x, _torch_pad(pads)), kernel, strides, divisor_override=1)
        if bool(a.get("exclude_padding_from_average", False)):
            count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), _torch_pad(pads)), kernel, strides, divisor_override=1)
        else:
            count = float(kernel[0] * kernel[1])
        return total / count
    return run


def _reduce(fn: Callable):
    def run(op, a):
        x = _t(a["x"])
        axes = a.get("axes")
        dims = tuple(range(x.dim())) if axes is None else tuple(_ints(axes))
        return fn(x, dims, bool(a.get("keep_dims", False)))
    return run


def _concat(op, a):
    values = [_t(v) for v in a["values"]]
    axis = int(a["axis"]) % values[0].dim()
    if bool(a.get("interleave", False)):  # one slice of each input in turn
        return torch.stack(values, dim=axis + 1).flatten(axis, axis + 1)
    return torch.cat(values, dim=axis)


def _reshape(op, a):
    x = _t(a["x"])
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(_ints(a["shape"]))]  # 0 keeps that dim
    return x.reshape(shape)


def _pad(op, a):
    mode = str(a.get("mode", "constant"))
    x, pads = _t(a["x"]), _ints(a["pad"])
    while len(pads) > 2 and pads[0] == pads[1] == 0:  # F.pad's reflect/replicate pad only the last dims
        pads = pads[2:]
    pads = _torch_pad(pads)
    if mode == "constant":
        return F.pad(x, pads, value=float(a.get("constant_val", 0.0)))
    return F.pad(x, pads, mode={"reflect": "reflect", "replicate": "replicate"}[mode])


def _cast(op, a):
    dtype = str(a["dtype"])
    if dtype not in ("fp16", "fp32"):
        raise UnsupportedOpError(f"op cast to {dtype} unsupported by the reference interpreter")
    return _t(a["x"]).float()  # float16 rounding, when emulated, follows the output's type


def _norm(op, a, axes):
    x = _t(a["x"])
    mean = x.mean(dim=axes, keepdim=True)
    var = x.var(dim=axes, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + float(a.get("epsilon", 1e-5)))


def _layer_norm(op, a):
    x = _t(a["x"])
    axes = tuple(_ints(a["axes"])) if a.get("axes") is not None else tuple(range(x.dim()))
    y = _norm(op, a, axes)
    if a.get("gamma") is not None:
        y = y * _t(a["gamma"])
    return y + _t(a["beta"]) if a.get("beta") is not None else y


def _channel(value, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector broadcast over NC[spatial]."""
    return _t(value).reshape([1, -1] + [1] * (x.dim() - 2))


def _batch_norm(op, a):
    x = _t(a["x"])
    y = (x - _channel(a["mean"], x)) / torch.sqrt(_channel(a["variance"], x) + float(a.get("epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * _channel(a["gamma"], x)
    return y + _channel(a["beta"], x) if a.get("beta") is not None else y


def _instance_norm(op, a):
    x = _t(a["x"])
    y = _norm(op, a, tuple(range(2, x.dim())))
    if a.get("gamma") is not None:
        y = y * _channel(a["gamma"], x)
    return y + _channel(a["beta"], x) if a.get("beta") is not None else y


def _matmul(op, a):
    x, y = _t(a["x"]), _t(a["y"])
    if bool(a.get("transpose_x", False)):
        x = x.transpose(-1, -2)
    if bool(a.get("transpose_y", False)):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def _alpha(a) -> float:
    return float(a["alpha"])


def _squeeze(op, a):
    x = _t(a["x"])
    if a.get("axes") is None:
        return x.squeeze()
    for axis in sorted((ax % x.dim() for ax in _ints(a["axes"])), reverse=True):
        x = x.squeeze(axis)
    return x


def _expand_dims(op, a):
    x = _t(a["x"])
    rank = x.dim() + len(_ints(a["axes"]))
    for axis in sorted(ax % rank for ax in _ints(a["axes"])):
        x = x.unsqueeze(axis)
    return x


def _slice_by_index(op, a):
    x = _t(a["x"])
    n = x.dim()

    def per_axis(name, default):
        return [bool(v) for v in np.asarray(a[name]).reshape(-1)] if a.get(name) is not None else [default] * n

    begin, end = _ints(a["begin"]), _ints(a["end"])
    stride = _ints(a["stride"]) if a.get("stride") is not None else [1] * n
    if min(stride) < 1:
        raise UnsupportedOpError("op slice_by_index with a negative stride unsupported by the reference interpreter")
    begin_mask, end_mask, squeeze = per_axis("begin_mask", False), per_axis("end_mask", False), per_axis("squeeze_mask", False)
    index = tuple(b if sq else slice(None if bm else b, None if em else e, st)  # python slicing: MIL's negative indices
                  for b, e, st, bm, em, sq in zip(begin, end, stride, begin_mask, end_mask, squeeze))
    return x[index]


def _split(op, a):
    x = _t(a["x"])
    axis = int(a["axis"]) % x.dim()
    if a.get("split_sizes") is not None:
        return list(torch.split(x, _ints(a["split_sizes"]), dim=axis))
    return list(torch.chunk(x, int(a["num_splits"]), dim=axis))  # MIL: num_splits must divide the axis


OPS: Dict[str, Callable] = {
    # elementwise
    "add": lambda op, a: _t(a["x"]) + _t(a["y"]),
    "sub": lambda op, a: _t(a["x"]) - _t(a["y"]),
    "mul": lambda op, a: _t(a["x"]) * _t(a["y"]),
    "real_div": lambda op, a: _t(a["x"]) / _t(a["y"]),
    "maximum": lambda op, a: torch.maximum(_t(a["x"]), _t(a["y"])),
    "minimum": lambda op, a: torch.minimum(_t(a["x"]), _t(a["y"])),
    "pow": lambda op, a: torch.pow(_t(a["x"]), _t(a["y"])),
    "sqrt": lambda op, a: torch.sqrt(_t(a["x"])),
    "rsqrt": lambda op, a: torch.rsqrt(_t(a["x"]) + float(a.get("epsilon", 1e-12))),
    "inverse": lambda op, a: 1.0 / (_t(a["x"]) + float(a.get("epsilon", 1e-4))),
    "exp": lambda op, a: torch.exp(_t(a["x"])),
    "log": lambda op, a: torch.log(_t(a["x"]) + float(a.get("epsilon", 0.0))),
    "abs": lambda op, a: torch.abs(_t(a["x"])),
    "square": lambda op, a: torch.square(_t(a["x"])),
    "clip": lambda op, a: torch.clamp(_t(a["x"]), float(a["alpha"]), float(a["beta"])),
    # activations
    "relu": lambda op, a: F.relu(_t(a["x"])),
    "relu6": lambda op, a: F.relu6(_t(a["x"])),
    "sigmoid": lambda op, a: torch.sigmoid(_t(a["x"])),
    "tanh": lambda op, a: torch.tanh(_t(a["x"])),
    "silu": lambda op, a: F.silu(_t(a["x"])),
    "gelu": lambda op, a: F.gelu(_t(a["x"]), approximate="tanh" if str(a.get("mode", "EXACT")) == "TANH_APPROXIMATION" else "none"),
    "sigmoid_hard": lambda op, a: torch.clamp(_alpha(a) * _t(a["x"]) + float(a["beta"]), 0.0, 1.0),
    "thresholded_relu": lambda op, a: torch.where(_t(a["x"]) >= _alpha(a), _t(a["x"]), torch.zeros(())),
    "leaky_relu": lambda op, a: F.leaky_relu(_t(a["x"]), _alpha(a)),
    "elu": lambda op, a: F.elu(_t(a["x"]), _alpha(a)),
    "softplus": lambda op, a: F.softplus(_t(a["x"])),
    "prelu": lambda op, a: torch.where(_t(a["x"]) >= 0, _t(a["x"]), _t(a["x"]) * _channel(a["alpha"], _t(a["x"]))),
    "softmax": lambda op, a: torch.softmax(_t(a["x"]), dim=int(a.get("axis", -1))),
    # reductions
    "reduce_mean": _reduce(lambda x, d, k: x.mean(dim=d, keepdim=k)),
    "reduce_sum": _reduce(lambda x, d, k: x.sum(dim=d, keepdim=k)),
    "reduce_max": _reduce(lambda x, d, k: x.amax(dim=d, keepdim=k)),
    "reduce_min": _reduce(lambda x, d, k: x.amin(dim=d, keepdim=k)),
    "reduce_sum_square": _reduce(lambda x, d, k: x.square().sum(dim=d, keepdim=k)),
    "reduce_l1_norm": _reduce(lambda x, d, k: x.abs().sum(dim=d, keepdim=k)),
    "reduce_l2_norm": _reduce(lambda x, d, k: x.square().sum(dim=d, keepdim=k).sqrt()),
    # shapes
    "reshape": _reshape,
    "transpose": lambda op, a: _t(a["x"]).permute(_ints(a["perm"])),
    "squeeze": _squeeze,
    "expand_dims": _expand_dims,
    "tile": lambda op, a: _t(a["x"]).repeat(_ints(a["reps"])),
    "concat": _concat,
    "slice_by_index": _slice_by_index,
    "split": _split,
    "pad": _pad,
    "identity": lambda op, a: a["x"],
    "cast": _cast,
    # layers
    "conv": _conv,
    "max_pool": _pool("max"),
    "avg_pool": _pool("avg"),
    "linear": lambda op, a: F.linear(_t(a["x"]), _t(a["weight"]), _t(a["bias"]) if a.get("bias") is not None else None),
    "matmul": _matmul,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "layer_norm": _layer_norm,
}


def unsupported_ops(program) -> List[str]:
    """The op types of ``program`` that this interpreter does not implement, sorted."""
    missing = set()
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type != "const" and (op.op_type not in OPS or op.blocks):
                missing.add(op.op_type)
    return sorted(missing)


class ReferenceProgram:
    """One function of a saved ML program, executable on float32 inputs by name."""

    def __init__(self, path: Path, mode: str = "float32", function: str = "main"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        program = load_program(path)  # first: it imports coremltools quietly
        from coremltools.converters.mil.mil import types

        missing = unsupported_ops(program)
        if missing:
            raise UnsupportedOpError(f"op{'s' if len(missing) > 1 else ''} {', '.join(missing)} unsupported by "
                                     "the reference interpreter")
        self.function = program.functions[function]
        self.mode = mode
        self._fp16 = types.fp16
        self.consts: Dict[str, object] = {}
        for op in self.function.operations:
            if op.op_type == "const":
                self.consts[op.outputs[0].name] = self._as_value(op.outputs[0].val)
        self.input_names = list(self.function.inputs)
        self.output_names = [v.name for v in self.function.outputs]

    @staticmethod
    def _as_value(value):
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            return torch.from_numpy(value.astype(np.float32))
        return value

    def _lookup(self, env, var):
        if isinstance(var, (list, tuple)):
            return [self._lookup(env, v) for v in var]
        if var is None:
            return None
        if var.name in env:
            return env[var.name]
        return self._as_value(var.val)  # an inline literal

    def __call__(self, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        env: Dict[str, object] = dict(self.consts)
        for name, var in self.function.inputs.items():
            env[name] = self._round(torch.from_numpy(np.asarray(inputs[name], dtype=np.float32)), var)
        with torch.no_grad():
            for op in self.function.operations:
                if op.op_type == "const":
                    continue
                args = {name: self._lookup(env, var) for name, var in op.inputs.items()}
                result = OPS[op.op_type](op, args)
                results = result if isinstance(result, (list, tuple)) else [result]
                for var, value in zip(op.outputs, results):
                    env[var.name] = self._round(value, var)
        return {name: _t(env[name]).numpy().astype(np.float32) for name in self.output_names}

    def _round(self, value, var):
        if self.mode == "float16" and var.dtype == self._fp16 and isinstance(value, torch.Tensor):
            return value.to(torch.float16).to(torch.float32)
        return value


class ReferenceRunner:
    """The reference interpreter with a runner's interface (the batch-1 program, one image at a time)."""

    max_batch: Optional[int] = 1

    def __init__(self, path: Path, spec: InputSpec, threads: int = 1, mode: str = "float32"):
        self.program = ReferenceProgram(path, mode)
        self.spec = spec
        self.threads = threads

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = self.spec.feed(images)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            name, out = self.program.input_names[0], self.program.output_names[0]
            return np.stack([self.program(**{name: x[i:i + 1]})[out][0] for i in range(len(x))])
        finally:
            torch.set_num_threads(previous)
