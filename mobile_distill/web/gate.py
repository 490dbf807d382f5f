"""The exported files run in headless Chromium inside the web app, through the page's own decode,
crop, resize and runtime (LiteRT.js for ``.tflite``, ONNX Runtime Web for ``.onnx``):
``browser_verify`` gates one file's embeddings of the test images against PyTorch with the export
gate's thresholds (``mdistill verify FILE --browser``); ``browser_runs`` gives the embeddings and
timed runs that ``mdistill bench --browser`` turns into rows.

PyTorch's reference is computed on the app's preprocessing (``box_resize``, which the page
reproduces byte for byte: the golden test), so the gate measures the browser runtime, not a
difference of resize rules.
"""

from __future__ import annotations

import re
import statistics
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..export.android import box_resize, load_rgb
from ..export.parity import Thresholds, gate, recall_at_1
from ..export.prepare import embed, pick_parity_samples
from ..export.verify import exported_from, gated_reference
from .app import RUNTIMES, WebError, write_app
from .browser import embed_files, open_page
from .server import serving

RUNTIME_NAMES = {"litert": "LiteRT.js", "onnx": "ONNX Runtime Web"}


def browser_runs(export_dir: Path, artifacts: Sequence[Dict], rgb: Sequence[np.ndarray], backend: str = "wasm",
                 threads: int = 1, warmup: int = 0, runs: int = 0, log=lambda _: None) -> List[Dict]:
    """Each artifact (a ``model.json`` record) in its own page of one app: the page's info, its
    embeddings of the ``rgb`` images (lossless RGB PNGs: the page decodes the bytes Python loaded)
    and, with ``runs``, the model's latency on the first image (ms per run)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="mdistill-web-") as tmp:
        app = Path(write_app(export_dir, tmp)["app"])
        from PIL import Image

        (app / "parity").mkdir()
        urls = [f"parity/{i:05d}.png" for i in range(len(rgb))]
        for url, x in zip(urls, rgb):
            Image.fromarray(x).save(app / url)
        with serving(app) as (base, _):
            for artifact in artifacts:
                runtime = RUNTIMES[artifact["format"]]
                query = f"?runtime={runtime}&precision={artifact['precision']}&backend={backend}&threads={threads}"
                log(f"{artifact['file']} in headless Chromium: {base}{query}")
                with open_page(base + query) as page:
                    info = page.info()
                    if info["file"] != artifact["file"]:
                        raise WebError(f"the page loaded {info['file']}, not {artifact['file']}")
                    got = embed_files(page, urls)
                    ms = page.call("([u, w, r]) => window.mdistill.timeModel(u, w, r)", [urls[0], warmup, runs]) if runs else []
                    # LiteRT.js logs its start-up through console.error too: keep the rest
                    errors = [e for e in page.errors if not re.match(r"(INFO|WARNING): \[", e)]
                out.append({"artifact": artifact, "info": info, "embeddings": got["embeddings"],
                            "embed_ms": got["latency_ms"], "run_ms": ms, "console_errors": errors[:5]})
    return out


def parity_images(dataset, size: int, net, parity_samples: int, seed: int = 0):
    """(the gate's test images as loaded RGB, labels, PyTorch's embeddings of their box-averaged bytes)."""
    parity = pick_parity_samples(dataset.test, parity_samples, seed)
    rgb = [load_rgb(path, dataset.name) for path, _ in parity]
    reference = embed(net, np.stack([box_resize(x, size) for x in rgb]))
    return rgb, np.array([y for _, y in parity]), reference


def browser_verify(file: str | Path, checkpoint: Optional[str | Path] = None, data: Optional[str] = None,
                   parity_samples: int = 256, seed: int = 0, thresholds: Thresholds = Thresholds(),
                   backend: str = "wasm", threads: int = 1, log=lambda _: None) -> Dict:
    """Gate ``file`` (a ``.tflite`` or ``.onnx`` in a ``mdistill export`` folder) in the browser.

    Returns:
        A one-row report in ``export``'s shape (``format_report`` prints it); the row's runtime
        names the browser runtime and backend, ``browser_latency_ms`` the page's median per image.
    """
    file = Path(file)
    if file.suffix.lstrip(".") not in RUNTIMES:
        raise WebError(f"{file}: the browser runs .tflite (LiteRT.js) and .onnx (ONNX Runtime Web) files")
    artifact, checkpoint = exported_from(file, checkpoint)
    _, net, size, _, dataset = gated_reference(checkpoint, data)
    rgb, labels, reference = parity_images(dataset, size, net, parity_samples, seed)
    artifact = {**artifact, "file": file.name}
    done = browser_runs(file.parent, [artifact], rgb, backend, threads, log=log)[0]
    row = {"format": artifact["format"], "precision": artifact["precision"], "file": str(file),
           "runtime": f"{RUNTIME_NAMES[RUNTIMES[artifact['format']]]} in Chromium ({backend})", "browser": done["info"],
           "browser_latency_ms": statistics.median(done["embed_ms"]), "size_bytes": file.stat().st_size}
    if done["console_errors"]:
        row["console_errors"] = done["console_errors"]
    result = gate(reference, done["embeddings"], labels, artifact["precision"], thresholds)
    row.update(parity=result.figures, failures=result.failures, status="passed" if result.passed else "failed")
    return {"checkpoint": str(checkpoint), "dataset": dataset.name, "parity_images": len(rgb),
            "calibration_images": 0, "pytorch_recall@1": 100 * recall_at_1(reference, labels),
            "thresholds": thresholds.as_dict(), "rows": [row], "passed": result.passed,
            "preprocess": "the app's (box average, android.box_resize), in PyTorch and in the page"}


def add_browser_rows(report: Dict, data: Optional[str] = None, parity_samples: int = 256,
                     thresholds: Thresholds = Thresholds(), log=lambda _: None) -> None:
    """``mdistill export --browser``: each passed ``.tflite`` and ``.onnx`` row of an export
    ``report`` gated again in the browser, as a row of its own; ``report["passed"]`` then needs them
    too, and the report's JSON beside the files is rewritten with them."""
    from ..utils.io import write_json_atomic

    out = Path(report["out_dir"])
    for row in [r for r in report["rows"] if r["status"] == "passed" and r["format"] in RUNTIMES]:
        done = browser_verify(out / Path(row["file"]).name, data=data, parity_samples=parity_samples,
                              thresholds=thresholds, log=log)
        report["rows"].append(done["rows"][0])
        report["passed"] = report["passed"] and done["passed"]
    if (out / "export_report.json").is_file():
        write_json_atomic(out / "export_report.json", report)
