"""Tiny data sets in the exact official on-disk layouts, archives, and a local HTTP server.

Shared by tests/test_data_layouts.py and tests/test_archive.py (not a conftest: fixtures here are
plain functions so that each test says what it builds).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import tarfile
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple, Union

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: int = 8) -> Path:
    """A random-noise image (noise: so that archives do not compress to nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def make_cub(parent: Path, n_classes: int = 6, per_class: int = 3) -> Path:
    """``parent/CUB_200_2011`` as the official archive unpacks; returns that folder."""
    root = parent / "CUB_200_2011"
    root.mkdir(parents=True)
    images, labels, classes = [], [], []
    image_id = 0
    for c in range(1, n_classes + 1):
        cls_dir = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cls_dir}")
        for k in range(per_class):
            image_id += 1
            rel = f"{cls_dir}/Bird_{c}_{k:04d}_{image_id}.jpg"
            write_image(root / "images" / rel, image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def make_cars(root: Path, n_classes: int = 6, per_class: int = 3) -> Path:
    """``root/cars_annos.mat`` + ``root/car_ims/*.jpg`` with the original struct's fields."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    dtype = [(f, object) for f in ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")]
    n = n_classes * per_class
    annos = np.zeros((1, n), dtype=dtype)
    for i in range(n):
        rel = f"car_ims/{i + 1:06d}.jpg"
        write_image(root / rel, 1000 + i)
        cls = i % n_classes + 1  # interleaved, as the real file is not sorted by class
        annos[0, i] = (rel, np.uint8(1), np.uint8(1), np.uint8(7), np.uint8(7), np.uint8(cls), np.uint8(i % 2))
    class_names = np.empty((1, n_classes), dtype=object)
    for c in range(n_classes):
        class_names[0, c] = f"Make Model {c + 1} 2012"
    savemat(root / "cars_annos.mat", {"annotations": annos, "class_names": class_names})
    return root


def make_sop(parent: Path, n_train: int = 4, n_test: int = 4, per_class: int = 2) -> Path:
    """``parent/Stanford_Online_Products`` with Ebay_train.txt / Ebay_test.txt; returns that folder."""
    root = parent / "Stanford_Online_Products"
    root.mkdir(parents=True)
    header = "image_id class_id super_class_id path\n"
    rows = {"train": [], "test": []}
    image_id = 0
    for class_id in range(1, n_train + n_test + 1):
        split = "train" if class_id <= n_train else "test"
        super_id, category = (1, "bicycle") if class_id % 2 else (2, "chair")
        for k in range(per_class):
            image_id += 1
            rel = f"{category}_final/{111000 + class_id}_{k}.JPG"
            write_image(root / rel, 2000 + image_id)
            rows[split].append(f"{image_id} {class_id} {super_id} {rel}")
    for split, lines in rows.items():
        (root / f"Ebay_{split}.txt").write_text(header + "\n".join(lines) + "\n")
    return root


def make_tgz(src: Path, out: Path, arcname: str | None = None) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src, arcname=arcname or src.name)
    return out


def evil_tar(out: Path, *members: tarfile.TarInfo, data: bytes = b"evil") -> Path:
    """A .tgz holding one harmless file and then ``members`` (regular ones get ``data``)."""
    with tarfile.open(out, "w:gz") as tar:
        ok = tarfile.TarInfo("pkg/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        for member in members:
            member.size = len(data) if member.isfile() else 0
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return out


# path -> body, or (body, handler) where handler(request_handler, body) writes the response.
Route = Union[bytes, Tuple[bytes, Callable]]


def truncated_response(handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
    """Promise the whole body, send half, hang up: an interrupted download."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body[: len(body) // 2])
    handler.wfile.flush()
    handler.close_connection = True


@contextlib.contextmanager
def serve(routes: Dict[str, Route]) -> Iterator[str]:
    """Serve ``routes`` on 127.0.0.1 (a free port); yields the base URL. Unknown paths get 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            route = routes.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404, "Not Found")
                return
            body, write = route if isinstance(route, tuple) else (route, None)
            if write is not None:
                write(self, body)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval: shutdown() waits for it, and the default (0.5 s) dominates test time.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
