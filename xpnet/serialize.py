"""Saving and loading models and checkpoints as ``.npz`` files, atomically.

A model file holds ``W0, b0, W1, b1, ...`` plus ``meta``: a JSON string (stored as a
plain unicode array so ``np.load(allow_pickle=False)`` can read it) with the
architecture, normalizer, class names and xpnet version. A checkpoint adds the
optimizer state and the training loop's position. Every write goes to a temporary file
in the target folder and is renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import __version__, backend
from .errors import ModelFileError, XpnetError

MODEL_FORMAT = "xpnet-model"
CHECKPOINT_FORMAT = "xpnet-checkpoint"
FORMAT_VERSION = 1


def check_writable(path) -> Path:
    """Fail with one clear line when ``path`` cannot be written; returns its folder.

    The CLI calls it before training, not after an hour of it; ``atomic_write`` again.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelFileError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ModelFileError(f"cannot write {path}: folder {folder} is not writable")
    if path.is_dir():
        raise ModelFileError(f"cannot write {path}: it is a folder")
    return folder


def atomic_write(path, write, mode: str = "wb") -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    folder = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ModelFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        with _suppress_oserror():
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ModelFileError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _suppress_oserror:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, OSError)


def _write_npz(path, arrays: dict, meta: dict) -> Path:
    payload = dict(arrays)
    payload["meta"] = np.array(json.dumps(meta))
    return atomic_write(path, lambda fh: np.savez(fh, **payload))


def _model_meta(net) -> dict:
    return {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "xpnet_version": __version__,
        "config": net.config(),
        "normalizer": net.normalizer.to_dict() if net.normalizer is not None else None,
        "class_names": list(net.class_names) if net.class_names is not None else None,
    }


def _param_arrays(net) -> dict:
    arrays = {}
    for l, (W, b) in enumerate(zip(net.W, net.b)):
        arrays[f"W{l}"] = backend.to_numpy(W)
        arrays[f"b{l}"] = backend.to_numpy(b)
    return arrays


def save_model(net, path) -> Path:
    """Weights and metadata of ``net`` to ``path`` (.npz)."""
    return _write_npz(path, _param_arrays(net), _model_meta(net))


def _read_npz(path, expected_format: str):
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFileError(f"{path} is not a readable .npz file ({exc})") from None
    if "meta" not in arrays:
        raise ModelFileError(f"{path} is not an xpnet file (no metadata)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: metadata is corrupt") from None
    fmt = meta.get("format")
    if fmt != expected_format and not (expected_format == MODEL_FORMAT and fmt == CHECKPOINT_FORMAT):
        raise ModelFileError(f"{path} is a {fmt!r} file, expected {expected_format!r}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer xpnet ({meta.get('xpnet_version')}); upgrade to read it")
    return arrays, meta


def _build_net(arrays, meta, path, device):
    from .model import MLP, _rebuild_kwargs  # noqa: PLC0415
    from .preprocess import Normalizer  # noqa: PLC0415

    config = meta.get("config") or {}
    try:
        net = MLP(config["sizes"], device=device, **_rebuild_kwargs(config))
        params = [arrays[f"{kind}{l}"] for l in range(net.n_layers) for kind in ("W", "b")]
        net.set_params(params)
    except KeyError as exc:
        raise ModelFileError(f"{path}: missing {exc.args[0]!r}; the file is incomplete or not an xpnet model") from None
    except XpnetError as exc:
        if isinstance(exc, ModelFileError) or type(exc).__name__ == "DeviceError":
            raise
        raise ModelFileError(f"{path}: incompatible model ({exc})") from None
    if meta.get("normalizer"):
        net.normalizer = Normalizer.from_dict(meta["normalizer"])
    net.class_names = meta.get("class_names")
    return net


def load(path, device="cpu"):
    """An :class:`~xpnet.model.MLP` from a model (or checkpoint) file, on ``device``."""
    arrays, meta = _read_npz(path, MODEL_FORMAT)
    return _build_net(arrays, meta, path, device)


def save_checkpoint(path, trainer, run_config: dict | None = None) -> Path:
    """Model + optimizer state + loop position, enough to resume exactly."""
    state = trainer.state_dict()
    arrays = _param_arrays(trainer.net)
    arrays.update(state.pop("arrays"))
    meta = _model_meta(trainer.net)
    meta.update(format=CHECKPOINT_FORMAT, trainer=state, run=run_config or {})
    return _write_npz(path, arrays, meta)


def load_checkpoint(path, device="cpu"):
    """``(net, trainer_state, run_config)`` from a checkpoint; pass the state to ``Trainer.load_state_dict``."""
    arrays, meta = _read_npz(path, CHECKPOINT_FORMAT)
    net = _build_net(arrays, meta, path, device)
    state = dict(meta["trainer"])
    state["arrays"] = {k: v for k, v in arrays.items() if k.startswith("opt_") or k == "best_params"}
    return net, state, meta.get("run", {})
