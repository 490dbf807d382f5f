"""Does the current code still train what an older commit trained? A results file names the commit
that wrote it; when rerunning it takes hours (the distillation table: ~8 h on 2 cores), this shows
whether the code since then changes the figures at all.

    .venv/bin/python benchmarks/same_training.py --base f66031b     # ~5 min on 2 cores

Checks out ``--base`` into a temporary git worktree and runs the same short ``mdistill train``
(the default student recipe from a teacher checkpoint, seed 0, a few fixed batches, the teacher
cache included) once with that commit's package and once with this checkout's, in separate
processes on the same CPU kernels. Writes whether the trained weights, the teacher cache and the
test figures are equal, bit for bit, to ``benchmarks/results/same_training.json``. Equal means
the training path the results file took is unchanged for this recipe on one process; it says
nothing about another CPU (see ``demo_cpus.py``) or about the paths the short run does not take.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train(tree: Path, out: Path, args) -> Path:
    cmd = [sys.executable, "-m", "mobile_distill.cli", "train", "--config", args.config,
           "--teacher", str(Path(args.teacher).resolve()), "--epochs", str(args.epochs),
           "--batches-per-epoch", str(args.batches), "--cache-views", "1", "--eval-every", "1",
           "--seed", "0", "--out-dir", str(out), "--name", "run", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # this tree's package, not the installed one
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"training at {tree} failed:\n{done.stderr[-2000:]}")
    return out / "run"


def compare(a: Path, b: Path) -> dict:
    sa = torch.load(a / "last.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "last.pt", weights_only=True)["state_dict"]
    weights = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    caches = sorted(p.name for p in a.glob("teacher_views-*.npy"))
    cache = bool(caches) and all(np.array_equal(np.load(a / n), np.load(b / n)) for n in caches)
    test_a = json.loads((a / "results.json").read_text())["test"]
    test_b = json.loads((b / "results.json").read_text())["test"]
    return {"weights_equal": weights, "teacher_cache_equal": cache, "test_figures_equal": test_a == test_b,
            "test": {"base": test_a, "current": test_b}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the commit a results file names")
    p.add_argument("--teacher", default="runs/teacher/last.pt", help="a teacher checkpoint both commits load")
    p.add_argument("--config", default="student_emoji")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "same_training.json"))
    args = p.parse_args()
    from mobile_distill.utils.io import write_json_atomic
    from mobile_distill.utils.provenance import provenance

    base = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.base], capture_output=True, text=True)
    if base.returncode != 0:
        sys.exit(f"{args.base} is not a commit of this repository")
    with tempfile.TemporaryDirectory(prefix="same-training-") as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tmp / "base"),
                        base.stdout.strip()], check=True, capture_output=True)
        try:
            runs = {name: train(tree, tmp / f"out-{name}", args)
                    for name, tree in (("base", tmp / "base"), ("current", ROOT))}
            result = compare(runs["base"], runs["current"])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "base")],
                           capture_output=True)
    same = result["weights_equal"] and result["teacher_cache_equal"] and result["test_figures_equal"]
    doc = {"base": base.stdout.strip(), "same": same, **result,
           "run": {"config": args.config, "teacher": args.teacher, "epochs": args.epochs,
                   "batches_per_epoch": args.batches, "cache_views": 1, "seed": 0},
           "provenance": provenance()}
    write_json_atomic(Path(args.out), doc)
    print(f"{'the same' if same else 'DIFFERENT'}: weights {result['weights_equal']}, teacher cache "
          f"{result['teacher_cache_equal']}, test figures {result['test_figures_equal']} "
          f"(base {args.base}, Recall@1 {result['test']['base'].get('recall@1'):.4f} vs "
          f"{result['test']['current'].get('recall@1'):.4f}); saved to {args.out}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
