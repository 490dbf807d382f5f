"""Quantisation-aware training end to end on a tiny student: `mdistill train --qat --resume`, the
fake-quantised graph's bookkeeping (observers, frozen ranges and BatchNorm statistics, resume), and
its export: the static int8 file is the trained graph itself, gated against the float student."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import run_cli, train_tiny_student

import litert_torch  # noqa: F401  (part of `make setup`)

from mobile_distill.checkpoint import load_checkpoint, model_from_checkpoint
from mobile_distill.data import create_dataset
from mobile_distill.export import export
from mobile_distill.export.prepare import load_images
from mobile_distill.models import create_model
from mobile_distill.qat import QatStudent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qat")
    start = train_tiny_student(root)
    run_cli("train", "--qat", "--resume", start, "--epochs", "4", "--quiet")
    return {"root": root, "start": start, "qat": root / "runs" / "tiny-qat" / "last.pt"}


@pytest.mark.slow
def test_qat_run_fine_tunes_the_float_student_it_started_from(runs):
    start, q = load_checkpoint(runs["start"]), load_checkpoint(runs["qat"])
    cfg = q["config"]
    assert cfg["qat"] and cfg["init_from"] == str(runs["start"]) and cfg["epochs"] == 4
    assert cfg["teacher"] == str(runs["start"]) and cfg["distill"] == ["absolute:1"] and cfg["loss"] == "none"
    assert cfg["lr"] == pytest.approx(start["config"]["lr"] * 0.01)
    record = q["qat"]
    # the float reference is the starting weights, bit for bit; the trained weights moved
    assert all(torch.equal(record["float_reference"][k], v) for k, v in start["state_dict"].items())
    moved = [k for k, v in start["state_dict"].items() if v.is_floating_point() and not torch.equal(q["state_dict"][k], v)]
    assert moved
    # observers learned finite activation ranges
    ranges = [v for k, v in record["state"].items() if k.endswith(("min_val", "max_val"))]
    assert ranges and all(torch.isfinite(v).all() for v in ranges)


@pytest.mark.slow
def test_activation_observers_learn_only_in_unfrozen_training():
    torch.manual_seed(0)
    student = QatStudent(create_model("mobilenet_v1_025", 16, "none", 32), [], 32)
    x = torch.rand(8, 3, 32, 32)
    student.train()
    student(x)
    activations = {n for n, m in student.graph.named_modules()
                   if hasattr(m, "fake_quant_enabled") and m.qscheme != torch.per_channel_symmetric}
    state = lambda: {k: v.clone() for k, v in student.quantizer_state()["state"].items()  # noqa: E731
                     if k.split(".")[0] in activations and not k.endswith("_enabled")}  # ranges, not switches
    assert len(activations) > 10
    bn = lambda: [b.clone() for n, b in student.net.named_buffers() if n.endswith("running_mean")]  # noqa: E731
    before = state()
    student.train()
    student(x * 2)
    assert any(not torch.equal(before[k], v) for k, v in state().items())  # training moves the ranges
    before, stats = state(), bn()
    student.eval()
    student(x * 3)  # evaluating (on test images, say) must not calibrate on them
    assert all(torch.equal(before[k], v) for k, v in state().items())
    student.set_epoch(3, 4)  # the last quarter: ranges and BatchNorm statistics frozen in training too
    student.train()
    train_out = student(x * 3)
    assert all(torch.equal(before[k], v) for k, v in state().items())
    assert all(torch.equal(a, b) for a, b in zip(stats, bn()))
    student.eval()
    assert torch.allclose(train_out, student(x * 3))  # frozen training computes what the int8 file will
    student.set_epoch(0, 4)
    student.train()
    student(x * 3)
    assert any(not torch.equal(before[k], v) for k, v in state().items())
    # whatever the length, the first epoch learns the ranges and the last trains on frozen ones
    # (a 2-epoch run used to freeze from its first epoch: ranges never learned, a broken file)
    for epochs in range(2, 9):
        frozen = []
        for epoch in range(epochs):
            student.set_epoch(epoch, epochs)
            frozen.append(student.frozen)
        assert not frozen[0] and frozen[-1] and frozen == sorted(frozen), (epochs, frozen)


@pytest.mark.slow
def test_qat_resume_after_kill_is_bit_identical(runs, tmp_path):
    from conftest import run_killed_then_resumed

    root = tmp_path / "r"
    # the same QAT run as the fixture's uninterrupted one (4 epochs), killed after epoch 1 and resumed
    args = ["--qat", "--resume", str(runs["start"]), "--epochs", "4", "--out-dir", str(root)]
    killed_at = run_killed_then_resumed([*args, "--name", "killed"], root / "killed" / "last.pt", kill_after_epoch=1)
    assert killed_at in (1, 2, 3)
    a, b = load_checkpoint(runs["qat"]), load_checkpoint(root / "killed" / "last.pt")
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    assert all(torch.equal(v, b["qat"]["state"][k]) for k, v in a["qat"]["state"].items())


@pytest.mark.slow
def test_qat_refuses_to_restart_a_qat_run(runs):
    result = run_cli("train", "--qat", "--resume", runs["qat"], check=False)
    assert result.returncode != 0 and "already a QAT run" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_qat_export_is_the_trained_int8_network_gated_against_the_float_student(runs, tmp_path):
    q = load_checkpoint(runs["qat"])
    report = export(runs["qat"], formats=["tflite"], out_dir=tmp_path, parity_samples=0, calib_samples=16,
                    precisions={"tflite": ["float32", "int8"]}, mixed_precision=False, keep_failed=True,
                    raise_on_failure=False)
    rows = {r["precision"]: r for r in report["rows"]}
    assert rows["int8"]["details"]["quantization"]["calibration"].startswith("none: the activation ranges")
    # the gate's reference is the float student the run started from: the float32 file holds it
    start = model_from_checkpoint(load_checkpoint(runs["start"])).eval()
    data = create_dataset(q["config"]["data"], progress=False)
    images = load_images(data.test, 32, data.name)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    with torch.no_grad():
        float_start = start(x).numpy()
    assert report["pytorch_recall@1"] == pytest.approx(100 * _recall1(float_start, [y for _, y in data.test]))
    int8 = tmp_path / ("student_int8.tflite" if rows["int8"]["status"] == "passed" else "failed/student_int8.tflite")
    # the file computes the trained fake-quantised graph (its ranges, not a new calibration)
    from mobile_distill.runtime.tflite import TfliteRunner
    from mobile_distill.export.prepare import InputSpec

    student = QatStudent(model_from_checkpoint(q), q["qat"]["stages"], 32)
    student.load_quantizer_state(q["qat"])
    student.eval()
    with torch.no_grad():
        fake = torch.nn.functional.normalize(student(x), dim=1).numpy()
    tfl = TfliteRunner(int8, InputSpec(32, "nhwc", "float32"), threads=1)(images)
    assert float((tfl * fake).sum(1).min()) > 0.99
    # ... and the same gate passed it against the float student: the tiny student separates its classes
    # by a wide margin (conftest.train_tiny_student), so int8 rounding flips no neighbour on any CPU
    gate = rows["int8"]["parity"]
    assert gate["images"] == 32 and rows["int8"]["status"] == "passed", rows["int8"]["failures"]


@pytest.mark.slow
def test_qat_int8_program_is_the_trained_graph(runs, tmp_path):
    """ExecuTorch takes a QAT checkpoint's int8 graph as trained, as TFLite does: no new calibration,
    the program computes the fake-quantised network, and the gate against the float student passes."""
    from mobile_distill.export.prepare import InputSpec
    from mobile_distill.runtime.executorch import ExecutorchRunner

    q = load_checkpoint(runs["qat"])
    report = export(runs["qat"], formats=["executorch"], out_dir=tmp_path, parity_samples=0,
                    precisions={"executorch": ["int8"]})
    row, = report["rows"]
    assert row["status"] == "passed", row["failures"]
    assert row["details"]["quantization"]["calibration"].startswith("none: the activation ranges")
    data = create_dataset(q["config"]["data"], progress=False)
    images = load_images(data.test, 32, data.name)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    student = QatStudent(model_from_checkpoint(q), q["qat"]["stages"], 32)
    student.load_quantizer_state(q["qat"])
    student.eval()
    with torch.no_grad():
        fake = torch.nn.functional.normalize(student(x), dim=1).numpy()
    pte = ExecutorchRunner(tmp_path / row["file"], InputSpec(32, "nchw", "float32"), threads=1)(images)
    assert float((pte * fake).sum(1).min()) > 0.99


@pytest.mark.slow
def test_qat_keeps_named_modules_in_float_in_training_and_in_the_int8_file(runs, tmp_path):
    """--qat-float backbone.stages.0: that stage trains unquantised and stays float in the int8 file
    (its convs read float inputs and float weights); every later conv is int8; model.json says so."""
    from ai_edge_litert.interpreter import Interpreter

    run_cli("train", "--qat", "--resume", runs["start"], "--epochs", "1", "--qat-float", "backbone.stages.0",
            "--out-dir", tmp_path, "--name", "keep", "--quiet")
    q = load_checkpoint(tmp_path / "keep" / "last.pt")
    assert q["qat"]["float_modules"] == ["backbone.stages.0"]
    report = export(tmp_path / "keep" / "last.pt", formats=["tflite"], out_dir=tmp_path / "x", parity_samples=0,
                    precisions={"tflite": ["int8"]}, mixed_precision=False, keep_failed=True,
                    raise_on_failure=False)
    row, = report["rows"]
    assert row["details"]["quantization"]["float_modules"] == ["backbone.stages.0"]
    path = tmp_path / "x" / ("student_int8.tflite" if row["status"] == "passed" else "failed/student_int8.tflite")
    interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    convs = [[dtypes[i] for i in op["inputs"][:2]] for op in interp._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert convs[0] == [np.float32, np.float32]  # resnet18's stage 0 is its stem: one conv
    assert convs[-1] == [np.int8, np.int8] and sum(c == [np.int8, np.int8] for c in convs) == len(convs) - 1
    proc = run_cli("train", "--qat", "--resume", runs["start"], "--qat-float", "backbone.nope", "--out-dir", tmp_path,
                   check=False)
    assert proc.returncode == 1 and "--qat-float 'backbone.nope'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_qat_and_post_training_int8_of_a_tiny_student_both_pass(runs, tmp_path):
    """Must-show 5 of issue 11 asks for a tiny model whose QAT file passes a gate that its post-training
    file fails. On tiny models that does not happen, and this test shows why: the tiny student is so
    insensitive to int8 that post-training already passes, near lossless (cosine mean >= 0.999), so
    QAT has nothing to win; what it must do, and does, is pass too (through the same gate, against
    the float student it started from). The case QAT is for, the 64-px table student where
    post-training loses 2.8 points, is measured in the README."""
    rows = {}
    for name, ckpt in (("post-training", runs["start"]), ("qat", runs["qat"])):
        report = export(ckpt, formats=["tflite"], out_dir=tmp_path / name, parity_samples=0, calib_samples=32,
                        precisions={"tflite": ["int8"]}, mixed_precision=False)
        rows[name], = report["rows"]
    assert rows["qat"]["details"]["quantization"]["calibration"].startswith("none: the activation ranges")
    for name, row in rows.items():
        assert row["status"] == "passed", (name, row["failures"])  # on 32 images: not one query lost
    assert rows["post-training"]["parity"]["cosine_mean"] >= 0.999  # nothing left for QAT to win


@pytest.mark.slow
def test_quant_report_of_a_qat_run_analyses_its_float_reference(runs, tmp_path):
    from mobile_distill.export.tflite.quant_report import quant_report

    said = []
    report = quant_report(runs["qat"], precision="weight_int8", out_dir=tmp_path, calib_samples=8, probe_samples=16,
                          log=said.append)
    assert report["analysed"] == "qat.float_reference" and any("float student it started from" in m for m in said)
    assert report["all_quantised"]["embedding_cosine_mean"] > 0.9  # against that reference, not the QAT weights
    plain = quant_report(runs["start"], precision="weight_int8", out_dir=tmp_path / "start", calib_samples=8,
                         probe_samples=16)
    assert plain["analysed"] == "the checkpoint's weights"
    assert plain["all_quantised"]["embedding_cosine_mean"] == pytest.approx(report["all_quantised"]["embedding_cosine_mean"])


def _recall1(emb, labels):
    labels = np.asarray(labels)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(1)] == labels).mean())
