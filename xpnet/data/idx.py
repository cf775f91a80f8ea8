"""The IDX file format of MNIST (gzip or raw), read and written with full validation.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension and the data. A file that lies about its size is caught here with
a message naming the file, instead of surfacing later as a reshape error.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from xpnet.errors import DataError, OutputError
from xpnet.fileio import atomic_write

# IDX type code -> big-endian dtype stored in the file.
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _first_bytes(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(2)


def looks_like_idx(path) -> bool:
    """True for gzip or ``00 00``-prefixed files: how ``load_inputs`` tells IDX from PNG/JPEG (names lie)."""
    try:
        return _first_bytes(path) in (_GZIP_MAGIC, b"\0\0")
    except OSError:
        return False


def _what(data_ndim: int) -> str:
    return {3: "pixel data", 1: "label data"}.get(data_ndim, "data")


def _read_exact(fh, n: int, path, what: str) -> bytes:
    chunk = fh.read(n)
    if len(chunk) < n:
        raise DataError(f"{path}: truncated IDX file: expected {n} bytes of {what}, got {len(chunk)}")
    return chunk


MAX_BYTES = 4 << 30  # no MNIST-style file comes near 4 GiB; a header claiming more is refused unread


def _read_at_most(fh, n: int, chunk: int = 1 << 16) -> bytes:
    """Up to ``n`` bytes, read in chunks: memory grows with the data really there (a gzip bomb
    stops at ``n``; a lying header never makes us allocate ``n`` up front: a buffered ``read(k)``
    allocates ``k`` bytes before it knows how many there are, so ``k`` stays small)."""
    parts, got = [], 0
    while got < n:
        part = fh.read(min(chunk, n - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_idx(path, max_bytes: int | None = MAX_BYTES) -> np.ndarray:
    """The array stored in an IDX file, in native byte order (a fresh, writable array).

    Never reads more than the header's declared size plus one byte (through gzip too), and
    refuses a declared size above ``max_bytes`` before reading any data."""
    path = Path(path)
    try:
        opener = gzip.open if _first_bytes(path) == _GZIP_MAGIC else open
        with opener(path, "rb") as fh:
            magic = fh.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                raise DataError(f"{path}: not an IDX file (magic number {magic.hex() or 'missing: empty file'}, "
                                "expected 0000 followed by a type code and the number of dimensions)")
            code, ndim = magic[2], magic[3]
            if code not in IDX_DTYPES:
                raise DataError(f"{path}: unknown IDX data type code 0x{code:02x} "
                                f"(known: {', '.join(f'0x{c:02x}' for c in IDX_DTYPES)})")
            if ndim == 0:
                raise DataError(f"{path}: IDX file declares zero dimensions")
            dims = _read_exact(fh, 4 * ndim, path, "header (dimension sizes)")
            shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
            dtype = IDX_DTYPES[code]
            expected = math.prod(shape) * dtype.itemsize
            if max_bytes is not None and expected > max_bytes:
                raise DataError(f"{path}: IDX header declares shape {shape} = {expected:,} bytes, more than the "
                                f"{max_bytes:,} this reader accepts (max_bytes)")
            if opener is open:
                payload = fh.read()  # a raw file's size is known: memory never exceeds it
            else:
                payload = _read_at_most(fh, expected + 1)  # one byte more tells "trailing data" apart
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except _GZIP_ERRORS as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc or type(exc).__name__})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(payload) < expected:
        raise DataError(f"{path}: truncated IDX file: expected {expected} bytes of {_what(ndim)}, got {len(payload)}")
    if len(payload) > expected:
        extra = f"{len(payload) - expected}" if opener is open else "more"  # gzip: we stopped reading at one byte
        raise DataError(f"{path}: {extra} unexpected bytes after the {_what(ndim)} "
                        f"of an IDX array of shape {shape}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX (gzipped when ``compress``, by default when the name ends in .gz).

    Atomic: a temp file beside ``path`` is renamed over it, so a crash never leaves half a file.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        names = ", ".join(d.name for d in _CODES)
        raise DataError(f"{path}: IDX cannot store dtype {array.dtype} (use one of {names})")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"{path}: IDX stores 1 to 255 dimensions, got {array.ndim}")
    if max(array.shape) >= 2**32:
        raise DataError(f"{path}: IDX dimension sizes must be < 2**32, got {array.shape}")
    if compress is None:
        compress = path.name.endswith(".gz")
    buf = io.BytesIO()
    buf.write(bytes([0, 0, _CODES[native], array.ndim]))
    buf.write(np.asarray(array.shape, dtype=">u4").tobytes())
    buf.write(np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes())
    payload = gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()
    try:
        return atomic_write(path, lambda fh: fh.write(payload))
    except OutputError as exc:  # same failure, but this is a data file
        raise DataError(str(exc)) from None
