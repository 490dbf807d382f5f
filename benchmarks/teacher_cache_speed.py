"""Student training speed under each way of running the teacher, measured in one run.

    .venv/bin/python benchmarks/teacher_cache_speed.py --teacher runs/table/teacher/last.pt

Same student (the default recipe: MobileNet-0.25 at 64 px, absolute + relative + hint, the
unlabeled pool, teacher at 112 px), data, seed and batches; the modes take turns (A, B, C, ...,
A, B, C, ...) so that machine noise hits them all:
- live teacher on the student's augmented view (consistent), float32 and bfloat16 autocast;
- live teacher with mixup on the unlabeled rows;
- replayed-view cache (consistent, the default recipe);
- clean-view cache (inconsistent: the teacher never saw the student's crop; embeddings only,
  so without the hint loss).
Cache builds (once per teacher, image list and views) are reported separately. Writes
benchmarks/results/teacher_cache_speed.json.
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

from mobile_distill.config import load_yaml, make_config  # noqa: E402
from mobile_distill.train import main as train  # noqa: E402
from mobile_distill.utils.io import write_json_atomic  # noqa: E402
from mobile_distill.utils.provenance import provenance  # noqa: E402

MODES = {
    "live teacher, augmented view (float32)": {"teacher_cache": False},
    "live teacher, augmented view (bfloat16 autocast)": {"teacher_cache": False, "teacher_dtype": "bfloat16"},
    "live teacher + mixup 0.4 on the unlabeled rows": {"teacher_cache": False, "mixup": 0.4},
    "replayed-view cache (8 views, the default)": {},
    "clean-view cache (no hint: embeddings only)": {"teacher_view": "clean",
                                                    "distill": ["absolute:1:center=true", "relative:1:normalize=true"]},
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cache-dir", help="reuse teacher caches from here (e.g. the distillation table's runs/table/cache); "
                                       "the build times then only count what was missing")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "teacher_cache_speed.json"))
    args = p.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="cache_speed_"))
    recipe = load_yaml("student_emoji")
    base = {**recipe, "epochs": 1, "batches_per_epoch": args.batches, "eval_every": 0, "teacher": args.teacher,
            "out_dir": str(work), "teacher_cache_dir": args.cache_dir or str(work / "cache")}
    builds = {}
    for mode, extra in MODES.items():  # build every cache first, so the timed runs only read them
        cfg = {**base, **extra}
        if cfg.get("teacher_cache", True):
            t0 = time.perf_counter()
            train(make_config(cfg, name="warm", batches_per_epoch=1), progress=False)
            builds[mode] = round(time.perf_counter() - t0, 1)
    times = {m: [] for m in MODES}
    for r in range(args.repeats):
        for mode, extra in MODES.items():
            res = train(make_config({**base, **extra}, name=f"r{r}"), progress=False)
            times[mode].append(res["train_time_s"])
    images = args.batches * 2 * recipe["classes_per_batch"] * recipe["images_per_class"]  # labelled + unlabeled
    speed = {m: round(images / statistics.median(t), 1) for m, t in times.items()}
    live = speed["live teacher, augmented view (float32)"]
    out = {"student": recipe["model"], "image_size": recipe["image_size"], "batches": args.batches,
           "images_per_batch": images // args.batches, "teacher": args.teacher,
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "train_time_s": times, "images_per_s": speed,
           "vs_live_float32": {m: round(v / live, 2) for m, v in speed.items()},
           "cache_build_s_incl_one_batch": builds, "cache_reused_from": args.cache_dir and "given --cache-dir",
           "cache_views": recipe["cache_views"], "provenance": provenance()}
    write_json_atomic(args.out, out)
    for m, v in speed.items():
        print(f"{m:55s} {v:7.1f} images/s  ({out['vs_live_float32'][m]:.2f}x)")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
