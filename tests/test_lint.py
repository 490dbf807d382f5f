"""The linter as a test, so CI runs it: pyflakes' errors (an unused import or variable, a name used
before it is defined, a redefinition) and syntax errors, through ruff, over the package, the
benchmarks and the tests. Style (import order, annotations) is left to review, not gated."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

RULES = "F,E9"


def _ruff() -> list:
    beside = Path(sys.executable).with_name("ruff")  # the virtual environment's, as setup.cfg's dev extra installs it
    exe = str(beside) if beside.exists() else shutil.which("ruff")
    assert exe, "ruff is not installed: `make test` installs it (setup.cfg's dev extra)"
    return [exe, "check", "--no-cache", "--isolated", "--select", RULES, "--output-format", "concise"]


def test_no_pyflakes_errors():
    proc = subprocess.run([*_ruff(), "mobile_distill", "benchmarks", "tests"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_lint_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    proc = subprocess.run([*_ruff(), str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "F401" in proc.stdout and "F821" in proc.stdout, proc.stdout
