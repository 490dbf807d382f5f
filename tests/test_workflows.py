"""The macOS workflow cannot run here (no hosted macOS runner, no Core ML on Linux), so its pieces are
checked where they can be: the YAML's job calls one make target, that target expands, its paths are
the demo's run folders, and its test selection is not empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mobile_distill.config import load_yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_macos_workflow_runs_the_coreml_parity_target():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "coreml-macos.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("macos")
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs == ["make coreml-parity PYTHON=python"]

    dry = subprocess.run(["make", "-n", "coreml-parity", "BIN=.venv/bin"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout.splitlines()
    assert any(c.endswith("mdistill demo --quiet") for c in commands)
    for recipe in ("student_emoji", "teacher_emoji"):  # the demo's runs, exported to CoreML
        checkpoint = f"runs/{load_yaml(recipe)['name']}/last.pt"
        assert any(f"mdistill export {checkpoint} --format coreml" in c for c in commands), (checkpoint, commands)

    pytest_line = next(c for c in commands if " -m pytest " in c)
    args = pytest_line.split(" -m pytest ", 1)[1].replace('"', "").split()
    k = args.index("-k")
    selection = args[:k] + ["-k", " ".join(args[k + 1:])]
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", *selection], cwd=ROOT,
                               capture_output=True, text=True)
    assert collected.returncode == 0, collected.stdout[-2000:]
    assert "test_coreml_rows_are_gated_by_the_reference_interpreter" in collected.stdout
    assert "test_op_matches_pytorch[conv_same_stride2]" in collected.stdout


@pytest.mark.slow
def test_the_fast_selection_leaves_out_the_slow_tests_only():
    """`make test-fast` (pytest -m "not slow") is a real selection: the marker is declared (a typo in
    it would fail collection: --strict-markers), used, and the fast set is most of the suite."""
    def collected(*args):
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return {line for line in out.stdout.splitlines() if "::" in line}

    everything, fast, slow = collected(), collected("-m", "not slow"), collected("-m", "slow")
    assert fast and slow and fast | slow == everything and not fast & slow
    assert len(slow) >= 100 and len(fast) > len(slow)
    assert "tests/test_workflows.py::test_the_fast_selection_leaves_out_the_slow_tests_only" in slow
