"""Training throughput of the distillation table's recipe under several ways of running it, in one run.

    .venv/bin/python benchmarks/train_throughput.py --teacher runs/teacher/last.pt
    # on a GPU machine:
    python benchmarks/train_throughput.py --teacher T.pt --settings gpu --workers 8

Each setting is a real ``mdistill train`` process (torchrun for ``nproc`` > 1) of the default
student recipe (``configs/student_emoji.yaml``: MobileNet-0.25 at 64 px, absolute + relative +
hint, the unlabeled pool, the replayed-view teacher cache), for ``--epochs`` epochs from the same
seed. The teacher's view cache is built once beforehand and shared, so the settings time training
alone. Images/s counts the images of every process (labelled + unlabeled rows of the global batch),
from ``metrics.csv``; the first epoch is dropped when there are more (warm-up, compilation).
Settings take turns ``--repeats`` times (A, B, C, A, B, C) so machine noise hits them all; the
figure is the median, and each setting's speed is also given as a ratio to the preset's reference. Writes ``benchmarks/results/train_throughput.json`` (or ``--out``).

Setting presets:
- ``cpu``: 1 process x 1 thread, 1 process x 2 threads, 2 processes x 1 thread (DDP, gloo):
  the question is what torchrun buys on this CPU's cores.
- ``gpu``: CUDA float32, CUDA bfloat16 autocast, CUDA bfloat16 + torch.compile, and the host's
  CPU (all its cores, 1 process) for the ratio.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobile_distill.utils.io import write_json_atomic  # noqa: E402
from mobile_distill.utils.provenance import provenance  # noqa: E402

PRESETS = {
    "cpu": [
        {"name": "1 process x 1 thread", "device": "cpu", "nproc": 1, "threads": 1, "reference": True},
        {"name": "1 process x 2 threads", "device": "cpu", "nproc": 1, "threads": 2},
        {"name": "2 processes x 1 thread (DDP, gloo)", "device": "cpu", "nproc": 2, "threads": 1},
    ],
    "gpu": [
        {"name": "CUDA float32", "device": "cuda", "nproc": 1},
        {"name": "CUDA bfloat16 autocast", "device": "cuda", "nproc": 1, "autocast": "bfloat16"},
        {"name": "CUDA bfloat16 autocast + torch.compile", "device": "cuda", "nproc": 1, "autocast": "bfloat16",
         "compile": True},
        {"name": "host CPU, 1 process x all cores", "device": "cpu", "nproc": 1, "threads": os.cpu_count(),
         "reference": True},
    ],
}


def run_setting(s, args, work: Path, tag: str) -> dict:
    flags = ["train", "--config", "student_emoji", "--teacher", args.teacher, "--data", args.data, "--epochs",
             args.epochs, "--eval-every", 0, "--workers", args.workers, "--device", s["device"],
             "--teacher-cache-dir", work / "cache", "--out-dir", work / "runs", "--name", tag, "--quiet",
             "--nproc", s["nproc"], "--autocast", s.get("autocast", "none")]
    flags += ["--compile"] if s.get("compile") else []
    env = {**os.environ, "OMP_NUM_THREADS": str(s.get("threads", 1))}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mobile_distill.cli", *map(str, flags)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:], "wall_s": wall}
    with open(work / "runs" / tag / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    speeds = [float(r["images_per_s"]) for r in rows]
    return {"images_per_s": statistics.median(speeds[1:] or speeds), "epochs": len(rows), "wall_s": round(wall, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (its outputs are cached once)")
    p.add_argument("--data", default="emoji")
    p.add_argument("--settings", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_throughput.json"))
    args = p.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="train_throughput_"))
    settings = PRESETS[args.settings]
    warm = {"name": "cache build", "device": settings[0]["device"], "nproc": 1, "threads": os.cpu_count()}
    built = run_setting(warm, argparse.Namespace(**{**vars(args), "epochs": 1}), work, "cache-build")
    if "error" in built:
        sys.exit(f"cache build failed:\n{built['error']}")
    results = {s["name"]: [] for s in settings}
    for rep in range(args.repeats):
        for i, s in enumerate(settings):
            r = run_setting(s, args, work, f"s{i}-r{rep}")
            print(f"{s['name']}: {r.get('images_per_s', 'FAILED')} images/s", flush=True)
            results[s["name"]].append(r)
    base = next(s["name"] for s in settings if s.get("reference"))
    table = []
    for s in settings:
        ok = [r["images_per_s"] for r in results[s["name"]] if "images_per_s" in r]
        table.append({**s, "images_per_s": round(statistics.median(ok), 1) if ok else None,
                      "runs": results[s["name"]]})
    ref = next(t["images_per_s"] for t in table if t["name"] == base)
    for t in table:
        t["speed_vs_reference"] = round(t["images_per_s"] / ref, 2) if t["images_per_s"] and ref else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    out = {"recipe": "student_emoji", "data": args.data, "teacher": args.teacher, "epochs": args.epochs,
           "workers": args.workers, "repeats": args.repeats, "cpu": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "settings": table,
           "reference": base, "cache_build_s": built["wall_s"], "provenance": provenance()}
    write_json_atomic(Path(args.out), out)
    for t in table:
        print(f"{t['name']:45s} {t['images_per_s']} images/s  x{t['speed_vs_reference']} vs {base}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
