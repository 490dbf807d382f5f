"""Issue 27's measured example: a teacher the student only knows through ONNX Runtime. The table's
fine-tuned EfficientNet-Lite0 teacher is exported to ONNX and teaches MobileNet-0.25 as an opaque
teacher, beside the same teacher as a checkpoint and the student alone.

    .venv/bin/python benchmarks/opaque_teacher.py --teacher runs/table/teacher/last.pt --seeds 0,1   # ~50 min on 1 core

Each seed trains the default student recipe (``student_emoji``) on the demo's schedule (12 epochs,
3 cached views of each image), in four rows: distilled from the ONNX file; from the same teacher as
a checkpoint with the same losses; from the checkpoint with the whole recipe; and alone (the demo's
alone row). The ONNX rows keep the recipe's losses that need embeddings only (absolute, relative):
its ``hint:1`` needs feature maps, which an opaque teacher does not have; the third row shows what
they are worth. ``--rows`` picks rows. A run folder that holds a finished run (its results.json) is
read back, not retrained: delete it to train again. Figures go to
``benchmarks/results/opaque_teacher.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/table/teacher/last.pt")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--rows", default="onnx teacher,checkpoint teacher,checkpoint teacher + hint,alone",
                   help="any of: onnx teacher, checkpoint teacher, checkpoint teacher + hint, alone")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "opaque_teacher"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "opaque_teacher.json"))
    args = p.parse_args()
    from mobile_distill.config import load_yaml, make_config
    from mobile_distill.demo import ALONE_LR, DEMO_STUDENT, _alone_loss
    from mobile_distill.train import main as train
    from mobile_distill.utils.io import write_json_atomic
    from mobile_distill.utils.provenance import provenance

    runs = Path(args.runs_dir)
    folder = runs / "teacher_onnx"
    if not list(folder.glob("*.onnx")):  # the toolkit's own export, parity-gated, with model.json beside it
        subprocess.run([sys.executable, "-m", "mobile_distill.cli", "export", args.teacher, "--format", "onnx",
                        "--out", str(folder), "--quiet"], check=True)
    onnx = next(folder.glob("*.onnx"))  # model.json names it: the teacher feeds [0, 1] images as they are
    recipe = {**load_yaml("student_emoji"), **DEMO_STUDENT}
    losses = tuple(d for d in recipe["distill"] if not d.startswith(("hint", "attention")))
    table = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        base = make_config(recipe, out_dir=str(runs / f"s{seed}"), seed=seed, distill=losses, teacher=args.teacher)
        configs = {"onnx teacher": dataclasses.replace(base, name="onnx", teacher=str(onnx)),
                   "checkpoint teacher": dataclasses.replace(base, name="checkpoint"),
                   "checkpoint teacher + hint": dataclasses.replace(base, name="checkpoint_hint",
                                                                    distill=tuple(recipe["distill"])),
                   "alone": dataclasses.replace(base, name="alone", teacher="", distill=(), teacher_cache=False,
                                                unlabeled="", teacher_image_size=0, loss=_alone_loss(base),
                                                lr=ALONE_LR, backbone_lr=ALONE_LR)}
        for row in args.rows.split(","):
            cfg = configs[row.strip()]
            done = Path(cfg.out_dir) / cfg.name / "results.json"
            test = json.loads(done.read_text())["test"] if done.is_file() else train(cfg, progress=False)["test"]
            table.setdefault(row.strip(), {})[seed] = {k: test.get(k) for k in ("recall@1", "recall@4", "map@r", "asymmetric/recall@1")}
    summary = {row: {"recall@1": [100 * v["recall@1"] for v in by_seed.values()]} for row, by_seed in table.items()}
    for s in summary.values():
        r = s["recall@1"]
        s["mean"], s["std"] = round(statistics.mean(r), 2), round(statistics.stdev(r), 2) if len(r) > 1 else 0.0
    doc = {"teacher": args.teacher, "onnx": str(onnx.relative_to(ROOT)) if onnx.is_relative_to(ROOT) else str(onnx),
           "distill": list(losses), "rows": args.rows.split(","), "schedule": {"epochs": recipe["epochs"], "cache_views": recipe["cache_views"]},
           "seeds": args.seeds, "runs": table, "summary": summary, "provenance": provenance()}
    write_json_atomic(Path(args.out), doc)
    for row, s in summary.items():
        print(f"{row:20s} Recall@1 {s['mean']:.2f} ± {s['std']:.2f}  (seeds {args.seeds}: "
              f"{', '.join(f'{v:.2f}' for v in s['recall@1'])})")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
