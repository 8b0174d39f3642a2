"""The smaller validation defects of issue 11: each case gave NumPy's or Python's own message, the
wrong parameter's name, or a silent wrong answer."""

from __future__ import annotations

import numpy as np
import pytest

import cam_core as cc
from cam_core._validate import as_size
from tests.conftest import readonly


def test_eigencam_with_no_channel_or_no_position():
    for shape in [(1, 0, 4, 4), (1, 3, 4, 0), (1, 3, 0, 4)]:
        with pytest.raises(ValueError, match=r"`activations` must have at least one channel"):
            cc.eigencam(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"`activations` must have at least one channel"):
        cc.gradcam(np.zeros((1, 0, 2, 2)), np.zeros((1, 0, 2, 2)))


def test_mask_iou_of_an_empty_batch_is_empty():
    out = cc.mask_iou(np.zeros((0, 4, 4), bool), np.ones((2, 4, 4), bool))
    assert out.shape == (0, 2)
    assert cc.mask_iou(np.ones((3, 4, 4), bool), np.zeros((0, 4, 4), bool)).shape == (3, 0)


def test_accumulators_refuse_an_empty_batch_by_name():
    empty = np.zeros((0, 4, 4))
    with pytest.raises(ValueError, match="`maps`: the batch is empty"):
        cc.PxAP().update(empty, np.zeros((0, 4, 4), bool))
    with pytest.raises(ValueError, match="`maps`: the batch is empty"):
        cc.PointingGame().update(empty, gt_masks=np.zeros((0, 4, 4), bool))
    with pytest.raises(ValueError, match="`maps`: the batch is empty"):
        cc.PointingGame().update(empty, [])


@pytest.mark.parametrize(
    "boxes, from_size, exc, match",
    [
        ([[0, 0, np.nan, 2.0]], (10, 10), ValueError, "`boxes` must be finite"),
        ([[0, 0, 1j, 2]], (10, 10), TypeError, "`boxes` must have a numeric dtype"),
        ([["0", "0", "1", "2"]], (10, 10), TypeError, "`boxes` must have a numeric dtype"),
        ([[5, 5, 1, 2.0]], (10, 10), ValueError, r"x0 <= x1 and y0 <= y1; got \[5.0, 5.0, 1.0"),
        ([[0, 0, 1, 2.0]], None, TypeError, "`from_size` must be a \\(width, height\\) pair"),
        ([[0, 0, 1, 2.0]], 10, TypeError, "`from_size` must be a \\(width, height\\) pair"),
        ([[0, 0, 1, 2.0]], ("a", 3), TypeError, "`from_size`"),
        ([[0, 0, 1, 2.0]], (0, 3), ValueError, "`from_size` must be positive"),
    ],
)
def test_scale_boxes_refuses_bad_input(boxes, from_size, exc, match):
    with pytest.raises(exc, match=match):
        cc.scale_boxes(boxes, from_size, (20, 20))


def test_scale_boxes_still_scales():
    np.testing.assert_array_equal(
        cc.scale_boxes(readonly(np.array([[0, 0, 5, 10], [2, 2, 2, 2]])), (10, 20), (20, 40)),
        [[0, 0, 20, 10], [8, 2, 8, 2]],
    )


@pytest.mark.parametrize(
    "size, exc",
    [(("a", 3), TypeError), ((float("nan"), 3), ValueError), ((2.5, 3), ValueError),
     ((True, 3), TypeError), ("55", TypeError), (None, TypeError), ((3,), ValueError)],
)
def test_as_size_names_the_parameter(size, exc):
    with pytest.raises(exc, match="`size`"):
        as_size(size)
    with pytest.raises(exc, match="`size`"):
        cc.upsample(np.zeros((1, 2, 2), np.float32), size)
    assert as_size((np.int64(3), 4.0)) == (3, 4)


def test_threshold_errors_name_the_parameter_given():
    m = np.random.default_rng(0).random((4, 4))
    with pytest.raises(ValueError, match="`threshold` must be finite"):
        cc.boxes_from_map(m, threshold=float("nan"))
    with pytest.raises(TypeError, match="`threshold` must be a real number; got NoneType"):
        cc.boxes_from_map(m, threshold=None)
    with pytest.raises(ValueError, match=r"`threshold` must lie in \[0.0, 100.0\]"):
        cc.boxes_from_map(m, threshold=120, method="percentile")
    with pytest.raises(ValueError, match=r"`value` must lie in \[0.0, 1.0\]; got 2.0"):
        cc.binarize(m, value=2)
    exp = cc.Explanation(maps=m[None].astype(np.float32), raw=m[None], logits=np.zeros((1, 2)),
                         targets=np.zeros(1, np.int64), method="gradcam")
    with pytest.raises(ValueError, match="`threshold` must lie in"):
        exp.boxes(threshold=1.5)
    with pytest.raises(TypeError, match="`threshold`"):
        exp.boxes(threshold=None)
    assert cc.boxes_from_map(m, method="otsu", threshold=None).shape[1] == 4


def test_progress_accepts_numpy_bools():
    a = np.random.default_rng(0).random((1, 2, 3, 3))
    out = cc.scorecam(a, lambda n, m: m.mean(axis=(1, 2)), input_size=(3, 3),
                      progress=np.bool_(False))
    assert out.shape == (1, 3, 3)


def test_resolve_targets_refuses_nan_logits():
    with pytest.raises(ValueError, match=r"`logits` must be finite; got nan at index \(1, 0\)"):
        cc.resolve_targets(None, np.array([[0.0, 1.0], [np.nan, 1.0]]))


def test_float32_overflow_is_an_error_not_inf_maps():
    a = np.full((1, 2, 3, 3), 3e38, np.float32)
    with pytest.raises(ValueError, match="overflow float32"):
        cc.gradcam(a, a)
    with pytest.raises(ValueError, match="overflow float32"):
        cc.hirescam(a, a)
    with pytest.raises(ValueError, match="overflow float32"):
        cc.layercam(a, a)
    out = cc.gradcam(a.astype(np.float64), a.astype(np.float64))  # float64 holds it
    assert np.isfinite(out).all()


def test_box_iou_of_huge_boxes():
    big = np.array([[0, 0, 1e200, 1e200]])
    half = np.array([[0, 0, 1e200, 5e199]])
    np.testing.assert_allclose(cc.box_iou(big, np.concatenate([big, half])), [[1.0, 0.5]])
    np.testing.assert_allclose(cc.box_iou(-big[:, [2, 3, 0, 1]], -big[:, [2, 3, 0, 1]]), [[1.0]])


def test_save_png_to_an_empty_path_or_a_folder(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="`path` must name a file; got an empty path"):
        cc.save_png(img, "")
    with pytest.raises(ValueError, match="`path` must name a file; got the folder"):
        cc.save_png(img, tmp_path)
    with pytest.raises(TypeError, match="`path` must be a str or os.PathLike"):
        cc.save_png(img, 3)
    assert list(tmp_path.iterdir()) == []
    assert cc.save_png(img, tmp_path / "a.png").exists()


def test_make_synthetic_refuses_more_than_memory_at_once():
    with pytest.raises(ValueError, match="`n` = 1000000000000 images of 64x64 need"):
        cc.make_synthetic(10**12)
