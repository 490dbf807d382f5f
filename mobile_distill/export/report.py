"""The console table of an export report (format, precision, size, parity, status)."""

from __future__ import annotations

from typing import Dict, List, Optional

MARK = {"passed": "✓", "failed": "✗"}


def _mb(row: Dict) -> str:
    return f"{row['size_bytes'] / 1e6:.2f}" if "size_bytes" in row else "-"


def _where(row: Dict) -> str:
    """``tflite``, or ``tflite in Chromium`` for the browser gate's row (``mdistill verify --browser``)."""
    return row["format"] + (" in Chromium" if "browser" in row else "")


def _mark(row: Dict) -> str:
    """✓ / ✗, with ``ref`` when the figures come from a reference interpreter, not the format's runtime."""
    return MARK.get(row["status"], row["status"]) + ("ref" if row.get("parity_note") else "")


def format_report(report: Dict) -> str:
    served = "teacher_gallery" in report  # a compatible student: its queries against the teacher's gallery
    header = ["format", "precision", "size MB", "cos min", "cos mean", "R@1 export", "R@1 torch", "drop", "asym R@1",
              "asym drop", *(["R@1 teacher gallery", "its drop"] if served else []), "top-1 agree(ε)", "status"]
    body: List[List[str]] = []
    for r in report["rows"]:
        p = r.get("parity") or {}
        f = lambda k, spec: format(p[k], spec) if k in p else "-"  # noqa: E731
        body.append([_where(r), r["precision"], _mb(r), f("cosine_min", ".6f"), f("cosine_mean", ".6f"),
                     f("recall@1_export", ".2f"), f("recall@1_pytorch", ".2f"), f("recall@1_drop", ".2f"),
                     f("asymmetric_recall@1", ".2f"), f("asymmetric_recall@1_drop", ".2f"),
                     *([f("teacher_gallery_recall@1", ".2f"), f("teacher_gallery_recall@1_drop", ".2f")]
                       if served else []),
                     f("top1_agreement_eps", ".3f"), _mark(r)])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    out = [f"parity on {report['parity_images']} {report['dataset']} test images "
           f"(PyTorch Recall@1 {report['pytorch_recall@1']:.2f}); int8 calibrated on "
           f"{report['calibration_images']} training images; asym = exported queries against the PyTorch "
           f"gallery; ε = {report['thresholds'].get('agreement_eps', '-')} cosine"
           + (f"; teacher gallery = the file's queries against {report['teacher_gallery']}'s embeddings of the same "
              f"images, the server's index (PyTorch's queries: {report['teacher_gallery_recall@1_pytorch']:.2f})"
              if served else ""), line(header), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    notes = []
    for r in report["rows"]:
        tag = f"{_where(r)} {r['precision']}"
        for failure in r["failures"]:
            notes.append(f"✗ {tag}: {failure}")
        if r.get("parity_note"):
            notes.append(f"{_mark(r)} {tag}: {r['parity_note']}; structural checks: {r.get('structural')}")
        mixed = (r.get("details") or {}).get("mixed_search")
        if mixed and r["status"] == "passed":
            kept = r["details"]["quantization"]["float_ops"]
            # reports written before float_weight_fraction was recorded: the last passing try's share
            share = r["details"].get("float_weight_fraction", [m for m in mixed if m["passed"]][-1]["float_weight_fraction"])
            mix = (f"mixed precision keeps {len(kept)} op(s) in float ({100 * share:.2f} % "
                   "of the weights; chosen on" if kept else "ai-edge-quantizer's all-int8 file (its own min-max "
                   "ranges) passes (checked on")
            refused = r["details"].get("gate_refusals")
            again = f", after the gate refused {refused} mix(es) that passed there" if refused else ""
            notes.append(f"  {tag}: the all-quantised file failed; {mix} {r['details']['probe']}{again}; "
                         "recipe in model.json)")
        quantization = (r.get("details") or {}).get("quantization") or {}
        if "quantisation-aware" in quantization.get("config", ""):
            kept = quantization.get("float_modules") or []
            notes.append(f"  {tag}: the QAT run's own int8 graph (mdistill train --qat)"
                         + (f", {', '.join(kept)} kept in float" if kept else ", every op quantised"))
        transposes = (r.get("details") or {}).get("transpose_ops")
        if transposes:
            notes.append(f"! {tag}: {transposes} TRANSPOSE op(s) in the graph")
        if r.get("kept_at"):
            notes.append(f"  {tag}: failed file kept at {r['kept_at']}")
    ses = [r["parity"]["recall@1_drop_se"] for r in report["rows"] if "recall@1_drop_se" in (r.get("parity") or {})]
    if ses and max(ses) > 0:  # the drops are a sample's: how far it moves them, so a close call reads as one
        notes.append(f"  drops are measured on {report['parity_images']} images: their paired standard error is up "
                     f"to {max(ses):.2f} points here (--parity-samples N measures on more)")
    return "\n".join(out + notes)


def failure_message(report: Dict) -> Optional[str]:
    """One line for the rows that failed, ``None`` when none did: which files the parity gate refused,
    and which broke before it could judge them (at which stage), with a full disk named as such."""
    failed = [r for r in report["rows"] if r["status"] == "failed"]
    if not failed:
        return None
    tag = lambda r: f"{_where(r)} {r['precision']}"  # noqa: E731
    parts = []
    full = [r for r in failed if any("No space left on device" in f or "[Errno 28]" in f for f in r["failures"])]
    if full:
        from ..utils.io import free_mb

        where = report.get("out_dir", "the output folder")
        parts.append(f"no space left on the device for {', '.join(map(tag, full))} in {where} ({free_mb(where):,.0f} MB "
                     "free); free some space or export elsewhere")
    judged = [tag(r) for r in failed if "failed_stage" not in r and r not in full]
    if judged:
        parts.append(f"parity gate failed for {', '.join(judged)} (see the ✗ lines above)")
    broken = [f"{tag(r)} ({r['failed_stage']})" for r in failed if "failed_stage" in r and r not in full]
    if broken:
        parts.append(f"the export broke before the gate for {', '.join(broken)} (see the ✗ lines above)")
    return "; ".join(parts) + "; " + ("that file was" if len(failed) == 1 else "those files were") + " not written"
