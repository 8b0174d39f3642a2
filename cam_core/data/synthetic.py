"""The synthetic localisation set (shapes on textures from scikit-image's photographs) and
the sample photographs with this project's box annotations."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cam_core._validate import physical_memory
from cam_core.data.records import frozen

# --------------------------------------------------------------------------------------------
# the synthetic dataset

# Each shape is a list of (polygon, sign) in a unit frame where the shape spans [-1, 1] on its
# longer side; sign +1 paints, -1 erases (holes). Circles are 48-gons.


def _circle(cx: float = 0.0, cy: float = 0.0, r: float = 1.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    pts[:, 1] -= (pts[:, 1].max() + pts[:, 1].min()) / 2.0  # centre it vertically
    return pts


_SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "disc": [(_circle(), 1)],
    "square": [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 1)],
    "triangle": [(np.array([[0, -1], [1, 1], [-1, 1]], float), 1)],
    "cross": [(np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
                         [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]),
               1)],
    "ring": [(_circle(), 1), (_circle(r=0.55), -1)],
    "star": [(_star(), 1)],
    "diamond": [(np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], float), 1)],
    "bar": [(np.array([[-1, -0.28], [1, -0.28], [1, 0.28], [-1, 0.28]]), 1)],
    "L-shape": [(np.array([[-1, -1], [-0.3, -1], [-0.3, 0.35], [1, 0.35], [1, 1], [-1, 1]]), 1)],
    "arrow": [(np.array([[-1, -0.25], [0.15, -0.25], [0.15, -0.8], [1, 0], [0.15, 0.8],
                         [0.15, 0.25], [-1, 0.25]]), 1)],
    "crescent": [(_circle(), 1), (_circle(cx=0.45, cy=-0.2, r=0.8), -1)],
    "hourglass": [(np.array([[-0.8, -1], [0.8, -1], [0.12, 0], [0.8, 1], [-0.8, 1],
                             [-0.12, 0]]), 1)],
}
SHAPES: tuple[str, ...] = tuple(_SHAPES)
"""The shape classes of :func:`make_synthetic`, in class-index order."""

# Photographs shipped with scikit-image (no download), used as background textures. Not
# coins(): its round coins would look like the disc and ring classes.
_TEXTURES: tuple[str, ...] = (
    "brick", "grass", "gravel", "camera", "text", "cell", "moon",
    "astronaut", "coffee", "rocket", "chelsea", "immunohistochemistry",
)


@dataclass(frozen=True)
class SyntheticData:
    """The synthetic localisation set of :func:`make_synthetic`.

    Attributes
    ----------
    images : ndarray of uint8, shape (N, S, S, 3)
        RGB images.
    labels : ndarray of int64, shape (N,)
        The shape class of each image, an index into ``class_names``.
    boxes : list of ndarray of int64, each (1, 4)
        The exact half-open box of the object: the tight extent of its pixels.
    class_names : tuple of str
    masks : ndarray of bool, shape (N, S, S)
        The object's pixels (the ground truth of ``boxes``, usable for pixel metrics).
    backgrounds : ndarray of int64, shape (N,)
        The texture each background was cut from, an index into ``background_names``; drawn
        independently of the class.
    background_names : tuple of str
        The scikit-image sample images used as textures.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: list[np.ndarray]
    class_names: tuple[str, ...]
    masks: np.ndarray
    backgrounds: np.ndarray
    background_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


@functools.lru_cache(maxsize=4)
def _texture_pool(size: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """Each texture as float32 arrays (h, w, c) standardised to mean 0, std 1 per channel, at
    three scales (shorter side 1.5, 3 and 6 times ``size``), so that a crop is only a slice."""
    import skimage.data

    pool = []
    for name in _TEXTURES:
        img = getattr(skimage.data, name)()
        if img.dtype != np.uint8:
            img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.dtype.kind == "f" else img
        pil = Image.fromarray(img)
        scales = []
        for factor in (1.5, 3.0, 6.0):
            short = max(size + 1, int(round(factor * size)))
            ratio = short / min(pil.size)
            new = (max(size + 1, round(pil.size[0] * ratio)), max(size + 1, round(pil.size[1] * ratio)))
            arr = np.asarray(pil.resize(new, Image.Resampling.BILINEAR), dtype=np.float32)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            arr = (arr - arr.mean(axis=(0, 1))) / (arr.std(axis=(0, 1)) + 1e-6)
            scales.append(arr)
        pool.append(tuple(scales))
    return tuple(pool)


def _rasterise(parts, size: int) -> np.ndarray:
    from skimage.draw import polygon

    mask = np.zeros((size, size), dtype=bool)
    for pts, sign in parts:
        rr, cc = polygon(pts[:, 1], pts[:, 0], shape=(size, size))
        mask[rr, cc] = sign > 0
    return mask


def _object_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """Place ``shape`` at a random position, scale, aspect and tilt; return its pixel mask."""
    # One canonical orientation per class (+-10 degrees): quarter turns made the set markedly
    # slower to learn for small CNNs, and a square must never look like a diamond.
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    if rng.random() < 0.5 and shape in {"L-shape", "crescent"}:
        flip = np.array([-1.0, 1.0])  # mirror image, same class
    else:
        flip = np.array([1.0, 1.0])
    aspect = rng.uniform(0.85, 1.15)
    extent = rng.uniform(0.25, 0.55) * size  # the longer side of the unrotated shape, in pixels
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = np.array([aspect, 1.0 / aspect]) * flip * extent / 2.0
    placed = [((pts * scale) @ rot.T, sign) for pts, sign in _SHAPES[shape]]
    allpts = np.concatenate([p for p, _ in placed])
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    cx = rng.uniform(1.0 - lo[0], size - 2.0 - hi[0])
    cy = rng.uniform(1.0 - lo[1], size - 2.0 - hi[1])
    return _rasterise([(p + np.array([cx, cy]), s) for p, s in placed], size)


def _distractor_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A thin stroke, a curve or a small blob: clutter that is none of the shape classes."""
    from skimage.draw import bezier_curve, ellipse, line

    mask = np.zeros((size, size), dtype=bool)
    kind = rng.integers(3)
    c0 = rng.uniform(0, size - 1, size=2)
    if kind == 2:  # a small elongated blob
        r_major = rng.uniform(0.04, 0.09) * size
        r_minor = r_major * rng.uniform(0.3, 0.6)
        rr, cc = ellipse(c0[1], c0[0], r_minor, r_major, shape=(size, size),
                         rotation=rng.uniform(0, np.pi))
        mask[rr, cc] = True
        return mask
    length = rng.uniform(0.15, 0.35) * size
    direction = rng.uniform(0, 2 * np.pi)
    c1 = c0 + length * np.array([np.cos(direction), np.sin(direction)])
    c1 = np.clip(c1, 0, size - 1)
    if kind == 0:  # a straight stroke
        rr, cc = line(int(c0[1]), int(c0[0]), int(c1[1]), int(c1[0]))
    else:  # a curve through a random control point
        mid = (c0 + c1) / 2 + rng.normal(0, length / 2.5, size=2)
        mid = np.clip(mid, 0, size - 1)
        rr, cc = bezier_curve(int(c0[1]), int(c0[0]), int(mid[1]), int(mid[0]),
                              int(c1[1]), int(c1[0]), weight=1.0, shape=(size, size))
    mask[rr, cc] = True
    if size >= 96 or rng.random() < 0.5:  # sometimes two pixels wide
        mask[:, 1:] |= mask[:, :-1]
    return mask


def _random_colour(rng: np.random.Generator, away_from: np.ndarray | None = None,
                   distance: float = 0.0) -> np.ndarray:
    for _ in range(50):
        c = rng.uniform(0.0, 1.0, size=3)
        if away_from is None or np.linalg.norm(c - away_from) >= distance:
            return c
    return 1.0 - np.round(away_from)  # the far corner of the RGB cube


def _synthetic_image(rng: np.random.Generator, label: int, size: int, pool) -> tuple:
    # 1. background: a random texture, crop, flip and colouring; nothing here sees `label`
    tex = int(rng.integers(len(pool)))
    src = pool[tex][int(rng.integers(3))]
    y = int(rng.integers(src.shape[0] - size + 1))
    x = int(rng.integers(src.shape[1] - size + 1))
    crop = src[y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    base = rng.uniform(0.15, 0.85, size=3)
    contrast = rng.uniform(0.06, 0.14)
    if crop.shape[2] == 3:
        crop = crop[:, :, rng.permutation(3)]
        img = base + contrast * crop
    else:
        tint = rng.uniform(0.6, 1.4, size=3)
        img = base + contrast * crop * tint
    # 2. the object's pixels (placed before the clutter so that clutter can avoid it)
    mask = _object_mask(rng, SHAPES[label], size)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    # 3. clutter: never touching the object, at most 10% of its pixels inside the object's box
    near = mask.copy()
    near[1:] |= mask[:-1]; near[:-1] |= mask[1:]  # noqa: E702
    near[:, 1:] |= near[:, :-1]; near[:, :-1] |= near[:, 1:]  # noqa: E702
    near[1:] |= near[:-1].copy(); near[:-1] |= near[1:].copy()  # noqa: E702
    in_box = np.zeros_like(mask)
    in_box[box[1] : box[3], box[0] : box[2]] = True
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(10):
            d = _distractor_mask(rng, size)
            n = d.sum()
            if n and not (d & near).any() and (d & in_box).sum() <= 0.1 * n:
                img[d] = _random_colour(rng)
                break
    # 4. the object: a colour far from the background's, with a gentle shading
    colour = _random_colour(rng, away_from=base, distance=0.45)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    g = rng.uniform(-0.12, 0.12, size=2)
    shade = (g[0] * (xx - 0.5) + g[1] * (yy - 0.5))[mask]
    img[mask] = colour + shade[:, None]
    out = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return out, mask, box, tex


def _check_fits_memory(n: int, size: int) -> None:
    """Refuse a synthetic set larger than the machine's memory (images and masks: 4 bytes a
    pixel) instead of running for days; no check where the memory size is unknown."""

    memory = physical_memory()
    need = n * size * size * 4
    if memory is not None and need > memory:
        raise ValueError(
            f"`n` = {n} images of {size}x{size} need {need / 2**30:.3g} GiB; this machine has "
            f"{memory / 2**30:.3g} GiB of memory. Make the set in parts (image i depends only "
            f"on (seed, i)) or lower `n`"
        )


def make_synthetic(n: int, *, seed: int = 0, size: int = 64, num_classes: int = 10) -> SyntheticData:
    """Generate a synthetic weakly supervised localisation set, the same for the same arguments.

    Each image shows one object, a filled shape of class ``SHAPES[label]`` (disc, square,
    triangle, cross, ring, star, diamond, bar, L-shape, arrow, crescent, hourglass) whose box spans
    about 20-65% of the image side on its longer axis, at a random position, aspect (0.85-1.15),
    tilt (+-10 degrees around one canonical orientation per class; the L-shape and crescent may
    be mirrored) and colour, on a background
    cut from a scikit-image sample photograph (random texture, scale, crop, flips, channel order,
    mean colour and contrast), with 1-3 pieces of clutter (thin strokes, curves, small blobs) that
    never touch the object and put at most 10% of their pixels inside its box.

    The class is not predictable from the background: texture and colours are drawn without
    looking at the label. The classes are balanced: every run of ``num_classes`` consecutive
    images holds each class once, in a random order. Image ``i`` depends only on ``(seed, i)``,
    so a larger ``n`` extends a smaller one.

    Parameters
    ----------
    n : int
        Number of images (>= 1).
    seed : int
        The random seed (>= 0).
    size : int
        Side of the square images in pixels (>= 32).
    num_classes : int
        The first ``num_classes`` shapes of :data:`SHAPES` are used (2 to 12).

    Returns
    -------
    SyntheticData
        ``boxes[i]`` is the tight half-open box of ``masks[i]``.
    """
    for name, value, low in (("n", n, 1), ("seed", seed, 0), ("size", size, 32),
                             ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"`{name}` must be an int; got {type(value).__name__}")
        if value < low:
            raise ValueError(f"`{name}` must be >= {low}; got {value}")
    if num_classes > len(SHAPES):
        raise ValueError(f"`num_classes` must be <= {len(SHAPES)}; got {num_classes}")
    n, seed, size, num_classes = int(n), int(seed), int(size), int(num_classes)
    _check_fits_memory(n, size)
    pool = _texture_pool(size)
    labels = np.concatenate([
        np.random.default_rng([seed, 1, block]).permutation(num_classes)
        for block in range(-(-n // num_classes))
    ])[:n].astype(np.int64)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    backgrounds = np.empty(n, dtype=np.int64)
    boxes = []
    for i in range(n):
        rng = np.random.default_rng([seed, 0, i])
        images[i], masks[i], box, backgrounds[i] = _synthetic_image(rng, int(labels[i]), size, pool)
        boxes.append(frozen(np.array([box], dtype=np.int64)))
    return SyntheticData(images, labels, boxes, SHAPES[:num_classes], masks, backgrounds,
                         _TEXTURES)


# --------------------------------------------------------------------------------------------
# real photographs shipped with scikit-image


@dataclass(frozen=True)
class Photo:
    """A real photograph from scikit-image with this project's own box annotation.

    Attributes
    ----------
    name : str
        The ``skimage.data`` function that loads it.
    image : ndarray of uint8, shape (H, W, 3)
        RGB (grey photographs are repeated over the three channels).
    boxes : ndarray of int64, shape (G, 4)
        Half-open boxes in the image's own pixels.
    class_name : str
        What the boxes hold.
    imagenet_index : int or None
        The ImageNet-1k class index (the order of ``classes.tsv``) of ``class_name``, or None
        when ImageNet-1k has no such class.
    """

    name: str
    image: np.ndarray
    boxes: np.ndarray
    class_name: str
    imagenet_index: int | None


# Annotated for this project by looking at each image with a 10-pixel grid (about +-2 pixels):
# name, boxes (x0, y0, x1, y1) half-open, class name, ImageNet-1k index.
_PHOTO_ANNOTATIONS: tuple[tuple[str, tuple[tuple[int, int, int, int], ...], str, int | None], ...] = (
    # the cat's head and chest fill the frame up to the right ear's tip
    ("chelsea", ((0, 0, 402, 300),), "tabby cat", 281),
    # the cup with its handle, without saucer and spoon
    ("coffee", ((172, 18, 409, 305),), "espresso", 967),
    # the launcher on its pad, from the fairing's tip to the launch table
    ("rocket", ((310, 126, 336, 407),), "missile", 657),
    # the space shuttle model behind the astronaut (orbiter, tank, boosters; not the plinth)
    ("astronaut", ((354, 0, 456, 270),), "space shuttle", 812),
    # the tripod from its head under the camcorder to the feet at the image's bottom edge
    ("camera", ((229, 184, 407, 512),), "tripod", 872),
    # the whole motorcycle, rear lamp to front tyre, mirror to tyre bottom (no ImageNet class)
    ("stereo_motorcycle", ((93, 77, 681, 452),), "motorcycle", None),
)


def sample_photos() -> list[Photo]:
    """Six real photographs that scikit-image ships (no download), each with a box annotation.

    The boxes are this project's own annotation (drawn by eye on a pixel grid, about +-2
    pixels), half-open in each image's own pixels: ``chelsea`` (tabby cat, ImageNet 281),
    ``coffee`` (espresso, 967), ``rocket`` (missile, 657), ``astronaut`` (the space shuttle
    model, 812), ``camera`` (tripod, 872) and ``stereo_motorcycle`` (left view; motorcycle, not
    an ImageNet-1k class). Handy for demonstrations and smoke tests on real pixels.

    Returns
    -------
    list of Photo
    """
    import skimage.data

    photos = []
    for name, boxes, class_name, index in _PHOTO_ANNOTATIONS:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
            img = img[0]
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)
        photos.append(Photo(name, frozen(img), frozen(np.array(boxes, dtype=np.int64)),
                            class_name, index))
    return photos
