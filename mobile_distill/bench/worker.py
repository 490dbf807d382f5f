"""Measure one model file in a process of its own, so its peak memory is its own.

``python -m mobile_distill.bench.worker JOB.json`` reads the job (format, file, input spec,
thread counts, warm-up and run counts, the shared test-image array) and writes the result JSON
and the embeddings of every test image (``.npy``) where the job says.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np


def _latency(runner, images: np.ndarray, warmup: int, runs: int) -> Dict[str, float]:
    # Single-image latency over a rotating set of real images (not one cached input).
    pool = [images[i:i + 1] for i in range(min(len(images), 32))]
    for i in range(warmup):
        runner(pool[i % len(pool)])
    times = []
    for i in range(runs):
        start = time.perf_counter()
        runner(pool[i % len(pool)])
        times.append((time.perf_counter() - start) * 1e3)
    t = np.array(times)
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(t.mean())}


def _throughput(runner, images: np.ndarray, batch_sizes: List[int], seconds: float = 1.0) -> Dict[str, float]:
    """Images/s at the best batch size the runtime allows (batch 1 only for fixed-batch files)."""
    sizes = [1] if runner.max_batch == 1 else [b for b in batch_sizes if b <= len(images)] or [1]
    best = {"images_per_s": 0.0, "batch_size": 1}
    for b in sizes:
        batch = images[:b]
        runner(batch)  # warm this shape
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n == 0:
            runner(batch)
            n += b
        ips = n / (time.perf_counter() - start)
        if ips > best["images_per_s"]:
            best = {"images_per_s": ips, "batch_size": b}
    return best


def _paired(job: Dict, images: np.ndarray) -> Dict:
    """Latency of two files measured alternately in blocks, in one process: machine noise hits
    both alike, so their ratio is fair even for sub-millisecond models."""
    from ..runtime import RUNNERS, InputSpec

    out = {}
    pool = [np.ascontiguousarray(images[i:i + 1]) for i in range(min(len(images), 32))]
    for threads in job["threads"]:
        runners = [RUNNERS[f["runtime"]](Path(f["file"]), InputSpec(**f["spec"]), int(threads)) for f in job["files"]]
        times: List[List[float]] = [[] for _ in runners]
        for r in runners:
            for i in range(job["warmup"]):
                r(pool[i % len(pool)])
        blocks = 20
        per_block = max(job["runs"] // blocks, 1)
        for b in range(blocks):
            order = range(len(runners)) if b % 2 == 0 else reversed(range(len(runners)))
            for k in order:
                for i in range(per_block):
                    start = time.perf_counter()
                    runners[k](pool[i % len(pool)])
                    times[k].append((time.perf_counter() - start) * 1e3)
        out[str(threads)] = [{"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
                              "mean_ms": float(np.mean(t)), "runs": len(t)} for t in times]
    return {"paired": out}


def run_job(job: Dict) -> Dict:
    from ..runtime import RUNNERS, InputSpec

    images = np.load(job["images"], mmap_mode="r")
    if job.get("files"):
        return {**_paired(job, images), "peak_rss_mb": peak_rss_mb()}
    spec = InputSpec(**job["spec"])
    result: Dict = {"threads": {}}
    for threads in job["threads"]:
        runner = RUNNERS[job["runtime"]](Path(job["file"]), spec, int(threads))
        entry = _latency(runner, images, job["warmup"], job["runs"])
        entry["throughput"] = _throughput(runner, images, job.get("batch_sizes", [1, 8, 32]))
        result["threads"][str(threads)] = entry
        if job.get("embeddings_out") and "embedding_dim" not in result:
            step = runner.max_batch or 64
            emb = np.concatenate([runner(np.ascontiguousarray(images[i:i + step]))
                                  for i in range(0, len(images), step)]).astype(np.float32)
            np.save(job["embeddings_out"], emb)
            result["embedding_dim"] = int(emb.shape[1])
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss survives exec and would report the parent's
    # peak at fork time (a benchmark launched from a process holding torch would read ~700 MB).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    try:
        result = {"ok": True, **run_job(job)}
    except Exception as e:  # reported as this row's ✗ by the parent
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        result = {"ok": False, "error": f"{type(e).__name__}: {first[:300]}"}
    Path(job["result_out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
