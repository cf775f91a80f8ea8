"""Data augmentation for image rows: random shifts and small rotations, written with ``xp``.

Each image gets its own random affine map (rotation about the centre + translation) and
is resampled bilinearly by index arithmetic and ``take_along_axis``: no SciPy, so the same
code runs on the GPU. Pixels that fall outside the source take the image's background
value (its minimum, which is "black" whatever the normalisation).
"""

from __future__ import annotations

import math

import numpy as np

from xpnet.backend import get_array_module


class Augmenter:
    """Call on a batch ``(m, H*W)`` to get an augmented copy (written into ``out`` if given)."""

    def __init__(self, image_shape=(28, 28), max_shift: float = 2.0, max_rotation_deg: float = 10.0, seed: int = 0):
        self.image_shape = tuple(image_shape)
        self.max_shift = float(max_shift)
        self.max_rotation = math.radians(float(max_rotation_deg))
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)

    def reseed(self, *keys: int) -> None:
        """Deterministic stream per (seed, epoch): resuming reproduces the same augmentations."""
        self._rng = np.random.default_rng([self.seed, *keys])

    def __call__(self, X, out=None):
        """Draw a rotation and a shift per image (seeded) and apply them."""
        m = X.shape[0]
        angle = self._rng.uniform(-self.max_rotation, self.max_rotation, m)
        shift = self._rng.uniform(-self.max_shift, self.max_shift, (m, 2))
        return self.transform(X, angle, shift, out)

    def transform(self, X, angle, shift, out=None):
        """Rotate each image by ``angle[i]`` radians about its centre, then shift it by
        ``shift[i] = (rows, columns)`` pixels; bilinear, background-filled."""
        xp = get_array_module(X)
        m = X.shape[0]
        H, W = self.image_shape
        cos, sin = xp.asarray(np.cos(angle))[:, None, None], xp.asarray(np.sin(angle))[:, None, None]
        dy, dx = xp.asarray(shift[:, 0])[:, None, None], xp.asarray(shift[:, 1])[:, None, None]
        cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
        yy, xx = xp.meshgrid(xp.arange(H, dtype=X.dtype), xp.arange(W, dtype=X.dtype), indexing="ij")
        # Inverse map: where in the source does each output pixel come from?
        ys = cos * (yy - cy - dy) - sin * (xx - cx - dx) + cy
        xs = sin * (yy - cy - dy) + cos * (xx - cx - dx) + cx
        y0, x0 = xp.floor(ys), xp.floor(xs)
        wy, wx = (ys - y0).reshape(m, -1), (xs - x0).reshape(m, -1)
        y0, x0 = y0.astype(np.int64).reshape(m, -1), x0.astype(np.int64).reshape(m, -1)
        background = X.min(axis=1, keepdims=True)
        result = xp.zeros((m, H * W), dtype=X.dtype)
        for oy, ox, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
            py, px = y0 + oy, x0 + ox
            inside = (py >= 0) & (py < H) & (px >= 0) & (px < W)
            index = xp.clip(py, 0, H - 1) * W + xp.clip(px, 0, W - 1)
            values = xp.take_along_axis(X, index, axis=1)
            result += weight * xp.where(inside, values, background)
        if out is None:
            return result
        out[...] = result
        return out
