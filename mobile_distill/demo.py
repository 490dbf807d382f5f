"""The README's main job on the embedded default: emoji data -> fine-tuned EfficientNet-Lite0
teacher -> MobileNet-0.25 student trained alone and distilled from the teacher, on the same
schedule, with Recall@K on the unseen test classes beside the untuned ImageNet features of the
teacher's backbone, the share of the teacher-student gap that distillation closes, and the
asymmetric column (student queries against a teacher-embedded gallery); then the distilled
student is exported to ONNX, TFLite and CoreML and gated on parity.

The demo runs the built-in recipes on a shorter schedule (``DEMO_TEACHER`` / ``DEMO_STUDENT``)
so that it finishes in about a quarter of an hour on two CPU cores; ``benchmarks/distill_table.py``
runs the recipes' own, longer schedules.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Dict, Optional

from .config import load_yaml, make_config
from .data import emoji
from .errors import MdistillError
from .evaluate import format_comparison, gap_closure
from .train import main as train
from .utils.io import write_json_atomic
from .utils.provenance import provenance

# The demo's schedules (the recipes' own epochs are for the distillation table).
DEMO_TEACHER = {"epochs": 2}
DEMO_STUDENT = {"epochs": 12, "cache_views": 3}
# The student alone trains at its own best learning rate, not the distillation recipe's: on the
# table's 80-epoch schedule 2e-3 gives MobileNet-0.25 22.8 Recall@1 and 5e-3 16.3 (seed 0).
ALONE_LR = 2e-3
COLUMNS = {"cross/mean/recall@1": "cross-vendor R@1", "asymmetric/recall@1": "asym R@1"}


def run(out_dir: str = "runs", progress: bool = True, teacher_overrides: Optional[Dict] = None,
        student_overrides: Optional[Dict] = None, export_formats=("all",), data: str = "") -> str:
    """Fetch, train teacher and students, evaluate; returns the comparison table.

    Args:
        out_dir: where the three runs and ``demo.json`` (all figures) go.
        data: a data set spec (``folder:PATH``, ``cub``, ...) in place of the recipes' emoji.
        teacher_overrides, student_overrides: config fields replacing those of the built-in
            ``teacher_emoji`` / ``student_emoji`` recipes and the demo schedule (e.g. another data set).
        export_formats: formats the distilled student is exported to (empty: no export).
    """
    start = time.perf_counter()
    if data:
        teacher_overrides, student_overrides = {"data": data, **(teacher_overrides or {})}, {"data": data, **(student_overrides or {})}
    teacher_cfg = make_config({**load_yaml("teacher_emoji"), **DEMO_TEACHER, **(teacher_overrides or {})},
                              out_dir=out_dir)
    if teacher_cfg.data == "emoji":
        emoji.fetch(progress=progress)
    teacher = train(teacher_cfg, progress=progress)  # reports the untuned features beside itself
    student_cfg = make_config({**load_yaml("student_emoji"), **DEMO_STUDENT, **(student_overrides or {})},
                              out_dir=out_dir, teacher=str(Path(teacher["run_dir"]) / "last.pt"))
    # The same recipe and schedule without the teacher: what distillation is measured against.
    alone_cfg = dataclasses.replace(student_cfg, name="student-alone", teacher="", distill=(), teacher_view="augmented",
                                    teacher_cache=False, unlabeled="", teacher_image_size=0, loss=_alone_loss(student_cfg),
                                    lr=ALONE_LR, backbone_lr=ALONE_LR)
    alone = train(alone_cfg, progress=progress)
    distilled = train(student_cfg, progress=progress)
    s = student_cfg.model
    rows = {}
    if teacher.get("untuned"):
        rows[f"{teacher_cfg.model} {teacher_cfg.pretrained} features, untuned"] = teacher["untuned"]
    rows.update({
        f"{teacher_cfg.model} teacher (fine-tuned)": teacher["test"],
        f"{s} student alone ({alone_cfg.loss})": alone["test"],
        f"{s} student distilled ({' + '.join(student_cfg.distill)})": distilled["test"],
    })
    closure = gap_closure(teacher["test"]["recall@1"], alone["test"]["recall@1"], distilled["test"]["recall@1"])
    try:
        exported = _export(Path(distilled["run_dir"]) / "last.pt", export_formats, progress)
    except MdistillError as e:  # training is done and saved: say why export stopped, don't lose the table
        exported, export_error = None, str(e)
    else:
        export_error = None
    summary = {"rows": rows, "closure": closure, "wall_time_s": round(time.perf_counter() - start, 1),
               "schedule": {"teacher_epochs": teacher_cfg.epochs, "student_epochs": student_cfg.epochs,
                            "cache_views": student_cfg.cache_views},
               "export_error": export_error,
               "export": exported and {"out_dir": exported["out_dir"], "rows": [
                   {k: r.get(k) for k in ("format", "precision", "file", "status", "size_bytes", "parity")}
                   for r in exported["rows"]]},
               "runs": {k: r["run_dir"] for k, r in (("teacher", teacher), ("alone", alone), ("distilled", distilled))},
               "complexity": {k: r["complexity"] for k, r in (("teacher", teacher), ("student", distilled))},
               "provenance": provenance()}
    write_json_atomic(Path(out_dir) / "demo.json", summary)
    d = teacher["data"]
    title = f"{d['name']} test classes ({d['test_classes']} unseen classes, {d['test_images']} images)"
    lines = [format_comparison(rows, title=title, extra=COLUMNS), "",
             f"gap closed by distillation: {100 * closure:.0f} % = (distilled - alone) / (teacher - alone) at Recall@1, "
             f"both students {student_cfg.epochs} epochs (demo schedule; the distillation table runs the recipe's "
             f"{load_yaml('student_emoji').get('epochs')})",
             "asym R@1: student queries against the teacher-embedded gallery (phone query, server index); only a "
             "recipe with the absolute loss shares the teacher's space"]
    if export_error:
        lines += ["", f"export of the distilled student stopped: {export_error}"]
    if exported:
        from .export import format_report

        lines += ["", f"distilled student exported to {exported['out_dir']}", format_report(exported)]
    prov = summary["provenance"]
    lines += [f"wall time {summary['wall_time_s'] / 60:.1f} min on {prov['cpu']} ({prov['cpu_kernels']} kernels: "
              "another CPU's kernels end these short runs elsewhere; docs/getting-started.md gives the spread)",
              f"saved to {Path(out_dir) / 'demo.json'}"]
    return "\n".join(lines)


def _alone_loss(cfg) -> str:
    # A pure-distillation recipe has no task loss of its own; its alone row trains with triplet.
    return cfg.loss if cfg.loss != "none" else "triplet"


def _export(checkpoint: Path, formats, progress: bool) -> Optional[Dict]:
    # A file that fails its parity gate is reported with ✗ in the table, not raised: the demo
    # shows what the gate decided rather than stopping after training.
    if not formats:
        return None
    from .export import export

    log = (lambda m: print(m, flush=True)) if progress else (lambda _: None)
    return export(checkpoint, formats=formats, parity_samples=0, raise_on_failure=False, log=log)
