"""``verify(file)``: run an exported file through its parity gate again, after the export.

A file that was copied, edited, re-signed or handed over can be checked the way ``export`` checked
it: the file's embedded metadata names its format, precision, input and source checkpoint; the
same runtime, gate, thresholds and test images decide (Optimum's ``validate_model_outputs``, as a
command). The result is a one-row report in ``export``'s shape, so ``format_report`` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..utils.io import file_digest
from . import formats as fmt_registry
from . import server as server_mod
from ..models.timm_nets import deploy_form
from .prepare import check_file, embed, float_reference, load_for_export, record_exception
from .metadata import read_metadata
from .parity import ExportError, Thresholds, recall_at_1
from .prepare import InputSpec, load_images, pick_parity_samples


def verify(file: str | Path, checkpoint: Optional[str | Path] = None, data: Optional[str] = None,
           parity_samples: int = 256, seed: int = 0, thresholds: Thresholds = Thresholds(),
           teacher_gallery: str = "auto") -> Dict:
    """Gate ``file`` against PyTorch again.

    Args:
        file: an exported ``.onnx``, ``.tflite`` or ``.mlpackage``.
        checkpoint: the checkpoint it was exported from (default: the one its metadata names,
            relative to the file's folder); a different checkpoint is refused.
        data, parity_samples, seed, thresholds, teacher_gallery: as for ``export`` (a compatible
            student's file is also gated again on its search of the teacher's gallery).

    Returns:
        A report like ``export``'s with one row; ``passed`` says whether the file passed.

    Raises:
        ExportError: no such file, no mobile_distill metadata, no or a different checkpoint.
    """
    file = Path(file)
    module = fmt_registry.get(fmt_registry.format_of(file)) if file.exists() else None
    if module:
        module.check_installed()
    artifact, checkpoint = exported_from(file, checkpoint)
    ckpt, net, size, resize, dataset = gated_reference(checkpoint, data)
    spec = InputSpec(size, artifact["input"]["layout"].lower(), artifact["input"]["dtype"])
    parity = pick_parity_samples(dataset.test, parity_samples, seed)
    images = load_images(parity, size, dataset.name, resize)
    labels = np.array([y for _, y in parity])
    reference = embed(net, images)
    server_spec = server_mod.wanted(ckpt, teacher_gallery)
    server = server_mod.server_gallery(ckpt, server_spec, parity, dataset.name) if server_spec else None

    precision = artifact["precision"]
    row = {"format": artifact["format"], "precision": precision, "file": str(file), "runtime": module.RUNTIME,
           "status": "failed", "failures": [], "parity": {}}
    stage = {"name": f"run ({module.RUNTIME})"}
    try:
        check_file(row, module, file, net, spec, precision, images, labels, reference, thresholds, stage, server)
    except Exception as e:  # a file the runtime cannot run fails its row, naming the stage
        record_exception(row, stage, e)
    row["status"] = "failed" if row["failures"] else "passed"
    return {"checkpoint": str(checkpoint), "dataset": dataset.name, "parity_images": len(parity),
            "calibration_images": 0, "pytorch_recall@1": 100 * recall_at_1(reference, labels),
            "thresholds": thresholds.as_dict(), "rows": [row], "passed": row["status"] == "passed",
            **({"teacher_gallery": server.name,
                "teacher_gallery_recall@1_pytorch": server.recall_at_1(reference, labels)} if server else {})}


def exported_from(file: Path, checkpoint: Optional[str | Path]):
    """(the file's artifact record, the checkpoint it was exported from), refusing a missing file,
    a file without mobile_distill metadata, and another checkpoint."""
    if not file.exists():
        raise ExportError(f"file not found: {file}")
    doc = read_metadata(file)
    if doc is None:
        raise ExportError(f"{file} carries no mobile_distill metadata (was it exported by mdistill export?)")
    artifact, source = doc["artifact"], doc["model"]["source_checkpoint"]
    checkpoint = Path(checkpoint) if checkpoint else file.parent / source["path"]
    if not checkpoint.is_file():
        raise ExportError(f"{file} was exported from {source['path']} (relative to its folder), which is not "
                          f"there; pass the checkpoint with --checkpoint")
    if file_digest(checkpoint) != source["sha256"]:
        raise ExportError(f"{checkpoint} is not the checkpoint {file.name} was exported from (sha256 differs: "
                          f"{source['sha256'][:12]}…); pass that one with --checkpoint")
    return artifact, checkpoint


def gated_reference(checkpoint: Path, data: Optional[str]):
    """The network export gated the file against: (ckpt, net, size, resize, dataset)."""
    ckpt, net, size, resize, dataset = load_for_export(checkpoint, data)
    if "qat" in ckpt:
        net = float_reference(ckpt, checkpoint)
    return ckpt, deploy_form(net)[0], size, resize, dataset
