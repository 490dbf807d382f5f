"""Images as cameras and the web make them: above PIL's decompression-bomb limit, large enough to
cost gigabytes decoded in full, or rotated by their EXIF orientation."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, tiny_train_args

from mobile_distill.data.base import WORKING_SIDE, load_image


def _grey_png(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit greyscale PNG of any size, written row by row (a 14000 x 14000 one is 200 KB
    on disk; building it in PIL would take 196 MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\x00" + bytes(range(256)) * (width // 256) + b"\x80" * (width % 256)  # filter 0, then a gradient
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.slow
def test_an_image_above_the_bomb_limit_is_a_bad_image(shapes_dir, tmp_path):
    bomb = _grey_png(shapes_dir / "class_03" / "huge.png", 14000, 14000)  # 196 M pixels > PIL's 179 M
    proc = run_cli("data", "check", f"folder:{shapes_dir}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"✗ image too large: {bomb}" in proc.stdout and "decompression-bomb limit" in proc.stdout
    # training names it (class_03 is a test class: the end-of-epoch evaluation is where it is read) ...
    proc = run_cli("train", *tiny_train_args(shapes_dir, tmp_path / "runs", epochs=1), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: image too large") and "huge.png" in last and "--skip-bad-images" in last
    # ... and --skip-bad-images skips it like any unreadable image
    proc = run_cli("train", *tiny_train_args(shapes_dir, tmp_path / "runs", epochs=1, name="skip"), "--skip-bad-images")
    assert "skipped 1 unreadable image(s)" in proc.stderr
    assert json.loads((tmp_path / "runs" / "skip" / "results.json").read_text())["data"]["test_images"] == 24  # 4 classes x 6, the bomb dropped


# VmHWM, not ru_maxrss: the latter keeps the peak of the forked parent (pytest, ~700 MB) across exec
PEAK = """
import re, sys
from pathlib import Path
from mobile_distill.data.base import load_image
img = load_image(sys.argv[1])
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(img.size[0], img.size[1], img.mode, peak_kb // 1024)
"""


def _load_in_child(path: Path):
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True)
    width, height, mode, peak_mb = out.stdout.split()
    return int(width), int(height), mode, int(peak_mb)


def test_large_images_are_decoded_at_a_reduced_size(tmp_path):
    # 12000 x 12000: over PIL's warning limit (89 M pixels), under its error limit
    png = _grey_png(tmp_path / "big.png", 12000, 12000)
    width, height, mode, peak_mb = _load_in_child(png)
    assert (width, height, mode) == (1091, 1091, "RGB")  # reduced 11x (the last box partial): short side >= WORKING_SIDE
    assert min(width, height) >= WORKING_SIDE
    # decoding the PNG itself takes 144 MB; converting it in full to RGB took 432 MB more
    assert peak_mb < 400, peak_mb
    jpeg = tmp_path / "big.jpg"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (12000, 47))[:, :12000]).save(jpeg, quality=50)
    width, height, mode, peak_mb = _load_in_child(jpeg)
    assert (width, height) == (1500, 1500)  # the JPEG decoder's own 1/8 scale: never 144 MB in memory
    assert peak_mb < 120, peak_mb
    # a small image is decoded as it always was, pixel for pixel
    small = tmp_path / "small.png"
    Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint32).reshape(48, 64, 3).astype(np.uint8)).save(small)
    assert np.array_equal(np.asarray(load_image(small)), np.asarray(Image.open(small).convert("RGB")))


def test_exif_orientation_is_applied(tmp_path):
    """A phone stores a portrait photo as landscape pixels plus EXIF orientation 6 (rotate 90°
    clockwise to display): the model must see it upright, as the phone's gallery shows it."""
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :8] = 255  # a white band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    upright = np.asarray(load_image(path))
    assert upright.shape == (64, 32, 3)  # displayed portrait
    assert upright[:8].mean() > 200 and upright[-8:].mean() < 50  # the left edge is now the top
