"""One file measured in its own subprocess (``worker.py``): latency per thread count, throughput,
peak memory, and its embeddings of the test images for Recall@K."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

from ..runtime.coreml import CoremlRunner


def measure(target: Dict, image_file: Path, out_dir: Path, threads, warmup: int, runs: int) -> Dict:
    """A bench row for ``target`` (an export row with its file path): ok, failed, refused or skipped."""
    row = {k: target[k] for k in ("format", "precision", "runtime", "size_bytes")}
    row.update(file=Path(target["file"]).name, parity=target.get("parity", {}), status="ok",
               float_ops=target.get("float_ops", 0))
    if "modified" in target:
        row["modified"] = True
        if not target["allow_modified"]:
            row.update(status="failed",
                       error=target["modified"] + "; re-export it, or pass --allow-modified to measure it anyway")
            return row
        row["note"] = target["modified"] + "; measured anyway (--allow-modified)"
    if "refused" in target:  # not shipped: measured only when its file was kept, never counted as a failure here
        row.update(status="refused", refused=target["refused"])
        if not Path(target["file"]).is_file():
            return row
        row["size_bytes"] = row["size_bytes"] or Path(target["file"]).stat().st_size
    if target["runtime"] == "coreml" and not CoremlRunner.available():
        row.update(status="skipped", error="CoreML prediction needs macOS; latency not measured on this machine")
        if Path(target["file"]).exists():  # retrieval still comes from the saved program itself
            row["_embeddings"] = _reference_embeddings(target, image_file, out_dir)
            row["recall_from"] = "CoreML reference interpreter (no latency: it says nothing about a phone)"
        return row
    if not Path(target["file"]).exists():
        row.update(status="failed", error=f"file missing: {target['file']}")
        return row
    tag = f"{target['format']}_{target['precision']}"
    emb_file = out_dir / "embeddings" / f"{tag}.npy"
    with tempfile.TemporaryDirectory() as tmp:
        job = {**target, "images": str(image_file), "threads": list(threads), "warmup": warmup, "runs": runs,
               "embeddings_out": str(emb_file), "result_out": str(Path(tmp) / "result.json")}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        env = {**os.environ, "OMP_NUM_THREADS": str(max(threads))}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mobile_distill.bench.worker", str(Path(tmp) / "job.json")],
                              capture_output=True, text=True, env=env)
        result_path = Path(tmp) / "result.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else {
            "ok": False, "error": f"worker exited {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    if not result.pop("ok"):
        row.update(status="failed" if row["status"] == "ok" else row["status"], error=result["error"])
        return row
    row.update(result)
    row["_embeddings"] = emb_file
    return row


def _reference_embeddings(target: Dict, image_file: Path, out_dir: Path) -> Path:
    import numpy as np

    from ..runtime.coreml_reference import ReferenceRunner
    from ..runtime.spec import InputSpec

    emb_file = out_dir / "embeddings" / f"{target['format']}_{target['precision']}.npy"
    emb_file.parent.mkdir(parents=True, exist_ok=True)
    runner = ReferenceRunner(Path(target["file"]), InputSpec(**target["spec"]), threads=1, mode="float16")
    np.save(emb_file, runner(np.load(image_file)).astype(np.float32))
    return emb_file
