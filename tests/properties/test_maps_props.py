"""Hypothesis properties of cam_core.maps.normalize and fuse."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cam_core.maps import fuse, normalize
from tests.conftest import readonly

_SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))
_FLOATS32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
_FLOATS64 = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def _maps(draw):
    shape = draw(_SHAPES)
    if draw(st.booleans()):
        return draw(arrays(np.float32, shape, elements=_FLOATS32))
    return draw(arrays(np.float64, shape, elements=_FLOATS64))


@given(_maps(), st.booleans())
def test_normalize_in_unit_interval_and_idempotent(maps, relu):
    out = normalize(maps, relu=relu)
    assert out.dtype == maps.dtype and out.shape == maps.shape
    assert np.all(np.isfinite(out))
    assert np.all((out >= 0) & (out <= 1))
    for n in range(len(out)):
        # each map either spans [0, 1] exactly or is all zeros (constant after the ReLU)
        assert (out[n].min() == 0 and out[n].max() == 1) or np.all(out[n] == 0)
    np.testing.assert_array_equal(normalize(out), out)


@given(_maps(), st.booleans())
def test_normalize_keeps_order_within_each_map(maps, relu):
    out = normalize(maps, relu=relu)
    src = np.maximum(maps, 0) if relu else maps
    for n in range(len(out)):
        a, b = src[n].ravel(), out[n].ravel()
        i, j = np.meshgrid(np.arange(a.size), np.arange(a.size))
        assert np.all(b[i][a[i] < a[j]] <= b[j][a[i] < a[j]])


@given(_maps(), st.booleans())
def test_normalize_read_only_input_unmodified(maps, relu):
    ro = readonly(maps)
    normalize(ro, relu=relu)
    np.testing.assert_array_equal(ro, maps)


@given(st.integers(1, 4), _SHAPES, st.sampled_from(["mean", "max"]), st.integers(0, 2**32 - 1))
def test_fuse_stays_in_layer_range(layers, shape, how, seed):
    stack = np.random.default_rng(seed).random((layers, *shape))
    out = fuse(list(stack), how=how)
    assert out.shape == shape
    assert np.all(out >= stack.min(axis=0) - 1e-15) and np.all(out <= stack.max(axis=0) + 1e-15)
    np.testing.assert_array_equal(out, fuse(stack, how=how))
