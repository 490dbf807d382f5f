"""Every registered architecture, briefly trained, through every export format: a new architecture
in the registry is covered without anyone adding it here. Its float files must pass the default gate
(CoreML: its conversion, reload and structural checks; numeric parity needs macOS)."""

from __future__ import annotations

import pytest
import torch

from conftest import train_tiny_student

import coremltools  # noqa: F401  (part of `make setup`: a broken install must fail, not skip)
import litert_torch  # noqa: F401

from mobile_distill.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mobile_distill.data import create_dataset
from mobile_distill.export import export
from mobile_distill.models import list_models
from mobile_distill.runtime.images import load_images

# float32 in every format; CoreML float16 (the same program at half compute precision) on the two
# default architectures. Quantised TFLite files are not expected to pass a gate after seconds of
# training; test_export and test_quantization cover them.
PRECISIONS = {"onnx": ["float32"], "tflite": ["float32"], "coreml": ["float32"]}
DEFAULTS = ("efficientnet_lite0", "mobilenet_v1_025")  # the default teacher and student


def tiny_trained(root, arch):
    """Two training steps, then BatchNorm statistics measured on the training images: seconds of
    training leave some architectures' running statistics near their initial values (torchvision's
    MobileNetV3 uses momentum 0.01), whose embeddings the export rightly refuses as degenerate."""
    path = train_tiny_student(root, model=arch, epochs=1, batches_per_epoch=2, embedding_dim=16)
    ckpt = load_checkpoint(path)
    net = model_from_checkpoint(ckpt)
    data = create_dataset(ckpt["config"]["data"], progress=False)
    x = torch.from_numpy(load_images(data.train, 32, data.name)).permute(0, 3, 1, 2).float().div(255)
    for bn in net.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the passes
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(x)
    save_checkpoint(path, {**ckpt, "state_dict": net.state_dict()})
    return path


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_exports_to_every_format(arch, tmp_path):
    ckpt = tiny_trained(tmp_path, arch)
    precisions = {**PRECISIONS, "coreml": ["float32", "float16"] if arch in DEFAULTS else ["float32"]}
    report = export(ckpt, formats=["all"], out_dir=tmp_path / "export", precisions=precisions,
                    parity_samples=0, mixed_precision=False, calib_samples=1)
    rows = {(r["format"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {(f, p) for f, ps in precisions.items() for p in ps}
    for (fmt, precision), row in rows.items():
        assert not row["failures"], (arch, fmt, precision, row["failures"])
        assert (tmp_path / "export" / row["file"]).exists()
        if fmt == "coreml" and row["status"] == "structural":  # Linux: no Core ML runtime
            assert row["structural"]["first_layer_max_abs_diff"] <= 1e-3
            assert row["structural"]["last_layer_max_rel_diff"] <= 1e-3
        else:
            assert row["status"] == "passed" and row["parity"]["images"] == 32
    assert rows[("onnx", "float32")]["parity"]["cosine_min"] > 0.9999
    assert rows[("tflite", "float32")]["parity"]["cosine_min"] > 0.9999
    # LiteRT wraps an NCHW op in two TRANSPOSEs; our graphs keep NHWC end to end
    assert rows[("tflite", "float32")]["details"]["transpose_ops"] == 0, rows[("tflite", "float32")]["details"]["ops"]
