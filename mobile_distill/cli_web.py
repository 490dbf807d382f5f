"""``mdistill web``: the web retrieval app for an export folder, written and served."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("web")
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Where the app goes (default: EXPORT_DIR/web).")
@click.option("--gallery", default=None,
              help="Images the page searches: a data set spec (emoji, folder:PATH) or a folder of images.")
@click.option("--gallery-model", default="student", show_default=True,
              help="Who embeds the gallery: student (the exported file), or teacher (a compatible student searches "
                   "its teacher's index), or a model spec (checkpoint, timm:NAME, ...).")
@click.option("--gallery-limit", type=int, default=None, help="At most this many gallery images.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on (0.0.0.0: open it from a phone on the same network).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Write the app and exit (host the folder anywhere, with the headers "
                                               "the output names).")
def web_cmd(export_dir, out, gallery, gallery_model, gallery_limit, host, port, no_serve):
    """Write a static web app that runs EXPORT_DIR's .tflite (LiteRT.js) or .onnx (ONNX Runtime Web) in the
    browser and searches a gallery, then serve it."""
    from .web.app import WebError, write_app
    from .web.server import ISOLATION, make_server

    done = write_app(export_dir, out, gallery=gallery, gallery_model=gallery_model, gallery_limit=gallery_limit)
    click.echo(f"web app written to {done['app']} (files: {', '.join(done['artifacts'])}"
               + (f"; gallery: {done['gallery']['gallery_images']} images embedded by the "
                  f"{done['gallery']['gallery_embedding']})" if done["gallery"] else "; no gallery: pass --gallery DATA)"))
    if no_serve:
        click.echo("serve it with these headers (threaded WebAssembly needs them): "
                   + "; ".join(f"{k}: {v}" for k, v in ISOLATION.items()))
        return
    try:
        server = make_server(done["app"], host, port)
    except OSError as e:  # a port in use, an address not of this machine
        raise WebError(f"cannot serve on {host}:{port} ({e.strerror or e}): pass another --port (0 picks a free one) "
                       "or --host; the app is written, --no-serve leaves it to another server") from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    click.echo(f"open http://{shown}:{server.server_address[1]}/  (LiteRT.js; ?runtime=onnx for ONNX Runtime Web, "
               "&precision=int8 for another file, &backend=webgpu)")
    if host == "0.0.0.0":
        click.echo("from a phone on this network: http://<this machine's address>:"
                   f"{server.server_address[1]}/ (a camera needs https or localhost in most browsers)")
    click.echo("Ctrl-C stops the server")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
