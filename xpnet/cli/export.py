"""``xpnet export`` and ``xpnet import``: a saved model to ONNX / a PyTorch state_dict, and back."""

from __future__ import annotations

from pathlib import Path

import click

from xpnet import choices

_SUFFIX = {"onnx": ".onnx", "torch": ".pt"}


def _describe(net) -> str:
    shape = "-".join(str(s) for s in net.sizes)
    norm = "normalizer inside" if net.normalizer is not None else "no normalizer"
    return f"MLP({shape}, {net.activation_name}, {net.output}; {norm})"


@click.command(context_settings={"show_default": True})
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torch"]), default="onnx", help="onnx: an ONNX graph for ONNX Runtime & co; torch: a state_dict for nn.Sequential plus the normalizer.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Output file [default: MODEL with .onnx / .pt].")
@click.option("--opset", type=int, default=None, help="ONNX opset, 13 or later [default: 17, which onnxruntime >= 1.13 runs].")
@click.option("--allow-bare", is_flag=True, help="Export a model saved without a normalizer: the graph's input is then the network's own input, not raw pixels.")
@click.option("--check/--no-check", default=True, help="ONNX: run the exported file with onnxruntime (when installed) on random pixels and compare with xpnet.")
def export(model, fmt, out, opset, allow_bare, check):
    """Export MODEL (an xpnet .npz) to ONNX or to a PyTorch state_dict.

    ONNX: input `pixels`, float32 (N, 784), raw pixel values 0-255 as IDX files store
    them; the saved normalizer, one Gemm plus the activation per layer and the softmax
    (or sigmoid) are in the graph; the output is `probabilities`. Class names and the
    xpnet version are metadata. See docs/export.md.

    \b
    Torch: torch.load(OUT, weights_only=True) gives a dict with `state_dict` (for
    nn.Sequential(Linear, ReLU, ..., Linear)), `normalizer` (x = (pixels*scale - mean)
    / std), `config` and `class_names`. `xpnet import` reads it back.

    \b
    Examples:
      xpnet export model.npz --out model.onnx
      xpnet export model.npz --format torch --out model.pt
      xpnet export model.npz --opset 13 --out model-op13.onnx
    """
    from xpnet.errors import ConfigError
    from xpnet.io.interop import DEFAULT_OPSET, ExportError, export_onnx, export_torch, onnx_check
    from xpnet.io.npz import load

    if opset is not None and fmt != "onnx":
        raise ConfigError("--opset applies to --format onnx only")
    out = out or model.with_suffix(_SUFFIX[fmt])
    net = load(model)
    if fmt == "torch":
        export_torch(net, out)
        click.echo(f"exported {_describe(net)} to {out} (PyTorch state_dict; torch.load(..., weights_only=True))")
        return
    opset = DEFAULT_OPSET if opset is None else opset
    export_onnx(net, out, opset=opset, allow_bare=allow_bare)
    click.echo(f"exported {_describe(net)} to {out} (ONNX opset {opset}, input 'pixels', "
               f"output '{'outputs' if net.output == 'linear' else 'probabilities'}')")
    if not check:
        return
    try:
        diff = onnx_check(out, net)
    except ConfigError:
        click.echo("not checked: onnxruntime is not installed (pip install 'xpnet[onnx]')")
        return
    if not diff <= 1e-4:  # a wrong graph is worse than none: remove it
        out.unlink(missing_ok=True)
        raise ExportError(f"onnxruntime's outputs differ from xpnet's by up to {diff:.3g} on random pixels, so "
                          f"{out} was removed (please report this with the model)")
    click.echo(f"checked with onnxruntime: max |difference| from xpnet {diff:.2g} on 256 random images")


@click.command(name="import", context_settings={"show_default": True})
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="The xpnet model to write [default: SOURCE with .npz, if no such file exists].")
@click.option("--activation", type=click.Choice(choices.ACTIVATIONS), default=None, help="Hidden activation of a bare state_dict [default: relu]; an xpnet export records its own.")
@click.option("--leaky-slope", type=click.FloatRange(0, 1, max_open=True), default=None, help="Slope of leaky_relu for a bare state_dict [default: 0.01].")
@click.option("--output", type=click.Choice(["softmax", "sigmoid", "linear"]), default=None, help="Output of a bare state_dict [default: softmax].")
def import_(source, out, activation, leaky_slope, output):
    """Import a PyTorch state_dict as an xpnet model (.npz).

    SOURCE is a file written by `xpnet export --format torch` (architecture, normalizer and
    class names come with it), or a bare state_dict of nn.Sequential(Linear, act, ...,
    Linear) saved with torch.save(model.state_dict(), path): then give its --activation
    and --output; it has no normalizer, so `xpnet predict` feeds it pixels / 255.

    \b
    Examples:
      xpnet import model.pt --out model.npz
      xpnet import finetuned_state_dict.pt --activation tanh --out tuned.npz
    """
    from xpnet.errors import ModelFileError
    from xpnet.fileio import check_writable
    from xpnet.io.interop import from_torch

    if out is None:
        out = source.with_suffix(".npz")
        if out.exists():  # e.g. the model this file was exported from: never overwrite it unasked
            raise ModelFileError(f"{out} exists; choose the output with --out")
    check_writable(out)
    net = from_torch(source, activation=activation, output=output, leaky_slope=leaky_slope)
    net.save(out)
    click.echo(f"imported {_describe(net)} from {source} to {out}")
