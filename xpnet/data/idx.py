"""The IDX file format of MNIST (gzip or raw), read and written with full validation.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension and the data. A file that lies about its size is caught here with
a message naming the file, instead of surfacing later as a reshape error.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path.name}: corrupt gzip data ({exc})") from None
    return raw


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (native byte order)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path.name}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{path.name}: unknown IDX data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{path.name}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path.name}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise DataError(f"{path.name}: truncated IDX file: expected {expected} bytes of data for shape {shape}, got {got}")
    if got > expected:
        raise DataError(f"{path.name}: {got - expected} unexpected bytes after the IDX data (shape {shape})")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX (gzipped when ``compress`` or the name ends in .gz), atomically."""
    from ..serialize import atomic_write  # noqa: PLC0415

    path = Path(path)
    array = np.asarray(array)
    if array.dtype not in _CODES:
        raise DataError(f"{path.name}: IDX cannot store dtype {array.dtype}")
    if compress is None:
        compress = path.suffix == ".gz"
    buf = io.BytesIO()
    buf.write(bytes([0, 0, _CODES[array.dtype], array.ndim]))
    buf.write(np.asarray(array.shape, dtype=">u4").tobytes())
    buf.write(array.astype(array.dtype.newbyteorder(">")).tobytes())
    payload = gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()
    return atomic_write(path, lambda fh: fh.write(payload))
