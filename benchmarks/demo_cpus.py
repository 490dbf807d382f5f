"""The demo on both families of CPU kernels: how far its figures move from one CPU to another.

    .venv/bin/python benchmarks/demo_cpus.py        # two demos: ~30 min on 2 cores

The demo's runs are short (a teacher of 2 epochs, students of 12), and oneDNN and ATen take other
kernels on an Intel CPU with AVX-512 than on an AMD one with AVX2 only, so the same seed ends
elsewhere. This runs ``mdistill demo`` twice, each in its own process: on this machine's own
kernels (into ``runs/``, what ``make demo`` writes) and with ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2`` (into ``runs/demo-avx2/``). It writes both tables and the difference of
every figure to ``benchmarks/results/demo_cpus.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
METRICS = ("recall@1", "recall@4", "map@r", "cross/mean/recall@1", "asymmetric/recall@1")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default="runs", help="relative to the repository (default: runs, as make demo)")
    p.add_argument("--reuse", action="store_true", help="reuse a demo.json already in a run folder")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_cpus.json"))
    args = p.parse_args()
    from mobile_distill.utils.io import write_json_atomic
    from mobile_distill.utils.provenance import provenance

    demos = {}
    for name, env in SETTINGS.items():
        out = Path(args.runs_dir) if name == "native" else Path(args.runs_dir) / f"demo-{name}"
        if not (args.reuse and (ROOT / out / "demo.json").is_file()):
            subprocess.run([sys.executable, "-m", "mobile_distill.cli", "demo", "--out", str(out), "--quiet"],
                           check=True, cwd=ROOT, env={**os.environ, **env})
        demo = json.loads((ROOT / out / "demo.json").read_text())
        demos[name] = {"kernels": demo["provenance"]["cpu_kernels"], "cpu": demo["provenance"]["cpu"],
                       "wall_time_s": demo["wall_time_s"], "closure": demo["closure"],
                       "rows": {row: {m: v[m] for m in METRICS if m in v} for row, v in demo["rows"].items()},
                       "export": [{k: r[k] for k in ("format", "precision", "status")} for r in
                                  (demo.get("export") or {}).get("rows", [])]}
    a, b = demos["native"], demos["avx2"]
    spread = {row: {m: round(100 * (b["rows"][row][m] - v[m]), 2) for m in v if m in b["rows"].get(row, {})}
              for row, v in a["rows"].items()}
    largest = max(abs(d) for row in spread.values() for d in row.values())
    result = {"demos": demos, "difference_points": spread, "largest_difference_points": largest,
              "closure_difference": round(b["closure"] - a["closure"], 3), "provenance": provenance()}
    write_json_atomic(args.out, result)
    for row, diffs in spread.items():
        print(f"{row:100s} " + "  ".join(f"{m} {d:+.1f}" for m, d in diffs.items()))
    print(f"largest difference {largest:.1f} points; saved to {args.out}")


if __name__ == "__main__":
    main()
