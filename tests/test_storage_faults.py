"""The machine's faults, not the user's input: a full disk, a read-only output folder, a cache
path that is a file. Each is real (a tmpfs of a few KB, a read-only mount: ``run_cli_with_mount``)
and each must end in one line naming the path and what to do, exit 1, no traceback and nothing
half-written."""

from __future__ import annotations

from conftest import run_cli, run_cli_with_mount, tiny_train_args


def _one_line(proc, *needles):
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:"), proc.stderr[-2000:]
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(shapes_dir, tmp_path):
    disk = tmp_path / "small"
    proc = run_cli_with_mount(disk, "train", *tiny_train_args(shapes_dir, disk, epochs=1), size_kb=256)
    last = _one_line(proc, "no space left on the device", "checkpoint", str(disk / "tiny" / "last.pt"), "MB")
    assert "needs about" in last and "free" in last
    assert "unexpected pos" not in proc.stderr and "enforce fail" not in proc.stderr


def test_a_read_only_output_folder_is_one_line(shapes_dir, tmp_path):
    ro = tmp_path / "ro"
    proc = run_cli_with_mount(ro, "train", *tiny_train_args(shapes_dir, ro, epochs=1), read_only=True)
    _one_line(proc, "read-only file system", str(ro))


def test_mdistill_home_that_is_a_file_is_named(tmp_path):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    env = {"MDISTILL_HOME": str(home)}
    for args in (["data", "fetch", "emoji"], ["data", "info", "emoji"],
                 ["train", "--data", "emoji", "--out-dir", tmp_path / "runs", "--epochs", "1"]):
        proc = run_cli(*args, check=False, env=env)
        last = _one_line(proc, f"MDISTILL_HOME={home} is a file, not a folder")
        assert "mdistill data fetch" not in last, last  # not "data not found": fetching would not help
    inside = run_cli("data", "info", "emoji", check=False, env={"MDISTILL_HOME": str(home / "cache")})
    _one_line(inside, f"is inside {home}, which is a file")
    assert not (tmp_path / "runs").exists()
