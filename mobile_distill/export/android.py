"""Assets for the Android demo (``mdistill export ... --android DIR --gallery DATA``), and the
host-side twin of the app's preprocessing so that phone and host compute the same bytes.

The preprocessing rule is the one in ``android_demo/core/.../Preprocess.kt``: centre-crop the
largest square, box-average it to the model size with integer arithmetic (mean rounded half up),
then RGB / 255 as float32 (or raw uint8) in the model's layout. The gallery embeddings are
computed with the exported .tflite on exactly those bytes, so the phone and the host agree.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime.spec import DEVICE_RESULT_FIELDS, InputSpec
from ..utils.io import atomic_path, write_json_atomic
from .parity import ExportError

PREPROCESS_RULE = ("centre square crop, box average to the model size (integer mean, half up), RGB / 255 "
                   "float32 or raw uint8 in the model's layout (android_demo/core/.../Preprocess.kt)")


def box_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, bit-identical to ``Preprocess.resize`` in Kotlin."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = rgb[y0:y0 + side, x0:x0 + side].astype(np.int64)
    # 2-D prefix sums: any box sum in four lookups, exact in int64.
    s = np.zeros((side + 1, side + 1, 3), dtype=np.int64)
    s[1:, 1:] = crop.cumsum(0).cumsum(1)
    lo = np.arange(size) * side // size
    hi = np.maximum((np.arange(size) + 1) * side // size, lo + 1)
    ys0, ys1 = lo[:, None], hi[:, None]
    xs0, xs1 = lo[None, :], hi[None, :]
    total = s[ys1, xs1] - s[ys0, xs1] - s[ys1, xs0] + s[ys0, xs0]  # (size, size, 3)
    n = ((ys1 - ys0) * (xs1 - xs0))[..., None]
    return ((2 * total + n) // (2 * n)).astype(np.uint8)


def to_input(rgb: np.ndarray, spec: InputSpec) -> bytes:
    """(size, size, 3) uint8 -> the little-endian input bytes ``Preprocess.toInput`` writes."""
    x = spec.feed(rgb[None])[0]
    return x.astype("<f4").tobytes() if spec.dtype == "float32" else x.astype(np.uint8).tobytes()


def load_rgb(path: str | Path, dataset: str = "") -> np.ndarray:
    from ..data.base import load_image

    return np.asarray(load_image(path, dataset), dtype=np.uint8)


def gallery_samples(spec: str) -> Tuple[List[Tuple[str, str]], str]:
    """``(path, label)`` pairs: a folder of images (label = sub-folder name, else file stem) or a
    data set spec (its test split, labels = class names)."""
    from ..data import create_dataset
    from ..data.folder import list_images

    path = Path(spec)
    if path.is_dir():
        files = [Path(f) for f in list_images(path)]
        return [(str(f), f.parent.name if f.parent != path else f.stem) for f in files], path.name
    data = create_dataset(spec, progress=False)
    return [(p, data.class_names.get(y, str(y))) for p, y in data.test], data.name


def check_assets_dir(assets: Path) -> None:
    """Refuse a path that exists but is not a folder, before anything is written or exported."""
    if Path(assets).exists() and not Path(assets).is_dir():
        raise ExportError(f"--android {assets} is a file, not a folder; give the app's assets folder "
                          "(android_demo/app/src/main/assets) or a new folder")


def check_gallery_model(spec: str, index: Optional[Dict], what: str) -> None:
    """Refuse a teacher-embedded app gallery that the student's queries cannot search: no teacher,
    or a train-time projection (``index``: the card's ``teacher_index``, None without a teacher)."""
    if spec == "student":
        return
    if index is None:
        raise ExportError(f"--gallery-model {spec}: {what} was not distilled from a teacher, so its queries cannot "
                          "search a teacher's index; use --gallery-model student")
    if index.get("query_projection"):
        raise ExportError(f"--gallery-model {spec}: this student meets its teacher through a train-time projection "
                          f"{index['query_projection']}, which the app does not apply; train it with --embedding-dim "
                          "equal to the teacher's, or use --gallery-model student")


def teacher_embedder(export_dir: Path, card: Dict, spec: str):
    """A function (image paths) -> the server's index rows: ``spec`` ("teacher": the student's own
    teacher) embeds each original image at its own size, centred as the student's training
    centred the teacher's targets (``teacher_index`` in the card), so the app's query, the exported
    student's embedding, is scored against it by a plain cosine. Returns (embed, what, centred)."""
    import torch

    from ..asymmetric import bridge_from_index
    from ..teacher_sources import TeacherOptions, load_teacher
    from .prepare import embed, load_images

    index = card["model"].get("teacher_index")
    check_gallery_model(spec, index, f"the model in {export_dir}")
    model = card["model"]["teacher"]["path"] if spec == "teacher" else spec
    source = load_teacher(model, TeacherOptions())
    size = int(source.model.image_size)
    bridge = bridge_from_index(index)

    def rows(paths, dataset_name):
        images = load_images([(p, 0) for p in paths], size, dataset_name)
        return bridge.gallery(torch.from_numpy(embed(source.model, images))).numpy()

    return rows, model, bridge.centre is not None


def write_gallery(export_dir: Path, dest: Path, gallery: str, precision: str = "float32",
                  limit: Optional[int] = None, gallery_model: str = "student") -> Dict:
    """The app's gallery in ``dest``: ``gallery.json``, ``gallery_embeddings.f32`` (count x dim
    little-endian float32) and the thumbnails in ``gallery/``, embedded with the export's
    ``precision`` TFLite file on the app's own preprocessing (``gallery_model="student"``), or as the
    server's index a compatible student searches, with its teacher (``"teacher"``) or another model
    (a spec ``load_teacher`` takes). The Android app and the web app (``mdistill web``) read it."""
    from ..runtime.tflite import TfliteRunner

    card = json.loads((export_dir / "model.json").read_text())
    artifact = tflite_artifact(card, export_dir, precision)
    server = teacher_embedder(export_dir, card, gallery_model) if gallery_model != "student" else None
    samples, source = gallery_samples(gallery)
    samples = samples[:limit] if limit else samples
    dest.mkdir(parents=True, exist_ok=True)
    thumbs = dest / "gallery"
    if thumbs.exists():
        shutil.rmtree(thumbs)
    thumbs.mkdir()
    spec = InputSpec(int(card["model"]["image_size"]), artifact["input"]["layout"].lower(), artifact["input"]["dtype"])
    runner = TfliteRunner(export_dir / artifact["file"], spec, threads=1)
    items, rows = [], []
    from PIL import Image

    for i, (path, label) in enumerate(samples):
        small = box_resize(load_rgb(path, source), spec.image_size)
        name = f"{i:05d}.png"
        Image.fromarray(small).save(thumbs / name)
        if server is None:  # a teacher's gallery is embedded below, from the original images
            rows.append(runner(small[None])[0].astype("<f4"))  # the same bytes as to_input(small, spec)
        items.append({"name": Path(path).stem, "label": label, "image": f"gallery/{name}"})
    embedding = {"kind": "student", "model": artifact["file"], "centred": False}
    if server is not None:
        embed_rows, model, centred = server
        rows = list(embed_rows([path for path, _ in samples], source))
        embedding = {"kind": "teacher", "model": model, "centred": centred}
    with atomic_path(dest / "gallery_embeddings.f32") as tmp:
        np.stack(rows).astype("<f4").tofile(tmp)
    write_json_atomic(dest / "gallery.json", {"count": len(items), "dim": int(rows[0].shape[0]),
                                              "source": source, "embedding": embedding, "items": items})
    what = "student" if server is None else f"teacher {embedding['model']}" + (", centred" if embedding["centred"] else "")
    return {"gallery_images": len(items), "gallery_embedding": what}


def tflite_artifact(card: Dict, export_dir: Path, precision: str) -> Dict:
    artifact = next((a for a in card["artifacts"] if a["format"] == "tflite" and a["precision"] == precision), None)
    if artifact is None:
        raise ExportError(f"no {precision} TFLite file passed the export in {export_dir}; "
                          "the app's gallery needs one (--format tflite)")
    return artifact


def write_android_assets(export_dir: Path, assets: Path, gallery: str, precision: str = "float32",
                         limit: Optional[int] = None, gallery_model: str = "student") -> Dict:
    """Copy the TFLite file + model card into ``assets`` and build the gallery there (``write_gallery``)."""
    check_assets_dir(assets)
    card = json.loads((export_dir / "model.json").read_text())
    artifact = tflite_artifact(card, export_dir, precision)
    info = write_gallery(export_dir, assets, gallery, precision, limit, gallery_model)
    shutil.copyfile(export_dir / artifact["file"], assets / artifact["file"])
    write_json_atomic(assets / "model.json", {"model": card["model"], "artifact": artifact,
                                              "preprocess": PREPROCESS_RULE})
    return {"assets": str(assets), "model": artifact["file"], **info}


def write_golden(out: Path, image_paths: Sequence[str], specs: Sequence[InputSpec], dataset: str = "",
                 swap_rb: bool = False, seed: int = 0) -> None:
    """Fixtures the Kotlin golden tests must reproduce: real images as ARGB, the exact input bytes
    per spec, and a retrieval case with its expected top-k (float64, index order, like Retrieval.kt).

    ``swap_rb`` writes BGR expectations: the harness's own check that a mismatch is caught.
    """
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for i, path in enumerate(image_paths):
        rgb = load_rgb(path, dataset)
        h, w = rgb.shape[:2]
        _argb(rgb).astype("<u4").tofile(out / f"image{i}.argb")
        for j, spec in enumerate(specs):
            small = box_resize(rgb, spec.image_size)
            (out / f"image{i}_spec{j}.bin").write_bytes(to_input(small[..., ::-1] if swap_rb else small, spec))
        cases.append({"argb": f"image{i}.argb", "width": w, "height": h})
    rng = np.random.default_rng(seed)
    orientations = _write_orientation_cases(out, rng)
    query = rng.normal(size=16).astype("<f4")
    gallery = rng.normal(size=(40, 16)).astype("<f4")
    gallery[7] = gallery[3]  # an exact tie: the lower index must come first
    scores = []
    for g in gallery:
        dot = qs = gs = 0.0
        for a, b in zip(query.tolist(), g.tolist()):
            dot += a * b
            qs += a * a
            gs += b * b
        scores.append(dot / (max(math.sqrt(qs), 1e-12) * max(math.sqrt(gs), 1e-12)))
    order = sorted(range(len(gallery)), key=lambda k: (-scores[k], k))[:10]
    query.tofile(out / "query.f32")
    gallery.tofile(out / "gallery.f32")
    json.dump({"images": cases,
               "specs": [{"size": s.image_size, "layout": s.layout.upper(), "dtype": s.dtype.upper()} for s in specs],
               "retrieval": {"dim": 16, "count": 40, "k": 10, "top": order, "scores": [scores[k] for k in order]},
               "orientations": orientations, "result_contract": DEVICE_RESULT_FIELDS},
              open(out / "golden.json", "w"), indent=1)


def _write_orientation_cases(out: Path, rng) -> List[Dict]:
    """A JPEG per EXIF orientation (1..8, a non-square image), its pixels as decoded and as PIL's
    ``ImageOps.exif_transpose`` shows them (what the toolkit's loader embeds): ``Orientation.kt``
    must read the tag and turn the decoded pixels into exactly those."""
    from PIL import Image, ImageOps

    cases = []
    for n in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = n
        Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)).save(out / f"orient{n}.jpg", exif=exif)
        with Image.open(out / f"orient{n}.jpg") as img:
            img.load()
            _argb(np.asarray(img.convert("RGB"))).astype("<u4").tofile(out / f"orient{n}_decoded.argb")
            shown = ImageOps.exif_transpose(img)
        _argb(np.asarray(shown.convert("RGB"))).astype("<u4").tofile(out / f"orient{n}_upright.argb")
        cases.append({"jpeg": f"orient{n}.jpg", "orientation": n, "width": img.width, "height": img.height,
                      "upright_width": shown.width, "upright_height": shown.height})
    return cases


def _argb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) opaque ARGB, as Android's ``Bitmap.getPixels`` gives them."""
    rgb = rgb.astype(np.int64)
    return (0xFF << 24) | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
