"""The distillation table on the embedded default data set (emoji, six vendors).

    .venv/bin/python benchmarks/distill_table.py --teacher runs/table/teacher/last.pt \\
        --large-teacher runs/table/teacher-lite2/last.pt --jobs 2

Two blocks, each a teacher and a student recipe from ``mobile_distill/configs``:
- ``scratch``: MobileNet-0.25 from scratch (``student_emoji.yaml``) under the fine-tuned
  EfficientNet-Lite0 teacher (``teacher_emoji.yaml``);
- ``pretrained``: an ImageNet EfficientNet-Lite0 student at 64 px (``student_emoji_lite0.yaml``)
  under a teacher at a larger resolution: the EfficientNet-Lite2 at 160 px of
  ``teacher_emoji_large.yaml`` where a GPU is at hand; on two CPU cores the published block passes
  the scratch block's Lite0 teacher at 112 px (``--large-teacher runs/table/teacher/last.pt``,
  3x the student's FLOPs), which also reuses its view cache.

Rows per block: the student trained *alone* (the recipe minus the teacher, triplet loss) and the
*default recipe*, each over ``--seeds``, on the same schedule; the scratch block also has the
peers (RKD, relaxed contrastive, DarkRank, hint, attention), each added to the alone row's triplet
loss at three weights and, for the embedding-level ones, also on its own in the default recipe's
place, on the same data, views and pool: tuned first (seed 0, ``--tune-epochs``, beside the default
recipe on that schedule), then the best variant of each runs on the full schedule.
Closure = (distilled - alone) / (teacher - alone) at Recall@1. Rows run in subprocesses,
``--jobs`` at a time, one thread each; the table is resumable (rows in the JSON are skipped). Writes distill_emoji.json / .md and
learning_curves.png (test Recall@1 against epoch, alone vs distilled) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobile_distill.config import load_yaml, make_config  # noqa: E402
from mobile_distill.demo import ALONE_LR  # noqa: E402
from mobile_distill.utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from mobile_distill.utils.provenance import provenance  # noqa: E402

BLOCKS = {
    "scratch": {"student": "student_emoji", "teacher_recipe": "teacher_emoji", "teacher_arg": "teacher", "peers": True,
                "alone_lr": ALONE_LR},
    # the pretrained student alone keeps its recipe's gentle backbone rate (ImageNet features)
    "pretrained": {"student": "student_emoji_lite0", "teacher_recipe": "teacher_emoji_large",
                   "teacher_arg": "large_teacher", "peers": False, "alone_lr": None},
}
# Each peer added to the triplet loss at three or more weights (log-spaced; the loss scales differ;
# hint got a fourth and a fifth while its best weight sat at the edge of the grid).
PEERS = {"rkd": (0.5, 2, 8), "relaxed": (0.03, 0.1, 0.3), "darkrank": (0.3, 1, 3), "hint": (0.3, 1, 3, 10, 30),
         "attention": (10, 30, 100)}
# Peers that act on the embeddings can also train a student on their own (no label loss), as the
# default recipe does; hint and attention only shape feature maps and leave the embedding head untrained.
PURE_PEERS = ("rkd", "relaxed", "darkrank")
# The student alone: the same recipe and schedule without a teacher, trained with the triplet loss
# at its own best learning rate (as in `mdistill demo`).
ALONE = {"teacher": "", "distill": [], "unlabeled": "", "teacher_cache": False, "teacher_image_size": 0,
         "teacher_view": "augmented", "loss": "triplet"}


def compat_recipe_exists() -> bool:
    return (ROOT / "mobile_distill" / "configs" / f"{COMPAT_RECIPE}.yaml").exists()


def alone_overrides(block: str) -> dict:
    lr = BLOCKS[block]["alone_lr"]
    return {**ALONE, **({"lr": lr, "backbone_lr": lr} if lr else {})}


# Compatibility with the teacher's index (asym R@1: student queries, teacher gallery): variants of the
# default recipe on the tuning schedule, beside its "tuning: default recipe" row; the best is the
# compatible recipe (COMPAT_RECIPE), which then runs on its own full schedule over the seeds.
_RELATIVE, _HINT = "relative:1:normalize=true", "hint:1"
_QUEUE = "contrastive:1:queue=4096"
COMPAT_VARIANTS = {
    "absolute:4": ["absolute:4:center=true", _RELATIVE, _HINT],
    "absolute:4, uncentred": ["absolute:4", _RELATIVE, _HINT],
    "+ contrastive, batch": ["absolute:1:center=true", _RELATIVE, _HINT, "contrastive:1"],
    "+ contrastive, queue 4096": ["absolute:1:center=true", _RELATIVE, _HINT, _QUEUE],
    "+ contrastive, queue 4096, 512 hardest": ["absolute:1:center=true", _RELATIVE, _HINT, _QUEUE + ",hard=512"],
    "+ contrastive, queue 4096, own class masked": ["absolute:1:center=true", _RELATIVE, _HINT,
                                                    _QUEUE + ",mask_same_class=true"],
    "+ prototype (BCT)": ["absolute:1:center=true", _RELATIVE, _HINT, "prototype:1"],
    "contrastive in absolute's place": [_QUEUE, _RELATIVE, _HINT],
    # the hint term's value (~27) dwarfs the others (~1-4): give the embedding terms more say
    "+ contrastive:10, queue 4096": ["absolute:1:center=true", _RELATIVE, _HINT, "contrastive:10:queue=4096"],
    "+ contrastive, queue 4096, no hint": ["absolute:1:center=true", _RELATIVE, _QUEUE],
    # the student at the teacher's own 112 px: the same pixels on both sides of the search
    "default recipe at 112 px": {"image_size": 112},
    "+ contrastive, queue 4096, at 112 px": {"distill": ["absolute:1:center=true", _RELATIVE, _HINT, _QUEUE],
                                             "image_size": 112},
}
# A bigger student (the pretrained block's ImageNet EfficientNet-Lite0 at 64 px, its own recipe)
# with the contrastive term, on its tuning schedule (its recipe's epochs / 4).
COMPAT_LITE0 = {"+ contrastive, queue 4096, Lite0 student": ["absolute:1:center=true", _RELATIVE, _HINT, _QUEUE]}
COMPAT_RECIPE = "student_emoji_compatible"
# The compatible recipe at other inputs than its 80 px, toward the teacher's 112 px (the teacher's
# own weights run at 64 px reach 10.1 asym R@1, at 80 px 37.8, at 96 px 50.8): what the phone's
# query gains per pixel.
COMPAT_SIZES = (64, 96)
ALONE_2X = "alone, 2x schedule"
TUNED_DEFAULT = "tuning: default recipe"


def peer_variants(name: str) -> list:
    """The tuning rows of one peer, (row name, overrides): the alone row's task loss and learning rate
    plus the peer's term at each weight, as the peers' papers report them; for embedding-level peers
    also the peer's term alone in the default recipe's place (its learning rate). All on the default
    recipe's views, pool and schedule."""
    weights = PEERS[name]
    rows = [(f"triplet + {name}:{w:g}", {"loss": "triplet", "lr": ALONE_LR, "backbone_lr": ALONE_LR,
                                         "distill": [f"{name}:{w:g}"]}) for w in weights]
    if name in PURE_PEERS:  # Adam makes a lone term's weight nearly irrelevant: one row
        w = weights[len(weights) // 2]
        rows.append((f"{name}:{w:g} alone, no label loss", {"loss": "none", "distill": [f"{name}:{w:g}"]}))
    return rows


def row_id(block: str, row: str, seed: int) -> str:
    return f"{block}|{row}|{seed}"


def earlier_run(cfg):
    """What an earlier sweep left of this row: ``(results, None)`` when it finished but the table never
    recorded it (killed between), ``(None, last.pt)`` when it was killed mid-row (resuming ends
    bit-identical on CPU, so a sweep of many hours can stop and go on across sessions), else
    ``(None, None)``. A run of other settings under the same name is left alone (the new one goes to
    ``name-2``)."""
    from mobile_distill.checkpoint import load_checkpoint

    run_dir = Path(cfg.out_dir) / cfg.name
    last = run_dir / "last.pt"
    if not last.exists() or make_config(load_checkpoint(last)["config"]).to_dict() != cfg.to_dict():
        return None, None
    done = run_dir / "results.json"
    return (json.loads(done.read_text()), None) if done.exists() else (None, last)


def run_one(spec: dict) -> dict:
    """Train one row (in this process) and return its record."""
    from mobile_distill.train import main as train

    cfg = make_config({**load_yaml(spec["recipe"]), **spec["overrides"]})
    start = time.perf_counter()
    results, resume = earlier_run(cfg)
    results = results or train(cfg, progress=False, resume=resume)
    run_dir = Path(results["run_dir"])
    curve = [(int(r["epoch"]), float(r["test_recall@1"])) for r in _csv(run_dir / "metrics.csv") if r.get("test_recall@1")]
    test = {k: v for k, v in results["test"].items() if not k.startswith("cross/") or k.startswith("cross/mean/")}
    config = json.loads(json.dumps(cfg.to_dict()).replace(spec["runs_dir"], "<runs-dir>"))
    return {"id": spec["id"], "block": spec["block"], "row": spec["row"], "seed": cfg.seed, "config": config,
            "test": test, "curve": curve, "params": results["complexity"]["params"],
            "gflops": results["complexity"]["gflops"], "image_size": cfg.image_size, "epochs": cfg.epochs,
            "optimizer_steps": results["optimizer_steps"], "train_time_s": results["train_time_s"],
            "images_per_s": _csv(run_dir / "metrics.csv")[-1].get("images_per_s"),
            "wall_time_s": round(time.perf_counter() - start, 1)}


def _csv(path: Path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def specs_for(block: str, teacher: str, seeds, runs_dir: Path, tune_epochs: int, state: dict, scale: float,
              plateau_check: bool = False, peer_finals: bool = True, peer_seeds: int = 1):
    """The rows of a block still to run, in order: alone and default over the seeds first, the
    alone row at twice the schedule (seed 0), then peer tuning beside the default recipe on the
    tuning schedule, then each peer's best weight on the full schedule (once its tuning is done)."""
    b = BLOCKS[block]
    recipe = load_yaml(b["student"])
    epochs = max(1, round(recipe["epochs"] * scale))
    common = {"out_dir": str(runs_dir / block), "teacher_cache_dir": str(runs_dir / "cache"), "eval_every": max(1, epochs // 10),
              "epochs": epochs}
    out = []

    def add(row, seed, overrides, recipe=b["student"]):
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{row}-s{seed}")
        out.append({"id": row_id(block, row, seed), "block": block, "row": row, "recipe": recipe,
                    "runs_dir": str(runs_dir), "overrides": {**common, "teacher": teacher, **overrides, "seed": seed,
                                                             "name": name}})

    for seed in seeds:
        add("alone", seed, alone_overrides(block))
        add("default recipe", seed, {})
    if plateau_check:  # is the alone row's schedule long enough? the same row with twice the epochs
        add(ALONE_2X, seeds[0], {**alone_overrides(block), "epochs": 2 * epochs, "eval_every": max(1, epochs // 5)})
    if b["peers"]:
        done = {r["id"]: r for r in state["runs"]}
        tuning = {"epochs": tune_epochs, "eval_every": max(1, tune_epochs // 5)}
        add(TUNED_DEFAULT, seeds[0], tuning)  # the default recipe on the tuning schedule: the peers' yardstick
        for row, variant in COMPAT_VARIANTS.items():  # a distill list, or overrides of the default recipe
            add(f"compat: {row}", seeds[0], {**(variant if isinstance(variant, dict) else {"distill": variant}), **tuning})
        lite0 = BLOCKS["pretrained"]["student"]
        lite0_epochs = max(1, load_yaml(lite0)["epochs"] // 4)
        for row, distill in COMPAT_LITE0.items():
            add(f"compat: {row}", seeds[0], {"distill": distill, "epochs": lite0_epochs, "eval_every": lite0_epochs},
                recipe=lite0)
        compat_epochs = max(1, round(load_yaml(COMPAT_RECIPE)["epochs"] * scale)) if compat_recipe_exists() else 0
        for seed in seeds[:bool(compat_epochs) * len(seeds)]:  # the chosen variant as a recipe of its own
            add("compatible recipe", seed, {"epochs": compat_epochs, "eval_every": max(1, compat_epochs // 4)},
                recipe=COMPAT_RECIPE)
        for px in COMPAT_SIZES if compat_epochs else ():
            add(f"compat: compatible recipe at {px} px", seeds[0], {"image_size": px, "epochs": compat_epochs,
                                                                  "eval_every": max(1, compat_epochs // 4)},
                recipe=COMPAT_RECIPE)
        for name in PEERS:
            tuned = []
            for row, overrides in peer_variants(name):
                add(f"tuning: {row}", seeds[0], {**overrides, **tuning})
                tuned.append((done.get(row_id(block, f"tuning: {row}", seeds[0])), row, overrides))
            if peer_finals and all(r is not None for r, _, _ in tuned):
                _, row, overrides = max(tuned, key=lambda t: t[0]["test"]["recall@1"])
                for seed in seeds[:peer_seeds]:
                    add(f"peer: {row} (best of {len(tuned)})", seed, overrides)
    return out


def cache_group(spec: dict) -> str:
    """Rows that share a teacher cache file (the first builds it; the others must wait for it)."""
    o = spec["overrides"]
    if not o.get("teacher") or not o.get("teacher_cache", load_yaml(spec["recipe"]).get("teacher_cache")):
        return ""
    return o["teacher"]


def map_stages(spec: dict) -> int:
    """How many teacher feature maps a row caches (attention: two stages by default, hint: one)."""
    names = {d.split(":")[0] for d in spec["overrides"].get("distill", load_yaml(spec["recipe"]).get("distill", []))}
    return 2 * ("attention" in names) + ("hint" in names)


def schedule(todo):
    """Launch order and each teacher's cache builder (the row needing the most feature maps). Builders
    are queued first and rows without a cache next, so rows waiting for a cache never hold every worker
    while a builder is still queued."""
    builders = {}
    for spec in todo:
        group = cache_group(spec)
        if group and (group not in builders or map_stages(spec) > map_stages(builders[group])):
            builders[group] = spec
    waiting = [s for s in todo if cache_group(s) and builders[cache_group(s)] is not s]
    return list(builders.values()) + [s for s in todo if not cache_group(s)] + waiting, builders


def epoch_done(spec: dict, since) -> bool:
    """Has the row launched at ``since`` written its first epoch's metrics (into ``out_dir/name`` or the
    ``name-2``, ... that training picks when that folder is taken)?"""
    if since is None:
        return False
    o = spec["overrides"]
    runs = [*Path(o["out_dir"]).glob(f"{o['name']}/metrics.csv"), *Path(o["out_dir"]).glob(f"{o['name']}-*/metrics.csv")]
    return any(p.stat().st_mtime >= since for p in runs)


def run_specs(todo, state, out: Path, jobs: int):
    """Run rows in subprocesses, one thread each. One cache file per teacher serves every row (it holds
    the union of the maps the rows need), so the row needing the most maps runs first and builds (or
    reuses) it; the other rows of that teacher wait until it has trained an epoch, while rows without
    a teacher cache run beside it."""
    def launch(spec, threads):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        proc = subprocess.run([sys.executable, __file__, "--run-one", f.name], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"    FAILED {spec['id']}:\n{proc.stderr[-2000:]}", flush=True)
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])

    order, builders = schedule(todo)
    built = {group: threading.Event() for group in builders}
    started = {}  # builder id -> launch time
    # a builder gets every thread only when it is the one row: with 2 threads beside 1-thread rows
    # on 2 cores it oversubscribes them (5x slower here)
    builder_threads = jobs if len(todo) == 1 else 1

    def run(spec):
        group = cache_group(spec)
        is_builder = bool(group) and builders[group] is spec
        if group and not is_builder:  # until the builder ends or has trained an epoch (its cache is complete)
            while not built[group].wait(10) and not epoch_done(builders[group], started.get(builders[group]["id"])):
                pass
        print(f"[{'cache' if is_builder else 'run'}] {spec['id']}", flush=True)
        started[spec["id"]] = time.time()
        try:
            return launch(spec, builder_threads if is_builder else 1)
        finally:
            if is_builder:  # also on failure: the next row then builds the cache itself
                built[group].set()

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each row is saved as soon as it ends
        for future in as_completed([pool.submit(run, s) for s in order]):
            result = future.result()
            if result is None:
                continue
            state["runs"].append({**result, "provenance": provenance()})  # rows of a resumed table ran at other commits
            write_json_atomic(out, state)
            print(f"    {result['id']}: recall@1 {result['test']['recall@1']:.4f} ({result['wall_time_s']:.0f} s)", flush=True)


def summarise(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["block"], r["row"]), []).append(r)
    table = []
    for (block, row), rs in groups.items():
        e = {"block": block, "row": row, "seeds": sorted(r["seed"] for r in rs), "params": rs[0]["params"],
             "gflops": rs[0]["gflops"], "image_size": rs[0]["image_size"], "epochs": rs[0]["epochs"],
             "optimizer_steps": rs[0]["optimizer_steps"], "train_time_s": round(min(r["train_time_s"] for r in rs), 1)}
        for k in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "cross/mean/recall@1", "asymmetric/recall@1"):
            values = [r["test"][k] for r in rs if k in r["test"]]
            if values:
                e[k] = statistics.mean(values)
                e[k + "_std"] = statistics.stdev(values) if len(values) > 1 else None
        curves = [r["curve"] for r in rs if r.get("curve")]
        if curves and all([p[0] for p in c] == [p[0] for p in curves[0]] for c in curves):  # mean over seeds
            e["curve"] = [(point[0], statistics.mean(c[i][1] for c in curves)) for i, point in enumerate(curves[0])]
        table.append(e)
    return table


def plateau(alone: dict) -> dict:
    """Has the student alone stopped improving? Its mean curve's change over the last third of the
    schedule (from the evaluation nearest two thirds of it to the end), called a plateau under 1 point."""
    curve = alone.get("curve")
    if not curve or len(curve) < 3:
        return {}
    last = curve[-1][0]
    epoch, start = min(curve[:-1], key=lambda point: abs(point[0] - 2 * last / 3))
    change = curve[-1][1] - start
    return {"alone_last_third_from_epoch": epoch, "alone_last_third_change": change, "alone_plateaued": change < 0.01}


def verdicts(table, teachers):
    """Closure per block, gain vs seed spread, and the default recipe against the best peer."""
    out = {}
    for block, teacher in teachers.items():
        rows = {e["row"]: e for e in table if e["block"] == block}
        alone, default = rows.get("alone"), rows.get("default recipe")
        if not (alone and default):
            continue
        t, a, d = teacher["recall@1"], alone["recall@1"], default["recall@1"]
        spread = max(alone.get("recall@1_std") or 0.0, default.get("recall@1_std") or 0.0)
        v = {"teacher_recall@1": t, "alone_recall@1": a, "default_recall@1": d,
             "closure": (d - a) / (t - a) if t > a else None, "gain": d - a, "larger_seed_std": spread,
             "gain_over_twice_std": d - a > 2 * spread, "seeds": default["seeds"], **plateau(alone)}
        peers = [e for e in rows.values() if e["row"].startswith("peer:")]
        yardstick = default
        if not peers and TUNED_DEFAULT in rows:  # no full-schedule peer rows: compare on the tuning schedule
            peers = [e for e in rows.values() if e["row"].startswith("tuning: ") and e["row"] != TUNED_DEFAULT]
            yardstick = rows[TUNED_DEFAULT]
        if peers:
            best = max(peers, key=lambda e: e["recall@1"])
            v.update({"best_peer": best["row"], "best_peer_recall@1": best["recall@1"],
                      "peer_comparison_row": yardstick["row"], "peer_comparison_epochs": yardstick["epochs"],
                      "margin_over_best_peer": yardstick["recall@1"] - best["recall@1"]})
        if ALONE_2X in rows:  # against the alone row given twice the schedule (a lower bound if it plateaued)
            a2 = rows[ALONE_2X]["recall@1"]
            v.update({"alone_2x_recall@1": a2, "closure_vs_alone_2x": (d - a2) / (t - a2) if t > a2 else None})
        out[block] = v
    return out


def markdown(state) -> str:
    def pct(e, k):
        if k not in e:
            return "-"
        s = f"{100 * e[k]:.1f}"
        return s + (f" ± {100 * e[k + '_std']:.1f}" if e.get(k + "_std") is not None else "")

    meta = state["meta"]
    lines = [f"{meta['data']}: {meta['test_classes']} unseen test classes, {meta['test_images']} test images. "
             f"{meta['cpu']}, up to {meta['jobs']} rows at a time, 1 thread each; total wall time "
             f"{meta['wall_time_s'] / 60:.0f} min. Recall in %, mean ± std over seeds.", ""]
    for block, v in state["verdicts"].items():
        t = state["teachers"][block]
        lines += [f"**{block}** — teacher {t['arch']} at {t['image_size']} px ({t['params'] / 1e6:.2f} M params): "
                  f"Recall@1 {100 * t['recall@1']:.1f}, cross-vendor {100 * t.get('cross/mean/recall@1', float('nan')):.1f}. "
                  f"Closure of the default recipe: **{100 * v['closure']:.0f} %** "
                  f"(gain {100 * v['gain']:.1f} points vs larger seed std {100 * v['larger_seed_std']:.1f})"
                  + (f"; best peer {v['best_peer'].removeprefix('peer: ')} {100 * v['best_peer_recall@1']:.1f} "
                     f"({100 * v['margin_over_best_peer']:+.1f} points for the default recipe, both at "
                     f"{v['peer_comparison_epochs']} epochs)" if "best_peer" in v else "")
                  + (f"; the student alone changes by {100 * v['alone_last_third_change']:+.1f} points over the last "
                     f"third of its schedule (from epoch {v['alone_last_third_from_epoch']}: "
                     f"{'plateaued' if v['alone_plateaued'] else 'still rising'})" if "alone_plateaued" in v else "")
                  + (f"; the alone row at twice the schedule: {100 * v['alone_2x_recall@1']:.1f} (closure against it "
                     f"{100 * v['closure_vs_alone_2x']:.0f} %)" if v.get("closure_vs_alone_2x") is not None else "") + ".", ""]
    lines += ["| block | row | seeds | R@1 | R@2 | R@4 | R@8 | MAP@R | cross-vendor R@1 | asym R@1 | params | px | epochs (steps) | train s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in state["table"]:
        lines.append(f"| {e['block']} | {e['row']} | {len(e['seeds'])} | {pct(e, 'recall@1')} | {pct(e, 'recall@2')} | "
                     f"{pct(e, 'recall@4')} | {pct(e, 'recall@8')} | {pct(e, 'map@r')} | {pct(e, 'cross/mean/recall@1')} | "
                     f"{pct(e, 'asymmetric/recall@1')} | {e['params'] / 1e6:.2f} M | {e['image_size']} | "
                     f"{e['epochs']} ({e['optimizer_steps']}) | {e['train_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_curves(runs, teachers, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    blocks = [b for b in teachers if any(r["block"] == b for r in runs)]
    fig, axes = plt.subplots(1, len(blocks), figsize=(6 * len(blocks), 4.2), squeeze=False)
    for ax, block in zip(axes[0], blocks):
        for row, colour, style in (("alone", "tab:gray", "-"), ("default recipe", "tab:blue", "-"),
                                   (ALONE_2X, "tab:olive", "--"), ("alone, 80 epochs", "tab:gray", ":"),
                                   ("default recipe, 80 epochs", "tab:blue", ":")):
            curves = [r["curve"] for r in runs if r["block"] == block and r["row"] == row and r["curve"]]
            if not curves:
                continue
            epochs = [e for e, _ in curves[0]]
            values = np.array([[100 * v for _, v in c] for c in curves if len(c) == len(epochs)])
            mean, std = values.mean(0), values.std(0)
            label = {"default recipe": "distilled (default recipe)"}.get(row, row)
            ax.plot(epochs, mean, color=colour, ls=style,
                    label=f"{label} ({len(values)} seed{'s' if len(values) > 1 else ''})")
            ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
        ax.axhline(100 * teachers[block]["recall@1"], color="tab:red", ls="--", label="teacher")
        ax.set(title=f"{block}: {teachers[block]['student_arch']} student", xlabel="epoch (one pass over the labelled images)",
               ylabel="test Recall@1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def teacher_record(path: str, student_recipe: str) -> dict:
    from mobile_distill.checkpoint import load_checkpoint
    from mobile_distill.evaluate import evaluate_checkpoint
    from mobile_distill.models.complexity import count_parameters
    from mobile_distill.checkpoint import model_from_checkpoint

    ckpt = load_checkpoint(path)
    m = evaluate_checkpoint(path, progress=False)
    return {"path": "<runs-dir>/" + Path(path).parent.name + "/" + Path(path).name, "arch": ckpt["model"]["arch"],
            "image_size": ckpt["model"]["image_size"], "params": count_parameters(model_from_checkpoint(ckpt)),
            "student_arch": load_yaml(student_recipe)["model"],
            **{k: v for k, v in m.items() if not k.startswith("cross/") or k.startswith("cross/mean/")}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-one", help=argparse.SUPPRESS)
    p.add_argument("--teacher", help="the scratch block's teacher (teacher_emoji recipe)")
    p.add_argument("--large-teacher", help="the pretrained block's teacher (teacher_emoji_large recipe)")
    p.add_argument("--blocks", default="scratch,pretrained")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tune-epochs", type=int, default=30, help="schedule of the peer-weight tuning rows")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply the recipes' epochs (quick looks)")
    p.add_argument("--jobs", type=int, default=2, help="rows at a time (one thread each)")
    p.add_argument("--plateau-check", action="store_true", help="also run the alone row at twice the schedule "
                   "(the recipes' schedules were set so that the alone curve is flat over its last third)")
    p.add_argument("--no-peer-finals", action="store_true",
                   help="compare the peers with the default recipe on the tuning schedule only")
    p.add_argument("--peer-seeds", type=int, default=1, help="seeds of each peer's full-schedule row (the first N "
                   "of --seeds)")
    p.add_argument("--rows", default="", help="run only the rows whose name matches this regular expression "
                   "(the summary still covers every row in the JSON)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill_emoji.json"))
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "table"))
    args = p.parse_args()
    if args.run_one:
        print(json.dumps(run_one(json.loads(Path(args.run_one).read_text()))))
        return
    import torch

    out = Path(args.out)
    state = json.loads(out.read_text()) if out.exists() else {"runs": []}
    state.setdefault("runs", [])
    start = time.perf_counter() - state.get("meta", {}).get("wall_time_s", 0.0)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs_dir = Path(args.runs_dir).resolve()
    teachers = {}
    for block in args.blocks.split(","):
        path = getattr(args, BLOCKS[block]["teacher_arg"])
        if not path:
            p.error(f"block {block} needs --{BLOCKS[block]['teacher_arg'].replace('_', '-')}")
        teachers[block] = state.get("teachers", {}).get(block) or teacher_record(path, BLOCKS[block]["student"])
        while True:  # peer rows at full schedule appear once their tuning rows are done
            done = {r["id"] for r in state["runs"]}
            todo = [s for s in specs_for(block, path, seeds, runs_dir, args.tune_epochs, state, args.epochs_scale,
                                         args.plateau_check, not args.no_peer_finals, args.peer_seeds)
                    if s["id"] not in done and re.search(args.rows, s["row"])]
            if not todo:
                break
            print(f"{block}: {len(todo)} rows to run", flush=True)
            run_specs(todo, state, out, args.jobs)
            if {s["id"] for s in todo} - {r["id"] for r in state["runs"]}:
                break  # a row failed: stop rather than loop
    from mobile_distill.data import create_dataset

    data = create_dataset("emoji", progress=False).summary()
    state["teachers"] = {**state.get("teachers", {}), **teachers}
    state["table"] = summarise(state["runs"])
    state["verdicts"] = verdicts(state["table"], state["teachers"])
    state["meta"] = {"data": "emoji (google, twitter, openmoji, fluent color/flat/high contrast)",
                     "test_classes": data["test_classes"], "test_images": data["test_images"],
                     "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "jobs": max(args.jobs, state.get("meta", {}).get("jobs", 0)),  # the most rows ever run at once
                     "tune_epochs": args.tune_epochs, "wall_time_s": round(time.perf_counter() - start, 1)}
    state["provenance"] = {**provenance(), "outputs": [out.with_suffix(".md").name, "learning_curves.png"]}
    write_json_atomic(out, state)
    write_text_atomic(out.with_suffix(".md"), markdown(state))
    plot_curves(state["runs"], state["teachers"], out.parent / "learning_curves.png")
    print(markdown(state))
    print(f"saved to {out}, {out.with_suffix('.md')} and {out.parent / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
