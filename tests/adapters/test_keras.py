"""Keras adapter: golden values on tiny fixed-weight models, target forms, nested models, layers,
the user's model left unchanged, perturbation scoring, other Keras backends in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
ka = pytest.importorskip("cam_core.adapters.keras")

from cam_core.explain import METHODS  # noqa: E402
from cam_core.explain import explain as explain_any  # noqa: E402
from tests.conftest import readonly  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
L = keras.layers

# The golden model: one 2x2 single-channel image x = [[1, 2], [3, 4]]; a 1x1 conv with kernel
# [1, -1] gives A0 = x, A1 = -x; GAP gives [2.5, -2.5]; Dense kernel [[1, 2], [3, -1]], bias
# [0.5, 0] gives logits [2.5 - 7.5 + 0.5, 5 + 2.5] = [-4.5, 7.5], so class 1 is predicted.
X_GOLD = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)[None, :, :, None]
LOGITS_GOLD = np.array([[-4.5, 7.5]], dtype=np.float32)
# CAM of class 1: 2 * A0 - 1 * A1 = 3x. Gradients of logit 1: [2, -1] / hw = [0.5, -0.25] per
# position; Grad-CAM = 0.5 * x - 0.25 * (-x) = 0.75x.
CAM_GOLD = 3 * X_GOLD[0, :, :, 0]
GRADCAM_GOLD = 0.75 * X_GOLD[0, :, :, 0]


def golden_model(activation=None) -> keras.Model:
    inp = keras.Input((2, 2, 1))
    conv = L.Conv2D(2, 1, use_bias=False, name="conv")
    a = conv(inp)
    p = L.GlobalAveragePooling2D(name="gap")(a)
    fc = L.Dense(2, activation=activation, name="fc")
    out = fc(p)
    model = keras.Model(inp, out, name="golden")
    conv.set_weights([np.array([1.0, -1.0], dtype=np.float32).reshape(1, 1, 1, 2)])
    fc.set_weights([np.array([[1.0, 2.0], [3.0, -1.0]], np.float32), np.array([0.5, 0.0], np.float32)])
    return model


def small_model(seed: int = 0, *, skip: bool = False, classes: int = 5) -> keras.Model:
    """A small GAP CNN (optionally with a skip connection crossing the last conv)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    y = L.Conv2D(8, 3, padding="same", name="c3")(x)
    if skip:
        y = L.Add(name="add")([x, y])
    y = L.ReLU(name="feat")(y)
    p = L.GlobalAveragePooling2D(name="gap")(y)
    out = L.Dense(classes, name="fc")(p)
    return keras.Model(inp, out, name="small")


def images(n: int = 3, size: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


# --------------------------------------------------------------------------- golden values


def test_golden_capture():
    caps = ka.capture(golden_model(), readonly(X_GOLD), layer="conv")
    (c,) = caps
    np.testing.assert_allclose(c.logits, LOGITS_GOLD, rtol=1e-6)
    assert c.targets.tolist() == [1]
    np.testing.assert_allclose(c.scores, [7.5], rtol=1e-6)
    assert c.activations.shape == (1, 2, 2, 2)  # (N, K, h, w)
    np.testing.assert_allclose(c.activations[0, 0], X_GOLD[0, :, :, 0])
    np.testing.assert_allclose(c.activations[0, 1], -X_GOLD[0, :, :, 0])
    np.testing.assert_allclose(c.gradients[0, 0], np.full((2, 2), 0.5), rtol=1e-6)
    np.testing.assert_allclose(c.gradients[0, 1], np.full((2, 2), -0.25), rtol=1e-6)
    np.testing.assert_allclose(c.weights, [[1.0, 3.0], [2.0, -1.0]])
    for arr in (c.activations, c.gradients, c.logits, c.scores, c.weights):
        assert arr.dtype == np.float32


def test_golden_maps():
    e = ka.explain(golden_model(), X_GOLD, method="cam", layer="conv")
    np.testing.assert_allclose(e.raw[0], CAM_GOLD, rtol=1e-6)
    np.testing.assert_allclose(e.maps[0], (CAM_GOLD - 3) / 9, atol=1e-6)
    e = ka.explain(golden_model(), X_GOLD, method="gradcam", layer="conv")
    np.testing.assert_allclose(e.raw[0], GRADCAM_GOLD, rtol=1e-6)
    np.testing.assert_allclose(e.maps[0], (GRADCAM_GOLD - 0.75) / 2.25, atol=1e-6)


def test_softmax_head_gives_pre_softmax_logits():
    model = golden_model("softmax")
    (c,) = ka.capture(model, X_GOLD, layer="conv")
    np.testing.assert_allclose(c.logits, LOGITS_GOLD, rtol=1e-6)
    np.testing.assert_allclose(c.gradients[0, 0], np.full((2, 2), 0.5), rtol=1e-6)
    assert c.weights is not None
    probs = np.asarray(model(X_GOLD))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)  # the model itself still softmaxes


def test_separate_softmax_layer_is_skipped():
    base = golden_model()
    out = L.Softmax(name="probs")(base.output)
    model = keras.Model(base.input, out)
    (c,) = ka.capture(model, X_GOLD, layer="conv")
    np.testing.assert_allclose(c.logits, LOGITS_GOLD, rtol=1e-6)


def test_dispatch_from_cam_core_explain():
    e = explain_any(golden_model(), X_GOLD, method="gradcam", layer="conv")
    np.testing.assert_allclose(e.raw[0], GRADCAM_GOLD, rtol=1e-6)
    assert e.layers == ("conv",)


def test_gradcam_equals_relu_cam_over_hw_on_gap_dense():
    from cam_core.maps import normalize
    from cam_core.resize import upsample

    model, x = small_model(), images()
    (c,) = ka.capture(model, x, layer="feat")
    cam = ka.explain(model, x, method="cam", layer="feat").raw
    grad = ka.explain(model, x, method="gradcam", layer="feat")
    hw = c.activations.shape[2] * c.activations.shape[3]
    np.testing.assert_allclose(grad.raw, cam / hw, rtol=1e-4, atol=1e-7)
    shown = normalize(upsample(np.maximum(cam, 0), (12, 12), method="bilinear"), relu=False)
    np.testing.assert_allclose(grad.maps, shown, atol=1e-4)


@pytest.mark.parametrize("method", sorted(m for m in METHODS if not METHODS[m].attention))
def test_every_method_runs(method):
    # (LeGrad needs a transformer: tests/adapters/test_legrad.py)
    model = small_model(skip=True)
    e = ka.explain(model, images(), method=method, batch_size=5)
    assert e.maps.shape == (3, 12, 12) and e.maps.dtype == np.float32
    assert np.all((e.maps >= 0) & (e.maps <= 1))
    if method == "fullgrad":  # every convolution with a bias and every batch norm
        assert e.layers and all(isinstance(model.get_layer(n), (keras.layers.Conv2D,
                                                                keras.layers.BatchNormalization))
                                for n in e.layers)
    else:
        assert e.layers == ("feat",)


def test_batch_equals_each_image_alone():
    model, x = small_model(skip=True), images(4)
    for method in ("gradcam", "cam", "scorecam", "ablationcam"):
        batch = ka.explain(model, x, method=method, batch_size=7).raw
        for i in range(len(x)):
            alone = ka.explain(model, x[i : i + 1], method=method, batch_size=7).raw
            np.testing.assert_allclose(batch[i], alone[0], rtol=1e-4, atol=1e-6)


def test_gradients_match_a_full_tape():
    import tensorflow as tf

    model, x = small_model(skip=True), images()
    (c,) = ka.capture(model, x, layer="c2", targets=[0, 1, 2])
    view = keras.Model(model.input, [model.get_layer("c2").output, model.output])
    # Reference: perturb the layer output in a second functional model built from the layers.
    a_in = keras.Input((6, 6, 8))
    y = model.get_layer("c3")(a_in)
    y = model.get_layer("add")([a_in, y])
    y = model.get_layer("feat")(y)
    y = model.get_layer("fc")(model.get_layer("gap")(y))
    head = keras.Model(a_in, y)
    a, _ = view(x)
    with tf.GradientTape() as tape:
        tape.watch(a)
        s = tf.gather(head(a), [0, 1, 2], axis=1, batch_dims=0)
        s = tf.linalg.diag_part(s)
    ref = tape.gradient(s, a).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(c.gradients, ref, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- targets


def test_target_forms():
    model, x = small_model(), images()
    logits = ka.capture(model, x, gradients=False)[0].logits
    assert ka.capture(model, x)[0].targets.tolist() == np.argmax(logits, 1).tolist()
    (c,) = ka.capture(model, x, targets=2)
    assert c.targets.tolist() == [2, 2, 2]
    np.testing.assert_allclose(c.scores, logits[:, 2], rtol=1e-6)
    (c,) = ka.capture(model, x, targets=[4, 0, 1])
    assert c.targets.tolist() == [4, 0, 1]
    np.testing.assert_allclose(c.scores, logits[[0, 1, 2], [4, 0, 1]], rtol=1e-6)
    with pytest.raises(ValueError, match="one entry per image"):
        ka.capture(model, x, targets=[1, 2])
    with pytest.raises(ValueError, match="one entry per image"):
        ka.explain(model, x, method="cam", targets=[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ka.capture(model, x, targets=5)


def test_callable_target():
    model = golden_model()
    (c,) = ka.capture(model, X_GOLD, layer="conv", targets=lambda z: z[:, 0] - z[:, 1])
    assert c.targets.tolist() == [-1]
    np.testing.assert_allclose(c.scores, [-12.0], rtol=1e-6)
    # d(l0 - l1)/dA_k = (w[k, 0] - w[k, 1]) / hw = [-1, 4] / 4
    np.testing.assert_allclose(c.gradients[0, 0], np.full((2, 2), -0.25), rtol=1e-6)
    np.testing.assert_allclose(c.gradients[0, 1], np.full((2, 2), 1.0), rtol=1e-6)
    with pytest.raises(ValueError, match="one score per image"):
        ka.capture(model, X_GOLD, layer="conv", targets=lambda z: z)
    with pytest.raises(ValueError, match="class indices"):
        ka.explain(model, X_GOLD, method="cam", layer="conv", targets=lambda z: z[:, 0])
    e = ka.explain(model, X_GOLD, method="scorecam", layer="conv", targets=lambda z: z[:, 1])
    assert e.targets.tolist() == [-1]


# --------------------------------------------------------------------------- layers


def test_several_layers_fused():
    model, x = small_model(skip=True), images()
    caps = ka.capture(model, x, layer=["c2", "feat"])
    assert [c.layer for c in caps] == ["c2", "feat"]
    assert caps[0].weights is None and caps[1].weights is not None
    e = ka.explain(model, x, method="gradcam", layer=["c2", "feat"], fuse="max")
    assert e.layers == ("c2", "feat") and len(e.raw) == 2
    with pytest.raises(ValueError, match="twice"):
        ka.capture(model, x, layer=["feat", model.get_layer("feat")])


def test_layer_by_object_and_auto():
    model = small_model()
    assert ka.find_layer(model)[0] == "feat"
    assert ka.find_layer(model, model.get_layer("c2")) == ("c2", model.get_layer("c2"))


def test_layers_under_tape_are_those_after_the_layer():
    model = small_model(skip=True)
    assert ka.layers_under_tape(model, "feat") == ["gap", "fc"]
    assert ka.layers_under_tape(model) == ["gap", "fc"]  # the layer found automatically
    assert ka.layers_under_tape(model, "c2") == ["c3", "add", "feat", "gap", "fc"]


def test_unknown_layer_lists_close_names():
    model = small_model()
    with pytest.raises(ValueError, match=r"'feat'"):
        ka.capture(model, images(), layer="feet")
    with pytest.raises(ValueError, match="not called by model"):
        ka.find_layer(model, L.Dense(3, name="stray"))
    with pytest.raises(TypeError, match="`layer`"):
        ka.find_layer(model, 3)


def test_non_spatial_layer_refused():
    with pytest.raises(ValueError, match="4-D"):
        ka.capture(small_model(), images(), layer="gap")


def test_cam_refused_without_gap_dense_head():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="conv")(inp)
    out = L.Dense(3, name="fc")(L.Flatten()(a))
    model = keras.Model(inp, out)
    assert ka.capture(model, images(2, 8), layer="conv")[0].weights is None
    with pytest.raises(ValueError, match="gradcam"):
        ka.explain(model, images(2, 8), method="cam", layer="conv")


# --------------------------------------------------------------------------- the user's model


def _state(model, x):
    return (
        [w.copy() for w in model.get_weights()],
        [id(lay) for lay in model.layers],
        [(lay.trainable, len(lay._inbound_nodes)) for lay in model._flatten_layers()],
        np.asarray(model(x, training=False)),
    )


def test_model_unchanged_after_calls():
    model, x = small_model(skip=True), images()
    before = _state(model, x)
    for method in ("gradcam", "scorecam", "ablationcam"):
        ka.explain(model, x, method=method, layer=["c2", "feat"])
    ka.explain(model, x, method="cam")
    after = _state(model, x)
    for w0, w1 in zip(before[0], after[0]):
        np.testing.assert_array_equal(w0, w1)
    assert before[1:3] == after[1:3]
    np.testing.assert_array_equal(before[3], after[3])


def test_model_used_inside_tf_function():
    import tensorflow as tf

    model, x = small_model(), images()

    @tf.function
    def predict(z):
        return model(z, training=False)

    ref = predict(tf.constant(x)).numpy()
    e = ka.explain(model, tf.constant(x), method="gradcam")
    np.testing.assert_allclose(e.logits, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict(tf.constant(x)).numpy(), ref, rtol=1e-6)


def test_subclassed_model_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(2, 3)
            self.gap = L.GlobalAveragePooling2D()
            self.fc = L.Dense(2)

        def call(self, x):
            return self.fc(self.gap(self.conv(x)))

    net = Net()
    net(images(1, 8))
    with pytest.raises(TypeError, match="subclassed.*functional"):
        ka.explain(net, images(1, 8))


def test_wrong_inputs():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        ka.capture(small_model(), images()[0])
    with pytest.raises(TypeError, match="keras.Model"):
        ka.capture(object(), images())


def test_session_scores():
    model = golden_model()
    with ka.KerasSession(model, X_GOLD, layer="conv") as s:
        with pytest.raises(RuntimeError, match="capture"):
            s.score_masked(0, np.ones((1, 2, 2), np.float32))
        s.capture(gradients=False)
        # channel 0 zeroed: GAP [0, -2.5] -> logit 1 = 2.5; channel 1 zeroed: [2.5, 0] -> 5
        np.testing.assert_allclose(s.score_ablated(0, 0, np.array([0, 1])), [2.5, 5.0], rtol=1e-6)
        # an all-ones mask keeps the logit; an all-zeros mask leaves the bias (0 for class 1)
        masks = np.stack([np.ones((2, 2)), np.zeros((2, 2))]).astype(np.float32)
        np.testing.assert_allclose(s.score_masked(0, masks), [7.5, 0.0], atol=1e-6)
        with pytest.raises(ValueError, match="masks"):
            s.score_masked(0, np.ones((1, 3, 3), np.float32))


def test_ablation_with_skip_matches_brute_force():
    model, x = small_model(skip=True), images(2)
    with ka.KerasSession(model, x, layer="c2") as s:
        (c,) = s.capture(gradients=False)
        got = s.score_ablated(0, 1, np.array([0, 3, 7]))
    # brute force: the head rebuilt from the layers on the ablated activations (skip included)
    a_in = keras.Input((6, 6, 8))
    y = model.get_layer("add")([a_in, model.get_layer("c3")(a_in)])
    head = keras.Model(a_in, model.get_layer("fc")(model.get_layer("gap")(model.get_layer("feat")(y))))
    a = np.repeat(c.activations[1:2].transpose(0, 2, 3, 1), 3, axis=0)
    for b, ch in enumerate([0, 3, 7]):
        a[b, :, :, ch] = 0
    ref = np.asarray(head(a))[:, c.targets[1]]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- nested backbones


@pytest.fixture(scope="module")
def resnet_forms():
    """The seed's model in its forms, all sharing one ResNet-50 (weights=None) and one Dense."""
    keras.utils.set_random_seed(0)
    backbone = keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3)
    )
    fc = L.Dense(7, name="fc")
    flat = keras.Model(backbone.input, fc(backbone.output), name="flat")
    inp = keras.Input((64, 64, 3))
    nested_functional = keras.Model(inp, fc(backbone(inp)), name="nested_functional")
    nested_sequential = keras.Sequential([keras.Input((64, 64, 3)), backbone, fc])
    # the backbone without its pooling, as a nested model followed by GAP + Dense
    features = keras.Model(backbone.input, backbone.get_layer("conv5_block3_out").output, name="resnet50")
    gap = ka.gap_classifier(features, 7)
    gap.get_layer("fc").set_weights(fc.get_weights())
    seq = keras.Sequential([keras.Input((64, 64, 3)), features, L.GlobalAveragePooling2D(), fc])
    return {
        "flat": (flat, "conv5_block3_out"),
        "nested_functional": (nested_functional, "resnet50/conv5_block3_out"),
        "nested_sequential": (nested_sequential, "resnet50/conv5_block3_out"),
        "gap_classifier": (gap, "resnet50/conv5_block3_out"),
        "sequential_gap_dense": (seq, "resnet50/conv5_block3_out"),
    }


def test_nested_backbones_agree(resnet_forms):
    x = np.random.default_rng(3).standard_normal((2, 64, 64, 3)).astype(np.float32)
    ref = None
    for name, (model, path) in resnet_forms.items():
        # automatically and by short name: the same layer, inside the nested model
        assert ka.find_layer(model)[0] == path, name
        assert ka.find_layer(model, "conv5_block3_out")[0] == path, name
        (c,) = ka.capture(model, x, layer=path)
        assert c.layer == path
        assert c.activations.shape == (2, 2048, 2, 2)
        assert c.weights is not None, name
        np.testing.assert_allclose(c.logits, np.asarray(model(x, training=False)), rtol=1e-4, atol=1e-5)
        if ref is None:
            ref = c
            continue
        np.testing.assert_allclose(c.logits, ref.logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c.gradients, ref.gradients, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(c.weights, ref.weights)
    model, path = resnet_forms["nested_sequential"]
    e = ka.explain(model, x, method="cam")
    assert e.maps.shape == (2, 64, 64) and e.layers == (path,)
    cam = np.einsum("nk,nkhw->nhw", ref.weights[e.targets], ref.activations)
    np.testing.assert_allclose(e.raw, cam, rtol=1e-4, atol=1e-5)


def test_nested_layer_by_object_and_nested_model_name(resnet_forms):
    model, path = resnet_forms["nested_functional"]
    backbone = model.get_layer("resnet50")
    assert ka.find_layer(model, backbone.get_layer("conv5_block3_out"))[0] == path
    assert ka.find_layer(model, "resnet50/conv4_block6_out")[0] == "resnet50/conv4_block6_out"
    with pytest.raises(ValueError, match="conv5_block3_out"):
        ka.find_layer(model, "resnet50/conv5_block3_ou")
    gap = resnet_forms["gap_classifier"][0]
    # the nested model's own name is its output, the same feature map
    x = np.zeros((1, 64, 64, 3), np.float32)
    assert ka.capture(gap, x, layer="resnet50")[0].activations.shape == (1, 2048, 2, 2)


def test_gap_classifier_with_softmax_explains_logits():
    base = small_model()
    backbone = keras.Model(base.input, base.get_layer("feat").output, name="bb")
    plain = ka.gap_classifier(backbone, 3)
    soft = ka.gap_classifier(backbone, 3, activation="softmax")
    soft.get_layer("fc").set_weights(plain.get_layer("fc").get_weights())
    x = images(2)
    assert ka.find_layer(soft)[0] == "bb/feat"
    (a,), (b,) = ka.capture(plain, x), ka.capture(soft, x)
    np.testing.assert_allclose(b.logits, a.logits, rtol=1e-6)
    np.testing.assert_allclose(b.gradients, a.gradients, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(soft(x)).sum(axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- other backends

_BACKEND_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from cam_core.adapters import keras as ka

    L = keras.layers
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inp)
    y = L.Conv2D(5, 3, padding="same", name="c2")(x)
    y = L.ReLU(name="feat")(L.Add(name="add")([x, y]))
    out = L.Dense(4, activation="softmax", name="fc")(L.GlobalAveragePooling2D()(y))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.3 for w in model.weights])
    x = rng.random((2, 10, 10, 3), dtype=np.float32)
    result = {"backend": keras.backend.backend()}
    for method in %(methods)r:
        e = ka.explain(model, x, method=method, batch_size=8, targets=[1, 2],
                       layer={"cam": "feat", "fullgrad": None}.get(method, ["c1", "feat"]))
        result[method] = e.maps.tolist()
    (c,) = ka.capture(model, x, layer="c1", targets=lambda z: z[:, 0] - z[:, 3])
    result["callable_grad"] = c.gradients.tolist()
    result["logits"] = c.logits.tolist()
    (h,) = ka.capture(model, x, layer="c1", targets=ka.rest_target([1, 2]), hvp=True)
    result["hvp"] = h.hvp.tolist()
    result["guided"] = ka.guided_backprop(model, x, targets=[1, 2]).tolist()
    vin = keras.Input((8, 8, 3))  # LeGrad on a small transformer (two attention blocks)
    t = L.Reshape((16, 6))(L.Conv2D(6, 2, strides=2)(vin))
    for i in range(2):
        y = L.LayerNormalization()(t)
        t = L.Add(name=f"block_{i}")([t, L.MultiHeadAttention(2, 3)(y, y)])
    vit = keras.Model(vin, L.Dense(4)(L.GlobalAveragePooling1D()(t)))
    vit.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.5 for w in vit.weights])
    xv = rng.random((2, 8, 8, 3), dtype=np.float32)
    result["legrad"] = ka.explain(vit, xv, method="legrad", layer=["block_0", "block_1"],
                                  targets=[1, 2]).raw.tolist()
    print("RESULT" + json.dumps(result))
    """
)
_BACKEND_METHODS = ("cam", "gradcam", "gradcam++", "layercam", "scorecam", "ablationcam",
                    "refinecam", "shapleycam", "fullgrad")


def _run_backend(backend: str) -> dict:
    """The script's result on ``backend``: in this process for TensorFlow, else a subprocess."""
    script = _BACKEND_SCRIPT % {"methods": _BACKEND_METHODS}
    if backend == keras.backend.backend():
        namespace: dict = {}
        exec(compile(script.replace("print(", "(lambda *a: None)("), "<backend script>", "exec"), namespace)
        return namespace["result"]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT"):])


def _same_maps(other: dict, backend: str) -> None:
    assert other["backend"] == backend
    ref = _run_backend("tensorflow")
    assert np.abs(np.array(ref["hvp"])).max() > 1e-3  # a second-order term to compare
    for key in (*_BACKEND_METHODS, "callable_grad", "logits", "hvp", "guided", "legrad"):
        np.testing.assert_allclose(np.array(other[key]), np.array(ref[key]), atol=1e-5, err_msg=key)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="compares with TensorFlow")
def test_torch_backend_gives_the_tensorflow_maps():
    pytest.importorskip("torch", reason="torch is not installed: the Keras torch backend is untested")
    _same_maps(_run_backend("torch"), "torch")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="compares with TensorFlow")
def test_jax_backend_gives_the_tensorflow_maps():
    pytest.importorskip("jax", reason="jax is not installed: the Keras JAX backend is untested here")
    _same_maps(_run_backend("jax"), "jax")
