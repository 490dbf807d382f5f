"""The Keras-native TFLite anchor: the same architecture built in Keras (random weights: latency
only) and converted with TensorFlow's converter, measured in the same run as our export, so
the ratio says what our PyTorch -> litert-torch path costs.

TensorFlow is optional and may live in another environment: set ``MDISTILL_KERAS_PYTHON`` to a
Python that has it (``benchmarks/run_all.sh`` makes one), or install it beside mobile_distill.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

KERAS_COUNTERPARTS = {"mobilenet_v1_025": "keras.applications.MobileNet(alpha=0.25)"}


def keras_python() -> Optional[str]:
    env = os.environ.get("MDISTILL_KERAS_PYTHON")
    if env:
        return env
    return sys.executable if importlib.util.find_spec("tensorflow") is not None else None


def anchor_rows(model: Dict, out_dir: Path, image_file: Path, threads, warmup: int, runs: int,
                ours: Optional[Dict] = None, required: bool = False,
                log: Callable[[str], None] = lambda _: None) -> List[Dict]:
    """The anchor's row; with ``ours`` (our float32 TFLite target) also the paired ratio."""
    from ..errors import BenchError
    from .timing import measure

    arch = model["architecture"]
    python = keras_python()
    why = None
    if arch not in KERAS_COUNTERPARTS:
        why = f"no Keras counterpart of {arch} (have: {', '.join(KERAS_COUNTERPARTS)})"
    elif python is None:
        why = "TensorFlow not installed (set MDISTILL_KERAS_PYTHON to a Python with tensorflow)"
    if why:
        if required:
            raise BenchError(f"Keras anchor: {why}")
        log(f"Keras anchor skipped: {why}")
        return []
    path = out_dir / f"keras_{arch}_float32.tflite"
    spec = {k: model[k] for k in ("architecture", "embedding_dim", "image_size")}
    spec.update(mean=model["normalization"]["mean"], std=model["normalization"]["std"])
    log(f"building the Keras anchor ({KERAS_COUNTERPARTS[arch]}) with {python}")
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.run([python, str(Path(__file__).with_name("keras_build.py")), str(spec_file), str(path)],
                              capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if proc.returncode != 0 or not path.is_file():
        row = {"format": "tflite-keras", "precision": "float32", "status": "failed",
               "error": f"Keras anchor build failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"}
        return [row]
    target = {"format": "tflite-keras", "precision": "float32", "runtime": "tflite", "file": str(path),
              "size_bytes": path.stat().st_size,
              "spec": {"image_size": int(model["image_size"]), "layout": "nhwc", "dtype": "float32"}}
    row = measure(target, image_file, out_dir, threads, warmup, runs)
    row.pop("_embeddings", None)  # random weights: its Recall@K means nothing
    (out_dir / "embeddings" / "tflite-keras_float32.npy").unlink(missing_ok=True)
    row["note"] = f"{KERAS_COUNTERPARTS[arch]}, random weights, TensorFlow's TFLite converter: latency anchor"
    if ours is not None and row["status"] == "ok":
        # The ratio comes from one process timing both files alternately (10x the runs: the
        # models take a fraction of a millisecond), not from two separate measurements.
        paired = measure({**ours, "format": "paired", "files": [ours, target]}, image_file, out_dir, threads,
                          warmup, max(runs * 10, 1000))
        if paired["status"] == "ok":
            row["paired"] = {t: {"ours_median_ms": v[0]["median_ms"], "anchor_median_ms": v[1]["median_ms"],
                                 "ratio": v[0]["median_ms"] / v[1]["median_ms"], "runs": v[0]["runs"]}
                             for t, v in paired["paired"].items()}
    return [row]


def add_ratios(rows: List[Dict]) -> None:
    """Our float32 TFLite latency / the Keras anchor's, per thread count, from the paired run."""
    anchor = next((r for r in rows if r["format"] == "tflite-keras" and r.get("paired")), None)
    ours = next((r for r in rows if r["format"] == "tflite" and r["precision"] == "float32" and r["status"] == "ok"),
                None)
    if not anchor or not ours:
        return
    ours["anchor_ratios"] = {t: v["ratio"] for t, v in anchor["paired"].items()}
    ours["anchor_ratio"] = next(iter(ours["anchor_ratios"].values()), None)
