"""Opaque teachers: an ONNX file run by ONNX Runtime, and precomputed embeddings. Neither exposes
feature maps (hint and attention refuse them); the embeddings answer for the listed training images
only, so they teach on clean views and cannot embed a test gallery."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .errors import CheckpointError, ConfigError, MissingDependencyError
from .teacher_types import Contract, Source, TeacherOptions, Wrapped, resolved_contract
from .utils.io import file_digest


class OnnxNet(nn.Module):
    """An ONNX graph as a frozen module: NCHW or NHWC float input, one embedding output."""

    def __init__(self, path: str):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("an ONNX teacher needs onnxruntime: pip install 'mobile_distill[export]'") from None
        try:
            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable ONNX model: {str(e).splitlines()[0][:200]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name, self.shape = inp.name, list(inp.shape)
        if len(self.shape) != 4 or 3 not in (self.shape[1], self.shape[3]):
            raise ConfigError(f"ONNX teacher {path}: input {inp.name} has shape {self.shape}; expected (N, 3, H, W) or (N, H, W, 3)")
        self.nhwc = self.shape[1] != 3
        self.fixed_batch = isinstance(self.shape[0], int)

    def native_size(self) -> Optional[int]:
        h = self.shape[1] if self.nhwc else self.shape[2]
        return h if isinstance(h, int) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device, x = x.device, x.detach().float().cpu()
        x = x.permute(0, 2, 3, 1) if self.nhwc else x
        batches = x.split(1) if self.fixed_batch else (x,)
        out = [self.session.run(None, {self.input_name: b.contiguous().numpy()})[0] for b in batches]
        return torch.from_numpy(np.concatenate(out)).reshape(len(x), -1).to(device)


def onnx_teacher(spec: str, opts: TeacherOptions) -> Source:
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"teacher not found: {spec}")
    if opts.weights:
        raise ConfigError("--teacher-weights is for timm:, tv: and py: teachers; an ONNX file holds its own weights")
    net = OnnxNet(str(path))
    size = _exported_contract(path)
    native = net.native_size()
    default = size or Contract(native or 224)
    contract = resolved_contract(default, opts)
    if native and contract.image_size != native:
        raise ConfigError(f"ONNX teacher {spec}: its input is fixed at {native}x{native} (shape {net.shape}), "
                          f"but the contract asks for {contract.image_size}x{contract.image_size}")
    with torch.no_grad():
        dim = net(torch.zeros(1, 3, contract.image_size, contract.image_size)).shape[1]
    model = Wrapped(net, contract, dim, f"onnx:{path.name}", opts.l2)
    return Source(model, "onnx", spec, file_digest(path), contract, {"arch": f"onnx:{path.name}", "embedding_dim": dim,
                                                                    "image_size": contract.image_size})


def _exported_contract(path: Path) -> Optional[Contract]:
    """A file this toolkit exported normalises inside its graph: its model.json says so, and the
    teacher then feeds [0, 1] images as they are."""
    card = path.with_name("model.json")
    try:
        doc = json.loads(card.read_text())
    except (OSError, ValueError):
        return None
    if not any(a.get("file") == path.name for a in doc.get("artifacts", [])):
        return None
    size = int(doc.get("model", {}).get("image_size", 0))
    return Contract(size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) if size else None


class EmbeddingTable(nn.Module):
    """Precomputed teacher rows: answers for training images by path, never for new pixels."""

    feature_info = None

    def __init__(self, rows: np.ndarray, images: List[Path]):
        super().__init__()
        self.rows, self.images = rows, images
        self.embedding_dim, self.image_size = int(rows.shape[1]), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError("precomputed teacher embeddings cover the listed training images only")

    def rows_for(self, paths: Sequence[str]) -> np.ndarray:
        """The rows of ``paths`` in that order (float32), or one line naming what the list lacks."""
        where = {p: i for i, p in enumerate(self.images)}
        index = [where.get(Path(p).resolve(), -1) for p in paths]
        missing = [p for p, i in zip(paths, index) if i < 0]
        if missing:
            raise ConfigError(f"--teacher-images lacks {len(missing)} of the {len(paths)} training images, "
                              f"e.g. {missing[0]}: precompute the teacher on every training image (labelled and unlabeled)")
        return np.asarray(self.rows[index], dtype=np.float32)


def embeddings_teacher(spec: str, opts: TeacherOptions) -> Source:
    from .utils.checks import check_finite

    path, listing = Path(spec[len("embeddings:"):]), Path(opts.images)
    for name, f in (("teacher embeddings", path), ("--teacher-images list", listing)):
        if not f.is_file():
            raise CheckpointError(f"{name} not found: {f}")
    try:
        rows = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path} as a .npy array: {str(e).splitlines()[0][:200]}") from None
    images = [Path(line.strip()) for line in listing.read_text().splitlines() if line.strip()]
    images = [(p if p.is_absolute() else listing.parent / p).resolve() for p in images]
    if rows.ndim != 2 or rows.shape[0] != len(images):
        raise CheckpointError(f"{path} holds {tuple(rows.shape)}, but {listing} names {len(images)} images: "
                              "expected one row per image, (N, D)")
    check_finite(rows, f"the teacher embeddings {path}")
    digest = hashlib.sha256((file_digest(path) + file_digest(listing)).encode()).hexdigest()
    model = EmbeddingTable(rows, images)
    return Source(model, "embeddings", spec, digest, Contract(0, (0.0,) * 3, (1.0,) * 3),
                  {"arch": f"embeddings:{path.name}", "embedding_dim": model.embedding_dim, "image_size": 0})
