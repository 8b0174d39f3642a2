"""Issue 15's methods that need more than one layer's activations and gradients: RefineCAM (a
product of layers), ShapleyCAM (a Hessian-vector product) and FullGrad (every bias's gradient
and the input's), in both adapters: definitions, golden values and torch-vs-Keras equality."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from cam_core.adapters import keras as ka  # noqa: E402
from cam_core.adapters import models_keras as mk  # noqa: E402
from cam_core.adapters import models_torch as mt  # noqa: E402
from cam_core.adapters import torch as ta  # noqa: E402
from cam_core.adapters.transfer import torch_to_keras  # noqa: E402

import cam_core  # noqa: E402
from tests.adapters.test_models import randomize_bn  # noqa: E402

LAYERS_T = ["features.block3", "features.block4"]
LAYERS_K = ["features/block3", "features/block4"]


def _pair(seed=0, classes=10):
    torch.manual_seed(seed)
    tm = randomize_bn(mt.tiny_gap_cnn(classes)).eval()
    return tm, torch_to_keras(tm, mk.tiny_gap_cnn(classes))


def _x(n=3, seed=0, size=64):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


# ------------------------------------------------------------------------------- RefineCAM


def test_refinecam_is_the_normalised_product_of_the_layers_gradcam_pp_maps():
    tm, _ = _pair()
    x = _x()
    e = ta.explain(tm, x, method="refinecam", layer=LAYERS_T, targets=[1, 2, 3])
    per_layer = [ta.explain(tm, x, method="gradcam++", layer=lay, targets=[1, 2, 3]).maps
                 for lay in LAYERS_T]
    ref = cam_core.normalize(per_layer[0].astype(np.float64) * per_layer[1])
    np.testing.assert_allclose(e.maps, ref, atol=1e-6)
    assert e.method == "refinecam" and e.layers == tuple(LAYERS_T)
    # the product is not the mean: the fusion is the method
    mean = ta.explain(tm, x, method="gradcam++", layer=LAYERS_T, targets=[1, 2, 3]).maps
    assert np.abs(e.maps - mean).max() > 0.05
    # one layer: Grad-CAM++ itself
    one = ta.explain(tm, x, method="refinecam", layer=LAYERS_T[1], targets=[1, 2, 3])
    np.testing.assert_array_equal(one.maps, ta.explain(tm, x, method="gradcam++",
                                                       layer=LAYERS_T[1], targets=[1, 2, 3]).maps)
    with pytest.raises(ValueError, match="product"):
        ta.explain(tm, x, method="refinecam", layer=LAYERS_T, fuse="mean")
    # asked for explicitly, the product is any method's fusion
    g = ta.explain(tm, x, method="gradcam++", layer=LAYERS_T, targets=[1, 2, 3], fuse="product")
    np.testing.assert_array_equal(g.maps, e.maps)


def test_refinecam_torch_and_keras_agree():
    tm, km = _pair(1)
    x = _x(seed=1)
    t = ta.explain(tm, x, method="refinecam", layer=LAYERS_T, targets=[0, 5, 9])
    k = ka.explain(km, x.transpose(0, 2, 3, 1), method="refinecam", layer=LAYERS_K,
                   targets=[0, 5, 9])
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)
    with pytest.raises(ValueError, match="product"):
        ka.explain(km, x.transpose(0, 2, 3, 1), method="refinecam", layer=LAYERS_K, fuse="max")


# ------------------------------------------------------------------------------ ShapleyCAM
# The fixed-weight model of tests/adapters/test_methods_more_equivalence.py: the layer is the
# identity on A_0 = [1, 2], A_1 = [-3, 1], then GAP and W = [[1, -1], [2, 1], [0, 1]].
# Score z_0^2 / 2 with z_0 = 2.5: g = z_0 W[0] / 2 = (1.25, -1.25) per position, and
# H A = (W[0] / 2)(W[0] . mean A) = g (a quadratic). Weights g - H A / 2 = (0.625, -0.625):
# M = 0.625 (1, 2) - 0.625 (-3, 1) = (2.5, 0.625), half of Grad-CAM's (5, 1.25).
from tests.adapters.test_methods_more_equivalence import X, _keras_model, _torch_model  # noqa: E402


def _half_square(z):
    return z[:, 0] * z[:, 0] / 2


def test_shapleycam_golden_in_both_frameworks():
    t = ta.explain(_torch_model(), X, method="shapleycam", layer="features", targets=_half_square)
    k = ka.explain(_keras_model(), X.transpose(0, 2, 3, 1), method="ShapleyCAM",
                   layer="features", targets=_half_square)
    for e in (t, k):
        np.testing.assert_allclose(e.raw, [[[2.5, 0.625]]], rtol=1e-6)
    (c,) = ta.capture(_torch_model(), X, layer="features", targets=_half_square, hvp=True)
    np.testing.assert_allclose(c.hvp, [[[[1.25, 1.25]], [[-1.25, -1.25]]]], rtol=1e-6)
    np.testing.assert_allclose(
        ka.capture(_keras_model(), X.transpose(0, 2, 3, 1), layer="features",
                   targets=_half_square, hvp=True)[0].hvp, c.hvp, rtol=1e-6)


def _rest_hvp_oracle(cap, w, b, classes):
    """H A in closed form after GAP + linear: W^T (d^2 ReST / dz^2) (z - b) / (h w)."""
    z = cap.logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    hw = cap.activations.shape[2] * cap.activations.shape[3]
    out = []
    for n in range(len(z)):
        hess = -(np.diag(p[n]) - np.outer(p[n], p[n]))
        out.append(w.T @ hess @ (z[n] - b) / hw)
    hv = np.asarray(out)[:, :, None, None]
    return np.broadcast_to(hv, cap.activations.shape), p, classes


def test_rest_hessian_vector_product_closed_form_in_both_frameworks():
    tm, km = _pair(2)
    x = _x(seed=2)
    classes = [3, 0, 7]
    w = tm.fc.weight.detach().double().numpy()
    b = tm.fc.bias.detach().double().numpy()
    (t,) = ta.capture(tm, x, layer="features", targets=ta.rest_target(classes), hvp=True)
    (k,) = ka.capture(km, x.transpose(0, 2, 3, 1), layer="features",
                      targets=ka.rest_target(classes), hvp=True)
    ref, p, _ = _rest_hvp_oracle(t, w, b, classes)
    scale = np.abs(ref).max()
    assert scale > 0.01 * np.abs(t.gradients).max()  # the softmax's curvature: not Grad-CAM
    for c in (t, k):
        np.testing.assert_allclose(c.hvp, ref, atol=1e-4 * scale)
        z = c.logits.astype(np.float64)
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        np.testing.assert_allclose(c.scores, 2 * z[np.arange(3), classes] - lse, rtol=1e-5)
    # top-1 by default
    (d,) = ta.capture(tm, x, layer="features", targets=ta.rest_target(), hvp=True)
    top = t.logits.argmax(1)
    (e,) = ta.capture(tm, x, layer="features", targets=ta.rest_target(top.tolist()), hvp=True)
    np.testing.assert_allclose(d.hvp, e.hvp, rtol=1e-6)


def test_shapleycam_with_a_logit_target_on_a_relu_network_is_gradcam():
    # the path from block3 to a logit is piecewise linear: H = 0 almost everywhere
    tm, _ = _pair(3)
    x = _x(seed=3)
    s = ta.explain(tm, x, method="shapleycam", layer="features.block3", targets=[1, 2, 3])
    g = ta.explain(tm, x, method="gradcam", layer="features.block3", targets=[1, 2, 3])
    np.testing.assert_allclose(s.raw, g.raw, rtol=1e-6, atol=1e-7)
    (c,) = ta.capture(tm, x, layer="features.block3", targets=[1, 2, 3], hvp=True)
    assert not np.any(c.hvp)


def test_shapleycam_torch_and_keras_agree_with_rest_at_two_layers():
    tm, km = _pair(4)
    x = _x(seed=4)
    t = ta.explain(tm, x, method="shapleycam", layer=LAYERS_T, targets=ta.rest_target([0, 4, 8]))
    k = ka.explain(km, x.transpose(0, 2, 3, 1), method="shapleycam", layer=LAYERS_K,
                   targets=ka.rest_target([0, 4, 8]))
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)
    g = ta.explain(tm, x, method="gradcam", layer=LAYERS_T, targets=ta.rest_target([0, 4, 8]))
    assert np.abs(t.maps - g.maps).max() > 1e-3  # the second-order term shows
    with pytest.raises(ValueError, match="hvp"):
        ta.TorchSession(tm, x).__enter__().capture(gradients=False, hvp=True)
