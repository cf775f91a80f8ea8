"""Digits as pen strokes, for drawing on the demo page in a real browser (tests/test_demo.py).

Why hand-made stroke templates with random variation, not strokes traced from MNIST skeletons:
the page receives what a person's pointer does — separate strokes in drawing order, pen lifts,
a round pen of fixed width — and a test of the page should feed it that. Skeletons of MNIST
test digits would be MNIST's own writers again (what the model was trained on, so an optimistic
figure), lose stroke order and pen lifts, and need a thinning and path-ordering step
(scikit-image is not a dependency) whose failures would be mistaken for the model's. The
templates are independent of MNIST: 10 digits, 1–3 common ways of writing each (an open and a
closed 4, a 1 with and without a flag, a 7 with and without a bar...), each drawn with its own
random slant, rotation, aspect, size, position and a smooth wobble of the pen, so no two
drawings are the same.
"""

from __future__ import annotations

import math

import numpy as np


def _arc(cx, cy, rx, ry, a0, a1, n=20):
    """Points on an ellipse from angle a0 to a1 (degrees; y points down, so 0 = right, 90 = bottom)."""
    t = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in t]


# Each digit: a list of variants; each variant a list of strokes; each stroke a list of (x, y) in the unit box.
TEMPLATES: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[_arc(0.5, 0.5, 0.32, 0.46, -90, -455, 32)],
        [_arc(0.5, 0.5, 0.36, 0.44, -60, -420, 32)]],
    1: [[[(0.5, 0.04), (0.5, 0.96)]],
        [[(0.32, 0.22), (0.56, 0.04), (0.56, 0.96)]]],
    2: [[_arc(0.5, 0.3, 0.32, 0.25, -170, 30, 16) + [(0.14, 0.95), (0.9, 0.95)]],
        [_arc(0.48, 0.3, 0.3, 0.26, -160, 20, 14) + [(0.3, 0.75), (0.12, 0.95)] + _arc(0.5, 0.9, 0.38, 0.06, 180, 360, 6)]],
    3: [[_arc(0.48, 0.27, 0.3, 0.22, -160, 90, 16) + _arc(0.48, 0.72, 0.34, 0.24, -90, 160, 18)],
        [[(0.15, 0.06), (0.82, 0.06), (0.42, 0.45)] + _arc(0.46, 0.7, 0.36, 0.26, -80, 160, 16)]],
    4: [[[(0.55, 0.04), (0.1, 0.65), (0.9, 0.65)], [(0.68, 0.3), (0.68, 0.97)]],
        [[(0.18, 0.04), (0.14, 0.58), (0.86, 0.58)], [(0.7, 0.04), (0.7, 0.97)]]],
    5: [[[(0.82, 0.05), (0.26, 0.05), (0.2, 0.46)] + _arc(0.46, 0.69, 0.34, 0.27, -140, 150, 18)],
        [[(0.26, 0.05), (0.2, 0.46)] + _arc(0.46, 0.69, 0.34, 0.27, -140, 150, 18), [(0.26, 0.05), (0.84, 0.05)]]],
    6: [[[(0.72, 0.04), (0.46, 0.2), (0.28, 0.45)] + _arc(0.5, 0.72, 0.3, 0.25, 180, -180, 22)],
        [_arc(0.85, 0.6, 0.62, 0.56, -105, -180, 8) + _arc(0.5, 0.74, 0.27, 0.22, 180, -175, 20)]],
    7: [[[(0.12, 0.07), (0.88, 0.07), (0.4, 0.97)]],
        [[(0.12, 0.12), (0.15, 0.05), (0.88, 0.07), (0.45, 0.97)], [(0.32, 0.52), (0.82, 0.52)]]],
    8: [[_arc(0.5, 0.26, 0.26, 0.22, -30, -270, 16) + _arc(0.5, 0.72, 0.32, 0.25, -90, 270, 24) + [(0.7, 0.14)]],
        [_arc(0.5, 0.26, 0.25, 0.21, 0, -360, 20), _arc(0.5, 0.71, 0.31, 0.26, -90, 270, 24)]],
    9: [[_arc(0.48, 0.3, 0.3, 0.24, 0, -360, 22) + [(0.78, 0.6), (0.72, 0.97)]],
        [_arc(0.5, 0.28, 0.3, 0.23, -10, -370, 22) + _arc(0.1, 0.3, 0.7, 0.66, 0, 80, 8)]],
}


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    """Points spaced about ``step`` apart along the polyline (the pointer moves in small steps)."""
    seg = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return points[:1]
    t = np.linspace(0.0, s[-1], max(2, int(math.ceil(s[-1] / step)) + 1))
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def draw_strokes(digit: int, rng: np.random.Generator, size: int = 280, step: float = 6.0) -> list[np.ndarray]:
    """One random drawing of ``digit``: a list of strokes, each an (n, 2) array of pixel (x, y) on a
    ``size``×``size`` pad. Variant, slant, rotation, aspect, size, position and wobble are random."""
    variants = TEMPLATES[int(digit)]
    strokes = variants[rng.integers(len(variants))]
    angle = math.radians(rng.uniform(-15, 15))
    slant = rng.uniform(-0.35, 0.25)  # x += slant·(0.5 − y): positive leans right, like most handwriting
    aspect = rng.uniform(0.6, 1.15)
    height = rng.uniform(0.3, 0.85) * size  # small drawings have thick strokes for their size
    cx, cy = size / 2 + rng.normal(0, size * 0.06), size / 2 + rng.normal(0, size * 0.05)
    phase, freq = rng.uniform(0, 2 * math.pi, 2), rng.uniform(1.0, 2.5, 2)
    out = []
    for stroke in strokes:
        p = np.asarray(stroke, dtype=np.float64)
        p = _resample(p, 0.02)
        x, y = p[:, 0] - 0.5, p[:, 1] - 0.5
        x = x - slant * y
        # a slow wobble of the hand (3 % of the height), different along x and y
        x = x + 0.03 * np.sin(freq[0] * 2 * math.pi * (p[:, 1] + p[:, 0]) + phase[0])
        y = y + 0.03 * np.sin(freq[1] * 2 * math.pi * (p[:, 0] - p[:, 1]) + phase[1])
        x, y = x * aspect, y
        xr = x * math.cos(angle) - y * math.sin(angle)
        yr = x * math.sin(angle) + y * math.cos(angle)
        pix = np.stack([cx + xr * height, cy + yr * height], axis=1)
        pix = np.clip(pix, 4, size - 5)
        out.append(_resample(pix, step))
    return out


def render(strokes, size: int = 280, pen: float = 22.0) -> np.ndarray:
    """The strokes drawn with a round pen, dark on white, as a (size, size) float array in [0, 1]
    (what the page's canvas holds, without anti-aliasing) — for tests that need no browser."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    ink = np.zeros((size, size), dtype=bool)
    r2 = (pen / 2) ** 2
    for stroke in strokes:
        pts = stroke if len(stroke) > 1 else np.vstack([stroke, stroke])
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            dx, dy = x1 - x0, y1 - y0
            L2 = dx * dx + dy * dy
            t = np.zeros_like(xx) if L2 == 0 else np.clip(((xx - x0) * dx + (yy - y0) * dy) / L2, 0, 1)
            ink |= (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2 <= r2
    return 1.0 - ink.astype(np.float64)
