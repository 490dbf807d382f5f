"""The size-quality frontier: what a bigger student buys, to choose the one to ship (issue 28).

    .venv/bin/python benchmarks/frontier.py --teacher runs/table/teacher/last.pt --seeds 0,1
    .venv/bin/python benchmarks/frontier.py --data folder:runs/other_data/glyphs \\
        --teacher runs/other_data/s0/teacher/last.pt --seeds 0

Every student of ``STUDENTS`` twice on one schedule, under the same teacher: trained *alone* (the
triplet loss, the recipe minus the teacher) and *distilled* with the default recipe's terms
(``--compatible``: a third row with the compatible recipe's terms, started from the teacher's weights
where the architecture is the teacher's). Students from scratch follow ``student_emoji.yaml``'s
schedule and rates, ImageNet ones ``student_emoji_lite0.yaml``'s; ``--epochs-scale`` shortens both
(the JSON and the table say by how much). Each row gives symmetric and asymmetric Recall@1 (its
queries against the teacher's gallery), parameters, and its int8 TFLite file: size, the precision
that passed the export gate (all-int8, or mixed with some ops in float), the file's own Recall@1 over
the whole test split (LiteRT interpreter) and its latency on 1 thread of this host. The files are timed in one pass after all training (the same load on the machine for
each), with ``mdistill bench``. Rows run in subprocesses, ``--jobs`` at a time, one thread each,
through the distillation table's runner; the sweep is resumable (rows in the JSON are skipped).
Writes benchmarks/results/frontier_<data name>.json, .md and .png (Recall@1 against int8 size and against latency).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import distill_table  # noqa: E402
from mobile_distill.config import load_yaml  # noqa: E402
from mobile_distill.errors import MdistillError  # noqa: E402
from mobile_distill.utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from mobile_distill.utils.provenance import provenance  # noqa: E402

SCRATCH, IMAGENET = "student_emoji", "student_emoji_lite0"
# label -> (the recipe whose schedule and rates it follows, what it changes). ResNet-18 and
# MobileNetV4 have no ImageNet weights that can be had offline here: they start from scratch.
STUDENTS = {
    "mobilenet-0.25": ("MobileNet-0.25, 64 px", SCRATCH, {}),
    "mobilenet-1.0": ("MobileNet-1.0, 64 px", SCRATCH, {"model": "mobilenet_v1_100"}),
    "resnet-18": ("ResNet-18, 64 px", SCRATCH, {"model": "resnet18"}),
    "mobilenetv4-small": ("MobileNetV4-small (timm), 64 px", SCRATCH, {"model": "timm:mobilenetv4_conv_small"}),
    "lite0-64": ("EfficientNet-Lite0 (ImageNet), 64 px", IMAGENET, {}),
    "lite0-112": ("EfficientNet-Lite0 (ImageNet), 112 px", IMAGENET, {"image_size": 112}),
}
MODES = ("alone", "distilled", "compatible")


def row_overrides(student: str, mode: str, teacher_net: tuple, extra: dict | None = None) -> dict:
    """The row's config changes; ``teacher_net`` = the teacher's (architecture, embedding size)."""
    _, recipe, changes = STUDENTS[student]
    if mode == "alone":
        block = "scratch" if recipe == SCRATCH else "pretrained"
        return {**changes, **distill_table.alone_overrides(block)}
    if mode == "distilled":
        return dict(changes)
    compat = load_yaml(distill_table.COMPAT_RECIPE)
    settings = {**load_yaml(recipe), **changes, **(extra or {})}
    same_net = (settings["model"], settings["embedding_dim"]) == tuple(teacher_net)
    start = {"init_from": "teacher"} if same_net and compat.get("init_from") == "teacher" else {}
    return {**changes, "distill": compat["distill"], "compatible": True, **start}


def specs(students, modes, seeds, teacher: str, teacher_net: tuple, data: str, runs_dir: Path, scale: float,
          block: str, extra: dict | None = None) -> list:
    out = []
    for seed in seeds:
        for student in students:
            label, recipe, _ = STUDENTS[student]
            epochs = max(1, round(load_yaml(recipe)["epochs"] * scale))
            for mode in modes:
                row = f"{label} | {mode}"
                name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{row}-s{seed}")
                overrides = {"data": data, "out_dir": str(runs_dir / block), "teacher": teacher,
                             "teacher_cache_dir": str(runs_dir / "cache"), "epochs": epochs,
                             "eval_every": max(1, epochs // 4),
                             **row_overrides(student, mode, teacher_net, extra), **(extra or {}), "seed": seed,
                             "name": name}
                out.append({"id": distill_table.row_id(block, row, seed), "block": block, "row": row,
                            "recipe": recipe, "runs_dir": str(runs_dir), "overrides": overrides})
    return out


def export_int8(run: dict, runs_dir: Path) -> dict:
    """The row's int8 TFLite file through the export gate: size and the precision that passed."""
    from mobile_distill.export import export

    ckpt = runs_dir / run["block"] / run["config"]["name"] / "last.pt"
    out = ckpt.parent / "export_int8"
    try:
        report = export(ckpt, formats=("tflite",), precisions={"tflite": ["int8"]}, out_dir=out, raise_on_failure=False)
    except MdistillError as e:  # e.g. a student whose embeddings collapsed: the row says so
        return {"export_dir": str(out.relative_to(runs_dir)), "status": "refused", "reason": str(e),
                "precision": "none passed", "size_bytes": None, "file": None}
    row = next(r for r in report["rows"] if r["format"] == "tflite")
    float_ops = len(row.get("details", {}).get("quantization", {}).get("float_ops", []))
    precision = "int8" if not float_ops else f"int8, {float_ops} ops float"
    return {"export_dir": str(out.relative_to(runs_dir)), "status": row["status"], "precision": precision if row["status"] == "passed"
            else "none passed", "size_bytes": row.get("size_bytes"), "file": row.get("file")}


def time_int8(export_dir: str, runs: int) -> float | None:
    """Median single-image latency of the int8 file on 1 thread (ms)."""
    from mobile_distill.bench import bench

    report = bench(export_dir, threads=(1,), runs=runs, anchor="off", raise_on_failure=False)
    row = next((r for r in report["rows"] if r["format"] == "tflite"), None)
    return row["threads"]["1"]["median_ms"] if row and "threads" in row else None


def int8_recall(run: dict, runs_dir: Path) -> float:
    """The int8 file's own Recall@1 over the whole test split, in the LiteRT interpreter (the gate
    checks a sample of the images; this is the figure the phone's file gives)."""
    from mobile_distill.asymmetric_eval import evaluate_exported

    path = runs_dir / run["int8"]["export_dir"] / run["int8"]["file"]
    return evaluate_exported(path, run["config"]["data"])["recall@1"]


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return [round(statistics.mean(values), 2), round(statistics.stdev(values), 2) if len(values) > 1 else None]


def summarise(state: dict) -> list:
    groups = {}
    for r in state["runs"]:
        groups.setdefault(r["row"], []).append(r)
    table = []
    for row, rs in groups.items():
        sym = [100 * r["test"]["recall@1"] for r in rs]
        asym = [100 * r["test"]["asymmetric/recall@1"] for r in rs if r["test"].get("asymmetric/recall@1") is not None]
        files = [r["int8"] for r in rs if r.get("int8", {}).get("status") == "passed"]
        table.append({"row": row, "seeds": sorted(r["seed"] for r in rs), "params": rs[0]["params"],
                      "image_size": rs[0]["image_size"], "epochs": rs[0]["epochs"],
                      "recall@1": mean_std(sym), "asymmetric/recall@1": mean_std(asym),
                      # the seeds' files can differ (one all-int8, one with ops in float): the largest is
                      # the figure a size limit must hold for, the smallest shown beside it
                      "int8_mb": round(max(f["size_bytes"] for f in files) / 1e6, 2) if files else None,
                      "int8_mb_min": round(min(f["size_bytes"] for f in files) / 1e6, 2) if files else None,
                      "int8_precision": sorted({f["precision"] for f in files})
                      + ([f"none passed ({len(rs) - len(files)} of {len(rs)} seeds)" if files else "none passed"]
                         if len(files) < len(rs) else []),
                      "int8_recall@1": mean_std([100 * f["recall@1"] for f in files if "recall@1" in f]),
                      "latency_ms": mean_std([f.get("latency_ms") for f in files])})
    labels = [v[0] for v in STUDENTS.values()]
    order = lambda e: (labels.index(e["row"].rsplit(" | ", 1)[0]) if e["row"].rsplit(" | ", 1)[0] in labels  # noqa: E731
                       else len(labels), MODES.index(e["row"].rsplit(" | ", 1)[1]))
    return sorted(table, key=order)


def markdown(state: dict) -> str:
    t = state["teacher"]
    lines = [f"Data: {state['data']}; teacher {t['arch']} at {t['image_size']} px, test Recall@1 {t['recall@1']:.1f}. "
             f"Schedule: the recipes' epochs x {state['epochs_scale']:g}. Latency: the int8 TFLite file, 1 thread, "
             f"median of {state['latency_runs']} single-image runs on {state['cpu']}, all files in one pass.", "",
             "| student | trained | seeds | params (M) | px | epochs | R@1 | asym R@1 | int8 MB | int8 passed | int8 R@1 | ms (1 thread) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in state["table"]:
        one = len(e["seeds"]) == 1  # no spread to show: "± 0.0" would claim one

        def fmt(v, digits=1):
            return "–" if not v else f"{v[0]:.{digits}f}" + ("" if one or v[1] is None else f" ± {v[1]:.{digits}f}")

        size = f"{e['int8_mb']:.2f}" if e["int8_mb"] else "–"
        if e["int8_mb"] and e.get("int8_mb_min", e["int8_mb"]) != e["int8_mb"]:
            size = f"{e['int8_mb_min']:.2f}–{size}"
        lines.append(f"| {e['row']} | {len(e['seeds'])} | {e['params'] / 1e6:.2f} | {e['image_size']} | {e['epochs']} | "
                     f"{fmt(e['recall@1'])} | {fmt(e['asymmetric/recall@1'])} | {size} | "
                     f"{'; '.join(e['int8_precision'])} | {fmt(e.get('int8_recall@1'))} | {fmt(e['latency_ms'], 2)} |")  # small files run in 0.1 ms
    close = [e for e in state["table"] if e["int8_mb"] and e["int8_mb"] < 5 and e["recall@1"]
             and e["recall@1"][0] >= t["recall@1"] - 2]
    lines += ["", "Under 5 MB within 2 points of the teacher: " + (", ".join(e["row"] for e in close) or "none")]
    return "\n".join(lines) + "\n"


def plot(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    markers = {"alone": "o", "distilled": "s", "compatible": "^"}
    for ax, key, label in ((axes[0], "int8_mb", "int8 TFLite file (MB)"), (axes[1], "latency_ms", "latency, 1 thread (ms)")):
        for e in state["table"]:
            x = e[key][0] if isinstance(e[key], list) else e[key]
            if not x or not e["recall@1"]:
                continue
            student, mode = e["row"].rsplit(" | ", 1)
            labels = [v[0] for v in STUDENTS.values()]
            ax.errorbar(x, e["recall@1"][0], yerr=e["recall@1"][1], marker=markers[mode], capsize=3,
                        color=f"C{labels.index(student) if student in labels else 9}")
        ax.axhline(state["teacher"]["recall@1"], color="grey", ls="--", label="teacher")
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):  # 0.5, 2, 5 rather than 5x10^-1
            axis(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel(label)
        ax.set_ylabel("test Recall@1 (%)")
    handles = [plt.Line2D([], [], color=f"C{i}", marker="o", ls="", label=v[0]) for i, v in enumerate(STUDENTS.values())]
    handles += [plt.Line2D([], [], color="k", marker=m, ls="", label=mode) for mode, m in markers.items()]
    handles.append(plt.Line2D([], [], color="grey", ls="--", label=f"teacher ({state['teacher']['recall@1']:.1f})"))
    axes[1].legend(handles=handles, fontsize=7, loc="lower right")
    fig.suptitle(f"Students on {state['data']} (seeds {', '.join(map(str, state['seeds']))})")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _in_repo(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (no machine's absolute path goes
    into a results file), else absolute."""
    full = Path(path).resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(full)


def _in_repo_spec(data: str) -> str:
    kind, sep, path = data.partition(":")
    return f"{kind}:{_in_repo(path)}" if sep and kind == "folder" else data


def teacher_record(path: str, data: str) -> dict:
    from mobile_distill.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    results = json.loads((Path(path).parent / "results.json").read_text())
    return {"data": results.get("data"), "arch": ckpt["model"]["arch"], "image_size": ckpt["model"]["image_size"],
            "embedding_dim": ckpt["model"]["embedding_dim"],
            "recall@1": 100 * results["test"]["recall@1"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the teacher checkpoint (trained on --data)")
    p.add_argument("--data", default="emoji")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--students", default=",".join(STUDENTS), help="comma-separated keys of STUDENTS")
    p.add_argument("--compatible", action="store_true", help="also the compatible recipe's row per student")
    p.add_argument("--modes", default="alone,distilled", help=f"which rows per student, of {', '.join(MODES)} "
                   "(a long sweep can run the distilled rows first and the rest later: rows already done are kept)")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply the recipes' epochs (quick looks)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value for every row (YAML; e.g. classes_per_batch=8 on a small data set)")
    p.add_argument("--jobs", type=int, default=2, help="rows at a time (one thread each)")
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--retime", action="store_true", help="time every file again, in one pass (a sweep run in "
                   "stages timed its files in several, each under that stage's load)")
    p.add_argument("--reexport", action="store_true", help="export every row's int8 file again, then measure and "
                   "time them all (rows whose files an older export code wrote: the table compares one export code)")
    p.add_argument("--out", help="the results JSON (default: benchmarks/results/frontier_<data name>.json)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "frontier"))
    args = p.parse_args(argv)
    import torch

    from mobile_distill.utils.provenance import cpu_model

    students = [s.strip() for s in args.students.split(",") if s.strip()]
    unknown = [s for s in students if s not in STUDENTS]
    if unknown:
        p.error(f"unknown student(s) {unknown}; known: {', '.join(STUDENTS)}")
    modes = list(dict.fromkeys([m.strip() for m in args.modes.split(",") if m.strip()]
                               + (["compatible"] if args.compatible else [])))
    if set(modes) - set(MODES):
        p.error(f"unknown mode(s) {sorted(set(modes) - set(MODES))}; known: {', '.join(MODES)}")
    import yaml

    extra = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    block = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(args.data).name)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"frontier_{block}.json")
    runs_dir = Path(args.runs_dir).resolve()
    state = json.loads(out.read_text()) if out.exists() else {"runs": []}
    if state.get("epochs_scale", args.epochs_scale) != args.epochs_scale:  # its rows would be skipped as done
        p.error(f"{out} holds rows at --epochs-scale {state['epochs_scale']:g}: pass that, or another --out")
    seeds = [int(s) for s in args.seeds.split(",")]
    teacher = teacher_record(args.teacher, args.data)
    if state.get("teacher", teacher) != teacher:  # the new rows would be distilled from another teacher
        was = state["teacher"]
        p.error(f"{out} holds rows distilled from a {was['arch']} teacher with test Recall@1 {was['recall@1']:.4f}; "
                f"{args.teacher} is another ({teacher['arch']}, {teacher['recall@1']:.4f}): pass that teacher (a "
                "retrained one matches only on the same CPU kernels and OMP_NUM_THREADS: see its results.json "
                "provenance), or another --out")
    state["teacher"] = teacher  # recorded with the first row written, so a resumed sweep is checked too
    start = time.perf_counter()
    done = {r["id"] for r in state["runs"]}
    todo = [s for s in specs(students, modes, seeds, _in_repo(args.teacher), (teacher["arch"], teacher["embedding_dim"]),
                             _in_repo_spec(args.data), runs_dir, args.epochs_scale, block, extra) if s["id"] not in done]
    os.chdir(ROOT)  # the rows' subprocesses resolve the repository-relative paths above from here
    print(f"{len(todo)} rows to train", flush=True)
    distill_table.run_specs(todo, state, out, args.jobs)
    for run in state["runs"] if args.reexport else ():
        run.pop("int8", None)
    for run in state["runs"]:  # export, then time every file in one pass
        if "int8" not in run:
            run["int8"] = export_int8(run, runs_dir)
            write_json_atomic(out, state)
    torch.set_num_threads(1)
    for run in state["runs"] if args.retime else ():
        run["int8"].pop("latency_ms", None)
    for run in state["runs"]:
        if run["int8"]["status"] == "passed" and "recall@1" not in run["int8"]:
            run["int8"]["recall@1"] = int8_recall(run, runs_dir)
            write_json_atomic(out, state)
    for run in state["runs"]:
        if run["int8"]["status"] == "passed" and "latency_ms" not in run["int8"]:
            run["int8"]["latency_ms"] = time_int8(runs_dir / run["int8"]["export_dir"], args.latency_runs)
    state.update(data=args.data, teacher=teacher, seeds=sorted({r["seed"] for r in state["runs"]}),
                 epochs_scale=args.epochs_scale, latency_runs=args.latency_runs, cpu=cpu_model(),
                 torch=torch.__version__, wall_time_s=round(time.perf_counter() - start, 1))
    state["table"] = summarise(state)
    state["provenance"] = {**provenance(), "outputs": [out.with_suffix(".md").name, out.with_suffix(".png").name]}
    write_json_atomic(out, state)
    write_text_atomic(out.with_suffix(".md"), markdown(state))
    plot(state, out.with_suffix(".png"))
    print(markdown(state))
    print(f"saved to {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
