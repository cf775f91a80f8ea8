"""IDX read/write: round trips for every dtype, and a clear DataError for every kind of bad file."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from xpnet.data import read_idx, write_idx
from xpnet.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", [".gz", ""])
def test_round_trip_every_dtype(tmp_path, rng, dtype, suffix):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    array = rng.uniform(max(info.min, -1e6), min(info.max, 1e6), size=(3, 4, 5)).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 0  # a fresh writable array, not a view of the file bytes


def test_compress_flag_overrides_the_name(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.arange(5, dtype=np.uint8), compress=False)
    assert path.read_bytes()[:4] == b"\x00\x00\x08\x01"
    path = write_idx(tmp_path / "labels.raw", np.arange(5, dtype=np.uint8), compress=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(path), np.arange(5))


def test_header_layout_is_big_endian(tmp_path):
    path = write_idx(tmp_path / "x", np.array([[1, 2, 3]], dtype=np.int32))
    raw = path.read_bytes()
    assert raw[:4] == b"\x00\x00\x0c\x02"
    assert raw[4:12] == (1).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert raw[12:] == b"".join(v.to_bytes(4, "big") for v in (1, 2, 3))


def test_big_endian_input_is_written_correctly(tmp_path):
    array = np.array([1.5, -2.0], dtype=">f8")
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f", array)), [1.5, -2.0])


def test_write_rejects_unstorable_arrays(tmp_path):
    with pytest.raises(DataError, match=r"labels\.gz: IDX cannot store dtype int64"):
        write_idx(tmp_path / "labels.gz", np.arange(3))
    with pytest.raises(DataError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "scalar", np.uint8(3))
    assert os.listdir(tmp_path) == []


def test_write_is_atomic_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "keep.idx"
    write_idx(target, np.arange(4, dtype=np.uint8))
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(DataError, match="No space left on device"):
        write_idx(target, np.arange(9, dtype=np.uint8))
    assert target.read_bytes() == before  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["keep.idx"]  # and no temp file is left


def test_write_into_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        write_idx(tmp_path / "nope" / "a.idx", np.arange(3, dtype=np.uint8))


# ---- bad files -------------------------------------------------------------------------------


def _images(tmp_path, name="t10k-images-idx3-ubyte"):
    return write_idx(tmp_path / name, np.zeros((10, 28, 28), dtype=np.uint8))


def test_truncated_file(tmp_path):
    path = _images(tmp_path)
    path.write_bytes(path.read_bytes()[: 16 + 1234])
    with pytest.raises(DataError) as err:
        read_idx(path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte" in msg
    assert "truncated IDX file: expected 7840 bytes of pixel data, got 1234" in msg


def test_truncated_gzip_file(tmp_path):
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(100, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-12])  # cut into the deflate stream and trailer
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: corrupt gzip data"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x0a")
    with pytest.raises(DataError, match=r"short\.idx: truncated IDX file: expected 12 bytes of header"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match=r"photo\.png: not an IDX file \(magic number 89504e47"):
        read_idx(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty: not an IDX file .*empty file"):
        read_idx(path)


def test_bad_dtype_code(tmp_path):
    path = _images(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0A
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: unknown IDX data type code 0x0a"):
        read_idx(path)


def test_zero_dimensions(tmp_path):
    path = tmp_path / "zero"
    path.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(DataError, match="zero: IDX file declares zero dimensions"):
        read_idx(path)


def test_trailing_garbage(tmp_path):
    path = write_idx(tmp_path / "labels-idx1-ubyte", np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(DataError, match=r"labels-idx1-ubyte: 4 unexpected bytes after the label data"):
        read_idx(path)


def test_header_claiming_huge_sizes_is_refused_before_reading(tmp_path):
    path = tmp_path / "liar"
    path.write_bytes(b"\x00\x00\x0e\x03" + b"\xff\xff\xff\xff" * 3 + bytes(8))
    with pytest.raises(DataError, match=r"liar: IDX header declares shape \(4294967295, 4294967295, 4294967295\) = .* more than"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x02" + (1000).to_bytes(4, "big") * 2 + bytes(8))  # 1 MB claimed, 8 there
    with pytest.raises(DataError, match="liar: truncated IDX file: expected 1000000 bytes of data, got 8"):
        read_idx(path)
    with pytest.raises(DataError, match="more than the 999,999 this reader accepts"):
        read_idx(path, max_bytes=999_999)


def test_gzip_bomb_stops_at_the_declared_size(tmp_path):
    """A gzip stream far longer than its header says is refused after reading declared + 1 bytes."""
    import gzip
    import tracemalloc

    path = tmp_path / "bomb-idx3-ubyte.gz"
    declared = (100, 28, 28)  # 78,400 bytes declared; the stream inflates to 64 MB
    header = b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in declared)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(header)
        zeros = bytes(1 << 20)
        for _ in range(64):
            fh.write(zeros)
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"bomb-idx3-ubyte\.gz: more unexpected bytes after the pixel data"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # was the whole 64 MB stream (and 6.3 GB for a 3 GB one)


def test_corrupt_gzip(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.ones((4, 28, 28), dtype=np.uint8))
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # break the CRC32 in the trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt gzip data \(CRC check failed"):
        read_idx(path)


def test_gzip_of_something_else(tmp_path):
    path = tmp_path / "notes.gz"
    path.write_bytes(gzip.compress(b"hello world, not IDX"))
    with pytest.raises(DataError, match=r"notes\.gz: not an IDX file"):
        read_idx(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.gz: file not found"):
        read_idx(tmp_path / "nothere.gz")
    with pytest.raises(DataError, match="is a folder"):
        read_idx(tmp_path)


# ---- the real MNIST test set -----------------------------------------------------------------


def test_reads_canonical_mnist_test_set(shared_mnist_dir):
    images = read_idx(shared_mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.max() == 255 and images[:, 0, :].max() == 0  # MNIST's top row is always blank


def test_reads_gunzipped_copy_and_writes_identical_bytes(shared_mnist_dir, tmp_path):
    """Decompressed bytes in, the same bytes out: our writer produces the canonical layout."""
    raw = gzip.decompress((shared_mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw)
    labels = read_idx(tmp_path / "t10k-labels-idx1-ubyte")
    out = write_idx(tmp_path / "copy", labels)
    assert out.read_bytes() == raw
