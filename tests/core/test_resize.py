"""cam_core.resize: golden values, agreement with torch / TensorFlow / OpenCV, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cam_core.resize import clear_cache, interpolation_matrix, upsample
from tests.conftest import readonly

SIZES = [
    ((7, 7), (224, 224)),
    ((5, 5), (13, 13)),
    ((14, 14), (224, 160)),
    ((224, 224), (7, 7)),
    ((1, 1), (5, 5)),
    ((3, 8), (17, 5)),
    ((6, 4), (6, 4)),
]
SIZE_IDS = [f"{a}x{b}->{c}x{d}" for (a, b), (c, d) in SIZES]


def _maps(shape, seed=0, n=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32)


# ----------------------------------------------------------------------------- golden values


def test_bilinear_golden_1x2_to_1x4():
    # in=2, out=4, scale=0.5; source x = (d + 0.5) * 0.5 - 0.5 = -0.25, 0.25, 0.75, 1.25
    # clamped to [0, ...]: 0, 0.25, 0.75, 1.25 -> x0=0,0,0,1 (right neighbour clamped to 1)
    # values of [0, 1]: 0, 0.25, 0.75, 1
    out = upsample(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_array_equal(out, [[0.0, 0.25, 0.75, 1.0]])


def test_bilinear_matrix_golden_2_to_3():
    # scale 2/3; d=0: src=(0.5)(2/3)-0.5=-1/6 -> 0 -> [1, 0]
    # d=1: src=1.5*2/3-0.5=0.5 -> [0.5, 0.5];  d=2: src=2.5*2/3-0.5=7/6 -> clamp -> [0, 1]
    r = interpolation_matrix(2, 3)
    np.testing.assert_allclose(r, [[1, 0], [0.5, 0.5], [0, 1]], atol=1e-15)


def test_nearest_matrix_golden_3_to_4_and_4_to_2():
    # 3->4, scale 0.75: floor((d + 0.5) * 0.75) = floor(0.375, 1.125, 1.875, 2.625) = 0,1,1,2
    r = interpolation_matrix(3, 4, method="nearest")
    np.testing.assert_array_equal(r.argmax(axis=1), [0, 1, 1, 2])
    # 4->2, scale 2: floor(1, 3) = 1, 3
    r = interpolation_matrix(4, 2, method="nearest")
    np.testing.assert_array_equal(r.argmax(axis=1), [1, 3])


def test_bicubic_matrix_golden_weights_at_half():
    # 2->4: d=1 -> src = 1.5 * 0.5 - 0.5 = 0.25, floor 0, t = 0.25, taps at -1, 0, 1, 2 with
    # a = -0.75, near(x) = (1.25 x - 2.25) x^2 + 1, far(x) = ((-0.75 x + 3.75) x - 6) x + 3:
    #   far(1.25)  = ((2.8125) * 1.25 - 6) * 1.25 + 3 = -2.484375 * 1.25 + 3 = -0.10546875
    #   near(0.25) = (0.3125 - 2.25) * 0.0625 + 1                         =  0.87890625
    #   near(0.75) = (0.9375 - 2.25) * 0.5625 + 1                         =  0.26171875
    #   far(1.75)  = ((2.4375) * 1.75 - 6) * 1.75 + 3 = -1.734375 * 1.75 + 3 = -0.03515625
    # taps clamped to [0, 1]: index 0 gets -0.10546875 + 0.87890625 = 0.7734375,
    # index 1 gets 0.26171875 - 0.03515625 = 0.2265625.
    r = interpolation_matrix(2, 4, method="bicubic")
    np.testing.assert_allclose(r[1], [0.7734375, 0.2265625], atol=1e-15)


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("n_in,n_out", [(7, 224), (5, 13), (224, 7), (1, 5), (9, 9)])
def test_matrix_rows_sum_to_one_and_read_only(method, n_in, n_out):
    r = interpolation_matrix(n_in, n_out, method=method)
    assert r.shape == (n_out, n_in)
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-12)
    assert not r.flags.writeable
    with pytest.raises(ValueError):
        r[0, 0] = 5.0


def test_clear_cache_rebuilds_the_same_matrix():
    before = interpolation_matrix(7, 224, method="bicubic")
    assert interpolation_matrix(7, 224, method="bicubic") is before  # cached
    clear_cache()
    after = interpolation_matrix(7, 224, method="bicubic")
    assert after is not before
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "nearest"])
def test_same_size_is_identity(method):
    x = _maps((6, 4))
    np.testing.assert_allclose(upsample(x, (6, 4), method=method), x, atol=1e-6)


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("value", [0.0, 1.0, -3.5, 255.0])
def test_constant_stays_constant(method, value):
    x = np.full((2, 7, 5), value, dtype=np.float32)
    out = upsample(x, (31, 224), method=method)
    np.testing.assert_allclose(out, value, rtol=1e-6, atol=1e-6)


def test_matches_plain_loop_of_separable_interpolation():
    # Oracle: out[n, i, j] = sum_a sum_b Ry[i, a] x[n, a, b] Rx[j, b], by explicit loops.
    x = _maps((3, 4), n=2).astype(np.float64)
    ry, rx = interpolation_matrix(3, 5), interpolation_matrix(4, 6)
    want = np.zeros((2, 5, 6))
    for n in range(2):
        for i in range(5):
            for j in range(6):
                for a in range(3):
                    for b in range(4):
                        want[n, i, j] += ry[i, a] * x[n, a, b] * rx[j, b]
    np.testing.assert_allclose(upsample(x, (5, 6)), want, atol=1e-12)


def test_both_product_orders_agree():
    # (3, 40) -> (50, 4) uses one order, its transpose the other.
    x = _maps((3, 40), n=2).astype(np.float64)
    a = upsample(x, (50, 4), method="bicubic")
    b = upsample(x.transpose(0, 2, 1), (4, 50), method="bicubic").transpose(0, 2, 1)
    np.testing.assert_allclose(a, b, atol=1e-12)


# ------------------------------------------------------------------------- dtypes, shapes, out


def test_dtypes():
    x = _maps((4, 4))
    assert upsample(x, 8).dtype == np.float32
    assert upsample(x.astype(np.float16), 8).dtype == np.float32
    assert upsample(x.astype(np.float64), 8).dtype == np.float64
    assert upsample(np.ones((1, 2, 2), dtype=np.int64), 3).dtype == np.float64
    assert upsample(np.ones((1, 2, 2), dtype=bool), 3).dtype == np.float64


def test_two_d_map_gives_two_d_result():
    x = _maps((4, 5), n=1)
    out = upsample(x[0], (9, 11), method="bicubic")
    assert out.shape == (9, 11)
    np.testing.assert_array_equal(out, upsample(x, (9, 11), method="bicubic")[0])


def test_batch_equals_each_map_alone():
    x = _maps((7, 7), n=5)
    batch = upsample(x, 30)
    for i in range(5):
        np.testing.assert_array_equal(batch[i], upsample(x[i : i + 1], 30)[0])


def test_read_only_input_untouched():
    x = readonly(_maps((7, 7)))
    before = x.copy()
    upsample(x, 224)
    upsample(x, (5, 9), method="bicubic")
    np.testing.assert_array_equal(x, before)


def test_out_is_written_and_returned():
    x = _maps((7, 7))
    out = np.full((3, 224, 224), np.nan, dtype=np.float32)
    res = upsample(x, 224, out=out)
    assert res is out
    np.testing.assert_array_equal(out, upsample(x, 224))
    out2 = np.empty((224, 100), dtype=np.float32)
    assert upsample(x[0], (224, 100), out=out2) is out2
    np.testing.assert_array_equal(out2, upsample(x[0], (224, 100)))


@pytest.mark.parametrize(
    "bad",
    [
        np.empty((3, 224, 224), dtype=np.float64),  # wrong dtype
        np.empty((3, 224, 223), dtype=np.float32),  # wrong shape
        np.empty((3, 224, 448), dtype=np.float32)[:, :, ::2],  # not contiguous
    ],
)
def test_bad_out_refused(bad):
    with pytest.raises(ValueError, match="`out`"):
        upsample(_maps((7, 7)), 224, out=bad)


def test_out_read_only_or_list_refused():
    out = readonly(np.empty((3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="writeable"):
        upsample(_maps((4, 4)), 8, out=out)
    with pytest.raises(TypeError, match="`out`"):
        upsample(_maps((4, 4)), 8, out=[[0.0]])


# -------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(5,), (1, 2, 3, 4)])
def test_wrong_rank_echoes_shape(shape):
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        upsample(np.zeros(shape), 4)


def test_empty_batch_refused():
    with pytest.raises(ValueError, match="empty"):
        upsample(np.zeros((0, 7, 7), dtype=np.float32), 224)
    with pytest.raises(ValueError, match="non-empty"):
        upsample(np.zeros((2, 0, 7), dtype=np.float32), 224)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused_with_position(bad):
    x = np.zeros((2, 3, 3), dtype=np.float32)
    x[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"\(1, 2, 0\)"):
        upsample(x, 5)


def test_non_numeric_refused():
    with pytest.raises(TypeError, match="dtype"):
        upsample(np.array([[["a", "b"]]]), 4)
    with pytest.raises(TypeError):
        upsample("map", 4)


@pytest.mark.parametrize("size", [0, (3, 0), (-1, 4)])
def test_bad_size_values(size):
    with pytest.raises(ValueError, match="`size`"):
        upsample(_maps((3, 3)), size)


@pytest.mark.parametrize("size", [(3, 4, 5), (2.5, 3)])
def test_bad_size_pairs(size):
    with pytest.raises(ValueError, match="`size`"):
        upsample(_maps((3, 3)), size)


def test_bad_method():
    with pytest.raises(ValueError, match="bicubic"):
        upsample(_maps((3, 3)), 5, method="lanczos")
    with pytest.raises(TypeError, match="`method`"):
        upsample(_maps((3, 3)), 5, method=1)
    with pytest.raises(ValueError, match="nearest"):
        interpolation_matrix(3, 5, method="area")


@pytest.mark.parametrize("args", [(0, 5), (5, 0), (2.0, 5), (True, 5)])
def test_bad_matrix_sizes(args):
    with pytest.raises((ValueError, TypeError), match="size"):
        interpolation_matrix(*args)


# --------------------------------------------------------------- agreement with frameworks


@pytest.mark.parametrize("sizes", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("method", ["bilinear", "bicubic", "nearest"])
def test_matches_torch(sizes, method):
    torch = pytest.importorskip("torch")
    (h, w), (big_h, big_w) = sizes
    x = _maps((h, w), seed=h * 31 + w)
    mode = {"nearest": "nearest-exact"}.get(method, method)
    kwargs = {} if method == "nearest" else {"align_corners": False}
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x)[:, None], size=(big_h, big_w), mode=mode, **kwargs
    )[:, 0].numpy()
    np.testing.assert_allclose(upsample(x, (big_h, big_w), method=method), want, atol=1e-5)


@pytest.mark.parametrize("sizes", SIZES, ids=SIZE_IDS)
def test_bilinear_matches_tensorflow(sizes):
    tf = pytest.importorskip("tensorflow")
    (h, w), (big_h, big_w) = sizes
    x = _maps((h, w), seed=h * 7 + w)
    want = tf.image.resize(x[..., None], (big_h, big_w), method="bilinear", antialias=False)
    np.testing.assert_allclose(upsample(x, (big_h, big_w)), want.numpy()[..., 0], atol=1e-5)


@pytest.mark.parametrize("sizes", SIZES, ids=SIZE_IDS)
def test_bicubic_matches_opencv(sizes):
    cv2 = pytest.importorskip("cv2")
    (h, w), (big_h, big_w) = sizes
    x = _maps((h, w), seed=h * 13 + w)
    want = np.stack(
        [cv2.resize(m, (big_w, big_h), interpolation=cv2.INTER_CUBIC) for m in x]
    ).reshape(len(x), big_h, big_w)
    np.testing.assert_allclose(upsample(x, (big_h, big_w), method="bicubic"), want, atol=1e-5)
