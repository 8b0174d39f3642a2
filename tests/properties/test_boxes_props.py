"""Properties of boxes: IoU, boxes of masks, formats (Hypothesis, `ci` profile)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from cam_core.boxes import FORMATS, box_iou, boxes_from_mask, convert_boxes, mask_iou
from tests.conftest import readonly

SIDE = 12


@st.composite
def int_boxes(draw, min_n=1, max_n=6, side=SIDE):
    n = draw(st.integers(min_n, max_n))
    rows = []
    for _ in range(n):
        x0 = draw(st.integers(0, side))
        y0 = draw(st.integers(0, side))
        rows.append((x0, y0, draw(st.integers(x0, side)), draw(st.integers(y0, side))))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


masks = arrays(np.bool_, st.tuples(st.integers(1, 10), st.integers(1, 10)))


def _raster(box, side=SIDE):
    m = np.zeros((side, side), dtype=bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


@given(int_boxes(), int_boxes())
def test_iou_symmetric_bounded_and_vectorised(a, b):
    a_ro, b_ro = readonly(a, b)
    iou = box_iou(a_ro, b_ro)
    assert iou.shape == (len(a), len(b))
    assert np.all((iou >= 0) & (iou <= 1))
    np.testing.assert_array_equal(iou, box_iou(b, a).T)
    for i in range(len(a)):
        for j in range(len(b)):
            assert iou[i, j] == box_iou(a[i:i + 1], b[j:j + 1])[0, 0]
    np.testing.assert_array_equal(a_ro, a)


@given(int_boxes(), int_boxes())
def test_iou_equals_iou_of_rasterised_masks(a, b):
    ma = np.stack([_raster(x) for x in a])
    mb = np.stack([_raster(x) for x in b])
    np.testing.assert_allclose(box_iou(a, b), mask_iou(ma, mb), rtol=0, atol=1e-15)


@given(int_boxes())
def test_iou_with_itself_is_one_when_not_empty(a):
    diag = np.diag(box_iou(a, a))
    empty = (a[:, 2] == a[:, 0]) | (a[:, 3] == a[:, 1])
    assert np.all(diag[~empty] == 1.0)
    assert np.all(diag[empty] == 0.0)


@given(masks, st.sampled_from([4, 8]))
def test_boxes_are_tight_and_contain_their_components(mask, connectivity):
    ro = readonly(mask)
    out = boxes_from_mask(ro, mode="all", connectivity=connectivity)
    structure = ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, n = ndi.label(mask, structure=structure)
    assert out.shape == (n, 4) and out.dtype == np.int64
    sizes = np.bincount(labels.ravel())[1:]
    expected = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        expected.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))  # tight, containing
    assert sorted(map(tuple, out.tolist())) == sorted(expected)
    # sorted by pixel count, largest first
    order = [expected.index(tuple(b)) for b in out.tolist()]
    assert list(sizes[order]) == sorted(sizes, reverse=True)
    largest = boxes_from_mask(ro, connectivity=connectivity)
    if n:
        assert sizes[expected.index(tuple(largest[0]))] == sizes.max()
    else:
        assert largest.shape == (0, 4)
    np.testing.assert_array_equal(ro, mask)


@given(int_boxes(min_n=0), st.sampled_from(FORMATS), st.sampled_from(FORMATS))
def test_format_round_trips(boxes, src, dst):
    size = (SIDE + 3, SIDE + 1)
    a = convert_boxes(readonly(boxes), "xyxy", src, size=size)
    b = convert_boxes(a, src, dst, size=size)
    back = convert_boxes(b, dst, "xyxy", size=size)
    np.testing.assert_array_equal(back, boxes)
    assert back.shape == boxes.shape
