"""The skip guard fails a run with a skip outside its allow-list (a pytest run in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _pytest(tmp_path, body: str):
    (tmp_path / "test_x.py").write_text(body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "skip_guard", "-p", "no:cacheprovider",
                           str(tmp_path / "test_x.py")], cwd=tmp_path, capture_output=True, text=True, env=env)


def test_a_skip_without_an_allowed_reason_fails_the_run(tmp_path):
    proc = _pytest(tmp_path, "import pytest\n\ndef test_a():\n    pytest.skip('coremltools missing')\n\n"
                             "def test_b():\n    assert True\n")
    assert proc.returncode == 1, proc.stdout
    assert "SKIP NOT ALLOWED: test_x.py::test_a: coremltools missing" in proc.stdout
    assert "1 passed, 1 skipped" in proc.stdout


def test_an_allow_listed_skip_passes_and_the_list_is_printed(tmp_path):
    proc = _pytest(tmp_path, "import pytest\n\ndef test_a():\n    pytest.skip('npm not installed (MDISTILL_LOCAL=1)')\n")
    assert proc.returncode == 0, proc.stdout
    assert "allowed skip reasons: 'npm not installed (MDISTILL_LOCAL=1)'" in proc.stdout
    assert "SKIP NOT ALLOWED" not in proc.stdout
