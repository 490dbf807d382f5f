"""What a user sees: help texts, and one clear line plus a non-zero exit for every user error."""

from __future__ import annotations

import pickle

import pytest

from conftest import run_cli, tiny_train_args


def _one_clean_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error:"), proc.stderr
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)


@pytest.mark.parametrize("cmd", [[], ["data"], ["train"], ["eval"], ["data", "fetch"], ["data", "prepare"]])
def test_help(cmd):
    proc = run_cli(*cmd, "--help")
    assert "Usage:" in proc.stdout


def test_train_help_lists_config_fields():
    out = run_cli("train", "--help").stdout
    for flag in ("--model", "--embedding-dim", "--classes-per-batch", "--resume", "--config", "--val-classes"):
        assert flag in out


def test_unknown_model(shapes_dir, tmp_path):
    proc = run_cli("train", *tiny_train_args(shapes_dir, tmp_path, model="resnet9000"), check=False)
    _one_clean_error(proc, "unknown model 'resnet9000'", "mobilenet_v1_025")


@pytest.mark.slow
def test_unknown_data_set_and_config_key(tmp_path):
    proc = run_cli("train", "--data", "imagenet22k", "--out-dir", tmp_path / "runs", check=False)
    _one_clean_error(proc, "unknown data set 'imagenet22k'")
    assert not (tmp_path / "runs").exists()  # a failed set-up leaves no run directory behind
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 2\nlearning_rate: 0.1\n")
    _one_clean_error(run_cli("train", "--config", cfg, check=False), "unknown config key(s) learning_rate")


@pytest.mark.slow
def test_missing_data_and_emoji_not_fetched(tmp_path):
    _one_clean_error(run_cli("train", "--data", f"folder:{tmp_path / 'nope'}", "--out-dir", tmp_path, check=False), "nope")
    _one_clean_error(run_cli("eval", "--model", "mobilenet_v1_025", "--pretrained", "none", check=False),
                     "mdistill data fetch emoji")


def test_missing_checkpoint(tmp_path):
    _one_clean_error(run_cli("eval", tmp_path / "missing.pt", check=False), "checkpoint not found")
    _one_clean_error(run_cli("train", "--resume", tmp_path / "missing.pt", check=False), "checkpoint not found")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": _Evil(marker)}, f)
    proc = run_cli("eval", evil, check=False)
    _one_clean_error(proc, "refused to load", "evil.pt")
    assert not marker.exists()


@pytest.mark.slow
def test_checkpoint_of_wrong_shape(shapes_dir, tmp_path):
    import torch

    run_cli("train", *tiny_train_args(shapes_dir, tmp_path / "runs", epochs=1))
    path = tmp_path / "runs" / "tiny" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["embedding_dim"] = 32  # claims a head the weights do not have
    torch.save(ckpt, tmp_path / "wrong.pt")
    _one_clean_error(run_cli("eval", tmp_path / "wrong.pt", check=False), "does not fit")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    _one_clean_error(run_cli("eval", tmp_path / "junk.pt", check=False), "junk.pt")


@pytest.mark.slow
def test_corrupt_and_empty_images(shapes_dir, tmp_path):
    bad = shapes_dir / "class_01" / "img_0.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    empty = shapes_dir / "class_02" / "img_0.png"
    empty.write_bytes(b"")
    proc = run_cli("data", "check", f"folder:{shapes_dir}", check=False)
    assert proc.returncode == 1
    assert "img_0.png" in proc.stdout and "empty image file" in proc.stdout and "cannot read image" in proc.stdout
    _one_clean_error(proc, "2 of 48 images")

    proc = run_cli("train", *tiny_train_args(shapes_dir, tmp_path / "runs", epochs=1), check=False)
    _one_clean_error(proc, "class_0", "--skip-bad-images")
    assert not (tmp_path / "runs" / "tiny").exists()  # a run that saved nothing leaves no folder
    proc = run_cli("train", *tiny_train_args(shapes_dir, tmp_path / "runs", epochs=1), "--skip-bad-images")
    assert "skipped 2 unreadable image(s)" in proc.stderr


def test_prepare_rejects_bad_archive(tmp_path):
    bad = tmp_path / "CUB_200_2011.tgz"
    bad.write_bytes(b"\x1f\x8b" + b"0" * 100)
    _one_clean_error(run_cli("data", "prepare", "cub", "--archive", bad, check=False), "checksum mismatch")
    assert not any((tmp_path / "home").glob("**/images.txt"))


def test_progress_off_a_terminal_is_one_line_per_epoch(shapes_dir, tmp_path):
    """stderr is a pipe here, as on CI or under `make demo > log`: no progress-bar frames."""
    proc = run_cli("train", *tiny_train_args(shapes_dir, tmp_path / "runs", epochs=2))
    assert "\r" not in proc.stderr and "batch/s" not in proc.stderr and "it/s" not in proc.stderr, proc.stderr[-500:]
    assert "\r" not in proc.stdout
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("epoch ")] == ["1/2", "2/2"]


@pytest.mark.slow
@pytest.mark.parametrize("value, message", [
    ("1.0e+9", "epochs must be at most 100,000, got 1,000,000,000"),  # YAML reads this as a float: it was accepted
    ("1e9", "epochs must be int, got '1e9'"),  # ... and this as a string
    ("2.5", "epochs must be int, got 2.5"),
])
def test_absurd_or_fractional_epoch_counts_are_refused(tmp_path, value, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"epochs: {value}\n")
    proc = run_cli("train", "--config", cfg, "--data", f"folder:{tmp_path}", "--out-dir", tmp_path / "runs", check=False)
    _one_clean_error(proc, message)
    assert not (tmp_path / "runs").exists()
