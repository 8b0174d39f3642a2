"""Hypothesis properties of cam_core.methods: linearity, batch independence, read-only inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cam_core import methods as m
from tests.conftest import readonly

_DIMS = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4))
_SEEDS = st.integers(0, 2**32 - 1)
_COEF = st.floats(-5, 5, allow_nan=False)


@given(_DIMS, st.integers(1, 4), _COEF, _COEF, _SEEDS)
def test_cam_is_linear_in_the_weights(dims, classes, a, b, seed):
    rng = np.random.default_rng(seed)
    n, k = dims[:2]
    acts = rng.standard_normal(dims)
    w1, w2 = rng.standard_normal((classes, k)), rng.standard_normal((classes, k))
    c = rng.integers(0, classes, n)
    left = m.cam(acts, a * w1 + b * w2, c)
    right = a * m.cam(acts, w1, c) + b * m.cam(acts, w2, c)
    np.testing.assert_allclose(left, right, atol=1e-9)


@given(_DIMS, _COEF, _SEEDS)
def test_gradient_linear_methods_scale_with_gradients(dims, a, seed):
    # Grad-CAM, XGrad-CAM and HiResCAM are linear in g; LayerCAM is for a >= 0.
    rng = np.random.default_rng(seed)
    acts, g = rng.standard_normal(dims), rng.standard_normal(dims)
    for fn in (m.gradcam, m.xgradcam, m.hirescam):
        np.testing.assert_allclose(fn(acts, a * g), a * fn(acts, g), atol=1e-9)
    np.testing.assert_allclose(m.layercam(acts, abs(a) * g), abs(a) * m.layercam(acts, g), atol=1e-9)


@given(_DIMS, _SEEDS)
def test_read_only_inputs_unmodified_and_float32_out(dims, seed):
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal(dims).astype(np.float32)
    g = rng.standard_normal(dims).astype(np.float32)
    ra, rg = readonly(acts, g)
    for fn in (m.gradcam, m.gradcam_pp, m.xgradcam, m.layercam, m.hirescam):
        out = fn(ra, rg)
        assert out.dtype == np.float32 and out.shape == (dims[0], *dims[2:])
        assert np.all(np.isfinite(out))
    assert m.eigencam(ra).dtype == np.float32
    np.testing.assert_array_equal(ra, acts)
    np.testing.assert_array_equal(rg, g)


@given(_DIMS, _SEEDS)
def test_eigencam_sign_rule(dims, seed):
    # the map never correlates negatively with the channel-mean map, and is centred
    acts = np.random.default_rng(seed).standard_normal(dims)
    out = m.eigencam(acts)
    mean_map = acts.mean(axis=1)
    for n in range(dims[0]):
        centred = mean_map[n] - mean_map[n].mean()
        assert np.sum(out[n] * centred) >= -1e-9
        assert abs(out[n].sum()) <= 1e-8 * (1 + np.abs(out[n]).sum())
