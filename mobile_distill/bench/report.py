"""Bench outputs: the console table (✓/✗ like ``yolo benchmark``), bench.json, bench.md and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from ..utils.io import atomic_path, write_json_atomic, write_text_atomic

MARK = {"ok": "✓", "failed": "✗", "skipped": "-", "refused": "refused"}


def label(row: Dict) -> str:
    """``int8``, or ``int8 mixed (10 float ops)`` for a mixed-precision file; ``MODIFIED`` when the
    file is not the one the export gate passed."""
    return (row["precision"] + (f" mixed ({row['float_ops']} float ops)" if row.get("float_ops") else "")
            + (" MODIFIED" if row.get("modified") else ""))


def where(row: Dict) -> str:
    """``tflite``, or ``tflite in Chromium, WASM`` for a row the web app measured in a browser."""
    return row["format"] + (f" in {row['client']}" if row.get("client") else "")


def _cells(row: Dict, threads: List[int]) -> List[str]:
    rec = row.get("recall", {})
    cells = [where(row), label(row), MARK[row["status"]],
             f"{row['size_bytes'] / 1e6:.2f}" if row.get("size_bytes") else "-",
             (f"{rec['recall@1']:.2f}" + (f" ({row['recall_images']} img)" if row.get("recall_images") else ""))
             if "recall@1" in rec else "-"]
    for t in threads:
        lat = row.get("threads", {}).get(str(t))
        cells.append(f"{lat['median_ms']:.2f} / {lat['p90_ms']:.2f}" if lat else "-")
    speed = row.get("speedup_vs_float32", {})
    cells.append(" / ".join(f"{speed[str(t)]:.2f}x" for t in threads if str(t) in speed) or "-")
    best = max((v["throughput"]["images_per_s"] for v in row.get("threads", {}).values()), default=None)
    cells.append(f"{best:.0f}" if best else "-")
    cells.append(f"{row['peak_rss_mb']:.0f}" if row.get("peak_rss_mb") else "-")
    cells.append(f"{row['anchor_ratio']:.2f}x" if row.get("anchor_ratio") else "")
    ratio = row.get("host_ratio", {})
    cells.append(" / ".join(f"{ratio[str(t)]:.2f}x" for t in threads if str(t) in ratio))
    return cells


def _header(threads: List[int]) -> List[str]:
    return (["format", "precision", "status", "size MB", "R@1"] + [f"ms {t}T med/p90" for t in threads]
            + ["speed vs fp32 " + "/".join(f"{t}T" for t in threads), "img/s", "peak MB", "vs Keras", "vs host"])


def format_table(report: Dict) -> str:
    threads = report["threads"]
    header = _header(threads)
    body = [_cells(r, threads) for r in report["rows"]]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda c: "  ".join(x.ljust(w) if i < 3 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths)))  # noqa: E731
    cx = report.get("complexity") or {}
    title = (f"{report['architecture']} @ {report['image_size']} px"
             + (f", {cx['params'] / 1e6:.2f} M params, {cx['gflops']:.3f} GFLOPs" if cx else "")
             + f"; Recall@1 on {report['test_images']} {report['dataset']} test images; "
             + f"{report['machine']['cpu']}")
    out = [title, line(header), line(["-" * w for w in widths])] + [line(b) for b in body]
    out += [f"{MARK[r['status']]} {r['format']} {r['precision']}: {r['error']}"
            for r in report["rows"] if r.get("error")]
    out += [f"refused {r['format']} {r['precision']} (by the export gate, not shipped): {'; '.join(r['refused'])}"
            for r in report["rows"] if r.get("refused")]
    out += [f"  {r['format']} {r['precision']}: {r['note']}" for r in report["rows"] if r.get("note")]
    return "\n".join(out)


def format_markdown(report: Dict) -> str:
    threads = report["threads"]
    header = _header(threads)
    rows = [_cells(r, threads) for r in report["rows"]]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c or " " for c in r) + " |" for r in rows]
    notes = [f"- {r['format']} {r['precision']}: {r.get('error') or r.get('note')}" for r in report["rows"]
             if r.get("error") or r.get("note")]
    notes += [f"- {r['format']} {r['precision']}: refused by the export gate ({'; '.join(r['refused'])})"
              for r in report["rows"] if r.get("refused")]
    m = report["machine"]
    return "\n".join([f"# Benchmark: {report['architecture']} ({report['dataset']}, {report['image_size']} px)", "",
                      f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}", "",
                      *md, "", *notes, ""])


def write_plots(report: Dict, out_dir: Path) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Every row with figures, including those --min-recall marked failed and those the export gate
    # refused (kept with --keep-failed, else only their gate figures): the plot shows why.
    measured = [r for r in report["rows"] if r.get("recall") and r.get("threads")]
    t = str(report["threads"][0])
    written = []
    fig, (ax, ax_drop) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    _latency_panel(ax, report, measured, t)
    _drop_panel(ax_drop, report)
    written.append(_save(fig, out_dir / "latency_vs_recall.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in measured:
        ks = sorted(int(k.split("@")[1]) for k in r["recall"])
        ax.plot(ks, [r["recall"][f"recall@{k}"] for k in ks], marker="o", label=f"{where(r)} {r['precision']}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (%)")
    if measured:
        ax.legend(fontsize=7)
    ax.set_title(f"{report['architecture']}: Recall@K per format")
    written.append(_save(fig, out_dir / "recall_at_k.png"))
    plt.close("all")
    return written


def _latency_panel(ax, report: Dict, measured: List[Dict], t: str) -> None:
    """Recall@1 on an axis from 0 (the spread between files is shown by the drop panel, not by a
    zoomed axis), latency on a log axis, refused files as crosses, the teacher as a line."""
    for r in measured:
        refused = r["status"] == "refused"
        ax.scatter(r["threads"][t]["median_ms"], r["recall"]["recall@1"], marker="x" if refused else "o",
                   s=50, label=f"{where(r)} {label(r)}" + (" (refused)" if refused else ""))
    top = max([r["recall"]["recall@1"] for r in measured] + [(report.get("teacher") or {}).get("recall@1", 0)], default=1)
    teacher = report.get("teacher")
    if teacher:
        ax.axhline(teacher["recall@1"], ls="--", c="grey",
                   label=f"teacher {teacher['architecture']} @ {teacher['image_size']} px (PyTorch): {teacher['recall@1']:.1f}")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, min(100, 1.15 * top))
    ax.set_xlabel(f"median latency, ms (batch 1, {t} thread(s), log scale)")
    ax.set_ylabel("Recall@1 (%)")
    if measured:
        ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"{report['architecture']}: latency vs Recall@1")


def _drop_panel(ax, report: Dict) -> None:
    """Recall@1 lost against the PyTorch checkpoint, per file, refused ones included: measured here
    when the file is at hand, else the gate's own figure (hollow marker)."""
    rows = [r for r in report["rows"] if r["format"] != "pytorch" and r["status"] != "skipped"]
    torch_row = next((r for r in report["rows"] if r["format"] == "pytorch" and r.get("recall")), None)
    names, drops, colors, hollow = [], [], [], []
    for r in rows:
        if torch_row is not None and r.get("recall"):
            drop, from_gate = torch_row["recall"]["recall@1"] - r["recall"]["recall@1"], False
        elif "recall@1_drop" in r.get("parity", {}):
            drop, from_gate = r["parity"]["recall@1_drop"], True
        else:
            continue
        names.append(f"{r['format']} {label(r)}" + (" (refused)" if r["status"] == "refused" else ""))
        drops.append(drop)
        colors.append("tab:red" if r["status"] in ("refused", "failed") else "tab:green")
        hollow.append(from_gate)
    y = list(range(len(names)))
    for i in y:
        ax.scatter(drops[i], i, c="none" if hollow[i] else colors[i], edgecolors=colors[i], s=50)
    ax.axvline(0, c="grey", lw=0.8)
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Recall@1 drop vs PyTorch (points; hollow: export-gate figure)")
    ax.set_title("what each file loses (red: refused)")


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path.name


def write_outputs(report: Dict, out_dir: Path) -> None:
    report["plots"] = write_plots(report, out_dir)
    if "provenance" in report:
        report["provenance"]["outputs"] = ["bench.md", *report["plots"]]
    write_json_atomic(out_dir / "bench.json", report)
    write_text_atomic(out_dir / "bench.md", format_markdown(report))
