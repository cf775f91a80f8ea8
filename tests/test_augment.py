"""Augmentation: exact on known transforms (shift, rotation, scale, stroke thickness), seeded,
and harmless to shapes and dtypes."""

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
    out = Augmenter(max_shift=0.0, max_rotation_deg=0.0, max_scale=0.0, thickness=(0, 0))(X)
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
    a, b = Augmenter(seed=3, thickness=(0, 0)), Augmenter(seed=3, thickness=(0, 0))
    a.reseed(2, 5)
    b.reseed(2, 5)
    out_a, out_b = a(X), b(X)
    np.testing.assert_array_equal(out_a, out_b)
    assert out_a.shape == X.shape and out_a.dtype == X.dtype
    assert not np.allclose(out_a, X)
    # ±2 px, ±10° and ±10 % scale keep the bar's mass almost entirely inside the frame
    assert out_a.sum(axis=1) == pytest.approx(X.sum(axis=1), rel=0.25)


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


def _bar(m=1):
    """A 28×28 field with one 4-pixel-wide vertical bar, rows 8–19, columns 12–15, exactly."""
    X = np.zeros((m, 28, 28), dtype=np.float32)
    X[:, 8:20, 12:16] = 1.0
    return X.reshape(m, -1)


def test_full_dilation_and_erosion_are_3x3_max_and_min():
    X = _bar(2)
    out = Augmenter().thicken(X, np.array([1.0, -1.0])).reshape(2, 28, 28)
    grown = np.zeros((28, 28), np.float32)
    grown[7:21, 11:17] = 1.0  # one pixel more on every side (corners included: square element)
    shrunk = np.zeros((28, 28), np.float32)
    shrunk[9:19, 13:15] = 1.0  # one pixel less on every side
    np.testing.assert_array_equal(out[0], grown)
    np.testing.assert_array_equal(out[1], shrunk)


def test_two_steps_are_two_dilations_and_1_5_blends_them():
    X = _bar(3)
    out = Augmenter().thicken(X, np.array([2.0, -2.0, 1.5])).reshape(3, 28, 28)
    two = np.zeros((28, 28), np.float32)
    two[6:22, 10:18] = 1.0  # two pixels more on every side
    np.testing.assert_array_equal(out[0], two)
    np.testing.assert_array_equal(out[1], 0.0)  # a 4-pixel-wide bar is gone after two erosions
    one = np.zeros((28, 28), np.float32)
    one[7:21, 11:17] = 1.0
    np.testing.assert_allclose(out[2], 0.5 * (one + two), atol=1e-7)


def test_fractional_thickness_blends_linearly():
    X = _bar(1)
    aug = Augmenter()
    half = aug.thicken(X, np.array([0.5]))
    full = aug.thicken(X, np.array([1.0]))
    np.testing.assert_allclose(half, 0.5 * (X + full), atol=1e-7)
    np.testing.assert_array_equal(aug.thicken(X, np.array([0.0])), X)


def test_thickening_keeps_the_background_of_normalised_rows():
    """Normalised rows have a negative background: dilation must not pull in a 0 from outside."""
    X = (_bar(1) - 0.13) / 0.31
    out = Augmenter().thicken(X, np.array([1.0]))
    assert out.min() == pytest.approx(X.min())
    # a one-pixel line along the frame erodes away completely: outside the frame is background, not ink
    Y = np.full((1, 28, 28), X.min(), np.float32)
    Y[0, :, 0] = X.max()
    out = Augmenter().thicken(Y.reshape(1, -1), np.array([-1.0]))
    np.testing.assert_allclose(out, X.min(), atol=1e-6)


def test_scale_about_the_centre():
    """Scaling by 2 doubles the bar's extent about the image centre (13.5, 13.5)."""
    X = np.zeros((1, 28, 28), np.float32)
    X[0, 11:17, 13:15] = 1.0  # rows 11..16, centred on 13.5
    out = Augmenter().transform(X.reshape(1, -1), np.zeros(1), np.zeros((1, 2)), scale=np.array([2.0])).reshape(28, 28)
    rows = np.nonzero(out[:, 13] > 0.99)[0]
    assert rows.min() == 9 and rows.max() == 18  # source rows 11..16 land on 8.5..18.5: full ink on 9..18
    # columns 13..14: output column c reads source 13.5 + (c − 13.5)/2, bilinear (column 12 → 12.75 → 0.75 ink)
    np.testing.assert_allclose(out[13, 10:18], [0.0, 0.25, 0.75, 1.0, 1.0, 0.75, 0.25, 0.0], atol=1e-6)
    np.testing.assert_allclose(out, out[::-1, ::-1], atol=1e-6)  # symmetric about the centre
    assert out.sum() == pytest.approx(4 * X.sum(), rel=0.1)      # area × 4


def test_identity_scale_and_shift_compose(rng):
    X = _digit(rng, m=3)
    aug = Augmenter()
    plain = aug.transform(X, np.zeros(3), np.array([[1.0, 0.0]] * 3))
    scaled = aug.transform(X, np.zeros(3), np.array([[1.0, 0.0]] * 3), scale=np.ones(3))
    np.testing.assert_allclose(scaled, plain, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_four_draws_are_seeded_and_keep_dtype(rng, dtype):
    X = _digit(rng, m=8).astype(dtype)
    a, b = Augmenter(seed=5), Augmenter(seed=5)
    a.reseed(1, 2)
    b.reseed(1, 2)
    out = a(X)
    np.testing.assert_array_equal(out, b(X))
    assert out.shape == X.shape and out.dtype == dtype
    c = Augmenter(seed=6)
    c.reseed(1, 2)
    assert not np.allclose(c(X), out)
    # each image got its own draw: identical inputs come out different
    same = np.repeat(X[:1], 8, axis=0)
    a.reseed(0)
    outs = a(same)
    assert len({row.tobytes() for row in outs}) == 8


def test_thickness_changes_ink_mass_both_ways():
    """Over many draws, thickness ±0.5 both grows and shrinks the ink."""
    X = np.repeat(_bar(1), 64, axis=0)
    aug = Augmenter(max_shift=0.0, max_rotation_deg=0.0, max_scale=0.0, thickness=(-0.5, 0.5), seed=0)
    aug.reseed(0)
    mass = aug(X).sum(axis=1) / X[0].sum()
    assert mass.min() < 0.85 and mass.max() > 1.15
    assert mass.min() >= 0.5 - 1e-6 and mass.max() <= (14 * 6) / 48 * 0.5 + 0.5 + 1e-6


@pytest.mark.parametrize("kwargs", [{"max_scale": 1.0}, {"max_scale": -0.1}, {"thickness": (-0.5, 2.5)},
                                    {"thickness": (1.0, 0.0)}, {"thickness": 1.0}, {"max_shift": -1.0}])
def test_bad_parameters_are_config_errors(kwargs):
    from xpnet.errors import ConfigError

    with pytest.raises(ConfigError):
        Augmenter(**kwargs)
