"""The browser parity gate (``mdistill verify FILE --browser``): the exported file runs in headless
Chromium inside the web app, through the page's own decode, crop, resize and runtime (LiteRT.js for
``.tflite``, ONNX Runtime Web for ``.onnx``), and its embeddings of the gate's test images are
gated against PyTorch with the export gate's thresholds.

PyTorch's reference is computed on the app's preprocessing (``box_resize``, which the page
reproduces byte for byte: the golden test), so the gate measures the browser runtime, not a
difference of resize rules.
"""

from __future__ import annotations

import re
import statistics
import tempfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..export.android import box_resize, load_rgb
from ..export.parity import Thresholds, gate, recall_at_1
from ..export.prepare import embed, pick_parity_samples
from ..export.verify import exported_from, gated_reference
from .app import RUNTIMES, WebError, write_app
from .browser import embed_files, open_page
from .server import serving

RUNTIME_NAMES = {"litert": "LiteRT.js", "onnx": "ONNX Runtime Web"}


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
    ckpt, net, size, _, dataset = gated_reference(checkpoint, data)
    parity = pick_parity_samples(dataset.test, parity_samples, seed)
    labels = np.array([y for _, y in parity])
    rgb = [load_rgb(path, dataset.name) for path, _ in parity]
    reference = embed(net, np.stack([box_resize(x, size) for x in rgb]))
    runtime = RUNTIMES[artifact["format"]]
    row = {"format": artifact["format"], "precision": artifact["precision"], "file": str(file),
           "runtime": f"{RUNTIME_NAMES[runtime]} in Chromium ({backend})", "status": "failed", "failures": [],
           "parity": {}}
    with tempfile.TemporaryDirectory(prefix="mdistill-web-") as tmp:
        app = Path(write_app(file.parent, tmp)["app"])
        from PIL import Image

        (app / "parity").mkdir()
        for i, x in enumerate(rgb):  # lossless and without alpha: the page decodes the same bytes
            Image.fromarray(x).save(app / "parity" / f"{i:05d}.png")
        with serving(app) as (url, _):
            query = f"?runtime={runtime}&precision={artifact['precision']}&backend={backend}&threads={threads}"
            log(f"gating {file.name} in headless Chromium: {url}{query}")
            with open_page(url + query) as page:
                row["browser"] = page.info()
                if row["browser"]["file"] != file.name:
                    raise WebError(f"the page loaded {row['browser']['file']}, not {file.name}")
                got = embed_files(page, [f"parity/{i:05d}.png" for i in range(len(rgb))])
                # LiteRT.js logs its start-up through console.error too: keep the rest
                errors = [e for e in page.errors if not re.match(r"(INFO|WARNING): \[", e)]
                if errors:
                    row["console_errors"] = errors[:5]
    result = gate(reference, got["embeddings"], labels, artifact["precision"], thresholds)
    row["parity"], row["failures"] = result.figures, result.failures
    row["browser_latency_ms"] = statistics.median(got["latency_ms"])
    row["size_bytes"] = file.stat().st_size
    row["status"] = "failed" if row["failures"] else "passed"
    return {"checkpoint": str(checkpoint), "dataset": dataset.name, "parity_images": len(parity),
            "calibration_images": 0, "pytorch_recall@1": 100 * recall_at_1(reference, labels),
            "thresholds": thresholds.as_dict(), "rows": [row], "passed": row["status"] == "passed",
            "preprocess": "the app's (box average, android.box_resize), in PyTorch and in the page"}
