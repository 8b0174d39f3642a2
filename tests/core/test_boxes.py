"""Boxes: the convention, components, formats, IoU against plain loops, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cam_core.boxes import (
    FORMATS,
    box_area,
    box_iou,
    boxes_from_map,
    boxes_from_mask,
    convert_boxes,
    mask_iou,
)
from tests.conftest import readonly


def test_one_pixel_convention():
    mask = np.zeros((8, 8), dtype=bool)
    mask[5, 3] = True
    out = boxes_from_mask(mask)
    assert out.tolist() == [[3, 5, 4, 6]]
    assert out.dtype == np.int64
    assert box_area(out).tolist() == [1]


def test_empty_mask_gives_empty_array():
    out = boxes_from_mask(np.zeros((4, 5), dtype=bool), mode="all")
    assert out.shape == (0, 4) and out.dtype == np.int64
    assert boxes_from_mask(np.zeros((4, 5), dtype=bool)).shape == (0, 4)


def _two_blobs():
    mask = np.zeros((10, 12), dtype=bool)
    mask[1:3, 1:3] = True     # 4 pixels, first in row-major order
    mask[6:9, 7:10] = True    # 9 pixels
    mask[1:3, 8:10] = True    # 4 pixels
    return mask


def test_largest_all_and_ties():
    mask = _two_blobs()
    assert boxes_from_mask(mask).tolist() == [[7, 6, 10, 9]]
    assert boxes_from_mask(mask, mode="all").tolist() == [
        [7, 6, 10, 9], [1, 1, 3, 3], [8, 1, 10, 3]]
    mask[6:9, 7:10] = False  # two of 4 pixels: the first in row-major order wins
    assert boxes_from_mask(mask).tolist() == [[1, 1, 3, 3]]


def test_peak_mode():
    mask = _two_blobs()
    score = np.zeros(mask.shape)
    score[2, 9] = 5.0
    score[0, 0] = 9.0  # outside the mask: not a candidate
    assert boxes_from_mask(mask, mode="peak", score_map=score).tolist() == [[8, 1, 10, 3]]
    with pytest.raises(ValueError, match="score_map"):
        boxes_from_mask(mask, mode="peak")
    with pytest.raises(ValueError, match="score_map"):
        boxes_from_mask(mask, score_map=score)


def test_connectivity():
    mask = np.eye(4, dtype=bool)
    assert boxes_from_mask(mask, connectivity=8).tolist() == [[0, 0, 4, 4]]
    assert len(boxes_from_mask(mask, mode="all", connectivity=4)) == 4
    with pytest.raises(ValueError, match="connectivity"):
        boxes_from_mask(mask, connectivity=6)


def test_boxes_from_map_keywords_as_explanation_calls_them():
    m = np.zeros((10, 10))
    m[2:4, 2:5] = 1.0
    m[7, 7] = 0.3
    out = boxes_from_map(readonly(m), threshold=0.2, mode="largest", connectivity=8)
    assert out.tolist() == [[2, 2, 5, 4]]
    assert boxes_from_map(m, threshold=0.2, mode="all").tolist() == [[2, 2, 5, 4], [7, 7, 8, 8]]
    assert boxes_from_map(m, threshold=0.5, mode="all").tolist() == [[2, 2, 5, 4]]
    assert boxes_from_map(m, mode="peak").tolist() == [[2, 2, 5, 4]]
    assert boxes_from_map(m, method="otsu", mode="all").tolist() == [[2, 2, 5, 4], [7, 7, 8, 8]]
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        boxes_from_map(m[None])


BOX = np.array([[3, 5, 7, 11]])  # half-open: 4 wide, 6 tall


@pytest.mark.parametrize("fmt, expected", [
    ("xyxy", [3, 5, 7, 11]),
    ("xyxy_inclusive", [3, 5, 6, 10]),
    ("xywh", [3, 5, 4, 6]),
    ("cxcywh", [5.0, 8.0, 4.0, 6.0]),
    ("yxyx_normalized", [5 / 20, 3 / 10, 11 / 20, 7 / 10]),
])
def test_convert_golden(fmt, expected):
    out = convert_boxes(BOX, "xyxy", fmt, size=(20, 10))
    assert out.tolist() == [expected]
    back = convert_boxes(out, fmt, "xyxy", size=(20, 10))
    assert back.tolist() == BOX.tolist()


def test_convert_round_trips_and_dtypes():
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 300, 50)
    y0 = rng.integers(0, 200, 50)
    boxes = np.stack([x0, y0, x0 + rng.integers(0, 30, 50), y0 + rng.integers(0, 30, 50)], 1)
    for src in FORMATS:
        for dst in FORMATS:
            a = convert_boxes(boxes, "xyxy", src, size=(237, 331))
            b = convert_boxes(a, src, dst, size=(237, 331))
            c = convert_boxes(b, dst, "xyxy", size=(237, 331))
            np.testing.assert_array_equal(c, boxes)
    assert convert_boxes(boxes, "xyxy", "xywh").dtype == np.int64
    assert convert_boxes(boxes, "xyxy", "cxcywh").dtype == np.float64
    assert convert_boxes(boxes.astype(np.float32), "xyxy", "xywh").dtype == np.float32


def test_convert_errors():
    with pytest.raises(ValueError, match="size"):
        convert_boxes(BOX, "xyxy", "yxyx_normalized")
    with pytest.raises(ValueError, match="dst"):
        convert_boxes(BOX, "xyxy", "ltrb")
    with pytest.raises(ValueError, match="row 0"):
        convert_boxes([[0, 0, -2, 3]], "xywh", "xyxy")


def test_area_and_iou_golden():
    a = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 5, 5]])
    assert box_area(a).tolist() == [4, 4, 0]
    iou = box_iou(a, a)
    assert iou[0, 1] == pytest.approx(1 / 7)
    assert iou[0, 0] == 1.0
    assert iou[2, 2] == 0.0  # empty union -> 0
    assert iou[0, 2] == 0.0


def test_iou_equals_double_loop():
    rng = np.random.default_rng(1)
    p = rng.integers(0, 20, (7, 2))
    b1 = np.concatenate([p, p + rng.integers(0, 10, (7, 2))], axis=1)
    q = rng.uniform(0, 20, (5, 2))
    b2 = np.concatenate([q, q + rng.uniform(0, 10, (5, 2))], axis=1)
    out = box_iou(readonly(b1), readonly(b2))
    assert out.shape == (7, 5)
    for i in range(7):
        for j in range(5):
            w = max(0.0, min(b1[i, 2], b2[j, 2]) - max(b1[i, 0], b2[j, 0]))
            h = max(0.0, min(b1[i, 3], b2[j, 3]) - max(b1[i, 1], b2[j, 1]))
            inter = w * h
            union = ((b1[i, 2] - b1[i, 0]) * (b1[i, 3] - b1[i, 1])
                     + (b2[j, 2] - b2[j, 0]) * (b2[j, 3] - b2[j, 1]) - inter)
            assert out[i, j] == pytest.approx(inter / union if union > 0 else 0.0, abs=1e-15)


def test_mask_iou_golden():
    a = np.zeros((2, 4, 4), dtype=bool)
    a[0, :2, :2] = True
    b = np.zeros((3, 4, 4), dtype=bool)
    b[0, 1:3, 1:3] = True
    b[1, :2, :2] = True
    out = mask_iou(a, readonly(b))
    assert out.shape == (2, 3)
    assert out[0].tolist() == [1 / 7, 1.0, 0.0]
    assert out[1].tolist() == [0.0, 0.0, 0.0]  # empty vs anything: 0
    assert mask_iou(a[0], b[1]).tolist() == [[1.0]]
    with pytest.raises(ValueError, match=r"same \(H, W\)"):
        mask_iou(a, np.zeros((1, 3, 4), dtype=bool))


def test_bad_boxes():
    with pytest.raises(ValueError, match=r"`boxes1` must have shape \(N, 4\); got \(3, 5\)"):
        box_iou(np.zeros((3, 5)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"`boxes2` row 1: x1 < x0"):
        box_iou(np.zeros((1, 4)), [[0, 0, 1, 1], [5, 0, 4, 1]])
    with pytest.raises(ValueError, match=r"`boxes` row 0: y1 < y0"):
        box_area([[0, 3, 1, 1]])
    with pytest.raises(ValueError, match="finite"):
        box_area([[0, 0, np.nan, 1]])
    with pytest.raises(TypeError, match="numeric"):
        box_area(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(TypeError, match="boolean"):
        boxes_from_mask(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\(H, W\); got \(2, 3, 3\)"):
        boxes_from_mask(np.zeros((2, 3, 3), dtype=bool))
    with pytest.raises(ValueError, match="mode"):
        boxes_from_mask(np.zeros((3, 3), dtype=bool), mode="biggest")
