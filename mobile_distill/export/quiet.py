"""The converters' console noise (TFLite, CoreML), kept off ours."""

from __future__ import annotations

import contextlib
import io
import os


@contextlib.contextmanager
def quiet():
    """The converters print progress trees, quantisation summaries and (ai-edge-quantizer, whatever
    its progress flag says) tqdm bars on stderr; keep the console to our table."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
