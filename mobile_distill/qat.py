"""Quantisation-aware fine-tuning: a trained student learns weights that survive static int8.

``QatStudent`` is the student as a PT2E fake-quantised graph (litert-torch's quantizer with
``is_qat=True``: the same symmetric per-channel weight and per-tensor activation scheme as the
static int8 export, BatchNorm folding simulated). It shares every parameter and BatchNorm buffer
with the float ``EmbeddingNet`` it was built from, so the training loop, its losses (the float
teacher still teaches) and its checkpoints see an ordinary student; the checkpoint keeps the float
weights, which ``mdistill export`` calibrates and quantises with the same gate as any other.

Start one from a finished run:  mdistill train --qat --resume runs/student/last.pt
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from .errors import CheckpointError, ConfigError, MissingDependencyError

# A QAT run fine-tunes a converged student: a short schedule at a small learning rate.
QAT_EPOCH_FRACTION = 0.05
QAT_LR_FRACTION = 0.01
# Its last three quarters of epochs train with the activation ranges and BatchNorm statistics frozen
# (the PT2E QAT recipe): the weights settle on the ranges and statistics the int8 file will use.
QAT_FROZEN_FRACTION = 0.75
_BATCH_NORMS = ("batch_norm", "_native_batch_norm_legit", "cudnn_batch_norm")


class _Taps(nn.Module):
    """The embedding plus the stage maps the distillation losses read, as one traceable forward."""

    def __init__(self, net: nn.Module, stages: Sequence[int]):
        super().__init__()
        self.net, self.stages = net, list(stages)

    def forward(self, x):
        if not self.stages:
            return (self.net(x),)
        emb, maps = self.net.forward_intermediates(x, self.stages)
        return (emb, *maps)


class _Pattern(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


@contextlib.contextmanager
def _pattern_export_accepts_functions():
    """litert-torch 0.10's conv-BN QAT annotator hands a plain function to torchao's pattern
    tracer, which passes it to ``torch.export``; torch >= 2.9 accepts only modules there. Wrap
    the function in a module for the duration of ``prepare_qat_pt2e``."""
    from litert_torch.quantize import pt2e_quantizer_utils as utils

    original = utils._get_aten_graph_module_for_pattern

    def wrapped(pattern, example_inputs, is_cuda=False, **kwargs):
        if not isinstance(pattern, nn.Module):
            pattern = _Pattern(pattern)
        return original(pattern, example_inputs, is_cuda, **kwargs)

    utils._get_aten_graph_module_for_pattern = wrapped
    try:
        yield
    finally:
        utils._get_aten_graph_module_for_pattern = original


def _symmetric_weight_grids(graph) -> None:
    """Train on the weight grid the int8 file will use. The fused fake-quantiser of the QAT config
    computes a per-channel *affine* grid (scale = range / 255, some zero points non-zero) although its
    scheme says symmetric; ``convert_pt2e`` then derives the symmetric one (scale = max|w| / 127), so
    every weight tuned to its side of a rounding boundary lands on a grid 0.4 % off (measured: the file
    matched its trained graph to cosine 0.983). The plain fake-quantiser computes the symmetric grid."""
    from torchao.quantization.pt2e import FakeQuantize, FusedMovingAvgObsFakeQuantize, MovingAveragePerChannelMinMaxObserver

    for name, fused in list(graph.named_children()):
        if isinstance(fused, FusedMovingAvgObsFakeQuantize) and fused.qscheme == torch.per_channel_symmetric:
            plain = FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=fused.quant_min,
                                 quant_max=fused.quant_max, dtype=fused.dtype, qscheme=fused.qscheme,
                                 ch_axis=fused.ch_axis, averaging_constant=fused.activation_post_process.averaging_constant)
            setattr(graph, name, plain.to(fused.scale.device))


def _quantizer(keep_float: Sequence[str]):
    """litert-torch's PT2E quantizer in its QAT configuration, leaving the ops of the modules named in
    ``keep_float`` (and their submodules) in float. litert-torch's own ``set_module_name`` cannot: it
    refuses a None config and parses module names from a key format torch.export no longer writes;
    the module path is read here from each node's ``nn_module_stack`` instead."""
    from litert_torch.quantize import pt2e_quantizer

    prefixes = tuple(f"net.{m}" for m in keep_float)  # the graph's root is _Taps, the net is its child

    def quantised(node) -> bool:
        paths = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
        return not any(p == m or p.startswith(m + ".") for p in paths for m in prefixes)

    class KeepFloat(pt2e_quantizer.PT2EQuantizer):
        def _annotate_for_static_quantization_config(self, model):
            return self._annotate_all_static_patterns(model, self.global_config, quantised)

    return KeepFloat().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


def check_float_modules(net: nn.Module, names: Sequence[str]) -> None:
    """Each name must be a module of ``net`` that holds a weight layer."""
    modules = dict(net.named_modules())
    for name in names:
        if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in getattr(modules.get(name), "modules", lambda: [])()):
            top = ", ".join(n for n in modules if n.count(".") <= 2 and n)[:300]
            raise ConfigError(f"--qat-float {name!r}: no module of that name with a conv or linear layer "
                              f"in {type(net).__name__} (modules: {top}, ...)")


class QatStudent(nn.Module):
    """A fake-quantised view of ``net`` with the student API the training loop uses."""

    def __init__(self, net: nn.Module, stages: Sequence[int], image_size: int, keep_float: Sequence[str] = ()):
        super().__init__()
        try:
            from torchao.quantization.pt2e import quantize_pt2e

            self.quantizer = _quantizer(keep_float)
        except ImportError as e:
            raise MissingDependencyError(f"--qat needs {e.name}: pip install 'mobile_distill[export]'") from None
        check_float_modules(net, keep_float)
        n = len(net.feature_info)
        self.stages = sorted({int(i) % n for i in stages})
        self.keep_float = list(keep_float)
        self.net, self.feature_info, self.head = net, net.feature_info, net.head
        # the float network this run started from: what the int8 file replaces, so what it is gated against
        self.float_reference = {k: v.detach().clone() for k, v in net.state_dict().items()}
        param = next(net.parameters())
        # batch 2 in the example: train-mode BatchNorm cannot trace one image of 1x1 maps
        example = torch.rand(2, 3, image_size, image_size, device=param.device).contiguous(memory_format=torch.channels_last)
        shapes = ({0: torch.export.Dim("batch", min=1)},)
        graph = torch.export.export(_Taps(net.train(), self.stages), (example,), dynamic_shapes=shapes).module()
        with _pattern_export_accepts_functions():
            self.graph = quantize_pt2e.prepare_qat_pt2e(graph, self.quantizer)
        _symmetric_weight_grids(self.graph)

    frozen = False

    def train(self, mode: bool = True):
        """Train or eval mode. Activation observers learn ranges only in unfrozen training:
        evaluating (on test images, say) never moves them."""
        from torchao.quantization.pt2e import FakeQuantizeBase, move_exported_model_to_eval, move_exported_model_to_train

        with torch.random.fork_rng():  # the graph rewrite traces patterns on random inputs: keep the run's RNG
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        for fq in self.graph.modules():
            if isinstance(fq, FakeQuantizeBase):
                # weight grids (per channel) keep following the weights when frozen: they are the
                # per-channel maxima of the weights the int8 file will hold
                weights = getattr(fq, "qscheme", None) == torch.per_channel_symmetric
                (fq.enable_observer if mode and (weights or not self.frozen) else fq.disable_observer)()
        if mode and self.frozen:
            self._batch_norm_statistics(training=False)
        self.training = mode
        return self

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Freeze ranges and BatchNorm statistics for the last ``QAT_FROZEN_FRACTION`` of the epochs
        (never in a one-epoch run); a function of the epoch alone, so a resumed run does the same."""
        # at least the first epoch learns: a 2-epoch run would otherwise freeze ranges it never learned
        self.frozen = epochs > 1 and epoch >= epochs - min(epochs - 1, max(1, round(epochs * QAT_FROZEN_FRACTION)))
        self.train(self.training)

    def _batch_norm_statistics(self, training: bool) -> None:
        # the ``training`` argument (index 5) of each batch-norm call in the graph
        for node in self.graph.graph.nodes:
            if node.op == "call_function" and getattr(node.target, "__name__", "").split(".")[0] in _BATCH_NORMS:
                args = list(node.args)
                args[5] = training
                node.args = tuple(args)
        self.graph.recompile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)[0]

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        wanted = sorted({int(i) % len(self.feature_info) for i in indices})
        if wanted != self.stages:
            raise ValueError(f"this QAT graph taps stages {self.stages}, not {wanted}")
        emb, *maps = self.graph(x)
        return emb, maps

    def model_info(self) -> Dict:
        return self.net.model_info()

    def quantizer_state(self) -> Dict:
        """What a checkpoint needs besides the float weights: the tapped stages and the observers'
        and fake-quantisers' buffers (the learned activation ranges)."""
        own = {id(t) for t in self.net.state_dict(keep_vars=True).values()}
        return {"stages": list(self.stages), "float_modules": list(self.keep_float), "float_reference": self.float_reference,
                "state": {k: v.detach().clone() for k, v in self.graph.state_dict(keep_vars=True).items()
                          if id(v) not in own}}

    def load_quantizer_state(self, record: Dict) -> None:
        mine, theirs = set(self.quantizer_state()["state"]), set(record["state"])
        if mine != theirs or list(record["stages"]) != self.stages or record.get("float_modules", []) != self.keep_float:
            raise CheckpointError(f"the checkpoint's QAT observers do not fit this graph ({len(mine ^ theirs)} "
                                  f"buffer name(s) differ; stages {record['stages']} vs {self.stages}; float modules "
                                  f"{record.get('float_modules', [])} vs {self.keep_float})")
        # buffer by buffer, in place: the observers' own state-dict loading skips some of them (eps)
        with torch.no_grad():
            for name, value in record["state"].items():
                self.graph.get_buffer(name).resize_(value.shape).copy_(value)
        self.float_reference = record["float_reference"]


class _Embedding(nn.Module):
    """The first output of a converted QAT graph, as an ``EmbeddingNet``-like module."""

    def __init__(self, graph):
        super().__init__()
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        self.graph = allow_exported_model_train_eval(graph)

    def forward(self, x):
        return self.graph(x)[0]


def deployable(net: nn.Module, record: Dict, image_size: int, fold_quantize: bool = False) -> nn.Module:
    """The int8 network a QAT checkpoint trained for: its graph rebuilt, its observers' state loaded,
    converted to quantise/dequantise pairs (what litert-torch turns into int8 ops; ExecuTorch's
    XNNPACK lowering wants the weights' quantisation folded into int8 constants, ``fold_quantize``)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    student = QatStudent(copy.deepcopy(net), record["stages"], image_size, record.get("float_modules", ()))
    student.load_quantizer_state(record)
    converted = quantize_pt2e.convert_pt2e(student.graph, fold_quantize=fold_quantize)  # then eval: PT2E's own order
    with torch.random.fork_rng():
        move_exported_model_to_eval(converted)
    embedding = _Embedding(converted)
    embedding.quantizer, embedding.keep_float = student.quantizer, student.keep_float
    return embedding


def reference_checkpoint(ckpt: Dict) -> Dict:
    """A QAT checkpoint as the float student it started from (what its files are gated and
    benchmarked against); any other checkpoint as it is."""
    return {**ckpt, "state_dict": ckpt["qat"]["float_reference"]} if "qat" in ckpt else ckpt


def float_net(model: nn.Module) -> nn.Module:
    """The float ``EmbeddingNet`` behind a student (itself unless it is a ``QatStudent``)."""
    return model.net if isinstance(model, QatStudent) else model


def qat_overrides(checkpoint: str | Path, ckpt: Dict, epochs: int | None = None, lr: float | None = None) -> Dict:
    """The config of a QAT run started from a finished run: its data, model and batches, fine-tuning
    from its weights for ``QAT_EPOCH_FRACTION`` of its schedule at ``QAT_LR_FRACTION`` of its
    learning rates, taught by the float network itself (absolute loss, live, on the student's own
    views): the fake-int8 student learns to reproduce the float one it replaces, which is what the
    export gate measures. ``--teacher T --distill ...`` on the command line brings a big teacher back."""
    cfg = dict(ckpt["config"])
    if cfg.get("qat"):
        raise ConfigError(f"{checkpoint} is already a QAT run: resume it with --resume alone")
    scale = (lr / cfg["lr"]) if lr else QAT_LR_FRACTION
    cfg.update(teacher=str(checkpoint), distill=["absolute:1"], loss="none", teacher_view="augmented",
               teacher_cache=False, teacher_image_size=0, teacher_dtype="float32", mixup=0.0, teacher_cache_dir="")
    cfg.update(qat=True, init_from=str(checkpoint), name=f"{cfg['name']}-qat", warmup_epochs=0.0,
               epochs=epochs or max(1, round(cfg["epochs"] * QAT_EPOCH_FRACTION)),
               lr=cfg["lr"] * scale, backbone_lr=cfg["backbone_lr"] * scale, out_dir=str(Path(checkpoint).parent.parent))
    cfg["eval_every"] = 1 if cfg["epochs"] <= 10 else cfg.get("eval_every", 0)
    return cfg
