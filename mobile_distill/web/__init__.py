"""The browser client: ``write_app`` (the static retrieval app for an export), ``serving`` (its
server), ``browser_verify`` (the parity gate in headless Chromium)."""

from .app import WebError, write_app
from .server import serving

__all__ = ["WebError", "write_app", "serving"]
