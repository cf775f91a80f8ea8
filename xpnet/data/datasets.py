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

from xpnet import choices
from xpnet.errors import ConfigError, DataError
from xpnet.data.download import download_file
from xpnet.data.idx import read_idx

ROLES = ("train_images", "train_labels", "test_images", "test_labels")
STANDARD_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set's four IDX files come from and how to check them.

    ``files`` maps each role in ROLES to a file name; ``md5``/``sha256`` map file names to the
    published digests (either may be partial); ``mirrors`` are base URLs ending in ``/``.
    """

    name: str
    files: dict[str, str] = field(default_factory=lambda: dict(STANDARD_FILES))
    md5: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))
    system_dirs: tuple[str, ...] = ()


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
assert tuple(DATASETS) == choices.DATASETS, "xpnet.choices.DATASETS lists the data sets registered here"


@dataclass
class Dataset:
    """Images as uint8 (N, H, W), labels as int64 (N,), and the folder they were read from."""

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


ENV_VAR = "XPNET_DATA"
MIRRORS_VAR = "XPNET_MIRRORS"  # your own base URLs, tried before the spec's; "{name}" becomes the data set name


def cache_dir() -> Path:
    """``$XPNET_DATA`` if set, else ``~/.cache/xpnet``; data set ``name`` lives in ``cache_dir()/name``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xpnet"


def _spec(name) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: known data sets are {', '.join(DATASETS)}; "
                          "for other IDX files pass data_dir (--data-dir)")
    return DATASETS[name]


def _locate(folder: Path, filename: str) -> Path | None:
    """``filename`` in ``folder``, as named or with/without its .gz (people gunzip files)."""
    stem = filename.removesuffix(".gz")
    for candidate in (filename, stem, stem + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _mirrors(spec: DatasetSpec, mirrors) -> tuple[str, ...]:
    """``mirrors`` when given (it replaces the list), else ``$XPNET_MIRRORS`` followed by the spec's."""
    if mirrors is not None:
        return (mirrors,) if isinstance(mirrors, str) else tuple(mirrors)
    own = os.environ.get(MIRRORS_VAR, "").replace(",", " ").split()
    return tuple(url.replace("{name}", spec.name) for url in own) + tuple(spec.mirrors)


def _paths(folder: Path, spec: DatasetSpec) -> dict[str, Path | None]:
    return {role: _locate(folder, spec.files[role]) for role in ROLES}


def _missing(folder: Path, spec: DatasetSpec) -> list[str]:
    return [spec.files[role] for role, path in _paths(folder, spec).items() if path is None]


def find_dataset_dir(name: str) -> Path | None:
    """The first folder holding all four files of ``name``: the cache, then system folders. Never downloads."""
    spec = _spec(name)
    for folder in (cache_dir() / name, *map(Path, spec.system_dirs)):
        if not _missing(folder, spec):
            return folder
    return None


def cached_datasets() -> dict[str, Path]:
    """``{name: folder}`` for every registered data set already on disk (for ``xpnet info``)."""
    return {name: folder for name in DATASETS if (folder := find_dataset_dir(name)) is not None}


def load_dataset(name: str | None = "fashion-mnist", data_dir=None, download: bool = True,
                 progress: bool = False, mirrors=None) -> Dataset:
    """Load a data set as uint8 images (N, H, W) and int64 labels, validated.

    Looks in ``data_dir`` (if given), then the cache, then the spec's system folders, and
    finally downloads the missing files into the cache: from ``mirrors`` if given, else from
    ``$XPNET_MIRRORS`` (comma or space separated) and then the spec's mirrors. With
    ``data_dir`` and a name that is not registered (or None), the folder is a custom set
    with the standard file names and class names "0".."k-1".
    """
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if name is None and folder.resolve().name in DATASETS:
            name = folder.resolve().name  # a folder named like a registered set is that set (its class names)
        custom = name not in DATASETS
        spec = DatasetSpec(name=name or folder.resolve().name or "custom") if custom else DATASETS[name]
        if not folder.is_dir():
            raise DataError(f"data folder {folder} does not exist")
        missing = _missing(folder, spec)
        if missing:
            raise DataError(f"{folder} is missing {', '.join(missing)} (IDX files, gzipped or not)")
        return _read(spec, _paths(folder, spec), folder, custom=custom)
    if name is None:
        raise ConfigError("load_dataset needs a data set name or data_dir")
    spec = _spec(name)
    folder = find_dataset_dir(name)
    if folder is None:
        folder = cache_dir() / name
        missing = _missing(folder, spec)
        if not download:
            looked = ", ".join(spec.system_dirs)
            raise DataError(f"{name} is not on disk: put {', '.join(missing)} in {folder} (gzipped or not; "
                            f"set {ENV_VAR} to move the cache, or pass data_dir / --data-dir)"
                            + (f"; also looked in {looked}" if looked else ""))
        for filename in missing:
            download_file(filename, _mirrors(spec, mirrors), folder,
                          md5=spec.md5.get(filename), sha256=spec.sha256.get(filename), progress=progress)
    return _read(spec, _paths(folder, spec), folder, custom=False)


def _read(spec: DatasetSpec, files: dict[str, Path], folder: Path, custom: bool) -> Dataset:
    """Read the four files and check they describe one consistent data set."""
    arrays = {role: read_idx(path) for role, path in files.items()}
    where = f" (in {folder})"
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        img_name, lab_name = files[f"{split}_images"].name, files[f"{split}_labels"].name
        if images.ndim != 3:
            raise DataError(f"{img_name}: expected images of shape (N, height, width), got {images.shape}{where}")
        if images.dtype != np.uint8:
            raise DataError(f"{img_name}: expected uint8 pixels, got {images.dtype}{where}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{lab_name}: expected 1-D integer labels, got {labels.dtype} {labels.shape}{where}")
        if len(images) != len(labels):
            raise DataError(f"{lab_name} has {len(labels)} labels but {img_name} has {len(images)} images{where}")
        if len(images) == 0:
            raise DataError(f"{img_name} holds no images{where}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"train images are {arrays['train_images'].shape[1:]} but test images are "
                        f"{arrays['test_images'].shape[1:]}{where}")
    y_train = arrays["train_labels"].astype(np.int64)
    y_test = arrays["test_labels"].astype(np.int64)
    if custom:
        n_classes = int(max(y_train.max(), y_test.max(), 0)) + 1
        class_names = tuple(str(i) for i in range(n_classes))
    else:
        class_names = tuple(spec.class_names)
        n_classes = len(class_names)
    for split, labels in (("train", y_train), ("test", y_test)):
        if labels.min() < 0 or labels.max() >= n_classes:
            raise DataError(f"{files[f'{split}_labels'].name}: labels must be in 0..{n_classes - 1} for {spec.name}, "
                            f"found {labels.min()}..{labels.max()}{where}")
    return Dataset(spec.name, arrays["train_images"], y_train, arrays["test_images"], y_test, class_names, str(folder))
