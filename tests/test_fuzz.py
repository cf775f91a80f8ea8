"""Hostile files, generated: truncations, bit flips and lying headers for the IDX reader, the
model loader and image loading.

Invariant: a typed error (``XpnetError``) or a valid result, never another exception; and for
IDX and model files, Python-side memory (numpy included, measured with tracemalloc) bounded by
a small multiple of the file's size. Bounded ``max_examples`` keep the module at a few seconds.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import xpnet  # noqa: E402
from xpnet.data import load_image, write_idx  # noqa: E402
from xpnet.data.idx import IDX_DTYPES, read_idx  # noqa: E402
from xpnet.errors import DataError, ModelFileError, XpnetError  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORK = Path(tempfile.mkdtemp(prefix="xpnet-fuzz-"))


def _measured(fn):
    """``(result or exception, peak bytes)`` of ``fn()`` under tracemalloc."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - classified by the caller
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _mutate(data: bytes, draw) -> bytes:
    """Truncate, flip bits, overwrite or append, as drawn."""
    buf = bytearray(data)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "append", "flip+truncate"]))
    if "flip" in kind and buf:
        for pos in draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=8)):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
    if kind == "overwrite" and buf:
        pos = draw(st.integers(0, len(buf) - 1))
        patch = draw(st.binary(min_size=1, max_size=8))
        buf[pos : pos + len(patch)] = patch
    if kind == "append":
        buf += draw(st.binary(min_size=1, max_size=64))
    if "truncate" in kind:
        buf = buf[: draw(st.integers(0, max(0, len(buf) - 1)))]
    return bytes(buf)


# ---------------------------------------------------------------------------- IDX
@st.composite
def idx_files(draw):
    code = draw(st.sampled_from(sorted(IDX_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    dtype = IDX_DTYPES[code].newbyteorder("=")
    array = (np.arange(np.prod(shape)) % 7).astype(dtype).reshape(shape)
    compress = draw(st.booleans())
    path = write_idx(WORK / f"f{'.gz' if compress else ''}", array, compress=compress)
    raw = path.read_bytes()
    if draw(st.booleans()):  # a lying header: any dimension sizes, the payload left as it is
        body = gzip.decompress(raw) if compress else raw
        ndim = draw(st.integers(1, 4))
        dims = draw(st.lists(st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
        body = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims) + body[4 + 4 * array.ndim :]
        raw = gzip.compress(body, mtime=0) if compress else body
    else:
        raw = _mutate(raw, draw)
    return raw, compress, array


@FUZZ
@given(idx_files())
def test_idx_reader_fuzz(case):
    raw, compress, original = case
    path = WORK / ("fuzz.idx.gz" if compress else "fuzz.idx")
    path.write_bytes(raw)
    out, peak = _measured(lambda: read_idx(path))
    if isinstance(out, Exception):
        assert isinstance(out, DataError), repr(out)
        assert str(path) in str(out)
    else:
        assert isinstance(out, np.ndarray) and out.dtype.isnative
    # raw: the file is read once plus the array; gzip: the stream stops at the declared size + 1,
    # and deflate expands at most ~1032:1
    bound = 4 * len(raw) + (2200 * len(raw) if compress else 0) + (1 << 20)  # + a constant: gzip's read buffers (128 KiB each)
    assert peak <= bound, (peak, len(raw))


def test_idx_gzip_bomb_declared_small_is_cheap(tmp_path):
    """The issue's case, scaled: a header of 60000×28×28 over a stream 4× as long."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    declared = 60000 * 28 * 28
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"\0\0\x08\x03" + struct.pack(">3I", 60000, 28, 28))
        block = bytes(1 << 20)
        for _ in range(4 * declared // len(block)):
            fh.write(block)
    out, peak = _measured(lambda: read_idx(path))
    assert isinstance(out, DataError) and "unexpected bytes after the pixel data" in str(out)
    assert peak < 2.5 * declared, peak  # the declared 47 MB (+ its join), not the 188 MB stream


# ---------------------------------------------------------------------------- models
def _model_bytes(normalizer=True) -> bytes:
    net = xpnet.MLP([6, 4, 3], seed=1)
    if normalizer:
        net.normalizer = xpnet.Normalizer().fit(np.arange(60, dtype=np.uint8).reshape(10, 6))
    net.class_names = ["a", "b", "c"]
    path = WORK / "base.npz"
    net.save(path)
    return path.read_bytes()


BASE_MODEL = None


def _npz_with(arrays: dict, meta) -> bytes:
    buf = io.BytesIO()
    payload = dict(arrays)
    payload["meta"] = np.array(meta if isinstance(meta, str) else json.dumps(meta))
    np.savez(buf, **payload)
    return buf.getvalue()


def _base_parts():
    with np.load(io.BytesIO(_model_bytes())) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(str(arrays.pop("meta")))


finite = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def hostile_models(draw):
    arrays, meta = _base_parts()
    what = draw(st.sampled_from(["bytes", "sizes", "nan", "norm", "version", "dtype", "drop", "meta"]))
    if what == "bytes":
        global BASE_MODEL
        BASE_MODEL = BASE_MODEL or _model_bytes()
        return _mutate(BASE_MODEL, draw)
    if what == "sizes":  # a meta that lies about the architecture (up to a 10^9-wide layer)
        meta["config"]["sizes"] = draw(st.lists(st.one_of(st.integers(-2, 12), st.integers(10**6, 10**9),
                                                          st.just("x"), st.none()), min_size=0, max_size=4))
    elif what == "nan":
        name = draw(st.sampled_from(sorted(arrays)))
        a = arrays[name].copy()
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        arrays[name] = a
    elif what == "norm":
        meta["normalizer"]["std"] = draw(st.one_of(finite, st.just(0.0), st.just("x"), st.lists(finite, max_size=3)))
        meta["normalizer"]["mean"] = draw(st.one_of(finite, st.just(0.5)))
    elif what == "version":
        meta["format_version"] = draw(st.one_of(st.integers(-3, 10**6), st.text(max_size=3), st.none(), st.floats()))
    elif what == "dtype":
        name = draw(st.sampled_from(sorted(arrays)))
        arrays[name] = arrays[name].astype(draw(st.sampled_from(["i4", "U3", "c8", "f2", "u1", "f8"])))
    elif what == "drop":
        arrays.pop(draw(st.sampled_from(sorted(arrays))))
    else:
        return _npz_with(arrays, draw(st.one_of(st.text(max_size=20), st.just("[1, 2]"), st.just("{}"))))
    return _npz_with(arrays, meta)


@FUZZ
@given(hostile_models())
def test_model_loader_fuzz(raw):
    path = WORK / "fuzz.npz"
    path.write_bytes(raw)
    out, peak = _measured(lambda: xpnet.load(path))
    if isinstance(out, Exception):
        assert isinstance(out, ModelFileError), repr(out)
        assert str(path) in str(out)
    else:
        assert isinstance(out, xpnet.MLP)
        assert all(np.isfinite(p).all() for p in out.params)
        if out.normalizer is not None:
            assert np.all(np.asarray(out.normalizer.std) > 0)
    assert peak <= 16 * len(raw) + 2 * 1024 * 1024, (peak, len(raw))


def test_model_validation_messages(tmp_path):
    """The issue's cases, each one line naming the file and what disagrees."""
    arrays, meta = _base_parts()

    def load(arrays, meta, name):
        path = tmp_path / name
        path.write_bytes(_npz_with(arrays, meta))
        with pytest.raises(ModelFileError) as info:
            xpnet.load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        return str(info.value)

    wide = json.loads(json.dumps(meta))
    wide["config"]["sizes"] = [6, 10**9, 3]
    out, peak = _measured(lambda: load(arrays, wide, "wide.npz"))
    assert "parameter 0 has shape (4, 6) (W0), but the meta's sizes [6, 1000000000, 3] need (1000000000, 6)" in out
    assert peak < 1 << 20  # refused before anything is allocated
    nan = dict(arrays, W1=np.full_like(arrays["W1"], np.nan))
    assert "W1 has 12 non-finite value(s)" in load(nan, meta, "nan.npz")
    zero = json.loads(json.dumps(meta))
    zero["normalizer"]["std"] = 0.0
    assert "normalizer's std must be > 0" in load(arrays, zero, "std.npz")
    future = dict(meta, format_version=7)
    assert "format version 7" in load(arrays, future, "v7.npz")
    odd = dict(meta, format_version="1.5")
    assert "unknown format version '1.5'" in load(arrays, odd, "odd.npz")


# ---------------------------------------------------------------------------- images
def _image_bytes(fmt: str) -> bytes:
    Image = pytest.importorskip("PIL.Image")
    pixels = np.full((24, 20), 230, dtype=np.uint8)
    pixels[4:20, 8:12] = 10
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def hostile_images(draw):
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF"]))
    raw = _image_bytes(fmt)
    if fmt == "PNG" and draw(st.booleans()):  # a lying IHDR with a correct CRC: any width × height
        w, h = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
        ihdr = struct.pack(">II", w, h) + raw[24:29]
        raw = raw[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + raw[33:]
        return raw
    return _mutate(raw, draw)


@FUZZ
@given(hostile_images())
def test_image_loading_fuzz(raw):
    Image = pytest.importorskip("PIL.Image")
    path = WORK / "fuzz.img"
    path.write_bytes(raw)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1 << 16  # Pillow's own allocations are not traced: keep lying sizes small
    try:
        out = load_image(path)
    except XpnetError as exc:
        assert isinstance(exc, DataError) and str(path) in str(exc), repr(exc)
    else:
        assert out.shape == (28, 28) and out.dtype == np.float32 and np.isfinite(out).all()
        assert 0.0 <= out.min() and out.max() <= 1.0
    finally:
        Image.MAX_IMAGE_PIXELS = limit
