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
