"""``mdistill``: parse, call the library, print. Every command is a thin wrapper over a function
importable from Python; heavy imports happen inside commands so ``--help`` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .bench.config import BenchConfig
from .cli_options import dataclass_options
from .config import TrainConfig
from .errors import BenchError, MdistillError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="mobile_distill")
@click.pass_context
def cli(ctx, debug):
    """Distil image-embedding models into small students, export them, benchmark them."""
    ctx.obj = {"debug": debug}


# ---------------------------------------------------------------- data
@cli.group()
def data():
    """Fetch, prepare and check data sets."""


@data.command("fetch")
@click.argument("name", type=click.Choice(["emoji"]))
@click.option("--vendors", default="default", show_default=True,
              help="Comma-separated emoji styles: google, twitter, openmoji, fluent_color, fluent_flat, "
                   "fluent_contrast (the openly licensed default), apple, facebook (opt-in: not openly "
                   "licensed), or 'all'.")
@click.option("--force", is_flag=True, help="Fetch again even if the data is already there.")
def data_fetch(name, vendors, force):
    """Fetch a data set that can be downloaded from a package registry (emoji: via npm)."""
    from .data import create_dataset, emoji
    from .data.emoji_vendors import parse_vendors

    chosen = parse_vendors(vendors)
    root = emoji.fetch(vendors=chosen, force=force, progress=True)
    summary = create_dataset(f"emoji:{','.join(chosen)}:{root}", progress=False).summary()
    click.echo(json.dumps(summary))
    click.echo(f"saved to {root} (licences: {root / 'LICENSE.md'})")


@data.command("prepare")
@click.argument("name", type=click.Choice(["cub", "cars", "sop"]))
@click.option("--archive", "archives", multiple=True, type=click.Path(path_type=Path),
              help="Official archive(s) already downloaded (Cars: the images .tgz and cars_annos.mat).")
@click.option("--download", is_flag=True, help="Download the official archive (needs internet).")
@click.option("--url", default=None, help="Download from this URL instead of the official one.")
@click.option("--dest", type=click.Path(path_type=Path), default=None, help="Where to unpack (default: the cache).")
def data_prepare(name, archives, download, url, dest):
    """Verify an official archive's checksum and unpack it where `--data NAME` finds it."""
    from .data.prepare import prepare

    if not archives and not download:
        raise click.UsageError("give --archive PATH or --download")
    archive = (list(archives) if len(archives) > 1 else archives[0]) if archives else None
    root = prepare(name, archive=archive, download=download, url=url, dest=dest)
    click.echo(f"saved to {root}")


@data.command("check")
@click.argument("spec")
def data_check(spec):
    """Decode every image of data set SPEC (e.g. emoji, folder:PATH) and list the unreadable ones."""
    from .data import create_dataset, find_bad_images

    splits = create_dataset(spec)
    every = [p for p, _ in splits.train] + [p for p, _ in splits.test] + list(splits.unlabeled)
    bad = find_bad_images(every, splits.name)
    click.echo(json.dumps(splits.summary()))
    for _, reason in bad:
        click.echo(f"✗ {reason}")
    if bad:
        raise MdistillError(f"{len(bad)} of {len(every)} images in {spec!r} are unreadable")
    click.echo(f"✓ all {len(every)} images readable")


@data.command("info")
@click.argument("spec")
def data_info(spec):
    """Print class and image counts of data set SPEC."""
    from .data import create_dataset

    click.echo(json.dumps(create_dataset(spec, progress=False).summary(), indent=2))


# ---------------------------------------------------------------- models
@cli.command("models")
def models_cmd():
    """List the registered architectures (any timm model also trains as --model timm:NAME, and your own
    network as --model py:package.module:function)."""
    from .models import list_models

    for name in list_models():
        click.echo(name)


# ---------------------------------------------------------------- train
@cli.command("train", context_settings={"max_content_width": 120})
@click.option("--config", "config_file", default=None, help="YAML config file, or a built-in name (teacher_emoji).")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue from a run's last.pt.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Run on N local processes under torchrun (DDP; gloo on CPU, nccl on CUDA).")
@dataclass_options(TrainConfig, keep_unset=True)  # None = keep the config file's value
def train_cmd(config_file, resume, quiet, nproc, **overrides):
    """Train a teacher (metric learning) or, with --teacher and --distill, a student.

    \b
    Examples:
      mdistill train --config teacher_emoji
      mdistill train --config student_emoji --teacher runs/teacher/last.pt
      mdistill train --model mobilenet_v1_025 --pretrained none --teacher T.pt --distill relative:1:normalize=true
      mdistill train --resume runs/teacher/last.pt
      mdistill train --qat --resume runs/student/last.pt       # quantisation-aware fine-tuning
      mdistill train --config student_emoji --teacher T.pt --nproc 2   # DDP under torchrun
    """
    from .checkpoint import load_checkpoint
    from .config import load_yaml, make_config
    from .evaluate import format_table
    from .distributed import is_main, shutdown
    from .qat import qat_overrides
    from .train import main

    overrides = {k: (v or None) if isinstance(v, tuple) else v for k, v in overrides.items()}
    cfg = None
    if resume is not None and overrides.pop("qat", None):  # a new QAT run from a finished one
        if config_file:
            raise click.UsageError("--qat --resume takes the run's own config; drop --config")
        base = qat_overrides(resume, load_checkpoint(resume), overrides.pop("epochs"), overrides.pop("lr"))
        cfg, resume = make_config(base, **overrides), None
    elif resume is None:
        cfg = make_config(load_yaml(config_file) if config_file else {}, **overrides)
    elif config_file or any(v is not None for v in overrides.values()):
        raise click.UsageError("--resume continues with the run's own config; drop the other options")
    if nproc and nproc > 1:  # the same command again under torchrun, with the config resolved here
        from .train.ddp import launch_train

        sys.exit(launch_train(nproc, cfg, resume, quiet))
    finished = False
    try:
        results = main(cfg, resume=resume, progress=not quiet)
        if is_main():
            click.echo(format_table(results["test"], title=f"{results['model']['arch']} on test classes"))
            click.echo(f"saved to {results['run_dir']}")
        finished = True
    finally:
        shutdown(sync=finished)


# ---------------------------------------------------------------- eval
@cli.command("eval")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--data", "data_spec", default=None, help="Data set (default: the one the checkpoint was trained on).")
@click.option("--model", default=None, help="Evaluate an untrained architecture's pooled features instead of a checkpoint.")
@click.option("--pretrained", default="imagenet", show_default=True, help="With --model: imagenet or none.")
@click.option("--image-size", type=int, default=None, help="Input size (default: the checkpoint's).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write the metrics here.")
@click.option("--skip-bad-images", is_flag=True, help="Drop unreadable images instead of failing.")
@click.option("--embeddings", type=click.Path(path_type=Path), default=None,
              help="Score precomputed embeddings (.npy, one row per image of the split, in data-set order).")
@click.option("--teacher", "teacher_spec", default=None, metavar="SPEC",
              help="Any teacher, untuned: a checkpoint, timm:NAME, tv:NAME, py:module:function or FILE.onnx.")
@click.option("--teacher-weights", default="", help="With --teacher timm:/tv:/py:, local weights (offline).")
@click.option("--gallery-model", default=None, metavar="SPEC",
              help="Asymmetric: CHECKPOINT (or an exported .onnx/.tflite/.mlpackage/.pte) embeds the queries, SPEC (a "
                   "checkpoint, timm:, tv:, py: or ONNX) the gallery; the student's recorded projection and centre apply.")
@click.option("--gallery-weights", default="", help="With --gallery-model timm:/tv:/py:, local weights (offline).")
def eval_cmd(checkpoint, data_spec, model, pretrained, image_size, split, json_out, skip_bad_images, embeddings,
             teacher_spec, teacher_weights, gallery_model, gallery_weights):
    """Recall@K and MAP@R of CHECKPOINT (a student checkpoint, or an exported file run in its own runtime; or of
    --model's raw features, --teacher SPEC, or --embeddings) on a data set's split; with --gallery-model,
    CHECKPOINT's queries against another model's gallery."""
    from .evaluate import evaluate_checkpoint, evaluate_embeddings, evaluate_pretrained, evaluate_teacher, format_table
    from .asymmetric_eval import is_exported
    from .utils.io import write_json_atomic

    if sum(x is not None for x in (checkpoint, model, embeddings, teacher_spec)) != 1:
        raise click.UsageError("give exactly one of CHECKPOINT, --model NAME, --teacher SPEC or --embeddings FILE.npy")
    if gallery_model is not None:
        if checkpoint is None:
            raise click.UsageError("--gallery-model needs the query model: a student CHECKPOINT or its exported file")
        from .asymmetric_eval import evaluate_asymmetric
        from .evaluate import format_comparison

        result = evaluate_asymmetric(checkpoint, gallery_model, data_spec, gallery_weights, split,
                                     log=lambda m: click.echo(m, err=True))
        rows = {f"{checkpoint} → {gallery_model} (asymmetric)": result["asymmetric"],
                f"{checkpoint} (its own gallery)": result["query"], f"{gallery_model} (its own gallery)": result["gallery"]}
        click.echo(format_comparison(rows, title=f"{result['dataset']} {split}: queries by {checkpoint}, gallery by "
                                                 f"{gallery_model}; bridge: {result['bridge']}"))
        if json_out:
            write_json_atomic(json_out, result)
            click.echo(f"saved to {json_out}")
        return
    if teacher_spec is not None:
        metrics = evaluate_teacher(teacher_spec, data_spec or "emoji", image_size, teacher_weights, split, skip_bad_images)
        title = f"{teacher_spec} (untuned teacher)"
    elif embeddings is not None:
        metrics = evaluate_embeddings(embeddings, data_spec or "emoji", split, skip_bad_images)
        title = str(embeddings)
    elif checkpoint is not None and is_exported(checkpoint):  # the phone's file, in its own runtime
        from .asymmetric_eval import evaluate_exported

        metrics = evaluate_exported(checkpoint, data_spec, split, log=lambda m: click.echo(m, err=True))
        title = str(checkpoint)
    elif checkpoint is not None:
        metrics = evaluate_checkpoint(checkpoint, data_spec, image_size, split, skip_bad_images)
        title = str(checkpoint)
    else:
        metrics = evaluate_pretrained(model, data_spec or "emoji", image_size or 112, pretrained, split, skip_bad_images)
        title = f"{model} ({pretrained} features)"
    click.echo(format_table(metrics, title=title))
    if json_out:
        write_json_atomic(json_out, metrics)
        click.echo(f"saved to {json_out}")


# ---------------------------------------------------------------- export (cli_export.py)
from .cli_export import export_cmd, metadata_cmd, quant_report_cmd, verify_cmd  # noqa: E402

from .cli_web import web_cmd  # noqa: E402

for _command in (export_cmd, quant_report_cmd, verify_cmd, metadata_cmd, web_cmd):
    cli.add_command(_command)


# ---------------------------------------------------------------- bench
@cli.command("bench", context_settings={"max_content_width": 120})
@click.argument("export_dir", type=click.Path(path_type=Path))
@dataclass_options(BenchConfig)
@click.option("--adb", "adb_serial", default=None, is_flag=False, flag_value="", metavar="[SERIAL]",
              help="Also run on an Android phone through adb and the demo app's benchmark mode.")
@click.option("--quiet", is_flag=True, help="Only the table and the final line.")
def bench_cmd(export_dir, adb_serial, quiet, **settings):
    """Size, latency, throughput, memory and Recall@K of every file in an export folder."""
    from .bench import bench, failure_message, format_table

    report = bench(export_dir, adb="adb" if adb_serial is not None else None, adb_serial=adb_serial or None,
                   raise_on_failure=False, log=(lambda _: None) if quiet else (lambda m: click.echo(m, err=True)),
                   **settings)
    click.echo(format_table(report))
    out = settings["out_dir"] or Path(export_dir) / "bench"
    click.echo(f"saved to {out} (bench.json, bench.md, {', '.join(report['plots'])})")
    failed = failure_message(report)
    if failed:
        raise BenchError(failed)


# ---------------------------------------------------------------- demo
@cli.command("demo")
@click.option("--data", default="", metavar="SPEC", help="Another data set (folder:PATH, cub, ...) instead of emoji.")
@click.option("--out", "out_dir", default="runs", show_default=True, help="Where the runs and demo.json go.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo_cmd(data, out_dir, quiet):
    """The main job on the embedded default: emoji data, teacher, student alone and distilled, side by side."""
    from .demo import run

    click.echo(run(out_dir=out_dir, progress=not quiet, data=data))


def main(argv=None):
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except MdistillError as e:
        if debug:
            raise
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    except OSError as e:  # a full disk, a read-only folder: the machine's problem, told in one line
        from .utils.io import storage_error

        error = storage_error(e)
        if error is None or debug:
            raise
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
