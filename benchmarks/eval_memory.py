"""Peak memory of chunked retrieval evaluation on an SOP-sized test set (60k x 512-d, 11k classes).

The metric is run in a fresh child process so that its peak RSS is not mixed up with this
parent's; the child reports VmHWM (its own peak) and its RSS just after building the
embeddings, and the parent cross-checks with getrusage(RUSAGE_CHILDREN).ru_maxrss.
Result: benchmarks/results/eval_memory.json (all sizes in MB = 10^6 bytes).

Usage: python benchmarks/eval_memory.py [--n 60000] [--dim 512] [--classes 11000] [--chunk-size 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

RESULT = ROOT / "benchmarks" / "results" / "eval_memory.json"
KS = (1, 10, 100, 1000)  # SOP's usual Recall@K


def _proc_status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (KiB there) in MB (10^6 bytes, like full_matrix_mb)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def child(n: int, dim: int, classes: int, chunk_size: int, seed: int) -> dict:
    """Build the embeddings, run retrieval_metrics once, report memory and time."""
    import torch

    from mobile_distill.evaluate import retrieval_metrics

    g = torch.Generator().manual_seed(seed)
    # Every class gets one item, the rest are spread at random: sizes ~ 1 + Poisson(4.5) like
    # SOP's 2..12, including a few singletons that exercise the exclusion path.
    labels = torch.cat([torch.arange(classes), torch.randint(0, classes, (n - classes,), generator=g)])
    emb = torch.randn(n, dim, generator=g)  # (N, D) float32
    baseline = _proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    metrics = retrieval_metrics(emb, labels, ks=KS, chunk_size=chunk_size)
    wall = time.perf_counter() - t0
    return {
        "metrics": metrics,
        "wall_s": round(wall, 2),
        "baseline_rss_mb": round(baseline, 1),
        "child_vmhwm_mb": round(_proc_status_mb("VmHWM"), 1),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=11_000)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.n, args.dim, args.classes, args.chunk_size, args.seed)))
        return

    cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"benchmark child failed ({proc.returncode}):\n{proc.stderr}")
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    # ru_maxrss is in KiB on Linux; the child is our only waited-for child, so this is its peak.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6
    full = args.n * args.n * 4 / 1e6  # what an N x N float32 similarity matrix alone would take

    from mobile_distill.utils.io import write_json_atomic
    from mobile_distill.utils.provenance import cpu_model, provenance

    result = {
        "n": args.n,
        "dim": args.dim,
        "classes": args.classes,
        "ks": list(KS),
        "chunk_size": args.chunk_size,
        "peak_rss_mb": round(peak, 1),
        "child_vmhwm_mb": rep["child_vmhwm_mb"],
        "baseline_rss_mb": rep["baseline_rss_mb"],
        "extra_mb": round(peak - rep["baseline_rss_mb"], 1),
        "chunk_sims_mb": round(args.chunk_size * args.n * 4 / 1e6, 1),
        "full_matrix_mb": round(full, 1),
        "wall_s": rep["wall_s"],
        "torch_threads": rep["torch_threads"],
        "cpu_model": cpu_model(),
        "torch_version": rep["torch_version"],
        "metrics": rep["metrics"],
        "provenance": provenance(),
    }
    write_json_atomic(RESULT, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
