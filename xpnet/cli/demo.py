"""``xpnet demo``: the draw-a-digit page for a saved model (xpnet/demo/)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"show_default": True})
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", help="Address to listen on; keep 127.0.0.1 unless you know why "
              "(the server is meant for one person on this machine).")
@click.option("--no-browser", is_flag=True, help="Do not open the page in a web browser.")
@click.option("--log", is_flag=True, help="Print one line per request.")
def demo(model, port, host, no_browser, log):
    """Serve a page where you draw a digit and watch MODEL read it.

    \b
    The page shows the ten class probabilities live, the 28×28 image the model actually sees
    (converted like `xpnet predict` does) and the hidden layer's activations. Models of other
    data sets (Fashion-MNIST) work by uploading an image. Needs Pillow (pip install 'xpnet[images]').
    Stop it with Ctrl+C.

    \b
      xpnet train --dataset mnist --recipe handwriting --out hw.npz
      xpnet demo hw.npz
    """
    import webbrowser

    from xpnet.data.images import _pillow
    from xpnet.demo import make_server

    _pillow()  # a missing Pillow is one error line now, not one per drawing
    server = make_server(model, host=host, port=port, quiet=not log)
    click.echo(f"xpnet demo: {server.model.name} ({'-'.join(map(str, server.model.net.sizes))}) at {server.url}  "
               "(Ctrl+C stops it)")
    if not no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
