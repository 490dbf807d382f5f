"""Collect the headline benchmark into benchmarks/RESULTS.md and benchmarks/results/results.json.

Called by benchmarks/run_all.sh after the table, the export and the bench have run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobile_distill.bench.api import machine  # noqa: E402
from mobile_distill.bench.report import format_markdown  # noqa: E402
from mobile_distill.utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from mobile_distill.utils.provenance import provenance  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _demo_time(export_dir: str) -> str:
    """The demo's own wall time, from the demo.json beside the run folders it wrote."""
    demo = Path(export_dir).resolve().parents[1] / "demo.json"
    try:
        return f"{json.loads(demo.read_text())['wall_time_s'] / 60:.1f} min in its last run here"
    except (OSError, ValueError, KeyError):
        return "its time is in docs/getting-started.md's demo block"


def export_table(report) -> str:
    lines = ["| format | precision | size MB | cos min | R@1 export | R@1 PyTorch | asym R@1 | top-1 agreement (ε) | "
             "status |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        p = r.get("parity") or {}
        cell = lambda k, f: format(p[k], f) if k in p else "-"  # noqa: E731
        size = f"{r['size_bytes'] / 1e6:.2f}" if "size_bytes" in r else "-"
        status = {"passed": "✓ (reference interpreter)" if r.get("parity_note") else "✓",
                  "structural": "✓* (structural only)", "failed": "✗ " + "; ".join(r["failures"])}
        lines.append(f"| {r['format']} | {r['precision']} | {size} | {cell('cosine_min', '.6f')} | "
                     f"{cell('recall@1_export', '.2f')} | {cell('recall@1_pytorch', '.2f')} | "
                     f"{cell('asymmetric_recall@1', '.2f')} | {cell('top1_agreement_eps', '.3f')} | {status[r['status']]} |")
    return "\n".join(lines)


def throughput_section(results: Path = RESULTS) -> list:
    """Markdown lines for ``benchmarks/train_throughput.py``'s figures: this CPU (1 vs 2
    processes) and, when one was measured, the GPU (its card named)."""
    lines = ["## Training throughput (`benchmarks/train_throughput.py`)", ""]
    for name, title in (("train_throughput.json", "This CPU: one process or two (torchrun, DDP over gloo)"),
                        ("train_throughput_gpu.json", "GPU")):
        path = results / name
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        where = f"{d['gpu']}, {d['cpu_count']} CPU cores" if d.get("gpu") else f"{d['cpu']}, {d['cpu_count']} cores"
        lines += [f"**{title}** ({where}, torch {d['torch']}; the default student recipe on `{d['data']}`, "
                  f"{d['epochs']} epochs per setting, {d['workers']} loader workers, {d['repeats']} round(s), "
                  f"ratios against *{d['reference']}*):", "",
                  "| setting | images/s | ratio |", "|---|---|---|"]
        lines += [f"| {t['name']} | {t['images_per_s']} | {t['speed_vs_reference']}x |" for t in d["settings"]]
        lines += [""] + ([d["note"], ""] if d.get("note") else [])
    return lines if len(lines) > 2 else []


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--export", required=True, help="the export folder that was benchmarked")
    p.add_argument("--wall-time-s", type=float, required=True)
    p.add_argument("--reused", default="", help="what this run recomputed and what it reused")
    args = p.parse_args()
    export_dir = Path(args.export)
    bench = json.loads((export_dir / "bench" / "bench.json").read_text())
    export_report = json.loads((export_dir / "export_report.json").read_text())
    table_md = (RESULTS / "distill_emoji.md").read_text()
    out_bench = RESULTS / "bench"
    out_bench.mkdir(parents=True, exist_ok=True)
    for name in ["bench.json", "bench.md", *bench["plots"]]:
        shutil.copyfile(export_dir / "bench" / name, out_bench / name)
    write_json_atomic(RESULTS / "export_default_student.json", export_report)

    m = machine()
    anchor = next((r for r in bench["rows"] if r.get("paired")), None)
    ratio_lines = (["| threads | ours, median ms | Keras-native, median ms | ratio ours / Keras | runs each |",
                    "|---|---|---|---|---|"]
                   + [f"| {t} | {v['ours_median_ms']:.3f} | {v['anchor_median_ms']:.3f} | **{v['ratio']:.2f}x** | "
                      f"{v['runs']} |" for t, v in anchor["paired"].items()]) if anchor else [
        "Keras anchor not measured (TensorFlow unavailable or no Keras counterpart)."]
    md = [
        "# Headline benchmark results", "",
        f"Produced by `bash benchmarks/run_all.sh` in **{args.wall_time_s / 60:.1f} min** on this machine. "
        f"This run: {args.reused}. From scratch the suite also runs `make demo` ({_demo_time(args.export)}) "
        "and the whole distillation table (its own wall time below).", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}.",
        "Tools: " + ", ".join(f"{k} {v}" for k, v in m["tools"].items()) + ".", "",
        "## Keras-native anchor (mobilenet_v1_025, float32 TFLite, batch 1)", "",
        "The same architecture built natively in Keras (`keras.applications.MobileNet(alpha=0.25)`, "
        "random weights) and converted with TensorFlow's TFLite converter, timed against our float32 "
        "export in one process, alternating blocks of single-image runs (the same LiteRT interpreter, "
        "inputs and thread count), so machine noise hits both alike. Goal ≤ 1.0x. At 64 px this "
        "model takes about 0.2 ms, so the figure mostly compares per-invoke overheads.", "",
        *ratio_lines, "",
        "## Export of the default student (parity gate)", "",
        f"Parity on {export_report['parity_images']} {export_report['dataset']} test images; "
        f"int8 calibrated on {export_report['calibration_images']} training images.", "",
        export_table(export_report), "",
        "## Per-format benchmark of the default student (`mdistill bench`)", "",
        format_markdown(bench).split("\n", 2)[2], "",
        "Plots: `benchmarks/results/bench/" + "`, `benchmarks/results/bench/".join(bench["plots"]) + "`.", "",
        "Real-device numbers are not measured in this repository: there is no phone here. "
        "`mdistill bench --adb` is tested against a stand-in device only.", "",
        *throughput_section(),
        "## Distillation table", "", table_md.strip(), "",
    ]
    write_text_atomic(ROOT / "benchmarks" / "RESULTS.md", "\n".join(md))
    write_json_atomic(RESULTS / "results.json", {"wall_time_s": args.wall_time_s, "machine": m, "bench": bench,
                                                 "export": export_report, "provenance": {
                                                     **provenance(), "outputs": ["../RESULTS.md"]}})
    print(f"saved to {ROOT / 'benchmarks' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
