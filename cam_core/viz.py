"""Pictures of maps and boxes: colormaps, overlays, box drawing, grids and atomic PNG writing.

Everything here returns a NEW ``uint8`` RGB array ``(H, W, 3)`` and never modifies its inputs.
Drawing uses Pillow; nothing here needs matplotlib.

**Images** may be grey ``(H, W)``, ``(H, W, 1)``, RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)`` (the
alpha channel is dropped), either ``uint8`` (0-255) or floating point in [0, 1] (scaled by 255,
rounded, clipped). Other integer dtypes must hold values in 0-255.

**Maps** are floats in [0, 1] (values outside are clipped: a bicubic upsample may overshoot).
A colormap turns value ``v`` into the table entry ``round(255 * v)`` of a 256-entry table.

**Boxes** are ``(x0, y0, x1, y1)`` on half-open pixel edges, as everywhere in the core
(:mod:`cam_core.data`). :func:`draw_boxes` draws each outline INSIDE its box: the outermost ring
of drawn pixels is exactly the box's border pixels (columns ``x0`` and ``x1 - 1``, rows ``y0``
and ``y1 - 1``), and a wider line grows inwards. Float boxes are rounded to whole pixels first.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cam_core._io import atomic_write_bytes
from cam_core._validate import as_float_array, check_finite
from cam_core.resize import upsample

__all__ = [
    "COLORMAPS",
    "colormap",
    "draw_boxes",
    "image_grid",
    "overlay",
    "save_png",
]

# viridis (van der Walt & Smith, matplotlib 1.5), sampled at 17 evenly spaced points of the
# published 256-entry table; the 256-entry table here interpolates linearly between them.
_VIRIDIS_ANCHORS = np.array([
    [0.2670, 0.0049, 0.3294], [0.2823, 0.0950, 0.4173], [0.2788, 0.1755, 0.4834],
    [0.2590, 0.2515, 0.5247], [0.2297, 0.3224, 0.5457], [0.1994, 0.3876, 0.5546],
    [0.1727, 0.4488, 0.5579], [0.1490, 0.5081, 0.5572], [0.1276, 0.5669, 0.5506],
    [0.1206, 0.6258, 0.5335], [0.1579, 0.6838, 0.5017], [0.2461, 0.7389, 0.4520],
    [0.3692, 0.7889, 0.3829], [0.5160, 0.8312, 0.2943], [0.6785, 0.8637, 0.1895],
    [0.8456, 0.8873, 0.0997], [0.9932, 0.9062, 0.1439],
])


def _jet(v: np.ndarray) -> np.ndarray:
    # piecewise linear: dark blue (0, 0, 0.5) -> blue -> cyan -> yellow -> red -> dark red,
    # channel c = clip(1.5 - |4 v - c0|) with c0 = 3, 2, 1 for r, g, b. At v = k / 255 every
    # unclipped value is a half (255 * 1.5 = 382.5), so the table is computed in integers,
    # rounding halves up: 383 - |4 k - 255 c0|, clipped to 0..255.
    k = np.round(np.asarray(v) * 255.0).astype(np.int64)
    c0 = np.array([3, 2, 1])
    return np.clip(383 - np.abs(4 * k[..., None] - 255 * c0), 0, 255) / 255.0


def _hot(v: np.ndarray) -> np.ndarray:
    # black -> red -> yellow -> white
    return np.clip(np.stack([3 * v, 3 * v - 1, 3 * v - 2], axis=-1), 0.0, 1.0)


def _viridis(v: np.ndarray) -> np.ndarray:
    grid = np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS))
    return np.stack([np.interp(v, grid, _VIRIDIS_ANCHORS[:, c]) for c in range(3)], axis=-1)


def _gray(v: np.ndarray) -> np.ndarray:
    return np.repeat(v[..., None], 3, axis=-1)


_COLORMAP_FUNCS = {"jet": _jet, "viridis": _viridis, "gray": _gray, "hot": _hot}
COLORMAPS: tuple[str, ...] = tuple(sorted(_COLORMAP_FUNCS))
"""The names :func:`colormap` accepts."""


@functools.cache
def _table(name: str) -> np.ndarray:
    rgb = _COLORMAP_FUNCS[name](np.arange(256) / 255.0)
    table = np.floor(rgb * 255.0 + 0.5).astype(np.uint8)
    table.setflags(write=False)
    return table


def colormap(maps, /, *, name: str = "jet") -> np.ndarray:
    """Colour maps with a colormap.

    Parameters
    ----------
    maps : array_like, shape (...)
        Values in [0, 1] (clipped), any shape; must be finite.
    name : {"gray", "hot", "jet", "viridis"}
        ``"jet"``: dark blue at 0, dark red at 1 (the classic CAM display); ``"viridis"``: the
        perceptually uniform map, purple to yellow; ``"hot"``: black, red, yellow, white;
        ``"gray"``: black to white.

    Returns
    -------
    ndarray of uint8, shape (..., 3)
        RGB.
    """
    if not isinstance(name, str) or name not in _COLORMAP_FUNCS:
        raise ValueError(f"`name` must be one of {', '.join(COLORMAPS)}; got {name!r}")
    values = as_float_array(maps, "maps")
    check_finite(values, "maps")
    index = np.floor(np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.intp)
    return _table(name)[index]


def _as_rgb(image, name: str = "image") -> np.ndarray:
    """``image`` as a new uint8 (H, W, 3) array (see the module docstring for what is accepted)."""
    if isinstance(image, (str, bytes)):
        raise TypeError(f"`{name}` must be an image array; got {type(image).__name__}")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[:, :, :3] if arr.shape[2] != 1 else arr[:, :, 0]
    if arr.ndim != 2 and not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ValueError(
            f"`{name}` must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"`{name}` must not be empty; got shape {arr.shape}")
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        out = arr.copy()
    elif kind == "f":
        check_finite(arr, name)
        out = np.floor(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                f"`{name}` of integer dtype must hold values in 0..255; "
                f"got {arr.min()}..{arr.max()} ({arr.dtype})"
            )
        out = arr.astype(np.uint8)
    else:
        raise TypeError(f"`{name}` must be uint8 or float; got dtype {arr.dtype}")
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return np.ascontiguousarray(out)


def overlay(image, map, /, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:  # noqa: A002
    """Blend a colour-mapped map over an image.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)
        uint8 or float in [0, 1], any size.
    map : array_like, shape (h, w)
        Values in [0, 1]; resized to (H, W) with :func:`cam_core.resize.upsample` (bilinear,
        half-pixel centres) when its size differs, then clipped to [0, 1].
    alpha : float
        Weight of the heatmap, in [0, 1]: ``out = (1 - alpha) * image + alpha * colormap(map)``,
        rounded to uint8.
    cmap : str
        A name of :data:`COLORMAPS`.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """

    if not isinstance(cmap, str) or cmap not in _COLORMAP_FUNCS:
        raise ValueError(f"`cmap` must be one of {', '.join(COLORMAPS)}; got {cmap!r}")
    rgb = _as_rgb(image)
    values = as_float_array(map, "map", shape=("h", "w"))
    check_finite(values, "map")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"`alpha` must be a number; got {type(alpha).__name__}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]; got {alpha}")
    h, w = rgb.shape[:2]
    if values.shape != (h, w):
        values = upsample(values, (h, w))
    heat = colormap(values, name=cmap).astype(np.float64)
    out = (1.0 - float(alpha)) * rgb + float(alpha) * heat
    return np.floor(out + 0.5).astype(np.uint8)


# A palette of distinct, saturated colours for boxes (cycled).
_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)


def _colours(colors, n: int) -> list[tuple[int, int, int]]:
    if colors is None:
        return [_PALETTE[i % len(_PALETTE)] for i in range(n)]
    arr = np.asarray(colors)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"`colors` must hold RGB numbers; got dtype {arr.dtype}")
    if arr.shape == (3,):
        arr = np.broadcast_to(arr, (n, 3))
    if arr.shape != (n, 3):
        raise ValueError(f"`colors` must be one RGB triple or shape ({n}, 3); got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"`colors` must be in 0..255; got {arr.min()}..{arr.max()}")
    return [tuple(int(round(float(c))) for c in row) for row in arr]


@functools.lru_cache(maxsize=8)
def _font(size: int):
    return ImageFont.load_default(size=size)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int, int]:
    """(width, height, top offset) of ``text``: the offset aligns the ink to the box top."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top, top


def draw_boxes(image, boxes, /, *, labels: Sequence[str | None] | None = None,
               colors=None, width: int = 2) -> np.ndarray:
    """Draw box outlines (and text labels) on a copy of an image.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        See the module docstring.
    boxes : array_like, shape (G, 4)
        Half-open boxes in the image's pixels; parts outside the image are clipped, and an
        empty ``(0, 4)`` draws nothing.
    labels : sequence of str or None, length G, optional
        Text drawn on a filled rectangle of the box's colour, just above the box's top-left
        corner (inside the box when there is no room above); ``None`` entries draw no text.
    colors : RGB triple or array_like of shape (G, 3), optional
        Values 0-255. Left out: a fixed palette, cycled.
    width : int
        Line width in pixels (>= 1), drawn inside the box.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
        A new array; ``image`` is never modified.
    """
    out = _as_rgb(image)
    b = as_float_array(boxes, "boxes")
    if b.ndim == 2 and b.shape[0] == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"`boxes` must have shape (G, 4); got {b.shape}")
    check_finite(b, "boxes")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"`width` must be a positive int; got {width!r}")
    n = len(b)
    cols = _colours(colors, n)
    if labels is not None:
        if isinstance(labels, str) or len(labels) != n:
            got = "a str" if isinstance(labels, str) else f"{len(labels)} labels"
            raise ValueError(f"`labels` must hold one entry per box ({n}); got {got}")
    H_, W_ = out.shape[:2]  # clip far-away edges first (no int64 overflow; same pixels drawn)
    reach = max(H_, W_) + width + 2
    ib = np.floor(np.clip(b, -reach, reach) + 0.5).astype(np.int64)
    H, W = out.shape[:2]
    for (x0, y0, x1, y1), colour in zip(ib, cols):
        if x1 <= x0 or y1 <= y0:
            continue
        c = np.array(colour, dtype=np.uint8)
        # the four sides, each `width` pixels thick, inside the half-open box; clipped to image
        for ys, xs in (((y0, min(y0 + width, y1)), (x0, x1)),
                       ((max(y1 - width, y0), y1), (x0, x1)),
                       ((y0, y1), (x0, min(x0 + width, x1))),
                       ((y0, y1), (max(x1 - width, x0), x1))):
            ya, yb = max(ys[0], 0), min(ys[1], H)
            xa, xb = max(xs[0], 0), min(xs[1], W)
            if ya < yb and xa < xb:
                out[ya:yb, xa:xb] = c
    if labels is not None and any(t for t in labels):
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        font = _font(max(9, min(16, H // 20)))
        for (x0, y0, x1, y1), colour, text in zip(ib, cols, labels):
            if not text or x1 <= x0 or y1 <= y0:
                continue
            tw, th, top = _text_size(draw, str(text), font)
            pad = 2
            bh = th + 2 * pad
            ty = y0 - bh if y0 - bh >= 0 else max(y0, 0)
            tx = min(max(x0, 0), max(W - tw - 2 * pad, 0))
            draw.rectangle((tx, ty, tx + tw + 2 * pad - 1, ty + bh - 1), fill=colour)
            luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
            ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
            draw.text((tx + pad, ty + pad - top), str(text), fill=ink, font=font)
        out = np.asarray(pil, dtype=np.uint8).copy()
    return out


def image_grid(images, /, *, ncols: int, pad: int = 2, titles: Sequence[str] | None = None,
               background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Tile images into one picture, row by row.

    Parameters
    ----------
    images : sequence of array_like
        Images as in the module docstring; sizes may differ (each cell is as large as the
        largest image, and an image sits at its cell's top-left corner).
    ncols : int
        Cells per row (>= 1); the number of rows follows.
    pad : int
        Pixels of ``background`` between cells and around the grid (>= 0).
    titles : sequence of str, optional
        One title per image, written in a strip above it.
    background : RGB triple
        The colour of padding and empty space.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    if isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.dtype.kind in "biuf":
        images = list(images)
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        raise TypeError(f"`images` must be a sequence of images; got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("`images` is empty; need at least one image")
    if isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"`ncols` must be a positive int; got {ncols!r}")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"`pad` must be a non-negative int; got {pad!r}")
    rgbs = [_as_rgb(im, f"images[{i}]") for i, im in enumerate(images)]
    if titles is not None and (isinstance(titles, str) or len(titles) != len(rgbs)):
        raise ValueError(f"`titles` must hold one title per image ({len(rgbs)})")
    ch = max(im.shape[0] for im in rgbs)
    cw = max(im.shape[1] for im in rgbs)
    font = _font(max(9, min(16, cw // 10)))
    title_h = 0
    if titles is not None:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        title_h = max(_text_size(probe, "Hg" + "".join(map(str, titles)), font)[1] + 4, 0)
    ncols = min(int(ncols), len(rgbs))
    nrows = -(-len(rgbs) // ncols)
    cell_h = ch + title_h
    out = np.empty((nrows * (cell_h + pad) + pad, ncols * (cw + pad) + pad, 3), np.uint8)
    out[:] = np.asarray(background, dtype=np.uint8)
    for k, im in enumerate(rgbs):
        r, c = divmod(k, ncols)
        y = pad + r * (cell_h + pad) + title_h
        x = pad + c * (cw + pad)
        out[y : y + im.shape[0], x : x + im.shape[1]] = im
    if titles is not None:
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        for k, text in enumerate(titles):
            r, c = divmod(k, ncols)
            _, _, top = _text_size(draw, str(text), font)
            draw.text((pad + c * (cw + pad), pad + r * (cell_h + pad) + 2 - top), str(text),
                      fill=(0, 0, 0), font=font)
        out = np.asarray(pil, dtype=np.uint8).copy()
    return out


def save_png(array, path, /) -> Path:
    """Write an image as PNG atomically: to a temporary name in the same folder, then renamed.

    A reader never sees a half-written file, and a failure leaves no file behind (an existing
    file at ``path`` stays as it was). The folder is created when missing.

    Parameters
    ----------
    array : array_like, shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)
        uint8, or float in [0, 1] (see the module docstring); RGBA keeps its alpha.
    path : str or path-like
        The destination.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 4:
        rgba = np.concatenate([_as_rgb(arr[:, :, :3], "array"),
                               _as_rgb(arr[:, :, 3], "array")[:, :, :1]], axis=2)
        pil = Image.fromarray(rgba)
    else:
        rgb = _as_rgb(arr, "array")
        grey = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1)
        pil = Image.fromarray(rgb[:, :, 0] if grey else rgb)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
