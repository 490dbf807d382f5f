"""The model card (``model.json``) and the metadata document embedded in every exported file.

``model.json`` = ``{"model": card, "artifacts": [entry, ...]}``. Each exported file embeds
``{"model": card, "artifact": {format, precision, file, input, output}}``: the same card, and the
part of its own entry that is known before the file exists (a file cannot contain its own sha256,
and parity is measured on the finished file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from ..utils.io import file_digest
from ..utils.versions import tool_versions

KEY = "mobile_distill"  # ONNX metadata_props key, CoreML user_defined_metadata key, TFLite metadata name
CARD_VERSION = 1
EMBEDDED_ARTIFACT_KEYS = ("format", "precision", "file", "input", "output")


def _test_recall(ckpt: Dict[str, Any], checkpoint: Path) -> Dict[str, float]:
    # results.json beside the checkpoint holds the final test metrics; else the last epoch's.
    results = checkpoint.parent / "results.json"
    if results.is_file():
        try:
            test = json.loads(results.read_text()).get("test", {})
            return {k: v for k, v in test.items() if k.startswith("recall@") or k == "map@r"}
        except (OSError, ValueError):
            pass
    last = (ckpt.get("history") or [{}])[-1]
    return {k[len("test_"):]: v for k, v in last.items() if k.startswith("test_recall@")}


def teacher_index(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """How this student's queries search an index its teacher embedded (the server's side): the
    centre its absolute loss subtracted from the teacher's embeddings, which the server must
    subtract from its own (then L2-normalise again), and the shape of a train-time query projection
    (kept in the checkpoint, not in the files: the students of the built-in recipes need none)."""
    from ..asymmetric import bridge_from_checkpoint

    bridge = bridge_from_checkpoint(ckpt)
    return {"compatible": bool(ckpt.get("config", {}).get("compatible")),
            "gallery_centre": [float(v) for v in bridge.centre] if bridge.centre is not None else None,
            "query_projection": list(bridge.projection.shape) if bridge.projection is not None else None,
            "rule": "gallery = normalize(normalize(teacher(x)) - gallery_centre) (no centre: normalize(teacher(x))); "
                    "query = the student's embedding; score = cosine"}


def build_card(ckpt: Dict[str, Any], checkpoint: str | Path, out_dir: Optional[str | Path] = None) -> Dict[str, Any]:
    """What a consumer needs to know about the model, independent of format.

    ``source_checkpoint.path`` is relative to ``out_dir`` (where model.json goes), so
    ``mdistill bench`` finds the PyTorch model of an export folder that moved with its run.
    """
    checkpoint = Path(checkpoint)
    rel = os.path.relpath(checkpoint.resolve(), Path(out_dir).resolve()) if out_dir else checkpoint.name
    info = ckpt["model"]
    cfg = ckpt.get("config", {})
    return {
        "card_version": CARD_VERSION,
        "architecture": info["arch"],
        "embedding_dim": info["embedding_dim"],
        "image_size": info["image_size"],
        "eval_resize": float(cfg.get("eval_resize", 1.0)),  # evaluation's short side = image_size x this
        "normalization": {
            "inside_graph": True,
            "mean": info["mean"],
            "std": info["std"],
            "note": "the graph computes (x - mean) / std itself; feed RGB in the input's value range",
        },
        "output": {"name": "embedding", "dtype": "float32", "l2_normalized": True,
                   "similarity": "cosine (= dot product)"},
        "source_checkpoint": {"file": checkpoint.name, "path": rel, "sha256": file_digest(checkpoint),
                              "epoch": ckpt.get("epoch")},
        "teacher": ckpt.get("teacher"),
        **({"teacher_index": teacher_index(ckpt)} if ckpt.get("teacher") else {}),
        "losses": ckpt.get("losses"),
        "dataset": {**(ckpt.get("data") or {}), "spec": cfg.get("data")},
        "test_metrics": _test_recall(ckpt, checkpoint),
        "tools": tool_versions(),
    }


def embedded_document(card: Dict[str, Any], artifact: Dict[str, Any]) -> str:
    doc = {"model": card, "artifact": {k: artifact[k] for k in EMBEDDED_ARTIFACT_KEYS}}
    return json.dumps(doc, sort_keys=True)


def read_metadata(path: str | Path) -> Optional[Dict[str, Any]]:
    """The mobile_distill document embedded in an exported file (.onnx, .tflite, .mlpackage, .pte).

    Raises:
        ExportError: the file is missing, truncated, corrupt or not of the format its suffix names.
    """
    from . import formats

    path = Path(path)
    fmt = formats.format_of(path)
    module = formats.get(fmt)
    if not path.exists():
        raise formats.ExportError(f"file not found: {path}")
    try:
        raw = module.read_metadata(path)
        return json.loads(raw) if raw is not None else None
    except Exception as e:  # parsers fail in their own ways on damaged files: struct.error, DecodeError, ...
        kind = type(e).__name__ if type(e).__name__ != "error" else f"{type(e).__module__}.error"  # struct.error
        reason = (str(e).strip().splitlines() or [kind])[0][:200]
        raise formats.ExportError(f"{path} is not a readable {module.FORMAT_NAME} file (truncated, corrupted, or "
                                  f"another format renamed; {kind}: {reason})") from None
