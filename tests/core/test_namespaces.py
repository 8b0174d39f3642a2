"""The core's array functions on other array libraries: NumPy's results, in the library given.

Every array function of the core (the methods, ``normalize``/``fuse``, ``upsample``, the map side
of the thresholds, ``box_iou``) is run on ``array-api-strict`` arrays (the standard and nothing
more) and on torch CPU tensors (the library of the GPU path) and compared with its result on the
same values as NumPy arrays: float32 within 1e-5 relative, the same shapes and dtypes, and the
result of the library that came in. Hypothesis properties of the maps run over the namespaces too.
CUDA tensors are compared with CPU tensors when a GPU is present.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cam_core import boxes as B
from cam_core import maps as P
from cam_core import methods as M
from cam_core import resize as R
from cam_core import threshold as T
from cam_core._validate import array_namespace, to_numpy

xps = pytest.importorskip("array_api_strict")

NAMESPACES = ["array_api_strict", "torch"]


def _module(name):
    if name == "torch":
        return pytest.importorskip("torch")
    return xps


def _convert(name):
    """A function turning NumPy arrays into arrays of library ``name`` (on the CPU)."""
    lib = _module(name)
    if name == "torch":
        return lambda a: lib.asarray(np.array(a))
    return lambda a: lib.asarray(np.array(a))


def _kind(name):
    return _module(name).Tensor if name == "torch" else type(xps.asarray(0.0))


def _dtype_name(x) -> str:
    return str(x.dtype).rsplit(".", 1)[-1]


def _same(out, ref, name, *, rtol=1e-5, exact=False):
    """``out`` (library ``name``) equals the NumPy ``ref``: kind, shape, dtype, values."""
    assert isinstance(out, _kind(name)), type(out)
    assert tuple(out.shape) == ref.shape
    assert _dtype_name(out) == ref.dtype.name
    got = to_numpy(out)
    if exact or ref.dtype == bool:
        np.testing.assert_array_equal(got, ref)
    else:
        scale = max(float(np.max(np.abs(ref))), 1e-30) if ref.size else 1.0
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


def _layer(seed: int, shape=(3, 6, 5, 4), dtype=np.float32):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape).astype(dtype)
    g = (rng.normal(size=shape) * 0.1).astype(dtype)
    return a, g


GRADIENT_METHODS = ["gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam"]


@pytest.mark.parametrize("name", NAMESPACES)
@pytest.mark.parametrize("method", GRADIENT_METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_methods_give_numpys_maps(name, method, dtype):
    conv = _convert(name)
    a, g = _layer(1, dtype=dtype)
    ref = getattr(M, method)(a, g)
    _same(getattr(M, method)(conv(a), conv(g)), ref, name)


@pytest.mark.parametrize("name", NAMESPACES)
def test_gradcam_pp_with_eps_gives_numpys_maps(name):
    conv = _convert(name)
    a, g = _layer(2)
    g = g * 1e-3  # squared gradients near 1e-7: the epsilon matters
    ref = M.gradcam_pp(a, g, eps=1e-6)
    assert not np.allclose(ref, M.gradcam_pp(a, g))
    _same(M.gradcam_pp(conv(a), conv(g), eps=1e-6), ref, name)


@pytest.mark.parametrize("name", NAMESPACES)
@pytest.mark.parametrize("shape", [(2, 9, 2, 3), (2, 3, 4, 5)])  # hw <= K and hw > K
def test_eigencam_gives_numpys_maps(name, shape):
    conv = _convert(name)
    a, _ = _layer(3, shape=shape)
    _same(M.eigencam(conv(a)), M.eigencam(a), name)


@pytest.mark.parametrize("name", NAMESPACES)
def test_cam_gives_numpys_maps_with_weights_of_either_kind(name):
    conv = _convert(name)
    a, _ = _layer(4)
    w = np.random.default_rng(4).normal(size=(7, 6)).astype(np.float32)
    classes = np.array([0, 6, 3])
    ref = M.cam(a, w, classes)
    _same(M.cam(conv(a), conv(w), classes), ref, name)
    _same(M.cam(conv(a), w, classes), ref, name)  # NumPy weights are moved to the activations


@pytest.mark.parametrize("name", NAMESPACES)
def test_combinations_give_numpys_maps(name):
    conv = _convert(name)
    a, _ = _layer(5)
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(3, 6))
    base = rng.normal(size=3) + 5
    _same(M.scorecam_combine(conv(a), conv(scores)), M.scorecam_combine(a, scores), name)
    _same(M.scorecam_combine(conv(a), scores), M.scorecam_combine(a, scores), name)
    _same(M.ablationcam_combine(conv(a), conv(scores), base),
          M.ablationcam_combine(a, scores, base), name)


@pytest.mark.parametrize("name", NAMESPACES)
def test_perturbation_methods_build_masks_and_channels_in_the_library(name):
    conv = _convert(name)
    a, _ = _layer(6)
    seen = []

    def score_masked(n, masks):
        seen.append(masks)
        return to_numpy(masks).astype(np.float64).mean(axis=(1, 2)) * (n + 1)

    def score_ablated(n, channels):
        seen.append(channels)
        return to_numpy(channels).astype(np.float64) * 0.1 + n + 1

    ref = M.scorecam(a, score_masked, input_size=(9, 7), batch_size=4)
    seen.clear()
    _same(M.scorecam(conv(a), score_masked, input_size=(9, 7), batch_size=4), ref, name)
    assert seen and all(isinstance(m, _kind(name)) and _dtype_name(m) == "float32" for m in seen)
    ref = M.ablationcam(a, score_ablated, [1.0, 2.0, 3.0], batch_size=4)
    seen.clear()
    _same(M.ablationcam(conv(a), score_ablated, [1.0, 2.0, 3.0], batch_size=4), ref, name)
    assert seen and all(isinstance(c, _kind(name)) and _dtype_name(c) == "int64" for c in seen)


@pytest.mark.parametrize("name", NAMESPACES)
@pytest.mark.parametrize("relu", [False, True])
def test_normalize_gives_numpys_maps(name, relu):
    conv = _convert(name)
    m = np.random.default_rng(7).normal(size=(4, 6, 5)).astype(np.float32)
    m[2] = 1.5  # a constant map: zeros
    _same(P.normalize(conv(m), relu=relu), P.normalize(m, relu=relu), name)


@pytest.mark.parametrize("name", NAMESPACES)
def test_normalize_halves_an_overflowing_range_like_numpy(name):
    conv = _convert(name)
    m = np.array([[[-3e38, 3e38], [0, 1]], [[0, 1], [2, 3]]], dtype=np.float32)
    _same(P.normalize(conv(m)), P.normalize(m), name)


@pytest.mark.parametrize("name", NAMESPACES)
@pytest.mark.parametrize("how", ["mean", "max"])
def test_fuse_gives_numpys_maps(name, how):
    conv = _convert(name)
    layers = np.random.default_rng(8).random((3, 2, 5, 6)).astype(np.float32)
    ref = P.fuse(list(layers), how=how)
    _same(P.fuse([conv(m) for m in layers], how=how), ref, name)
    _same(P.fuse(conv(layers), how=how), ref, name)


@pytest.mark.parametrize("name", NAMESPACES)
@pytest.mark.parametrize("method", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("size", [(17, 9), (3, 4)])
def test_upsample_gives_numpys_maps(name, method, size):
    conv = _convert(name)
    m = np.random.default_rng(9).normal(size=(3, 7, 5)).astype(np.float32)
    _same(R.upsample(conv(m), size, method=method), R.upsample(m, size, method=method), name)
    _same(R.upsample(conv(m[0]), size, method=method), R.upsample(m[0], size, method=method),
          name)
    m64 = m.astype(np.float64)
    _same(R.upsample(conv(m64), size, method=method), R.upsample(m64, size, method=method), name)


@pytest.mark.parametrize("name", NAMESPACES)
def test_upsample_out_is_numpy_only(name):
    conv = _convert(name)
    with pytest.raises(TypeError, match="`out`"):
        R.upsample(conv(np.zeros((1, 2, 2), np.float32)), 4, out=np.zeros((1, 4, 4), np.float32))


@pytest.mark.parametrize("name", NAMESPACES)
def test_thresholds_give_numpys_masks(name):
    conv = _convert(name)
    m = P.normalize(np.random.default_rng(10).normal(size=(3, 8, 9)).astype(np.float32))
    _same(T.threshold_fraction(conv(m), 0.37), T.threshold_fraction(m, 0.37), name)
    _same(T.threshold_fraction(conv(m[1]), 0.5), T.threshold_fraction(m[1], 0.5), name)
    taus = np.linspace(0, 1, 11)
    _same(T.threshold_sweep(conv(m), taus), T.threshold_sweep(m, taus), name)
    for method in ("fraction", "otsu", "percentile"):
        _same(T.binarize(conv(m), method=method), T.binarize(m, method=method), name)
    _same(T.threshold_otsu(conv(m)), T.threshold_otsu(m), name, exact=True)
    _same(T.threshold_percentile(conv(m), 70), T.threshold_percentile(m, 70), name, exact=True)
    assert T.threshold_otsu(conv(m[0])) == T.threshold_otsu(m[0])  # one map: a float


@pytest.mark.parametrize("name", NAMESPACES)
def test_box_iou_gives_numpys_ious(name):
    conv = _convert(name)
    b1 = np.array([[0, 0, 3, 3], [1, 1, 5, 4], [2, 2, 2, 2]])
    b2 = np.array([[0, 0, 3, 3], [2, 0, 6, 3]], dtype=np.float32)
    ref = B.box_iou(b1, b2)
    _same(B.box_iou(conv(b1), conv(b2)), ref, name, exact=True)
    _same(B.box_iou(conv(b1), b2), ref, name, exact=True)
    with pytest.raises(ValueError, match=r"row 1: x1 < x0"):
        B.box_iou(conv(np.array([[0, 0, 1, 1], [3, 0, 2, 1]])), b2)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        B.box_iou(conv(np.zeros((2, 3))), b2)


@pytest.mark.parametrize("name", NAMESPACES)
def test_dtype_rules_and_errors_hold_in_the_library(name):
    conv = _convert(name)
    a, g = _layer(11)
    # integers become float64, float16 is computed in float32
    assert _dtype_name(M.gradcam(conv(a.astype(np.int32)), conv(g))) == "float64"
    if name == "torch":  # array-api-strict has no float16
        assert _dtype_name(P.normalize(conv(a[:, 0].astype(np.float16)))) == "float32"
    bad = a.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"`activations` must be finite; got nan at index \(1, 2, 3, 0\)"):
        M.gradcam(conv(bad), conv(g))
    with pytest.raises(ValueError, match=r"`gradients` must have shape \(N, K, h, w\)"):
        M.gradcam(conv(a), conv(g[0]))
    with pytest.raises(ValueError, match="non-zero"):
        M.ablationcam_combine(conv(a), conv(g[:, :, 0, 0]), conv(np.array([1.0, 0.0, 2.0])))


def test_arrays_of_two_libraries_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different libraries"):
        array_namespace(torch.zeros(2), xps.zeros(2))


def test_numpy_input_gives_numpy_and_lists_still_work():
    a, g = _layer(12)
    assert isinstance(M.gradcam(a, g), np.ndarray)
    assert isinstance(P.normalize(a[:, 0].tolist()), np.ndarray)
    assert isinstance(B.box_iou([[0, 0, 1, 1]], [[0, 0, 2, 2]]), np.ndarray)


# --------------------------------------------------------------------------- properties


_SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))
_FLOATS32 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@given(st.sampled_from(NAMESPACES), arrays(np.float32, _SHAPES, elements=_FLOATS32),
       st.booleans())
def test_normalize_properties_hold_in_every_namespace(name, maps, relu):
    conv = _convert(name)
    out = P.normalize(conv(maps), relu=relu)
    assert isinstance(out, _kind(name)) and _dtype_name(out) == "float32"
    host = to_numpy(out)
    assert np.all((host >= 0) & (host <= 1))
    for n in range(len(host)):
        assert (host[n].min() == 0 and host[n].max() == 1) or np.all(host[n] == 0)
    np.testing.assert_array_equal(to_numpy(P.normalize(out)), host)  # idempotent
    np.testing.assert_array_equal(host, P.normalize(maps, relu=relu))  # NumPy's numbers


@given(st.sampled_from(NAMESPACES), _SHAPES, st.integers(1, 12), st.integers(1, 12),
       st.sampled_from(["bilinear", "bicubic", "nearest"]), st.floats(-100, 100))
def test_upsample_keeps_a_constant_in_every_namespace(name, shape, height, width, method, c):
    conv = _convert(name)
    maps = np.full(shape, c, dtype=np.float64)
    out = to_numpy(R.upsample(conv(maps), (height, width), method=method))
    assert out.shape == (shape[0], height, width)
    np.testing.assert_allclose(out, c, rtol=1e-12, atol=1e-12)


@given(st.sampled_from(NAMESPACES), arrays(np.float32, _SHAPES, elements=st.floats(0, 1, width=32)),
       st.floats(0, 1))
def test_fraction_masks_match_numpy_in_every_namespace(name, maps, fraction):
    conv = _convert(name)
    got = to_numpy(T.threshold_fraction(conv(maps), fraction))
    np.testing.assert_array_equal(got, T.threshold_fraction(maps, fraction))


@given(st.sampled_from(NAMESPACES),
       arrays(np.int64, st.tuples(st.integers(1, 5), st.just(4)), elements=st.integers(0, 20)),
       arrays(np.int64, st.tuples(st.integers(1, 5), st.just(4)), elements=st.integers(0, 20)))
def test_box_iou_in_unit_interval_in_every_namespace(name, b1, b2):
    conv = _convert(name)
    b1 = np.concatenate([np.minimum(b1[:, :2], b1[:, 2:]), np.maximum(b1[:, :2], b1[:, 2:])], 1)
    b2 = np.concatenate([np.minimum(b2[:, :2], b2[:, 2:]), np.maximum(b2[:, :2], b2[:, 2:])], 1)
    got = to_numpy(B.box_iou(conv(b1), conv(b2)))
    assert np.all((got >= 0) & (got <= 1))
    np.testing.assert_array_equal(got, B.box_iou(b1, b2))


# --------------------------------------------------------------------------- CUDA


def _cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch


def test_cuda_tensors_give_the_cpu_results_on_the_gpu():
    torch = _cuda()
    a, g = _layer(13, shape=(4, 32, 7, 7))
    ca, cg = torch.asarray(a), torch.asarray(g)
    ga, gg = ca.cuda(), cg.cuda()
    for method in GRADIENT_METHODS:
        out = getattr(M, method)(ga, gg)
        assert out.device.type == "cuda"
        np.testing.assert_allclose(to_numpy(out), to_numpy(getattr(M, method)(ca, cg)),
                                   rtol=1e-5, atol=1e-5 * float(np.abs(to_numpy(out)).max()))
    out = M.eigencam(ga)
    np.testing.assert_allclose(to_numpy(out), M.eigencam(a), rtol=1e-4,
                               atol=1e-4 * float(np.abs(M.eigencam(a)).max()))
    maps = P.normalize(R.upsample(M.gradcam(ga, gg), 224), relu=True)
    assert maps.device.type == "cuda"
    np.testing.assert_allclose(to_numpy(maps), P.normalize(R.upsample(M.gradcam(a, g), 224),
                                                           relu=True), atol=1e-5)
    np.testing.assert_array_equal(to_numpy(T.threshold_fraction(maps, 0.2)),
                                  T.threshold_fraction(to_numpy(maps), 0.2))


# --------------------------------------------------------------------------- JAX


def test_jax_arrays_give_numpys_float32_results_without_x64():
    """JAX (float64 off by default): float32 arrays stay JAX, sums accumulate in float32."""
    jnp = pytest.importorskip("jax.numpy")
    import warnings

    a, g = _layer(14)
    ja, jg = jnp.asarray(a), jnp.asarray(g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "float64 requested" warnings from the core
        for method in GRADIENT_METHODS:
            out = getattr(M, method)(ja, jg)
            assert type(out).__module__.startswith("jax") and out.dtype == jnp.float32
            ref = getattr(M, method)(a, g)
            np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5,
                                       atol=1e-5 * float(np.abs(ref).max()))
        maps = P.normalize(R.upsample(M.gradcam(ja, jg), (20, 16)), relu=True)
        np.testing.assert_allclose(np.asarray(maps),
                                   P.normalize(R.upsample(M.gradcam(a, g), (20, 16)), relu=True),
                                   atol=1e-5)
        np.testing.assert_array_equal(np.asarray(T.threshold_fraction(maps, 0.3)),
                                      T.threshold_fraction(np.asarray(maps), 0.3))
