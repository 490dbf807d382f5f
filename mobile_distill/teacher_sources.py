"""Where a teacher comes from (``--teacher SPEC``), turned into one shape of frozen network.

SPEC is one of:
- a checkpoint of this toolkit: ``runs/teacher/last.pt``;
- ``timm:NAME``: any timm model; its weights through timm when online, or ``--teacher-weights FILE``
  (a state dict or ``.safetensors``); the input contract from its ``pretrained_cfg``;
- ``tv:NAME``: a torchvision classifier without its classifier; default ImageNet weights, or a file;
- ``py:package.module:function``: a factory returning an ``nn.Module`` that maps a normalised image
  batch to embeddings, for models that live in a person's own code;
- ``FILE.onnx``: run through ONNX Runtime, opaque and frozen: a model from any framework;
- ``embeddings:FILE.npy`` (``--teacher-embeddings``) with ``--teacher-images LIST``: a teacher that
  only exists behind a service, as one precomputed row per training image (clean views only).

Every source becomes a module taking RGB images in [0, 1], shape (B, 3, S, S), returning (B, D),
with the attributes the training loop reads from our own ``EmbeddingNet``: ``embedding_dim``,
``image_size`` and, where the source exposes feature maps (checkpoints, timm, the torchvision
families our registry knows), ``feature_info`` and ``forward_intermediates``. An opaque teacher has
``feature_info = None``, and the losses that need maps (hint, attention) refuse it before training.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .errors import CheckpointError, ConfigError
from .models.torchvision_nets import IMAGENET_MEAN, IMAGENET_STD
from .teacher_types import Contract, Source, TeacherOptions, Wrapped, resolved_contract
from .utils.io import file_digest

KINDS = ("checkpoint", "timm", "torchvision", "python", "onnx", "embeddings")


def options_from_config(cfg) -> TeacherOptions:
    """The ``--teacher-*`` fields of a training config."""
    def rgb(name: str) -> Tuple[float, ...]:
        text = getattr(cfg, f"teacher_{name}")
        try:
            values = tuple(float(v) for v in text.split(",")) if text else ()
        except ValueError:
            raise ConfigError(f"--teacher-{name} takes three numbers R,G,B, got {text!r}") from None
        return values

    return TeacherOptions(weights=cfg.teacher_weights, image_size=cfg.teacher_image_size, mean=rgb("mean"), std=rgb("std"),
                          embedding=cfg.teacher_embedding, images=cfg.teacher_images)


def teacher_kind(spec: str) -> str:
    if spec.startswith("timm:"):
        return "timm"
    if spec.startswith("tv:"):
        return "torchvision"
    if spec.startswith("py:"):
        return "python"
    if spec.startswith("embeddings:"):
        return "embeddings"
    return "onnx" if spec.lower().endswith(".onnx") else "checkpoint"


def state_digest(module: nn.Module, name: str) -> str:
    """The identity of in-memory weights: the name and every tensor of the state dict, in order."""
    h = hashlib.sha256(name.encode())
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_teacher(spec: str, options: Optional[TeacherOptions] = None) -> Source:
    """Build the frozen teacher ``spec`` names (see the module doc).

    Raises:
        ConfigError / CheckpointError / DownloadError / MissingDependencyError: one line naming the
        teacher and what to do, for every way a spec can be wrong.
    """
    opts = options or TeacherOptions()
    kind = teacher_kind(spec)
    from . import teacher_opaque  # an ONNX file, precomputed rows: no PyTorch network inside

    source = {"checkpoint": _checkpoint, "timm": _timm, "torchvision": _torchvision, "python": _python,
              "onnx": teacher_opaque.onnx_teacher, "embeddings": teacher_opaque.embeddings_teacher}[kind](spec, opts)
    source.model.eval().requires_grad_(False)
    return source


def _checkpoint(spec: str, opts: TeacherOptions) -> Source:
    from .checkpoint import load_checkpoint, model_from_checkpoint

    if opts.weights or opts.mean or opts.std:
        raise ConfigError("--teacher-weights/-mean/-std are for timm:, tv:, py: and ONNX teachers; a checkpoint "
                          "holds its own weights and normalises inside")
    ckpt = load_checkpoint(spec)
    model = model_from_checkpoint(ckpt, f"teacher {spec}")
    info = ckpt["model"]
    # our models normalise inside: the contract is the one they were trained with, read-only
    contract = Contract(info["image_size"], tuple(info["mean"]), tuple(info["std"]))
    return Source(model, "checkpoint", spec, file_digest(spec), contract, dict(info))


def _load_weights(net: nn.Module, path: str, who: str) -> None:
    fit_state(net, read_state(path, "teacher weights"), path, who, "teacher weights")


def read_state(path: str, what: str = "weights") -> Dict:
    """A local state dict (``.pt``/``.pth``, read with ``weights_only=True``) or ``.safetensors``;
    one nesting level (``state_dict``, ``model``) is unwrapped."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(state, dict):
                state = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)), state)
    except Exception as e:  # a corrupt or foreign file: one line, whatever the reader raised
        raise CheckpointError(f"cannot read {what} {path}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} {path} are not a state dict")
    return state


def fit_state(net: nn.Module, state: Dict, path: str, who: str, what: str = "weights") -> None:
    """Load ``state`` into ``net`` strictly; a mismatch names the first missing and unexpected keys."""
    missing, unexpected = _key_mismatch(net, state)
    if missing or unexpected:
        raise CheckpointError(f"{what} {path} do not fit {who}: missing keys {missing[:3]}, "
                              f"unexpected keys {unexpected[:3]}")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{what} {path} do not fit {who}: {str(e).splitlines()[-1][:300]}") from None


def _key_mismatch(net: nn.Module, state: Dict) -> Tuple[List[str], List[str]]:
    own = net.state_dict()
    return [k for k in own if k not in state], [k for k in state if k not in own]


def _timm(spec: str, opts: TeacherOptions) -> Source:
    from .models.timm_nets import timm_network

    name = spec[len("timm:"):]
    net = timm_network(name, not opts.weights, "pass --teacher-weights FILE (a state dict or .safetensors)")
    if opts.weights:
        _load_weights(net, opts.weights, f"timm:{name}")
    cfg = net.pretrained_cfg or {}
    default = Contract(int(cfg.get("input_size", (3, 224, 224))[-1]), tuple(cfg.get("mean", IMAGENET_MEAN)),
                       tuple(cfg.get("std", IMAGENET_STD)), str(cfg.get("interpolation", "bilinear")))
    if opts.embedding not in ("pre_logits", "logits"):
        raise ConfigError(f"--teacher-embedding must be pre_logits or logits for a timm teacher, got {opts.embedding!r}")
    pre_logits = opts.embedding == "pre_logits"
    dim = net.num_features if pre_logits else net.num_classes
    if hasattr(net, "head_hidden_size") and pre_logits:
        dim = net.head_hidden_size or dim

    def embed(x):
        return net.forward_head(net.forward_features(x), pre_logits=pre_logits)

    def intermediates(x, indices):
        final, maps = net.forward_intermediates(x, indices=indices, intermediates_only=False)
        return net.forward_head(final, pre_logits=pre_logits), maps

    info = [dict(d) for d in net.feature_info] if hasattr(net, "forward_intermediates") else None
    contract = resolved_contract(default, opts)
    model = Wrapped(net, contract, dim, f"timm:{name}", opts.l2, info, embed, intermediates if info else None)
    digest = file_digest(opts.weights) if opts.weights else state_digest(net, name)
    return Source(model, "timm", spec, digest, contract, {"arch": f"timm:{name}", "embedding_dim": dim,
                                                          "image_size": contract.image_size})


def _torchvision(spec: str, opts: TeacherOptions) -> Source:
    import torchvision

    name = spec[len("tv:"):]
    if name not in torchvision.models.list_models():
        import difflib

        close = difflib.get_close_matches(name, torchvision.models.list_models(), n=5, cutoff=0.6)
        raise ConfigError(f"torchvision has no model {name!r}" + (f"; close names: {', '.join(close)}" if close else ""))
    from .models import torchvision_nets

    if opts.weights:
        net = torchvision.models.get_model(name, weights=None)
        _load_weights(net, opts.weights, f"tv:{name}")
    else:
        net = torchvision_nets._torchvision(name, "imagenet")
    contract = resolved_contract(Contract(224), opts)
    if name.startswith("resnet") or hasattr(net, "features"):  # our Backbone: the maps hint/attention read
        from .models.base import Backbone, EmbeddingNet

        modules = torchvision_nets._resnet_modules(net) if name.startswith("resnet") else list(net.features)
        inner = EmbeddingNet(Backbone(modules), None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), name, contract.image_size)
        model = Wrapped(inner, contract, inner.embedding_dim, f"tv:{name}", opts.l2, inner.feature_info,
                        intermediates=inner.forward_intermediates)
    else:
        for head in ("fc", "heads", "classifier", "head"):
            if hasattr(net, head):
                setattr(net, head, nn.Identity())
                break
        with torch.no_grad():
            dim = net.eval()(torch.zeros(1, 3, contract.image_size, contract.image_size)).flatten(1).shape[1]
        model = Wrapped(net, contract, dim, f"tv:{name}", opts.l2)
    digest = file_digest(opts.weights) if opts.weights else state_digest(net, name)
    return Source(model, "torchvision", spec, digest, contract, {"arch": f"tv:{name}", "embedding_dim": model.embedding_dim,
                                                                 "image_size": contract.image_size})


def _python(spec: str, opts: TeacherOptions) -> Source:
    from .models.factory_net import call_factory

    target = spec[len("py:"):]
    net = call_factory(spec)
    if opts.weights:
        _load_weights(net, opts.weights, f"py:{target}")
    default = Contract(int(getattr(net, "image_size", 224)), tuple(getattr(net, "mean", IMAGENET_MEAN)),
                       tuple(getattr(net, "std", IMAGENET_STD)))
    contract = resolved_contract(default, opts)
    with torch.no_grad():
        dim = net.eval()(torch.zeros(1, 3, contract.image_size, contract.image_size)).flatten(1).shape[1]
    info = getattr(net, "feature_info", None) if hasattr(net, "forward_intermediates") else None
    model = Wrapped(net, contract, dim, f"py:{target}", opts.l2, info and [dict(d) for d in info],
                    intermediates=net.forward_intermediates if info else None)
    digest = file_digest(opts.weights) if opts.weights else state_digest(net, target)
    return Source(model, "python", spec, digest, contract, {"arch": f"py:{target}", "embedding_dim": dim,
                                                            "image_size": contract.image_size})
