"""Thresholds: golden values, batch == loop, documented edge cases, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import threshold_otsu as sk_otsu

from cam_core.threshold import (
    binarize,
    threshold_fraction,
    threshold_otsu,
    threshold_percentile,
    threshold_sweep,
)
from tests.conftest import readonly

MAP = np.array([[0.0, 1.0], [2.0, 10.0]])


def test_fraction_golden():
    assert threshold_fraction(MAP, 0.2).tolist() == [[False, False], [True, True]]
    assert threshold_fraction(MAP, 0.15).tolist() == [[False, False], [True, True]]
    assert threshold_fraction(MAP, 0.1).tolist() == [[False, True], [True, True]]
    assert threshold_fraction(MAP, 0.0).all()


def test_fraction_per_map_maximum():
    maps = readonly(np.stack([MAP, MAP / 10]))
    out = threshold_fraction(maps, 0.5)
    assert out.shape == (2, 2, 2)
    assert out[0].tolist() == out[1].tolist() == [[False, False], [False, True]]


def test_constant_map_rules():
    const = np.full((3, 3), 0.4)
    assert threshold_fraction(const, 0.2).all()  # every pixel equals the maximum
    assert threshold_otsu(const) == pytest.approx(0.4)
    assert not binarize(const, method="otsu").any()  # map > t selects nothing
    assert binarize(const, method="percentile", value=50).all()


def test_otsu_matches_skimage_per_map():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 9, 9))
    t = threshold_otsu(readonly(maps))
    assert t.shape == (3,)
    assert t.tolist() == [sk_otsu(m) for m in maps]
    masks = binarize(maps, method="otsu")
    for m, mask, tt in zip(maps, masks, t):
        np.testing.assert_array_equal(mask, m > tt)


def test_percentile_golden():
    m = np.arange(11, dtype=np.float64).reshape(1, 11)
    assert threshold_percentile(m, 50) == 5.0
    assert threshold_percentile(m, 90) == 9.0
    assert binarize(m, method="percentile", value=80).sum() == 3  # 8, 9, 10
    assert binarize(m, method="percentile").sum() == 3  # default q = 80


def test_binarize_fraction_default_and_value():
    np.testing.assert_array_equal(binarize(MAP), threshold_fraction(MAP, 0.2))
    np.testing.assert_array_equal(binarize(MAP, value=0.05), threshold_fraction(MAP, 0.05))


def test_sweep_equals_loop_and_shapes():
    rng = np.random.default_rng(1)
    maps = rng.random((4, 6, 7)).astype(np.float32)
    taus = np.array([0.0, 0.15, 0.2, 0.5, 0.999, 1.0])
    out = threshold_sweep(readonly(maps), taus)
    assert out.shape == (6, 4, 6, 7)
    for k, tau in enumerate(taus):
        np.testing.assert_array_equal(out[k], threshold_fraction(maps, float(tau)))
    assert threshold_sweep(maps[0], taus).shape == (6, 6, 7)


def test_float32_stays_float32():
    m = np.random.default_rng(2).random((5, 5)).astype(np.float32)
    assert isinstance(threshold_otsu(m), float)
    assert threshold_otsu(m[None]).dtype == np.float32
    assert threshold_percentile(m[None], 30).dtype == np.float32


def test_inputs_not_modified():
    m = readonly(np.random.default_rng(3).random((2, 5, 5)))
    before = m.copy()
    for method in ("fraction", "otsu", "percentile"):
        binarize(m, method=method)
    threshold_sweep(m, [0.1, 0.2])
    np.testing.assert_array_equal(m, before)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((1, 2, 3, 4))])
def test_wrong_rank_echoed(bad):
    with pytest.raises(ValueError, match=r"\(H, W\) or \(N, H, W\); got \(" ):
        threshold_fraction(bad, 0.2)


def test_nan_named():
    m = np.zeros((2, 3, 3))
    m[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"`maps` must be finite.*\(1, 2, 0\)"):
        binarize(m)
    m[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        threshold_otsu(m)


def test_bad_kinds_and_values():
    with pytest.raises(TypeError, match="numeric"):
        threshold_fraction(np.array([["a", "b"]]), 0.2)
    with pytest.raises(ValueError, match="fraction"):
        threshold_fraction(MAP, 1.5)
    with pytest.raises(TypeError, match="fraction"):
        threshold_fraction(MAP, "0.2")
    with pytest.raises(ValueError, match="q"):
        threshold_percentile(MAP, 101)
    with pytest.raises(ValueError, match="method"):
        binarize(MAP, method="mean")
    with pytest.raises(ValueError, match="value"):
        binarize(MAP, method="otsu", value=0.3)
    with pytest.raises(ValueError, match="taus"):
        threshold_sweep(MAP, [])
    with pytest.raises(ValueError, match="taus"):
        threshold_sweep(MAP, [0.1, 2.0])
    with pytest.raises(ValueError, match="empty"):
        threshold_fraction(np.zeros((0, 3, 3)), 0.2)
