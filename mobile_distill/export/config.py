"""What an export does, in two frozen dataclasses: ``ExportConfig`` (every setting of ``export()``) and
``Thresholds`` (the parity gate's). ``mdistill export`` and ``mdistill verify`` generate their flags
from these fields (``cli_options.py``), so every default and its help text live here only.

No torch here: the CLI builds its options from this module at import time, and ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Mapping, Optional, Sequence, Tuple

from ..errors import ExportError
from ..utils.settings import changed

_DROP_HELP = "Recall@1 points, symmetric and asymmetric (exported queries, PyTorch gallery)."
_AGREE_HELP = "Fraction of queries whose nearest neighbour is PyTorch's, up to --agreement-eps."


@dataclass(frozen=True)
class Thresholds:
    """Gate thresholds; every one is settable from the CLI. Recall drops are in points (percent),
    and gate both the symmetric and the asymmetric Recall@1."""

    float32_cos_min: float = field(default=0.9999, metadata={
        "flag": "--min-cos-fp32", "help": "float32 gates on the per-image cosine to PyTorch alone."})
    float16_cos_min: float = field(default=0.99, metadata={  # a floor for broken conversions; fp16 gates on user loss
        "flag": "--min-cos-fp16",
        "help": "A floor that catches broken float16 conversions (float16 gates on the figures below)."})
    float16_recall_drop: float = field(default=0.5, metadata={"flag": "--max-fp16-recall-drop", "help": _DROP_HELP})
    float16_top1_agreement: float = field(default=0.98, metadata={"flag": "--min-fp16-agreement", "help": _AGREE_HELP})
    int8_recall_drop: float = field(default=1.0, metadata={"flag": "--max-int8-recall-drop", "help": _DROP_HELP})
    int8_top1_agreement: float = field(default=0.90, metadata={"flag": "--min-int8-agreement", "help": _AGREE_HELP})
    agreement_eps: float = field(default=0.01, metadata={  # neighbours closer than this are a tie for the agreement
        "help": "A neighbour that PyTorch scores within this cosine of its own nearest counts as agreeing."})
    # Mean pairwise cosine of embeddings of different images above this = a collapsed model.
    degenerate_cos: float = field(default=0.999, metadata={"cli": False})

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)

    def with_margin(self, fraction: float = 0.5) -> "Thresholds":
        """The same gate allowing only ``fraction`` of each loss: what a search on training images
        aims for, so that its choice still passes on the held-out test images."""
        return replace(self, float16_recall_drop=fraction * self.float16_recall_drop,
                       float16_top1_agreement=1 - fraction * (1 - self.float16_top1_agreement),
                       int8_recall_drop=fraction * self.int8_recall_drop,
                       int8_top1_agreement=1 - fraction * (1 - self.int8_top1_agreement))


@dataclass(frozen=True)
class ExportConfig:
    """Every setting of ``export()``; ``export(checkpoint, config, **changes)`` applies ``changes`` on top.

    ``precisions`` takes a mapping (``{"tflite": ["int8"]}``) or ``FORMAT:PRECISION`` strings."""

    formats: Tuple[str, ...] = field(default=("all",), metadata={
        "flag": "--format", "help": "onnx, tflite, coreml, executorch or all (repeat or comma-separate)."})
    out_dir: Optional[str] = field(default=None, metadata={
        "flag": "--out", "path": True, "help": "Output folder (default: export/ beside the checkpoint)."})
    precisions: Optional[Mapping[str, Sequence[str]]] = field(default=None, metadata={
        "flag": "--precision", "multiple": True,
        "help": "FORMAT:PRECISION, e.g. tflite:int8 (repeatable; default: every precision of each format)."})
    input_layout: Optional[str] = field(default=None, metadata={
        "choices": ("nhwc", "nchw"),
        "help": "Input layout for every format (default: NHWC for TFLite, NCHW for ONNX, CoreML and ExecuTorch)."})
    input_dtype: str = field(default="float32", metadata={
        "choices": ("float32", "uint8"),
        "help": "float32 RGB in [0, 1], or uint8 0-255 camera bytes (CoreML stays float32)."})
    parity_samples: int = field(default=256, metadata={
        "help": "Test images the parity gate runs on (whole classes; 0 = the whole test split)."})
    calib_samples: int = field(default=256, metadata={"help": "Training images for static int8 calibration."})
    teacher_gallery: str = field(default="auto", metadata={
        "help": "Also gate each file's queries against a teacher-embedded gallery of the gate's images (the "
                "server's index): auto = the student's own teacher when it was trained with --compatible; off; "
                "or the model that embeds your index (checkpoint, timm:NAME, tv:NAME, py:..., FILE.onnx)."})
    keep_failed: bool = field(default=False, metadata={
        "help": "Move files that fail the gate to OUT/failed/ instead of deleting them."})
    calibration: str = field(default="minmax", metadata={
        "choices": ("minmax", "mse", "octav"),
        "help": "TFLite quantisation ranges: min-max, or weights clipped by least squared error / OCTAV."})
    mixed_precision: bool = field(default=True, metadata={
        "help": "Retry a quantised TFLite file that fails the gate with its most sensitive ops in float "
                "(chosen on training images)."})
    data: Optional[str] = field(default=None, metadata={
        "help": "Data set for parity/calibration images (default: the checkpoint's)."})
    name: str = field(default="student", metadata={"help": "File stem: NAME_float32.tflite, ..."})
    seed: int = field(default=0, metadata={"help": "Seed of the choice of parity and calibration images."})
    thresholds: Thresholds = field(default_factory=Thresholds, metadata={"cli": False})
    # The CLI prints the table first, then fails; a caller that wants the report of a failed export
    # (the demo prints it) passes False.
    raise_on_failure: bool = field(default=True, metadata={"cli": False})

    def __post_init__(self):
        if isinstance(self.formats, str):
            object.__setattr__(self, "formats", (self.formats,))
        object.__setattr__(self, "formats", tuple(self.formats))
        if self.precisions is not None and not isinstance(self.precisions, Mapping):
            object.__setattr__(self, "precisions", parse_precisions(self.precisions))
        if self.out_dir is not None:
            object.__setattr__(self, "out_dir", str(self.out_dir))


def parse_precisions(items: Sequence[str]) -> Optional[Dict[str, list]]:
    """``["tflite:int8", "onnx:float32"]`` -> ``{"tflite": ["int8"], "onnx": ["float32"]}``."""
    wanted: Dict[str, list] = {}
    for item in items:
        fmt, sep, prec = str(item).partition(":")
        if not sep or not prec:
            raise ExportError(f"--precision {item!r}: use FORMAT:PRECISION, e.g. tflite:int8")
        wanted.setdefault(fmt.strip().lower(), []).append(prec.strip().lower())
    return wanted or None


def export_config(config: Optional[ExportConfig] = None, **changes) -> ExportConfig:
    """``config`` (default: the defaults) with ``changes``; an unknown name is a one-line error."""
    return changed(config or ExportConfig(), changes, ExportError, "export()")
