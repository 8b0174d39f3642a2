"""The methods of issue 15 through both adapters: golden values on a fixed-weight model written
in both frameworks, eigen_smooth and aug_smooth, and torch-vs-Keras equality on mirrored models."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from cam_core.adapters import keras as ka  # noqa: E402
from cam_core.adapters import models_keras as mk  # noqa: E402
from cam_core.adapters import models_torch as mt  # noqa: E402
from cam_core.adapters import torch as ta  # noqa: E402
from cam_core.adapters.equivalence import compare  # noqa: E402
from cam_core.adapters.transfer import torch_to_keras  # noqa: E402

import cam_core  # noqa: E402
from cam_core import methods as m  # noqa: E402
from cam_core.explain import AUG_SMOOTH_FACTORS, EIGEN_SMOOTH_METHODS, weighted_activations  # noqa: E402
from tests.adapters.golden_models import X, keras_model, torch_model  # noqa: E402
from tests.adapters.test_models import randomize_bn  # noqa: E402
from tests.conftest import readonly  # noqa: E402

NEW_METHODS = ("gradcamelementwise", "eigengradcam", "kpcacam", "fem", "randomcam", "finercam",
               "sscam", "iscam")

# ------------------------------------------------------------ the fixed-weight model, by hand
# (tests/adapters/golden_models.py: the identity layer on A_0 = [1, 2], A_1 = [-3, 1], GAP,
# W = [[1, -1], [2, 1], [0, 1]]; class 0's gradient is (0.5, -0.5) at every position)


_R_EIG = math.sqrt(1.0625)
_R_KPCA = math.sqrt((math.tanh(3.125) - math.tanh(-1.125)) / 2)
GOLDEN = {
    # g A: channel 0 (0.5, 1), channel 1 (1.5, -0.5); ReLU, sum: (2, 1)
    "gradcamelementwise": [2.0, 1.0],
    # the same g A as positions x channels: (0.5, 1.5), (1, -0.5); centred -+(-0.25, 1)...;
    # the channel-mean map (1, 0.25) falls, so position 0 is positive
    "eigengradcam": [_R_EIG, -_R_EIG],
    # the core's golden (tests/core/test_methods_more.py) on these activations
    "kpcacam": [-_R_KPCA, _R_KPCA],
    # two positions: mean + 2 std = mean + |difference| is above both: nothing passes
    "fem": [0.0, 0.0],
    # Finer-CAM, gamma 0.6, references capped at 2 (classes 1 and 2): the gradient is
    # (W[0] - 0.3 (W[1] + W[2])) / 2 = (0.2, -0.8): M = 0.2 (1, 2) - 0.8 (-3, 1) = (2.6, -0.4)
    "finercam": [2.6, -0.4],
    # both channels normalise to the mask (0, 1): equal scores, weights (1/2, 1/2)
    "iscam": [-1.0, 1.5],
}


def _explain_both(method, **kw):
    t = ta.explain(torch_model(), X, method=method, layer="features", targets=0, **kw)
    k = ka.explain(keras_model(), X.transpose(0, 2, 3, 1), method=method, layer="features",
                   targets=0, **kw)
    return t, k


@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_golden_on_the_fixed_weight_model_in_both_frameworks(method):
    for e in _explain_both(method):
        np.testing.assert_allclose(e.raw, [[GOLDEN[method]]], rtol=1e-5, atol=1e-6)


def test_randomcam_golden_in_both_frameworks():
    w = m.random_weights(2, seed=0)
    ref = (w[0] * X[0, 0] + w[1] * X[0, 1])[None]
    for e in _explain_both("randomcam"):
        np.testing.assert_allclose(e.raw, ref, rtol=1e-5)


def test_finercam_equals_cam_of_the_contrast_weights_on_a_gap_head():
    # on a GAP + linear head the gradient of the contrastive score is (W^T finer) / (h w)
    torch.manual_seed(0)
    model = randomize_bn(mt.tiny_gap_cnn(6)).eval()
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    (cap,) = ta.capture(model, x, layer="features", gradients=False)
    fin = m.finer_weights(cap.logits, [1, 2, 3])
    hw = cap.activations.shape[2] * cap.activations.shape[3]
    ref = np.einsum("nc,ck,nkhw->nhw", fin, cap.weights.astype(np.float64),
                    cap.activations.astype(np.float64)) / hw
    e = cam_core.explain(model, x, method="Finer-CAM", layer="features", targets=[1, 2, 3])
    np.testing.assert_allclose(e.raw, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    assert not np.allclose(e.raw, cam_core.explain(model, x, layer="features",
                                                   targets=[1, 2, 3]).raw, atol=1e-6)
    with pytest.raises(TypeError, match="Finer-CAM"):
        cam_core.explain(model, x, method="finercam", targets=lambda y: y[:, 0])


# ---------------------------------------------------------------------------- eigen_smooth


def test_eigen_smooth_golden_and_definition():
    # Grad-CAM's terms w_k A_k with w = (0.5, -0.5) are Eigen-Grad-CAM's g A here
    for e in _explain_both("gradcam", eigen_smooth=True):
        np.testing.assert_allclose(e.raw, [[[_R_EIG, -_R_EIG]]], rtol=1e-5)
    torch.manual_seed(1)
    model = randomize_bn(mt.tiny_gap_cnn(5)).eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    (cap,) = ta.capture(model, x, layer="features", targets=[0, 4])
    for method in ("gradcam++", "layercam", "xgradcam", "cam"):
        e = ta.explain(model, x, method=method, layer="features", targets=[0, 4], eigen_smooth=True)
        terms = weighted_activations(method, cap.activations, cap.gradients,
                                       weights=cap.weights, classes=cap.targets)
        np.testing.assert_allclose(e.raw, m.eigencam(terms), rtol=1e-4,
                                   atol=1e-5 * float(np.abs(e.raw).max()))
    with pytest.raises(ValueError, match="eigen_smooth"):
        ta.explain(model, x, method="scorecam", eigen_smooth=True)


# ------------------------------------------------------------------------------ aug_smooth


def test_aug_smooth_is_the_mean_of_flipped_back_maps():
    torch.manual_seed(2)
    model = randomize_bn(mt.tiny_gap_cnn(5)).eval()
    x = torch.tensor(np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32))
    got = cam_core.explain(model, x, layer="features", aug_smooth=True)
    plain = ta.explain(model, x, layer="features")
    maps = []
    for flip in (False, True):
        for f in AUG_SMOOTH_FACTORS:
            xa = torch.flip(x, dims=[3]) if flip else x
            e = ta.explain(model, xa * f, layer="features", targets=plain.targets)
            maps.append(e.maps[:, :, ::-1] if flip else e.maps)
    ref = cam_core.normalize(np.mean(maps, axis=0))
    np.testing.assert_allclose(got.maps, ref, atol=1e-6)
    np.testing.assert_array_equal(got.targets, plain.targets)
    assert got.maps.shape == (2, 32, 32) and not np.allclose(got.maps, plain.maps, atol=1e-3)
    with pytest.raises(TypeError, match="aug_smooth"):
        cam_core.explain(model, x, aug_smooth="yes")


# ------------------------------------------------------------- torch vs Keras, mirrored models


def _tiny_pair(seed=0, classes=10):
    torch.manual_seed(seed)
    tm = randomize_bn(mt.tiny_gap_cnn(classes)).eval()
    return tm, torch_to_keras(tm, mk.tiny_gap_cnn(classes))


def test_tiny_new_methods_agree():
    tm, km = _tiny_pair()
    x = readonly(np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    r = compare(tm, km, x, layer_torch="features", methods=NEW_METHODS, targets=[1, 2, 3, 4])
    assert [a.method for a in r.methods] == list(NEW_METHODS)
    for a in r.methods:
        assert a.max_abs_map < 1e-4 and a.identical_boxes == 1.0, (a.method, a.max_abs_map)


def test_resnet50_new_fast_methods_agree():
    torch.manual_seed(1)
    tm = randomize_bn(mt.resnet50(1000), 1).eval()
    km = torch_to_keras(tm, mk.resnet50(1000))
    x = readonly(np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32))
    fast = [n for n in NEW_METHODS if n not in ("sscam", "iscam")]
    r = compare(tm, km, x, layer_torch="layer4", methods=fast)
    for a in r.methods:
        assert a.max_abs_map < 1e-4, (a.method, a.max_abs_map)


@pytest.mark.parametrize("method", EIGEN_SMOOTH_METHODS)
def test_eigen_smooth_agrees_between_frameworks(method):
    tm, km = _tiny_pair(3)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    t = ta.explain(tm, x, method=method, layer="features", targets=[1, 2], eigen_smooth=True)
    k = ka.explain(km, x.transpose(0, 2, 3, 1), method=method, layer="features", targets=[1, 2],
                   eigen_smooth=True)
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)


def test_aug_smooth_agrees_between_frameworks():
    tm, km = _tiny_pair(4)
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for method in ("gradcam", "kpcacam"):
        t = cam_core.explain(tm, x, method=method, layer="features", aug_smooth=True)
        k = cam_core.explain(km, x.transpose(0, 2, 3, 1), method=method, layer="features",
                             targets=t.targets, aug_smooth=True)
        np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)


# ------------------------------------------------------------------------ Smooth Grad-CAM++


def test_smoothgradcam_pp_is_gradcam_pp_before_a_gap_head():
    # at the layer before global average pooling the gradient does not depend on the input,
    # so noise changes nothing: Smooth Grad-CAM++ equals Grad-CAM++ (hand-checkable property)
    for e, ref in zip(_explain_both("smoothgradcam++"), _explain_both("gradcam++")):
        np.testing.assert_allclose(e.raw, ref.raw, rtol=1e-5, atol=1e-7)


def test_smoothgradcam_pp_uses_noisy_gradients_and_agrees_between_frameworks():
    from cam_core.explain import SMOOTHGRAD_SAMPLES, SMOOTHGRAD_STD

    tm, km = _tiny_pair(5)
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    layer = "features.block3"
    r = compare(tm, km, x, layer_torch=layer, layer_keras="features/block3",
                methods=["smoothgradcam++"], targets=[1, 2])
    assert r.method("smoothgradcam++").max_abs_map < 1e-4
    # the definition: gradients of noisy copies (the core's noise), clean activations
    (clean,) = ta.capture(tm, x, layer=layer, targets=[1, 2])
    samples = []
    for s in range(SMOOTHGRAD_SAMPLES):
        xn = x + SMOOTHGRAD_STD * m.input_noise(0, s, x.shape[1:])[None]  # every image
        (cap,) = ta.capture(tm, xn, layer=layer, targets=[1, 2])
        samples.append(cap.gradients)
    ref = m.smoothgradcam_pp(clean.activations, np.stack(samples))
    got = ta.explain(tm, x, method="smoothgradcam++", layer=layer, targets=[1, 2])
    np.testing.assert_allclose(got.raw, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    plain = ta.explain(tm, x, method="gradcam++", layer=layer, targets=[1, 2])
    assert not np.allclose(got.raw, plain.raw, rtol=1e-3)


# ---------------------------------------------------------- method options, Faster Score-CAM

def test_faster_scorecam_golden_in_both_frameworks():
    # channel 0 = (1, 2) has std 0.5, channel 1 = (-3, 1) std 2: max_n=1 keeps channel 1 alone,
    # whose softmax weight is 1, so the raw map is that channel
    for e in _explain_both("scorecam", method_options={"max_n": 1}):
        np.testing.assert_allclose(e.raw, [[[-3.0, 1.0]]], rtol=1e-6)


@pytest.mark.parametrize("method, options", [
    ("gradcam++", {"eps": 1e-6}), ("eigencam", {"sign": "svd"}), ("kpcacam", {"kernel": "rbf"}),
    ("scorecam", {"max_n": 5}),
])
def test_method_options_agree_between_frameworks_and_equal_the_core(method, options):
    tm, km = _tiny_pair(5)
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    t = ta.explain(tm, x, method=method, layer="features", targets=[1, 2], method_options=options)
    k = ka.explain(km, x.transpose(0, 2, 3, 1), method=method, layer="features", targets=[1, 2],
                   method_options=options)
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)
    plain = ta.explain(tm, x, method=method, layer="features", targets=[1, 2])
    assert not np.allclose(plain.raw, t.raw)  # the option reached the method
    if method != "scorecam":  # the core function with the option on the captured layer
        cap = ta.capture(tm, x, layer="features", targets=[1, 2])[0]
        args = (cap.activations,) if method in ("eigencam", "kpcacam") else (cap.activations,
                                                                              cap.gradients)
        fn = cam_core.METHODS[method].function
        np.testing.assert_allclose(t.raw, fn(*args, **options), rtol=1e-5, atol=1e-6)


def test_method_options_are_checked_by_name():
    with pytest.raises(ValueError, match=r"\['epsilon'\] are not options of 'gradcam\+\+'.*'eps'"):
        ta.explain(torch_model(), X, method="gradcam++", layer="features", targets=0,
                   method_options={"epsilon": 1e-6})
    with pytest.raises(ValueError, match="its options: none"):
        ka.explain(keras_model(), X.transpose(0, 2, 3, 1), method="gradcam", layer="features",
                   targets=0, method_options={"eps": 1.0})
    with pytest.raises(ValueError, match=r"\['batch_size'\]"):  # set by the pipeline
        ta.explain(torch_model(), X, method="scorecam", layer="features", targets=0,
                   method_options={"batch_size": 2})
    with pytest.raises(TypeError, match="`method_options` must be a dict"):
        ta.explain(torch_model(), X, method="gradcam", layer="features", method_options=[1])
    with pytest.raises(ValueError, match="`eigen_smooth`.*no `method_options`"):
        ta.explain(torch_model(), X, method="gradcam++", layer="features", eigen_smooth=True,
                   method_options={"eps": 1e-6})
