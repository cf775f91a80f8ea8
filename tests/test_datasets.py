"""Data set resolution (data_dir → cache → system folders → download) and validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import xpnet.data
from xpnet.data import DATASETS, Dataset, cache_dir, cached_datasets, find_dataset_dir, load_dataset, write_idx
from xpnet.errors import ConfigError, DataError

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def write_synthetic(folder: Path, n_train=12, n_test=5, n_classes=10, gz=True, seed=0) -> Path:
    """Four small IDX files under the standard names; n_train tells the copies apart in tests."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", (np.arange(n) % n_classes).astype(np.uint8))
    return folder


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """The mnist spec with its system folder pointed at a tmp dir and no real mirrors."""
    system = tmp_path / "system"
    spec = dataclasses.replace(DATASETS["mnist"], system_dirs=(str(system),), mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(DATASETS, "mnist", spec)
    return system


# ---- resolution order -------------------------------------------------------------------------


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XPNET_DATA", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("XPNET_DATA")
    assert cache_dir() == Path.home() / ".cache" / "xpnet"


def test_data_dir_beats_cache_beats_system_dir(tmp_path, fake_mnist):
    write_synthetic(fake_mnist, n_train=7)
    ds = load_dataset("mnist", download=False)
    assert (len(ds.X_train), ds.source) == (7, str(fake_mnist))
    assert find_dataset_dir("mnist") == fake_mnist

    cached = write_synthetic(cache_dir() / "mnist", n_train=8)
    ds = load_dataset("mnist", download=False)
    assert (len(ds.X_train), ds.source) == (8, str(cached))
    assert cached_datasets()["mnist"] == cached

    explicit = write_synthetic(tmp_path / "mine", n_train=9)
    ds = load_dataset("mnist", data_dir=explicit, download=False)
    assert (len(ds.X_train), ds.source, ds.name) == (9, str(explicit), "mnist")
    assert ds.class_names == tuple("0123456789")


def test_incomplete_cache_falls_through_to_system_dir(fake_mnist):
    write_synthetic(fake_mnist, n_train=7)
    partial = write_synthetic(cache_dir() / "mnist", n_train=8)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    assert load_dataset("mnist", download=False).source == str(fake_mnist)


def test_raw_and_gz_files_both_found(tmp_path):
    folder = write_synthetic(tmp_path / "raw", gz=False)
    ds = load_dataset(None, data_dir=folder)
    assert ds.X_train.shape == (12, 28, 28) and ds.X_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.image_shape == (28, 28)


def test_custom_folder_gets_numeric_class_names(tmp_path):
    folder = write_synthetic(tmp_path / "letters", n_classes=4)
    ds = load_dataset(None, data_dir=folder)
    assert isinstance(ds, Dataset)
    assert ds.name == "letters" and ds.class_names == ("0", "1", "2", "3") and ds.n_classes == 4
    assert load_dataset("my-set", data_dir=folder).name == "my-set"


def test_data_dir_missing_files_are_named(tmp_path):
    folder = write_synthetic(tmp_path / "d")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"d is missing train-labels-idx1-ubyte\.gz"):
        load_dataset(None, data_dir=folder)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(None, data_dir=tmp_path / "nowhere")


def test_fashion_mnist_from_the_system_folder(fashion_dir, monkeypatch):
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(DATASETS["fashion-mnist"], mirrors=()))
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.source == str(fashion_dir)
    assert ds.X_train.shape == (60000, 28, 28) and ds.X_test.shape == (10000, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.class_names == FASHION_CLASSES and ds.n_classes == 10
    assert np.bincount(ds.y_train).tolist() == [6000] * 10  # Fashion-MNIST is exactly balanced
    assert find_dataset_dir("fashion-mnist") == fashion_dir


def test_registry_is_what_others_rely_on():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    for spec in DATASETS.values():
        assert set(spec.files.values()) == set(FILES)
        assert set(spec.md5) == set(FILES)
        assert spec.mirrors and all(m.endswith("/") for m in spec.mirrors)
        assert len(spec.class_names) == 10
    assert DATASETS["mnist"].md5["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"
    assert DATASETS["fashion-mnist"].class_names == FASHION_CLASSES
    assert xpnet.data.__all__ == sorted(xpnet.data.__all__)


# ---- errors -------------------------------------------------------------------------------------


def test_unknown_name_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'.*mnist, fashion-mnist"):
        load_dataset("cifar")
    with pytest.raises(ConfigError, match="unknown dataset"):
        find_dataset_dir("cifar")


def test_nothing_on_disk_without_download_says_where_to_put_what(fake_mnist):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", download=False)
    msg = str(err.value)
    for filename in FILES:
        assert filename in msg
    assert f"in {cache_dir() / 'mnist'}" in msg
    assert "XPNET_DATA" in msg and str(fake_mnist) in msg
    assert "\n" not in msg


def test_partial_cache_without_download_names_only_the_missing(fake_mnist):
    folder = write_synthetic(cache_dir() / "mnist")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"put t10k-images-idx3-ubyte\.gz in "):
        load_dataset("mnist", download=False)


def test_count_mismatch(tmp_path):
    folder = write_synthetic(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz has 11 labels but "
                                        "train-images-idx3-ubyte.gz has 12 images"):
        load_dataset(None, data_dir=folder)


def test_label_out_of_range_for_a_registered_set(tmp_path):
    folder = write_synthetic(tmp_path / "d")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 10], dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: labels must be in 0\.\.9 for mnist, found 0\.\.10"):
        load_dataset("mnist", data_dir=folder)


def test_negative_labels_in_a_custom_set(tmp_path):
    folder = write_synthetic(tmp_path / "d")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, -1, 3, 4], dtype=np.int8))
    with pytest.raises(DataError, match="labels must be in 0..9 .* found -1..4"):
        load_dataset(None, data_dir=folder)


def test_images_must_be_3d_uint8_and_labels_1d(tmp_path):
    folder = write_synthetic(tmp_path / "d")
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((12, 784), dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: expected images of shape \(N, height, width\)"):
        load_dataset(None, data_dir=folder)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((12, 28, 28), dtype=np.float32))
    with pytest.raises(DataError, match="expected uint8 pixels, got float32"):
        load_dataset(None, data_dir=folder)
    write_synthetic(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros((12, 1), dtype=np.uint8))
    with pytest.raises(DataError, match="expected 1-D integer labels"):
        load_dataset(None, data_dir=folder)


def test_train_and_test_image_sizes_must_agree(tmp_path):
    folder = write_synthetic(tmp_path / "d")
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((5, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"train images are \(28, 28\) but test images are \(32, 32\)"):
        load_dataset(None, data_dir=folder)


def test_corrupt_cached_file_names_its_folder(fake_mnist):
    folder = write_synthetic(cache_dir() / "mnist")
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match=str(path)):
        load_dataset("mnist", download=False)
