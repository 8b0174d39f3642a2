"""randomized_copy in both adapters and the randomisation check it serves (Adebayo et al. 2018)."""

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

from cam_core.faithfulness import rank_correlation  # noqa: E402
from tests.adapters.test_models import randomize_bn  # noqa: E402


def _pair():
    torch.manual_seed(0)
    tm = randomize_bn(mt.tiny_gap_cnn(5)).eval()
    return tm, torch_to_keras(tm, mk.tiny_gap_cnn(5))


def test_torch_randomized_copy_touches_only_the_named_layers():
    tm, _ = _pair()
    before = {k: v.clone() for k, v in tm.state_dict().items()}
    rc = ta.randomized_copy(tm, ["fc"], seed=1)
    for k, v in tm.state_dict().items():  # the model itself is untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    after = rc.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}
    assert torch.all(after["fc.bias"] == 0)
    fan_in = after["fc.weight"].shape[1]
    w = np.random.default_rng([1, 0]).normal(0, np.sqrt(2 / fan_in), tuple(after["fc.weight"].shape))
    np.testing.assert_allclose(after["fc.weight"].numpy(), w, rtol=1e-6)
    again = ta.randomized_copy(tm, "fc", seed=1)
    torch.testing.assert_close(again.fc.weight, rc.fc.weight, rtol=0, atol=0)


def test_keras_randomized_copy_touches_only_the_named_layers():
    _, km = _pair()
    before = [w.copy() for w in km.get_weights()]
    rc = ka.randomized_copy(km, "fc", seed=1)
    for a, b in zip(km.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    kernel, bias = rc.get_layer("fc").get_weights()
    np.testing.assert_allclose(kernel, np.random.default_rng([1, 0]).normal(
        0, np.sqrt(2 / kernel.shape[0]), kernel.shape), rtol=1e-6)
    assert np.all(bias == 0)
    others = [w for lay in rc.layers if lay.name != "fc" for w in lay.get_weights()]
    originals = [w for lay in km.layers if lay.name != "fc" for w in lay.get_weights()]
    for a, b in zip(others, originals):
        np.testing.assert_array_equal(a, b)


def test_randomising_the_classifier_changes_class_maps_but_not_eigencam():
    tm, km = _pair()
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    for model, rc, xs in ((tm, ta.randomized_copy(tm, "fc"), x),
                          (km, ka.randomized_copy(km, "fc"), x.transpose(0, 2, 3, 1))):
        explain = ta.explain if model is tm else ka.explain
        for method in ("gradcam", "eigencam"):
            a = explain(model, xs, method=method, layer="features", targets=[0, 1, 2]).maps
            b = explain(rc, xs, method=method, layer="features", targets=[0, 1, 2]).maps
            rho = rank_correlation(a, b)
            if method == "eigencam":  # no class, no head: the check cannot see the head
                np.testing.assert_allclose(rho, 1.0, atol=1e-6)
            else:
                assert np.all(rho < 0.99), (method, rho)
