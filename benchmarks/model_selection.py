"""Does model selection keep the better teacher? The built-in teacher recipe (``teacher_emoji``) on two
small folder sets, each seed trained under two rules:

- **before**: the code before issue 32 (``--before-commit``, run from a git worktree of it): 10 % of
  the training classes held out, Recall@1 on them, the untuned ImageNet weights kept unless an epoch
  beats them strictly;
- **now**: the current code and recipe: a validation split of ``val_queries`` images, MAP@R with
  Recall@1 breaking ties, the untuned weights kept only when better by more than the standard error;
  and, with ``--folds K``, the same rule averaged over K disjoint splits, the kept epoch then trained
  on every training class.

The sets: the glyphs of ``benchmarks/other_data.py`` (105 training classes of about 18 images) and
emoji skin tones, built here from the emoji data: a class is a people or hand emoji that comes in
five skin tones, its images every vendor's drawing of every single-tone variant, 15 per class
(seeded), about 115 training classes. The figure compared is the kept teacher's test Recall@1
(unseen classes). Resumable: rows already in the JSON are kept.

    .venv/bin/python benchmarks/model_selection.py --seeds 0,1,2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PER_CLASS = 15
TRAIN = ("from mobile_distill.config import load_yaml, make_config; from mobile_distill.train import main; "
         "import json, sys; main(make_config({**load_yaml('teacher_emoji'), **json.loads(sys.argv[1])}), progress=False)")


def build_skin_tones(root: Path, seed: int = 0) -> dict:
    """``root/<base codepoint>/<vendor>_<tone>.png``: RGB on white, 64 px, ``PER_CLASS`` per class."""
    from PIL import Image

    from mobile_distill.paths import data_dir

    emoji = data_dir("emoji")
    vendors = sorted(p.name for p in emoji.iterdir() if p.is_dir())
    rng = random.Random(seed)
    counts = {}
    for entry in json.loads((emoji / "emoji.json").read_text()):
        tones = entry.get("skin_variations") or {}
        if len(tones) != 5 or any("-" in key for key in tones):
            continue  # no skin tones, or two people's (25 combinations)
        base = entry["image"][:-4]
        names = [base] + [v["image"][:-4] for v in tones.values()]
        images = [(v, name) for v in vendors for name in names if (emoji / v / f"{name}.png").is_file()]
        if len(images) < PER_CLASS:
            continue
        folder = root / base
        folder.mkdir(parents=True, exist_ok=True)
        for vendor, name in rng.sample(images, PER_CLASS):
            rgba = Image.open(emoji / vendor / f"{name}.png").convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            Image.alpha_composite(white, rgba).convert("RGB").save(folder / f"{vendor}_{name}.png")
        counts[base] = PER_CLASS
    return {"classes": len(counts), "images": sum(counts.values()), "images_per_class": PER_CLASS}


def data_sets(runs: Path) -> dict:
    from other_data import build_glyphs

    out = {}
    for name, build in (("glyphs", build_glyphs), ("skin_tones", build_skin_tones)):
        folder = runs / name
        if not folder.exists():
            tmp = folder.with_name(name + ".tmp")
            summary = build(tmp)
            tmp.rename(folder)
            (runs / f"{name}.json").write_text(json.dumps(summary))
        out[name] = {"path": folder, **json.loads((runs / f"{name}.json").read_text())}
    return out


def train(rule: str, folder: Path, seed: int, run_dir: Path, before: Path, folds: int) -> dict:
    settings = {"data": f"folder:{folder}", "seed": seed, "out_dir": str(run_dir.parent), "name": run_dir.name}
    if rule.startswith("folds"):
        settings["val_folds"] = folds
    code = before if rule == "before" else ROOT
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", TRAIN, json.dumps(settings)], cwd=code, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    results = json.loads((run_dir / "results.json").read_text())
    return {"test_recall@1": 100 * results["test"]["recall@1"], "selected": results["selected"],
            "selection": {k: v for k, v in (results.get("selection") or {}).items() if k not in ("epochs", "folds")},
            "untuned_test_recall@1": 100 * results["untuned"]["recall@1"] if "untuned" in results else None,
            "wall_time_s": round(time.perf_counter() - start, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rules", default="before,now", help="before, now, folds (comma-separated)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--sets", default="glyphs,skin_tones")
    p.add_argument("--before-commit", default="fc1b679")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "model_selection"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "model_selection.json"))
    args = p.parse_args()
    from mobile_distill.utils.io import write_json_atomic, write_text_atomic
    from mobile_distill.utils.provenance import provenance

    runs, out = Path(args.runs_dir), Path(args.out)
    runs.mkdir(parents=True, exist_ok=True)
    before = runs / f"code-{args.before_commit}"
    if not before.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before_commit], cwd=ROOT, check=True)
    sets = {k: v for k, v in data_sets(runs).items() if k in args.sets.split(",")}
    state = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    jobs = [(s, rule, seed) for s in sets for seed in map(int, args.seeds.split(",")) for rule in args.rules.split(",")
            if f"{s}|{rule}|{seed}" not in state["runs"]]

    def one(job):
        s, rule, seed = job
        row = train(rule, sets[s]["path"], seed, runs / "runs" / s / f"{rule}-s{seed}", before, args.folds)
        return job, {**row, "provenance": provenance()}

    with ThreadPoolExecutor(args.jobs) as pool:
        for (s, rule, seed), row in pool.map(one, jobs):
            state["runs"][f"{s}|{rule}|{seed}"] = {"set": s, "rule": rule, "seed": seed, **row}
            write_json_atomic(out, state)
            print(f"{s} {rule} seed {seed}: test R@1 {row['test_recall@1']:.2f} ({row['selected']})", flush=True)
    summarise(state, sets, args, out, write_json_atomic, write_text_atomic, provenance)


def summarise(state, sets, args, out, write_json_atomic, write_text_atomic, provenance):
    table = {}
    for s in sets:
        for rule in args.rules.split(","):
            rows = [r for r in state["runs"].values() if r["set"] == s and r["rule"] == rule]
            values = [r["test_recall@1"] for r in rows]
            if values:
                table[f"{s}|{rule}"] = {"seeds": sorted(r["seed"] for r in rows), "mean": statistics.mean(values),
                                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                        "kept_untuned": sum(r["selected"].startswith("untuned") for r in rows)}
    state.update(table=table, data={k: {m: v for m, v in d.items() if m != "path"} for k, d in sets.items()},
                 before_commit=args.before_commit, provenance={**provenance(), "outputs": [out.with_suffix(".md").name]})
    write_json_atomic(out, state)
    lines = ["| data | rule | seeds | teacher test R@1 | kept the untuned weights | per seed |", "|---|---|---|---|---|---|"]
    for key, t in table.items():
        s, rule = key.split("|")
        per = ", ".join(f"{state['runs'][f'{s}|{rule}|{seed}']['test_recall@1']:.1f}" for seed in t["seeds"])
        lines.append(f"| {s} | {rule} | {len(t['seeds'])} | {t['mean']:.2f} ± {t['std']:.2f} | {t['kept_untuned']} | {per} |")
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
