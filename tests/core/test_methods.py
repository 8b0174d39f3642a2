"""cam_core.methods: hand-computed golden values, loop oracles, exactness, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cam_core import methods as m
from cam_core.maps import normalize
from cam_core.resize import upsample
from tests.conftest import readonly

GRADIENT_METHODS = [m.gradcam, m.gradcam_pp, m.xgradcam, m.layercam, m.hirescam]

# ------------------------------------------------------------------------ golden, by hand
# One image, K=2 channels, h=1, w=2:
#   A_0 = [1, 2]    g_0 = [-1, 3]
#   A_1 = [-3, 1]   g_1 = [ 1, 0]
A = np.array([[[[1.0, 2.0]], [[-3.0, 1.0]]]])
G = np.array([[[[-1.0, 3.0]], [[1.0, 0.0]]]])


def test_gradcam_golden():
    # w_0 = mean(-1, 3) = 1, w_1 = mean(1, 0) = 0.5
    # M = 1 * [1, 2] + 0.5 * [-3, 1] = [-0.5, 2.5]   (sign kept: no ReLU)
    np.testing.assert_allclose(m.gradcam(A, G), [[[-0.5, 2.5]]], atol=1e-15)


def test_hirescam_golden():
    # position 0: -1 * 1 + 1 * -3 = -4; position 1: 3 * 2 + 0 * 1 = 6
    np.testing.assert_allclose(m.hirescam(A, G), [[[-4.0, 6.0]]], atol=1e-15)


def test_layercam_golden():
    # ReLU(g_0) = [0, 3], ReLU(g_1) = [1, 0]
    # position 0: 0 * 1 + 1 * -3 = -3; position 1: 3 * 2 + 0 * 1 = 6
    np.testing.assert_allclose(m.layercam(A, G), [[[-3.0, 6.0]]], atol=1e-15)


def test_xgradcam_golden():
    # sum A_0 = 3:  w_0 = (1 * -1 + 2 * 3) / 3 = 5/3
    # sum A_1 = -2: w_1 = (-3 * 1 + 1 * 0) / -2 = 3/2
    # M = 5/3 * [1, 2] + 3/2 * [-3, 1] = [5/3 - 9/2, 10/3 + 3/2] = [-17/6, 29/6]
    np.testing.assert_allclose(m.xgradcam(A, G), [[[-17 / 6, 29 / 6]]], atol=1e-14)


def test_gradcam_pp_golden_with_zero_denominator():
    # channel 0, sum A = 3:
    #   position 0: g = -1 -> ReLU(g) = 0 -> contributes 0
    #   position 1: g = 3: alpha = 9 / (2 * 9 + 3 * 27) = 9 / 99 = 1/11; times ReLU(3) -> 3/11
    #   w_0 = 3/11
    # channel 1, sum A = -2:
    #   position 0: g = 1: denominator 2 * 1 + (-2) * 1 = 0 -> alpha = 0 (guard) -> 0
    #   position 1: g = 0: denominator 0 -> alpha = 0 -> 0
    #   w_1 = 0
    # M = 3/11 * [1, 2] = [3/11, 6/11]
    out = m.gradcam_pp(A, G)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [[[3 / 11, 6 / 11]]], atol=1e-15)


def test_xgradcam_zero_sum_channel_gets_zero_weight():
    # channel 1 sums to 0 (1 + -1): its weight is 0 instead of a division by zero;
    # channel 0: sum 4, w_0 = (1 * 2 + 3 * 2) / 4 = 2 -> M = 2 * [1, 3] = [2, 6]
    a = np.array([[[[1.0, 3.0]], [[1.0, -1.0]]]])
    g = np.array([[[[2.0, 2.0]], [[5.0, 7.0]]]])
    np.testing.assert_allclose(m.xgradcam(a, g), [[[2.0, 6.0]]], atol=1e-15)


def test_cam_golden():
    # W (3 classes x 2 channels); class 1 row = [0.5, -2]
    # M = 0.5 * [1, 2] - 2 * [-3, 1] = [0.5 + 6, 1 - 2] = [6.5, -1]
    w = np.array([[1.0, 0.0], [0.5, -2.0], [2.0, 1.0]])
    np.testing.assert_allclose(m.cam(A, w, [1]), [[[6.5, -1.0]]], atol=1e-15)
    # class 2 row = [2, 1]: [2 - 3, 4 + 1] = [-1, 5]
    np.testing.assert_allclose(m.cam(A, w, np.array([2])), [[[-1.0, 5.0]]], atol=1e-15)


def test_eigencam_golden_rank_one():
    # K=2, h=1, w=3. A_0 = [1, 2, 3], A_1 = [2, 4, 6]; centred over positions:
    # X = [[-1, -2], [0, 0], [1, 2]] (positions x channels), rank 1, v = (1, 2)/sqrt(5),
    # X v = [-5, 0, 5]/sqrt(5) = [-sqrt(5), 0, sqrt(5)]. The channel-mean map [1.5, 3, 4.5]
    # increases, so the sign making the correlation positive is +.
    a = np.array([[[[1.0, 2.0, 3.0]], [[2.0, 4.0, 6.0]]]])
    s5 = np.sqrt(5.0)
    np.testing.assert_allclose(m.eigencam(a), [[[-s5, 0.0, s5]]], atol=1e-12)
    # negated activations: channel-mean map decreases -> the map flips.
    np.testing.assert_allclose(m.eigencam(-a), [[[s5, 0.0, -s5]]], atol=1e-12)


def test_eigencam_golden_more_channels_than_positions():
    # Same with the two channels repeated (K=4 >= h*w=3, the other Gram branch):
    # v = (1, 2, 1, 2)/sqrt(10), X v = [-10, 0, 10]/sqrt(10) = [-sqrt(10), 0, sqrt(10)]
    a = np.array([[[[1.0, 2.0, 3.0]], [[2.0, 4.0, 6.0]]] * 2]).reshape(1, 4, 1, 3)
    s10 = np.sqrt(10.0)
    np.testing.assert_allclose(m.eigencam(a), [[[-s10, 0.0, s10]]], atol=1e-12)


def test_eigencam_constant_over_positions_gives_zeros():
    a = np.ones((2, 3, 4, 4), dtype=np.float32) * np.arange(3, dtype=np.float32)[:, None, None]
    out = m.eigencam(a)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, 0.0)


def test_eigencam_zero_correlation_uses_largest_entry():
    # Centred map of A_0 = [1, 0, -1, 0] ... with channel-mean map constant -> correlation 0:
    # A_0 = [1, -1], A_1 = [-1, 1]: mean map [0, 0]; X = [[1, -1], [-1, 1]], v = (1, -1)/sqrt2,
    # X v = [sqrt2, -sqrt2] up to sign; the entry of largest magnitude (the first) is made > 0.
    a = np.array([[[[1.0, -1.0]], [[-1.0, 1.0]]]])
    np.testing.assert_allclose(m.eigencam(a), [[[np.sqrt(2), -np.sqrt(2)]]], atol=1e-12)


def test_scorecam_combine_golden_and_stable():
    # scores (0, ln 3): softmax = (1/4, 3/4); A_0 = [4, 0], A_1 = [0, 4] -> [1, 3]
    a = np.array([[[[4.0, 0.0]], [[0.0, 4.0]]]])
    np.testing.assert_allclose(m.scorecam_combine(a, [[0.0, np.log(3)]]), [[[1, 3]]], atol=1e-12)
    # the same scores shifted by 1000: exp would overflow without the max subtraction
    out = m.scorecam_combine(a, [[1000.0, 1000.0 + np.log(3)]])
    np.testing.assert_allclose(out, [[[1, 3]]], atol=1e-9)


def test_ablationcam_combine_golden():
    # y = 2, y_k = (1, 3): w = ((2 - 1)/2, (2 - 3)/2) = (0.5, -0.5)
    # A_0 = [4, 0], A_1 = [0, 4] -> [2, -2]
    a = np.array([[[[4.0, 0.0]], [[0.0, 4.0]]]])
    np.testing.assert_allclose(m.ablationcam_combine(a, [[1.0, 3.0]], [2.0]), [[[2, -2]]])


def test_ablationcam_zero_base_score_names_image():
    a = np.ones((3, 2, 1, 2))
    with pytest.raises(ValueError, match="image 1"):
        m.ablationcam_combine(a, np.ones((3, 2)), [1.0, 0.0, 2.0])
    calls = []
    with pytest.raises(ValueError, match="image 2"):
        m.ablationcam(a, lambda n, ch: calls.append(n) or np.ones(len(ch)), [1.0, 1.0, 0.0])
    assert calls == []  # refused before any model call


# --------------------------------------------------------------- exactness: GAP + linear head


def _gap_linear(seed=0, n=3, k=6, h=4, w=5, c=4):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, k, h, w))
    weights = rng.standard_normal((c, k))
    classes = rng.integers(0, c, n)
    # y = sum_k W[c, k] mean_ij A_k  ->  dy/dA_k^ij = W[c, k] / (h w) at every position
    g = np.broadcast_to(weights[classes][:, :, None, None] / (h * w), a.shape).copy()
    return a, g, weights, classes


def test_gradcam_equals_cam_over_hw_for_gap_linear_head():
    a, g, weights, classes = _gap_linear()
    hw = a.shape[2] * a.shape[3]
    ref = m.cam(a, weights, classes)
    np.testing.assert_allclose(m.gradcam(a, g), ref / hw, atol=1e-12)
    np.testing.assert_allclose(
        np.maximum(m.gradcam(a, g), 0), np.maximum(ref, 0) / hw, atol=1e-12
    )
    np.testing.assert_allclose(m.hirescam(a, g), ref / hw, atol=1e-12)


def test_gradcam_equals_cam_in_float32():
    a, g, weights, classes = _gap_linear(seed=5)
    a, g, weights = a.astype(np.float32), g.astype(np.float32), weights.astype(np.float32)
    ref = m.cam(a, weights, classes)
    assert ref.dtype == np.float32 and m.gradcam(a, g).dtype == np.float32
    np.testing.assert_allclose(m.gradcam(a, g), ref / 20, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- loop oracles


def _loop(a, g, weight):
    """out[i] = sum_c weight(a[i, c], g[i, c]) * a[i, c], one image and channel at a time."""
    n, k, h, w = a.shape
    out = np.zeros((n, h, w))
    for i in range(n):
        for c in range(k):
            out[i] += weight(a[i, c], g[i, c]) * a[i, c]
    return out


def _loop_gradcam(a, g):
    return _loop(a, g, lambda ac, gc: gc.mean())


def _gradcam_pp_weight(ac, gc):
    s = ac.sum()
    wk = 0.0
    for gv in gc.ravel():
        den = 2 * gv**2 + s * gv**3
        alpha = gv**2 / den if den != 0 else 0.0
        wk += alpha * max(gv, 0.0)
    return wk


def _loop_gradcam_pp(a, g):
    return _loop(a, g, _gradcam_pp_weight)


def _loop_xgradcam(a, g):
    return _loop(a, g, lambda ac, gc: (ac * gc).sum() / ac.sum() if ac.sum() != 0 else 0.0)


def _loop_layercam(a, g):
    return _loop(a, g, lambda ac, gc: np.maximum(gc, 0))


def _loop_hirescam(a, g):
    return _loop(a, g, lambda ac, gc: gc)


ORACLES = [
    (m.gradcam, _loop_gradcam),
    (m.gradcam_pp, _loop_gradcam_pp),
    (m.xgradcam, _loop_xgradcam),
    (m.layercam, _loop_layercam),
    (m.hirescam, _loop_hirescam),
]


def _random_layer(seed, n=3, k=5, h=3, w=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.standard_normal((n, k, h, w)), 0)  # post-ReLU-like activations
    a[0, 1] = 0.0  # one dead channel (zero sums, zero denominators)
    g = rng.standard_normal((n, k, h, w))
    return a.astype(dtype), g.astype(dtype)


@pytest.mark.parametrize("fn,oracle", ORACLES, ids=[f.__name__ for f, _ in ORACLES])
def test_gradient_methods_match_loop(fn, oracle):
    a, g = _random_layer(1)
    np.testing.assert_allclose(fn(a, g), oracle(a, g), rtol=1e-10, atol=1e-12)
    # signed activations too
    rng = np.random.default_rng(2)
    a2 = rng.standard_normal(a.shape)
    np.testing.assert_allclose(fn(a2, g), oracle(a2, g), rtol=1e-10, atol=1e-12)


def test_cam_matches_loop():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 6, 3, 3))
    w = rng.standard_normal((5, 6))
    classes = np.array([4, 0, 0, 2])
    want = np.zeros((4, 3, 3))
    for i in range(4):
        for c in range(6):
            want[i] += w[classes[i], c] * a[i, c]
    np.testing.assert_allclose(m.cam(a, w, classes), want, atol=1e-12)


def _loop_eigencam(a):
    out = []
    for img in a:
        k, h, w = img.shape
        x = img.reshape(k, h * w).T
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        p = x @ vt[0]
        mean_map = img.reshape(k, -1).mean(axis=0)
        corr = np.dot(p, mean_map - mean_map.mean())
        if corr < 0 or (corr == 0 and p[np.argmax(np.abs(p))] < 0):
            p = -p
        out.append(p.reshape(h, w))
    return np.stack(out)


@pytest.mark.parametrize("k,h,w", [(6, 3, 4), (20, 3, 3), (3, 5, 5)])
def test_eigencam_matches_svd_loop(k, h, w):
    rng = np.random.default_rng(k)
    a = rng.standard_normal((3, k, h, w))
    np.testing.assert_allclose(m.eigencam(a), _loop_eigencam(a), atol=1e-9)


def test_combines_match_loop():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((2, 4, 3, 2))
    s = rng.standard_normal((2, 4)) * 3
    base = np.array([2.0, -1.5])
    want_s, want_a = np.zeros((2, 3, 2)), np.zeros((2, 3, 2))
    for i in range(2):
        e = [np.exp(v) for v in s[i]]
        for c in range(4):
            want_s[i] += e[c] / sum(e) * a[i, c]
            want_a[i] += (base[i] - s[i, c]) / base[i] * a[i, c]
    np.testing.assert_allclose(m.scorecam_combine(a, s), want_s, atol=1e-12)
    np.testing.assert_allclose(m.ablationcam_combine(a, s, base), want_a, atol=1e-12)


ALL_LAYER_FNS = [
    ("gradcam", lambda a, g: m.gradcam(a, g)),
    ("gradcam_pp", lambda a, g: m.gradcam_pp(a, g)),
    ("xgradcam", lambda a, g: m.xgradcam(a, g)),
    ("layercam", lambda a, g: m.layercam(a, g)),
    ("hirescam", lambda a, g: m.hirescam(a, g)),
    ("eigencam", lambda a, g: m.eigencam(a)),
    ("cam", lambda a, g: m.cam(a, g[0, :, 0, :2].T, [1] * len(a))),
    ("scorecam_combine", lambda a, g: m.scorecam_combine(a, g[:, :, 0, 0])),
    ("ablationcam_combine", lambda a, g: m.ablationcam_combine(a, g[:, :, 0, 0], a[:, 0, 0, 0] + 1)),
]


@pytest.mark.parametrize("name,fn", ALL_LAYER_FNS, ids=[n for n, _ in ALL_LAYER_FNS])
def test_batch_equals_each_image_alone(name, fn):
    a, g = _random_layer(7, dtype=np.float32)
    batch = fn(a, g)
    assert batch.dtype == np.float32 and batch.shape == (3, 3, 4)
    for i in range(3):
        alone = fn(a[i : i + 1], g[i : i + 1] if name != "cam" else g)[0]
        np.testing.assert_allclose(batch[i], alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,fn", ALL_LAYER_FNS, ids=[n for n, _ in ALL_LAYER_FNS])
def test_read_only_inputs_and_dtypes(name, fn):
    a, g = _random_layer(8, dtype=np.float32)
    ra, rg = readonly(a, g)
    out = fn(ra, rg)
    np.testing.assert_array_equal(ra, a)
    np.testing.assert_array_equal(rg, g)
    assert out.dtype == np.float32
    assert fn(a.astype(np.float64), g.astype(np.float64)).dtype == np.float64
    assert fn(a.astype(np.float16), g.astype(np.float16)).dtype == np.float32


# --------------------------------------------------------------------- Score-CAM, Ablation-CAM


def _fake_masked_score(a_shape, input_size):
    """A linear model: score(n, mask) = (n + 1) * mean(mask * ramp) + 0.1 * n."""
    ramp = np.linspace(0, 1, input_size[0] * input_size[1]).reshape(input_size)
    seen = []

    def score(n, masks):
        seen.append((n, masks.shape, masks.dtype))
        return (n + 1) * (masks * ramp).mean(axis=(1, 2)) + 0.1 * n

    return score, ramp, seen


def _loop_scorecam(a, ramp, size):
    n, k = a.shape[:2]
    scores = np.zeros((n, k))
    for i in range(n):
        for c in range(k):
            up = upsample(a[i, c], size).astype(np.float64)
            lo, hi = up.min(), up.max()
            mask = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
            scores[i, c] = (i + 1) * (mask * ramp).mean() + 0.1 * i
    return m.scorecam_combine(a, scores)


def test_scorecam_matches_loop_and_chunking_invariant():
    a, _ = _random_layer(9, n=2, k=10, h=3, w=3, dtype=np.float32)
    size = (12, 10)
    results = []
    for bs in (1, 7, 64):
        score, ramp, seen = _fake_masked_score(a.shape, size)
        results.append(m.scorecam(a, score, input_size=size, batch_size=bs, progress=False))
        chunk_sizes = [s[1][0] for s in seen]
        assert [s[0] for s in seen] == sorted(s[0] for s in seen)
        assert sum(chunk_sizes) == 2 * 10 and max(chunk_sizes) == min(bs, 10)
        assert all(s[1][1:] == size and s[2] == np.float32 for s in seen)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    assert results[0].dtype == np.float32
    np.testing.assert_allclose(results[0], _loop_scorecam(a, ramp, size), rtol=1e-5, atol=1e-6)


def test_scorecam_constant_channel_gives_zero_mask():
    a = np.zeros((1, 2, 2, 2), dtype=np.float32)
    a[0, 1] = [[0, 1], [2, 3]]  # channel 0 constant
    masks_seen = []

    def score(n, masks):
        masks_seen.append(masks.copy())
        return masks.sum(axis=(1, 2))

    m.scorecam(a, score, input_size=4, batch_size=2)
    assert np.all(masks_seen[0][0] == 0)
    assert masks_seen[0][1].min() == 0 and masks_seen[0][1].max() == 1


def test_scorecam_progress_bar_runs(capsys):
    a, _ = _random_layer(10, n=1, k=4, h=2, w=2)
    out = m.scorecam(a, lambda n, mk: mk.mean((1, 2)), input_size=4, batch_size=1, progress=True)
    assert out.shape == (1, 2, 2)


def _loop_ablation_fake(a, head):
    """A GAP + linear head: y = sum_k head_k mean(A_k); zeroing k removes head_k mean(A_k)."""
    means = a.mean(axis=(2, 3))
    base = (means * head).sum(axis=1)

    def score_ablated(n, channels):
        return base[n] - head[channels] * means[n, channels]

    return score_ablated, base, means


def test_ablationcam_matches_loop_and_chunking_invariant():
    a, _ = _random_layer(11, n=3, k=9, dtype=np.float32)
    head = np.random.default_rng(12).uniform(0.5, 1.5, 9)
    score, base, means = _loop_ablation_fake(a.astype(np.float64), head)
    calls = []

    def recording(n, channels):
        calls.append((n, channels.copy()))
        assert channels.dtype == np.int64 and channels.ndim == 1
        return score(n, channels)

    outs = [m.ablationcam(a, recording, base, batch_size=bs) for bs in (1, 4, 64)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    # each of the 3 runs asked for every (image, channel) exactly once
    per_run = [calls[: 27], calls[27 : 27 + 9], calls[36:]]
    for run in per_run:
        asked = sorted((n, int(c)) for n, chs in run for c in chs)
        assert asked == [(n, c) for n in range(3) for c in range(9)]
    want = np.zeros((3, 3, 4))
    for i in range(3):
        for c in range(9):
            want[i] += head[c] * means[i, c] / base[i] * a[i, c]
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (lambda n, x: np.ones(len(x) + 1), ValueError, "one score per item"),
        (lambda n, x: np.ones((len(x), 1)), ValueError, "one score per item"),
        (lambda n, x: np.full(len(x), np.nan), ValueError, "non-finite"),
        (lambda n, x: np.array(["a"] * len(x)), TypeError, "numeric"),
    ],
)
def test_bad_score_callables(bad, exc, match):
    a, _ = _random_layer(13, n=1, k=3, h=2, w=2)
    with pytest.raises(exc, match=match):
        m.scorecam(a, bad, input_size=4)
    with pytest.raises(exc, match=match):
        m.ablationcam(a, bad, [1.0])


def test_perturbation_bad_options():
    a, _ = _random_layer(14, n=1, k=3, h=2, w=2)
    ok = lambda n, x: np.ones(len(x))  # noqa: E731
    with pytest.raises(TypeError, match="callable"):
        m.scorecam(a, None, input_size=4)
    with pytest.raises(TypeError, match="callable"):
        m.ablationcam(a, 3, [1.0])
    with pytest.raises(ValueError, match="batch_size"):
        m.scorecam(a, ok, input_size=4, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        m.ablationcam(a, ok, [1.0], batch_size=2.0)
    with pytest.raises(TypeError, match="progress"):
        m.scorecam(a, ok, input_size=4, progress="yes")
    with pytest.raises(ValueError, match="input_size"):
        m.scorecam(a, ok, input_size=0)
    with pytest.raises(ValueError, match="batch sizes differ"):
        m.ablationcam(a, ok, [1.0, 2.0])


# -------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", GRADIENT_METHODS, ids=lambda f: f.__name__)
def test_gradient_methods_bad_input(fn):
    a, g = _random_layer(15)
    with pytest.raises(ValueError, match=r"\(N, K, h, w\); got \(3, 5, 3\)"):
        fn(a[:, :, :, 0], g)
    with pytest.raises(ValueError, match="batch sizes differ"):
        fn(a, g[:2])
    with pytest.raises(ValueError, match=r"shape of `activations` \(3, 5, 3, 4\); got \(3, 5, 4, 3\)"):
        fn(a, g.transpose(0, 1, 3, 2))
    with pytest.raises(ValueError, match="empty"):
        fn(a[:0], g[:0])
    bad = g.copy()
    bad[2, 1, 0, 3] = np.nan
    with pytest.raises(ValueError, match=r"`gradients`.*\(2, 1, 0, 3\)"):
        fn(a, bad)
    bad = a.copy()
    bad[0, 0, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"`activations`.*\(0, 0, 1, 1\)"):
        fn(bad, g)
    with pytest.raises(TypeError, match="dtype"):
        fn(a.astype(complex), g)
    with pytest.raises(TypeError):
        fn("activations", g)


def test_single_input_methods_bad_input():
    a, _ = _random_layer(16)
    for fn in (m.eigencam, lambda x: m.scorecam_combine(x, np.zeros((3, 5)))):
        with pytest.raises(ValueError, match=r"got \(5, 3, 4\)"):
            fn(a[0])
        bad = a.copy()
        bad[1, 2, 2, 3] = np.nan
        with pytest.raises(ValueError, match=r"`activations`.*\(1, 2, 2, 3\)"):
            fn(bad)
        with pytest.raises(TypeError, match="dtype"):
            fn(a.astype(object))
    with pytest.raises(ValueError, match="empty"):
        m.eigencam(a[:0])
    with pytest.raises(ValueError, match=r"`scores` must have shape \(3, 5\)"):
        m.scorecam_combine(a, np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"`ablated_scores` must have shape \(3, 5\)"):
        m.ablationcam_combine(a, np.zeros((2, 5)), np.ones(3))
    with pytest.raises(ValueError, match="batch sizes differ"):
        m.ablationcam_combine(a, np.zeros((3, 5)), np.ones(2))
    with pytest.raises(ValueError, match="`scores`"):
        m.scorecam_combine(a, np.full((3, 5), np.inf))


def test_cam_bad_input():
    a, _ = _random_layer(17)
    w = np.ones((4, 5))
    with pytest.raises(ValueError, match=r"`classes` must be indices in \[0, 4\); got 4 for image 1"):
        m.cam(a, w, [0, 4, 1])
    with pytest.raises(ValueError, match="got -1 for image 0"):
        m.cam(a, w, [-1, 0, 1])
    with pytest.raises(ValueError, match="batch sizes differ"):
        m.cam(a, w, [0, 1])
    with pytest.raises(ValueError, match=r"one column per channel.*\(4, 6\)"):
        m.cam(a, np.ones((4, 6)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"`weights` must have shape \(C, K\); got \(5,\)"):
        m.cam(a, np.ones(5), [0, 1, 2])
    with pytest.raises(TypeError, match="`classes`"):
        m.cam(a, w, [True, False, True])
    with pytest.raises(ValueError, match="whole numbers"):
        m.cam(a, w, [0.5, 1, 2])
    bad = w.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"`weights`.*\(3, 4\)"):
        m.cam(a, bad, [0, 1, 2])


# ------------------------------------------------------------------------ Faster Score-CAM
def test_faster_scorecam_scores_only_each_images_top_channels():
    a, _ = _random_layer(11, n=2, k=10, h=3, w=3, dtype=np.float32)
    size = (12, 10)
    score, ramp, seen = _fake_masked_score(a.shape, size)
    out = m.scorecam(a, score, input_size=size, batch_size=3, progress=False, max_n=4)
    assert sum(s[1][0] for s in seen) == 2 * 4  # 4 masks per image instead of 10
    # by hand: the 4 channels of largest spatial std, in channel order, then Score-CAM on them
    expected = []
    for i in range(2):
        std = a[i].reshape(10, -1).astype(np.float64).std(axis=1)
        keep = np.sort(np.argsort(-std, kind="stable")[:4])
        sub = a[i:i + 1, keep]
        _, ramp_i, _ = _fake_masked_score(sub.shape, size)
        full = _loop_scorecam(np.concatenate([sub, sub]), ramp_i, size)  # image index i's score
        expected.append(full[i])
    np.testing.assert_allclose(out, np.stack(expected), rtol=1e-5, atol=1e-6)


def test_faster_scorecam_keeps_one_channel_and_breaks_ties_low():
    a = np.zeros((1, 3, 2, 2), dtype=np.float32)
    a[0, 0] = [[0, 1], [0, 1]]
    a[0, 1] = [[5, 0], [0, 0]]  # the largest spread
    a[0, 2] = [[1, 0], [1, 0]]  # the same spread as channel 0
    score = lambda n, masks: masks.mean(axis=(1, 2))  # noqa: E731
    np.testing.assert_array_equal(m.scorecam(a, score, input_size=4, max_n=1)[0], a[0, 1])
    two = m.scorecam(a, score, input_size=4, max_n=2)
    np.testing.assert_allclose(two, m.scorecam_combine(a[:, :2], score(0, np.stack([
        normalize(upsample(a[0, :2], 4))[j] for j in range(2)]))[None]), rtol=1e-6)


def test_faster_scorecam_with_every_channel_is_scorecam():
    a, _ = _random_layer(12, n=2, k=6, h=3, w=3, dtype=np.float32)
    score, _, _ = _fake_masked_score(a.shape, (8, 8))
    ref = m.scorecam(a, score, input_size=8)
    for n in (6, 7, 100):
        np.testing.assert_array_equal(m.scorecam(a, score, input_size=8, max_n=n), ref)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_faster_scorecam_max_n_is_checked(bad):
    a = np.ones((1, 2, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="`max_n` must be None or a positive int"):
        m.scorecam(a, lambda n, mk: mk.mean((1, 2)), input_size=4, max_n=bad)
