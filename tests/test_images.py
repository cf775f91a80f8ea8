"""User images → MNIST-style 28×28 inputs, and IDX files as inputs for predict."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from xpnet.data import load_image, load_inputs, write_idx
from xpnet.errors import DataError

Image = pytest.importorskip("PIL.Image")


def _centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(img.shape)
    mass = img.sum()
    return (ys * img).sum() / mass, (xs * img).sum() / mass


def _save(path, array: np.ndarray):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def dark_on_light(tmp_path):
    """A 100×60 white PNG with a black 30×12 bar well off centre (upper right)."""
    pixels = np.full((60, 100), 255, dtype=np.uint8)
    pixels[5:35, 70:82] = 0
    return _save(tmp_path / "bar.png", pixels)


def test_dark_on_light_png_becomes_mnist_style(dark_on_light):
    img = load_image(dark_on_light)
    assert img.shape == (28, 28) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert img.max() > 0.9 and img[0, 0] == 0.0  # inverted: bright ink on a black field
    cy, cx = _centre_of_mass(img)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    rows, cols = np.nonzero(img > 0.05)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
    assert rows.min() >= 4 and rows.max() <= 23 and cols.min() >= 4 and cols.max() <= 23
    assert rows.max() - rows.min() + 1 >= 19  # the longer side (30 px tall) was scaled to 20


def test_light_on_dark_is_not_inverted_and_matches(tmp_path, dark_on_light):
    inverted = 255 - np.asarray(Image.open(dark_on_light))
    img = load_image(_save(tmp_path / "neg.png", inverted))
    np.testing.assert_allclose(img, load_image(dark_on_light), atol=1e-6)


def test_rgb_jpeg_and_grey_paper(tmp_path):
    """A photo-like input: RGB, JPEG noise, grey paper instead of white."""
    pixels = np.full((80, 80, 3), 200, dtype=np.uint8)
    pixels[20:60, 30:45] = (30, 30, 60)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=80)
    img = load_image(path)
    assert img[:3].max() < 0.05  # paper went to black, not grey
    assert abs(_centre_of_mass(img)[0] - 14) <= 1


def test_transparent_background_counts_as_paper(tmp_path):
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # fully transparent black...
    rgba[10:30, 15:25] = (0, 0, 0, 255)  # ...with an opaque black stroke
    path = tmp_path / "t.png"
    Image.fromarray(rgba).save(path)
    img = load_image(path)
    assert img.max() > 0.9 and img[0, 0] == 0.0


def test_blank_image_is_an_error(tmp_path):
    path = _save(tmp_path / "blank.png", np.full((28, 28), 255, dtype=np.uint8))
    with pytest.raises(DataError, match=r"blank\.png: the image is blank"):
        load_image(path)


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        load_image(path)
    with pytest.raises(DataError, match=r"gone\.png: file not found"):
        load_image(tmp_path / "gone.png")


def test_decompression_bomb_is_refused_with_our_message(tmp_path, monkeypatch):
    """Pillow's limit is kept (scaled down here so the test stays small): above it a warning in
    Pillow, above twice it an error; both are one DataError naming the file and the size."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    bar = np.full((40, 40), 255, dtype=np.uint8)
    bar[5:30, 18:22] = 0
    warn = _save(tmp_path / "warn.png", bar)  # 1,600 pixels: Pillow only warns
    with pytest.raises(DataError, match=r"warn\.png: the image is 40×40 = 1,600 pixels, more than the 1,000 .*bomb"):
        load_image(warn)
    big = _save(tmp_path / "big.png", np.full((50, 50), 255, dtype=np.uint8))  # 2,500 pixels: Pillow refuses
    with pytest.raises(DataError, match=r"big\.png: the image has more than 2,000 pixels, and xpnet decodes at most 1,000 .*bomb"):
        load_image(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert load_image(_save(tmp_path / "ok.png", bar[:40, :40][:30])).shape == (28, 28)


def test_missing_pillow_says_how_to_install(monkeypatch, dark_on_light):
    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(DataError) as err:
        load_image(dark_on_light)
    assert str(err.value) == "reading PNG/JPEG needs Pillow: pip install 'xpnet[images]'"


def test_load_inputs_mixes_images_and_idx_files(tmp_path, dark_on_light):
    digits = np.zeros((3, 28, 28), dtype=np.uint8)
    digits[:, 10:18, 12:16] = 255
    digits[2] //= 5
    idx = write_idx(tmp_path / "some-digits", digits)  # no telltale name: sniffed by content
    batch, names = load_inputs([dark_on_light, idx])
    assert batch.shape == (4, 28, 28) and batch.dtype == np.float32
    assert names == [str(dark_on_light), "some-digits[0]", "some-digits[1]", "some-digits[2]"]
    np.testing.assert_allclose(batch[1:], digits / 255.0, atol=1e-7)
    np.testing.assert_allclose(batch[0], load_image(dark_on_light))


def test_load_inputs_real_idx(shared_mnist_dir):
    batch, names = load_inputs([shared_mnist_dir / "t10k-images-idx3-ubyte.gz"])
    assert batch.shape == (10000, 28, 28) and 0.0 <= batch.min() and batch.max() == 1.0
    assert names[0] == "t10k-images-idx3-ubyte.gz[0]"


def test_load_inputs_errors(tmp_path):
    with pytest.raises(DataError, match="no input images"):
        load_inputs([])
    labels = write_idx(tmp_path / "labels.gz", np.arange(5, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels\.gz: expected IDX images"):
        load_inputs([labels])
    floats = write_idx(tmp_path / "f.idx", np.zeros((2, 28, 28), dtype=np.float32))
    with pytest.raises(DataError, match="expected uint8 IDX pixels"):
        load_inputs([floats])
    small = write_idx(tmp_path / "small.idx", np.zeros((2, 8, 8), dtype=np.uint8))
    big = write_idx(tmp_path / "big.idx", np.zeros((1, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match=r"different image sizes: \(8, 8\), \(28, 28\)"):
        load_inputs([small, big])
