"""Reading user images for ``xpnet predict``, converted the way MNIST digits were made."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

BOX = 20  # MNIST digits were scaled to fit 20×20, then centred by mass in 28×28
SIZE = 28


def _pillow():
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:
        raise DataError("reading PNG/JPEG needs Pillow: pip install 'xpnet[images]'") from None
    return Image


def load_image(path) -> np.ndarray:
    """A (28, 28) float32 image in [0, 1], light ink on a dark background."""
    Image = _pillow()
    path = Path(path)
    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # Pillow raises many types for undecodable files
        raise DataError(f"{path}: not a readable image ({exc})") from None
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > 0.5:
        gray = 1.0 - gray
    ink = np.argwhere(gray > 0.1)
    if len(ink) == 0:
        return np.zeros((SIZE, SIZE), dtype=np.float32)
    (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0) + 1
    crop = gray[top:bottom, left:right]
    scale = BOX / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((w, h), Image.LANCZOS), dtype=np.float32) / 255.0
    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    ys, xs = np.indices(small.shape)
    mass = small.sum()
    cy, cx = (ys * small).sum() / mass, (xs * small).sum() / mass
    top = int(np.clip(round(SIZE / 2 - 0.5 - cy), 0, SIZE - h))
    left = int(np.clip(round(SIZE / 2 - 0.5 - cx), 0, SIZE - w))
    canvas[top : top + h, left : left + w] = small
    return canvas


def load_inputs(paths) -> tuple[np.ndarray, list[str]]:
    """Images and/or IDX image files → ``(n, H, W)`` float32 in [0, 1] and a name per image."""
    from .idx import read_idx  # noqa: PLC0415

    images, names = [], []
    for path in map(Path, paths):
        if ".idx" in path.name or "ubyte" in path.name:
            array = read_idx(path)
            if array.ndim == 2:
                array = array[None]
            if array.ndim != 3:
                raise DataError(f"{path.name}: expected IDX images (n × h × w), got shape {array.shape}")
            images.extend(array.astype(np.float32) / 255.0)
            names.extend(f"{path.name}[{i}]" for i in range(len(array)))
        else:
            images.append(load_image(path))
            names.append(str(path))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"inputs have different image sizes: {sorted(shapes)}")
    return np.stack(images), names
