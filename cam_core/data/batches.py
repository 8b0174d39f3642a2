"""Batches of decoded, resized images with their boxes in the working frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cam_core._progress import progress_bar
from cam_core._validate import as_size
from cam_core.boxes import scale_boxes
from cam_core.data.records import Dataset

# --------------------------------------------------------------------------------------------
# streaming


@dataclass(frozen=True)
class Batch:
    """One batch of :func:`iter_batches`.

    Attributes
    ----------
    images : ndarray of uint8, shape (B, H, W, 3)
        RGB, resized to the working size with Pillow's bilinear filter.
    labels : ndarray of int64, shape (B,)
    boxes : list of ndarray of float64, each (G, 4)
        Half-open boxes in the working frame: ``x * W / width_orig``, ``y * H / height_orig``.
    ids : tuple of str
    sizes : ndarray of int64, shape (B, 2)
        The original sizes ``(width, height)``.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: list[np.ndarray]
    ids: tuple[str, ...]
    sizes: np.ndarray


_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


def to_rgb8(im: Image.Image) -> Image.Image:
    """A Pillow image as 8-bit RGB; 16-bit images are scaled (``round(v * 255 / 65535)``).

    Pillow's own ``convert("RGB")`` clips 16-bit values at 255, so a 16-bit PNG would come out
    all white. 32-bit integer and float images have no agreed range and are refused
    (``ValueError``; the caller names the file).
    """
    if im.mode in _WIDE_MODES:
        a = np.asarray(im).astype(np.uint32)
        a8 = ((a * 255 + _WIDE_MODES[im.mode] // 2) // _WIDE_MODES[im.mode]).astype(np.uint8)
        return Image.fromarray(a8, mode="L").convert("RGB")
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        if im.mode == "I" and im.format == "PNG":  # Pillow reads some 16-bit PNGs as "I"
            a = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
            return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8),
                                   mode="L").convert("RGB")
        raise ValueError(f"{im.mode!r} pixels (32-bit integers or floats) have no agreed range; "
                         "save the image as 8- or 16-bit")
    return im.convert("RGB")


def _load_rgb(path: Path, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = to_rgb8(im)
            if size_wh is not None and im.size != size_wh:
                im = im.resize(size_wh, Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def iter_batches(dataset: Dataset, *, batch_size: int = 32, size=(224, 224),
                 progress: bool | None = False) -> Iterator[Batch]:
    """Stream a dataset as resized batches, so that memory stays flat however large it is.

    Images are read with Pillow, converted to RGB (EXIF orientation is NOT applied: annotations
    refer to the stored pixel grid) and resized to ``size`` with Pillow's bilinear filter, the
    aspect ratio not kept. Boxes are scaled from the original size (see :func:`cam_core.boxes.scale_boxes`).

    Parameters
    ----------
    dataset : Dataset
    batch_size : int
        Images per batch (the last batch may be smaller).
    size : int or tuple of int
        The working size ``(H, W)``.
    progress : bool or None
        A tqdm bar over batches: True shows one, None only on a terminal for two or more batches
        (the package's policy, :mod:`cam_core._progress`).

    Yields
    ------
    Batch
        An image that cannot be read is a ``ValueError`` naming its file.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"`dataset` must be a Dataset; got {type(dataset).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}")
    h, w = as_size(size)
    starts = progress_bar(range(0, len(dataset), int(batch_size)), progress=progress, auto_min=2,
                          desc="images", unit="batch")
    for start in starts:
        chunk = dataset.records[start : start + int(batch_size)]
        images = np.stack([_load_rgb(r.path, (w, h)) for r in chunk])
        yield Batch(
            images=images,
            labels=np.array([r.label for r in chunk], dtype=np.int64),
            boxes=[scale_boxes(r.boxes, r.size, (h, w)) for r in chunk],
            ids=tuple(r.id for r in chunk),
            sizes=np.array([r.size for r in chunk], dtype=np.int64).reshape(-1, 2),
        )


