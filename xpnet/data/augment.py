"""Data augmentation for image rows: random stroke thickness, rotation, scale and shift, written with ``xp``.

Digits people draw differ from MNIST's in position, slant, size and above all pen width (a
mouse or a finger draws thick strokes; 8×8 scans come back as thick blurred bars), so each
image gets its own random:

- stroke thickness ``t`` in 3×3 grey dilations (``t > 0``, thicker: ``t = 1`` adds a pixel on
  every side) or erosions (``t < 0``, thinner), fractional steps blended linearly between the
  neighbouring whole steps so the width varies continuously;
- affine map: rotation about the centre, isotropic scale, then translation.

Everything is array arithmetic on the whole batch (shifted slices for the 3×3 max/min,
index arithmetic and ``take_along_axis`` for the bilinear resampling): no SciPy, no Python
loop over images, so the same code runs on the GPU. Pixels that fall outside the source take
the image's background value (its minimum, which is "black" whatever the normalisation), and
max/min filters commute with the normaliser's increasing affine map, so augmenting normalised
rows is the same as augmenting raw pixels.

The defaults are the ``handwriting`` recipe's augmentation (xpnet/training/recipe.py), chosen by
measurement (docs/recipe.md); ``max_scale=0, thickness=(0, 0)`` gives shifts and rotations only.
"""

from __future__ import annotations

import math

import numpy as np

from xpnet.backend import get_array_module
from xpnet.errors import ConfigError


class Augmenter:
    """Call on a batch ``(m, H*W)`` to get an augmented copy (written into ``out`` if given).

    Each image draws uniformly: a shift of up to ``max_shift`` pixels per axis, a rotation of up
    to ``max_rotation_deg`` degrees, a scale in ``[1 - max_scale, 1 + max_scale]`` and a stroke
    thickness in ``thickness = (low, high)`` 3×3 dilation steps (negative: erosion), each in [-2, 2].
    """

    MAX_STEPS = 2  # whole dilation/erosion steps at most (each is a 3×3 max/min over the batch)

    def __init__(self, image_shape=(28, 28), max_shift: float = 2.0, max_rotation_deg: float = 10.0,
                 max_scale: float = 0.1, thickness=(-1.0, 1.0), seed: int = 0):
        self.image_shape = tuple(image_shape)
        self.max_shift = float(max_shift)
        self.max_rotation = math.radians(float(max_rotation_deg))
        self.max_scale = float(max_scale)
        try:
            low, high = (float(t) for t in thickness)
        except (TypeError, ValueError):
            raise ConfigError(f"thickness must be a (low, high) pair of dilation steps, got {thickness!r}") from None
        self.thickness = (low, high)
        if not 0.0 <= self.max_scale < 1.0:
            raise ConfigError(f"max_scale must be in [0, 1), got {max_scale}")
        if not -self.MAX_STEPS <= low <= high <= self.MAX_STEPS:
            raise ConfigError(f"thickness must be a range (low <= high) within [-{self.MAX_STEPS}, {self.MAX_STEPS}] "
                              f"dilation steps, got {thickness!r}")
        if self.max_shift < 0 or self.max_rotation < 0:
            raise ConfigError("max_shift and max_rotation_deg must be >= 0")
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)

    def reseed(self, *keys: int) -> None:
        """Deterministic stream per (seed, epoch): resuming reproduces the same augmentations."""
        self._rng = np.random.default_rng([self.seed, *keys])

    def __call__(self, X, out=None):
        """Draw a thickness, rotation, scale and shift per image (seeded) and apply them."""
        m = X.shape[0]
        angle = self._rng.uniform(-self.max_rotation, self.max_rotation, m)
        shift = self._rng.uniform(-self.max_shift, self.max_shift, (m, 2))
        scale = self._rng.uniform(1.0 - self.max_scale, 1.0 + self.max_scale, m)
        thickness = self._rng.uniform(*self.thickness, m)
        if self.thickness != (0.0, 0.0):
            X = self.thicken(X, thickness)
        return self.transform(X, angle, shift, out, scale=scale)

    def thicken(self, X, amount):
        """Strokes thicker (``amount[i] > 0``) or thinner (``< 0``) by that many 3×3 grey dilations or
        erosions (``|amount| <= 2``); between whole steps ``k`` and ``k + 1`` the two results are
        blended linearly, so ``0.5`` is ``X + 0.5·(max3×3(X) − X)``. Returns a new array."""
        xp = get_array_module(X)
        m = X.shape[0]
        H, W = self.image_shape
        a = np.clip(np.asarray(amount, dtype=np.float64), -self.MAX_STEPS, self.MAX_STEPS)
        images = X.reshape(m, H, W)
        low = images.min(axis=(1, 2), keepdims=True)  # the background, also outside the frame
        steps = int(math.ceil(np.abs(a).max())) if m else 0
        levels = {0: images}  # k -> k dilations (k > 0) or -k erosions (k < 0)
        for sign, reduce in ((1, xp.maximum), (-1, xp.minimum)):
            if not (sign * a > 0).any():
                continue
            current = images
            for k in range(1, steps + 1):
                current = self._filter3(current, low, reduce, xp)
                levels[sign * k] = current
        base = np.floor(a).astype(np.int64)  # blend level base and base + 1
        frac = xp.asarray(a - base, dtype=X.dtype)[:, None, None]
        zero = levels[0]
        lo = xp.empty_like(images)
        hi = xp.empty_like(images)
        for k in set(base.tolist()):  # at most 5 groups: vectorised over the images of each
            rows = xp.asarray(np.nonzero(base == k)[0])
            lo[rows] = levels.get(k, zero)[rows]
            hi[rows] = levels.get(k + 1, levels.get(k, zero))[rows]
        return (lo + frac * (hi - lo)).reshape(m, H * W)

    @staticmethod
    def _filter3(images, background, reduce, xp):
        """One 3×3 max (dilation) or min (erosion) of every image, the frame padded with its background."""
        m, H, W = images.shape
        padded = xp.broadcast_to(background, (m, H + 2, W + 2)).copy()
        padded[:, 1:-1, 1:-1] = images
        out = images.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                reduce(out, padded[:, dy : dy + H, dx : dx + W], out=out)
        return out

    def transform(self, X, angle, shift, out=None, scale=None):
        """Rotate each image by ``angle[i]`` radians about its centre and scale it by ``scale[i]``
        (default 1), then shift it by ``shift[i] = (rows, columns)`` pixels; bilinear, background-filled."""
        xp = get_array_module(X)
        m = X.shape[0]
        H, W = self.image_shape
        inv = 1.0 / (np.ones(m) if scale is None else np.asarray(scale, dtype=np.float64))
        cos = xp.asarray(np.cos(angle) * inv, dtype=X.dtype)[:, None, None]
        sin = xp.asarray(np.sin(angle) * inv, dtype=X.dtype)[:, None, None]
        dy, dx = xp.asarray(shift[:, 0], dtype=X.dtype)[:, None, None], xp.asarray(shift[:, 1], dtype=X.dtype)[:, None, None]
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
