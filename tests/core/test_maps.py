"""cam_core.maps: normalize and fuse."""

from __future__ import annotations

import numpy as np
import pytest

from cam_core.maps import fuse, normalize
from tests.conftest import readonly


def test_normalize_golden():
    # map 0: min -2, max 6, range 8: (-2, 0, 2, 6) -> (0, 0.25, 0.5, 1)
    # map 1: constant -> zeros
    x = np.array([[[-2.0, 0.0], [2.0, 6.0]], [[3.0, 3.0], [3.0, 3.0]]])
    np.testing.assert_array_equal(normalize(x), [[[0, 0.25], [0.5, 1]], [[0, 0], [0, 0]]])


def test_normalize_relu_golden():
    # ReLU first: (-2, 0, 2, 6) -> (0, 0, 2, 6), min 0, max 6 -> (0, 0, 1/3, 1)
    # an all-negative map becomes all zeros after the ReLU, hence constant -> zeros.
    x = np.array([[[-2.0, 0.0], [2.0, 6.0]], [[-1.0, -5.0], [-2.0, -3.0]]])
    out = normalize(x, relu=True)
    np.testing.assert_allclose(out[0], [[0, 0], [1 / 3, 1]], atol=1e-15)
    np.testing.assert_array_equal(out[1], 0.0)


def test_normalize_per_map_loop_oracle():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 5, 7)).astype(np.float32) * rng.uniform(0.1, 100, (6, 1, 1))
    out = normalize(x)
    for n in range(6):
        m = x[n].astype(np.float64)
        want = (m - m.min()) / (m.max() - m.min())
        np.testing.assert_allclose(out[n], want, atol=1e-6)
        assert out[n].min() == 0.0 and out[n].max() == 1.0


def test_normalize_dtypes_and_idempotent():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 4)).astype(np.float32)
    once = normalize(x)
    assert once.dtype == np.float32
    np.testing.assert_array_equal(normalize(once), once)
    assert normalize(x.astype(np.float64)).dtype == np.float64
    assert normalize(x.astype(np.float16)).dtype == np.float32
    assert normalize(np.arange(8).reshape(2, 2, 2)).dtype == np.float64


def test_normalize_huge_range_no_overflow():
    x = np.array([[[-3e38, 0.0], [1e38, 3e38]]], dtype=np.float32)
    out = normalize(x)
    np.testing.assert_allclose(out, [[[0, 0.5], [4e38 / 6e38, 1]]], rtol=1e-6)
    x64 = np.array([[[-1.7e308, 1.7e308]]])
    np.testing.assert_array_equal(normalize(x64), [[[0.0, 1.0]]])


def test_normalize_read_only_untouched():
    x = readonly(np.arange(18, dtype=np.float32).reshape(2, 3, 3) - 4)
    before = x.copy()
    normalize(x, relu=True)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_normalize_non_finite_says_where(bad):
    x = np.zeros((2, 3, 3))
    x[1, 0, 2] = bad
    with pytest.raises(ValueError, match=r"\(1, 0, 2\)"):
        normalize(x)


def test_normalize_bad_shapes_and_kinds():
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        normalize(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="empty"):
        normalize(np.zeros((0, 3, 5)))
    with pytest.raises(ValueError, match="non-empty"):
        normalize(np.zeros((2, 0, 5)))
    with pytest.raises(TypeError, match="dtype"):
        normalize(np.array([[["x"]]]))


def test_fuse_golden_mean_and_max():
    a = np.array([[[0.0, 1.0], [0.5, 0.2]]])
    b = np.array([[[1.0, 0.0], [0.5, 0.6]]])
    np.testing.assert_allclose(fuse([a, b]), [[[0.5, 0.5], [0.5, 0.4]]], atol=1e-15)
    np.testing.assert_array_equal(fuse([a, b], how="max"), [[[1.0, 1.0], [0.5, 0.6]]])
    np.testing.assert_allclose(fuse(np.stack([a, b])), fuse([a, b]), atol=0)


def test_fuse_single_layer_and_dtypes():
    a = np.random.default_rng(3).random((2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(fuse([a]), a)
    assert fuse([a, a]).dtype == np.float32
    assert fuse([a, a.astype(np.float64)]).dtype == np.float64


def test_fuse_loop_oracle():
    rng = np.random.default_rng(4)
    layers = [rng.random((3, 5, 6)) for _ in range(4)]
    mean, top, prod = fuse(layers), fuse(layers, how="max"), fuse(layers, how="product")
    for n in range(3):
        for i in range(5):
            for j in range(6):
                vals = [m[n, i, j] for m in layers]
                assert mean[n, i, j] == pytest.approx(sum(vals) / 4, abs=1e-15)
                assert top[n, i, j] == max(vals)
                assert prod[n, i, j] == pytest.approx(vals[0] * vals[1] * vals[2] * vals[3],
                                                      rel=1e-14)


def test_fuse_product_golden_dtype_and_overflow():
    a = np.array([[[0.0, 1.0], [0.5, 0.2]]], np.float32)
    b = np.array([[[1.0, 0.0], [0.5, 0.6]]], np.float32)
    got = fuse([a, b], how="product")
    np.testing.assert_allclose(got, [[[0.0, 0.0], [0.25, 0.12]]], rtol=1e-7)
    assert got.dtype == np.float32
    with pytest.raises(ValueError, match="overflows"):
        fuse([np.full((1, 2, 2), 1e200), np.full((1, 2, 2), 1e200)], how="product")


def test_fuse_bad_input():
    a = np.zeros((2, 4, 4))
    with pytest.raises(ValueError, match=r"maps\[1\] has \(2, 4, 5\)"):
        fuse([a, np.zeros((2, 4, 5))])
    with pytest.raises(ValueError, match="empty"):
        fuse([])
    with pytest.raises(ValueError, match="empty"):
        fuse(np.zeros((0, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"\(L, N, H, W\)"):
        fuse(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="median"):
        fuse([a, a], how="median")
    with pytest.raises(TypeError, match="`how`"):
        fuse([a, a], how=None)
    with pytest.raises(TypeError, match="sequence"):
        fuse(5)
    b = a.copy()
    b[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 3\)"):
        fuse([a, b])


def test_fuse_read_only_untouched():
    a, b = readonly(np.ones((1, 2, 2)), np.zeros((1, 2, 2)))
    fuse([a, b])
    fuse(np.stack([a, b]), how="max")
    assert a.sum() == 4 and b.sum() == 0
