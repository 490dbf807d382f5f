"""``mdistill bench`` on real exports of a briefly trained student: the JSON schema, Recall@K that
equals ``mdistill eval`` on the same embeddings, ``--min-recall``, and the ``--adb`` protocol
end to end against a stand-in device (tests/fake_adb.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, train_tiny_student

import litert_torch  # noqa: F401,E402  (part of `make setup`: a broken install must fail, not skip)

from mobile_distill.bench import BenchError, bench  # noqa: E402

FAST = dict(threads=[1], warmup=2, runs=5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from mobile_distill.export import export

    root = tmp_path_factory.mktemp("bench")
    ckpt = train_tiny_student(root)
    out = root / "export"
    report = export(ckpt, formats=["onnx", "tflite", "coreml"], out_dir=out, parity_samples=0, calib_samples=8,
                    precisions={"tflite": ["float32", "float16"], "coreml": ["float32"]})
    assert report["passed"]
    return out


@pytest.fixture(scope="module")
def benched(exported):
    return bench(exported, anchor="off", **FAST)


def _row(report, fmt, precision="float32"):
    return next(r for r in report["rows"] if r["format"] == fmt and r["precision"] == precision)


@pytest.mark.slow
def test_bench_json_schema_and_outputs(benched, exported):
    out = exported / "bench"
    on_disk = json.loads((out / "bench.json").read_text())
    assert on_disk["rows"] == benched["rows"] and on_disk["passed"]
    assert {"machine", "complexity", "threads", "test_images", "dataset", "architecture"} <= set(on_disk)
    assert on_disk["test_images"] == 32 and on_disk["complexity"]["params"] > 1e6
    assert [(r["format"], r["precision"]) for r in on_disk["rows"]] == [
        ("pytorch", "float32"), ("onnx", "float32"), ("tflite", "float32"), ("tflite", "float16"),
        ("coreml", "float32")]
    for row in on_disk["rows"][:4]:
        assert row["status"] == "ok", row
        lat = row["threads"]["1"]
        assert 0 < lat["median_ms"] <= lat["p90_ms"] and lat["throughput"]["images_per_s"] > 0
        assert row["size_bytes"] > 0 and 10 < row["peak_rss_mb"] < 4000
        assert set(row["recall"]) == {"recall@1", "recall@2", "recall@4", "recall@8"}
        assert (out / row["embeddings"]).is_file()
    assert _row(on_disk, "tflite")["threads"]["1"]["throughput"]["batch_size"] == 1  # fixed-batch file
    assert _row(on_disk, "onnx")["parity"]["cosine_min"] > 0.9999  # carried over from the export report
    coreml = _row(on_disk, "coreml")
    assert coreml["status"] == "skipped" and "macOS" in coreml["error"]  # no latency off macOS
    # but its retrieval, from the saved program in the reference interpreter: float32 = PyTorch's
    assert "reference interpreter" in coreml["recall_from"] and (out / coreml["embeddings"]).is_file()
    assert coreml["recall"] == _row(on_disk, "pytorch")["recall"]
    assert "| format | precision | status |" in (out / "bench.md").read_text()
    for png in on_disk["plots"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_recall_equals_mdistill_eval_on_the_same_embeddings(benched, exported):
    out = exported / "bench"
    data = json.loads((exported / "model.json").read_text())["model"]["dataset"]["spec"]
    for fmt, precision in [("pytorch", "float32"), ("onnx", "float32"), ("tflite", "float16")]:
        row = _row(benched, fmt, precision)
        metrics_file = out / f"eval_{fmt}_{precision}.json"
        run_cli("eval", "--embeddings", out / row["embeddings"], "--data", data, "--json", metrics_file)
        metrics = json.loads(metrics_file.read_text())
        for k in ("recall@1", "recall@2", "recall@4", "recall@8"):
            assert row["recall"][k] == pytest.approx(100 * metrics[k], abs=1e-9)
    assert _row(benched, "pytorch")["recall"]["recall@1"] > 50  # a model worth measuring


@pytest.mark.slow
def test_eval_refuses_embeddings_with_nan_rows(benched, exported, tmp_path):
    data = json.loads((exported / "model.json").read_text())["model"]["dataset"]["spec"]
    emb = np.load(exported / "bench" / _row(benched, "onnx", "float32")["embeddings"])
    emb[[3, 7]] = np.nan
    np.save(tmp_path / "nan.npy", emb)
    proc = run_cli("eval", "--embeddings", tmp_path / "nan.npy", "--data", data, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "recall@1" not in proc.stdout.lower()
    assert f"2 of {len(emb)} rows contain NaN or infinity (first: row 3, 7)" in proc.stderr


@pytest.mark.slow
def test_min_recall_fails_the_command(exported, tmp_path):
    proc = run_cli("bench", exported, "--min-recall", "101", "--anchor", "off", "--warmup", "1", "--runs", "2",
                   "--out", tmp_path / "b", "--quiet", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "✗ onnx float32: Recall@1" in proc.stdout and "< --min-recall 101" in proc.stdout
    assert proc.stderr.startswith("Error: benchmark failed for pytorch float32, onnx float32")
    assert (tmp_path / "b" / "bench.json").is_file()


@pytest.mark.slow
def test_missing_export_folder_and_required_anchor_are_clear_errors(tmp_path, exported):
    proc = run_cli("bench", tmp_path, check=False)
    assert proc.returncode == 1 and "no model.json in" in proc.stderr and "mdistill export" in proc.stderr
    with pytest.raises(BenchError, match="no Keras counterpart of resnet18"):
        bench(exported, anchor="on", out_dir=tmp_path / "a", **FAST)


def _fake_adb_on_path(tmp_path, monkeypatch, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    adb = bin_dir / "adb"
    adb.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).with_name('fake_adb.py')} \"$@\"\n")
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path / "device"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return tmp_path / "device"


@pytest.mark.slow
def test_adb_protocol_end_to_end_with_stand_in_device(exported, benched, tmp_path, monkeypatch):
    device = _fake_adb_on_path(tmp_path, monkeypatch)
    report = bench(exported, anchor="off", adb="adb", out_dir=tmp_path / "b", **FAST)
    row = report["rows"][-1]
    assert row["format"] == "tflite@FakePhone" and row["status"] == "ok" and row["device"]["model"] == "FakePhone"
    assert row["threads"]["1"]["median_ms"] > 0
    # the device ran the same .tflite on the same images: the same retrieval as the host's interpreter
    assert row["recall"] == _row(benched, "tflite")["recall"]
    calls = (device / "calls.log").read_text()
    assert "push" in calls and "model.tflite" in calls and "mdistill.mode benchmark" in calls
    assert not (device / "fs" / "sdcard" / "Android" / "data" / "com.mobile_distill.demo" / "files" / "bench").exists()


@pytest.mark.slow
@pytest.mark.parametrize("env, message", [
    ({"FAKE_ADB_STATE": "offline"}, "no Android device ready (error: no devices/emulators found)"),
    ({"FAKE_ADB_NO_APP": "1"}, "the demo app com.mobile_distill.demo is not installed"),
])
def test_adb_errors_are_clear_and_early(exported, tmp_path, monkeypatch, env, message):
    device = _fake_adb_on_path(tmp_path, monkeypatch, **env)
    with pytest.raises(BenchError) as err:
        bench(exported, anchor="off", adb="adb", out_dir=tmp_path / "b", **FAST)
    assert message in str(err.value)
    assert "push" not in (device / "calls.log").read_text()  # failed before pushing anything


@pytest.mark.slow
def test_a_result_json_that_breaks_the_contract_is_named(exported, tmp_path, monkeypatch):
    _fake_adb_on_path(tmp_path, monkeypatch, FAKE_ADB_DROP_FIELD="embedding_dim")
    with pytest.raises(BenchError, match=r"result.json breaks the contract \(embedding_dim is missing\)"):
        bench(exported, anchor="off", adb="adb", out_dir=tmp_path / "b", **FAST)


@pytest.mark.slow
def test_adb_missing_is_a_clear_cli_error(exported, tmp_path):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    proc = run_cli("bench", exported, "--adb", "--anchor", "off", check=False, env={"PATH": str(empty)})
    assert proc.returncode == 1 and "adb not found" in proc.stderr and "Traceback" not in proc.stderr


def _single_file_copy(exported, tmp_path, fmt="tflite", precision="float32"):
    """A copy of the export folder holding one of its files, described by model.json."""
    import shutil

    card = json.loads((exported / "model.json").read_text())
    artifact = next(a for a in card["artifacts"] if a["format"] == fmt and a["precision"] == precision)
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copyfile(exported / artifact["file"], folder / artifact["file"])
    (folder / "model.json").write_text(json.dumps({**card, "artifacts": [artifact]}))
    return folder, folder / artifact["file"]


@pytest.mark.slow
def test_a_file_changed_after_export_fails_its_row_unless_allowed(exported, tmp_path):
    folder, tflite = _single_file_copy(exported, tmp_path)
    data = bytearray(tflite.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])  # a bit rot, or an edit
    tflite.write_bytes(bytes(data))
    proc = run_cli("bench", folder, "--anchor", "off", "--warmup", "1", "--runs", "2", "--quiet", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "✗ tflite float32: student_float32.tflite changed after export: its sha256 differs from model.json's" in \
        proc.stdout and "--allow-modified" in proc.stdout
    row = _row(json.loads((folder / "bench" / "bench.json").read_text()), "tflite")
    assert row["status"] == "failed" and "recall" not in row and "threads" not in row  # not measured
    proc = run_cli("bench", folder, "--anchor", "off", "--warmup", "1", "--runs", "2", "--allow-modified", "--quiet")
    row = _row(json.loads((folder / "bench" / "bench.json").read_text()), "tflite")
    assert row["modified"] and "measured anyway (--allow-modified)" in row["note"] and row["threads"]["1"]["median_ms"] > 0
    assert "float32 MODIFIED" in proc.stdout  # the table says so too


@pytest.mark.slow
def test_a_killed_bench_leaves_its_images_for_the_next_run_to_reuse(exported, tmp_path):
    import signal
    import subprocess
    import time

    folder, _ = _single_file_copy(exported, tmp_path, "onnx")
    out = folder / "bench"
    (out).mkdir()
    (out / ".images.npy").write_bytes(b"left by an older version")
    args = [sys.executable, "-m", "mobile_distill.cli", "bench", str(folder), "--anchor", "off", "--warmup", "1",
            "--runs", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob(".images-*.npy")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(out.glob(".images-*.npy"))
    assert len(left) == 1 and not (out / ".images.npy").exists()  # the old name's leftover is gone already
    proc = run_cli("bench", folder, "--anchor", "off", "--warmup", "1", "--runs", "2")
    assert f"reusing 32 folder test images at 32 px from {left[0].name}" in proc.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".images")]
