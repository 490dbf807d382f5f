"""The server's index in the gate: a student trained to be *compatible* (``compatible: true``: its
queries search a gallery the teacher embedded) is also gated on what that search loses. The gate's
images are embedded once by the teacher (the server's side, always float); each exported file's
queries then search that gallery, beside PyTorch's queries, and the drop between the two is gated
like the other Recall@1 drops (int8: 1 point by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from ..asymmetric import bridge_from_checkpoint
from ..teacher_sources import TeacherOptions, load_teacher, teacher_kind
from ..utils.io import file_digest
from .parity import ExportError, ServerGallery
from .prepare import embed, load_images

def wanted(ckpt: Dict, option: str) -> Optional[str]:
    """The gallery model to gate against: ``auto`` is the checkpoint's own teacher when the student
    was trained for compatibility (else none); ``off`` none; anything else names a model
    (a checkpoint, ``timm:``, ``tv:``, ``py:`` or an ONNX file) in the teacher's place."""
    if option == "off":
        return None
    if option != "auto":
        return option
    if not ckpt.get("config", {}).get("compatible"):
        return None
    record = ckpt.get("teacher") or {}
    spec = record.get("path", "")
    if teacher_kind(spec) in ("checkpoint", "onnx"):
        if not Path(spec).exists():
            raise ExportError(f"this student was trained to search its teacher's gallery (compatible: true), and the "
                              f"gate checks that search, but its teacher {spec} is not there: pass --teacher-gallery "
                              "PATH (the teacher, or the model that embeds your server's index) or --teacher-gallery off")
        if record.get("sha256") and file_digest(spec) != record["sha256"]:
            raise ExportError(f"the teacher file {spec} has changed since this student was trained (sha256 differs): "
                              "pass --teacher-gallery PATH with the teacher it was trained against, or off")
    return spec


def server_gallery(ckpt: Dict, spec: str, samples: Sequence, dataset_name: str, log=lambda _: None,
                   whose: str = "the gate's") -> ServerGallery:
    """The gate's images embedded by ``spec`` at its own size, with the bridge the student's
    checkpoint records (projection of the queries, centre of the gallery)."""
    cfg = ckpt.get("config", {})
    source = load_teacher(spec, TeacherOptions(weights=cfg.get("teacher_weights", "") if spec == cfg.get("teacher")
                                               else ""))
    size = int(source.model.image_size)
    log(f"embedding {whose} {len(samples)} images with {spec} at {size} px (the server's index: compatible student)")
    gallery = torch.from_numpy(embed(source.model, load_images(samples, size, dataset_name)))
    return ServerGallery(gallery, bridge_from_checkpoint(ckpt), spec)
