"""Shared fixtures: an isolated cache, and a tiny learnable class-per-folder image set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["skip_guard"]  # any skip outside its allow-list fails the run


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    # Tests never touch the user's cache.
    monkeypatch.setenv("MDISTILL_HOME", str(tmp_path_factory.mktemp("mdistill_home")))
    torch.set_num_threads(1)


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_shapes_dataset(root: Path, n_classes: int = 8, per_class: int = 6, size: int = 32, seed: int = 0,
                        test_per_class: int = 0, style: str = "hue") -> Path:
    """Class-per-folder PNGs: class c = a background of hue c/n_classes (two brightness levels)
    with a square of the opposite hue at a class-specific position, plus pixel noise.

    The hues are spread evenly and the folder layout splits classes alternately, so the unseen
    test classes lie between the training classes: a tiny network learns features (colour, layout)
    that carry over to them in a few dozen steps, on any CPU's rounding (random palettes put two
    test classes at nearly the same colour, and how a seconds-trained net told them apart varied
    from CPU to CPU). With ``test_per_class`` > 0 the layout is ``train/<class>`` +
    ``test/<class>`` instead: the same classes in both splits, the test images new draws of them.
    ``style="squares"``: the first design, a square of a random colour on dark noise (the
    background, shared by all classes, dominates a batch's statistics).
    """
    import colorsys

    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 255, size=(n_classes, 3)) if style == "squares" else None
    for c in range(n_classes):
        hue = c / n_classes
        background = 255 * np.array(colorsys.hsv_to_rgb(hue, 0.7, 0.9 if c % 4 < 2 else 0.55))
        square = 255 * np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1, 1.0, 1.0))
        s = size // 3
        y, x = (c * 7) % (size - s), (c * 11) % (size - s)
        splits = {"": per_class} if not test_per_class else {"train": per_class, "test": test_per_class}
        for split, count in splits.items():
            d = root / split / f"class_{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                if style == "squares":
                    img = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8)
                    img[y:y + s, x:x + s] = palette[c]
                else:
                    img = background + rng.normal(0, 12, size=(size, size, 3))
                    img[y:y + s, x:x + s] = square + rng.normal(0, 12, size=(s, s, 3))
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(d / f"img_{i}.png")
    return root


def train_tiny_student(root: Path, model: str = "resnet18", **overrides) -> Path:
    """A student trained for seconds on 8 shapes classes whose test split holds new images of the
    same classes (32 test images): real BatchNorm statistics and, for resnet18, well-separated
    embeddings (the nearest other class at least ~0.2 cosine below a query's own class, on Intel
    AVX-512, AVX2 and scalar kernels alike), so a quantised file's rounding cannot flip a neighbour
    by luck of the CPU. ``overrides`` change the config (fewer epochs for a big architecture).
    Returns the checkpoint path."""
    from mobile_distill.config import make_config
    from mobile_distill.train import main

    data = make_shapes_dataset(root / "shapes", n_classes=8, per_class=4, test_per_class=4)
    settings = dict(data=f"folder:{data}", out_dir=str(root / "runs"), name="tiny", model=model,
                    pretrained="none", embedding_dim=32, image_size=32, epochs=6, classes_per_batch=4,
                    images_per_class=4, batches_per_epoch=8, lr=1e-3, backbone_lr=1e-3, eval_every=0,
                    loss="multi_similarity")
    cfg = make_config(**{**settings, **overrides})
    main(cfg, progress=False)
    return root / "runs" / "tiny" / "last.pt"


def tiny_trained(root, arch):
    """Two training steps, then BatchNorm statistics measured on the training images: seconds of
    training leave some architectures' running statistics near their initial values (torchvision's
    MobileNetV3 uses momentum 0.01), whose embeddings the export rightly refuses as degenerate."""
    from mobile_distill.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from mobile_distill.data import create_dataset
    from mobile_distill.runtime.images import load_images

    path = train_tiny_student(root, model=arch, epochs=1, batches_per_epoch=2, embedding_dim=16)
    ckpt = load_checkpoint(path)
    net = model_from_checkpoint(ckpt)
    data = create_dataset(ckpt["config"]["data"], progress=False)
    x = torch.from_numpy(load_images(data.train, 32, data.name)).permute(0, 3, 1, 2).float().div(255)
    for bn in net.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the passes
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(x)
    save_checkpoint(path, {**ckpt, "state_dict": net.state_dict()})
    return path


@pytest.fixture
def shapes_dir(tmp_path) -> Path:
    return make_shapes_dataset(tmp_path / "shapes")


def tiny_train_args(data_dir: Path, out_dir: Path, **extra) -> list:
    """CLI flags for a seconds-long CPU training run on the shapes set."""
    args = {
        "data": f"folder:{data_dir}", "out-dir": str(out_dir), "name": "tiny", "model": "mobilenet_v1_025",
        "pretrained": "none", "embedding-dim": 16, "image-size": 32, "loss": "triplet", "mining": "all",
        "margin": 0.2, "epochs": 3, "classes-per-batch": 4, "images-per-class": 3, "batches-per-epoch": 4,
        "lr": 1e-2, "backbone-lr": 1e-2, "eval-every": 0, "eval-batch-size": 16,
    }
    args.update(extra)
    return [x for k, v in args.items() for x in (f"--{k}", str(v))]


def run_cli(*args, check=True, timeout=300, env=None):
    """Run ``mdistill`` in a subprocess (real exit codes and stderr, as a user sees them)."""
    import subprocess

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "mobile_distill.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"mdistill {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_cli_with_mount(mount: Path, *args, size_kb: int = 64, read_only: bool = False, timeout=300):
    """Run ``mdistill ARGS`` with a fresh tmpfs of ``size_kb`` mounted at ``mount`` (read-only if
    asked): a real full disk or read-only file system, not a mock. The mount lives in a private
    mount namespace of the command (``unshare``), so it needs no root on the host and vanishes with
    the process."""
    import subprocess

    mount.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    script = f'mount -t tmpfs -o {options} tmpfs "$1" || exit 99; shift; exec "$@"'
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mount),
                           sys.executable, "-m", "mobile_distill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 99, f"could not mount a tmpfs in a private namespace: {proc.stderr[-500:]}"
    return proc


def run_killed_then_resumed(args: list, last_pt: Path, kill_after_epoch: int, timeout: float = 240):
    """Start ``mdistill train ARGS``, SIGKILL it as soon as the checkpoint of epoch
    ``kill_after_epoch`` is on disk (so inside a later epoch), resume it, and check that the resumed
    run starts at the epoch after the checkpoint it was killed with and runs to the end: a resume
    that silently restarted from epoch 0 would give the same final weights. Returns that epoch."""
    import signal
    import subprocess
    import tempfile
    import time

    from mobile_distill.checkpoint import load_checkpoint

    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe that nobody drains
        proc = subprocess.Popen([sys.executable, "-m", "mobile_distill.cli", "train", "--quiet", *map(str, args)],
                                cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if last_pt.exists() and load_checkpoint(last_pt)["epoch"] >= kill_after_epoch:  # written atomically
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stderr.seek(0)
        log = stderr.read().decode(errors="replace")[-2000:]
    assert last_pt.exists(), f"no checkpoint before the kill:\n{log}"
    ckpt = load_checkpoint(last_pt)
    killed_at, total = ckpt["epoch"], ckpt["config"]["epochs"]
    assert kill_after_epoch <= killed_at < total, f"killed at epoch {killed_at} of {total}: make the run longer\n{log}"
    resumed = run_cli("train", "--resume", last_pt)
    epochs = [int(line.split()[1].split("/")[0]) for line in resumed.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == list(range(killed_at + 1, total + 1)), (killed_at, resumed.stdout[-1500:])
    return killed_at


# Lines the Android tests want on the console even when they pass (CI reads "N passed, N failed").
# A test records one with ``record_property("terminal_line", ...)``; the report carries it to the
# process that prints the summary (the controller, under pytest-xdist).
TERMINAL_LINES: list = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        TERMINAL_LINES.extend(value for key, value in report.user_properties if key == "terminal_line")


def pytest_terminal_summary(terminalreporter):
    for line in TERMINAL_LINES:
        terminalreporter.write_line(line)
