"""``quant_report(checkpoint)``: which layers a quantised TFLite file loses accuracy in.

For every weight op: the final embedding's cosine and SNR when that op alone is quantised (the
rest float), and the op's own output error in the fully quantised file (ai-edge-quantizer's
``validate``). Then the same mixed-precision search as ``export`` names the ops it keeps in float.
Measured on whole test-split classes against PyTorch; written as JSON, a Markdown table
and a plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

from ...utils.io import write_json_atomic, write_text_atomic
from ...utils.provenance import provenance
from .mixed_precision import describe
from ..parity import Thresholds, gate


def quant_report(checkpoint: str | Path, precision: str = "int8", out_dir: Optional[str | Path] = None,
                 calibration: str = "minmax", calib_samples: int = 256, probe_samples: int = 256,
                 thresholds: Thresholds = Thresholds(), data: Optional[str] = None, seed: int = 0,
                 log: Callable[[str], None] = lambda _: None) -> Dict:
    """Per-layer sensitivity of ``checkpoint`` under a TFLite ``precision`` (int8, int16act,
    dynamic_int8, weight_int8). Returns the report written to ``out_dir/sensitivity_<precision>.json``."""
    from . import mixed_precision as mp
    from . import converter as tflite
    from ...models.timm_nets import deploy_form
    from ..prepare import Probe, float_reference, load_for_export
    from ..parity import ExportError
    from ..prepare import ExportModule, InputSpec, load_images, pick_calibration_samples

    if precision not in mp.RECIPES:
        raise ExportError(f"no sensitivity report for {precision!r}; choose from {', '.join(mp.RECIPES)}")
    if calibration not in mp.CALIBRATIONS:
        raise ExportError(f"unknown calibration {calibration!r}; choose from {', '.join(mp.CALIBRATIONS)}")
    tflite.check_installed()
    checkpoint = Path(checkpoint)
    ckpt, net, size, resize, dataset = load_for_export(checkpoint, data)
    if "qat" in ckpt:  # post-training quantisation of the float network its files replace and are gated against
        net = float_reference(ckpt, checkpoint)
        log(f"{checkpoint} is a QAT run: analysing the float student it started from (qat.float_reference)")
    net = deploy_form(net)[0]  # the network the exported files hold
    probe = Probe(net, dataset, size, resize, probe_samples, seed).load()
    calib = load_images(pick_calibration_samples(dataset.train, calib_samples, seed), size, dataset.name, resize)
    spec = InputSpec(size, tflite.DEFAULT_LAYOUT, "float32")
    log(f"converting {checkpoint} to float32 TFLite; {len(probe.images)} images of {probe.source} probe, "
        f"{len(calib)} calibrate")
    q = mp.Quantiser(tflite._convert_float(ExportModule(net, spec), spec), spec, calib, precision, calibration)

    def figures(model: bytes) -> Dict:
        out = mp.embed(model, spec, probe.images)
        cos = mp.cosine_rows(out, probe.reference)
        result = gate(probe.reference, out, probe.labels, precision, thresholds)
        return {"embedding_cosine_min": float(cos.min()), "embedding_cosine_mean": float(cos.mean()),
                "recall@1_drop": result.figures.get("recall@1_drop"),
                "asymmetric_recall@1_drop": result.figures.get("asymmetric_recall@1_drop"),
                "top1_agreement_eps": result.figures.get("top1_agreement_eps"), "passes_gate": result.passed,
                "size_bytes": len(model)}

    whole = q.quantise()
    log(f"{precision}: measuring each op quantised alone ({len(q.candidates())} ops)")
    ranking = mp.sensitivity(q, probe.images, probe.reference, log)
    errors = mp.layer_errors(q, probe.images[:32])
    for row in ranking:
        row.update(errors.get(row["index"], {}))
    by_index = {op.index: op for op in q.ops}
    strict = thresholds.with_margin()  # as export's search: half the gate's allowed loss on training images
    found = mp.search(q, [by_index[r["index"]] for r in ranking],
                      lambda m: gate(probe.reference, mp.embed(m, spec, probe.images), probe.labels, precision,
                                     strict).passed, log=log)
    report = {
        "checkpoint": str(checkpoint), "analysed": "qat.float_reference" if "qat" in ckpt else "the checkpoint's weights",
        "precision": precision, "calibration": calibration,
        "preset": mp.RECIPES[precision][0], "probe_images": len(probe.images), "probe": probe.source,
        "calibration_images": len(calib),
        "float32_size_bytes": len(q.model), "all_quantised": figures(whole),
        "mixed": ({**figures(found["model"]), "float_ops": [op.as_dict() for op in found["float_ops"]],
                   "tried": found["tried"]} if found["model"] else {"float_ops": None, "tried": found["tried"]}),
        "ops": ranking,
        "provenance": provenance(),
    }
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / "quant_report"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"sensitivity_{precision}"
    write_json_atomic(stem.with_suffix(".json"), report)
    write_text_atomic(stem.with_suffix(".md"), markdown(report))
    plot(report, stem.with_suffix(".png"))
    report["files"] = [str(stem.with_suffix(s)) for s in (".json", ".md", ".png")]
    return report


def markdown(report: Dict, top: int = 15) -> str:
    a, m = report["all_quantised"], report["mixed"]
    lines = [f"# Quantisation sensitivity: {report['precision']} ({report['preset']}, {report['calibration']} "
             f"calibration), {report['probe_images']} images of {report['probe']}",
             "",
             f"Every op quantised: embedding cosine min {a['embedding_cosine_min']:.4f} / mean "
             f"{a['embedding_cosine_mean']:.4f}, Recall@1 drop {a['recall@1_drop']:.2f} (asymmetric "
             f"{a['asymmetric_recall@1_drop']:.2f}), gate {'passed' if a['passes_gate'] else 'failed'}, "
             f"{a['size_bytes'] / report['float32_size_bytes']:.2f}x the float32 size.", ""]
    if m["float_ops"] is None:
        lines += ["No mix with at most half the weights in float passes the gate.", ""]
    else:
        lines += [f"Mixed precision: {len(m['float_ops'])} op(s) kept in float "
                  f"({', '.join(describe(o) for o in m['float_ops']) or 'none'}): cosine min "
                  f"{m['embedding_cosine_min']:.4f}, Recall@1 drop {m['recall@1_drop']:.2f} (asymmetric "
                  f"{m['asymmetric_recall@1_drop']:.2f}), {m['size_bytes'] / report['float32_size_bytes']:.2f}x "
                  f"the float32 size.", ""]
    lines += [f"The {min(top, len(report['ops']))} most sensitive ops, each quantised alone:", "",
              "| op | type | layer | weights | embedding cos min | cos mean | SNR dB | own output cos (all quantised) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["ops"][:top]:
        own = r.get("output_cosine")
        lines.append(f"| {r['index']} | {r['type']} | {describe(r)} | {r['params']} | {r['embedding_cosine_min']:.4f} "
                     f"| {r['embedding_cosine_mean']:.4f} | {r['embedding_snr_db']:.1f} | "
                     f"{'' if own is None else f'{own:.4f}'} |")
    return "\n".join(lines) + "\n"


def plot(report: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = sorted(report["ops"], key=lambda r: r["index"])
    kept = {o["index"] for o in (report["mixed"]["float_ops"] or [])}
    loss = [max(1 - r["embedding_cosine_mean"], 1e-7) for r in ops]
    fig, ax = plt.subplots(figsize=(max(6, 0.16 * len(ops)), 3.6))
    ax.bar(range(len(ops)), loss, color=["tab:red" if r["index"] in kept else "tab:blue" for r in ops])
    ax.set_yscale("log")
    ax.set_xticks(range(len(ops)), [describe(r) for r in ops], rotation=90, fontsize=5)
    ax.set_ylabel("1 - embedding cosine (mean)")
    ax.set_title(f"{report['precision']}: each op quantised alone (red: kept in float by the mixed search)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)
