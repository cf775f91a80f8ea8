"""Interop: a trained :class:`~xpnet.nn.model.MLP` as an ONNX graph or a PyTorch state_dict, and back.

Both formats carry the saved :class:`~xpnet.data.preprocess.Normalizer`, so what a deployment feeds
in is what an IDX file stores: raw pixel values 0–255.

* ONNX (:func:`to_onnx`, :func:`export_onnx`): input ``pixels`` float32 ``(N, n_in)`` →
  ``Mul(scale) → Sub(mean) → Div(std)`` (the normalizer, in the same float32 arithmetic as
  ``Normalizer.transform``) → one ``Gemm`` (``transB=1``: ``W`` stays ``n_out × n_in``) plus the
  hidden activation per layer → ``Softmax`` / ``Sigmoid`` → output ``probabilities``
  (``outputs`` for a linear output). Class names, the xpnet version, the architecture and the
  normalizer are ``metadata_props``; ``onnx.checker`` (full check) runs before anything is written.
* PyTorch (:func:`torch_payload`, :func:`export_torch`): a dict that ``torch.load(path,
  weights_only=True)`` reads: ``state_dict`` with the keys of ``nn.Sequential(Linear, ReLU, …,
  Linear)`` (``0.weight``, ``0.bias``, ``2.weight``, …), ``normalizer`` (``scale``, ``mean``,
  ``std``: ``x = (pixels·scale − mean) / std``), ``config``, ``class_names``, ``xpnet_version``.
  :func:`from_torch` reads it back (or a bare state_dict, or an ``nn.Sequential``).

onnx, onnxruntime and torch are imported only inside the functions that need them.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from xpnet import __version__, backend
from xpnet.compat import require
from xpnet.errors import ConfigError, ModelFileError, ShapeError

from xpnet.fileio import atomic_write

DEFAULT_OPSET = 17  # onnxruntime >= 1.13; IR version 8
MIN_OPSET = 13  # Softmax/Gemm in their current form
INPUT_NAME = "pixels"
OUTPUT_NAMES = {"softmax": "probabilities", "sigmoid": "probabilities", "linear": "outputs"}
TORCH_FORMAT = "xpnet-torch"
TORCH_FORMAT_VERSION = 1
_ONNX_ACTIVATIONS = {"relu": "Relu", "leaky_relu": "LeakyRelu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
_PIXEL_SCALE = 1.0 / 255.0

__all__ = ["ExportError", "export_onnx", "export_torch", "from_torch", "onnx_check", "pixel_normalizer", "to_onnx",
           "torch_module", "torch_payload"]


class ExportError(ConfigError):
    """A model configuration the target format cannot express (or a file it cannot read back)."""


# ---------------------------------------------------------------------- what both formats need
def _layers(net) -> list[tuple[np.ndarray, np.ndarray]]:
    layers = [(backend.to_numpy(W), backend.to_numpy(b)) for W, b in zip(net.W, net.b)]
    for l, (W, b) in enumerate(layers):
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ExportError(f"layer {l} has NaN or infinite weights; nothing sensible to export")
    return layers


def _check_net(net) -> None:
    if net.activation_name not in _ONNX_ACTIVATIONS:
        raise ExportError(f"hidden activation {net.activation_name!r} has no export (supported: {', '.join(_ONNX_ACTIVATIONS)})")
    if net.output not in OUTPUT_NAMES:
        raise ExportError(f"output {net.output!r} has no export (supported: {', '.join(OUTPUT_NAMES)})")


def pixel_normalizer(net):
    """``(scale, mean, std)`` in float32 mapping raw pixels 0–255 to the network's input, or None.

    A normalizer fitted on integer pixels has ``scale = 1/255``; one fitted on floats has
    ``scale = 1`` and, as ``xpnet predict`` assumes, was fitted on ``pixels / 255``; so raw
    pixels are scaled by 1/255 either way, then standardised as ``Normalizer.transform`` does.
    """
    norm = net.normalizer
    if norm is None:
        return None
    if norm.mean is None:
        raise ExportError("the model's normalizer was never fitted")
    if not (math.isclose(norm.scale, _PIXEL_SCALE, rel_tol=1e-9) or norm.scale == 1.0):
        raise ExportError(f"normalizer scale {norm.scale} is neither 1/255 (fitted on pixels) nor 1 (fitted on "
                          "pixels/255): cannot tell how raw pixels map to the network's input")
    scale = np.float32(norm.scale if norm.scale != 1.0 else _PIXEL_SCALE)
    # Normalizer.transform casts mean and std to float32 before using them; so does the graph.
    mean = np.asarray(backend.to_numpy(norm.mean) if norm.per_feature else norm.mean, dtype=np.float32)
    std = np.asarray(backend.to_numpy(norm.std) if norm.per_feature else norm.std, dtype=np.float32)
    if norm.per_feature and mean.shape != (net.sizes[0],):
        raise ExportError(f"the normalizer has {mean.size} features but the network expects {net.sizes[0]}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ExportError("the normalizer has non-finite values or a zero standard deviation")
    return scale, mean, std


def _metadata(net, input_doc: str) -> dict[str, str]:
    return {
        "xpnet_version": __version__,
        "class_names": json.dumps(list(net.class_names) if net.class_names is not None else None),
        "sizes": json.dumps(list(net.sizes)),
        "activation": net.activation_name,
        "leaky_slope": repr(net.leaky_slope),
        "output": net.output,
        "input": input_doc,
        "normalizer": json.dumps(net.normalizer.to_dict() if net.normalizer is not None else None),
    }


# ---------------------------------------------------------------------- ONNX
def _import_onnx():
    return require("onnx", "ONNX export")


def to_onnx(net, opset: int = DEFAULT_OPSET, allow_bare: bool = False):
    """The network as an ``onnx.ModelProto`` (checked with ``onnx.checker``, full check).

    The input ``pixels`` is raw pixel values 0–255 and the saved normalizer is the graph's
    first three nodes. A model saved without a normalizer is an :class:`ExportError`, since
    nothing says what its input scale is, unless ``allow_bare``: then ``pixels`` is the
    network's own input (whatever it was trained on).
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    _check_net(net)
    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= latest:
        raise ExportError(f"opset {opset} is not supported: choose {MIN_OPSET}..{latest} (default {DEFAULT_OPSET})")
    opset = int(opset)
    norm = pixel_normalizer(net)
    if norm is None and not allow_bare:
        raise ExportError("the model has no saved normalizer, so its raw-pixel input scale is unknown; set "
                          "net.normalizer before saving, or export the bare network (allow_bare / --allow-bare)")
    n_in, n_out = net.sizes[0], net.sizes[-1]
    out_name = OUTPUT_NAMES[net.output]
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    x = INPUT_NAME
    if norm is not None:
        scale, mean, std = norm
        nodes.append(helper.make_node("Mul", [x, const("normalizer.scale", scale)], ["scaled"], name="scale"))
        nodes.append(helper.make_node("Sub", ["scaled", const("normalizer.mean", mean)], ["centred"], name="centre"))
        nodes.append(helper.make_node("Div", ["centred", const("normalizer.std", std)], ["x"], name="standardise"))
        x = "x"
    layers = _layers(net)
    act = _ONNX_ACTIVATIONS[net.activation_name]
    for l, (W, b) in enumerate(layers):
        z = f"z{l}"
        nodes.append(helper.make_node("Gemm", [x, const(f"W{l}", W), const(f"b{l}", b)], [z], name=f"linear{l}", transB=1))
        if l == len(layers) - 1:
            x = z
            break
        attrs = {"alpha": float(net.leaky_slope)} if act == "LeakyRelu" else {}
        nodes.append(helper.make_node(act, [z], [f"a{l}"], name=f"{net.activation_name}{l}", **attrs))
        x = f"a{l}"
    if net.output == "softmax":
        nodes.append(helper.make_node("Softmax", [x], [out_name], name="softmax", axis=1))
    elif net.output == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [x], [out_name], name="sigmoid"))
    else:
        nodes.append(helper.make_node("Identity", [x], [out_name], name="identity"))

    input_doc = (f"raw pixel values 0-255 as float32, shape (N, {n_in}); the normalizer is inside the graph"
                 if norm is not None else f"the network's own input features as float32, shape (N, {n_in}) (no normalizer)")
    shape = "-".join(map(str, net.sizes))
    graph = helper.make_graph(
        nodes, f"xpnet_mlp_{shape}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_in], doc_string=input_doc)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", n_out])],
        initializer=inits,
        doc_string=f"xpnet MLP {shape} ({net.activation_name}, {net.output})",
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="xpnet", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets),
                              doc_string=f"xpnet {__version__} MLP {shape}. Input: {input_doc}.")
    helper.set_model_props(model, _metadata(net, input_doc))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug here, not bad input: say so in one line
        raise ExportError(f"the ONNX graph failed onnx.checker: {str(exc).splitlines()[0]}") from None
    return model


def export_onnx(net, path, opset: int = DEFAULT_OPSET, allow_bare: bool = False) -> Path:
    """Write :func:`to_onnx` of ``net`` (an MLP, or the path of a saved model) to ``path``, atomically."""
    net = _as_net(net)
    model = to_onnx(net, opset=opset, allow_bare=allow_bare)
    data = model.SerializeToString()
    return atomic_write(path, lambda fh: fh.write(data))


def onnx_check(path, net, n: int = 256, seed: int = 0) -> float:
    """Max |onnxruntime − xpnet| over ``n`` random raw-pixel rows (uint8 values): the export's self-test.

    Raises ConfigError when onnxruntime is not installed.
    """
    ort = require("onnxruntime", "checking the export")
    pixels = np.random.default_rng(seed).integers(0, 256, (n, net.sizes[0])).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: pixels})[0]
    norm = net.normalizer
    inputs = pixels if norm is None or norm.scale != 1.0 else pixels * np.float32(_PIXEL_SCALE)
    want = net.predict_proba(inputs)
    return float(np.max(np.abs(got.astype(np.float64) - want)))


# ---------------------------------------------------------------------- PyTorch
def _import_torch():
    return require("torch", "PyTorch interop")


def torch_payload(net) -> dict:
    """What :func:`export_torch` saves: only tensors, dicts, lists, strings and numbers, so
    ``torch.load(..., weights_only=True)`` reads it."""
    torch = _import_torch()
    _check_net(net)
    state = OrderedDict()
    for l, (W, b) in enumerate(_layers(net)):
        state[f"{2 * l}.weight"] = torch.from_numpy(W.copy())
        state[f"{2 * l}.bias"] = torch.from_numpy(b.copy())
    norm = None
    if net.normalizer is not None:
        d = net.normalizer.to_dict()
        if d["per_feature"]:
            mean, std = (torch.from_numpy(np.asarray(d[k], dtype=np.float64)) for k in ("mean", "std"))
        else:
            mean, std = float(d["mean"]), float(d["std"])
        norm = {"per_feature": bool(d["per_feature"]), "scale": float(d["scale"]), "mean": mean, "std": std}
    return {
        "format": TORCH_FORMAT,
        "format_version": TORCH_FORMAT_VERSION,
        "xpnet_version": __version__,
        "state_dict": state,
        "normalizer": norm,
        "config": net.config(),
        "class_names": list(net.class_names) if net.class_names is not None else None,
    }


def export_torch(net, path) -> Path:
    """Save :func:`torch_payload` of ``net`` (an MLP or a saved model's path) to ``path``, atomically."""
    torch = _import_torch()
    payload = torch_payload(_as_net(net))
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def torch_module(source):
    """The ``nn.Sequential(Linear, act, …, Linear)`` of an export (a path, its payload or an MLP),
    weights loaded; it returns logits: apply softmax/sigmoid and the normalizer yourself."""
    torch = _import_torch()
    if hasattr(source, "sizes"):
        payload = torch_payload(source)
    elif isinstance(source, dict):
        payload = source
    else:
        payload = _read_payload(source)
    config, state = payload["config"], payload["state_dict"]
    act = {"relu": lambda: torch.nn.ReLU(), "leaky_relu": lambda: torch.nn.LeakyReLU(config["leaky_slope"]),
           "sigmoid": lambda: torch.nn.Sigmoid(), "tanh": lambda: torch.nn.Tanh()}[config["activation"]]
    sizes = config["sizes"]
    modules = []
    for l in range(len(sizes) - 1):
        modules.append(torch.nn.Linear(sizes[l], sizes[l + 1], dtype=state[f"{2 * l}.weight"].dtype))
        if l < len(sizes) - 2:
            modules.append(act())
    seq = torch.nn.Sequential(*modules)
    seq.load_state_dict(state)
    return seq


def _read_payload(path):
    torch = _import_torch()
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a foreign or corrupt file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path} is not a PyTorch file that loads with weights_only=True ({first})") from None


_KEY = re.compile(r"^(?:(.*)\.)?(\d+)\.(weight|bias)$")


def _bare_layers(state, where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(W, b), ...]`` from a state_dict of an ``nn.Sequential``: ``<i>.weight``/``<i>.bias``, in index order."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        match = _KEY.match(str(key))
        if match is None or not hasattr(value, "shape"):
            raise ModelFileError(f"{where}: {key!r} is not an nn.Sequential Linear parameter (<index>.weight / <index>.bias)")
        if hasattr(value, "detach"):  # a tensor; half / bfloat16 have no NumPy twin that xpnet runs
            value = value.detach().cpu()
            value = value if str(value.dtype) in ("torch.float32", "torch.float64") else value.float()
            array = value.numpy()
        else:
            array = np.asarray(value)
        found.setdefault(int(match.group(2)), {})[match.group(3)] = array
    if not found:
        raise ModelFileError(f"{where}: no Linear layers found")
    layers = []
    for idx in sorted(found):
        W = found[idx].get("weight")
        if W is None or W.ndim != 2:
            raise ModelFileError(f"{where}: layer {idx} has no 2-D weight")
        b = found[idx].get("bias", np.zeros(W.shape[0], dtype=W.dtype))
        if b.shape != (W.shape[0],):
            raise ShapeError(f"{where}: layer {idx} has bias shape {tuple(b.shape)}, expected ({W.shape[0]},)")
        if layers and layers[-1][0].shape[0] != W.shape[1]:
            raise ShapeError(f"{where}: layer {idx} takes {W.shape[1]} inputs but the layer before gives {layers[-1][0].shape[0]}")
        layers.append((W, b))
    return layers


def _sequential_layers(module):
    """``(layers, activation, slope, output)`` from an ``nn.Sequential`` of Linear + one activation kind."""
    torch = _import_torch()
    nn = torch.nn
    kinds = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
    layers, acts, slope, output = [], [], 0.01, "softmax"
    mods = [m for m in module if not isinstance(m, (nn.Dropout, nn.Identity))]
    if mods and isinstance(mods[0], nn.Flatten):
        mods = mods[1:]
    for i, m in enumerate(mods):
        last = i == len(mods) - 1
        if isinstance(m, nn.Linear):
            b = m.bias if m.bias is not None else torch.zeros(m.out_features, dtype=m.weight.dtype)
            layers.append((m.weight.detach().cpu().numpy().copy(), b.detach().cpu().numpy().copy()))
        elif last and layers and isinstance(m, (nn.Softmax, nn.Sigmoid)):
            if isinstance(m, nn.Softmax) and m.dim not in (1, -1):
                raise ExportError(f"Softmax over dim {m.dim}: xpnet's softmax is row-wise (dim=1)")
            output = "softmax" if isinstance(m, nn.Softmax) else "sigmoid"
        elif type(m) in kinds and layers and not last:
            acts.append(kinds[type(m)])
            if isinstance(m, nn.LeakyReLU):
                slope = float(m.negative_slope)
        else:
            raise ExportError(f"module {i} ({type(m).__name__}) has no xpnet equivalent; xpnet takes "
                              "nn.Sequential(Linear, act, ..., Linear[, Softmax|Sigmoid]) with one activation kind")
    if not layers:
        raise ExportError("the module has no Linear layers")
    if len(set(acts)) > 1 or len(acts) != len(layers) - 1:
        raise ExportError(f"xpnet needs exactly one activation of one kind between Linear layers, found {acts or 'none'}")
    return layers, (acts[0] if acts else "relu"), slope, output


def from_torch(source, *, activation: str | None = None, output: str | None = None, leaky_slope: float | None = None,
               device="cpu", dtype=None):
    """An :class:`~xpnet.nn.model.MLP` from PyTorch.

    ``source`` is a file written by :func:`export_torch` (or its payload dict: architecture,
    normalizer and class names come with it), a bare ``nn.Sequential`` state_dict (path or
    mapping; ``activation`` default relu, ``output`` default softmax, no normalizer), or an
    ``nn.Sequential`` module of Linear layers with one activation kind.
    """
    from xpnet.nn.model import MLP  # noqa: PLC0415
    from xpnet.data.preprocess import Normalizer  # noqa: PLC0415

    where = str(source) if isinstance(source, (str, Path)) else type(source).__name__
    payload = _read_payload(source) if isinstance(source, (str, Path)) else source
    config, norm, class_names = {}, None, None
    if hasattr(payload, "modules") and callable(payload.modules):  # an nn.Module
        layers, act, slope, out = _sequential_layers(payload)
        config = {"activation": act, "leaky_slope": slope, "output": out}
    elif isinstance(payload, dict) and payload.get("format") == TORCH_FORMAT:
        if int(payload.get("format_version", 0)) > TORCH_FORMAT_VERSION:
            raise ModelFileError(f"{where} was written by a newer xpnet ({payload.get('xpnet_version')}); upgrade to read it")
        config = dict(payload.get("config") or {})
        given = {"activation": activation, "output": output, "leaky_slope": leaky_slope}
        clash = [k for k, v in given.items() if v is not None and v != config.get(k)]
        if clash:
            raise ConfigError(f"{where} records its own {', '.join(clash)} "
                              f"({', '.join(repr(config.get(k)) for k in clash)}); drop the option")
        if not isinstance(payload.get("state_dict"), dict):
            raise ModelFileError(f"{where}: an xpnet torch export without a state_dict")
        layers = _bare_layers(payload["state_dict"], where)
        if list(config.get("sizes", [])) != [layers[0][0].shape[1]] + [W.shape[0] for W, _ in layers]:
            raise ShapeError(f"{where}: the state_dict's shapes do not match the recorded sizes {config.get('sizes')}")
        norm, class_names = payload.get("normalizer"), payload.get("class_names")
    elif isinstance(payload, dict):
        layers = _bare_layers(payload, where)
    else:
        raise ModelFileError(f"{where}: expected an xpnet torch export, a state_dict or an nn.Sequential, "
                             f"got {type(payload).__name__}")
    for key, value in (("activation", activation), ("output", output), ("leaky_slope", leaky_slope)):
        if value is not None:
            config[key] = value
    sizes = [layers[0][0].shape[1]] + [W.shape[0] for W, _ in layers]
    kept = {k: config[k] for k in ("activation", "leaky_slope", "output", "loss", "init", "seed") if k in config}
    net = MLP.from_config(dict(kept, sizes=sizes), device=device,
                          dtype=dtype or config.get("dtype") or layers[0][0].dtype.name)
    net.set_params([a for W, b in layers for a in (W, b)])
    if norm is not None:
        plain = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in norm.items()}
        net.normalizer = Normalizer.from_dict(plain)
    net.class_names = class_names
    return net


def _as_net(net_or_path):
    if isinstance(net_or_path, (str, Path)):
        from xpnet.io.npz import load  # noqa: PLC0415

        return load(net_or_path)
    return net_or_path
