"""Does the current code still compute what an older commit computed? A results file names the
commit that wrote it; when rerunning it takes hours (the distillation table: ~8 h on 2 cores), this
shows whether the code since then changes its figures at all.

    .venv/bin/python benchmarks/same_training.py recipe --teacher runs/teacher/last.pt   # ~5 min
    .venv/bin/python benchmarks/same_training.py table  --teacher runs/teacher/last.pt   # ~30 min
    .venv/bin/python benchmarks/same_training.py qat    --teacher runs/teacher/last.pt   # ~10 min
    .venv/bin/python benchmarks/same_training.py glyphs                                  # ~10 min

Each check checks out the commit of a results file (``--base``; by default the commit in that
file's provenance) into a temporary git worktree and runs the same short commands once with that
commit's package and once with this checkout's, in separate processes on the same CPU kernels:

- ``recipe``: the default student recipe from a teacher checkpoint (``distill_emoji.json``'s commit);
- ``table``: every distinct row of ``distill_emoji.json`` (each loss, the alone rows, the
  pretrained block), from the row's own recorded config, cut to a few batches;
- ``qat``: the default recipe, then 8 QAT epochs of a few batches from it (all-int8 and
  ``--qat-float backbone.stages.0``), then ``mdistill export`` of the QAT run to float32 and int8
  TFLite (``qat_default_student.json``'s commit);
- ``glyphs``: ``benchmarks/other_data.py``'s data set and its ``demo.run`` (teacher, alone and
  distilled student) on a short schedule (``other_data_glyphs.json``'s commit).

Writes whether the trained weights, teacher caches, test figures and exported files are equal, bit
for bit, to ``benchmarks/results/same_training/<check>.json``; exit 1 if anything differs. Equal
means the paths the results file took are unchanged by the commits since, on this CPU; it says
nothing about another CPU (``demo_cpus.py``) or about schedule lengths the short runs do not reach.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
DEFAULT_RESULTS = {"recipe": "distill_emoji.json", "table": "distill_emoji.json",
                   "qat": "qat_default_student.json", "glyphs": "other_data_glyphs.json"}
ALSO_COVERS = {"qat": ["export_default_student_qat.json"]}  # written by the same commit's same runs


def in_tree(tree: Path, argv: list, what: str, codes=(0,)) -> None:
    """``python ARGV`` with ``tree``'s package (not the installed one), failing loudly on another exit
    code than ``codes``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode not in codes:
        sys.exit(f"{what} at {tree} failed:\n{done.stderr[-2000:]}")


def mdistill(tree: Path, *args: str, codes=(0,)) -> None:
    """One ``mdistill`` command in ``tree`` (an export whose gate refuses a file exits 1: pass
    ``codes=(0, 1)`` where that verdict is compared too)."""
    in_tree(tree, ["-m", "mobile_distill.cli", *args], f"`mdistill {' '.join(args)}`", codes)


def short(args) -> list:
    return ["--epochs", str(args.epochs), "--batches-per-epoch", str(args.batches), "--eval-every",
            str(args.epochs), "--seed", "0", "--quiet"]


def _role(path: Path) -> str:
    """A cache file's part without its key tag (the tag hashes the teacher file, whose bytes hold
    the temporary folder of each tree's run): ``teacher_views-<tag>-stage3.npy`` -> ``teacher_views-stage3``."""
    return re.sub(r"-[0-9a-f]{12}", "", path.stem)


def same_arrays(a: list, b: list) -> bool | None:
    """Equal .npy files pairwise by role; None when there are none (a run without a cache)."""
    if not a and not b:
        return None
    a, b = (sorted(x, key=lambda p: (_role(p), p.stat().st_size)) for x in (a, b))
    return [_role(p) for p in a] == [_role(p) for p in b] and all(
        np.array_equal(np.load(x), np.load(y)) for x, y in zip(a, b))


def compare_runs(a: Path, b: Path) -> dict:
    sa = torch.load(a / "last.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "last.pt", weights_only=True)["state_dict"]
    test_a = json.loads((a / "results.json").read_text())["test"]
    test_b = json.loads((b / "results.json").read_text())["test"]
    return {"weights_equal": sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa),
            "teacher_cache_equal": same_arrays(sorted(a.glob("teacher_views-*.npy")), sorted(b.glob("teacher_views-*.npy"))),
            "test_figures_equal": test_a == test_b, "recall@1": [test_a.get("recall@1"), test_b.get("recall@1")]}


def run_recipe(tree: Path, out: Path, args) -> dict:
    mdistill(tree, "train", "--config", "student_emoji", "--teacher", str(args.teacher), "--cache-views", "1",
             "--out-dir", str(out), "--name", "recipe", *short(args))
    return {"default recipe": out / "recipe"}


def _row_key(config: dict) -> str:
    """A row's config without what does not change the code path (seed, schedule, weights of losses)."""
    keep = {k: v for k, v in config.items() if k not in ("name", "seed", "epochs", "eval_every", "out_dir")}
    keep["distill"] = [re.sub(r"^(\w+):[0-9.e+-]+", r"\1:w", s) for s in keep.get("distill", [])]
    return json.dumps(keep, sort_keys=True)


def table_rows(results: Path) -> dict:
    rows = {}
    for run in json.loads(results.read_text())["runs"]:
        rows.setdefault(_row_key(run["config"]), (f"{run['block']}: {run['row']}", run["config"]))
    return dict(rows.values())


def run_table(tree: Path, out: Path, args) -> dict:
    runs = {}
    for i, (row, config) in enumerate(table_rows(args.results).items()):
        config = {**config, "name": f"row{i}", "out_dir": str(out), "batches_per_epoch": args.batches,
                  "teacher_cache_dir": str(out / "cache") if config.get("teacher_cache") else ""}
        if config.get("teacher"):
            config.update(teacher=str(args.teacher), cache_views=min(config.get("cache_views", 1), 2))
        path = out / f"row{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        mdistill(tree, "train", "--config", str(path), *short(args))
        runs[row] = out / f"row{i}"
    return runs


def run_qat(tree: Path, out: Path, args) -> dict:
    runs = run_recipe(tree, out, args)
    for name, extra in (("qat", []), ("qat-f0", ["--qat-float", "backbone.stages.0"])):
        mdistill(tree, "train", "--qat", "--resume", str(out / "recipe" / "last.pt"), "--epochs", "8",
                 "--batches-per-epoch", "2", "--name", name, "--out-dir", str(out), "--quiet", *extra)
        runs[f"QAT, {name}"] = out / name
    mdistill(tree, "export", str(out / "qat" / "last.pt"), "--format", "tflite", "--precision", "tflite:float32",
             "--precision", "tflite:int8", "--parity-samples", "300", "--no-mixed-precision", "--keep-failed",
             "--out", str(out / "export"), "--quiet", codes=(0, 1))
    return runs


def run_glyphs(tree: Path, out: Path, args) -> dict:
    code = ("import sys; from mobile_distill.demo import run; "
            "run(out_dir=sys.argv[1], progress=False, export_formats=(), data='folder:' + sys.argv[2], "
            f"teacher_overrides={{'epochs': 1, 'batches_per_epoch': {args.batches}, 'seed': 0}}, "
            f"student_overrides={{'epochs': {args.epochs}, 'batches_per_epoch': {args.batches}, "
            f"'cache_views': 2, 'eval_every': {args.epochs}, 'seed': 0}})")
    in_tree(tree, ["-c", code, str(out), str(args.glyphs)], "the glyph demo")
    return {p.name: p for p in sorted(out.iterdir()) if (p / "last.pt").exists()}


def file_outputs(path: Path, runs: int = 4) -> np.ndarray:
    """The LiteRT interpreter's outputs for a file on fixed random inputs. The files' bytes cannot be
    compared: the metadata each embeds names the checkpoint's sha256, which differs by run folder."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rng = np.random.default_rng(0)
    results = []
    for _ in range(runs):
        x = rng.random(inp["shape"]).astype(inp["dtype"]) if np.issubdtype(inp["dtype"], np.floating) else \
            rng.integers(0, 256, inp["shape"]).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    return np.stack(results)


def flat(row: dict, prefix: str = "") -> dict:
    """A report row's nested figures (``parity.cosine_min``, ...) as one level of keys."""
    out = {}
    for k, v in row.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def compare_exports(a: Path, b: Path) -> dict:
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.tflite"))
    rows_a, rows_b = (json.loads((d / "export_report.json").read_text())["rows"] for d in (a, b))
    # not figures: how long a step took, where a refused file was kept, and the file's size and digest
    # (its metadata names the run folder)
    skip = {"sha256", "size_bytes", "kept_at"}
    figures = [{k: v for k, v in flat(r).items() if isinstance(v, (int, float, str)) and k.split(".")[-1] not in skip
                and not k.endswith("_s") and "time" not in k and "path" not in k} for r in rows_a]
    rows_b = [flat(r) for r in rows_b]
    differ = sorted({k for f, r in zip(figures, rows_b) for k in f if f[k] != r.get(k)})
    return {"files": files, "file_outputs_equal": bool(files) and files == sorted(str(p.relative_to(b)) for p in b.rglob("*.tflite"))
            and all(np.array_equal(file_outputs(a / f), file_outputs(b / f)) for f in files),
            "gate_figures_equal": len(rows_a) == len(rows_b) and not differ, "gate_figures_differ": differ,
            "gate_figures_compared": sorted({k for f in figures for k in f})}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("check", choices=list(DEFAULT_RESULTS))
    p.add_argument("--results", type=Path, help="the results file checked (default: the check's own)")
    p.add_argument("--base", help="the commit to compare with (default: the one the results file names)")
    p.add_argument("--teacher", default="runs/teacher/last.pt", help="a teacher checkpoint both commits load")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--glyphs", type=Path, default=ROOT / "runs" / "other_data" / "glyphs",
                   help="the glyph set (built here if missing, as benchmarks/other_data.py builds it)")
    p.add_argument("--out", type=Path, help="default: benchmarks/results/same_training/<check>.json")
    args = p.parse_args()
    from mobile_distill.utils.io import write_json_atomic
    from mobile_distill.utils.provenance import provenance

    args.results = args.results or RESULTS / DEFAULT_RESULTS[args.check]
    args.teacher, args.glyphs = Path(args.teacher).resolve(), args.glyphs.resolve()
    base = args.base or json.loads(args.results.read_text())["provenance"]["commit"]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", base], capture_output=True, text=True)
    if commit.returncode != 0:
        sys.exit(f"{base} is not a commit of this repository")
    if args.check == "glyphs" and not args.glyphs.exists():
        from benchmarks.other_data import build_glyphs

        build_glyphs(args.glyphs)
    runner = {"recipe": run_recipe, "table": run_table, "qat": run_qat, "glyphs": run_glyphs}[args.check]
    with tempfile.TemporaryDirectory(prefix="same-training-") as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tmp / "base"),
                        commit.stdout.strip()], check=True, capture_output=True)
        try:
            outs = {name: tmp / f"out-{name}" for name in ("base", "current")}
            runs = {}
            for name, tree in (("base", tmp / "base"), ("current", ROOT)):
                outs[name].mkdir()
                runs[name] = runner(tree, outs[name], args)
            result = {"runs": {row: compare_runs(runs["base"][row], runs["current"][row]) for row in runs["base"]}}
            caches = [sorted((o / "cache").rglob("*.npy")) for o in outs.values()]
            if any(caches):
                result["shared_teacher_cache_equal"] = same_arrays(*caches)
            if args.check == "qat":
                result["export"] = compare_exports(outs["base"] / "export", outs["current"] / "export")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "base")],
                           capture_output=True)
    flags = [v for r in result["runs"].values() for k, v in r.items() if k.endswith("_equal")]
    flags += [v for k, v in result.items() if k.endswith("_equal")]
    flags += [v for k, v in result.get("export", {}).items() if k.endswith("_equal")]
    same = all(f is not False for f in flags)
    out = args.out or RESULTS / "same_training" / f"{args.check}.json"
    also = [f for f in ALSO_COVERS.get(args.check, []) if args.results.name == DEFAULT_RESULTS[args.check]]
    doc = {"check": args.check, "results_file": str(args.results.resolve().relative_to(RESULTS)), "also_covers": also,
           "base": commit.stdout.strip(), "same": same, **result,
           "run": {"teacher": str(args.teacher.relative_to(ROOT)) if args.teacher.is_relative_to(ROOT) else args.teacher.name,
                   "epochs": args.epochs, "batches_per_epoch": args.batches, "seed": 0},
           "provenance": provenance()}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, doc)
    for row, r in result["runs"].items():
        print(f"{row}: " + ", ".join(f"{k[:-6]} {v}" for k, v in r.items() if k.endswith("_equal")))
    if "export" in result:
        print(f"export: file outputs {result['export']['file_outputs_equal']}, gate figures {result['export']['gate_figures_equal']}")
    print(f"{'the same' if same else 'DIFFERENT'} at {base} and now; saved to {out}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
