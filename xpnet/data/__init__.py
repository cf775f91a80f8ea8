"""Data: IDX files, the MNIST / Fashion-MNIST registry, download, and user images.

Importing this package is cheap: Pillow and click are imported only when an image is
read or a progress bar is shown, and nothing touches the network until a download is needed.
"""

from xpnet.data.datasets import DATASETS, Dataset, DatasetSpec, cache_dir, cached_datasets, find_dataset_dir, load_dataset
from xpnet.data.download import download_file
from xpnet.data.idx import read_idx, write_idx
from xpnet.data.images import load_image, load_inputs

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "cache_dir", "cached_datasets", "download_file",
           "find_dataset_dir", "load_dataset", "load_image", "load_inputs", "read_idx", "write_idx"]
