"""The README's main job on the embedded default: emoji data -> fine-tuned EfficientNet-Lite0
teacher -> Recall@K on the unseen test classes, side by side with the untuned ImageNet features
of the same backbone (the baseline the teacher has to beat)."""

from __future__ import annotations

import time

from .config import load_yaml, make_config
from .data import emoji
from .evaluate import evaluate_pretrained, format_comparison
from .train import main as train
from .utils.io import write_json_atomic


def run(out_dir: str = "runs", progress: bool = True) -> str:
    """Fetch, train, evaluate; returns the comparison table (also saved as ``demo.json`` in the run)."""
    start = time.perf_counter()
    emoji.fetch()
    cfg = make_config(load_yaml("teacher_emoji"), out_dir=out_dir)
    baseline = evaluate_pretrained(cfg.model, cfg.data, cfg.image_size, "imagenet", progress=progress)
    results = train(cfg, progress=progress)
    rows = {
        f"{cfg.model} ImageNet features (untuned)": baseline,
        f"{cfg.model} teacher (fine-tuned)": results["test"],
    }
    summary = {"rows": rows, "wall_time_s": round(time.perf_counter() - start, 1), "run_dir": results["run_dir"]}
    write_json_atomic(f"{results['run_dir']}/demo.json", summary)
    table = format_comparison(rows, title=f"emoji test classes ({results['data']['test_classes']} unseen classes)")
    return f"{table}\nwall time {summary['wall_time_s']:.0f} s\nsaved to {results['run_dir']}"
