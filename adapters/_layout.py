"""Framework-free reading of layer output shapes, shared by the PyTorch and Keras adapters.

A 4-D layer output ``(N, d1, d2, d3)`` is either channels-first ``(N, K, h, w)`` or channels-last
``(N, h, w, K)``. A *spatial* reading is one whose grid has the input's aspect up to the rounding
of strided layers (``|h * W - w * H| < max(H, W)``) and is no larger than the input. Attention
tensors inside a transformer (``(N, heads, tokens, head_dim)``) and a channels-last map read as
channels-first (``h = 7``, ``w = 768`` for a 224-pixel input) fail that test.

Token outputs ``(N, P + T, D)`` have a grid ``h * w = T`` with the input's aspect after dropping
``P <= 8`` prefix tokens (class, distillation, register tokens).
"""

from __future__ import annotations

import math

MAX_PREFIX_TOKENS = 8

LAYOUTS = {
    None: None,
    "auto": None,
    "channels_first": "channels_first",
    "nchw": "channels_first",
    "channels_last": "channels_last",
    "nhwc": "channels_last",
}


def check_layout(layout) -> str | None:
    """``layout`` as ``"channels_first"``, ``"channels_last"`` or None (detect)."""
    key = layout.lower() if isinstance(layout, str) else layout
    if not (key is None or isinstance(key, str)) or key not in LAYOUTS:
        raise ValueError(
            f"`layout` must be None (detect), 'channels_first' ('NCHW') or 'channels_last' "
            f"('NHWC'); got {layout!r}"
        )
    return LAYOUTS[key]


def spatial_grid(h: int, w: int, input_size: tuple[int, int]) -> bool:
    """True when an ``h x w`` grid (more than one position) can be a feature map of the input."""
    big_h, big_w = input_size
    if h * w <= 1 or h > big_h or w > big_w:
        return False
    return abs(h * big_w - w * big_h) < max(big_h, big_w)


def readings(shape, input_size) -> tuple[bool, bool]:
    """(channels-first is spatial, channels-last is spatial) for a 4-D ``shape``."""
    _, d1, d2, d3 = shape
    return spatial_grid(d2, d3, input_size), spatial_grid(d1, d2, input_size)


def token_grid(n_tokens: int, input_size: tuple[int, int]) -> tuple[int, tuple[int, int]] | None:
    """(prefix, (h, w)) of a token sequence: the fewest prefix tokens leaving a grid of the input's
    aspect; None when there is none."""
    big_h, big_w = input_size
    for prefix in range(min(MAX_PREFIX_TOKENS, n_tokens - 1) + 1):
        t = n_tokens - prefix
        h = round(math.sqrt(t * big_h / big_w))
        if h >= 1 and t % h == 0 and h * big_w == (t // h) * big_h:
            return prefix, (h, t // h)
    return None


def layout_message(name: str, shape, why: str) -> str:
    return (
        f"cannot tell whether layer {name!r}'s output {tuple(shape)} is channels-first "
        f"(N, K, h, w) or channels-last (N, h, w, K): {why}. Pass layout='channels_first' or "
        f"layout='channels_last' (the layer's output layout)"
    )
