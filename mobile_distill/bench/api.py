"""``bench(export_dir)``: size, latency, throughput, memory and Recall@K per exported file.

Each file (and the PyTorch checkpoint it came from) is measured in its own subprocess
(``worker.py``) on the same test images with pinned thread counts; Recall@K is computed here
from that format's own embeddings with the same function as ``mdistill eval``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..errors import BenchError, DataError
from ..utils.provenance import cpu_model, provenance
from .config import BenchConfig, bench_config
from .timing import measure


def machine() -> Dict:
    from ..utils.versions import tool_versions

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "tools": tool_versions()}


def bench(export_dir: str | Path, config: Optional[BenchConfig] = None, *, log: Callable[[str], None] = lambda _: None,
          **settings) -> Dict:
    """Benchmark every file of an ``mdistill export`` folder (see the module docstring).

    Args:
        export_dir: a folder with ``model.json`` (written by ``mdistill export``).
        config: a ``BenchConfig`` (default: its defaults): data set, thread counts, warm-up and timed
            runs, the PyTorch checkpoint, ``min_recall``, the Keras anchor, a phone (``adb``), the
            browser rows, ``allow_modified`` (measure files edited after the gate passed them).
        settings: any ``BenchConfig`` field, applied on top of ``config`` (``bench(d, threads=[1, 2])``).
        log: called with one line per step.

    Returns:
        the report written to ``bench.json``; ``passed`` is False if any row failed (returned only
        with ``raise_on_failure=False``).

    Raises:
        BenchError: when a row failed (after the report is written), unless ``raise_on_failure=False``;
            and before any measurement for a missing folder or bad settings.
    """
    c = bench_config(config, **settings)
    report = _bench(Path(export_dir), c, log)
    message = failure_message(report)
    if message and c.raise_on_failure:
        raise BenchError(message)
    return report


def failure_message(report: Dict) -> Optional[str]:
    """One line naming the rows that failed, ``None`` when none did."""
    failed = [f"{r['format']} {r['precision']}" for r in report["rows"] if r["status"] == "failed"]
    return f"benchmark failed for {', '.join(failed)} (see the ✗ lines above)" if failed else None


def _bench(export_dir: Path, c: BenchConfig, log: Callable[[str], None]) -> Dict:
    data, threads, warmup, runs, checkpoint = c.data, c.threads, c.warmup, c.runs, c.checkpoint
    min_recall, out_dir, anchor, adb, adb_serial = c.min_recall, c.out_dir, c.anchor, c.adb, c.adb_serial
    from ..data import create_dataset
    from ..evaluate import retrieval_metrics
    from .report import write_outputs

    card_path = export_dir / "model.json"
    if not card_path.is_file():
        raise BenchError(f"no model.json in {export_dir}: run `mdistill export CHECKPOINT --out {export_dir}` first")
    if warmup < 0 or runs < 1 or not threads or min(threads) < 1:
        raise BenchError("--warmup must be >= 0, --runs >= 1 and every --threads value >= 1")
    card = json.loads(card_path.read_text())
    model = card["model"]
    if adb:  # fail fast (no adb, no device, no app) before minutes of host measurements
        from .adb import Adb, check_device

        check_device(Adb(adb, adb_serial))
    out_dir = Path(out_dir) if out_dir else export_dir / "bench"
    (out_dir / "embeddings").mkdir(parents=True, exist_ok=True)
    dataset = create_dataset(data or model["dataset"].get("spec") or model["dataset"]["name"], progress=False)
    size = int(model["image_size"])
    labels = np.array([y for _, y in dataset.test])
    image_file = _cached_images(out_dir, dataset, size, log)
    source = model["source_checkpoint"]
    ckpt = Path(checkpoint) if checkpoint else export_dir / source.get("path", f"../{source['file']}")
    targets = _targets(export_dir, card, ckpt, c.allow_modified)
    rows: List[Dict] = []
    try:
        for target in targets:
            log(f"measuring {target['format']} {target['precision']}")
            rows.append(measure(target, image_file, out_dir, threads, warmup, runs))
        if anchor != "off":
            from .anchor import add_ratios, anchor_rows

            ours = next((t for t in targets if t["format"] == "tflite" and t["precision"] == "float32"), None)
            rows += anchor_rows(model, out_dir, image_file, threads, warmup, runs, ours=ours,
                                required=anchor == "on", log=log)
            add_ratios(rows)
        if adb:
            from .adb import device_row

            rows.append(device_row(adb, adb_serial, export_dir, card, np.load(image_file), out_dir, warmup, runs,
                                   threads=threads[0], log=log))
        if c.browser:
            from ..web.bench import browser_rows

            rows += browser_rows(export_dir, card, ckpt, data, rows, threads, warmup, runs, c.browser_samples, log)
    finally:
        image_file.unlink(missing_ok=True)  # a bench killed before this leaves it for the next run to reuse

    import torch

    for row in rows:
        emb_file = row.pop("_embeddings", None)
        if emb_file is not None:
            row["embeddings"] = str(Path(emb_file).relative_to(out_dir))
            try:
                metrics = retrieval_metrics(torch.from_numpy(np.load(emb_file)), torch.from_numpy(labels),
                                            ks=dataset.recall_ks, map_at_r=False)
            except DataError as e:  # a file that embeds NaN fails its own row; the others still count
                row.update(status="failed", error=f"{row['file']}: {e}")
                continue
            row["recall"] = {k: 100 * v for k, v in metrics.items() if k.startswith("recall@")}
        if row["status"] == "ok" and min_recall is not None and row.get("recall", {}).get("recall@1", 1e9) < min_recall:
            row["status"] = "failed"
            row["error"] = f"Recall@1 {row['recall']['recall@1']:.2f} < --min-recall {min_recall}"
    _add_speedups(rows)
    report = {
        "teacher": _teacher_reference(model, dataset.name),
        "export_dir": str(export_dir), "dataset": dataset.name, "test_images": len(labels), "image_size": size,
        "architecture": model["architecture"], "threads": list(threads), "warmup": warmup, "runs": runs,
        "complexity": _complexity(ckpt, size), "machine": machine(), "rows": rows,
        "passed": all(r["status"] != "failed" for r in rows), "min_recall": min_recall,
        "provenance": provenance(),
    }
    write_outputs(report, out_dir)
    return report


def _cached_images(out_dir: Path, dataset, size: int, log: Callable[[str], None]) -> Path:
    """The test images as (N, H, W, 3) uint8 in ``out_dir/.images-KEY.npy``, the file every worker
    reads. KEY names the images and their size, so a bench that was killed before removing its file
    leaves it for the next run of the same images to reuse; files of other keys are removed."""
    import hashlib

    from ..runtime.images import load_images
    from ..utils.io import atomic_path, remove_stale_temps

    key = hashlib.sha256(json.dumps([dataset.name, size, [p for p, _ in dataset.test]]).encode()).hexdigest()[:16]
    image_file = out_dir / f".images-{key}.npy"
    for stale in out_dir.glob(".images*.npy"):
        if stale != image_file:
            stale.unlink(missing_ok=True)
    remove_stale_temps(image_file)
    if image_file.is_file():
        log(f"reusing {len(dataset.test)} {dataset.name} test images at {size} px from {image_file.name}")
        return image_file
    log(f"loading {len(dataset.test)} {dataset.name} test images at {size} px")
    with atomic_path(image_file) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, load_images(dataset.test, size, dataset.name))
    return image_file


def _targets(export_dir: Path, card: Dict, ckpt: Path, allow_modified: bool = False) -> List[Dict]:
    from ..utils.io import path_digest

    model = card["model"]
    targets = []
    spec = {"image_size": int(model["image_size"]), "layout": "nchw", "dtype": "float32"}
    if ckpt.is_file():
        targets.append({"format": "pytorch", "precision": "float32", "runtime": "pytorch", "file": str(ckpt),
                        "spec": spec, "size_bytes": ckpt.stat().st_size})
    for a in card["artifacts"] + _refused(export_dir):
        inp = a["input"]
        quant = a.get("details", {}).get("quantization") or {}
        path = Path(a.get("kept_at") or export_dir / a["file"])
        target = {
            "format": a["format"], "precision": a["precision"], "runtime": a["format"],
            "file": str(path), "size_bytes": a.get("size_bytes"),
            "spec": {"image_size": int(model["image_size"]), "layout": inp["layout"].lower(), "dtype": inp["dtype"]},
            "parity": a.get("parity") or {}, "float_ops": len(quant.get("float_ops") or []),
            **({"refused": a["failures"]} if a["status"] == "failed" else {}),
        }
        if a.get("sha256") and path.exists() and path_digest(path) != a["sha256"]:
            # what the gate passed is not what is there: a copy went wrong, or the file was edited
            target["modified"] = (f"{path.name} changed after export: its sha256 differs from model.json's "
                                  f"({a['sha256'][:12]}…)")
            target["allow_modified"] = allow_modified
        targets.append(target)
    return targets


def _add_speedups(rows: List[Dict]) -> None:
    """``speedup_vs_float32[threads]``: the same format's float32 median latency over this row's
    (both measured in this run, so the ratio is fair on a noisy shared host)."""
    base = {(r["format"], r.get("client")): r for r in rows if r["precision"] == "float32" and r.get("threads")}
    for r in rows:
        ref = base.get((r["format"], r.get("client")))
        if ref is not None and r.get("threads"):
            r["speedup_vs_float32"] = {t: ref["threads"][t]["median_ms"] / v["median_ms"]
                                       for t, v in r["threads"].items() if t in ref["threads"]}


def _teacher_reference(model: Dict, dataset: str) -> Optional[Dict]:
    """The teacher's own test Recall@1 (its checkpoint's last evaluation, when it was on the same
    data set), for the plots."""
    from ..checkpoint import load_checkpoint
    from ..errors import CheckpointError

    path = (model.get("teacher") or {}).get("path")
    try:
        ckpt = load_checkpoint(path) if path else None
    except CheckpointError:
        return None
    scored = [row for row in (ckpt or {}).get("history", []) if "test_recall@1" in row]
    if not scored or ckpt.get("data", {}).get("name") != dataset:
        return None
    return {"architecture": ckpt["model"]["arch"], "image_size": ckpt["model"]["image_size"],
            "recall@1": 100 * scored[-1]["test_recall@1"]}


def _refused(export_dir: Path) -> List[Dict]:
    """The rows the export gate refused (export_report.json): measured too when ``--keep-failed``
    kept the file, so the trade-off plots show what was refused and why."""
    path = export_dir / "export_report.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text()).get("rows", [])
    return [{**r, "kept_at": r.get("kept_at") if r.get("kept_at") and Path(r["kept_at"]).is_file() else None}
            for r in rows if r.get("status") == "failed" and r.get("parity")]


def _complexity(ckpt: Path, size: int) -> Optional[Dict]:
    if not ckpt.is_file():
        return None
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..models.complexity import complexity

    return complexity(model_from_checkpoint(load_checkpoint(ckpt), str(ckpt)), size)
