"""The "wsol" protocol against the reference algorithm of clovaai/wsolevaluation.

The reference loop is written with OpenCV (threshold, findContours RETR_TREE
CHAIN_APPROX_SIMPLE, boundingRect, contourArea) as the reference does it, in
:func:`benchmarks.stage_sweep.opencv_reference_ious`; cam_core must give the same correct-image
counts at every threshold. Skipped when OpenCV is not installed (it is never a
dependency of cam_core).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import zoom

from cam_core import _sweep
from cam_core.boxes import scale_boxes_wsol
from cam_core.metrics import BoxAccuracy
from tests.conftest import readonly


def test_inclusive_iou_golden():
    # pixels x 1..4, y 2..5 -> OpenCV rect (1, 2, 4, 4) -> box (1, 2, min(5, W-1), min(6, H-1))
    m = np.zeros((10, 10))
    m[2:6, 1:5] = 1.0
    gt = [np.array([[3, 1, 4, 5]])]
    iou = 8 / 27  # inclusive areas 25 and 10, intersection 2 x 4
    acc = BoxAccuracy(taus=[0.0], deltas=(iou, np.nextafter(iou, 1.0)), protocol="wsol")
    acc.update(m[None], gt)
    assert acc.result().correct.tolist() == [[1, 0]]
    assert acc.result().correct_all.tolist() == [[1, 0]]


def test_box_clipped_to_w_minus_1():
    # a component reaching the last column: x1 = min(x + w, W - 1) = W - 1, not W
    m = np.zeros((6, 8))
    m[1:3, 5:8] = 1.0
    gt_exact = [np.array([[5, 1, 7, 3]])]  # x0 5, x1 min(8, 7) = 7; y1 = min(3, 5) = 3
    acc = BoxAccuracy(taus=[0.5], deltas=(1.0,), protocol="wsol")
    acc.update(m[None], gt_exact)
    assert acc.result().correct.tolist() == [[1]]


def test_empty_mask_gives_box_0000():
    # a constant map is normalised to zeros: no contour at any tau -> box (0, 0, 0, 0)
    m = np.full((1, 8, 8), 0.3)
    acc = BoxAccuracy(taus=[0.0, 0.5], deltas=(1.0,), protocol="wsol")
    acc.update(m, [np.array([[0, 0, 0, 0]])])
    assert acc.result().correct.tolist() == [[1], [1]]


def test_scale_boxes_wsol_truncates():
    boxes = np.array([[10, 20, 299, 199]])
    out = scale_boxes_wsol(boxes, (200, 300))  # H 200, W 300
    assert out.tolist() == [[int(10 * 224 / 300), int(20 * 224 / 200),
                             int(299 * 224 / 300), int(199 * 224 / 200)]]
    assert out.dtype == np.int64


# ---------------------------------------------------------------- OpenCV reference

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) is not installed")

# the reference loop (threshold, findContours, boundingRect, inclusive IoU), written once for the
# tests and the benchmark
from benchmarks.stage_sweep import opencv_reference_ious  # noqa: E402


def _reference_counts(maps, gts, taus, deltas, multi):
    correct = np.zeros((len(taus), len(deltas)), dtype=np.int64)
    for m, gt in zip(maps, gts):
        ious = opencv_reference_ious(m, gt, taus, multi_contour=multi)
        correct += ious[:, None] >= np.asarray(deltas)[None, :]
    return correct


def _smooth_maps(rng, n, size):
    """CAM-like maps: random 7x7 fields, ReLU'd, upsampled bicubic."""
    out = []
    for _ in range(n):
        field = rng.standard_normal((7, 7))
        out.append(np.maximum(zoom(field, size / 7, order=3), 0.0))
    return np.array(out)


def _blocky_maps(rng, n, size):
    """Few levels, nearest upsampling: many equal contour areas (tie rules) and holes."""
    out = []
    for _ in range(n):
        k = int(rng.integers(3, 9))
        field = rng.integers(0, 4, (k, k)).astype(np.float64)
        out.append(np.kron(field, np.ones((size // k + 1, size // k + 1)))[:size, :size])
    return np.array(out)


def _noisy_maps(rng, n, size):
    """Smooth maps plus noise: many small components, holes, lines and single pixels."""
    return np.clip(_smooth_maps(rng, n, size) + 0.3 * rng.random((n, size, size)), 0, None)


def _random_gts(rng, n, size):
    gts = []
    for _ in range(n):
        k = int(rng.integers(1, 3))
        x0 = rng.integers(0, size - 4, k)
        y0 = rng.integers(0, size - 4, k)
        x1 = np.minimum(x0 + rng.integers(2, size // 2, k), size - 1)
        y1 = np.minimum(y0 + rng.integers(2, size // 2, k), size - 1)
        gts.append(np.stack([x0, y0, x1, y1], axis=1))
    return gts


@pytest.mark.parametrize("taus", [100, 1000])
@pytest.mark.parametrize("kind", ["smooth", "blocky", "noisy"])
def test_counts_equal_opencv_reference(kind, taus):
    rng = np.random.default_rng({"smooth": 1, "blocky": 2, "noisy": 3}[kind] + taus)
    size = 48
    n = {"smooth": 120, "blocky": 80, "noisy": 30}[kind]
    if taus == 1000:
        n //= 3
    maps = {"smooth": _smooth_maps, "blocky": _blocky_maps, "noisy": _noisy_maps}[kind](
        rng, n, size)
    gts = _random_gts(rng, n, size)
    acc = BoxAccuracy(taus=taus, protocol="wsol")
    acc.update(readonly(maps), gts)
    res = acc.result()
    grid = np.arange(0, 1, 1 / taus)
    deltas = (0.3, 0.5, 0.7)
    np.testing.assert_array_equal(res.correct, _reference_counts(maps, gts, grid, deltas, False))
    np.testing.assert_array_equal(res.correct_all,
                                  _reference_counts(maps, gts, grid, deltas, True))


def _opencv_contours(mask):
    contours = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE,
                                cv2.CHAIN_APPROX_SIMPLE)[0]
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        out.append(((x, y, x + w - 1, y + h - 1), 2 * cv2.contourArea(c)))
    return out


def _random_level_maps(rng, count):
    """Small integer maps: noise, products of noise (large flat areas) and nested rings."""
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 20, 2))
        if i % 3 == 0:
            yield rng.integers(0, 4, (h, w))
        elif i % 3 == 1:
            yield rng.integers(0, 3, (h, w)) * rng.integers(0, 3, (h, w))
        else:
            yy, xx = np.mgrid[:h, :w]
            r = np.hypot(yy - rng.uniform(0, h), xx - rng.uniform(0, w)) * rng.uniform(0.5, 2)
            yield ((np.sin(r) + 1) * 2).astype(np.int64)


def test_labelled_engine_lists_opencv_contours_in_order():
    """Every contour's box and polygon area, in OpenCV's order, level by level."""
    rng = np.random.default_rng(7)
    for q in _random_level_maps(rng, 300):
        levels = np.unique(np.r_[q.ravel(), 0])
        comps = _sweep.sweep_labelled(q, levels, holes=True, area=True)
        for li, t in enumerate(levels):
            sel = np.flatnonzero(comps.level == li)
            sel = sel[np.argsort(comps.order[sel])]
            mine = [(tuple(comps.box[i].tolist()), float(comps.area2[i])) for i in sel]
            assert mine == _opencv_contours(q > t), (q, t)


def test_fast_engine_gives_opencv_boxes_and_largest_contour():
    """The fast engine: the same set of boxes and the same "largest contour" as OpenCV."""
    rng = np.random.default_rng(8)
    slow_levels = 0
    for q in _random_level_maps(rng, 300):
        levels = np.unique(np.r_[q.ravel(), 0])
        comps = _sweep.sweep(q, levels, holes=True, area=True)
        slow_levels += int((~comps.fast).sum())
        for li, t in enumerate(levels):
            ref = _opencv_contours(q > t)
            sel = np.flatnonzero(comps.level == li)
            assert {tuple(b) for b in comps.box[sel].tolist()} == {r[0] for r in ref}, (q, t)
            cand = sel[comps.candidate[sel]]
            if not ref:
                assert cand.size == 0
                continue
            best = cand[np.lexsort((comps.order[cand], -comps.area2[cand]))[0]]
            ref_best = max(ref, key=lambda r: r[1])  # first of the largest, as max() does
            assert tuple(comps.box[best].tolist()) == ref_best[0], (q, t)
            assert comps.area2[best] == ref_best[1]
    assert slow_levels > 100  # the levels with holes were exercised


def test_single_pixels_lines_and_rings():
    # area-0 contours (pixels, lines) tie: OpenCV's order decides; a ring has a hole contour
    m = np.zeros((12, 12))
    m[1, 1] = m[1, 6] = m[6, 1] = 1.0  # three single pixels
    m[9, 3:9] = 1.0                      # a horizontal line
    m[4:9, 8:11] = 0.5
    m[6, 9] = 0.0                         # a ring with a one-pixel hole
    gts = [np.array([[1, 1, 1, 1]]), np.array([[3, 9, 9, 10]]), np.array([[8, 5, 10, 7]])]
    maps = np.stack([m, m, m])
    grid = np.array([0.0, 0.3, 0.6])
    acc = BoxAccuracy(taus=grid, deltas=(0.1, 0.5, 0.9), protocol="wsol")
    acc.update(maps, gts)
    res = acc.result()
    np.testing.assert_array_equal(res.correct,
                                  _reference_counts(maps, gts, grid, (0.1, 0.5, 0.9), False))
    np.testing.assert_array_equal(res.correct_all,
                                  _reference_counts(maps, gts, grid, (0.1, 0.5, 0.9), True))


def test_batch_sweep_equals_one_map_at_a_time():
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[:7, :9]
    ring = ((np.sin(np.hypot(yy - 3, xx - 4) * 1.3) + 1) * 2).astype(np.int64)
    qs = np.concatenate([rng.integers(0, 5, (6, 7, 9)), ring[None], np.zeros((1, 7, 9), np.int64)])
    levels = [np.unique(np.r_[q.ravel(), 0]) for q in qs]
    for holes in (True, False):
        batch = _sweep.sweep_batch(qs, levels, holes=holes, area=True)
        offset = 0
        for q, lv in zip(qs, levels):
            one = _sweep.sweep(q, lv, holes=holes, area=True)
            sel = (batch.level >= offset) & (batch.level < offset + len(lv))
            for name in ("box", "hole", "pixels", "area2", "order", "candidate"):
                np.testing.assert_array_equal(getattr(batch, name)[sel], getattr(one, name))
            np.testing.assert_array_equal(batch.level[sel] - offset, one.level)
            np.testing.assert_array_equal(batch.fast[offset:offset + len(lv)], one.fast)
            offset += len(lv)


# ------------------------------------------------- raw (unnormalised) low-precision maps

def test_raw_float32_map_quantised_as_the_reference():
    # normalised in float32, the pixel at (5, 6) lands on level 147; the reference (float64) puts
    # it on 148, above int(0.58 * 255) = 147, so it forms a second box [6, 5, 7, 6] that matches
    # the ground truth
    m = np.full((8, 8), np.float32(-3.3918476), dtype=np.float32)
    m[1, 1] = np.float32(2.1062305)
    m[5, 6] = np.float32(-0.20080614)
    gt = np.array([[6, 5, 7, 6]])
    acc = BoxAccuracy(taus=[0.58], deltas=(0.5,), protocol="wsol")
    acc.update(readonly(m[None]), [gt])
    expected = opencv_reference_ious(m, gt, [0.58], multi_contour=True)[0] >= 0.5
    assert expected  # the reference counts the image correct
    assert acc.result().correct_all.tolist() == [[int(expected)]]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("taus", [100, 1000])
def test_raw_low_precision_maps_equal_opencv_reference(dtype, taus):
    # signed, unnormalised maps of the kind a method returns, in the dtype it returns them
    rng = np.random.default_rng(7 + taus + np.dtype(dtype).itemsize)
    size, n = 40, 60 if taus == 100 else 20
    maps = (_smooth_maps(rng, n, size) * rng.uniform(0.1, 40.0, (n, 1, 1))
            - rng.uniform(-5, 5, (n, 1, 1)) + 0.05 * rng.standard_normal((n, size, size)))
    maps = maps.astype(dtype)
    gts = _random_gts(rng, n, size)
    acc = BoxAccuracy(taus=taus, protocol="wsol")
    acc.update(readonly(maps), gts)
    res = acc.result()
    grid = np.arange(0, 1, 1 / taus)
    deltas = (0.3, 0.5, 0.7)
    np.testing.assert_array_equal(res.correct, _reference_counts(maps, gts, grid, deltas, False))
    np.testing.assert_array_equal(res.correct_all,
                                  _reference_counts(maps, gts, grid, deltas, True))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_quantisation_levels_equal_the_references(dtype):
    # the 8-bit levels themselves, pixel by pixel, on 400 raw maps: the reference casts to
    # float64, min-max normalises, then truncates 255 * map
    from cam_core._sweep import wsol_quantise as _wsol_quantise

    rng = np.random.default_rng(11)
    maps = (rng.standard_normal((400, 16, 16)) * rng.uniform(0.01, 50.0, (400, 1, 1))
            + rng.uniform(-10, 10, (400, 1, 1))).astype(dtype)
    for m in maps:
        ref = m.astype(np.float64)
        ref = ref - ref.min()
        ref = ref / ref.max()
        np.testing.assert_array_equal(_wsol_quantise(m), (ref * 255).astype(np.uint8))
