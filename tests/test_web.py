"""The web app in a real browser (headless Debian Chromium driven by Playwright; LiteRT.js and ONNX
Runtime Web from npm): its preprocessing against the Android golden bytes, the browser parity gate
for float32 .tflite, .onnx and an int8 file, a picture dropped on the page searching the gallery as
Python does, bad input shown in the page, and the server keeping to its folder."""

from __future__ import annotations

import http.client
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, train_tiny_student


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny student's float32 and int8 .tflite and float32 .onnx, through the export gate."""
    from mobile_distill.export import export

    root = tmp_path_factory.mktemp("web")
    ckpt = train_tiny_student(root)
    report = export(ckpt, formats=("tflite", "onnx"), precisions={"tflite": ["float32", "int8"], "onnx": ["float32"]},
                    out_dir=root / "exp", parity_samples=0)
    assert [r["status"] for r in report["rows"]] == ["passed"] * 3
    return root / "exp", root / "shapes"


@pytest.fixture(scope="module")
def app(exported, tmp_path_factory):
    """The web app with the shapes test split as its gallery."""
    from mobile_distill.web import write_app

    export_dir, shapes = exported
    out = tmp_path_factory.mktemp("app") / "web"
    done = write_app(export_dir, out, gallery=str(shapes / "test"))
    assert done["gallery"]["gallery_images"] == 32 and done["gallery"]["gallery_embedding"] == "student"
    return out


def _golden_rows(app_dir: Path, images):
    from mobile_distill.export.android import write_golden
    from mobile_distill.runtime.spec import InputSpec
    from mobile_distill.web.browser import open_page, preprocess_golden
    from mobile_distill.web.server import serving

    specs = [InputSpec(32, "nhwc", "float32"), InputSpec(37, "nchw", "uint8"), InputSpec(24, "nchw", "float32")]
    write_golden(app_dir / "golden", images, specs)
    with serving(app_dir) as (url, _), open_page(url) as page:
        assert page.info()["runtime"] == "LiteRT.js"
        return preprocess_golden(page, "golden/")


@pytest.mark.slow
def test_page_preprocessing_equals_the_android_golden_bytes_and_one_pixel_of_crop_fails(app, exported, tmp_path):
    # real images, square and not (the crop), at three input specs: the bytes the Kotlin core must
    # reproduce (test_android's golden test), now reproduced by the page's own preprocess.js
    rng = np.random.default_rng(3)
    images = sorted(str(p) for p in (exported[1] / "test").rglob("*.png"))[:2]
    for w, h in [(50, 31), (17, 90)]:
        images.append(str(tmp_path / f"odd_{w}x{h}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images[-1])
    rows = _golden_rows(app, images)
    assert len(rows) == 4 * 3 and all(r["equal"] for r in rows), rows
    # the same page with its crop moved by one pixel must fail the same check
    moved = tmp_path / "moved"
    shutil.copytree(app, moved)
    source = (moved / "preprocess.js").read_text()
    line = "const x0 = Math.floor((width - side) / 2);"
    assert source.count(line) == 1
    (moved / "preprocess.js").write_text(source.replace(line, "const x0 = Math.floor((width - side) / 2) + 1;"))
    rows = _golden_rows(moved, images)
    assert {r["image"] for r in rows if not r["equal"]} == {0, 1, 2, 3}, rows
    assert (app / "preprocess.js").read_text() == source
    from mobile_distill.web.app import STATIC

    assert (STATIC / "preprocess.js").read_text() == source and not (app / "preprocess.js").samefile(STATIC / "preprocess.js")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["student_float32.tflite", "student_float32.onnx", "student_int8.tflite"])
def test_browser_parity_gate_passes_each_runtime(exported, name):
    proc = run_cli("verify", str(exported[0] / name), "--parity-samples", "0", "--browser")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " in Chromium " in line]
    assert len(lines) == 1 and lines[0].rstrip().endswith("✓"), proc.stdout
    from mobile_distill.web.gate import browser_verify

    report = browser_verify(exported[0] / name, parity_samples=0)
    row = report["rows"][0]
    assert report["passed"] and row["parity"]["recall@1_drop"] <= 1.0
    expected = {"tflite": "LiteRT.js", "onnx": "ONNX Runtime Web"}[name.split(".")[1]]
    assert row["browser"]["runtime"] == expected and row["browser"]["file"] == name
    if "float32" in name:  # the export gate's float32 bound, in the browser
        assert row["parity"]["cosine_min"] >= 0.9999


def _page_swapping_red_and_blue(tmp_path, monkeypatch):
    """The app's page with its input's red and blue swapped: the file and runtime are fine, what the
    page computes is not."""
    import mobile_distill.web.app as web_app

    static = tmp_path / "static"
    shutil.copytree(web_app.STATIC, static)
    source = (static / "preprocess.js").read_text()
    line = "out[at] = scale(rgb[i * 3 + c]);"
    assert source.count(line) == 1
    (static / "preprocess.js").write_text(source.replace(line, "out[at] = scale(rgb[i * 3 + 2 - c]);"))
    monkeypatch.setattr(web_app, "STATIC", static)


@pytest.mark.slow
def test_browser_gate_fails_a_page_that_feeds_the_model_other_bytes(exported, tmp_path, monkeypatch):
    from mobile_distill.web.gate import browser_verify

    _page_swapping_red_and_blue(tmp_path, monkeypatch)
    report = browser_verify(exported[0] / "student_float32.tflite", parity_samples=0)
    row = report["rows"][0]
    assert not report["passed"] and row["status"] == "failed"
    assert row["parity"]["cosine_min"] < 0.9999 and any("cosine min" in f for f in row["failures"])


def _python_top_k(app_dir: Path, image: Path, k: int = 8):
    """The top-k the host computes for ``image``: the app's preprocessing, the same float32 file,
    the gallery's embeddings, cosine in float64, ties to the lower index."""
    from mobile_distill.export.android import box_resize, load_rgb
    from mobile_distill.runtime.spec import InputSpec
    from mobile_distill.runtime.tflite import TfliteRunner

    doc = json.loads((app_dir / "app.json").read_text())
    art = next(a for a in doc["artifacts"] if a["file"].endswith("float32.tflite"))
    spec = InputSpec(doc["image_size"], art["input"]["layout"].lower(), art["input"]["dtype"])
    query = TfliteRunner(app_dir / art["file"], spec, threads=1)(box_resize(load_rgb(image), spec.image_size)[None])[0]
    g = json.loads((app_dir / "gallery" / "gallery.json").read_text())
    rows = np.fromfile(app_dir / "gallery" / "gallery_embeddings.f32", dtype="<f4").reshape(g["count"], g["dim"])
    q = query.astype(np.float64)
    scores = [float(q @ r.astype(np.float64)) / (max(np.linalg.norm(q), 1e-12) * max(np.linalg.norm(r.astype(np.float64)), 1e-12))
              for r in rows]
    return sorted(range(len(rows)), key=lambda i: (-scores[i], i))[:k]


@pytest.mark.slow
def test_a_dropped_picture_searches_the_gallery_as_python_does(app, exported, tmp_path, record_property):
    from mobile_distill.web.browser import open_page
    from mobile_distill.web.server import serving

    image = sorted((exported[1] / "test" / "class_03").glob("*.png"))[0]
    expected = _python_top_k(app, image)
    with serving(app) as (url, _), open_page(url) as page:
        page.info()
        data = list(image.read_bytes())
        page.call("""async (bytes) => {
          const file = new File([new Uint8Array(bytes)], "query.png", { type: "image/png" });
          const drop = new DataTransfer();
          drop.items.add(file);
          document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: drop, bubbles: true }));
        }""", data)
        page.page.wait_for_selector("#results li")
        got = [int(i) for i in page.page.eval_on_selector_all("#results li", "items => items.map(i => i.dataset.index)")]
        labels = page.page.eval_on_selector_all("#results li span", "s => s.map(x => x.textContent)")
        latency = page.page.text_content("#latency")
        shot = tmp_path / "web_app.png"
        page.page.screenshot(path=str(shot), full_page=True)
        # the file picker: the same query through the page's other entry
        page.page.set_input_files("#file", str(image))
        page.page.wait_for_function("() => document.getElementById('preview').src.startsWith('blob:')")
        assert not [e for e in page.errors if e.startswith("mdistill:")], page.errors
        # everything the page loaded came from the app's own server: no CDN, no network
        outside = [r for r in page.requests if not r.startswith((url, "blob:", "data:"))]
        assert not outside and any("vendor/litertjs/wasm/" in r for r in page.requests), outside or page.requests
    record_property("screenshot", str(shot))
    assert got == expected, (got, expected)
    assert labels[0].startswith("class_03 ")  # the gallery's own copy of the image comes first
    assert "ms per image (LiteRT.js, WASM" in latency
    assert shot.stat().st_size > 5000 and Image.open(shot).size[0] > 300


@pytest.mark.slow
def test_bad_input_is_shown_in_the_page(app, exported, tmp_path):
    from mobile_distill.web.browser import open_page
    from mobile_distill.web.server import serving

    with serving(app) as (url, _), open_page(url) as page:
        page.info()
        not_image = tmp_path / "notes.png"
        not_image.write_text("this is not a picture")
        page.page.set_input_files("#file", str(not_image))
        page.page.wait_for_selector("#error:not([hidden])")
        shown = page.page.text_content("#error")
        assert "notes.png is not an image the browser can decode" in shown
        assert any(e.startswith("mdistill: notes.png is not an image") for e in page.errors), page.errors
    # WebGPU asked for where the browser has none (headless Chromium here): a message, no fallback
    with serving(app) as (url, _), open_page(url + "?backend=webgpu") as page:
        assert page.call("() => window.mdistill.ready") is None
        assert "WebGPU is not available" in page.page.text_content("#error")
        assert page.page.text_content("#status") == "failed"
    # an input contract the page cannot feed, a runtime with no file, a missing gallery
    broken = tmp_path / "broken"
    shutil.copytree(app, broken)
    doc = json.loads((broken / "app.json").read_text())
    (broken / "app.json").write_text(json.dumps({**doc, "artifacts": [{**a, "input": {**a["input"], "layout": "CHWN"}}
                                                                      for a in doc["artifacts"]]}))
    (broken / "gallery" / "gallery_embeddings.f32").unlink()
    for query, message in [("", "is not one this page can feed"), ("?runtime=coreml", "unknown runtime 'coreml'")]:
        with serving(broken) as (url, _), open_page(url + query) as page:
            assert page.call("() => window.mdistill.ready") is None
            assert message in page.page.text_content("#error")
            assert any(message in e for e in page.errors)
    (broken / "app.json").write_text(json.dumps(doc))
    with serving(broken) as (url, _), open_page(url) as page:
        assert page.call("() => window.mdistill.ready") is None
        assert "the gallery embeddings (gallery/gallery_embeddings.f32) could not be loaded: HTTP 404" in \
            page.page.text_content("#error")


@pytest.mark.slow
def test_the_server_sends_isolation_headers_and_keeps_to_its_folder(app, tmp_path):
    from mobile_distill.web.server import serving

    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    link = app / "escape.txt"
    link.symlink_to(secret)
    try:
        with serving(app) as (url, server):
            port = server.server_address[1]

            def get(path):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", path)
                r = conn.getresponse()
                return r.status, r.getheader("Cross-Origin-Embedder-Policy"), r.getheader("Content-Type"), r.read()

            status, coep, _, body = get("/index.html")
            assert status == 200 and coep == "require-corp" and b"mdistill" in body
            assert get("/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm")[2] == "application/wasm"
            assert get("/escape.txt")[0] == 403
            assert get("/../../../../etc/passwd")[3].find(b"root:") < 0
            assert get("/%2e%2e/%2e%2e/%2e%2e/etc/passwd")[3].find(b"root:") < 0
            assert get("/vendor/")[0] == 404  # no listing
    finally:
        link.unlink()


@pytest.mark.slow
def test_cli_writes_the_app_and_refuses_a_folder_without_an_export(exported, tmp_path):
    out = tmp_path / "site"
    proc = run_cli("web", str(exported[0]), "--out", str(out), "--gallery", str(exported[1] / "test"),
                   "--gallery-limit", "5", "--no-serve")
    assert proc.returncode == 0 and "Cross-Origin-Embedder-Policy: require-corp" in proc.stdout, proc.stderr
    doc = json.loads((out / "app.json").read_text())
    assert [a["file"] for a in doc["artifacts"]][:2] == ["student_float32.tflite", "student_float32.onnx"]
    assert json.loads((out / "gallery" / "gallery.json").read_text())["count"] == 5
    import socket

    with socket.socket() as taken:  # a port another program holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("web", str(exported[0]), "--out", str(out), "--port", str(port), check=False)
    assert busy.returncode == 1 and "Traceback" not in busy.stderr, busy.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in busy.stderr and "pass another --port" in busy.stderr
    bad = run_cli("web", str(tmp_path / "nothing"), "--no-serve", check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "holds no model.json: give the folder `mdistill export` wrote" in bad.stderr
    assert not (tmp_path / "nothing" / "web").exists()


@pytest.mark.slow
def test_bench_browser_rows_beside_the_host_rows(exported, tmp_path):
    proc = run_cli("bench", str(exported[0]), "--browser", "--runs", "5", "--warmup", "1", "--browser-samples", "0",
                   "--anchor", "off", "--out", str(tmp_path / "bench"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    browser = [r for r in report["rows"] if r.get("client")]
    assert sorted((r["format"], r["precision"]) for r in browser) == [("onnx", "float32"), ("tflite", "float32"),
                                                                      ("tflite", "int8")]
    for r in browser:
        assert r["status"] == "ok" and r["recall_images"] == 32 and r["recall"]["recall@1"] >= 90
        t = r["threads"]["1"]
        assert 0 < t["median_ms"] <= t["p90_ms"]
        host = next(h for h in report["rows"] if (h["format"], h["precision"]) == (r["format"], r["precision"])
                    and not h.get("client"))
        assert r["host_ratio"]["1"] == pytest.approx(t["median_ms"] / host["threads"]["1"]["median_ms"])
    assert "tflite in Chromium, WASM" in proc.stdout and "(32 img)" in proc.stdout


@pytest.mark.slow
def test_bench_browser_row_fails_when_the_page_computes_other_embeddings(exported, tmp_path, monkeypatch):
    from mobile_distill.bench import bench

    _page_swapping_red_and_blue(tmp_path, monkeypatch)
    report = bench(exported[0], runs=2, warmup=0, anchor="off", browser=True, browser_samples=0,
                   out_dir=tmp_path / "bench", raise_on_failure=False)
    row = next(r for r in report["rows"] if r.get("client") and r["precision"] == "float32" and r["format"] == "tflite")
    assert row["status"] == "failed" and "browser parity gate failed: cosine min" in row["error"]
    assert not report["passed"]


@pytest.mark.slow
def test_export_browser_adds_a_browser_row_per_file(exported, tmp_path):
    ckpt = exported[0].parent / "runs" / "tiny" / "last.pt"
    proc = run_cli("export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "exp"), "--parity-samples", "0",
                   "--browser", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "exp" / "export_report.json").read_text())
    assert [(r["format"], r["status"], "browser" in r) for r in report["rows"]] == [("onnx", "passed", False),
                                                                                   ("onnx", "passed", True)]
    assert "onnx in Chromium" in proc.stdout
    refused = run_cli("export", "--model", "timm:resnet18", "--browser", check=False)
    assert refused.returncode == 2 and "--browser gates a checkpoint's files" in refused.stderr


@pytest.mark.slow
def test_the_camera_path_takes_a_picture_and_searches(app):
    """Chromium's test camera in place of a phone's: the page's camera button, the video, the
    picture taken from it and its search, with the latency shown."""
    from mobile_distill.web.browser import open_page
    from mobile_distill.web.server import serving

    with serving(app) as (url, _), open_page(url, fake_camera=True) as page:
        page.info()
        page.page.click("#camera")
        page.page.wait_for_selector("#snap:not([hidden])")
        page.page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
        page.page.click("#snap")
        page.page.wait_for_selector("#results li")
        assert len(page.page.query_selector_all("#results li")) == 8
        assert "ms per image" in page.page.text_content("#latency")
        assert not [e for e in page.errors if e.startswith("mdistill:")], page.errors
