"""A static server for the web app: cross-origin isolation headers (threaded WebAssembly needs
SharedArrayBuffer, which the browser gives only to an isolated page), WebAssembly's MIME type, and
no file outside the app folder (no listing, no symlink out)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path
from typing import Iterator, Tuple

ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cross-Origin-Resource-Policy": "same-origin"}


class AppHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json"}

    def send_head(self):
        path = Path(self.translate_path(self.path)).resolve()
        root = Path(self.directory).resolve()
        if path != root and root not in path.parents:
            self.send_error(403, "outside the app folder")
            return None
        if path.is_dir() and not (path / "index.html").is_file():
            self.send_error(404, "no listing")
            return None
        return super().send_head()

    def end_headers(self):
        for k, v in ISOLATION.items():
            self.send_header(k, v)
        self.send_header("Cache-Control", "no-store")  # a rewritten app is never served stale
        super().end_headers()

    def log_message(self, fmt, *args):  # the CLI prints the URL; requests stay quiet
        pass


def make_server(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(AppHandler, directory=str(Path(folder).resolve()))
    return http.server.ThreadingHTTPServer((host, port), handler)


@contextlib.contextmanager
def serving(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[Tuple[str, http.server.HTTPServer]]:
    """Serve ``folder`` in a background thread; yields (base URL, server)."""
    server = make_server(folder, host, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/", server
    finally:
        server.shutdown()
        server.server_close()
