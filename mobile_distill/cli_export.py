"""``mdistill export``, ``quant-report``, ``verify`` and ``metadata``: the commands that write or check
exported files (registered on the ``mdistill`` group in ``cli.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli_options import dataclass_options, pop_fields
from .export.config import ExportConfig, Thresholds


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
@dataclass_options(ExportConfig)
@dataclass_options(Thresholds)
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
def export_cmd(checkpoint, model_spec, weights, image_size, mean, std, android_dir, gallery, gallery_model, gallery_limit,
               browser, quiet, **settings):
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

    thresholds = Thresholds(**pop_fields(Thresholds, settings))
    config = ExportConfig(thresholds=thresholds, raise_on_failure=False, **settings)  # the table first, then the error
    if android_dir is not None:
        from .export.android import check_assets_dir

        check_assets_dir(android_dir)  # before minutes of export, not after
        if gallery_model != "student" and checkpoint is not None:
            from .checkpoint import load_checkpoint
            from .export.android import check_gallery_model
            from .export.metadata import teacher_index

            ckpt = load_checkpoint(checkpoint)
            check_gallery_model(gallery_model, teacher_index(ckpt) if ckpt.get("teacher") else None, str(checkpoint))
    report = export(checkpoint, config, model=model_spec, weights=weights, contract=contract,
                    log=(lambda _: None) if quiet else (lambda m: click.echo(m, err=True)))
    if browser:
        from .web.gate import add_browser_rows

        add_browser_rows(report, data=config.data, parity_samples=config.parity_samples, thresholds=thresholds,
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
    from .export.tflite.quant_report import markdown, quant_report

    report = quant_report(checkpoint, precision=precision, out_dir=out_dir, calibration=calibration,
                          calib_samples=calib_samples, probe_samples=probe_samples, data=data_spec,
                          log=lambda m: click.echo(m, err=True))
    click.echo(markdown(report, top=top))
    click.echo(f"saved to {', '.join(report['files'])}")


@click.command("verify", context_settings={"max_content_width": 120})
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="The checkpoint FILE was exported from (default: the one its metadata names).")
@dataclass_options(ExportConfig, only=("parity_samples", "data", "teacher_gallery"))
@dataclass_options(Thresholds)
@click.option("--browser", is_flag=True,
              help="Also gate FILE (.tflite or .onnx) in headless Chromium, inside the web app (LiteRT.js or "
                   "ONNX Runtime Web), with the same thresholds: a row of its own.")
@click.option("--backend", type=click.Choice(["wasm", "webgpu"]), default="wasm", show_default=True,
              help="With --browser: the browser runtime's backend.")
def verify_cmd(file, checkpoint, parity_samples, data, teacher_gallery, browser, backend, **gate):
    """Run an exported FILE through the parity gate again (after copying or editing it)."""
    from .export import ExportError, format_report
    from .export.verify import verify

    thresholds = Thresholds(**gate)
    report = verify(file, checkpoint=checkpoint, data=data, parity_samples=parity_samples,
                    thresholds=thresholds, teacher_gallery=teacher_gallery)
    if browser:
        from .web.gate import browser_verify

        row = browser_verify(file, checkpoint=checkpoint, data=data, parity_samples=parity_samples,
                             thresholds=thresholds, backend=backend, log=lambda m: click.echo(m, err=True))["rows"][0]
        report["rows"].append(row)
        report["passed"] = report["passed"] and row["status"] == "passed"
    click.echo(format_report(report))
    if not report["passed"]:
        raise ExportError(f"{file} failed the parity gate (see the ✗ lines above)")


@click.command("metadata")
@click.argument("path", type=click.Path(path_type=Path))
def metadata_cmd(path):
    """Print the mobile_distill metadata embedded in an exported file (.onnx, .tflite, .mlpackage, .pte)."""
    from .export import ExportError, read_metadata

    if not path.exists():
        raise ExportError(f"file not found: {path}")
    doc = read_metadata(path)
    if doc is None:
        raise ExportError(f"{path} carries no mobile_distill metadata (was it exported by mdistill export?)")
    click.echo(json.dumps(doc, indent=2))
