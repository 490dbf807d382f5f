"""The distillation comparison table on the embedded default data set (emoji).

One command, resumable (rows already in the JSON are skipped):

    .venv/bin/python benchmarks/distill_table.py --teacher runs/teacher/last.pt

Every student row uses the same seed(s), epochs, batch (P x K) and image size within its
architecture; the distillation rows add one loss (or the paper's combination) to the same
triplet task loss. The teacher's embeddings come from the teacher cache (clean views, computed
once); the cross-quality row uses the live teacher on the full-resolution crop instead.
Writes benchmarks/results/distill_emoji.json and distill_emoji.md.
"""

from __future__ import annotations

import argparse
import json
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
from mobile_distill.utils.io import write_json_atomic, write_text_atomic  # noqa: E402

# Students: (image size, epochs, lr for backbone and head, pretrained).
STUDENTS = {
    "mobilenet_v1_025": dict(image_size=64, epochs=40, lr=2e-3, backbone_lr=2e-3, pretrained="none"),
    "efficientnet_lite0": dict(image_size=64, epochs=10, lr=1e-3, backbone_lr=2e-4, pretrained="imagenet"),
    "resnet18": dict(image_size=64, epochs=10, lr=1e-3, backbone_lr=1e-3, pretrained="none"),
}
COMMON = dict(data="emoji", embedding_dim=512, loss="triplet", mining="all", margin=0.2, classes_per_batch=32,
              images_per_class=2, optimizer="adamw", weight_decay=1e-4, scheduler="cosine", eval_every=0,
              crop_scale=0.5)
DISTILL = {
    "absolute": ["absolute:1:center=true"],
    "relative": ["relative:1:normalize=true"],
    "rkd": ["rkd:1"],
    "relaxed": ["relaxed:1"],
    "darkrank": ["darkrank:1"],
    "absolute+relative": ["absolute:1:center=true", "relative:1:normalize=true"],
}
CACHED = dict(teacher_view="clean", teacher_cache=True)
# Feature-map losses need the live teacher (the cache holds embeddings only): same augmented batch.
FEATURE = {"hint": ["hint:1"], "attention": ["attention:1"]}


def rows(seeds, quick: bool, single_losses_lite0: bool = False):
    """(row name, student, seed, overrides) in the order they run: the multi-seed rows first, so
    that a run cut short still has the comparisons that matter."""
    combo = DISTILL["absolute+relative"]
    out = []
    for student in ("mobilenet_v1_025", "efficientnet_lite0"):
        for seed in seeds:
            out.append(("triplet only", student, seed, {}))
            out.append(("triplet + absolute+relative", student, seed, {"distill": combo, **CACHED}))
    student = "mobilenet_v1_025"
    for name, specs in DISTILL.items():
        if name != "absolute+relative":
            out.append((f"triplet + {name}", student, seeds[0], {"distill": specs, **CACHED}))
    out += [
        ("triplet + absolute+relative + unlabeled pool", student, seeds[0], {"distill": combo, **CACHED, "unlabeled": "pool"}),
        ("semi-supervised: triplet only, 50% of classes labelled", student, seeds[0], {"label_fraction": 0.5}),
        ("semi-supervised: + absolute+relative on the unlabeled 50%", student, seeds[0],
         {"label_fraction": 0.5, "distill": combo, **CACHED}),
        ("cross-quality: teacher 112 px crop, student 64 px", student, seeds[0],
         {"distill": combo, "teacher_image_size": 112}),
        ("triplet only", "resnet18", seeds[0], {}),
        ("triplet + absolute+relative", "resnet18", seeds[0], {"distill": combo, **CACHED}),
    ]
    out += [(f"triplet + {name} (live teacher)", student, seeds[0], {"distill": specs}) for name, specs in FEATURE.items()]
    if not single_losses_lite0:
        return [r for r in out if not quick or r[1] == "mobilenet_v1_025"]
    for name, specs in DISTILL.items():  # last: the most expensive rows for the CPU budget
        if name != "absolute+relative":
            out.append((f"triplet + {name}", "efficientnet_lite0", seeds[0], {"distill": specs, **CACHED}))
    return [r for r in out if not quick or r[1] == "mobilenet_v1_025"]


def run_row(name, student, seed, overrides, teacher, out_dir, epochs_scale):
    recipe = dict(STUDENTS[student])
    recipe["epochs"] = max(1, round(recipe["epochs"] * epochs_scale))
    cfg_kwargs = {**COMMON, **recipe, **overrides, "model": student, "seed": seed, "out_dir": str(out_dir),
                  "name": f"{student}-{name}-s{seed}".replace(" ", "_").replace("%", "pct").replace(":", "")
                  .replace(",", "").replace("+", "p")}
    if "distill" in overrides:
        cfg_kwargs["teacher"] = str(teacher)
        if overrides.get("teacher_cache"):
            cfg_kwargs["teacher_cache_dir"] = str(out_dir / "teacher_cache")  # shared by rows over the same images
    cfg = make_config(**cfg_kwargs)
    start = time.perf_counter()
    results = train(cfg, progress=False)
    extra = {}
    if cfg.distill and cfg.teacher_cache:
        last = final_terms(Path(results["run_dir"]))
        extra["loss_vs_constant_output"] = {
            k: {"final": last.get(k), "constant_output": v}
            for k, v in plateau_levels(cfg.distill, Path(cfg.teacher_cache_dir)).items()}
    # The runs directory is machine-specific: recorded as a placeholder.
    config = json.loads(json.dumps(cfg.to_dict()).replace(str(out_dir), "<runs-dir>"))
    return {**extra, "row": name, "student": student, "seed": seed, "config": config,
            "test": {k: v for k, v in results["test"].items() if not k.startswith("cross/") or k.endswith("recall@1")},
            "params": results["complexity"]["params"], "gflops": results["complexity"]["gflops"],
            "image_size": cfg.image_size, "epochs": cfg.epochs, "train_time_s": results["train_time_s"],
            "wall_time_s": round(time.perf_counter() - start, 1)}


def plateau_levels(specs, cache_dir: Path, batch: int = 64, n_batches: int = 20):
    """Each distillation loss's value for a student that outputs one constant vector (the normalised
    mean teacher embedding), on random batches of cached teacher embeddings. A loss that does not go
    clearly below this level taught the student nothing beyond a constant."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from mobile_distill.losses.combine import parse_distill_spec
    from mobile_distill.losses import create_loss

    caches = sorted(cache_dir.glob("teacher_cache-*.npy"))
    if not caches:
        return {}
    t_all = torch.from_numpy(np.load(caches[0]))
    g = torch.Generator().manual_seed(0)
    const = F.normalize(F.normalize(t_all, dim=1).mean(0), dim=0)
    levels = {}
    for spec in specs:
        name, _, kwargs = parse_distill_spec(spec)
        if name == "absolute":
            kwargs.update(student_dim=t_all.shape[1], teacher_dim=t_all.shape[1])
        loss = create_loss(name, **kwargs)
        values = []
        for _ in range(n_batches):
            t = t_all[torch.randperm(len(t_all), generator=g)[:batch]]
            loss.train()  # the centred absolute loss updates its running mean as in training
            values.append(float(loss(const.expand_as(t), t)[name]))
        levels[name] = sum(values[n_batches // 2:]) / (n_batches - n_batches // 2)
    return levels


def final_terms(run_dir: Path):
    import csv

    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}


def summarise(runs, teacher_results):
    """Mean +- std over seeds per (student, row)."""
    groups = {}
    for r in runs:
        groups.setdefault((r["student"], r["row"]), []).append(r)
    table = []
    for (student, row), rs in groups.items():
        entry = {"student": student, "row": row, "seeds": [r["seed"] for r in rs], "params": rs[0]["params"],
                 "gflops": rs[0]["gflops"], "image_size": rs[0]["image_size"], "epochs": rs[0]["epochs"],
                 # fastest seed: other jobs sharing the CPU only ever slow a run down
                 "train_time_s": round(min(r["train_time_s"] for r in rs), 1)}
        for k in ("recall@1", "recall@2", "recall@4", "recall@8"):
            values = [r["test"][k] for r in rs]
            entry[k] = statistics.mean(values)
            entry[k + "_std"] = statistics.stdev(values) if len(values) > 1 else None
        table.append(entry)
    return table


def markdown(table, teacher_results, meta) -> str:
    lines = [f"Teacher: {meta['teacher_arch']} ({meta['teacher_params'] / 1e6:.2f} M params) — test Recall@1 "
             f"{100 * teacher_results['recall@1']:.1f}. Emoji test classes (953 unseen classes, 1,906 images). "
             f"{meta['cpu']}, {meta['threads']} threads; total wall time {meta['wall_time_s'] / 60:.0f} min.", "",
             "| student | row | seeds | R@1 | R@2 | R@4 | R@8 | params | GFLOPs | px | epochs | train s (fastest seed) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(e, k):
        s = f"{100 * e[k]:.1f}"
        return s + (f" ± {100 * e[k + '_std']:.1f}" if e.get(k + "_std") is not None else "")

    for e in table:
        lines.append(f"| {e['student']} | {e['row']} | {len(e['seeds'])} | {fmt(e, 'recall@1')} | {fmt(e, 'recall@2')} "
                     f"| {fmt(e, 'recall@4')} | {fmt(e, 'recall@8')} | {e['params'] / 1e6:.2f} M | {e['gflops']:.3f} "
                     f"| {e['image_size']} | {e['epochs']} | {e['train_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (e.g. from `make demo`)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every student's epochs")
    p.add_argument("--quick", action="store_true", help="MobileNet-0.25 rows only")
    p.add_argument("--all-losses-lite0", action="store_true",
                   help="also each single loss for EfficientNet-Lite0 (about 25 more CPU minutes)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill_emoji.json"))
    p.add_argument("--runs-dir", default=None, help="where the student runs go (default: a temp folder)")
    args = p.parse_args()
    import torch

    from mobile_distill.checkpoint import load_checkpoint
    from mobile_distill.evaluate import evaluate_checkpoint

    out = Path(args.out)
    state = json.loads(out.read_text()) if out.exists() else {"runs": []}
    done = {(r["row"], r["student"], r["seed"]) for r in state["runs"]}
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="distill_table_"))
    start = time.perf_counter() - state.get("wall_time_s", 0.0)
    teacher_ckpt = load_checkpoint(args.teacher)
    teacher_results = state.get("teacher") or evaluate_checkpoint(args.teacher, progress=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    todo = [r for r in rows(seeds, args.quick, args.all_losses_lite0) if (r[0], r[1], r[2]) not in done]
    for i, (name, student, seed, overrides) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {student} | {name} | seed {seed}", flush=True)
        state["runs"].append(run_row(name, student, seed, overrides, args.teacher, runs_dir, args.epochs_scale))
        print(f"    recall@1 {state['runs'][-1]['test']['recall@1']:.4f}  ({state['runs'][-1]['wall_time_s']:.0f} s)", flush=True)
        state.update(teacher={k: v for k, v in teacher_results.items() if not k.startswith("cross/")},
                     wall_time_s=round(time.perf_counter() - start, 1))
        write_json_atomic(out, state)
    if not todo and "table" in state:  # nothing new: keep the recorded table (and its teacher path) as is
        print(markdown(state["table"], state["teacher"], state["meta"]))
        print(f"all rows already in {out}; nothing to run")
        return
    from mobile_distill.models.complexity import count_parameters
    from mobile_distill.checkpoint import model_from_checkpoint

    meta = {"teacher": args.teacher, "teacher_arch": teacher_ckpt["model"]["arch"],
            "teacher_params": count_parameters(model_from_checkpoint(teacher_ckpt)),
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "wall_time_s": state.get("wall_time_s", 0.0)}
    state.update(meta=meta, table=summarise(state["runs"], teacher_results))
    write_json_atomic(out, state)
    write_text_atomic(out.with_suffix(".md"), markdown(state["table"], state["teacher"], meta))
    print(markdown(state["table"], state["teacher"], meta))
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
