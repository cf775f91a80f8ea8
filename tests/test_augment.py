"""Augmentation: exact on known transforms, seeded, and harmless to shapes and dtypes."""

import numpy as np
import pytest

from xpnet.data.augment import Augmenter


def _digit(rng, m=4):
    X = np.zeros((m, 28, 28), dtype=np.float32)
    X[:, 8:20, 12:16] = 1.0  # a vertical bar
    X += rng.random(X.shape).astype(np.float32) * 0.01
    return X.reshape(m, -1)


def test_no_shift_no_rotation_is_the_identity(rng):
    X = _digit(rng)
    out = Augmenter(max_shift=0.0, max_rotation_deg=0.0)(X)
    np.testing.assert_allclose(out, X, atol=1e-6)


def test_whole_pixel_shift_moves_the_image(rng):
    X = _digit(rng, m=1)
    out = Augmenter().transform(X, np.zeros(1), np.array([[1.0, -2.0]])).reshape(28, 28)
    src = X.reshape(28, 28)
    np.testing.assert_allclose(out[1:, :-2], src[:-1, 2:], atol=1e-5)  # down 1 row, left 2 columns


def test_rotation_by_90_degrees_matches_rot90(rng):
    X = _digit(rng, m=1)
    out = Augmenter().transform(X, np.array([np.pi / 2]), np.zeros((1, 2))).reshape(28, 28)
    src = X.reshape(28, 28)
    assert np.allclose(out, np.rot90(src, k=1), atol=1e-4) or np.allclose(out, np.rot90(src, k=-1), atol=1e-4)
    assert not np.allclose(out, src, atol=1e-2)


def test_seeded_and_bounded(rng):
    X = _digit(rng)
    a, b = Augmenter(seed=3), Augmenter(seed=3)
    a.reseed(2, 5)
    b.reseed(2, 5)
    out_a, out_b = a(X), b(X)
    np.testing.assert_array_equal(out_a, out_b)
    assert out_a.shape == X.shape and out_a.dtype == X.dtype
    assert not np.allclose(out_a, X)
    # ±2 px and ±10° keep the bar's mass almost entirely inside the frame
    assert out_a.sum(axis=1) == pytest.approx(X.sum(axis=1), rel=0.05)


def test_in_place_output(rng):
    X = _digit(rng)
    buf = X.copy()
    aug = Augmenter(seed=1)
    aug.reseed(0)
    expected = aug(X)
    aug.reseed(0)
    result = aug(buf, out=buf)
    assert result is buf
    np.testing.assert_array_equal(buf, expected)
