"""Loading (and checkpointing) models as ``.npz`` files, checked before anything is allocated.

A model file holds ``W0, b0, W1, b1, ...`` plus ``meta``: a JSON string (stored as a
plain unicode array so ``np.load(allow_pickle=False)`` can read it) with the
architecture, normalizer, data set, class names and xpnet version (:func:`model_payload`). A checkpoint adds the optimizer state and the training
loop's position. Writes are atomic (:mod:`xpnet.fileio`).

Reading trusts nothing: every array's ``.npy`` header (shape, dtype) is read and checked
against the meta and against the bytes the zip member can really hold before the array is
loaded; weights must be finite, the normalizer's std finite and > 0, the format version
known. Any disagreement is a :class:`~xpnet.errors.ModelFileError` naming the file and what
disagrees. The writer and the reader of the format live here together, with its one
``FORMAT_VERSION``. Depends on ``model`` one way: ``model`` imports this module only lazily, in ``MLP.save``.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from xpnet import __version__
from xpnet.errors import ModelFileError, XpnetError
from xpnet.fileio import atomic_write

MODEL_FORMAT = "xpnet-model"
CHECKPOINT_FORMAT = "xpnet-checkpoint"
FORMAT_VERSION = 1

MAX_META_BYTES = 64 << 20  # the JSON meta (per-feature normalizer included) is far smaller
DEFLATE_MAX_RATIO = 1100  # deflate cannot expand more than ~1032:1; a member claiming more lies


# ---------------------------------------------------------------------------- writing
def save(net, path) -> Path:
    """Weights and metadata of ``net`` to ``path`` (.npz), atomically; ``xpnet.load`` reads it back."""
    return write_npz(path, *model_payload(net))


def write_npz(path, arrays: dict, meta: dict) -> Path:
    """``arrays`` plus ``meta`` (a JSON string stored as a unicode array, readable with
    ``allow_pickle=False``) as one ``.npz`` file, atomically."""
    payload = dict(arrays)
    payload["meta"] = np.array(json.dumps(meta))
    return atomic_write(path, lambda fh: np.savez(fh, **payload))


def model_payload(net) -> tuple[dict, dict]:
    """``(arrays, meta)`` of a model file: ``W0, b0, W1, ...`` (:meth:`MLP.state`) and the JSON meta
    (format, version, architecture, normalizer, data set and class names)."""
    arrays, config = net.state()
    meta = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "xpnet_version": __version__,
        "config": config,
        "normalizer": net.normalizer.to_dict() if net.normalizer is not None else None,
        "dataset": getattr(net, "dataset", None),
        "class_names": list(net.class_names) if net.class_names is not None else None,
    }
    return arrays, meta


# ---------------------------------------------------------------------------- reading, bounded
class _Npz:
    """The members of an ``.npz`` archive, read one checked array at a time."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.zip = zipfile.ZipFile(path)
        self.members = {}
        for info in self.zip.infolist():
            if info.filename.endswith(".npy"):
                self.members[info.filename[:-4]] = info

    def close(self):
        self.zip.close()

    def header(self, name):
        """``(shape, dtype)`` from the member's ``.npy`` header, after checking it fits the archive."""
        info = self.members[name]
        limit = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO) + 1024
        if info.compress_size > self.size or info.file_size > limit:
            raise ModelFileError(f"{self.path}: array {name!r} claims {info.file_size:,} bytes, more than the file can hold")
        with self.zip.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh, max_header_size=10_000)
            header_len = fh.tell()
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise ModelFileError(f"{self.path}: array {name!r} has dtype {dtype} (objects/records are refused)")
        nbytes = math.prod(shape) * dtype.itemsize
        if header_len + nbytes != info.file_size:
            raise ModelFileError(f"{self.path}: array {name!r} declares shape {shape} ({nbytes:,} bytes) "
                                 f"but its member holds {info.file_size - header_len:,}")
        return tuple(shape), dtype

    def array(self, name, shape=None) -> np.ndarray:
        got, dtype = self.header(name)
        if shape is not None and got != tuple(shape):
            raise ModelFileError(f"{self.path}: array {name!r} has shape {got}, expected {tuple(shape)}")
        with self.zip.open(self.members[name]) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)


def _open(path) -> _Npz:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        return _Npz(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise ModelFileError(f"{path} is not a readable .npz file ({exc})") from None


def _read_meta(npz: _Npz, expected_format: str) -> dict:
    path = npz.path
    if "meta" not in npz.members:
        raise ModelFileError(f"{path} is not an xpnet file (no metadata)")
    shape, dtype = npz.header("meta")
    if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_META_BYTES:
        raise ModelFileError(f"{path}: metadata is corrupt (a {dtype} array of shape {shape}, expected one JSON string)")
    try:
        meta = json.loads(str(npz.array("meta")))
    except (json.JSONDecodeError, ValueError):
        raise ModelFileError(f"{path}: metadata is corrupt (not JSON)") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: metadata is corrupt (not a JSON object)")
    fmt = meta.get("format")
    if fmt != expected_format and not (expected_format == MODEL_FORMAT and fmt == CHECKPOINT_FORMAT):
        raise ModelFileError(f"{path} is a {fmt!r} file, expected {expected_format!r}")
    version = meta.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"{path}: unknown format version {version!r} (this xpnet reads version {FORMAT_VERSION})")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: format version {version} was written by a newer xpnet "
                             f"({meta.get('xpnet_version')}); this one reads version {FORMAT_VERSION}: upgrade to read it")
    return meta


def _sizes(meta, path) -> list[int]:
    config = meta.get("config")
    sizes = config.get("sizes") if isinstance(config, dict) else None
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(type(s) is int and 1 <= s < 2**31 for s in sizes)):
        raise ModelFileError(f"{path}: the meta's architecture is invalid (sizes {sizes!r}); "
                             "the file is incomplete or not an xpnet model")
    return sizes


def _read_params(npz: _Npz, sizes, path) -> list[np.ndarray]:
    """``[W0, b0, ...]``: every header checked against ``sizes`` before any array is loaded."""
    expected = []
    for l in range(len(sizes) - 1):
        expected += [(f"W{l}", (sizes[l + 1], sizes[l])), (f"b{l}", (sizes[l + 1],))]
    for i, (name, shape) in enumerate(expected):
        if name not in npz.members:
            raise ModelFileError(f"{path}: missing {name!r}; the file is incomplete or not an xpnet model")
        got, dtype = npz.header(name)
        if got != shape:
            raise ModelFileError(f"{path}: incompatible model: parameter {i} has shape {got} ({name}), "
                                 f"but the meta's sizes {sizes} need {shape}")
        if dtype.kind != "f":
            raise ModelFileError(f"{path}: incompatible model: {name} has dtype {dtype}, expected floats")
    params = []
    for name, shape in expected:
        a = npz.array(name, shape)
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise ModelFileError(f"{path}: {name} has {bad} non-finite value(s) (NaN/inf); refusing a broken model")
        params.append(a)
    return params


def _normalizer(meta, path, n_in):
    from xpnet.data.preprocess import Normalizer  # noqa: PLC0415

    d = meta.get("normalizer")
    if not d:
        return None
    try:
        norm = Normalizer.from_dict(d)
        mean = np.asarray(norm.mean, dtype=np.float64)
        std = np.asarray(norm.std, dtype=np.float64)
        scale = float(getattr(norm, "scale", 1.0) if getattr(norm, "scale", None) is not None else 1.0)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{path}: the normalizer in the meta is corrupt ({exc})") from None
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and math.isfinite(scale)):
        raise ModelFileError(f"{path}: the normalizer's mean/std/scale are not finite")
    if not np.all(std > 0):
        raise ModelFileError(f"{path}: the normalizer's std must be > 0, got {np.min(std):g}")
    if norm.per_feature and (mean.shape != (n_in,) or std.shape != (n_in,)):
        raise ModelFileError(f"{path}: the per-feature normalizer has {mean.size} means and {std.size} stds "
                             f"for {n_in} inputs")
    return norm


def _build_net(npz: _Npz, meta, device):
    from xpnet.nn.model import MLP  # noqa: PLC0415 - model never imports this module

    path = npz.path
    sizes = _sizes(meta, path)
    params = _read_params(npz, sizes, path)
    norm = _normalizer(meta, path, sizes[0])
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ModelFileError(f"{path}: class_names in the meta must be a list of strings")
    try:
        net = MLP.from_config(dict(meta["config"], sizes=sizes), device=device)
        net.set_params(params)
    except XpnetError as exc:
        if isinstance(exc, ModelFileError) or type(exc).__name__ == "DeviceError":
            raise
        raise ModelFileError(f"{path}: incompatible model ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: incompatible model ({exc})") from None
    dataset = meta.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise ModelFileError(f"{path}: dataset in the meta must be a string")
    net.normalizer, net.class_names, net.dataset = norm, names, dataset
    return net


def _load(path, expected_format):
    npz = _open(path)
    try:
        meta = _read_meta(npz, expected_format)
        return npz, meta
    except BaseException:
        npz.close()
        raise


def _guard(fn):
    """Turn the few low-level failures a hostile archive can still cause into ModelFileError."""
    try:
        return fn()
    except XpnetError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise ModelFileError(f"{fn.path} is not a readable model file ({type(exc).__name__}: {exc})") from None


def load(path, device="cpu"):
    """An :class:`~xpnet.nn.model.MLP` from a model (or checkpoint) file, on ``device``."""
    def run():
        npz, meta = _load(path, MODEL_FORMAT)
        with _closing(npz):
            return _build_net(npz, meta, device)

    run.path = path
    return _guard(run)


def save_checkpoint(path, trainer, run_config: dict | None = None) -> Path:
    """Model + optimizer state + loop position, enough to resume exactly."""
    state = trainer.state_dict()
    arrays, meta = model_payload(trainer.net)
    arrays.update(state.pop("arrays"))
    meta.update(format=CHECKPOINT_FORMAT, trainer=state, run=run_config or {})
    return write_npz(path, arrays, meta)


def load_checkpoint(path, device="cpu"):
    """``(net, trainer_state, run_config)`` from a checkpoint; pass the state to ``Trainer.load_state_dict``."""
    def run():
        npz, meta = _load(path, CHECKPOINT_FORMAT)
        with _closing(npz):
            net = _build_net(npz, meta, device)
            if not isinstance(meta.get("trainer"), dict):
                raise ModelFileError(f"{path}: checkpoint without trainer state")
            state = dict(meta["trainer"])
            extra = [k for k in npz.members if k.startswith("opt_") or k == "best_params"]
            for k in extra:
                npz.header(k)  # shape/dtype checked against the member's bytes before loading
            state["arrays"] = {k: npz.array(k) for k in extra}
            run_config = meta.get("run", {})
        return net, state, run_config if isinstance(run_config, dict) else {}

    run.path = path
    return _guard(run)


class _closing:
    def __init__(self, npz):
        self.npz = npz

    def __enter__(self):
        return self.npz

    def __exit__(self, *exc):
        self.npz.close()
        return False
