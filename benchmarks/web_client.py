"""The demo student in the browser (issue 29's measured example): its float32 ``.tflite``
(LiteRT.js), float32 ``.onnx`` (ONNX Runtime Web) and int8 ``.tflite`` through the browser parity
gate, the bench table with the browser rows beside the host runtimes (latency as a ratio to the
same file on the host, measured in one run), and a screenshot of the app searching the emoji gallery.

    make demo     # or: mdistill demo --out runs  (the demo student and its export, ~15 min on 2 cores)
    .venv/bin/python benchmarks/web_client.py --export runs/student/export

Writes benchmarks/results/web_client.json (+ .md) and benchmarks/results/web_client.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
FILES = ("student_float32.tflite", "student_float32.onnx", "student_int8.tflite")


def screenshot(export_dir: Path, gallery: str, query: Path, out: Path) -> dict:
    """The app (LiteRT.js, float32) with the ``gallery`` searched for ``query``, dropped on the page."""
    from mobile_distill.web import serving, write_app
    from mobile_distill.web.browser import open_page

    with tempfile.TemporaryDirectory() as tmp:
        app = write_app(export_dir, Path(tmp) / "web", gallery=gallery)["app"]
        with serving(app) as (url, _), open_page(url) as page:
            info = page.info()
            page.page.set_viewport_size({"width": 1000, "height": 700})
            page.page.set_input_files("#file", str(query))
            page.page.wait_for_selector("#results li")
            top = page.page.eval_on_selector_all("#results li span", "s => s.map(x => x.textContent)")
            page.page.screenshot(path=str(out), full_page=True)
    return {"page": info, "query": query.name, "top": top}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", default="runs/student/export", help="the demo student's export folder")
    p.add_argument("--parity-samples", type=int, default=256)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--out", default=str(RESULTS / "web_client.json"))
    args = p.parse_args()
    from mobile_distill.bench import bench, format_table
    from mobile_distill.export import format_report
    from mobile_distill.utils.io import write_json_atomic, write_text_atomic
    from mobile_distill.utils.provenance import provenance
    from mobile_distill.web.gate import browser_verify

    export_dir = Path(args.export)
    gates = {}
    for name in FILES:
        report = browser_verify(export_dir / name, parity_samples=args.parity_samples, log=print)
        print(format_report(report))
        gates[name] = report
    with tempfile.TemporaryDirectory() as tmp:
        table = bench(export_dir, runs=args.runs, anchor="off", browser=True, browser_samples=args.parity_samples,
                      out_dir=tmp, raise_on_failure=False, log=print)
    print(format_table(table))
    import json

    from mobile_distill.data import create_dataset

    card = json.loads((export_dir / "model.json").read_text())["model"]
    spec = card["dataset"].get("spec") or card["dataset"]["name"]
    query = Path(create_dataset(spec, progress=False).test[0][0])  # the gallery is its test split: top-1 is itself
    out = Path(args.out)
    shot = screenshot(export_dir, spec, query, out.with_suffix(".png"))
    doc = {"export": str(export_dir), "gates": {k: {"passed": v["passed"], "parity_images": v["parity_images"],
                                                     "pytorch_recall@1": v["pytorch_recall@1"], "row": v["rows"][0]}
                                                 for k, v in gates.items()},
           "bench": {k: table[k] for k in ("dataset", "test_images", "image_size", "architecture", "threads", "runs",
                                           "machine", "rows")},
           "screenshot": shot, "provenance": {**provenance(), "outputs": [out.with_suffix(".md").name,
                                                                             out.with_suffix(".png").name]}}
    for row in doc["bench"]["rows"]:
        row.pop("embeddings", None)
    write_json_atomic(out, doc)
    md = ["# The demo student in the browser", "", "## Browser parity gate", ""]
    md += ["```"] + [format_report(v) for v in gates.values()] + ["```", "", "## Bench (host and browser rows)", "",
                                                               "```", format_table(table), "```", ""]
    write_text_atomic(out.with_suffix(".md"), "\n".join(md))
    print(f"saved to {out} (+ .md, .png)")


if __name__ == "__main__":
    main()
