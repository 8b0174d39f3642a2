"""Metrics: golden values, the native sweep against a brute-force loop, merging, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import zoom

from cam_core.boxes import scale_boxes_wsol
from cam_core.metrics import (
    BoxAccuracy,
    Localization,
    PointingGame,
    PxAP,
)
from tests.conftest import readonly
from tests.oracles import brute_native


def _smooth_maps(rng, n, size=40):
    return np.array([np.maximum(zoom(rng.standard_normal((7, 7)), size / 7, order=3), 0)
                     for _ in range(n)])


def _gts(rng, n, size=40):
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 3))
        x0 = rng.integers(0, size - 5, k)
        y0 = rng.integers(0, size - 5, k)
        out.append(np.stack([x0, y0, x0 + rng.integers(1, 20, k), y0 + rng.integers(1, 20, k)], 1))
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_native_sweep_equals_brute_force(dtype):
    rng = np.random.default_rng(0)
    maps = _smooth_maps(rng, 25).astype(dtype)
    maps[:5] += 0.2 * rng.random((5, 40, 40)).astype(dtype)  # many components
    gts = _gts(rng, 25)
    taus = np.arange(0, 1, 0.05)
    acc = BoxAccuracy(taus=taus, deltas=(0.3, 0.5, 0.7))
    acc.update(readonly(maps), gts)
    res = acc.result()
    correct, correct_all = brute_native(maps, gts, taus, (0.3, 0.5, 0.7))
    np.testing.assert_array_equal(res.correct, correct)
    np.testing.assert_array_equal(res.correct_all, correct_all)


def test_native_golden():
    m = np.zeros((1, 10, 10))
    m[0, 1:3, 1:3] = 1.0      # 4 pixels
    m[0, 5:8, 5:8] = 0.5      # 9 pixels, the largest at tau <= 0.5
    gt = [np.array([[5, 5, 8, 8]])]
    acc = BoxAccuracy(taus=[0.0, 0.4, 0.6], deltas=(0.5,))
    acc.update(m, gt)
    res = acc.result()
    # tau 0: one component (the whole map) -> IoU 9/100; 0.4: largest is the 3x3 -> 1;
    # 0.6: only the 2x2 -> 0
    assert res.correct.tolist() == [[0], [1], [0]]
    assert res.correct_all.tolist() == [[0], [1], [0]]
    assert res.max_box_acc == 100.0 and res.best_tau == 0.4 and res.mean_iou == 100.0
    assert res.box_acc.tolist() == [[0.0], [100.0], [0.0]]
    assert res.max_box_acc_v2 == 100.0 and res.count == 1


def test_merge_equals_single_pass():
    rng = np.random.default_rng(1)
    maps = _smooth_maps(rng, 12)
    gts = _gts(rng, 12)
    for protocol in ("native", "wsol"):
        whole = BoxAccuracy(taus=50, protocol=protocol)
        whole.update(maps, gts)
        a = BoxAccuracy(taus=50, protocol=protocol)
        b = BoxAccuracy(taus=50, protocol=protocol)
        a.update(maps[:5], gts[:5])
        b.update(maps[5:], gts[5:])
        r1, r2 = whole.result(), a.merge(b).result()
        np.testing.assert_array_equal(r1.correct, r2.correct)
        np.testing.assert_array_equal(r1.correct_all, r2.correct_all)
        assert (r1.max_box_acc, r1.max_box_acc_v2, r1.best_tau, r1.count) == (
            r2.max_box_acc, r2.max_box_acc_v2, r2.best_tau, r2.count)
        assert r1.mean_iou == pytest.approx(r2.mean_iou, rel=1e-12)


def test_merge_refuses_different_settings():
    with pytest.raises(ValueError, match="taus"):
        BoxAccuracy(taus=10).merge(BoxAccuracy(taus=20))
    with pytest.raises(ValueError, match="protocol"):
        BoxAccuracy().merge(BoxAccuracy(protocol="wsol"))
    with pytest.raises(ValueError, match="deltas"):
        BoxAccuracy().merge(BoxAccuracy(deltas=(0.5,)))
    with pytest.raises(TypeError, match="merge"):
        BoxAccuracy().merge(PxAP())
    with pytest.raises(ValueError, match="tau"):
        Localization(tau=0.2).merge(Localization(tau=0.3))
    with pytest.raises(ValueError, match="tolerance"):
        PointingGame().merge(PointingGame(tolerance=3))


def test_taus_grid():
    assert len(BoxAccuracy(taus=1000)._taus) == 1000
    np.testing.assert_array_equal(BoxAccuracy()._taus, np.arange(0, 1, 0.01))


def test_localization_golden():
    m = np.zeros((3, 10, 10))
    m[:, 2:6, 2:6] = 1.0
    gts = [np.array([[2, 2, 6, 6]]), np.array([[2, 2, 6, 6]]), np.array([[6, 6, 10, 10]])]
    loc = Localization(tau=0.2, delta=0.5)
    loc.update(readonly(m), gts, np.array([True, False, True]))
    res = loc.result()
    assert res.gt_known_loc == pytest.approx(200 / 3)
    assert res.top1_loc == pytest.approx(100 / 3)
    assert res.mean_iou == pytest.approx(200 / 3)
    other = Localization(tau=0.2, delta=0.5)
    other.update(m[:1], gts[:1], np.array([False]))
    merged = loc.merge(other).result()
    assert (merged.count, merged.top1_loc, merged.gt_known_loc) == (4, 25.0, 75.0)


def test_pxap_golden_and_merge():
    maps = np.array([[[0.9, 0.8], [0.3, 0.1]]])
    fg = np.array([[[True, False], [True, False]]])
    px = PxAP(taus=np.array([0.0, 0.5]))  # bins [0, .5), [.5, 1), [1, 2), [2, 3]
    px.update(readonly(maps), fg)
    res = px.result()
    # from the top: thresholds 2, 1, 0.5, 0: tp 0,0,1,2  fp 0,0,1,2 -> precision nan,nan,.5,.5
    np.testing.assert_array_equal(res.recall, [0.0, 0.0, 0.5, 1.0])
    assert res.pxap == pytest.approx(50.0)
    assert (res.positives, res.negatives) == (2, 2)
    ignore = np.array([[[False, True], [False, False]]])
    px2 = PxAP(taus=np.array([0.0, 0.5]))
    px2.update(maps, fg, ignore=ignore)
    # fp only at 0.1: precision 1 at 0.5, 2/3 at 0 -> 0.5 * 1 + 0.5 * 2/3
    assert px2.result().pxap == pytest.approx(100 * (0.5 + 1 / 3))
    merged = PxAP(taus=np.array([0.0, 0.5]))
    merged.update(np.concatenate([maps, maps]), np.concatenate([fg, fg]))
    assert px.merge(px).result().pxap == merged.result().pxap


def test_pointing_game():
    m = np.zeros((3, 40, 40))
    m[0, 10, 10] = 1.0
    m[1, 30, 30] = 1.0
    m[2, 5, 35] = 1.0
    boxes = [np.array([[0, 0, 5, 5]])] * 3  # covers pixels 0..4
    pg = PointingGame(tolerance=8)
    pg.update(readonly(m), boxes)
    # (10,10) is sqrt(6^2+6^2)=8.49 px away from pixel (4,4): miss at 8
    assert pg.result().hits == 0
    pg2 = PointingGame(tolerance=8.5)
    pg2.update(m, boxes)
    assert pg2.result().hits == 1 and pg2.result().accuracy == pytest.approx(100 / 3)
    masks = np.zeros((3, 40, 40), dtype=bool)
    masks[:, 30, 22] = True
    pg3 = PointingGame(tolerance=8)
    pg3.update(m, gt_masks=masks)
    assert pg3.result().hits == 1
    with pytest.raises(ValueError, match="exactly one"):
        pg3.update(m)


def test_scale_boxes_wsol_golden():
    out = scale_boxes_wsol(np.array([[0, 0, 499, 374]]), (375, 500))
    assert out.tolist() == [[0, 0, int(499 * 224 / 500), int(374 * 224 / 375)]]


def test_all_results_in_percent_and_monotone_in_delta():
    rng = np.random.default_rng(4)
    maps = _smooth_maps(rng, 6)
    gts = _gts(rng, 6)
    for protocol in ("native", "wsol"):
        acc = BoxAccuracy(taus=20, deltas=(0.1, 0.3, 0.5, 0.7, 0.9), protocol=protocol)
        acc.update(maps, gts)
        r = acc.result()
        for arr in (r.box_acc, r.box_acc_all):
            assert arr.min() >= 0 and arr.max() <= 100
            assert np.all(np.diff(arr, axis=1) <= 0)
        assert np.all(r.box_acc_all >= r.box_acc)  # all boxes include the largest one


def test_bad_inputs():
    acc = BoxAccuracy()
    m = np.zeros((2, 8, 8))
    gt = [np.array([[0, 0, 2, 2]])] * 2
    with pytest.raises(ValueError, match=r"`maps` must have shape \(N, H, W\); got \(8, 8\)"):
        acc.update(m[0], gt)
    with pytest.raises(ValueError, match="batch sizes differ"):
        acc.update(m, gt[:1])
    with pytest.raises(ValueError, match="empty"):
        acc.update(np.zeros((0, 8, 8)), [])
    bad = m.copy()
    bad[1, 3, 4] = np.inf
    with pytest.raises(ValueError, match=r"\(1, 3, 4\)"):
        acc.update(bad, gt)
    with pytest.raises(ValueError, match=r"`gt_boxes\[1\]` row 0: x1 < x0"):
        acc.update(m, [gt[0], np.array([[4, 0, 2, 2]])])
    with pytest.raises(ValueError, match=r"`gt_boxes\[0\]` must hold at least one box"):
        acc.update(m, [np.zeros((0, 4)), gt[0]])
    with pytest.raises(TypeError, match="numeric"):
        acc.update(np.zeros((2, 8, 8), dtype=object), gt)
    with pytest.raises(TypeError, match="gt_boxes"):
        acc.update(m, "boxes")
    with pytest.raises(ValueError, match="no image"):
        acc.result()
    with pytest.raises(ValueError, match="protocol"):
        BoxAccuracy(protocol="voc")
    with pytest.raises(ValueError, match="taus"):
        BoxAccuracy(taus=[0.5, 1.5])
    with pytest.raises(TypeError, match="correct"):
        Localization().update(m, gt, np.array([1, 0]))
    with pytest.raises(ValueError, match="correct"):
        Localization().update(m, gt, np.array([True]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PxAP().update(m + 2, m > 0)
    with pytest.raises(ValueError, match="no foreground"):
        PxAP().result()


def test_localization_wsol_protocol_uses_the_reference_boxes():
    # pixels x 2..5, y 2..5 -> the reference's box (2, 2, 6, 6) inclusive, one pixel larger
    m = np.zeros((1, 10, 10))
    m[0, 2:6, 2:6] = 1.0
    exact = [np.array([[2, 2, 6, 6]])]
    component = [np.array([[2, 2, 5, 5]])]
    loc = Localization(tau=0.5, delta=1.0, protocol="wsol")
    loc.update(m, exact, np.array([True]))
    assert loc.result().gt_known_loc == 100.0
    loc = Localization(tau=0.5, delta=1.0, protocol="wsol")
    loc.update(m, component, np.array([True]))
    assert loc.result().mean_iou == pytest.approx(100 * 16 / 25)


def test_accumulator_state_round_trip_and_errors():
    """state() / load_state() give back the same figures; a state of other settings is refused."""
    rng = np.random.default_rng(3)
    maps = rng.random((5, 16, 16))
    gt = [np.array([[2, 3, 10, 12]]) for _ in range(5)]
    acc = BoxAccuracy(taus=20)
    acc.update(maps, gt)
    restored = BoxAccuracy(taus=20).load_state(acc.state())
    assert restored.result().max_box_acc_v2 == acc.result().max_box_acc_v2
    np.testing.assert_array_equal(restored.state()["correct"], acc.state()["correct"])
    state = acc.state()
    state["correct"][...] = 0  # a copy: the accumulator is untouched
    assert acc.state()["correct"].sum() > 0
    with pytest.raises(ValueError, match="shape"):
        BoxAccuracy(taus=10).load_state(acc.state())
    with pytest.raises(ValueError, match="no counter"):
        Localization(tau=0.2).load_state(acc.state())


@pytest.mark.parametrize("make", [lambda: BoxAccuracy(taus=20), lambda: PxAP(taus=20),
                                  lambda: Localization(), lambda: PointingGame()])
def test_merge_adds_in_place_and_returns_self(make):
    # the README's `acc.merge(other)`, result not assigned, must leave the sum in `acc`
    a, b = make(), make()
    before = {k: np.array(v, copy=True) for k, v in a.state().items()}
    for name in a._COUNTERS:
        setattr(b, name, getattr(b, name) + 3)
    other_before = b.state()
    assert a.merge(b) is a
    for key, value in a.state().items():
        np.testing.assert_array_equal(value, before[key] + 3)
    for key, value in b.state().items():  # `other` unchanged
        np.testing.assert_array_equal(value, other_before[key])
