"""What every exported file computes, the real images the gates run on, and the steps export,
``verify`` and ``quant-report`` share: loading a checkpoint for export, a QAT run's float reference,
the probe images of the mixed-precision search, and running one staged file through its gate.

``ExportModule`` wraps a trained ``EmbeddingNet`` with the input contract of DESIGN §2: RGB in
[0, 1] float (or 0-255 uint8 for apps that feed camera bytes), NCHW or NHWC; normalisation stays
inside the network, so no app ever needs per-channel constants.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..runtime.images import load_images  # noqa: F401  (re-exported)
from ..runtime.spec import INPUT_DTYPES, LAYOUTS, InputSpec  # noqa: F401  (re-exported)
from .parity import gate


class ExportModule(nn.Module):
    """``EmbeddingNet`` behind the exported input contract; output (B, D) L2-normalised float32."""

    def __init__(self, net: nn.Module, spec: InputSpec):
        super().__init__()
        self.net = static_same_padding(net).eval()
        self.nhwc = spec.layout == "nhwc"
        self.uint8 = spec.dtype == "uint8"
        self.eval()  # converters warn about (and some trace) a module left in training mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uint8:
            x = x.to(torch.float32).div(255)  # the same arithmetic as torchvision's ToTensor
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        return self.net(x)


class _ConcatPadConv(nn.Module):
    """TF-"same" convolution whose asymmetric zero padding is built by concatenation.

    timm's ``Conv2dSame`` pads with ``F.pad``; LiteRT lowers a stand-alone pad in NCHW and wraps it
    in two TRANSPOSE ops. Concatenating zero blocks is exactly the same arithmetic and converts
    to layout-agnostic CONCATENATION ops instead.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        pads = []
        for size, k, s, d in zip(x.shape[-2:], c.kernel_size, c.stride, c.dilation):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        x = _zeros_around(x, 3, left, right)
        x = _zeros_around(x, 2, top, bottom)
        return F.conv2d(x, c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def _zeros_around(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    parts = []
    for n in (before, after):
        shape = list(x.shape)
        shape[dim] = n
        parts.append(x.new_zeros(shape) if n else None)
    pieces = [p for p in (parts[0], x, parts[1]) if p is not None]
    return torch.cat(pieces, dim) if len(pieces) > 1 else x


def static_same_padding(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every timm ``Conv2dSame`` replaced by ``_ConcatPadConv``."""
    from timm.layers import Conv2dSame

    net = copy.deepcopy(net)
    for name, module in list(net.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv2dSame):
                setattr(module, child_name, _ConcatPadConv(child))
    return net


def pick_parity_samples(test: Sequence, n: int, seed: int = 0) -> List:
    """Whole classes of the test split, in a seeded random class order, until ``n`` images.

    Whole classes keep Recall@1 on the subset meaningful (every query has its positives).
    ``n <= 0`` or ``n >= len(test)`` means the whole split.
    """
    if n <= 0 or n >= len(test):
        return list(test)
    by_class = {}
    for s in test:
        by_class.setdefault(s[1], []).append(s)
    classes = sorted(by_class)
    random.Random(seed).shuffle(classes)
    picked: List = []
    for c in classes:
        if len(picked) >= n:
            break
        picked.extend(by_class[c])
    return picked


def pick_calibration_samples(train: Sequence, n: int, seed: int = 0) -> List:
    """A seeded random sample of training images (the int8 calibration set)."""
    train = list(train)
    return train if n >= len(train) else random.Random(seed).sample(train, n)


def embed(net, images, batch_size: int = 64):
    """PyTorch's embeddings of (N, H, W, 3) uint8 images: what every exported file is gated against.
    In batches: the whole test split in one forward took 16 GB for the Lite0 teacher at 112 px."""
    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2).float().div(255)).numpy()
                               for i in range(0, len(images), batch_size)])


def load_for_export(checkpoint: Path, data: Optional[str]):
    """The checkpoint, its network in eval mode, its image size and eval resize, and its data set
    (or ``data``'s)."""
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..data import create_dataset

    ckpt = load_checkpoint(checkpoint)
    net = model_from_checkpoint(ckpt, str(checkpoint)).eval()
    cfg = ckpt.get("config", {})
    dataset = create_dataset(data or cfg.get("data", "emoji"), progress=False)
    return ckpt, net, int(ckpt["model"]["image_size"]), float(cfg.get("eval_resize", 1.0)), dataset


def float_reference(ckpt, checkpoint: Path):
    """A QAT checkpoint's files are gated against the float network its QAT run started from."""
    from ..checkpoint import model_from_checkpoint
    from ..qat import reference_checkpoint

    return model_from_checkpoint(reference_checkpoint(ckpt), f"{checkpoint} (its float reference)").eval()


class Probe:
    """Images the mixed-precision search ranks ops and picks the mix on, loaded on first use, never
    the gate's own images: whole test-split classes that the gate does not use (unseen classes, as
    the gate's) or, when the gate takes the whole test split, whole training classes (easier to tell
    apart, so the search then asks for half the gate's allowed loss)."""

    def __init__(self, net, dataset, size, resize, n, seed, exclude=()):
        self._args = (net, dataset, size, resize, n, seed)
        self._exclude = {y for _, y in exclude}
        self.images = self.labels = self.reference = self.server = None
        self.source = ""
        # a compatible student's search is gated on the teacher's gallery too: its embeddings of the
        # probe's images (set by export when the gate has a server gallery)
        self.server_for = None

    def load(self) -> "Probe":
        if self.images is None:
            net, dataset, size, resize, n, seed = self._args
            unused = [s for s in dataset.test if s[1] not in self._exclude]
            if len({y for _, y in unused}) >= 4:
                samples = pick_parity_samples(unused, n, seed + 1)
                self.source = "test classes outside the gate's" if self._exclude else "test classes"
            else:
                samples, self.source = pick_parity_samples(dataset.train, n, seed + 1), "training classes"
            self.images = load_images(samples, size, dataset.name, resize)
            self.labels = np.array([y for _, y in samples])
            self.reference = embed(net, self.images)
            self.server = self.server_for(samples) if self.server_for else None
        return self


def record_exception(row: Dict, stage: Dict, e: Exception) -> None:
    """An exception inside a row's work: the row fails naming the stage it came from."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    row["failures"].append(f"{row['format']} {row['precision']} {stage['name']} failed: "
                           f"{type(e).__name__}: {first[:300]}")
    row["failed_stage"] = stage["name"]


def check_file(row, module, staging, net, spec, precision, images, labels, reference, thresholds, stage,
               server=None) -> None:
    """Run the staged file on the test images and gate it (and the format's structural checks);
    ``stage["name"]`` follows along, so an exception names the step it came from."""
    row["failures"], row["parity"] = [], {}
    stage["name"] = f"run ({module.RUNTIME})"
    exported = module.run(staging, spec, images)
    note = getattr(module, "parity_note", lambda: None)()
    if note:
        row["parity_note"] = note
    stage["name"] = "parity gate"
    result = gate(reference, exported, labels, precision, thresholds, server)
    row["parity"], row["failures"] = result.figures, result.failures
    if hasattr(module, "cross_check"):
        stage["name"] = "cross-check"
        failures, figures = module.cross_check(staging, spec, images, exported, precision)
        row["parity"].update(figures)
        row["failures"] += failures
    if hasattr(module, "structural_checks"):
        stage["name"] = "structural check"
        failures, figures = module.structural_checks(staging, net, spec, precision)
        row["structural"] = figures
        row["failures"] += failures
