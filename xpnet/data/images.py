"""Reading user images for ``xpnet predict`` and ``xpnet demo``, converted the way MNIST digits were made.

A network trained on MNIST only works on inputs that look like MNIST: light ink on a
black background, the digit scaled into a 20×20 box and its centre of mass at the centre
of a 28×28 field. Photos and drawings are brought to that form here, by one function
(:func:`mnist_style`) whether they come from a file, an upload or the demo's canvas.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from xpnet.errors import DataError
from xpnet.data.idx import looks_like_idx, read_idx

BOX = 20  # the longer side of the digit after scaling
SIZE = 28  # the output field
CENTRE = 14.0  # where MNIST puts the centre of mass (row, column index; measured on t10k: 13.99, 14.01)
INK = 0.1  # after background removal, pixels above this count as ink for the bounding box


def _pillow():
    try:
        from PIL import Image  # noqa: PLC0415 - optional dependency, only for predict
    except ImportError:
        raise DataError("reading PNG/JPEG needs Pillow: pip install 'xpnet[images]'") from None
    return Image


def _grayscale(source, Image, path, max_pixels=None) -> np.ndarray:
    """The image in ``source`` (a file path or a binary file object, named ``path`` in messages)
    as float32 in [0, 1]; transparent pixels count as white paper. At most ``max_pixels``
    pixels are decoded (default: Pillow's decompression-bomb limit, about 89 megapixels)."""
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else min(int(max_pixels), Image.MAX_IMAGE_PIXELS or max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with the size
            img = Image.open(source)
    except Image.DecompressionBombError:  # more than twice the limit: Pillow refuses to open it
        raise DataError(f"{path}: the image has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, and xpnet decodes at most {limit:,} "
                        "(a decompression bomb?); scale it down first") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image") from None
    except Exception as exc:  # Pillow raises many types for undecodable files
        raise DataError(f"{path}: not a readable image ({exc})") from None
    try:
        with img:
            if limit and img.width * img.height > limit:
                raise DataError(f"{path}: the image is {img.width}×{img.height} = {img.width * img.height:,} pixels, "
                                f"more than the {limit:,} xpnet decodes (a decompression bomb?); scale it down first")
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(paper, rgba)
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many types for undecodable files
        raise DataError(f"{path}: not a readable image ({exc})") from None


def load_image(path) -> np.ndarray:
    """A (28, 28) float32 image in [0, 1], light ink on dark, scaled and centred like MNIST."""
    path = Path(path)
    return mnist_style(_grayscale(path, _pillow(), path), path)


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """:func:`load_image` for an encoded image (PNG, JPEG...) held in memory, e.g. an upload;
    images of more than ``max_pixels`` pixels are refused before they are decoded."""
    import io  # noqa: PLC0415

    return mnist_style(_grayscale(io.BytesIO(bytes(data)), _pillow(), name, max_pixels), name)


def mnist_style(gray, name="image") -> np.ndarray:
    """A grayscale picture (2-D, values in [0, 1], any size, either polarity) converted the way
    MNIST digits were made: (28, 28) float32, light ink on dark, the ink's bounding box scaled
    into a 20×20 box and its centre of mass at the centre. ``name`` is for error messages.

    The one conversion behind ``xpnet predict`` (files) and ``xpnet demo`` (drawings, uploads)."""
    Image = _pillow()
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise DataError(f"{name}: expected a 2-D grayscale image, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise DataError(f"{name}: the image has non-finite pixel values")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > 0.5:  # dark ink on light paper: flip to MNIST's light-on-dark
        gray, border = 1.0 - gray, 1.0 - border
    # Photos of paper are grey, not black: take the background level off and stretch the ink to 1.
    background = float(np.median(border))
    peak = float(gray.max())
    if peak - background < 1e-3:
        raise DataError(f"{name}: the image is blank (no ink stands out from the background)")
    gray = np.clip((gray - background) / (peak - background), 0.0, 1.0)
    rows, cols = np.nonzero(gray > INK)
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = BOX / max(crop.shape)
    h, w = (max(1, round(n * scale)) for n in crop.shape)
    small = Image.fromarray(crop.astype(np.float32))  # mode "F"
    small = small.resize((w, h), Image.LANCZOS)
    small = np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)
    ys, xs = np.indices(small.shape)
    mass = small.sum()
    if mass <= 0:  # a speck so thin that resampling erased it
        raise DataError(f"{name}: the image is blank (no ink stands out from the background)")
    cy, cx = (ys * small).sum() / mass, (xs * small).sum() / mass
    top = int(np.clip(round(CENTRE - cy), 0, SIZE - h))
    left = int(np.clip(round(CENTRE - cx), 0, SIZE - w))
    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    canvas[top : top + h, left : left + w] = small
    return canvas


def load_inputs(paths) -> tuple[np.ndarray, list[str]]:
    """Image files and/or IDX image files → ``(n, H, W)`` float32 in [0, 1] and one name per image.

    IDX files are recognised by their content, not their name; their uint8 pixels are scaled
    by 1/255 and otherwise used as they are (they are already MNIST-style).
    """
    images, names = [], []
    for path in map(Path, paths):
        if looks_like_idx(path):
            array = read_idx(path)
            if array.ndim == 2:
                array = array[None]
            if array.ndim != 3:
                raise DataError(f"{path}: expected IDX images (n, height, width), got shape {array.shape}")
            if array.dtype != np.uint8:
                raise DataError(f"{path}: expected uint8 IDX pixels, got {array.dtype}")
            images.extend(array.astype(np.float32) / np.float32(255))
            names.extend(f"{path.name}[{i}]" for i in range(len(array)))
        else:
            images.append(load_image(path))
            names.append(str(path))
    if not images:
        raise DataError("no input images given")
    shapes = sorted({im.shape for im in images})
    if len(shapes) > 1:
        raise DataError(f"inputs have different image sizes: {', '.join(map(str, shapes))}")
    return np.stack(images), names
