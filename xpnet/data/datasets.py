"""MNIST-style data sets: the registry, where files are looked for, and loading.

Resolution order: an explicit folder → the cache (``$XPNET_DATA``, default
``~/.cache/xpnet/<name>/``) → known system folders (Debian's ``dataset-fashion-mnist``)
→ download from the mirrors into the cache, verified against the published checksums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .download import download_file
from .idx import read_idx

ROLES = ("train_images", "train_labels", "test_images", "test_labels")
STANDARD_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: dict = field(default_factory=lambda: dict(STANDARD_FILES))
    md5: dict = field(default_factory=dict)
    sha256: dict = field(default_factory=dict)
    mirrors: tuple = ()
    class_names: tuple = tuple(str(i) for i in range(10))
    system_dirs: tuple = ()


DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        sha256={
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        system_dirs=("/usr/share/datasets/mnist",),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


@dataclass
class Dataset:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    source: str

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.X_train.shape[1:])


def cache_dir() -> Path:
    """``$XPNET_DATA`` or ``~/.cache/xpnet``."""
    env = os.environ.get("XPNET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xpnet"


def _get_spec(name) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} or pass --data-dir")
    return DATASETS[name]


def _locate(folder: Path, filename: str) -> Path | None:
    """The file in ``folder``, gzipped or not."""
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _complete(folder: Path, spec: DatasetSpec) -> dict | None:
    found = {role: _locate(folder, spec.files[role]) for role in ROLES}
    return found if all(found.values()) else None


def find_dataset_dir(name: str) -> Path | None:
    """Where ``name`` is already on disk (cache, then system folders), without downloading."""
    spec = _get_spec(name)
    for folder in (cache_dir() / name, *map(Path, spec.system_dirs)):
        if _complete(folder, spec):
            return folder
    return None


def cached_datasets() -> dict:
    """``{name: folder}`` for every registered data set found on disk."""
    return {name: str(folder) for name in DATASETS if (folder := find_dataset_dir(name)) is not None}


def load_dataset(name: str | None = "fashion-mnist", data_dir=None, download: bool = True,
                 progress: bool = False, mirrors=None) -> Dataset:
    """Load a data set as uint8 images (N, 28, 28) and int64 labels."""
    if data_dir is not None:
        folder = Path(data_dir)
        spec = DATASETS.get(name) if name else None
        spec = spec or DatasetSpec(name=name or folder.name or "custom")
        files = _complete(folder, spec)
        if files is None:
            missing = [spec.files[r] for r in ROLES if _locate(folder, spec.files[r]) is None]
            raise DataError(f"{folder} is missing {', '.join(missing)}")
        return _read(spec, files, folder, custom_classes=name not in DATASETS)
    spec = _get_spec(name)
    folder = find_dataset_dir(name)
    if folder is None:
        folder = cache_dir() / name
        if not download:
            raise DataError(f"{name} not found: put {', '.join(spec.files[r] for r in ROLES)} in {folder} "
                            f"(or set XPNET_DATA to a folder holding {name}/)")
        for role in ROLES:
            filename = spec.files[role]
            if _locate(folder, filename) is None:
                download_file(filename, mirrors or spec.mirrors, folder, md5=spec.md5.get(filename),
                              sha256=spec.sha256.get(filename), progress=progress)
    return _read(spec, _complete(folder, spec), folder, custom_classes=False)


def _read(spec: DatasetSpec, files: dict, folder: Path, custom_classes: bool) -> Dataset:
    arrays = {role: read_idx(path) for role, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        img_name, lab_name = files[f"{split}_images"].name, files[f"{split}_labels"].name
        if images.ndim != 3:
            raise DataError(f"{img_name}: expected a 3-D array of images, got shape {images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{lab_name}: expected 1-D labels, got shape {labels.shape}")
        if len(images) != len(labels):
            raise DataError(f"{lab_name} has {len(labels)} labels but {img_name} has {len(images)} images")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"train images are {arrays['train_images'].shape[1:]} but test images are {arrays['test_images'].shape[1:]}")
    y_train = arrays["train_labels"].astype(np.int64)
    y_test = arrays["test_labels"].astype(np.int64)
    n_classes = int(max(y_train.max(), y_test.max())) + 1 if custom_classes else len(spec.class_names)
    classes = tuple(str(i) for i in range(n_classes)) if custom_classes else spec.class_names
    for split, labels in (("train", y_train), ("test", y_test)):
        if labels.min() < 0 or labels.max() >= n_classes:
            raise DataError(f"{files[f'{split}_labels'].name}: labels must be in [0, {n_classes - 1}], "
                            f"found {labels.min()}..{labels.max()}")
    return Dataset(spec.name, arrays["train_images"], y_train, arrays["test_images"], y_test, classes, str(folder))
