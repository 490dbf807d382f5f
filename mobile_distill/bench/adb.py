"""Run the benchmark on an Android phone through ``adb`` and the demo app's benchmark mode.

The protocol (the Android demo implements the device side):

1. ``adb [-s SERIAL] get-state`` must print ``device``; ``adb shell pm list packages PACKAGE``
   must list the demo app.
2. Push into ``DEVICE_DIR`` (the app's own external files folder, which it reads without any
   permission): ``model.tflite`` (the float32 TFLite export), ``model.json`` (the model card
   and that file's entry), ``images.u8`` (the test images, raw N x H x W x 3 uint8 RGB) and
   ``images.json`` (``{"count", "height", "width", "channels", "layout": "NHWC", "dtype": "uint8"}``).
3. ``adb shell am start -W -n PACKAGE/.MainActivity --es mdistill.mode benchmark --es mdistill.dir
   DEVICE_DIR --ei mdistill.warmup W --ei mdistill.runs R --ei mdistill.threads T``.
4. The app embeds every image (feeding them as model.json's input says), times ``runs``
   single-image inferences after ``warmup``, and writes ``result.json``
   (``{"latency_ms": [...], "count", "embedding_dim", "threads", "device": {...}}``),
   ``embeddings.f32`` (raw little-endian float32, count x D, in image order) and, last, an empty
   ``done``. On failure it writes ``error.txt`` and then ``done``. The host polls for ``done``,
   pulls the files (or the error) and removes the folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..runtime.spec import device_result_problems

PACKAGE = "com.mobile_distill.demo"
ACTIVITY = f"{PACKAGE}/.MainActivity"
DEVICE_DIR = f"/sdcard/Android/data/{PACKAGE}/files/bench"


class Adb:
    def __init__(self, executable: str = "adb", serial: Optional[str] = None, timeout: float = 120):
        from ..errors import BenchError

        path = shutil.which(executable)
        if path is None:
            raise BenchError(f"adb not found ({executable!r} is not on PATH): install Android platform-tools "
                             "and connect a phone with USB debugging")
        self.base = [path] + (["-s", serial] if serial else [])
        self.timeout = timeout

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        from ..errors import BenchError

        try:
            proc = subprocess.run(self.base + list(args), capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"adb {' '.join(args[:2])} did not answer in {self.timeout:.0f} s") from None
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise BenchError(f"adb {' '.join(args[:2])} failed: {msg[-1] if msg else proc.returncode}")
        return proc


def check_device(adb: Adb) -> str:
    """The device model name; clear errors for no device and a missing app."""
    from ..errors import BenchError

    state = adb("get-state", check=False)
    if state.returncode != 0 or state.stdout.strip() != "device":
        why = (state.stderr or state.stdout).strip().splitlines()
        raise BenchError(f"no Android device ready ({why[-1] if why else 'adb get-state failed'}): connect a phone "
                         "with USB debugging enabled, or pass --adb SERIAL (see `adb devices`)")
    listed = adb("shell", "pm", "list", "packages", PACKAGE).stdout.split()
    if f"package:{PACKAGE}" not in listed:
        raise BenchError(f"the demo app {PACKAGE} is not installed on the device: build and install "
                         "android_demo (cd android_demo && ./gradlew installDebug)")
    return adb("shell", "getprop", "ro.product.model", check=False).stdout.strip() or "android"


def device_row(executable: str, serial: Optional[str], export_dir: Path, card: Dict, images: np.ndarray,
               out_dir: Path, warmup: int, runs: int, threads: int = 1, poll_timeout: float = 600,
               log: Callable[[str], None] = lambda _: None) -> Dict:
    from ..errors import BenchError

    artifact = next((a for a in card["artifacts"] if a["format"] == "tflite" and a["precision"] == "float32"), None)
    if artifact is None:
        raise BenchError(f"no float32 TFLite file in {export_dir}: export it first (--format tflite)")
    adb = Adb(executable, serial)
    model_name = check_device(adb)
    log(f"benchmarking on {model_name} through adb")
    adb("shell", "rm", "-rf", DEVICE_DIR)
    adb("shell", "mkdir", "-p", DEVICE_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.ascontiguousarray(images, dtype=np.uint8).tofile(tmp / "images.u8")
        n, h, w, c = images.shape
        (tmp / "images.json").write_text(json.dumps({"count": n, "height": h, "width": w, "channels": c,
                                                     "layout": "NHWC", "dtype": "uint8"}))
        (tmp / "model.json").write_text(json.dumps({"model": card["model"], "artifact": artifact}))
        for local, remote in [(export_dir / artifact["file"], "model.tflite"), (tmp / "model.json", "model.json"),
                              (tmp / "images.u8", "images.u8"), (tmp / "images.json", "images.json")]:
            adb("push", str(local), f"{DEVICE_DIR}/{remote}")
        adb("shell", "am", "start", "-W", "-n", ACTIVITY, "--es", "mdistill.mode", "benchmark",
            "--es", "mdistill.dir", DEVICE_DIR, "--ei", "mdistill.warmup", str(warmup),
            "--ei", "mdistill.runs", str(runs), "--ei", "mdistill.threads", str(threads))
        deadline = time.monotonic() + poll_timeout
        while adb("shell", "ls", f"{DEVICE_DIR}/done", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise BenchError(f"the app did not finish the benchmark in {poll_timeout:.0f} s "
                                 f"(no {DEVICE_DIR}/done); is the installed app up to date?")
            time.sleep(0.5)
        if adb("pull", f"{DEVICE_DIR}/result.json", str(tmp / "result.json"), check=False).returncode != 0:
            adb("pull", f"{DEVICE_DIR}/error.txt", str(tmp / "error.txt"), check=False)
            why = (tmp / "error.txt").read_text().strip() if (tmp / "error.txt").is_file() else "no result.json"
            raise BenchError(f"the app's benchmark mode failed on the device: {why[:300]}")
        adb("pull", f"{DEVICE_DIR}/embeddings.f32", str(tmp / "embeddings.f32"))
        adb("shell", "rm", "-rf", DEVICE_DIR, check=False)
        result = json.loads((tmp / "result.json").read_text())
        emb = np.fromfile(tmp / "embeddings.f32", dtype="<f4")
    problems = device_result_problems(result)
    if problems:
        raise BenchError(f"the app's result.json breaks the contract ({'; '.join(problems)}); "
                         "is the installed app up to date?")
    dim = int(result["embedding_dim"])
    if emb.size != n * dim:
        raise BenchError(f"the device returned {emb.size} floats, expected {n} x {dim}")
    emb_file = out_dir / "embeddings" / "device_tflite_float32.npy"
    np.save(emb_file, emb.reshape(n, dim))
    lat = np.array(result["latency_ms"], dtype=np.float64)
    timing: List = [float(np.median(lat)), float(np.percentile(lat, 90)), float(lat.mean())]
    return {
        "format": f"tflite@{model_name}", "precision": "float32", "runtime": "LiteRT on device (adb)",
        "file": artifact["file"], "size_bytes": artifact.get("size_bytes"), "status": "ok",
        "threads": {str(threads): {"median_ms": timing[0], "p90_ms": timing[1], "mean_ms": timing[2],
                                   "throughput": {"images_per_s": 1000 / timing[0], "batch_size": 1}}},
        "device": result.get("device", {}), "_embeddings": emb_file,
        "note": f"measured on {model_name} by the demo app's benchmark mode ({len(lat)} runs)",
    }
