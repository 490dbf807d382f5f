"""``mdistill export``, ``quant-report``, ``verify`` and ``metadata``: the commands that write or check
exported files (registered on the ``mdistill`` group in ``cli.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import click


_teacher_gallery_option = click.option(
    "--teacher-gallery", default="auto", show_default=True,
    help="Also gate each file's queries against a teacher-embedded gallery of the gate's images (the server's "
         "index): auto = the student's own teacher when it was trained with --compatible; off; or the model that "
         "embeds your index (checkpoint, timm:NAME, tv:NAME, py:..., FILE.onnx).")


def _gate_options(fn):
    """The parity gate's thresholds, shared by export and verify (defaults: ``Thresholds``)."""
    for option in reversed([
        click.option("--min-cos-fp32", type=float, default=0.9999, show_default=True,
                     help="float32 gates on the per-image cosine to PyTorch alone."),
        click.option("--min-cos-fp16", type=float, default=0.99, show_default=True,
                     help="A floor that catches broken float16 conversions (float16 gates on the figures below)."),
        click.option("--max-fp16-recall-drop", type=float, default=0.5, show_default=True,
                     help="Recall@1 points, symmetric and asymmetric (exported queries, PyTorch gallery)."),
        click.option("--min-fp16-agreement", type=float, default=0.98, show_default=True,
                     help="Fraction of queries whose nearest neighbour is PyTorch's, up to --agreement-eps."),
        click.option("--max-int8-recall-drop", type=float, default=1.0, show_default=True,
                     help="Recall@1 points, symmetric and asymmetric (exported queries, PyTorch gallery)."),
        click.option("--min-int8-agreement", type=float, default=0.90, show_default=True,
                     help="Fraction of queries whose nearest neighbour is PyTorch's, up to --agreement-eps."),
        click.option("--agreement-eps", type=float, default=0.01, show_default=True,
                     help="A neighbour that PyTorch scores within this cosine of its own nearest counts as agreeing."),
    ]):
        fn = option(fn)
    return fn


def _thresholds(min_cos_fp32, min_cos_fp16, max_fp16_recall_drop, min_fp16_agreement, max_int8_recall_drop,
                min_int8_agreement, agreement_eps):
    from .export import Thresholds

    return Thresholds(float32_cos_min=min_cos_fp32, float16_cos_min=min_cos_fp16,
                      float16_recall_drop=max_fp16_recall_drop, float16_top1_agreement=min_fp16_agreement,
                      int8_recall_drop=max_int8_recall_drop, int8_top1_agreement=min_int8_agreement,
                      agreement_eps=agreement_eps)


@click.command("export", context_settings={"max_content_width": 120})
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@click.option("--model", "model_spec", default=None,
              help="Instead of CHECKPOINT, a model trained elsewhere: timm:NAME or py:package.module:function "
                   "(needs --data; weights from --weights).")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="With --model: its state dict (.pt/.pth) or .safetensors file (a timm classifier's own file "
                   "works: the class layer is dropped, the pooled pre-logits features are the embedding).")
@click.option("--image-size", type=int, default=0, help="With --model: the input size (default: the model's own).")
@click.option("--mean", default=None, help="With --model: normalisation mean R,G,B of [0, 1] images (default: the model's own).")
@click.option("--std", default=None, help="With --model: normalisation std R,G,B (default: the model's own).")
@click.option("--format", "formats", multiple=True, default=["all"], show_default=True,
              help="onnx, tflite, coreml or all (repeat or comma-separate).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: export/ beside the checkpoint).")
@click.option("--precision", "precisions", multiple=True,
              help="FORMAT:PRECISION, e.g. tflite:int8 (repeatable; default: every precision of each format).")
@click.option("--input-layout", type=click.Choice(["nhwc", "nchw"]), default=None,
              help="Input layout for every format (default: NHWC for TFLite, NCHW for ONNX and CoreML).")
@click.option("--input-dtype", type=click.Choice(["float32", "uint8"]), default="float32", show_default=True,
              help="float32 RGB in [0, 1], or uint8 0-255 camera bytes (CoreML stays float32).")
@click.option("--parity-samples", type=int, default=256, show_default=True,
              help="Test images the parity gate runs on (whole classes; 0 = the whole test split).")
@click.option("--calib-samples", type=int, default=256, show_default=True,
              help="Training images for static int8 calibration.")
@_gate_options
@_teacher_gallery_option
@click.option("--keep-failed", is_flag=True, help="Move files that fail the gate to OUT/failed/ instead of deleting them.")
@click.option("--calibration", type=click.Choice(["minmax", "mse", "octav"]), default="minmax", show_default=True,
              help="TFLite quantisation ranges: min-max, or weights clipped by least squared error / OCTAV.")
@click.option("--mixed-precision/--no-mixed-precision", default=True, show_default=True,
              help="Retry a quantised TFLite file that fails the gate with its most sensitive ops in float "
                   "(chosen on training images).")
@click.option("--data", "data_spec", default=None, help="Data set for parity/calibration images (default: the checkpoint's).")
@click.option("--name", default="student", show_default=True, help="File stem: NAME_float32.tflite, ...")
@click.option("--android", "android_dir", type=click.Path(path_type=Path), default=None,
              help="Also fill this Android assets folder (android_demo/app/src/main/assets): float32 TFLite, "
                   "model.json and a gallery embedded with that file.")
@click.option("--gallery", default=None, help="With --android: a data set (its test split) or a folder of images "
                                              "(default: the checkpoint's data set).")
@click.option("--gallery-model", default="student", show_default=True,
              help="With --android: who embeds the gallery: student (the exported file, on the phone's own bytes), "
                   "teacher (the student's teacher, as the server's index a compatible student searches) or a model "
                   "spec (checkpoint, timm:NAME, FILE.onnx, ...) that embeds your server's index.")
@click.option("--gallery-limit", type=int, default=None, help="With --android: at most this many gallery images.")
@click.option("--browser", is_flag=True,
              help="Also gate each passed .tflite and .onnx file in headless Chromium, inside the web app (LiteRT.js, "
                   "ONNX Runtime Web): a row of its own in the report (as mdistill verify --browser).")
@click.option("--quiet", is_flag=True, help="Only the table and the final line.")
def export_cmd(checkpoint, model_spec, weights, image_size, mean, std, formats, out_dir, precisions, input_layout, input_dtype, parity_samples, calib_samples,
               teacher_gallery, keep_failed, calibration, mixed_precision, data_spec, name, android_dir, gallery, gallery_model, gallery_limit,
               browser, quiet, **gate):
    """Export CHECKPOINT (or --model) to ONNX / TFLite / CoreML and gate every file on parity with PyTorch."""
    from .export import ExportError, export, failure_message, format_report
    from .export.outside import Contract, parse_rgb

    if checkpoint is None and model_spec is None:
        raise click.UsageError("give a CHECKPOINT, or --model timm:NAME|py:package.module:function with --data")
    if model_spec is None and (weights or image_size or mean or std):
        raise click.UsageError("--weights, --image-size, --mean and --std go with --model (a checkpoint carries its own)")
    contract = Contract(image_size, parse_rgb(mean, "--mean"), parse_rgb(std, "--std")) if model_spec else None
    if browser and model_spec:
        raise click.UsageError("--browser gates a checkpoint's files (its PyTorch model is the reference); "
                               "export the checkpoint, or gate an outside model's files on the host")

    wanted = {}
    for item in precisions:
        fmt, sep, prec = item.partition(":")
        if not sep or not prec:
            raise click.BadParameter(f"{item!r}: use FORMAT:PRECISION, e.g. tflite:int8", param_hint="--precision")
        wanted.setdefault(fmt.strip().lower(), []).append(prec.strip().lower())
    thresholds = _thresholds(**gate)
    if android_dir is not None:
        from .export.android import check_assets_dir

        check_assets_dir(android_dir)  # before minutes of export, not after
        if gallery_model != "student" and checkpoint is not None:
            from .checkpoint import load_checkpoint
            from .export.android import check_gallery_model
            from .export.metadata import teacher_index

            ckpt = load_checkpoint(checkpoint)
            check_gallery_model(gallery_model, teacher_index(ckpt) if ckpt.get("teacher") else None, str(checkpoint))
    report = export(checkpoint, formats=formats, out_dir=out_dir, precisions=wanted, input_layout=input_layout,
                    input_dtype=input_dtype, parity_samples=parity_samples, calib_samples=calib_samples,
                    thresholds=thresholds, keep_failed=keep_failed, data=data_spec, name=name,
                    calibration=calibration, mixed_precision=mixed_precision, model=model_spec, weights=weights,
                    contract=contract, teacher_gallery=teacher_gallery, log=(lambda _: None) if quiet else (lambda m: click.echo(m, err=True)))
    if browser:
        from .web.gate import add_browser_rows

        add_browser_rows(report, data=data_spec, parity_samples=parity_samples, thresholds=thresholds,
                         log=(lambda _: None) if quiet else (lambda m: click.echo(m, err=True)))
    click.echo(format_report(report))
    if android_dir is not None:
        from .export.android import write_android_assets

        done = write_android_assets(Path(report["out_dir"]), android_dir, gallery or report["data_spec"],
                                    limit=gallery_limit, gallery_model=gallery_model)
        click.echo(f"Android assets: {done['model']}, model.json and {done['gallery_images']} gallery images "
                   f"embedded by the {done['gallery_embedding']} in {android_dir}")
    click.echo(f"saved to {report['out_dir']} (model.json, export_report.json)")
    failed = failure_message(report)
    if failed:
        raise ExportError(failed)


@click.command("quant-report", context_settings={"max_content_width": 120})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--precision", type=click.Choice(["int8", "int16act", "dynamic_int8", "weight_int8"]), default="int8",
              show_default=True, help="The TFLite precision to analyse.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: quant_report/ beside the checkpoint).")
@click.option("--calibration", type=click.Choice(["minmax", "mse", "octav"]), default="minmax", show_default=True)
@click.option("--calib-samples", type=int, default=256, show_default=True, help="Training images for calibration.")
@click.option("--probe-samples", type=int, default=256, show_default=True,
              help="Test images (whole classes) the errors are measured on.")
@click.option("--data", "data_spec", default=None, help="Data set (default: the checkpoint's).")
@click.option("--top", type=int, default=15, show_default=True, help="Ops shown in the table.")
def quant_report_cmd(checkpoint, precision, out_dir, calibration, calib_samples, probe_samples, data_spec, top):
    """Per-layer quantisation sensitivity of CHECKPOINT as a TFLite file: JSON, table and plot."""
    from .export.quant_report import markdown, quant_report

    report = quant_report(checkpoint, precision=precision, out_dir=out_dir, calibration=calibration,
                          calib_samples=calib_samples, probe_samples=probe_samples, data=data_spec,
                          log=lambda m: click.echo(m, err=True))
    click.echo(markdown(report, top=top))
    click.echo(f"saved to {', '.join(report['files'])}")


@click.command("verify", context_settings={"max_content_width": 120})
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="The checkpoint FILE was exported from (default: the one its metadata names).")
@click.option("--parity-samples", type=int, default=256, show_default=True,
              help="Test images the parity gate runs on (whole classes; 0 = the whole test split).")
@click.option("--data", "data_spec", default=None, help="Data set for the parity images (default: the checkpoint's).")
@_gate_options
@_teacher_gallery_option
@click.option("--browser", is_flag=True,
              help="Also gate FILE (.tflite or .onnx) in headless Chromium, inside the web app (LiteRT.js or "
                   "ONNX Runtime Web), with the same thresholds: a row of its own.")
@click.option("--backend", type=click.Choice(["wasm", "webgpu"]), default="wasm", show_default=True,
              help="With --browser: the browser runtime's backend.")
def verify_cmd(file, checkpoint, parity_samples, data_spec, teacher_gallery, browser, backend, **gate):
    """Run an exported FILE through the parity gate again (after copying or editing it)."""
    from .export import ExportError, format_report
    from .export.verify import verify

    thresholds = _thresholds(**gate)
    report = verify(file, checkpoint=checkpoint, data=data_spec, parity_samples=parity_samples,
                    thresholds=thresholds, teacher_gallery=teacher_gallery)
    if browser:
        from .web.gate import browser_verify

        row = browser_verify(file, checkpoint=checkpoint, data=data_spec, parity_samples=parity_samples,
                             thresholds=thresholds, backend=backend, log=lambda m: click.echo(m, err=True))["rows"][0]
        report["rows"].append(row)
        report["passed"] = report["passed"] and row["status"] == "passed"
    click.echo(format_report(report))
    if not report["passed"]:
        raise ExportError(f"{file} failed the parity gate (see the ✗ lines above)")


@click.command("metadata")
@click.argument("path", type=click.Path(path_type=Path))
def metadata_cmd(path):
    """Print the mobile_distill metadata embedded in an exported file (.onnx, .tflite, .mlpackage)."""
    from .export import ExportError, read_metadata

    if not path.exists():
        raise ExportError(f"file not found: {path}")
    doc = read_metadata(path)
    if doc is None:
        raise ExportError(f"{path} carries no mobile_distill metadata (was it exported by mdistill export?)")
    click.echo(json.dumps(doc, indent=2))
