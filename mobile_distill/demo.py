"""The README's main job on the embedded default: emoji data -> fine-tuned EfficientNet-Lite0
teacher -> MobileNet-0.25 student trained alone and distilled from the teacher, with Recall@K on
the unseen test classes side by side with the untuned ImageNet features of the teacher's backbone;
then the distilled student is exported to ONNX, TFLite and CoreML and gated on parity.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Dict, Optional

from .config import load_yaml, make_config
from .data import emoji
from .errors import MdistillError
from .evaluate import evaluate_pretrained, format_comparison
from .train import main as train
from .utils.io import write_json_atomic


def run(out_dir: str = "runs", progress: bool = True, teacher_overrides: Optional[Dict] = None,
        student_overrides: Optional[Dict] = None, export_formats=("all",)) -> str:
    """Fetch, train teacher and students, evaluate; returns the comparison table.

    Args:
        out_dir: where the three runs and ``demo.json`` (all figures) go.
        teacher_overrides, student_overrides: config fields replacing those of the built-in
            ``teacher_emoji`` / ``student_emoji`` recipes (e.g. another data set).
        export_formats: formats the distilled student is exported to (empty: no export).
    """
    start = time.perf_counter()
    teacher_cfg = make_config({**load_yaml("teacher_emoji"), **(teacher_overrides or {})}, out_dir=out_dir)
    if teacher_cfg.data == "emoji":
        emoji.fetch()
    baseline = evaluate_pretrained(teacher_cfg.model, teacher_cfg.data, teacher_cfg.image_size,
                                   teacher_cfg.pretrained, progress=progress)
    teacher = train(teacher_cfg, progress=progress)
    student_cfg = make_config({**load_yaml("student_emoji"), **(student_overrides or {})}, out_dir=out_dir,
                              teacher=str(Path(teacher["run_dir"]) / "last.pt"))
    alone_cfg = dataclasses.replace(student_cfg, name="student-alone", teacher="", distill=(), teacher_view="augmented",
                                    teacher_cache=False, unlabeled="")
    alone = train(alone_cfg, progress=progress)
    distilled = train(student_cfg, progress=progress)
    s = student_cfg.model
    rows = {
        f"{teacher_cfg.model} {teacher_cfg.pretrained} features, untuned": baseline,
        f"{teacher_cfg.model} teacher (fine-tuned)": teacher["test"],
        f"{s} student alone ({alone_cfg.loss})": alone["test"],
        f"{s} student distilled ({' + '.join(student_cfg.distill)})": distilled["test"],
    }
    try:
        exported = _export(Path(distilled["run_dir"]) / "last.pt", export_formats, progress)
    except MdistillError as e:  # training is done and saved: say why export stopped, don't lose the table
        exported, export_error = None, str(e)
    else:
        export_error = None
    summary = {"rows": rows, "wall_time_s": round(time.perf_counter() - start, 1),
               "export_error": export_error,
               "export": exported and {"out_dir": exported["out_dir"], "rows": [
                   {k: r.get(k) for k in ("format", "precision", "file", "status", "size_bytes", "parity")}
                   for r in exported["rows"]]},
               "runs": {k: r["run_dir"] for k, r in (("teacher", teacher), ("alone", alone), ("distilled", distilled))},
               "complexity": {k: r["complexity"] for k, r in (("teacher", teacher), ("student", distilled))}}
    write_json_atomic(Path(out_dir) / "demo.json", summary)
    title = f"{teacher['data']['name']} test classes ({teacher['data']['test_classes']} unseen classes)"
    table = format_comparison(rows, title=title)
    lines = [table]
    if export_error:
        lines += ["", f"export of the distilled student stopped: {export_error}"]
    if exported:
        from .export import format_report

        lines += ["", f"distilled student exported to {exported['out_dir']}", format_report(exported)]
    lines += [f"wall time {summary['wall_time_s'] / 60:.1f} min", f"saved to {Path(out_dir) / 'demo.json'}"]
    return "\n".join(lines)


def _export(checkpoint: Path, formats, progress: bool) -> Optional[Dict]:
    # A file that fails its parity gate is reported with ✗ in the table, not raised: the demo
    # shows what the gate decided rather than stopping after training.
    if not formats:
        return None
    from .export import export

    log = (lambda m: print(m, flush=True)) if progress else (lambda _: None)
    return export(checkpoint, formats=formats, parity_samples=0, log=log)
