"""Boxes: from masks and maps, between formats, and their overlaps.

**The box convention of cam_core.** A box is ``(x0, y0, x1, y1)`` on half-open pixel edges: it
covers the pixels with ``x0 <= x < x1`` and ``y0 <= y < y1`` (x is the column, y the row), so one
pixel at column 3, row 5 is ``(3, 5, 4, 6)`` and the area is ``(x1 - x0) * (y1 - y0)``. Boxes of
one image are a ``(K, 4)`` array; boxes found in a mask are int64, and a mask with no component
gives an empty ``(0, 4)`` int64 array, never a sentinel box. The IoU of two boxes whose union is
empty is 0. Other layouts (inclusive corners, width/height, centres, TFDS's normalised
``(ymin, xmin, ymax, xmax)``) are converted with :func:`convert_boxes`.

**Boxes in a map's frame (the ground truth).** Annotations keep boxes in the pixels of the
ORIGINAL image, with its size ``(width, height)``; a map of size ``(H, W)`` is scored against them
scaled to its frame, here and nowhere else. :func:`scale_boxes` scales half-open edges,
``x * W / width`` (floats: a box covering the whole image still covers the whole map);
:func:`scale_boxes_wsol` scales inclusive corners as the WSOL reference does,
``int(x * W / width)``; :func:`ground_truth` gives an image's boxes for either protocol of
:class:`cam_core.metrics.BoxAccuracy` (the evaluation engine, the command line and the benchmarks
all call it).

Components are found with :func:`scipy.ndimage.label` at 8- or 4-connectivity. "Largest" means
the most pixels; ties go to the component whose first pixel comes first in row-major order (top
row first, then leftmost), which is also the order in which :func:`scipy.ndimage.label` numbers
them.

Validation: boxes must have shape ``(N, 4)`` (the shape received is echoed), hold finite numbers,
and satisfy ``x1 >= x0`` and ``y1 >= y0``; a violation is a ``ValueError`` naming the parameter
and the first offending row. Inputs are never modified.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from cam_core._validate import (
    accumulation_dtype,
    array_namespace,
    as_boxes,
    as_float_array,
    as_mask,
    as_real,
    as_size,
    check_box_order,
    check_finite,
    checked_boxes,
    device_of,
    is_numpy_namespace,
    to_numpy,
)
from cam_core.threshold import binarize

__all__ = [
    "FORMATS",
    "box_area",
    "best_iou",
    "box_iou",
    "boxes_from_map",
    "boxes_from_mask",
    "convert_boxes",
    "ground_truth",
    "mask_iou",
    "paired_iou",
    "scale_boxes",
    "scale_boxes_wsol",
]

#: Box layouts understood by :func:`convert_boxes`.
FORMATS = ("xyxy", "xyxy_inclusive", "xywh", "cxcywh", "yxyx_normalized")
_MODES = ("largest", "all", "peak")
_EMPTY = np.zeros((0, 4), dtype=np.int64)


def _structure(connectivity) -> np.ndarray:
    if isinstance(connectivity, bool) or connectivity not in (4, 8):
        raise ValueError(f"`connectivity` must be 4 or 8; got {connectivity!r}")
    return ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def boxes_from_mask(mask, /, *, mode: str = "largest", connectivity: int = 8,
                    score_map=None) -> np.ndarray:
    """Bounding boxes of the connected components of a mask.

    Parameters
    ----------
    mask : array_like of bool, shape (H, W)
        Integers 0/1 are accepted too.
    mode : {"largest", "all", "peak"}
        ``"largest"``: the component with the most pixels (ties: first in row-major order of the
        components' first pixels). ``"all"``: every component, sorted by pixel count, largest
        first (ties in row-major order). ``"peak"``: the component holding the mask pixel with
        the highest ``score_map`` value (ties: the first such pixel in row-major order).
    connectivity : {8, 4}
        8: pixels touching by a corner are connected; 4: only by an edge.
    score_map : array_like, shape (H, W), optional
        Required for ``mode="peak"``, refused otherwise.

    Returns
    -------
    ndarray of int64, shape (K, 4)
        Half-open ``(x0, y0, x1, y1)`` boxes; ``K`` is 0 for an empty mask, else 1 (``"largest"``,
        ``"peak"``) or the number of components (``"all"``).
    """
    mask = as_mask(mask, "mask")
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}")
    structure = _structure(connectivity)
    if mode == "peak":
        if score_map is None:
            raise ValueError("`score_map` is required for mode='peak'; got None")
        score = as_float_array(score_map, "score_map", shape=mask.shape)
        check_finite(score, "score_map")
    elif score_map is not None:
        raise ValueError(f"`score_map` is only used with mode='peak'; got mode={mode!r}")
    labels, count = ndi.label(mask, structure=structure)
    if count == 0:
        return _EMPTY.copy()
    slices = ndi.find_objects(labels)
    if mode == "largest":
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        chosen = [int(np.argmax(sizes))]  # argmax takes the first maximum: row-major order
    elif mode == "all":
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        chosen = np.argsort(-sizes, kind="stable").tolist()
    else:
        flat = np.where(mask, score, -np.inf).ravel()
        chosen = [int(labels.ravel()[int(np.argmax(flat))]) - 1]
    out = np.empty((len(chosen), 4), dtype=np.int64)
    for row, k in enumerate(chosen):
        ys, xs = slices[k]
        out[row] = (xs.start, ys.start, xs.stop, ys.stop)
    return out


def boxes_from_map(map, /, *, threshold: float = 0.2, method: str = "fraction",  # noqa: A002
                   mode: str = "largest", connectivity: int = 8) -> np.ndarray:
    """Boxes of one map: threshold it (:func:`cam_core.threshold.binarize`), then box components.

    Parameters
    ----------
    map : array_like, shape (H, W)
        One map (finite values; normalised maps lie in [0, 1]).
    threshold : float
        The fraction of the maximum for ``method="fraction"`` (0.2: the CAM paper; 0.15:
        Grad-CAM), the percentile ``q`` for ``method="percentile"``; not used by ``"otsu"``.
    method : {"fraction", "otsu", "percentile"}
    mode : {"largest", "all", "peak"}
        As in :func:`boxes_from_mask`; ``"peak"`` uses the map itself as the score.
    connectivity : {8, 4}

    Returns
    -------
    ndarray of int64, shape (K, 4)
        Half-open ``(x0, y0, x1, y1)`` boxes (empty ``(0, 4)`` when nothing passes the threshold).
    """

    arr = as_float_array(map, "map")
    if arr.ndim != 2:
        raise ValueError(f"`map` must have shape (H, W); got {tuple(arr.shape)}")
    threshold = _threshold_value(threshold, method)
    mask = binarize(arr, method=method, value=None if method == "otsu" else threshold)
    return boxes_from_mask(mask, mode=mode, connectivity=connectivity,
                           score_map=arr if mode == "peak" else None)


def _threshold_value(threshold, method):
    """``threshold`` checked under its own name: a real number in [0, 1] (fraction) or [0, 100]
    (percentile); anything for ``"otsu"``, which does not use it."""

    if method == "fraction":
        return as_real(threshold, "threshold", low=0.0, high=1.0)
    if method == "percentile":
        return as_real(threshold, "threshold", low=0.0, high=100.0)
    return threshold


def _snap(values: np.ndarray, scale: float) -> np.ndarray:
    """Round values within 1e-9 pixels of a whole number to it (exact integer round trips)."""
    near = np.round(values)
    return np.where(np.abs(values - near) <= 1e-9 * max(scale, 1.0), near, values)


def convert_boxes(boxes, /, src: str, dst: str, *, size=None) -> np.ndarray:
    """Convert boxes between layouts.

    Parameters
    ----------
    boxes : array_like, shape (N, 4)
    src, dst : {"xyxy", "xyxy_inclusive", "xywh", "cxcywh", "yxyx_normalized"}
        ``"xyxy"``: cam_core's half-open ``(x0, y0, x1, y1)``. ``"xyxy_inclusive"``: the last
        covered pixel, ``(x0, y0, x1 - 1, y1 - 1)`` (VOC, ImageNet, the WSOL metadata).
        ``"xywh"``: ``(x0, y0, width, height)`` (COCO). ``"cxcywh"``: centre and size,
        ``((x0 + x1) / 2, (y0 + y1) / 2, width, height)``. ``"yxyx_normalized"``: TFDS's
        ``(ymin, xmin, ymax, xmax)`` as fractions of the image height and width, on the same
        half-open edges (``ymax = y1 / H``).
    size : int or (H, W), optional
        The image size; required when either layout is ``"yxyx_normalized"``.

    Returns
    -------
    ndarray, shape (N, 4)
        int64 when the input is integer and both layouts are integer ones (``"xyxy"``,
        ``"xyxy_inclusive"``, ``"xywh"``); float otherwise (float32 stays float32, else float64).
        Integer boxes survive a round trip through any layout exactly: pixel values within 1e-9
        of a whole number after un-normalising are snapped to it.
    """
    for name, value in (("src", src), ("dst", dst)):
        if value not in FORMATS:
            raise ValueError(f"`{name}` must be one of {FORMATS}; got {value!r}")
    arr = as_boxes(boxes, "boxes")
    if "yxyx_normalized" in (src, dst):
        if size is None:
            raise ValueError("`size` (H, W) is required with 'yxyx_normalized'; got None")
        height, width = as_size(size)
    integer = arr.dtype.kind == "i" and src in FORMATS[:3] and dst in FORMATS[:3]
    out_dtype = np.int64 if integer else (np.float32 if arr.dtype == np.float32 else np.float64)
    a = arr.astype(np.int64 if integer else np.float64)
    # to half-open xyxy
    if src == "xyxy":
        xyxy = a.copy()
    elif src == "xyxy_inclusive":  # x1 = x0 - 1 is an empty box
        xyxy = a + np.array([0, 0, 1, 1], dtype=a.dtype)
    elif src == "xywh":
        if np.any(a[:, 2:] < 0):
            row = int(np.flatnonzero((a[:, 2:] < 0).any(axis=1))[0])
            raise ValueError(f"`boxes` row {row}: negative width or height (got {a[row].tolist()})")
        xyxy = np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], axis=1)
    elif src == "cxcywh":
        if np.any(a[:, 2:] < 0):
            row = int(np.flatnonzero((a[:, 2:] < 0).any(axis=1))[0])
            raise ValueError(f"`boxes` row {row}: negative width or height (got {a[row].tolist()})")
        half = a[:, 2:] / 2
        xyxy = np.concatenate([a[:, :2] - half, a[:, :2] + half], axis=1)
    else:
        ymin, xmin, ymax, xmax = a.T
        xyxy = np.stack([_snap(xmin * width, width), _snap(ymin * height, height),
                         _snap(xmax * width, width), _snap(ymax * height, height)], axis=1)
    check_box_order(xyxy, "boxes", echo=a)
    # from half-open xyxy
    if dst == "xyxy":
        out = xyxy
    elif dst == "xyxy_inclusive":
        out = xyxy - np.array([0, 0, 1, 1], dtype=xyxy.dtype)
    elif dst == "xywh":
        out = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    elif dst == "cxcywh":
        out = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    else:
        out = np.stack([xyxy[:, 1] / height, xyxy[:, 0] / width,
                        xyxy[:, 3] / height, xyxy[:, 2] / width], axis=1)
    return np.ascontiguousarray(out, dtype=out_dtype)


# --------------------------------------------------------------------------------------------
# scaling boxes to a map's frame: the ground truth of an image


def ground_truth(boxes, /, original_size, size, *, protocol: str = "native") -> np.ndarray:
    """An image's ground-truth boxes in the frame of a map of ``size``, as ``protocol`` scores them.

    Parameters
    ----------
    boxes : array_like, shape (G, 4)
        Half-open ``(x0, y0, x1, y1)`` in the ORIGINAL image's pixels (a
        :class:`cam_core.data.Record`'s ``boxes``).
    original_size : (width, height)
        The original image's size, in the annotation files' order (a record's ``size``).
    size : int or (H, W)
        The map's size.
    protocol : {"native", "wsol"}
        "native": half-open float boxes, ``x * W / width`` (:func:`scale_boxes`). "wsol": the
        WSOL reference's inclusive-corner integer boxes, ``int(x * W / width)`` on the original
        inclusive corners (:func:`scale_boxes_wsol`), for ``BoxAccuracy(protocol="wsol")``.

    Returns
    -------
    ndarray, shape (G, 4)
        float64 ("native") or int64 ("wsol").
    """
    if original_size is None or isinstance(original_size, (int, np.integer)):
        raise TypeError(f"`original_size` must be a (width, height) pair; got {original_size!r}")
    width, height = as_size(original_size, "original_size")  # checked as a pair; order (w, h)
    size = as_size(size, "size")
    if protocol == "native":
        return scale_boxes(boxes, (width, height), size)
    if protocol == "wsol":
        inclusive = checked_boxes(boxes, "boxes") - np.array([0, 0, 1, 1])
        return scale_boxes_wsol(inclusive, (height, width), size)
    raise ValueError(f"`protocol` must be 'native' or 'wsol'; got {protocol!r}")


def scale_boxes(boxes, /, from_size, to_size) -> np.ndarray:
    """Scale half-open boxes from one image size to another.

    Parameters
    ----------
    boxes : array_like, shape (G, 4)
        ``(x0, y0, x1, y1)`` in the pixels of an image of ``from_size``.
    from_size : tuple of int
        ``(width, height)`` of the frame of ``boxes`` (the annotation-file order).
    to_size : int or tuple of int
        The working size ``(height, width)`` (the core's order).

    Returns
    -------
    ndarray of float64, shape (G, 4)
        ``x * W / width`` and ``y * H / height`` for every edge.
    """
    b = _scalable_boxes(boxes)
    if from_size is None or isinstance(from_size, (int, np.integer)):
        raise TypeError(f"`from_size` must be a (width, height) pair; got {from_size!r}")
    height, width = as_size(from_size, "from_size")[::-1]  # checked as a pair; order (w, h)
    h, w = as_size(to_size, "to_size")
    with np.errstate(over="ignore"):
        out = b * np.array([w, h, w, h], dtype=np.float64) / np.array([width, height, width, height])
    if not np.isfinite(out).all():
        raise ValueError(f"`boxes` scaled by {to_size!r} / {from_size!r} overflow float64")
    return out


def _scalable_boxes(boxes) -> np.ndarray:
    """``boxes`` as finite float64 ``(G, 4)`` with ``x0 <= x1`` and ``y0 <= y1``."""
    b = as_float_array(boxes, "boxes").astype(np.float64, copy=False)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"`boxes` must have shape (G, 4); got {b.shape}")
    check_finite(b, "boxes")
    inverted = np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))
    if inverted.size:
        i = int(inverted[0])
        raise ValueError(
            f"`boxes` must have x0 <= x1 and y0 <= y1; got {b[i].tolist()} at row {i}"
        )
    return b


def scale_boxes_wsol(boxes_inclusive_original, /, original_size, target_size=(224, 224)
                     ) -> np.ndarray:
    """Scale inclusive-corner boxes to the map's size as the WSOL reference does.

    Each coordinate becomes ``int(x * target / original)`` (float arithmetic, truncation), the
    x coordinates with the widths and the y coordinates with the heights.

    Parameters
    ----------
    boxes_inclusive_original : array_like, shape (G, 4)
        ``(x0, y0, x1, y1)`` with inclusive corners, in the original image's pixels.
    original_size : int or (H, W)
        The original image's height and width (note: (H, W), not the reference's (W, H)).
    target_size : int or (H, W)
        The map's size; 224 x 224 in the reference.

    Returns
    -------
    ndarray of int64, shape (G, 4)
        Inclusive-corner boxes in the map's frame, for ``BoxAccuracy(protocol="wsol")``.
    """
    boxes = checked_boxes(boxes_inclusive_original, "boxes_inclusive_original")
    oh, ow = as_size(original_size, "original_size")
    th, tw = as_size(target_size, "target_size")
    b = boxes.astype(np.float64)
    with np.errstate(over="ignore"):
        scale_x = (b[:, [0, 2]] * float(tw)) / float(ow)
        scale_y = (b[:, [1, 3]] * float(th)) / float(oh)
    if not (np.abs(scale_x) < 2.0**63).all() or not (np.abs(scale_y) < 2.0**63).all():
        raise ValueError("`boxes_inclusive_original`: the scaled boxes overflow int64")
    out = np.empty(b.shape, dtype=np.int64)
    out[:, [0, 2]] = np.trunc(scale_x)
    out[:, [1, 3]] = np.trunc(scale_y)
    return out


def box_area(boxes, /) -> np.ndarray:
    """Areas ``(x1 - x0) * (y1 - y0)`` of half-open boxes.

    Parameters
    ----------
    boxes : array_like, shape (N, 4)

    Returns
    -------
    ndarray, shape (N,)
        int64 for integer boxes, float otherwise.
    """
    arr = checked_boxes(boxes, "boxes")
    return (arr[:, 2] - arr[:, 0]) * (arr[:, 3] - arr[:, 1])


def box_iou(boxes1, boxes2, /):
    """Pairwise intersection over union of half-open boxes.

    Runs on the arrays it is given (NumPy, or torch on its device and the like; see
    :mod:`cam_core._validate`): ``boxes2`` is moved to ``boxes1``'s library and device.

    Parameters
    ----------
    boxes1 : array_like, shape (N, 4)
    boxes2 : array_like, shape (M, 4)

    Returns
    -------
    array of float64, shape (N, M)
        ``iou[i, j]`` in [0, 1]; 0 where the union is empty (two empty boxes). Of ``boxes1``'s
        library (float32 on a device without float64).
    """
    xp = array_namespace(boxes1)
    if is_numpy_namespace(xp):
        a = checked_boxes(boxes1, "boxes1").astype(np.float64)
        b = checked_boxes(boxes2, "boxes2").astype(np.float64)
        return _iou(*_rescaled(a, b))
    a = _xp_boxes(boxes1, "boxes1", xp, None)
    b = _xp_boxes(boxes2, "boxes2", xp, a)
    return _iou(a, b)


def best_iou(boxes1, boxes2, /) -> float:
    """The largest IoU between any box of ``boxes1`` and any of ``boxes2`` (half-open
    ``xyxy``), 0.0 when either is empty: how well a map's boxes found an image's objects."""
    if len(boxes1) == 0 or len(boxes2) == 0:
        return 0.0
    return float(to_numpy(box_iou(boxes1, boxes2)).max())


def _xp_boxes(boxes, name: str, xp, like):
    """Boxes of a non-NumPy library, checked as :func:`cam_core._validate.checked_boxes` does, in float64."""
    device = device_of(boxes if like is None else like)
    f64 = accumulation_dtype(xp, device)
    if like is not None and array_namespace(boxes) is not xp:  # NumPy (or lists) to the device
        return xp.asarray(checked_boxes(boxes, name).astype(np.float64), dtype=f64,
                          device=device)
    dt = boxes.dtype
    if xp.isdtype(dt, "bool") or not xp.isdtype(dt, "numeric") or xp.isdtype(
        dt, "complex floating"
    ):
        raise TypeError(f"`{name}` must have a numeric dtype; got dtype {dt}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"`{name}` must have shape (N, 4); got {tuple(boxes.shape)}")
    if xp.isdtype(dt, "real floating"):
        check_finite(boxes, name)
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(xp.any(bad)):
        check_box_order(to_numpy(boxes), name)  # raises, naming the first offending row
    return xp.astype(boxes, f64)


def _iou(a, b):
    """IoU of checked float64 half-open boxes (N, 4) x (M, 4) -> (N, M), in their library."""
    return paired_iou(a[:, None, :], b[None, :, :])


def paired_iou(boxes1, boxes2, /):
    """The IoU formula of cam_core, for boxes that are already checked: half-open float boxes
    ``(..., 4)`` that broadcast against each other, paired element by element -> ``(...)``.

    :func:`box_iou` (every pair of two sets) and the threshold sweep of
    :class:`cam_core.metrics.BoxAccuracy` (each image's boxes against its own ground truth) both
    compute it here. No checks: give float arrays of one library (NumPy or an array API one).
    0 where the union is empty.
    """
    a, b = boxes1, boxes2
    xp = array_namespace(a)
    zero = xp.zeros((), dtype=a.dtype, device=device_of(a))
    one = xp.ones((), dtype=a.dtype, device=device_of(a))
    w = xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0])
    h = xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1])
    inter = xp.maximum(w, zero) * xp.maximum(h, zero)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    safe = xp.where(union > 0, union, one)
    return xp.where(union > 0, inter / safe, zero)


def _rescaled(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both box sets divided by a common power of two when their areas would overflow float64
    (IoU is scale-free; a power of two keeps the arithmetic exact)."""
    big = max((float(np.abs(x).max()) for x in (a, b) if x.size), default=0.0)
    if big <= 1e150:
        return a, b
    scale = 2.0 ** -math.ceil(math.log2(big))
    return a * scale, b * scale


def mask_iou(masks1, masks2, /) -> np.ndarray:
    """Pairwise intersection over union of binary masks.

    Parameters
    ----------
    masks1 : array_like of bool, shape (N, H, W) or (H, W)
    masks2 : array_like of bool, shape (M, H, W) or (H, W)
        Same ``(H, W)`` as ``masks1``; a single mask counts as a batch of one.

    Returns
    -------
    ndarray of float64, shape (N, M)
        0 where both masks are empty.
    """
    m1 = as_mask(masks1, "masks1", (2, 3))
    m2 = as_mask(masks2, "masks2", (2, 3))
    m1 = m1[None] if m1.ndim == 2 else m1
    m2 = m2[None] if m2.ndim == 2 else m2
    if m1.shape[1:] != m2.shape[1:]:
        raise ValueError(f"`masks1` and `masks2` must have the same (H, W); got "
                         f"{tuple(m1.shape[1:])} and {tuple(m2.shape[1:])}")
    pixels = m1.shape[1] * m1.shape[2]  # explicit: -1 cannot be inferred for an empty batch
    f1 = m1.reshape(m1.shape[0], pixels).astype(np.float64)
    f2 = m2.reshape(m2.shape[0], pixels).astype(np.float64)
    inter = f1 @ f2.T
    union = f1.sum(axis=1)[:, None] + f2.sum(axis=1)[None, :] - inter
    safe = np.where(union > 0, union, 1.0)
    return np.where(union > 0, inter / safe, 0.0)
