"""Every setting of ``bench()``, as a frozen dataclass: ``mdistill bench`` generates its flags from
these fields (``cli_options.py``), so a default and its help text live here only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from ..errors import BenchError
from ..utils.settings import changed


@dataclass(frozen=True)
class BenchConfig:
    data: Optional[str] = field(default=None, metadata={
        "help": "Data set for Recall@K (default: the one in model.json)."})
    threads: Tuple[int, ...] = field(default=(1,), metadata={"int_list": True, "help": "Thread counts, e.g. 1,2."})
    warmup: int = field(default=10, metadata={"help": "Warm-up inferences before timing."})
    runs: int = field(default=100, metadata={"help": "Timed single-image inferences."})
    checkpoint: Optional[str] = field(default=None, metadata={
        "path": True, "help": "PyTorch checkpoint for the eager row (default: the one model.json points to)."})
    min_recall: Optional[float] = field(default=None, metadata={
        "help": "Fail (exit 1) when a format's Recall@1 (%) is below this."})
    out_dir: Optional[str] = field(default=None, metadata={"flag": "--out", "path": True,
                                                           "help": "Default: EXPORT_DIR/bench."})
    anchor: str = field(default="auto", metadata={
        "choices": ("auto", "on", "off"), "help": "Keras-native TFLite anchor (needs TensorFlow; see MDISTILL_KERAS_PYTHON)."})
    allow_modified: bool = field(default=False, metadata={
        "help": "Measure files whose sha256 differs from model.json's (edited after export) instead of failing them."})
    browser: bool = field(default=False, metadata={
        "help": "Also run the .tflite (LiteRT.js) and .onnx (ONNX Runtime Web) files in headless Chromium through "
                "the web app: latency, Recall@1 on the gate's test images, the ratio to the same file on the host."})
    browser_samples: int = field(default=256, metadata={
        "help": "With --browser: test images (whole classes; 0 = all) the page embeds for Recall@1 and the gate."})
    # a phone through adb: the executable ("adb" = from PATH) and the device's serial (--adb [SERIAL])
    adb: Optional[str] = field(default=None, metadata={"cli": False})
    adb_serial: Optional[str] = field(default=None, metadata={"cli": False})
    # The CLI prints the table first, then fails; callers that want a failed run's report pass False.
    raise_on_failure: bool = field(default=True, metadata={"cli": False})

    def __post_init__(self):
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        for name in ("checkpoint", "out_dir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))


def bench_config(config: Optional[BenchConfig] = None, **changes) -> BenchConfig:
    """``config`` (default: the defaults) with ``changes``; an unknown name is a one-line error."""
    return changed(config or BenchConfig(), changes, BenchError, "bench()")
