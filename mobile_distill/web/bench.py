"""``mdistill bench --browser``'s rows, kept here and not in ``bench`` (which times files on
``runtime`` and never imports ``export``, whose gate these rows apply): the export's files run by
the web app in headless Chromium (LiteRT.js for ``.tflite``, ONNX Runtime Web for ``.onnx``, on
WebAssembly): the model's
latency per image (median and p90 over warm runs, as the host rows time it), Recall@1 of the
embeddings the page computed on the gate's test images, whether they pass the parity gate, and the
ratio of the browser's latency to the same file on the host, measured in the same run."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

def browser_rows(export_dir: Path, card: Dict, ckpt: Path, data: Optional[str], host_rows: Sequence[Dict],
                 threads: Sequence[int], warmup: int, runs: int, parity_samples: int = 256,
                 log=lambda _: None) -> List[Dict]:
    from ..export.parity import gate, recall_at_1
    from ..export.verify import gated_reference
    from .app import RUNTIMES
    from .gate import RUNTIME_NAMES, browser_runs, parity_images

    artifacts = [a for a in card["artifacts"] if a["format"] in RUNTIMES and (export_dir / a["file"]).is_file()]
    if not artifacts:
        return []
    _, net, size, _, dataset = gated_reference(ckpt, data)
    rgb, labels, reference = parity_images(dataset, size, net, parity_samples)
    rows = {a["file"]: {"format": a["format"], "precision": a["precision"], "file": a["file"], "status": "ok",
                        "size_bytes": (export_dir / a["file"]).stat().st_size, "client": "Chromium, WASM",
                        "runtime": RUNTIME_NAMES[RUNTIMES[a["format"]]], "threads": {},
                        "recall_images": len(rgb), "pytorch_recall@1_same_images": 100 * recall_at_1(reference, labels)}
            for a in artifacts}
    for t in threads:
        for done in browser_runs(export_dir, artifacts, rgb, "wasm", t, warmup, runs, log):
            a, row = done["artifact"], rows[done["artifact"]["file"]]
            ms = np.array(done["run_ms"])
            median = float(np.median(ms))
            row["threads"][str(t)] = {"median_ms": median, "p90_ms": float(np.percentile(ms, 90)),
                                      "throughput": {"images_per_s": 1000 / median}}
            row["backend"] = done["info"]["backend"]
            if "recall" in row:
                continue  # the embeddings do not depend on the thread count: gated once
            result = gate(reference, done["embeddings"], labels, a["precision"])
            row["recall"] = {"recall@1": 100 * recall_at_1(done["embeddings"], labels)}
            row["parity"] = result.figures
            row["embed_ms_median"] = statistics.median(done["embed_ms"])  # decode + preprocessing + model
            if not result.passed:
                row.update(status="failed", error="the browser parity gate failed: " + "; ".join(result.failures))
    for row in rows.values():
        host = next((r for r in host_rows if (r["format"], r["precision"]) == (row["format"], row["precision"])
                     and "client" not in r and r.get("threads")), None)
        if host:  # the same file on the host, timed in this run: a ratio survives a noisy machine
            row["host_ratio"] = {t: v["median_ms"] / host["threads"][t]["median_ms"]
                                 for t, v in row["threads"].items() if t in host["threads"]}
    return list(rows.values())
