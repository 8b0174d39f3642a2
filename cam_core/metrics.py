"""Localisation metrics as accumulators: update batch by batch, merge, then read a result.

Every accumulator has ``update(...)`` (adds a batch), ``merge(other)`` (adds ``other``'s counts to
this accumulator, in place, and returns it, for a dataset split over processes; settings must
match, else ``ValueError``) and
``result()`` (a frozen dataclass). Merging partial accumulators gives the same counts as one pass
over the concatenated data. Every score is a percentage in [0, 100].

**Box accuracy over a threshold sweep** (:class:`BoxAccuracy`) follows one of two protocols.

``protocol="wsol"`` reproduces the reference code of Choe et al. (CVPR 2020,
clovaai/wsolevaluation), quirks included, so that its numbers can be compared with published ones:

1. each map is promoted to float64, whatever its dtype (the reference's ``t2n`` does so), and
   min-max normalised again (a constant map becomes zeros);
2. quantised by truncation, ``u = floor(255 * map)`` (uint8);
3. at each ``tau`` the mask is ``u > int(tau * max(u))`` (strictly greater);
4. the predicted boxes are the bounding rectangles of the mask's OpenCV contours
   (``cv2.findContours(..., RETR_TREE, CHAIN_APPROX_SIMPLE)``: 8-connected objects, outer borders
   and hole borders alike; a hole's rectangle is the hole's box grown by one pixel on each side).
   "Largest" (MaxBoxAcc) keeps the contour of largest ``cv2.contourArea``, the area of the border
   polygon through pixel centres, so a lone pixel or a one-pixel-wide line has area 0; ties go to
   the first contour in OpenCV's order (see :mod:`cam_core._sweep`). "All" (MaxBoxAccV2) keeps
   every contour. An empty mask gives the box ``(0, 0, 0, 0)``;
5. a rectangle at ``x`` of width ``w`` becomes ``x0 = x, x1 = min(x + w, W - 1)`` (same in y) and
   IoU uses inclusive corners, ``area = (x1 - x0 + 1) * (y1 - y0 + 1)``: boxes come out one pixel
   wider and taller than the component;
6. ground-truth boxes are inclusive-corner integers in the map's frame, as the reference makes them
   with :func:`cam_core.boxes.scale_boxes_wsol` (:func:`cam_core.boxes.ground_truth`).

No OpenCV is used: components, holes and contour areas come from SciPy labelling and run
arithmetic (:mod:`cam_core._sweep`), tested equal to OpenCV threshold by threshold. One
difference: a map with NaN or Inf is a ``ValueError`` here (the reference turns NaN maps into
zeros).

``protocol="native"`` is cam_core's own convention: the float map as given, the mask
``map >= tau * max(map)`` (:func:`cam_core.threshold.threshold_fraction`), 8-connected components
without hole boxes, "largest" meaning most pixels (ties: first in row-major order), half-open
boxes (:mod:`cam_core.boxes`) and plain IoU. A map whose mask is empty (possible only when its
maximum is negative) has no box, and its IoU is 0.

An image is correct at ``(tau, delta)`` when the best IoU between its predicted boxes and all its
ground-truth boxes is ``>= delta``. MaxBoxAcc is the best box accuracy over ``tau`` at
``delta = 0.5`` with the largest box; MaxBoxAccV2 the mean over ``deltas`` of the best accuracy
over ``tau`` with all boxes.

The threshold sweep costs far less than one labelling per threshold: equal quantised thresholds
are done once, and the components of all thresholds of a few maps come from one graph of row runs
(:mod:`cam_core._sweep`); only thresholds whose mask has holes need a second, smaller graph of
background runs.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from cam_core import _sweep
from cam_core._validate import (
    as_float_array,
    as_fractions,
    as_mask,
    check_finite,
    check_same_batch,
    checked_boxes,
)

__all__ = [
    "BoxAccuracy",
    "BoxAccuracyResult",
    "Localization",
    "LocalizationResult",
    "PointingGame",
    "PointingGameResult",
    "PxAP",
    "PxAPResult",
]

_PROTOCOLS = ("native", "wsol")


# ----------------------------------------------------------------------------- helpers

def _as_taus(taus) -> np.ndarray:
    if taus is None:
        return np.arange(0, 1, 0.01)
    if isinstance(taus, numbers.Integral) and not isinstance(taus, bool):
        if taus < 1:
            raise ValueError(f"`taus` as a count must be >= 1; got {taus}")
        return np.arange(0, 1, 1 / int(taus))
    return as_fractions(taus, "taus")


def _as_deltas(deltas) -> np.ndarray:
    return as_fractions(deltas, "deltas")


def _as_protocol(protocol) -> str:
    if protocol not in _PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {_PROTOCOLS}; got {protocol!r}")
    return protocol


def _as_maps(maps) -> np.ndarray:
    arr = as_float_array(maps, "maps", shape=("N", "H", "W"))
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"`maps` must have non-empty (H, W); got {tuple(arr.shape)}")
    check_same_batch(maps=arr)  # an empty batch: a named error, not NumPy's
    check_finite(arr, "maps")
    return arr


def _as_gt_list(gt_boxes, n_maps: int, maps) -> list[np.ndarray]:
    if isinstance(gt_boxes, np.ndarray) and gt_boxes.ndim == 3 and gt_boxes.shape[-1] == 4:
        items = list(gt_boxes)
    elif isinstance(gt_boxes, (list, tuple)):
        items = list(gt_boxes)
    else:
        raise TypeError("`gt_boxes` must be a list with one (G, 4) array per image; got "
                        f"{type(gt_boxes).__name__}")
    check_same_batch(maps=maps, gt_boxes=items)
    out = []
    for i, g in enumerate(items):
        arr = checked_boxes(g, f"gt_boxes[{i}]")
        if arr.shape[0] == 0:
            raise ValueError(f"`gt_boxes[{i}]` must hold at least one box; got shape (0, 4)")
        out.append(arr.astype(np.float64))
    return out


def _check_same(a, b, names: tuple[str, ...]) -> None:
    if type(a) is not type(b):
        raise TypeError(f"can only merge a {type(a).__name__} with another; got "
                        f"{type(b).__name__}")
    for name in names:
        x, y = getattr(a, "_" + name), getattr(b, "_" + name)
        same = np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
        if not same:
            raise ValueError(f"cannot merge accumulators with different `{name}`: {x!r} and {y!r}")


def _percent(num, den) -> np.ndarray:
    return np.asarray(num, dtype=np.float64) * 100.0 / float(den)


class _Accumulator:
    """Shared merging: ``_SETTINGS`` are constructor keywords that must match, ``_COUNTERS``
    the attributes that add up."""

    _SETTINGS: tuple[str, ...] = ()
    _COUNTERS: tuple[str, ...] = ()

    def merge(self, other):
        """Add ``other``'s counts to this accumulator, in place, and return this accumulator.

        ``acc.merge(part)`` and ``acc = acc.merge(part)`` both leave the sum in ``acc``;
        ``other`` is not changed. Same settings, else ``ValueError``; another kind of
        accumulator is a ``TypeError``.
        """
        _check_same(self, other, self._SETTINGS)
        sums = {name: getattr(self, name) + getattr(other, name) for name in self._COUNTERS}
        for name, value in sums.items():
            setattr(self, name, value)
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The counters (what :meth:`merge` adds up) as a dict of arrays, e.g. for a checkpoint.

        Returns
        -------
        dict of str to numpy.ndarray
            Copies; :meth:`load_state` on an accumulator with the same settings restores them.
        """
        return {name.lstrip("_"): np.array(getattr(self, name), copy=True)
                for name in self._COUNTERS}

    def load_state(self, state) -> _Accumulator:
        """Set the counters from a :meth:`state` dict (any mapping of arrays); returns ``self``.

        Raises
        ------
        ValueError
            A counter is missing or has another shape than this accumulator's (different
            settings, or a state written by another kind of accumulator).
        """
        new = {}
        for name in self._COUNTERS:
            key = name.lstrip("_")
            if key not in state:
                raise ValueError(f"state has no counter {key!r} (has {sorted(state)})")
            value = np.asarray(state[key])
            current = np.asarray(getattr(self, name))
            if value.shape != current.shape:
                raise ValueError(f"counter {key!r} has shape {value.shape}, expected "
                                 f"{current.shape} (other settings?)")
            new[name] = value.astype(current.dtype) if value.ndim else value.item()
        for name, value in new.items():
            setattr(self, name, value)
        return self


# ------------------------------------------------------------------ per-image sweep


# ------------------------------------------------------------------------ BoxAccuracy

@dataclass(frozen=True)
class BoxAccuracyResult:
    """Box accuracy over a threshold sweep (percentages in [0, 100]).

    Attributes
    ----------
    protocol : str
    taus : ndarray, shape (T,)
    deltas : ndarray, shape (D,)
    count : int
        Images seen.
    correct : ndarray of int64, shape (T, D)
        Images correct at each ``(tau, delta)`` with the largest box (as the reference counts).
    correct_all : ndarray of int64, shape (T, D)
        The same with all boxes.
    box_acc, box_acc_all : ndarray of float64, shape (T, D)
        ``100 * correct / count`` and ``100 * correct_all / count``.
    max_box_acc : float
        Best ``box_acc`` over tau at delta 0.5 (NaN when 0.5 is not among the deltas).
    max_box_acc_v2 : float
        Mean over deltas of the best ``box_acc_all`` over tau.
    best_tau : float
        The tau of ``max_box_acc`` (the first one on ties; NaN without delta 0.5).
    mean_iou : float
        Mean best IoU (largest box) at ``best_tau``, in percent (NaN without delta 0.5).
    fast_fraction : float
        Share of (image, tau) pairs solved from the row runs alone, i.e. whose mask has no
        hole (informative; 1 for "native", which ignores holes).
    """

    protocol: str
    taus: np.ndarray
    deltas: np.ndarray
    count: int
    correct: np.ndarray
    correct_all: np.ndarray
    box_acc: np.ndarray
    box_acc_all: np.ndarray
    max_box_acc: float
    max_box_acc_v2: float
    best_tau: float
    mean_iou: float
    fast_fraction: float


class BoxAccuracy(_Accumulator):
    """Box accuracy of maps against ground-truth boxes over a threshold sweep.

    Parameters
    ----------
    taus : int or array_like of shape (T,), optional
        Thresholds in [0, 1]; an int ``n`` means ``numpy.arange(0, 1, 1 / n)`` (the reference's
        grid); default ``numpy.arange(0, 1, 0.01)``.
    deltas : sequence of float
        IoU thresholds, default (0.3, 0.5, 0.7).
    protocol : {"native", "wsol"}
        See the module docstring.
    """

    _SETTINGS = ("taus", "deltas", "protocol")
    _COUNTERS = ("_count", "_correct", "_correct_all", "_iou_sum", "_fast")

    def __init__(self, *, taus=None, deltas=(0.3, 0.5, 0.7), protocol: str = "native"):
        self._taus = _as_taus(taus)
        self._deltas = _as_deltas(deltas)
        self._protocol = _as_protocol(protocol)
        t, d = len(self._taus), len(self._deltas)
        self._count = 0
        self._correct = np.zeros((t, d), dtype=np.int64)
        self._correct_all = np.zeros((t, d), dtype=np.int64)
        self._iou_sum = np.zeros(t, dtype=np.float64)
        self._fast = 0

    def __repr__(self) -> str:
        return (f"BoxAccuracy(protocol={self._protocol!r}, taus={len(self._taus)}, "
                f"deltas={self._deltas.tolist()}, count={self._count})")

    def update(self, maps, gt_boxes, /) -> None:
        """Add a batch.

        Parameters
        ----------
        maps : array_like, shape (N, H, W)
            Finite maps, normally in [0, 1].
        gt_boxes : list of array_like, each shape (G_i, 4), G_i >= 1
            Each image's ground-truth boxes in the map's pixel frame: half-open
            ``(x0, y0, x1, y1)`` for ``"native"``, inclusive-corner integers for ``"wsol"`` (see
            :func:`cam_core.boxes.scale_boxes_wsol`).
        """
        arr = _as_maps(maps)
        gts = _as_gt_list(gt_boxes, len(arr), arr)
        one, every, fast = _sweep.batch_ious(arr, gts, self._taus, self._protocol)
        self._correct += (one[:, :, None] >= self._deltas).sum(axis=0)
        self._correct_all += (every[:, :, None] >= self._deltas).sum(axis=0)
        self._iou_sum += one.sum(axis=0)
        self._fast += int(fast.sum())
        self._count += len(arr)


    def result(self) -> BoxAccuracyResult:
        """The figures so far; ``ValueError`` before any image was added."""
        if self._count == 0:
            raise ValueError("BoxAccuracy.result(): no image was added; call update() first")
        acc = _percent(self._correct, self._count)
        acc_all = _percent(self._correct_all, self._count)
        half = np.flatnonzero(self._deltas == 0.5)
        if half.size:
            k = int(np.argmax(acc[:, half[0]]))
            max_acc = float(acc[k, half[0]])
            best_tau = float(self._taus[k])
            mean_iou = float(100.0 * self._iou_sum[k] / self._count)
        else:
            max_acc = best_tau = mean_iou = float("nan")
        return BoxAccuracyResult(
            protocol=self._protocol,
            taus=self._taus.copy(),
            deltas=self._deltas.copy(),
            count=self._count,
            correct=self._correct.copy(),
            correct_all=self._correct_all.copy(),
            box_acc=acc,
            box_acc_all=acc_all,
            max_box_acc=max_acc,
            max_box_acc_v2=float(acc_all.max(axis=0).mean()),
            best_tau=best_tau,
            mean_iou=mean_iou,
            fast_fraction=self._fast / (self._count * len(self._taus)),
        )


# ----------------------------------------------------------------------- Localization

@dataclass(frozen=True)
class LocalizationResult:
    """Localisation at one threshold (percentages in [0, 100]).

    Attributes
    ----------
    tau, delta : float
    protocol : str
    count : int
    top1_loc : float
        Share of images whose predicted class is right AND whose largest box has IoU >= delta.
    gt_known_loc : float
        Share of images whose largest box has IoU >= delta (the map of the true class).
    mean_iou : float
        Mean best IoU of the largest box, in percent.
    """

    tau: float
    delta: float
    protocol: str
    count: int
    top1_loc: float
    gt_known_loc: float
    mean_iou: float


class Localization(_Accumulator):
    """Top-1 and GT-known localisation at a fixed threshold.

    Parameters
    ----------
    tau : float
        Threshold as a fraction of the maximum (0.2: the CAM paper).
    delta : float
        IoU needed to count a box as right (0.5).
    protocol : {"native", "wsol"}
        How boxes and IoU are made (see the module docstring); the largest box is used.
    """

    _SETTINGS = ("tau", "delta", "protocol")
    _COUNTERS = ("_count", "_top1", "_known", "_iou_sum")

    def __init__(self, *, tau: float = 0.2, delta: float = 0.5, protocol: str = "native"):
        self._tau = float(_as_taus([tau])[0])
        self._delta = float(_as_deltas([delta])[0])
        self._protocol = _as_protocol(protocol)
        self._count = 0
        self._top1 = 0
        self._known = 0
        self._iou_sum = 0.0

    def __repr__(self) -> str:
        return (f"Localization(tau={self._tau}, delta={self._delta}, "
                f"protocol={self._protocol!r}, count={self._count})")

    def update(self, maps, gt_boxes, correct, /) -> None:
        """Add a batch.

        Parameters
        ----------
        maps : array_like, shape (N, H, W)
            Each image's map for its TRUE class.
        gt_boxes : list of array_like, each shape (G_i, 4)
            As in :meth:`BoxAccuracy.update`.
        correct : array_like of bool, shape (N,)
            Whether the classifier's top-1 prediction of each image is right.
        """
        arr = _as_maps(maps)
        gts = _as_gt_list(gt_boxes, len(arr), arr)
        ok = np.asarray(correct)
        if ok.dtype.kind != "b":
            raise TypeError(f"`correct` must be a boolean array; got dtype {ok.dtype}")
        if ok.shape != (len(arr),):
            raise ValueError(f"`correct` must have shape ({len(arr)},) like `maps`; got "
                             f"{tuple(ok.shape)}")
        iou = _sweep.batch_ious(arr, gts, np.array([self._tau]), self._protocol)[0][:, 0]
        hit = iou >= self._delta
        self._known += int(hit.sum())
        self._top1 += int((hit & ok).sum())
        self._iou_sum += float(iou.sum())
        self._count += len(arr)


    def result(self) -> LocalizationResult:
        """The figures so far; ``ValueError`` before any image was added."""
        if self._count == 0:
            raise ValueError("Localization.result(): no image was added; call update() first")
        return LocalizationResult(
            tau=self._tau, delta=self._delta, protocol=self._protocol, count=self._count,
            top1_loc=float(_percent(self._top1, self._count)),
            gt_known_loc=float(_percent(self._known, self._count)),
            mean_iou=float(_percent(self._iou_sum, self._count)),
        )


# ------------------------------------------------------------------------------- PxAP

@dataclass(frozen=True)
class PxAPResult:
    """Pixel average precision (WSOL protocol step 9).

    Attributes
    ----------
    pxap : float
        Area under the precision-recall curve, in percent.
    taus : ndarray, shape (T,)
    precision, recall : ndarray, shape (T + 3,)
        The curve from the highest threshold down (NaN precision where nothing is predicted).
    positives, negatives : int
        Foreground and background pixels counted (ignored pixels excluded).
    """

    pxap: float
    taus: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    positives: int
    negatives: int


class PxAP(_Accumulator):
    """Pixel average precision of maps against foreground masks, as the WSOL reference does.

    The map values at foreground and at background pixels are histogrammed over the bins
    ``[tau_0, tau_1), ..., [tau_last, 1), [1, 2), [2, 3]``; true and false positives accumulate
    from the top bin down, and ``AP = sum(precision[1:] * diff(recall))`` over the points where
    something is predicted. Counts are integers, so merging is exact.

    Parameters
    ----------
    taus : int or array_like of shape (T,), optional
        Increasing bin edges in [0, 1) starting at 0; default ``numpy.arange(0, 1, 0.01)`` (an int
        ``n`` means ``numpy.arange(0, 1, 1 / n)``).
    """

    _SETTINGS = ("taus",)
    _COUNTERS = ("_fg", "_bg")

    def __init__(self, *, taus=None):
        self._taus = _as_taus(taus)
        if np.any(np.diff(self._taus) <= 0) or self._taus[-1] >= 1:
            raise ValueError("`taus` must increase strictly and stay below 1 for PxAP; got "
                             f"{self._taus[:4].tolist()}...")
        self._edges = np.append(self._taus, [1.0, 2.0, 3.0])
        self._fg = np.zeros(len(self._edges) - 1, dtype=np.int64)
        self._bg = np.zeros(len(self._edges) - 1, dtype=np.int64)

    def __repr__(self) -> str:
        return f"PxAP(taus={len(self._taus)}, pixels={int(self._fg.sum() + self._bg.sum())})"

    def update(self, maps, masks, /, ignore=None) -> None:
        """Add a batch.

        Parameters
        ----------
        maps : array_like, shape (N, H, W)
            Maps in [0, 1] (``ValueError`` otherwise).
        masks : array_like of bool, shape (N, H, W)
            Foreground pixels.
        ignore : array_like of bool, shape (N, H, W), optional
            Pixels left out of both counts.
        """

        arr = _as_maps(maps)
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"`maps` must lie in [0, 1] for PxAP; got values from {arr.min()} "
                             f"to {arr.max()}")
        fg = as_mask(masks, "masks", 3)
        if fg.shape != arr.shape:
            raise ValueError(f"`masks` must have the shape of `maps` {tuple(arr.shape)}; got "
                             f"{tuple(fg.shape)}")
        keep = np.ones(arr.shape, dtype=bool)
        if ignore is not None:
            ign = as_mask(ignore, "ignore", 3)
            if ign.shape != arr.shape:
                raise ValueError(f"`ignore` must have the shape of `maps` {tuple(arr.shape)}; "
                                 f"got {tuple(ign.shape)}")
            keep = ~ign
        self._fg += np.histogram(arr[fg & keep], bins=self._edges)[0]
        self._bg += np.histogram(arr[~fg & keep], bins=self._edges)[0]


    def result(self) -> PxAPResult:
        """The figures so far; ``ValueError`` without foreground or without any pixel."""
        positives, negatives = int(self._fg.sum()), int(self._bg.sum())
        if positives == 0:
            raise ValueError("PxAP.result(): no foreground pixel was added")
        tp = self._fg[::-1].cumsum()
        fp = self._bg[::-1].cumsum()
        predicted = tp + fp
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / predicted
        recall = tp / positives
        valid = predicted[1:] != 0
        # precision <= 1 and the recall steps sum to <= 1; clip float rounding above 100
        ap = min(float((precision[1:] * np.diff(recall))[valid].sum()) * 100.0, 100.0)
        return PxAPResult(pxap=ap, taus=self._taus.copy(), precision=precision, recall=recall,
                          positives=positives, negatives=negatives)


# ----------------------------------------------------------------------- PointingGame

@dataclass(frozen=True)
class PointingGameResult:
    """Pointing game: ``accuracy = 100 * hits / count``."""

    tolerance: float
    count: int
    hits: int
    accuracy: float


class PointingGame(_Accumulator):
    """Pointing game (Zhang et al., 2016): is each map's maximum on the object?

    The point is the first maximum of the map in row-major order (``numpy.argmax``). It is a hit
    when the Euclidean distance from it to the nearest pixel of a ground-truth box (or of the
    foreground mask) is at most ``tolerance`` pixels.

    Parameters
    ----------
    tolerance : float
        In pixels; 15 in the paper.
    """

    _SETTINGS = ("tolerance",)
    _COUNTERS = ("_count", "_hits")

    def __init__(self, *, tolerance: float = 15):
        if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
            raise TypeError(f"`tolerance` must be a number; got {type(tolerance).__name__}")
        if not np.isfinite(tolerance) or tolerance < 0:
            raise ValueError(f"`tolerance` must be finite and >= 0; got {tolerance}")
        self._tolerance = float(tolerance)
        self._count = 0
        self._hits = 0

    def __repr__(self) -> str:
        return f"PointingGame(tolerance={self._tolerance}, count={self._count})"

    def update(self, maps, /, gt_boxes=None, *, gt_masks=None) -> None:
        """Add a batch; give exactly one of ``gt_boxes`` (half-open) and ``gt_masks``.

        Parameters
        ----------
        maps : array_like, shape (N, H, W)
        gt_boxes : list of array_like, each shape (G_i, 4), optional
        gt_masks : array_like of bool, shape (N, H, W), optional
        """

        arr = _as_maps(maps)
        if (gt_boxes is None) == (gt_masks is None):
            raise ValueError("give exactly one of `gt_boxes` and `gt_masks`")
        n, height, width = arr.shape
        flat = np.argmax(arr.reshape(n, -1), axis=1)
        py, px = np.divmod(flat, width)
        tol2 = self._tolerance ** 2
        if gt_boxes is not None:
            gts = _as_gt_list(gt_boxes, n, arr)
            for x, y, gt in zip(px, py, gts):
                # distance to the covered pixels x0 .. x1 - 1 (an empty box covers none)
                real = (gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1])
                dx = np.maximum.reduce([gt[:, 0] - x, np.zeros(len(gt)), x - (gt[:, 2] - 1)])
                dy = np.maximum.reduce([gt[:, 1] - y, np.zeros(len(gt)), y - (gt[:, 3] - 1)])
                hit = bool(np.any(real & (dx * dx + dy * dy <= tol2)))
                self._hits += int(hit)
                self._count += 1
        else:
            fg = as_mask(gt_masks, "gt_masks", 3)
            if fg.shape != arr.shape:
                raise ValueError(f"`gt_masks` must have the shape of `maps` {tuple(arr.shape)}; "
                                 f"got {tuple(fg.shape)}")
            for x, y, mask in zip(px, py, fg):
                ys, xs = np.nonzero(mask)
                hit = bool(ys.size) and bool(np.min((xs - x) ** 2 + (ys - y) ** 2) <= tol2)
                self._hits += int(hit)
                self._count += 1


    def result(self) -> PointingGameResult:
        """The figures so far; ``ValueError`` before any image was added."""
        if self._count == 0:
            raise ValueError("PointingGame.result(): no image was added; call update() first")
        return PointingGameResult(tolerance=self._tolerance, count=self._count, hits=self._hits,
                                  accuracy=float(_percent(self._hits, self._count)))
