"""Hypothesis properties of cam_core.resize.upsample."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cam_core.resize import upsample
from tests.conftest import readonly

_METHODS = st.sampled_from(["bilinear", "bicubic", "nearest"])
_IN = st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))
_OUT = st.tuples(st.integers(1, 40), st.integers(1, 40))
_VALUES = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@given(_IN, _OUT, _METHODS, _VALUES, st.sampled_from([np.float32, np.float64]))
def test_constant_stays_constant(in_shape, size, method, value, dtype):
    x = np.full(in_shape, value, dtype=dtype)
    out = upsample(x, size, method=method)
    assert out.shape == (in_shape[0], *size) and out.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, value, rtol=tol, atol=tol)


@given(st.data(), _IN, _OUT, st.sampled_from(["bilinear", "nearest"]))
def test_bilinear_and_nearest_stay_within_input_range(data, in_shape, size, method):
    x = data.draw(arrays(np.float64, in_shape, elements=_VALUES))
    out = upsample(x, size, method=method)
    lo = x.min(axis=(1, 2))[:, None, None]
    hi = x.max(axis=(1, 2))[:, None, None]
    slack = 1e-9 * np.maximum(np.abs(lo), np.abs(hi)) + 1e-12
    assert np.all(out >= lo - slack) and np.all(out <= hi + slack)


@given(st.data(), _IN, _OUT)
def test_nearest_takes_input_values(data, in_shape, size):
    x = data.draw(arrays(np.float64, in_shape, elements=_VALUES))
    out = upsample(x, size, method="nearest")
    for n in range(len(x)):
        assert np.isin(out[n], x[n]).all()


@given(st.data(), _IN, _OUT, _METHODS)
def test_read_only_input_unmodified_and_linear(data, in_shape, size, method):
    x = data.draw(arrays(np.float64, in_shape, elements=st.floats(-10, 10)))
    y = data.draw(arrays(np.float64, in_shape, elements=st.floats(-10, 10)))
    rx = readonly(x)
    got = upsample(rx, size, method=method)
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_allclose(
        upsample(2 * x - 3 * y, size, method=method),
        2 * got - 3 * upsample(y, size, method=method),
        atol=1e-9,
    )
