"""The CoreML reference interpreter, op by op against PyTorch: each case builds a one-op ML program
with coremltools' MIL builder, saves it as a real .mlpackage (no graph passes, so the op stays as
built), reads it back through coremltools' loader and runs it. The PyTorch side is written from
the op's documentation, never from the interpreter's code (explicit pads, torch's own modules)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import coremltools as ct
from coremltools.converters.mil import Builder as mb

from mobile_distill.errors import UnsupportedOpError
from mobile_distill.runtime.coreml_reference import OPS, ReferenceProgram, load_program

RNG = np.random.RandomState(0)
X4 = (1, 4, 8, 8)
W = RNG.randn(6, 4, 3, 3).astype(np.float32)
DW = RNG.randn(4, 1, 3, 3).astype(np.float32)
B = RNG.randn(6).astype(np.float32)
C4 = RNG.rand(4).astype(np.float32) + 0.5
LIN = RNG.randn(5, 8).astype(np.float32)


def _program(build, shapes):
    """The MIL builder reads the function's argument names, so one wrapper per arity."""
    specs = [mb.TensorSpec(shape=s) for s in shapes]
    if len(shapes) == 1:
        return mb.program(input_specs=specs, opset_version=ct.target.iOS16)(lambda x: build(x))
    return mb.program(input_specs=specs, opset_version=ct.target.iOS16)(lambda x, y: build(x, y))


def _save(tmp_path, build, shapes, precision=ct.precision.FLOAT32, name="prog"):
    prog = _program(build, shapes)
    # no graph passes for float32 (the op stays as built); FLOAT16 needs the pass that types it fp16
    pipeline = ct.PassPipeline.EMPTY if precision == ct.precision.FLOAT32 else ct.PassPipeline.DEFAULT
    model = ct.convert(prog, convert_to="mlprogram", pass_pipeline=pipeline,
                       minimum_deployment_target=ct.target.iOS16, compute_precision=precision)
    path = tmp_path / f"{name}.mlpackage"
    model.save(str(path))
    return path


def _run(path, arrays, mode="float32"):
    program = ReferenceProgram(path, mode)
    out = program(**dict(zip(program.input_names, arrays)))
    return out[program.output_names[0]]


T = torch.from_numpy


def _interleaved(x, y):
    """MIL's documented interleave: output[0::2] = x, output[1::2] = y along the axis."""
    out = torch.empty(1, 8, 8, 8)
    out[:, 0::2], out[:, 1::2] = x, y
    return out

def _rejoin(parts):
    """The parts of a split in another order along the channels (a one-output program)."""
    return mb.concat(values=[parts[-1], *parts[:-1]], axis=1)


# (id, MIL builder, PyTorch reference, input shapes)
CASES = [
    ("conv_valid_stride2", lambda x: mb.conv(x=x, weight=W, bias=B, strides=[2, 2], pad_type="valid"),
     lambda x: F.conv2d(x, T(W), T(B), stride=2), [X4]),
    ("conv_same_stride1", lambda x: mb.conv(x=x, weight=W, pad_type="same"),
     lambda x: F.conv2d(x, T(W), padding="same"), [X4]),
    # TF "same" at stride 2 on 8 px: 4 outputs need 1 pixel of padding, all of it at the end
    ("conv_same_stride2", lambda x: mb.conv(x=x, weight=W, strides=[2, 2], pad_type="same"),
     lambda x: F.conv2d(F.pad(x, (0, 1, 0, 1)), T(W), stride=2), [X4]),
    ("conv_same_lower_stride2", lambda x: mb.conv(x=x, weight=W, strides=[2, 2], pad_type="same_lower"),
     lambda x: F.conv2d(F.pad(x, (1, 0, 1, 0)), T(W), stride=2), [X4]),
    ("conv_custom_asymmetric", lambda x: mb.conv(x=x, weight=W, pad_type="custom", pad=[0, 2, 1, 0]),
     lambda x: F.conv2d(F.pad(x, (1, 0, 0, 2)), T(W)), [X4]),
    ("conv_depthwise_dilated", lambda x: mb.conv(x=x, weight=DW, groups=4, dilations=[2, 2], pad_type="same"),
     lambda x: F.conv2d(x, T(DW), groups=4, dilation=2, padding="same"), [X4]),
    ("max_pool_custom", lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]),
     lambda x: F.max_pool2d(x, 3, 2, 1), [X4]),
    ("max_pool_ceil", lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="valid", ceil_mode=True),
     lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True), [X4]),
    ("avg_pool_include_pad", lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[1, 1], pad_type="custom",
                                                   pad=[1, 1, 1, 1], exclude_padding_from_average=False),
     lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=True), [X4]),
    ("avg_pool_exclude_pad", lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                   pad=[1, 1, 1, 1], exclude_padding_from_average=True),
     lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [X4]),
    ("linear", lambda x: mb.linear(x=x, weight=LIN, bias=LIN[:, 0].copy()),
     lambda x: F.linear(x, T(LIN), T(LIN[:, 0].copy())), [(2, 8)]),
    ("matmul_transpose_y", lambda x, y: mb.matmul(x=x, y=y, transpose_y=True),
     lambda x, y: x @ y.transpose(-1, -2), [(2, 3, 5), (2, 4, 5)]),
    ("add_broadcast", lambda x, y: mb.add(x=x, y=y), lambda x, y: x + y, [X4, (1, 4, 1, 1)]),
    ("sub", lambda x, y: mb.sub(x=x, y=y), lambda x, y: x - y, [X4, X4]),
    ("mul", lambda x, y: mb.mul(x=x, y=y), lambda x, y: x * y, [X4, (1, 1, 8, 8)]),
    ("real_div", lambda x: mb.real_div(x=x, y=C4.reshape(1, 4, 1, 1)), lambda x: x / T(C4).view(1, 4, 1, 1), [X4]),
    ("maximum", lambda x, y: mb.maximum(x=x, y=y), torch.maximum, [X4, X4]),
    ("minimum", lambda x, y: mb.minimum(x=x, y=y), torch.minimum, [X4, X4]),
    ("pow", lambda x: mb.pow(x=mb.abs(x=x), y=np.float32(1.5)), lambda x: x.abs() ** 1.5, [X4]),
    ("sqrt", lambda x: mb.sqrt(x=mb.abs(x=x)), lambda x: x.abs().sqrt(), [X4]),
    ("rsqrt", lambda x: mb.rsqrt(x=mb.abs(x=x), epsilon=np.float32(1e-3)), lambda x: 1 / (x.abs() + 1e-3).sqrt(), [X4]),
    ("inverse", lambda x: mb.inverse(x=mb.abs(x=x), epsilon=np.float32(1e-2)), lambda x: 1 / (x.abs() + 1e-2), [X4]),
    ("exp", lambda x: mb.exp(x=x), torch.exp, [X4]),
    ("log", lambda x: mb.log(x=mb.abs(x=x)), lambda x: x.abs().log(), [X4]),
    ("square", lambda x: mb.square(x=x), torch.square, [X4]),
    ("clip", lambda x: mb.clip(x=x, alpha=np.float32(-0.5), beta=np.float32(0.7)), lambda x: x.clamp(-0.5, 0.7), [X4]),
    ("relu", lambda x: mb.relu(x=x), F.relu, [X4]),
    ("relu6", lambda x: mb.relu6(x=mb.mul(x=x, y=np.float32(5.0))), lambda x: F.relu6(5 * x), [X4]),
    ("sigmoid", lambda x: mb.sigmoid(x=x), torch.sigmoid, [X4]),
    ("tanh", lambda x: mb.tanh(x=x), torch.tanh, [X4]),
    ("silu", lambda x: mb.silu(x=x), F.silu, [X4]),
    ("gelu", lambda x: mb.gelu(x=x), F.gelu, [X4]),
    ("sigmoid_hard", lambda x: mb.sigmoid_hard(x=x, alpha=np.float32(1 / 6), beta=np.float32(0.5)),
     lambda x: F.hardsigmoid(x), [X4]),
    ("thresholded_relu", lambda x: mb.thresholded_relu(x=x, alpha=np.float32(-0.3)),
     lambda x: torch.where(x >= -0.3, x, torch.zeros_like(x)), [X4]),
    ("leaky_relu", lambda x: mb.leaky_relu(x=x, alpha=np.float32(0.1)), lambda x: F.leaky_relu(x, 0.1), [X4]),
    ("elu", lambda x: mb.elu(x=x, alpha=np.float32(0.7)), lambda x: F.elu(x, 0.7), [X4]),
    ("softplus", lambda x: mb.softplus(x=x), F.softplus, [X4]),
    ("softmax", lambda x: mb.softmax(x=x, axis=1), lambda x: torch.softmax(x, 1), [X4]),
    ("reduce_mean", lambda x: mb.reduce_mean(x=x, axes=[2, 3], keep_dims=True), lambda x: x.mean((2, 3), keepdim=True), [X4]),
    ("reduce_sum", lambda x: mb.reduce_sum(x=x, axes=[1], keep_dims=False), lambda x: x.sum(1), [X4]),
    ("reduce_max", lambda x: mb.reduce_max(x=x, axes=[-1], keep_dims=False), lambda x: x.amax(-1), [X4]),
    ("reduce_min", lambda x: mb.reduce_min(x=x, axes=[0, 2]), lambda x: x.amin((0, 2)), [X4]),
    ("reduce_l2_norm", lambda x: mb.reduce_l2_norm(x=x, axes=[1], keep_dims=True), lambda x: x.norm(dim=1, keepdim=True), [X4]),
    ("reduce_l1_norm", lambda x: mb.reduce_l1_norm(x=x, axes=[3]), lambda x: x.abs().sum(3), [X4]),
    ("reduce_sum_square", lambda x: mb.reduce_sum_square(x=x, axes=[2]), lambda x: (x * x).sum(2), [X4]),
    ("reshape", lambda x: mb.reshape(x=x, shape=[1, -1, 16]), lambda x: x.reshape(1, -1, 16), [X4]),
    ("transpose", lambda x: mb.transpose(x=x, perm=[0, 2, 3, 1]), lambda x: x.permute(0, 2, 3, 1), [X4]),
    ("squeeze", lambda x: mb.squeeze(x=x, axes=[0, 2]), lambda x: x.squeeze(2).squeeze(0), [(1, 4, 1, 8)]),
    ("expand_dims", lambda x: mb.expand_dims(x=x, axes=[0, -1]), lambda x: x[None, ..., None], [(4, 8)]),
    ("tile", lambda x: mb.tile(x=x, reps=[1, 3]), lambda x: x.repeat(1, 3), [(2, 5)]),
    ("concat", lambda x, y: mb.concat(values=[x, y, x], axis=1), lambda x, y: torch.cat([x, y, x], 1), [X4, (1, 2, 8, 8)]),
    # MIL's masks: begin_mask starts at 0, end_mask runs to the end, squeeze_mask drops the axis
    ("slice_by_index", lambda x: mb.slice_by_index(x=x, begin=[0, 1, -6, 5], end=[1, 3, -1, 0], stride=[1, 1, 2, 3],
                                                   begin_mask=[True, False, False, True],
                                                   end_mask=[False, False, False, True],
                                                   squeeze_mask=[True, False, False, False]),
     lambda x: x[0, 1:3, -6:-1:2, 0::3], [X4]),
    ("split_sizes", lambda x: _rejoin(mb.split(x=x, split_sizes=[1, 2, 1], axis=1)),
     lambda x: torch.cat([x[:, 3:], x[:, :1], x[:, 1:3]], 1), [X4]),
    ("split_num", lambda x: _rejoin(mb.split(x=x, num_splits=2, axis=-1)),
     lambda x: torch.cat([x[..., 4:], x[..., :4]], 1), [X4]),
    ("concat_interleave", lambda x, y: mb.concat(values=[x, y], axis=1, interleave=True),
     lambda x, y: _interleaved(x, y), [X4, X4]),
    ("pad_constant", lambda x: mb.pad(x=x, pad=[1, 0, 2, 3], mode="constant", constant_val=np.float32(0.5)),
     lambda x: F.pad(x, (2, 3, 1, 0), value=0.5), [X4]),
    ("pad_reflect", lambda x: mb.pad(x=x, pad=[0, 0, 0, 0, 1, 2, 2, 1], mode="reflect"),
     lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"), [X4]),
    ("pad_replicate", lambda x: mb.pad(x=x, pad=[2, 1, 0, 1], mode="replicate"),
     lambda x: F.pad(x, (0, 1, 2, 1), mode="replicate"), [X4]),
    ("batch_norm", lambda x: mb.batch_norm(x=x, mean=C4 - 1, variance=C4, gamma=C4[::-1].copy(), beta=C4 * 2,
                                           epsilon=np.float32(1e-3)),
     lambda x: F.batch_norm(x, T(C4 - 1), T(C4), T(C4[::-1].copy()), T(C4 * 2), False, 0.0, 1e-3), [X4]),
    ("instance_norm", lambda x: mb.instance_norm(x=x, gamma=C4, beta=C4 - 1, epsilon=np.float32(1e-4)),
     lambda x: F.instance_norm(x, weight=T(C4), bias=T(C4 - 1), eps=1e-4), [X4]),
    ("layer_norm", lambda x: mb.layer_norm(x=x, axes=[-1], gamma=LIN[0].copy(), beta=LIN[1].copy(), epsilon=np.float32(1e-5)),
     lambda x: F.layer_norm(x, (8,), T(LIN[0].copy()), T(LIN[1].copy()), 1e-5), [(2, 3, 8)]),
]


@pytest.mark.slow
@pytest.mark.parametrize("build, reference, shapes", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_matches_pytorch(tmp_path, build, reference, shapes):
    arrays = [RNG.randn(*s).astype(np.float32) for s in shapes]
    path = _save(tmp_path, build, shapes)
    out = _run(path, arrays)
    expected = reference(*[T(a) for a in arrays]).numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_every_interpreted_op_has_a_case():
    """A kernel added without a test against PyTorch fails here (``const`` is the loader's; the
    casts have their own test)."""
    covered = set()
    for _, build, _, shapes in CASES:
        prog = _program(build, shapes)
        covered |= {op.op_type for op in prog.functions["main"].operations}
    assert set(OPS) - covered - {"cast", "identity", "prelu"} == set()


def test_float16_mode_rounds_where_the_program_is_typed_float16(tmp_path):
    def build(x):
        y = mb.cast(x=x, dtype="fp16")
        return mb.cast(x=mb.mul(x=y, y=np.float16(3.0)), dtype="fp32")

    x = (RNG.randn(1, 64) * 10).astype(np.float32)
    path = _save(tmp_path, build, [(1, 64)])
    np.testing.assert_allclose(_run(path, [x], "float32"), 3 * x, rtol=1e-6)  # no rounding at all
    # rounded to float16 after the cast and again after the multiply
    expected = (torch.from_numpy(x).half().float() * 3).half().float().numpy()
    np.testing.assert_array_equal(_run(path, [x], "float16"), expected)
    assert not np.array_equal(expected, 3 * x)


def test_float16_program_drifts_only_in_float16_mode(tmp_path):
    """The same conv program converted at FLOAT16 precision: its stored weights are float16 in both
    modes, but only the float16 mode rounds the activations."""
    def build(x):
        return mb.reduce_mean(x=mb.relu(x=mb.conv(x=x, weight=W, bias=B, pad_type="same")), axes=[2, 3])

    x = RNG.randn(*X4).astype(np.float32)
    path = _save(tmp_path, build, [X4], precision=ct.precision.FLOAT16)
    w16, b16 = T(W).half().float(), T(B).half().float()
    exact = F.relu(F.conv2d(T(x), w16, b16, padding="same")).mean((2, 3)).numpy()
    np.testing.assert_allclose(_run(path, [x], "float32"), exact, rtol=1e-5, atol=1e-6)
    emulated = _run(path, [x], "float16")
    assert 1e-5 < np.abs(emulated - exact).max() < 1e-2


def test_an_unsupported_op_is_named_not_skipped(tmp_path):
    path = _save(tmp_path, lambda x: mb.relu(x=mb.sin(x=x)), [(1, 8)])
    assert [op.op_type for op in load_program(path).functions["main"].operations][-2:] == ["sin", "relu"]
    with pytest.raises(UnsupportedOpError, match="op sin unsupported by the reference interpreter"):
        ReferenceProgram(path)


def test_reading_a_missing_package_fails_clearly(tmp_path):
    with pytest.raises(Exception, match="missing"):
        ReferenceProgram(tmp_path / "missing.mlpackage")
