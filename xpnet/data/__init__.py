"""Data: IDX files, the MNIST / Fashion-MNIST registry and download, user images."""

from .datasets import DATASETS, Dataset, DatasetSpec, cache_dir, cached_datasets, find_dataset_dir, load_dataset
from .download import download_file
from .idx import read_idx, write_idx
from .images import load_image, load_inputs

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "cache_dir", "cached_datasets", "download_file",
           "find_dataset_dir", "load_dataset", "load_image", "load_inputs", "read_idx", "write_idx"]
