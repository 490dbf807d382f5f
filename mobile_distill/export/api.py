"""``export(checkpoint, formats=...)``: convert, gate, and write only what passed.

For every format and precision: convert into a hidden temporary path in the output folder, embed
the metadata, run the finished file through its real runtime on real test images, apply the
parity gate, and only then rename it to its final name. A failed file is deleted (or moved to
``failed/`` with ``keep_failed``); a converter exception fails that row only, the other formats
still export. ``model.json`` lists every model file in the folder, kept true at each step even
under a kill (``manifest.py``); ``export_report.json`` lists every row of this run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..models.timm_nets import deploy_form
from ..utils.provenance import provenance
from ..utils.io import path_digest, remove_path as _remove, write_json_atomic
from . import formats as fmt_registry
from . import server as server_mod
from .manifest import Manifest, staging_path
from .metadata import build_card, embedded_document
from ..errors import ExportError
from .config import ExportConfig, export_config
from .parity import check_not_degenerate, gate, recall_at_1
from .report import failure_message
from .prepare import (ExportModule, InputSpec, Probe, check_file, embed, float_reference,  # noqa: F401
                      load_for_export, load_images, pick_calibration_samples, pick_parity_samples,
                      record_exception)  # embed, load_for_export: re-exported


def export(checkpoint: Optional[str | Path] = None, config: Optional[ExportConfig] = None, *, model=None,
           weights: Optional[str | Path] = None, contract=None, log: Callable[[str], None] = lambda _: None,
           **settings) -> Dict:
    """Export a trained checkpoint, or a model trained elsewhere, and prove each file against PyTorch.

    Args:
        checkpoint: a mobile_distill ``.pt`` checkpoint (or ``model``).
        config: an ``ExportConfig`` (default: its defaults): formats, precisions, input contract,
            gate images and ``thresholds``, calibration, mixed precision, output folder, ...
        settings: any ``ExportConfig`` field, applied on top of ``config``
            (``export(ckpt, formats=["onnx"], parity_samples=0)``).
        model: instead of a checkpoint, a model trained elsewhere: ``timm:NAME``,
            ``py:package.module:function`` or an ``nn.Module`` mapping a normalised batch to
            embeddings; ``data`` is then required (``export/outside.py``).
        weights: with ``model``: a state dict or ``.safetensors`` file to load into it.
        contract: with ``model``: an ``outside.Contract`` (image size, mean, std) overriding the model's own.
        log: called with one line per step.

    Returns:
        The report dict that is also written to ``export_report.json`` (``passed`` is False when
        any row failed: returned only with ``raise_on_failure=False``).

    Raises:
        ExportError: when a file failed the gate (after the report is written; ``.report`` holds it),
            unless ``raise_on_failure=False``; and with CheckpointError / DataError /
            MissingDependencyError before anything is written.
    """
    c = export_config(config, **settings)
    report = _export(checkpoint, c, model, weights, contract, log)
    message = failure_message(report)
    if message and c.raise_on_failure:
        raise ExportError(message, report=report)
    return report


def _export(checkpoint, c: ExportConfig, model, weights, contract, log) -> Dict:
    input_layout, input_dtype = c.input_layout, c.input_dtype
    parity_samples, calib_samples, thresholds, data, seed = c.parity_samples, c.calib_samples, c.thresholds, c.data, c.seed
    calibration, mixed_precision = c.calibration, c.mixed_precision
    modules, wanted = _checked_settings(c)
    checkpoint, ckpt, net, dataset, out_dir, what = _source(checkpoint, c, model, weights, contract)
    size, resize = int(ckpt["model"]["image_size"]), float(ckpt.get("config", {}).get("eval_resize", 1.0))
    qat_net, net = (net, float_reference(ckpt, checkpoint)) if "qat" in ckpt else (None, net)
    net, folded = deploy_form(net)  # MobileOne, RepViT, FastViT: the files hold the folded blocks
    if folded:
        log(f"re-parameterised {folded} blocks for inference (timm's reparameterize_model); the gate compares "
            "the files with the folded network")
    cfg = ckpt.get("config", {})
    parity = pick_parity_samples(dataset.test, parity_samples, seed)
    log(f"loading {len(parity)} test images for parity and {min(calib_samples, len(dataset.train))} "
        f"training images for calibration ({dataset.name})")
    images = load_images(parity, size, dataset.name, resize)
    labels = np.array([y for _, y in parity])
    calib = load_images(pick_calibration_samples(dataset.train, calib_samples, seed), size, dataset.name, resize)
    probe = Probe(net, dataset, size, resize, parity_samples or 256, seed, exclude=parity) if mixed_precision else None

    torch.manual_seed(seed)
    reference = embed(net, images)
    collapsed = check_not_degenerate(reference, thresholds, what)
    if collapsed:
        raise ExportError(f"refusing to export: {collapsed}")
    server_spec = server_mod.wanted(ckpt, c.teacher_gallery)
    server = server_mod.server_gallery(ckpt, server_spec, parity, dataset.name, log) if server_spec else None
    if server is not None:  # also refuses, before anything is written, sizes no recorded projection joins
        server_r1 = server.recall_at_1(reference, labels)
        log(f"PyTorch's queries against {server.name}'s gallery: Recall@1 {server_r1:.2f} (each file is gated on its drop)")
        if probe is not None:
            probe.server_for = lambda samples: server_mod.server_gallery(ckpt, server_spec, samples, dataset.name, log,
                                                                         "the mixed-precision search's")

    if model is not None:  # OUT/source/NAME.pt: verify and bench rebuild the model from it
        from ..checkpoint import save_checkpoint

        save_checkpoint(checkpoint, ckpt)
    out_dir.mkdir(parents=True, exist_ok=True)
    card = build_card(ckpt, checkpoint, out_dir)
    card["reparameterized_blocks"] = folded
    job = _Job(net, card, out_dir, images, labels, reference, calib, c, probe, log, Manifest(out_dir, card, log), server)
    rows: List[Dict] = []
    for fmt, module in modules.items():
        dtype = input_dtype if input_dtype in getattr(module, "INPUT_DTYPES", (input_dtype,)) else "float32"
        spec = InputSpec(size, input_layout or module.DEFAULT_LAYOUT, dtype)
        wrapped = ExportModule(net, spec)
        if qat_net is not None and getattr(module, "ACCEPTS_QAT", False):  # static int8 is the trained graph
            from ..qat import deployable

            fold = getattr(module, "QAT_FOLD_QUANTIZE", False)
            wrapped.qat = ExportModule(deployable(qat_net, ckpt["qat"], size, fold_quantize=fold), spec)
        for precision in wanted[fmt]:
            log(f"{fmt} {precision}: converting")
            rows.append(_export_one(job, module, fmt, precision, wrapped, spec))
            log(f"{fmt} {precision}: {rows[-1]['status']}")

    report = {
        "checkpoint": str(checkpoint), "out_dir": str(out_dir), "dataset": dataset.name,
        "data_spec": data or cfg.get("data", "emoji"), "parity_images": len(parity), "calibration_images": len(calib),
        "calibration": calibration, "mixed_precision": mixed_precision, "reparameterized_blocks": folded,
        "pytorch_recall@1": 100 * recall_at_1(reference, labels),
        **({"teacher_gallery": server.name, "teacher_gallery_recall@1_pytorch": server_r1} if server else {}),
        "thresholds": thresholds.as_dict(), "rows": rows, "passed": all(r["status"] != "failed" for r in rows),
        "provenance": provenance(),
    }
    write_json_atomic(out_dir / "export_report.json", report)
    return report


def _checked_settings(c: ExportConfig):
    """The format modules and precisions ``c`` asks for, with their converters installed, or an error."""
    modules = {n: fmt_registry.get(n) for n in fmt_registry.parse_formats(c.formats)}
    wanted = _resolve_precisions(modules, c.precisions or {})
    for module in modules.values():
        module.check_installed()
    from .tflite.mixed_precision import CALIBRATIONS

    if c.calibration not in CALIBRATIONS:
        raise ExportError(f"unknown calibration {c.calibration!r}; choose from {', '.join(CALIBRATIONS)}")
    if c.parity_samples < 0 or c.calib_samples < 1:
        raise ExportError("--parity-samples must be >= 0 (0 = all) and --calib-samples >= 1")
    return modules, wanted


def _source(checkpoint, c: ExportConfig, model, weights, contract):
    """What is exported: (checkpoint path, its payload, the network, the data set, the output folder,
    a name for messages). Nothing is written here: an outside model's checkpoint is saved only once
    the gate's images show it is not degenerate."""
    if model is not None:
        checkpoint, ckpt, net, dataset, out_dir = _outside(checkpoint, model, weights, contract, c.data, c.out_dir, c.name)
        return checkpoint, ckpt, net, dataset, out_dir, f"the model {model if isinstance(model, str) else ckpt['model']['arch']}"
    if checkpoint is None:
        raise ExportError("nothing to export: give a checkpoint, or model= (--model timm:NAME|py:module:function)")
    checkpoint = Path(checkpoint)
    ckpt, net, _, _, dataset = load_for_export(checkpoint, c.data)
    return checkpoint, ckpt, net, dataset, Path(c.out_dir) if c.out_dir else checkpoint.parent / "export", \
        f"the model in {checkpoint}"


def _outside(checkpoint, model, weights, contract, data, out_dir, name):
    """A model trained elsewhere, checked and built: its checkpoint's path (``OUT/source/NAME.pt``,
    written once the model passes the degenerate check) and payload, the network, the data set."""
    from ..data import create_dataset
    from .outside import Contract, outside_net, source_payload

    if checkpoint is not None:
        raise ExportError("give a checkpoint or a model (--model), not both")
    if not data:
        raise ExportError("a model trained elsewhere has no data set of its own: name the images of the parity gate "
                          "and of int8 calibration with --data (e.g. folder:PATH with train/ and test/)")
    dataset = create_dataset(data, progress=False)
    net = outside_net(model, str(weights) if weights else None, contract or Contract())
    out_dir = Path(out_dir) if out_dir else (Path(weights).parent if weights else Path.cwd()) / "export"
    return out_dir / "source" / f"{name}.pt", source_payload(net, data, model, weights), net, dataset, out_dir


def _resolve_precisions(modules: Mapping, requested: Mapping[str, Sequence[str]]) -> Dict[str, List[str]]:
    out = {}
    for fmt, module in modules.items():
        chosen = list(requested.get(fmt) or module.DEFAULT_PRECISIONS)
        bad = [p for p in chosen if p not in module.PRECISIONS]
        if bad:
            raise ExportError(f"{fmt} has no precision {', '.join(bad)}; choose from {', '.join(module.PRECISIONS)}")
        out[fmt] = chosen
    return out


@dataclass
class _Job:
    """What every file of one export shares: the network and its card, the gate's images with
    PyTorch's embeddings, the calibration images, the settings, and the folder's manifest."""

    net: torch.nn.Module
    card: Dict
    out_dir: Path
    images: np.ndarray
    labels: np.ndarray
    reference: torch.Tensor
    calib: np.ndarray
    config: ExportConfig
    probe: Optional["Probe"]
    log: Callable[[str], None]
    manifest: Manifest
    server: Optional[object] = None


def _export_one(job: _Job, module, fmt: str, precision: str, wrapped, spec: InputSpec) -> Dict:
    """Convert, gate, and publish (or drop) one file of the export."""
    net, card, out_dir, images, labels, reference = job.net, job.card, job.out_dir, job.images, job.labels, job.reference
    calib, thresholds, calibration, probe, log, server = (job.calib, job.config.thresholds, job.config.calibration,
                                                          job.probe, job.log, job.server)
    final = out_dir / f"{job.config.name}_{precision}{module.SUFFIX}"
    staging = staging_path(final)  # private to this process: exports may run side by side
    row = {"format": fmt, "precision": precision, "file": final.name, "input": spec.describe(),
           "output": {"name": "embedding", "shape": [1, net.embedding_dim], "dtype": "float32"},
           "runtime": module.RUNTIME, "status": "failed", "failures": [], "parity": {}}
    start = time.perf_counter()
    stage = {"name": "conversion"}  # what a converter or runtime exception is reported as
    try:
        try:
            row["details"] = module.convert(wrapped, spec, precision, staging, embedded_document(card, row), calib,
                                            calibration=calibration)
            row["convert_s"] = round(time.perf_counter() - start, 2)
            check_file(row, module, staging, net, spec, precision, images, labels, reference, thresholds, stage,
                       server)
            if row["failures"] and probe is not None and precision in getattr(module, "MIXED_PRECISIONS", ()):
                stage["name"] = "mixed-precision search"
                _retry_mixed(row, module, wrapped, spec, precision, staging, card, calib, calibration, probe,
                             net, images, labels, reference, thresholds, log, stage, server)
        except Exception as e:  # a converter's own error becomes this row's ✗, the other rows go on
            record_exception(row, stage, e)
        if not row["failures"]:
            row["status"] = "passed"
            row["sha256"] = path_digest(staging)
            row["size_bytes"] = _size(staging)
            job.manifest.publish(row, staging)  # described before it appears: a kill in between leaves no stray file
        else:
            row["status"] = "failed"
            if job.config.keep_failed and staging.exists():
                kept = out_dir / "failed" / final.name
                kept.parent.mkdir(exist_ok=True)
                _remove(kept)
                os.replace(staging, kept)
                row["kept_at"] = str(kept)
            _remove(staging)  # first: on a full disk, its bytes are what rewriting model.json needs
            job.manifest.drop(final.name)  # an older file of the same name would pass for this one
    finally:
        _remove(staging)
    return row


def _retry_mixed(row, module, wrapped, spec, precision, staging, card, calib, calibration, probe, net,
                 images, labels, reference, thresholds, log, stage, server=None) -> None:
    """The all-quantised file failed: keep its figures as ``post_training`` and search for the
    fewest float ops whose file passes the gate at half its allowed loss on the probe's images; the
    gate on the test images then takes it, or sends the search on to more float ops."""
    row["post_training"] = {"parity": row["parity"], "failures": row["failures"],
                            "quantization": row["details"].get("quantization")}
    log(f"{row['format']} {precision}: failed the gate; searching for a mixed-precision file")
    probe.load()
    _remove(staging)

    strict = thresholds.with_margin()

    def passes(model: bytes) -> bool:
        from .tflite.mixed_precision import embed

        return gate(probe.reference, embed(model, spec, probe.images), probe.labels, precision, strict,
                    probe.server).passed

    def confirm() -> bool:  # the gate on the test images, of the mix written at staging
        check_file(row, module, staging, net, spec, precision, images, labels, reference, thresholds, stage, server)
        stage["name"] = "mixed-precision search"
        return not row["failures"]

    details = module.convert_mixed(wrapped, spec, precision, staging, embedded_document(card, row), calib,
                                   probe.images, probe.reference, passes, calibration, log, confirm)
    row["details"] = {**row["details"], **details, "mixed_precision": True,
                      "probe": f"{len(probe.images)} images of {probe.source}"
                               + (" (and the teacher's gallery of them)" if probe.server is not None else "")}
    if not staging.exists():
        refused = details.get("gate_refusals", 0)
        last = f"; the last one: {row['failures'][-1]}" if refused and row["failures"] else ""
        row["failures"] = [
            f"mixed precision: no mix with at most half the weights in float passed the gate (at half its "
            f"allowed loss) on {len(probe.images)} images of {probe.source} and then the gate itself (tried "
            f"{len(details['mixed_search'])}; the gate refused {refused} that passed the search{last})"]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
