"""Properties of the metrics (Hypothesis, `ci` profile): ranges, monotonicity, merging, and
agreement with plain loops (native) and with the OpenCV reference (wsol)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cam_core.metrics import BoxAccuracy, Localization, PointingGame, PxAP
from tests.conftest import readonly
from tests.oracles import brute_native

H, W = 9, 11
DELTAS = (0.1, 0.3, 0.5, 0.7, 0.9)


@st.composite
def batches(draw, max_n=5):
    n = draw(st.integers(1, max_n))
    # few distinct values: flat areas, ties, holes and many components
    maps = draw(arrays(np.float64, (n, H, W), elements=st.sampled_from([0.0, 0.1, 0.35, 0.6, 1.0])))
    gts = []
    for _ in range(n):
        k = draw(st.integers(1, 2))
        rows = []
        for _ in range(k):
            x0 = draw(st.integers(0, W - 2))
            y0 = draw(st.integers(0, H - 2))
            rows.append((x0, y0, draw(st.integers(x0, W - 1)), draw(st.integers(y0, H - 1))))
        gts.append(np.array(rows))
    return maps, gts


@given(batches(), st.sampled_from(["native", "wsol"]))
def test_percent_range_and_monotone_in_delta(batch, protocol):
    maps, gts = batch
    acc = BoxAccuracy(taus=10, deltas=DELTAS, protocol=protocol)
    ro = readonly(maps)
    acc.update(ro, gts)
    r = acc.result()
    for arr in (r.box_acc, r.box_acc_all):
        assert np.all((arr >= 0) & (arr <= 100))
        assert np.all(np.diff(arr, axis=1) <= 0)
    assert np.all(r.correct_all >= r.correct)
    for value in (r.max_box_acc, r.max_box_acc_v2, r.mean_iou):
        assert 0 <= value <= 100
    np.testing.assert_array_equal(ro, maps)


@given(batches(max_n=6), st.integers(1, 5), st.sampled_from(["native", "wsol"]))
def test_merge_equals_single_pass(batch, cut, protocol):
    maps, gts = batch
    cut = min(cut, len(maps) - 1)
    whole = BoxAccuracy(taus=20, protocol=protocol)
    whole.update(maps, gts)
    if cut < 1:
        return
    a = BoxAccuracy(taus=20, protocol=protocol)
    b = BoxAccuracy(taus=20, protocol=protocol)
    a.update(maps[:cut], gts[:cut])
    b.update(maps[cut:], gts[cut:])
    r1, r2 = whole.result(), a.merge(b).result()
    np.testing.assert_array_equal(r1.correct, r2.correct)
    np.testing.assert_array_equal(r1.correct_all, r2.correct_all)
    assert r1.count == r2.count
    assert r1.mean_iou == pytest.approx(r2.mean_iou, rel=1e-12, abs=1e-12)


@given(batches())
def test_native_equals_brute_force(batch):
    maps, gts = batch
    taus = np.arange(0, 1, 0.1)
    acc = BoxAccuracy(taus=taus, deltas=(0.3, 0.5, 0.7))
    acc.update(maps, gts)
    # the native protocol takes half-open boxes; here the drawn boxes are used as half-open
    correct, correct_all = brute_native(maps, gts, taus, (0.3, 0.5, 0.7))
    np.testing.assert_array_equal(acc.result().correct, correct)
    np.testing.assert_array_equal(acc.result().correct_all, correct_all)


@given(batches())
def test_wsol_equals_opencv_reference(batch):
    pytest.importorskip("cv2", reason="OpenCV is not installed")
    from benchmarks.stage_sweep import opencv_reference_ious

    maps, gts = batch
    taus = np.arange(0, 1, 0.05)
    acc = BoxAccuracy(taus=taus, deltas=(0.3, 0.5, 0.7), protocol="wsol")
    acc.update(maps, gts)
    for multi, got in ((False, acc.result().correct), (True, acc.result().correct_all)):
        ref = np.zeros_like(got)
        for m, gt in zip(maps, gts):
            iou = opencv_reference_ious(m, gt, taus, multi_contour=multi)
            ref += iou[:, None] >= np.array([0.3, 0.5, 0.7])[None, :]
        np.testing.assert_array_equal(got, ref)


@given(batches(), st.floats(0, 1), st.floats(0, 20))
def test_other_metrics_in_percent(batch, tau, tolerance):
    maps, gts = batch
    loc = Localization(tau=tau)
    loc.update(maps, gts, np.arange(len(maps)) % 2 == 0)
    r = loc.result()
    assert 0 <= r.top1_loc <= r.gt_known_loc <= 100 and 0 <= r.mean_iou <= 100
    pg = PointingGame(tolerance=tolerance)
    pg.update(maps, gts)
    assert 0 <= pg.result().accuracy <= 100
    fg = maps > 0.5
    if fg.any():
        px = PxAP(taus=10)
        px.update(maps, fg)
        assert 0 <= px.result().pxap <= 100
