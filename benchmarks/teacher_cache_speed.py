"""Student training speed with the live teacher vs the teacher cache, measured in one run.

    .venv/bin/python benchmarks/teacher_cache_speed.py --teacher runs/teacher/last.pt

Same student, data, seed and batches; the two modes alternate (live, cached, live, cached) so
that machine noise hits both. The cache build (once per teacher and image list) is reported
separately. Writes benchmarks/results/teacher_cache_speed.json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobile_distill.config import make_config  # noqa: E402
from mobile_distill.train import main as train  # noqa: E402
from mobile_distill.utils.io import write_json_atomic  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", default="mobilenet_v1_025")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "teacher_cache_speed.json"))
    args = p.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="cache_speed_"))
    base = dict(data="emoji", model=args.student, pretrained="none", image_size=args.image_size, loss="triplet",
                mining="all", epochs=1, batches_per_epoch=args.batches, classes_per_batch=32, images_per_class=2,
                eval_every=0, teacher=args.teacher, distill=["absolute:1:center=true", "relative:1:normalize=true"],
                out_dir=str(work))
    modes = {"live teacher (augmented views)": {}, "teacher cache (clean views)": {"teacher_view": "clean",
             "teacher_cache": True, "teacher_cache_dir": str(work / "cache")}}
    # Build the cache once up front so that the timed runs only read it.
    t0 = time.perf_counter()
    train(make_config(**base, **modes["teacher cache (clean views)"], name="warm"), progress=False)
    cache_build_s = time.perf_counter() - t0
    times = {m: [] for m in modes}
    for r in range(args.repeats):
        for m, extra in modes.items():
            res = train(make_config(**base, **extra, name=f"{r}"), progress=False)
            times[m].append(res["train_time_s"])
    images = args.batches * 64
    out = {
        "student": args.student, "image_size": args.image_size, "batches": args.batches, "batch_size": 64,
        "teacher": args.teacher, "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "train_time_s": times,
        "images_per_s": {m: round(images / statistics.median(t), 1) for m, t in times.items()},
        "cache_build_incl_one_epoch_s": round(cache_build_s, 1),
    }
    live, cached = (statistics.median(t) for t in times.values())
    out["speedup"] = round(live / cached, 2)
    write_json_atomic(args.out, out)
    print(out)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
