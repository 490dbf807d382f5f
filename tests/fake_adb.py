"""A stand-in ``adb`` for tests: plays a phone with the demo app installed.

Device storage is a folder ($FAKE_ADB_ROOT). ``am start ... --es mdistill.mode benchmark`` runs
the pushed .tflite with the LiteRT interpreter over the pushed images and writes the files the
real app writes (see mobile_distill/bench/adb.py). $FAKE_ADB_STATE=offline plays "no device",
$FAKE_ADB_NO_APP=1 plays "app not installed". Every call is appended to $FAKE_ADB_ROOT/calls.log.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(os.environ["FAKE_ADB_ROOT"])
PACKAGE = "com.mobile_distill.demo"


def local(remote: str) -> Path:
    return ROOT / "fs" / remote.lstrip("/")


def benchmark(extras):
    from ai_edge_litert.interpreter import Interpreter

    d = local(extras["mdistill.dir"])
    meta = json.loads((d / "images.json").read_text())
    images = np.fromfile(d / "images.u8", dtype=np.uint8).reshape(meta["count"], meta["height"], meta["width"], 3)
    artifact = json.loads((d / "model.json").read_text())["artifact"]
    interp = Interpreter(model_path=str(d / "model.tflite"), num_threads=int(extras["mdistill.threads"]))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(img):
        x = img[None] if artifact["input"]["dtype"] == "uint8" else img[None].astype(np.float32) / np.float32(255)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])[0]

    emb = np.stack([run(img) for img in images]).astype("<f4")
    for i in range(int(extras["mdistill.warmup"])):
        run(images[i % len(images)])
    latency = []
    for i in range(int(extras["mdistill.runs"])):
        start = time.perf_counter()
        run(images[i % len(images)])
        latency.append((time.perf_counter() - start) * 1e3)
    emb.tofile(d / "embeddings.f32")
    result = {"latency_ms": latency, "count": len(images), "embedding_dim": emb.shape[1],
              "threads": int(extras["mdistill.threads"]), "device": {"model": "FakePhone", "android": "14", "abi": "x86_64"}}
    result.pop(os.environ.get("FAKE_ADB_DROP_FIELD", ""), None)  # an out-of-date app
    (d / "result.json").write_text(json.dumps(result))
    (d / "done").touch()


def main(args):
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / "calls.log", "a") as f:
        f.write(" ".join(args) + "\n")
    if args[:1] == ["-s"]:
        args = args[2:]
    if os.environ.get("FAKE_ADB_STATE") == "offline":
        print("error: no devices/emulators found", file=sys.stderr)
        return 1
    cmd = args[0]
    if cmd == "get-state":
        print("device")
    elif cmd == "push":
        dst = local(args[2])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args[1], dst)
    elif cmd == "pull":
        shutil.copyfile(local(args[1]), args[2])
    elif cmd == "shell":
        sub = args[1:]
        if sub[:3] == ["pm", "list", "packages"]:
            if not os.environ.get("FAKE_ADB_NO_APP"):
                print(f"package:{PACKAGE}")
        elif sub[:2] == ["getprop", "ro.product.model"]:
            print("FakePhone")
        elif sub[:2] == ["rm", "-rf"]:
            shutil.rmtree(local(sub[2]), ignore_errors=True)
        elif sub[:2] == ["mkdir", "-p"]:
            local(sub[2]).mkdir(parents=True, exist_ok=True)
        elif sub[0] == "ls":
            if not local(sub[1]).exists():
                print(f"ls: {sub[1]}: No such file or directory", file=sys.stderr)
                return 1
            print(sub[1])
        elif sub[:2] == ["am", "start"]:
            extras = {sub[i + 1]: sub[i + 2] for i in range(len(sub) - 2) if sub[i] in ("--es", "--ei")}
            if extras.get("mdistill.mode") == "benchmark":
                benchmark(extras)
            print("Status: ok")
        else:
            print(f"fake adb: unsupported shell command {sub}", file=sys.stderr)
            return 1
    else:
        print(f"fake adb: unsupported command {cmd}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
