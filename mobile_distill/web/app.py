"""``mdistill web``'s static app: the page (``static/``), the browser runtimes from npm (LiteRT.js
for the ``.tflite``, ONNX Runtime Web for the ``.onnx``), the export's files and, with a gallery,
its embeddings and thumbnails. Everything the page loads lies in the folder: it can be served from
anywhere (our server, any static host) with no network at run time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, Optional

from ..errors import MdistillError
from ..utils.io import write_json_atomic

STATIC = Path(__file__).with_name("static")
RUNTIMES = {"tflite": "litert", "onnx": "onnx"}
# What the page loads from each npm package (node_modules path -> path under vendor/). LiteRT.js
# picks its wasm build at run time (threads, JSPI), so all of them go; ONNX Runtime Web needs its
# plain build for WebAssembly and the asyncify one for WebGPU.
VENDOR = {
    "@litertjs/core/dist/index.js": "litertjs/core/index.js",
    "@litertjs/core/wasm": "litertjs/wasm",
    "@litertjs/wasm-utils/dist/bundle.js": "litertjs/wasm-utils/bundle.js",
    "onnxruntime-web/dist/ort.wasm.min.mjs": "onnxruntime-web/ort.wasm.min.mjs",
    "onnxruntime-web/dist/ort.webgpu.min.mjs": "onnxruntime-web/ort.webgpu.min.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs": "onnxruntime-web/ort-wasm-simd-threaded.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm": "onnxruntime-web/ort-wasm-simd-threaded.wasm",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.mjs": "onnxruntime-web/ort-wasm-simd-threaded.asyncify.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm": "onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm",
    "@litertjs/core/package.json": "litertjs/package.json",
    "onnxruntime-web/package.json": "onnxruntime-web/package.json",
}


class WebError(MdistillError):
    """A web app that cannot be written, served or driven."""


def node_modules() -> Path:
    """The npm packages ``make setup`` installed (package.json at the repository root), or
    ``$MDISTILL_NODE_MODULES``."""
    where = Path(os.environ.get("MDISTILL_NODE_MODULES") or Path(__file__).resolve().parents[2] / "node_modules")
    missing = [src for src in VENDOR if not (where / src).exists()]
    if missing:
        raise WebError(f"the browser runtimes are not installed ({where / missing[0]} is missing): run `make setup` "
                       "or `npm ci` in the repository (package.json), or set MDISTILL_NODE_MODULES")
    return where


def _place(src: Path, dst: Path, link: bool = False) -> None:
    """A copy; with ``link``, a hard link where the file system allows it (the npm runtimes, ~80 MB
    per app, which nobody edits: a page or model file someone edits in the app must not change
    the installed one)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        if link:
            os.link(src, dst)
            return
    except OSError:
        pass
    shutil.copyfile(src, dst)


def _vendor(src: Path, dst: Path) -> None:
    if src.is_dir():
        for f in sorted(src.iterdir()):
            _vendor(f, dst / f.name)
    else:
        _place(src, dst, link=True)


def write_app(export_dir: str | Path, out: Optional[str | Path] = None, gallery: Optional[str] = None,
              gallery_model: str = "student", gallery_limit: Optional[int] = None) -> Dict:
    """Write the web app for ``export_dir`` (a ``mdistill export`` folder) into ``out`` (default:
    ``EXPORT_DIR/web``).

    Args:
        gallery: a data set spec or folder of images to search (``mdistill export --android``'s
            ``--gallery``); embedded by the float32 TFLite file on the page's own preprocessing,
            or, with ``gallery_model="teacher"`` (a compatible student), by its teacher.

    Returns:
        ``{"app": folder, "artifacts": [...], "gallery": info or None}``.
    """
    export_dir = Path(export_dir)
    card_path = export_dir / "model.json"
    if not card_path.is_file():
        raise WebError(f"{export_dir} holds no model.json: give the folder `mdistill export` wrote")
    card = json.loads(card_path.read_text())
    artifacts = [a for a in card.get("artifacts", []) if a["format"] in RUNTIMES and (export_dir / a["file"]).is_file()]
    if not artifacts:
        raise WebError(f"{export_dir} holds no .tflite or .onnx file that passed the export: "
                       "run mdistill export --format tflite (or onnx) first")
    vendor = node_modules()
    out = Path(out) if out else export_dir / "web"
    out.mkdir(parents=True, exist_ok=True)
    for f in STATIC.iterdir():
        _place(f, out / f.name)
    for src, dst in VENDOR.items():
        _vendor(vendor / src, out / "vendor" / dst)
    for a in artifacts:
        _place(export_dir / a["file"], out / a["file"])
    info = None
    if gallery:
        from ..export.android import write_gallery

        info = write_gallery(export_dir, out / "gallery", gallery, limit=gallery_limit, gallery_model=gallery_model)
    # float32 first: the page's default file of each runtime
    order = sorted(artifacts, key=lambda a: (a["precision"] != "float32", a["precision"]))
    write_json_atomic(out / "app.json", {
        "image_size": int(card["model"]["image_size"]),
        "model": {k: card["model"].get(k) for k in ("architecture", "embedding_dim", "image_size", "teacher_index")},
        "artifacts": [{"format": a["format"], "runtime": RUNTIMES[a["format"]], "precision": a["precision"],
                       "file": a["file"], "input": a["input"], "size_bytes": (export_dir / a["file"]).stat().st_size}
                      for a in order],
        "gallery": "gallery/gallery.json" if gallery else None,
    })
    if gallery:  # the page resolves the gallery's files from the app's root
        doc = json.loads((out / "gallery" / "gallery.json").read_text())
        doc["embeddings"] = "gallery/gallery_embeddings.f32"
        for item in doc["items"]:
            item["image"] = "gallery/" + item["image"]
        write_json_atomic(out / "gallery" / "gallery.json", doc)
    return {"app": str(out), "artifacts": [a["file"] for a in order], "gallery": info}
