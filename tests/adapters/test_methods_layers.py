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
# The fixed-weight model of tests/adapters/golden_models.py: the layer is the
# identity on A_0 = [1, 2], A_1 = [-3, 1], then GAP and W = [[1, -1], [2, 1], [0, 1]].
# Score z_0^2 / 2 with z_0 = 2.5: g = z_0 W[0] / 2 = (1.25, -1.25) per position, and
# H A = (W[0] / 2)(W[0] . mean A) = g (a quadratic). Weights g - H A / 2 = (0.625, -0.625):
# M = 0.625 (1, 2) - 0.625 (-3, 1) = (2.5, 0.625), half of Grad-CAM's (5, 1.25).
from tests.adapters.golden_models import X, keras_model, torch_model  # noqa: E402


def _half_square(z):
    return z[:, 0] * z[:, 0] / 2


def test_shapleycam_golden_in_both_frameworks():
    t = ta.explain(torch_model(), X, method="shapleycam", layer="features", targets=_half_square)
    k = ka.explain(keras_model(), X.transpose(0, 2, 3, 1), method="ShapleyCAM",
                   layer="features", targets=_half_square)
    for e in (t, k):
        np.testing.assert_allclose(e.raw, [[[2.5, 0.625]]], rtol=1e-6)
    (c,) = ta.capture(torch_model(), X, layer="features", targets=_half_square, hvp=True)
    np.testing.assert_allclose(c.hvp, [[[[1.25, 1.25]], [[-1.25, -1.25]]]], rtol=1e-6)
    np.testing.assert_allclose(
        ka.capture(keras_model(), X.transpose(0, 2, 3, 1), layer="features",
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


# -------------------------------------------------------------------------------- FullGrad
# By hand: x = (1, -2) on a 1 x 2 grid; a 1x1 convolution to two channels, weights (2, -1),
# biases (0.5, 1.5), then ReLU, GAP and y = 3 m_0 + m_1:
#   z_0 = (2.5, -3.5), z_1 = (0.5, 3.5); dy/dz_0 = (1.5, 0) (ReLU off at -3.5), dy/dz_1 = (0.5, 0.5)
#   bias terms |g b|: channel 0 (0.75, 0), channel 1 (0.75, 0.75)
#   input term |x dy/dx| = |(1, -2) (1.5 * 2 - 0.5, 0 - 0.5)| = (2.5, 1)
# paper (per image over all channels): bias (1, 0) + (1, 1), input (1.5, 0) / 1.5: raw (3, 1);
# pytorch-grad-cam (per channel): channel 1 is flat and vanishes: bias (1, 0), input (1, 0).
XF = np.array([[[[1.0, -2.0]]]], dtype=np.float32)


def _fullgrad_torch(inplace: bool):
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)
            self.relu = nn.ReLU(inplace=inplace)
            self.fc = nn.Linear(2, 1, bias=False)

        def forward(self, x):
            return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))

    net = Net().eval()
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1))
        net.conv.bias.copy_(torch.tensor([0.5, 1.5]))
        net.fc.weight.copy_(torch.tensor([[3.0, 1.0]]))
    return net


def _fullgrad_keras():
    L = keras.layers
    inp = keras.Input((1, 2, 1))
    f = L.Conv2D(2, 1, activation="relu", name="conv")(inp)  # the ReLU fused in the layer
    out = L.Dense(1, use_bias=False, name="fc")(L.GlobalAveragePooling2D()(f))
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([np.array([2.0, -1.0], np.float32).reshape(1, 1, 1, 2),
                                         np.array([0.5, 1.5], np.float32)])
    model.get_layer("fc").set_weights([np.array([[3.0], [1.0]], np.float32)])
    return model


@pytest.mark.parametrize("convention", ["paper", "pytorch-grad-cam"])
def test_fullgrad_golden_in_both_frameworks(convention):
    c, eps = (0.75, 1e-6) if convention == "paper" else (0.75, 1e-7)
    bias = [c / (c + eps), 0.0]
    extra = [c / (c + eps), c / (c + eps)] if convention == "paper" else [0.0, 0.0]
    inp = [1.5 / (1.5 + eps), 0.0]
    ref = np.array([[[bias[0] + extra[0] + inp[0], bias[1] + extra[1] + inp[1]]]])
    opts = {"method_options": {"convention": convention}}
    got = [ta.explain(_fullgrad_torch(inplace), XF, method="fullgrad", targets=0, **opts)
           for inplace in (False, True)]
    got.append(ka.explain(_fullgrad_keras(), XF.transpose(0, 2, 3, 1), method="FullGrad",
                          targets=0, **opts))
    for e in got:
        np.testing.assert_allclose(e.raw, ref, rtol=1e-6)
        assert e.method == "fullgrad" and len(e.layers) == 1
    assert got[0].layers == ("conv",) and got[2].layers == ("conv",)


def test_fullgrad_refuses_a_layer_and_a_model_without_biases():
    with pytest.raises(ValueError, match="leave `layer` out"):
        ta.explain(_fullgrad_torch(False), XF, method="fullgrad", layer="conv")
    with pytest.raises(ValueError, match="leave `layer` out"):
        ka.explain(_fullgrad_keras(), XF.transpose(0, 2, 3, 1), method="fullgrad", layer="conv")

    with pytest.raises(ValueError, match="needs layers with a bias"):
        ta.explain(torch_model(), X, method="fullgrad")
    from cam_core.explain import raw_maps

    (cap,) = ta.capture(_fullgrad_torch(False), XF, layer="conv")
    with pytest.raises(ValueError, match="every bias layer"):
        raw_maps("fullgrad", cap)


def test_fullgrad_folds_batch_norms_and_matches_its_definition():
    tm, _ = _pair(5)
    x = _x(2, seed=5)
    e = ta.explain(tm, x, method="fullgrad", targets=[2, 6])
    with ta.TorchSession(tm, x, targets=[2, 6]) as s:
        t = s.bias_gradients()
    bns = [mod for name, mod in tm.named_modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert t.layers == tuple(name for name, mod in tm.named_modules()
                             if isinstance(mod, torch.nn.BatchNorm2d))
    for b, bn in zip(t.biases, bns):
        folded = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps))
        np.testing.assert_allclose(b, folded.detach().numpy(), rtol=1e-6)
    # the definition, in float64 by loops over layers
    def psi(v):
        v = np.abs(v.astype(np.float64))
        v = v - v.min(axis=(1, 2, 3), keepdims=True)
        return v / (v.max(axis=(1, 2, 3), keepdims=True) + 1e-6)

    ref = psi(t.input_gradients * t.inputs).sum(1)
    for g, b in zip(t.gradients, t.biases):
        ref += cam_core.upsample(psi(g * b[None, :, None, None]).sum(1), 64)
    np.testing.assert_allclose(e.raw, ref, rtol=1e-5)
    np.testing.assert_allclose(e.maps, cam_core.normalize(ref), atol=1e-6)


def test_fullgrad_torch_and_keras_agree_on_resnet50():
    torch.manual_seed(1)
    tm = randomize_bn(mt.resnet50(1000), 1).eval()
    km = torch_to_keras(tm, mk.resnet50(1000))
    x = _x(2, seed=6)
    t = ta.explain(tm, x, method="fullgrad", targets=[1, 999])
    k = ka.explain(km, x.transpose(0, 2, 3, 1), method="fullgrad", targets=[1, 999])
    assert len(t.layers) == len(k.layers) == 53  # every batch norm (the convolutions have none)
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)


@pytest.mark.parametrize("method", ["fullgrad", "shapleycam", "refinecam"])
def test_the_device_core_gives_the_numpy_maps(method):
    # core="device" runs the core on the torch tensors where they are (here the CPU)
    tm, _ = _pair(7)
    x = _x(2, seed=7)
    layer = None if method == "fullgrad" else LAYERS_T
    kw = {"targets": ta.rest_target([3, 4]) if method == "shapleycam" else [3, 4]}
    host = ta.explain(tm, x, method=method, layer=layer, **kw)
    dev = ta.explain(tm, x, method=method, layer=layer, core="device", maps_on_device=True, **kw)
    assert isinstance(dev.maps, torch.Tensor)
    np.testing.assert_allclose(dev.maps.numpy(), host.maps, atol=1e-5)


# ------------------------------------------------------------------ guided backpropagation
# The FullGrad model with the classifier y = 3 m_0 - m_1: the gradient reaching the ReLU is
# (1.5, -0.5) per position. Guided: channel 0 passes 1.5 where z_0 > 0 (position 0), channel 1
# passes nothing (its gradient is negative): d y / d x = 2 (1.5, 0) = (3, 0). The plain gradient
# is 2 (1.5, 0) - (-0.5, -0.5) = (3.5, 0.5).


def _guided_torch(inplace, relu6=False):
    net = _fullgrad_torch(inplace)
    if relu6:
        net.relu = torch.nn.ReLU6()
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[3.0, -1.0]]))
    return net


def _guided_keras(fused: bool):
    L = keras.layers
    inp = keras.Input((1, 2, 1))
    if fused:
        f = L.Conv2D(2, 1, activation="relu", name="conv")(inp)
    else:
        f = L.ReLU(name="relu")(L.Conv2D(2, 1, name="conv")(inp))
    out = L.Dense(1, use_bias=False, name="fc")(L.GlobalAveragePooling2D()(f))
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([np.array([2.0, -1.0], np.float32).reshape(1, 1, 1, 2),
                                         np.array([0.5, 1.5], np.float32)])
    model.get_layer("fc").set_weights([np.array([[3.0], [-1.0]], np.float32)])
    return model


def test_guided_backprop_golden_in_both_frameworks():
    for inplace in (False, True):
        np.testing.assert_allclose(ta.guided_backprop(_guided_torch(inplace), XF, targets=0),
                                   [[[[3.0, 0.0]]]], rtol=1e-6)
    for fused in (False, True):
        got = ka.guided_backprop(_guided_keras(fused), XF.transpose(0, 2, 3, 1), targets=0)
        np.testing.assert_allclose(got, [[[[3.0], [0.0]]]], rtol=1e-6)  # the inputs' layout
    # the plain gradient differs: the rule is what the test sees
    (c,) = ta.capture(_guided_torch(False), XF, layer="conv", targets=0)
    assert not np.allclose(c.gradients, 0)
    x = torch.tensor(XF, requires_grad=True)
    _guided_torch(False)(x)[:, 0].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[[[3.5, 0.5]]]], rtol=1e-6)
    # ReLU6 also stops at the top: z_0 = 2.5 and z_1 = 3.5 are below 6, so the same here;
    # scaled by 4, position 0's z_0 = 10 saturates and nothing passes
    np.testing.assert_allclose(ta.guided_backprop(_guided_torch(False, relu6=True), XF,
                                                  targets=0), [[[[3.0, 0.0]]]], rtol=1e-6)
    np.testing.assert_allclose(ta.guided_backprop(_guided_torch(False, relu6=True), 4 * XF,
                                                  targets=0), [[[[0.0, 0.0]]]], atol=0)


def test_guided_backprop_refuses_a_model_without_relus():

    with pytest.raises(ValueError, match="has none"):
        ta.guided_backprop(torch_model(), X)
    with pytest.raises(ValueError, match="has none"):
        ka.guided_backprop(keras_model(), X.transpose(0, 2, 3, 1))


def test_guided_gradcam_torch_and_keras_agree_and_multiply_the_map():
    tm, km = _pair(8)
    x = _x(2, seed=8)
    gt = ta.guided_backprop(tm, x, targets=[2, 5])
    gk = ka.guided_backprop(km, x.transpose(0, 2, 3, 1), targets=[2, 5])
    assert gt.shape == (2, 3, 64, 64) and gk.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(gk.transpose(0, 3, 1, 2), gt, atol=1e-5 * np.abs(gt).max())
    prod, e = cam_core.explain_guided(tm, x, layer="features", targets=[2, 5])
    assert e.method == "gradcam" and prod.shape == gt.shape
    np.testing.assert_allclose(prod, gt * e.maps[:, None], rtol=1e-6)
    prod_k, ek = cam_core.explain_guided(km, x.transpose(0, 2, 3, 1), layer="features",
                                         targets=[2, 5])
    np.testing.assert_allclose(prod_k, gk * ek.maps[..., None], rtol=1e-6)
    np.testing.assert_allclose(prod_k.transpose(0, 3, 1, 2), prod, atol=1e-4 * np.abs(prod).max())
    # the core's product checks its layout
    with pytest.raises(ValueError, match="channel_axis"):
        cam_core.guided_gradcam(np.zeros((1, 3, 3, 3)), np.zeros((1, 3, 3)))
    np.testing.assert_array_equal(
        cam_core.guided_gradcam(np.ones((1, 3, 3, 3)), np.full((1, 3, 3), 0.5), channel_axis=-1),
        np.full((1, 3, 3, 3), 0.5))
