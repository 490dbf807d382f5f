"""ExecuTorch, the fourth format, through its real converter (torch.export, the XNNPACK partitioner,
PT2E int8 with XNNPACKQuantizer) and its real runtime (``executorch.runtime`` with XNNPACK): the
gate, the embedded metadata, ``verify`` of a damaged file, the input contract, and bench rows timed
beside TFLite's in one run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli, train_tiny_student

import executorch.runtime  # noqa: F401  (part of `make setup`: a broken install must fail, not skip)

from mobile_distill.checkpoint import load_checkpoint, model_from_checkpoint
from mobile_distill.export import export, read_metadata
from mobile_distill.export.prepare import InputSpec, embed, load_images
from mobile_distill.export.verify import verify
from mobile_distill.runtime.executorch import ExecutorchRunner


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny resnet18 student (well-separated classes: int8 rounding flips no neighbour on any
    CPU, conftest.train_tiny_student) exported to ExecuTorch and, for the bench, to TFLite."""
    root = tmp_path_factory.mktemp("executorch")
    ckpt = train_tiny_student(root)
    out = root / "export"
    report = export(ckpt, formats=["executorch", "tflite"], out_dir=out, parity_samples=0, calib_samples=48,
                    precisions={"tflite": ["float32", "int8"]}, mixed_precision=False)
    return {"ckpt": ckpt, "out": out, "report": report}


def _row(report, fmt, precision):
    return next(r for r in report["rows"] if r["format"] == fmt and r["precision"] == precision)


@pytest.mark.slow
def test_float32_and_int8_programs_pass_the_gate(exported):
    report, out = exported["report"], exported["out"]
    f32, i8 = _row(report, "executorch", "float32"), _row(report, "executorch", "int8")
    for row in (f32, i8):
        assert row["status"] == "passed", row["failures"]
        assert row["runtime"] == "ExecuTorch runtime (XNNPACK)" and row["parity"]["images"] == 32
        assert (out / row["file"]).is_file() and row["file"].endswith(".pte")
        # XNNPACK runs the network; only the final L2 normalisation may stay on portable kernels
        assert row["details"]["delegated_partitions"] >= 1
        left = " ".join(row["details"]["portable_ops"])
        assert not any(op in left for op in ("convolution", "addmm", "linear", "mm.")), row["details"]
    assert f32["parity"]["cosine_min"] >= 0.9999
    assert i8["size_bytes"] <= 0.4 * f32["size_bytes"]
    assert i8["details"]["quantization"]["quantizer"] == "PT2E XNNPACKQuantizer"
    # int8 really computes in int8: it drifts from PyTorch, within the int8 gate
    assert i8["parity"]["cosine_min"] < 0.99999 < f32["parity"]["cosine_min"]
    card = json.loads((out / "model.json").read_text())
    assert {(a["format"], a["precision"]) for a in card["artifacts"]} >= {("executorch", "float32"),
                                                                          ("executorch", "int8")}


@pytest.mark.slow
def test_the_program_carries_its_metadata_and_matches_pytorch(exported):
    out, ckpt = exported["out"], exported["ckpt"]
    doc = read_metadata(out / "student_float32.pte")
    assert doc["artifact"]["format"] == "executorch" and doc["artifact"]["precision"] == "float32"
    assert doc["artifact"]["input"]["shape"] == [1, 3, 32, 32] and doc["model"]["image_size"] == 32
    net = model_from_checkpoint(load_checkpoint(ckpt)).eval()
    from mobile_distill.data import create_dataset

    data = create_dataset(load_checkpoint(ckpt)["config"]["data"], progress=False)
    images = load_images(data.test[:6], 32, data.name)
    ours = ExecutorchRunner(out / "student_float32.pte", InputSpec(32, "nchw", "float32"), threads=2)(images)
    assert np.abs(ours - embed(net, images)).max() < 1e-5
    with pytest.raises(ValueError, match=r"the file's input is float32\[1, 3, 32, 32\], expected uint8"):
        ExecutorchRunner(out / "student_float32.pte", InputSpec(32, "nchw", "uint8"), threads=1)
    result = run_cli("metadata", str(out / "student_int8.pte"))
    assert '"precision": "int8"' in result.stdout


@pytest.mark.slow
def test_uint8_camera_bytes_input(exported, tmp_path):
    report = export(exported["ckpt"], formats=["executorch"], precisions={"executorch": ["float32"]},
                    input_dtype="uint8", out_dir=tmp_path, parity_samples=0)
    row, = report["rows"]
    assert row["status"] == "passed" and row["input"]["dtype"] == "uint8" and row["parity"]["cosine_min"] >= 0.9999


@pytest.mark.slow
def test_verify_refuses_a_damaged_program_in_one_line(exported, tmp_path):
    out, ckpt = exported["out"], str(exported["ckpt"])
    good = tmp_path / "student_float32.pte"
    shutil.copy(out / "student_float32.pte", good)
    assert verify(good, ckpt, parity_samples=0)["passed"]

    truncated = tmp_path / "cut" / "student_float32.pte"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = run_cli("verify", str(truncated), "--checkpoint", ckpt, "--parity-samples", "0", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and "is not a readable ExecuTorch program file" in error[0], result.stderr
    assert "File size is too small" in error[0]  # the runtime's own reason, not its bare error code

    # The same file with the head's first 8 rows negated in its constant data: it loads and runs,
    # and the gate catches the numbers.
    net = model_from_checkpoint(load_checkpoint(ckpt))
    head = net.head.weight.detach().numpy().astype(np.float32)
    data = good.read_bytes()
    at = data.find(head.tobytes())
    assert at > 0 and data.count(head.tobytes()) == 1
    edited_head = head.copy()
    edited_head[:8] *= -1
    edited = tmp_path / "edited" / "student_float32.pte"
    edited.parent.mkdir()
    edited.write_bytes(data[:at] + edited_head.tobytes() + data[at + head.nbytes:])
    report = verify(edited, ckpt, parity_samples=0)
    assert not report["passed"] and any(f.startswith("cosine min") for f in report["rows"][0]["failures"])
    result = run_cli("verify", str(edited), "--checkpoint", ckpt, "--parity-samples", "0", check=False)
    assert result.returncode == 1 and "✗ executorch float32" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow
def test_bench_times_programs_beside_tflite_in_one_run(exported, tmp_path):
    result = run_cli("bench", str(exported["out"]), "--threads", "1", "--runs", "10", "--warmup", "2",
                     "--anchor", "off", "--out", str(tmp_path))
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {(r["format"], r["precision"]): r for r in report["rows"]}
    assert {("executorch", "float32"), ("executorch", "int8"), ("tflite", "float32"), ("tflite", "int8")} <= set(rows)
    for key in (("executorch", "float32"), ("executorch", "int8")):
        row = rows[key]
        assert row["status"] == "ok" and row["threads"]["1"]["median_ms"] > 0, row
        assert row["threads"]["1"]["throughput"]["batch_size"] == 1  # exported at batch 1, as TFLite
        assert row["recall"]["recall@1"] == rows[("tflite", key[1])]["recall"]["recall@1"]
    assert rows[("executorch", "int8")]["speedup_vs_float32"]["1"] > 0
    assert "executorch" in result.stdout


def test_missing_executorch_is_the_clear_missing_extra_error(tmp_path, monkeypatch):
    import builtins

    from mobile_distill.errors import MissingDependencyError
    from mobile_distill.export import executorch as et_format

    real_import = builtins.__import__

    def no_executorch(name, *args, **kwargs):
        if name.startswith("executorch"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_executorch)
    with pytest.raises(MissingDependencyError, match=r"ExecuTorch export needs executorch\.exir: pip install "
                                                     r"'mobile_distill\[export\]'"):
        et_format.check_installed()
