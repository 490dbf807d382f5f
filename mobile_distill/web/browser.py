"""Headless Chromium driving the web app (Playwright with the system's Chromium: Debian's
``chromium`` package, never a browser download): the browser parity gate and the tests open the
page and call its own code (``window.mdistill``), as a person's picture goes through it."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Dict, Iterator, List

from .app import WebError

# Chromium's background services try Google's hosts at start: with no network they only add
# refused connections and delays.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    path = os.environ.get("MDISTILL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise WebError("no Chromium found: install Debian's (apt-get install chromium), or set MDISTILL_CHROMIUM "
                       "to a Chromium or Chrome binary")
    return path


class Page:
    """An open page of the app: ``call`` runs JavaScript in it; ``errors`` holds its console errors,
    ``requests`` every URL it asked for."""

    def __init__(self, page, errors: List[str], requests: List[str]):
        self.page, self.errors, self.requests = page, errors, requests

    def call(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def info(self) -> Dict:
        """The page's runtime, backend, file and input once it is ready; a load failure raises with
        the message the page shows."""
        info = self.call("() => window.mdistill.ready")
        if info is None:
            shown = self.page.locator("#error").text_content()
            raise WebError(f"the web app failed to start: {shown}")
        return info


@contextlib.contextmanager
def open_page(url: str, timeout_s: float = 120, fake_camera: bool = False) -> Iterator[Page]:
    """Load ``url`` in headless Chromium and wait until the app says ready or failed. ``fake_camera``:
    Chromium's own test camera (a moving pattern) stands in for a real one, permission granted."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise WebError("Playwright is not installed: pip install 'mobile_distill[dev]' (or pip install playwright); "
                       "it drives the system's Chromium, no browser download") from None
    with sync_playwright() as p:
        camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"] if fake_camera else []
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS + camera)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_s * 1000)
            errors: List[str] = []
            requests: List[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url)
            page.wait_for_function("() => document.body.dataset.state !== 'loading'")
            yield Page(page, errors, requests)
        finally:
            browser.close()


def embed_files(page: Page, urls: List[str]) -> Dict:
    """The page's embeddings of each image URL (its own decode, crop, resize and runtime)."""
    import numpy as np

    rows = page.call("urls => window.mdistill.embedUrls(urls)", urls)
    return {"embeddings": np.array([r["embedding"] for r in rows], dtype=np.float32),
            "latency_ms": [r["ms"] for r in rows]}


def preprocess_golden(page: Page, golden_url: str) -> List[Dict]:
    """The page's resize and input bytes of the Android golden images (``write_golden``), compared
    in the page with the bytes Python wrote: one row per image and spec, ``equal`` or where not."""
    return page.call("""async (base) => {
      const get = async (name) => new Uint8Array(await (await fetch(base + name)).arrayBuffer());
      const { resize, toInput } = window.mdistill;
      const bytesOf = (a) => a instanceof Uint8Array ? a : new Uint8Array(new Float32Array(a).buffer);
      const golden = await (await fetch(base + "golden.json")).json();
      const rows = [];
      for (const [i, img] of golden.images.entries()) {
        const argb = new DataView((await get(img.argb)).buffer);
        const rgba = new Uint8Array(img.width * img.height * 4);
        for (let p = 0; p < img.width * img.height; p++) {
          const v = argb.getUint32(p * 4, true);
          rgba.set([(v >>> 16) & 255, (v >>> 8) & 255, v & 255, 255], p * 4);
        }
        for (const [j, s] of golden.specs.entries()) {
          const spec = { size: s.size, layout: s.layout, dtype: s.dtype.toLowerCase() };
          const got = bytesOf(toInput(resize(rgba, img.width, img.height, s.size), spec));
          const want = await get(`image${i}_spec${j}.bin`);
          let first = -1;
          for (let k = 0; k < Math.max(got.length, want.length); k++) if (got[k] !== want[k]) { first = k; break; }
          rows.push({ image: i, spec: j, equal: first < 0 && got.length === want.length, first_difference: first });
        }
      }
      return rows;
    }""", golden_url)
