"""The README's main job on the embedded default: emoji data -> fine-tuned EfficientNet-Lite0
teacher -> MobileNet-0.25 student trained alone and distilled from the teacher, with Recall@K on
the unseen test classes side by side with the untuned ImageNet features of the teacher's backbone.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .config import load_yaml, make_config
from .data import emoji
from .evaluate import evaluate_pretrained, format_comparison
from .train import main as train
from .utils.io import write_json_atomic


def run(out_dir: str = "runs", progress: bool = True) -> str:
    """Fetch, train teacher and students, evaluate; returns the comparison table.

    The figures are also written to ``OUT_DIR/demo.json``.
    """
    start = time.perf_counter()
    emoji.fetch()
    teacher_cfg = make_config(load_yaml("teacher_emoji"), out_dir=out_dir)
    baseline = evaluate_pretrained(teacher_cfg.model, teacher_cfg.data, teacher_cfg.image_size, "imagenet",
                                   progress=progress)
    teacher = train(teacher_cfg, progress=progress)
    student_cfg = make_config(load_yaml("student_emoji"), out_dir=out_dir,
                              teacher=str(Path(teacher["run_dir"]) / "last.pt"))
    alone_cfg = dataclasses.replace(student_cfg, name="student-alone", teacher="", distill=(), teacher_view="augmented",
                                    teacher_cache=False, unlabeled="")
    alone = train(alone_cfg, progress=progress)
    distilled = train(student_cfg, progress=progress)
    s = student_cfg.model
    rows = {
        f"{teacher_cfg.model} ImageNet features, untuned": baseline,
        f"{teacher_cfg.model} teacher (fine-tuned)": teacher["test"],
        f"{s} student alone ({alone_cfg.loss})": alone["test"],
        f"{s} student distilled ({' + '.join(student_cfg.distill)})": distilled["test"],
    }
    summary = {"rows": rows, "wall_time_s": round(time.perf_counter() - start, 1),
               "runs": {k: r["run_dir"] for k, r in (("teacher", teacher), ("alone", alone), ("distilled", distilled))},
               "complexity": {k: r["complexity"] for k, r in (("teacher", teacher), ("student", distilled))}}
    write_json_atomic(Path(out_dir) / "demo.json", summary)
    table = format_comparison(rows, title=f"emoji test classes ({teacher['data']['test_classes']} unseen classes)")
    return f"{table}\nwall time {summary['wall_time_s'] / 60:.1f} min\nsaved to {Path(out_dir) / 'demo.json'}"
