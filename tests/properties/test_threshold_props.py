"""Properties of thresholds (Hypothesis, `ci` profile)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cam_core.threshold import binarize, threshold_fraction, threshold_sweep
from tests.conftest import readonly

maps = arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 8)),
              elements=st.floats(0, 1, allow_nan=False, width=64))
fractions = st.floats(0, 1, allow_nan=False)


@given(maps, fractions, fractions)
def test_higher_threshold_gives_a_subset(m, a, b):
    lo, hi = sorted((a, b))
    m_lo = threshold_fraction(readonly(m), lo)
    m_hi = threshold_fraction(m, hi)
    assert not np.any(m_hi & ~m_lo)
    # the maximum of every map is always kept
    assert np.all(m_hi.reshape(len(m), -1).any(axis=1))


@given(maps, st.lists(fractions, min_size=1, max_size=6))
def test_sweep_is_nested_and_equals_single_thresholds(m, taus):
    taus = np.sort(np.array(taus))
    ro = readonly(m)
    out = threshold_sweep(ro, taus)
    assert out.shape == (len(taus),) + m.shape and out.dtype == bool
    for k in range(len(taus)):
        np.testing.assert_array_equal(out[k], threshold_fraction(m, float(taus[k])))
        if k:
            assert not np.any(out[k] & ~out[k - 1])
    np.testing.assert_array_equal(ro, m)


@given(maps, st.sampled_from(["fraction", "otsu", "percentile"]))
def test_binarize_shapes_and_dtype(m, method):
    out = binarize(readonly(m), method=method)
    assert out.shape == m.shape and out.dtype == bool
    single = binarize(m[0], method=method)
    np.testing.assert_array_equal(single, out[0])


@given(maps, st.floats(0, 100), st.floats(0, 100))
def test_percentile_monotone(m, a, b):
    lo, hi = sorted((a, b))
    m_lo = binarize(m, method="percentile", value=lo)
    m_hi = binarize(m, method="percentile", value=hi)
    assert not np.any(m_hi & ~m_lo)
