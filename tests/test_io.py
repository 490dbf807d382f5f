"""Atomic writes: a killed writer's temporary file is found and removed; a live writer's is kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mobile_distill.utils.io import atomic_path, remove_stale_temps

WRITER = """
import sys, time
from pathlib import Path
from mobile_distill.utils.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"partial")
    Path(sys.argv[2]).write_text(str(tmp))  # tells the test the temp file exists
    time.sleep(60)
"""


def test_killed_writers_temp_file_is_removed_and_live_ones_stay(tmp_path):
    final, ready = tmp_path / "cache.npy", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(final), str(ready)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        dead_tmp = tmp_path / os.path.basename(ready.read_text())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert dead_tmp.exists() and not final.exists()  # SIGKILL skipped the cleanup
    other = tmp_path / ".other.npy.1-x.tmp"  # another file's temp is never touched
    other.write_bytes(b"")
    with atomic_path(final) as live_tmp:
        live_tmp.write_bytes(b"mine")
        assert remove_stale_temps(final) == [dead_tmp]
        assert live_tmp.exists() and not dead_tmp.exists() and other.exists()
    assert final.read_bytes() == b"mine" and remove_stale_temps(final) == []
