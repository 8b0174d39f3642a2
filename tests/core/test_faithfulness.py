"""cam_core.faithfulness: Average Drop, Increase in Confidence, deletion/insertion curves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cam_core.faithfulness import (
    PerturbationCurves,
    average_drop,
    deletion_insertion,
    increase_in_confidence,
    pixel_ranks,
)
from tests.conftest import readonly


def test_average_drop_and_increase_golden():
    # y = (0.5, 0.8, 0.4), o = (0.25, 0.9, 0.1)
    # ReLU(y - o) / y = (0.25/0.5, 0, 0.3/0.4) = (0.5, 0, 0.75) -> mean 1.25/3 -> 41.67 %
    # o > y: (no, yes, no) -> 33.33 %
    y, o = readonly(np.array([0.5, 0.8, 0.4]), np.array([0.25, 0.9, 0.1]))
    assert average_drop(y, o) == pytest.approx(100 * 1.25 / 3)
    assert increase_in_confidence(y, o) == pytest.approx(100 / 3)
    # equal scores: no drop, no increase
    assert average_drop(y, y) == 0.0 and increase_in_confidence(y, y) == 0.0


def test_average_drop_bad_input():
    with pytest.raises(ValueError, match="image 1"):
        average_drop([0.5, 0.0], [0.1, 0.1])
    with pytest.raises(ValueError, match="batch sizes differ"):
        average_drop([0.5, 0.2], [0.1])
    with pytest.raises(ValueError, match="empty"):
        increase_in_confidence([], [])
    with pytest.raises(ValueError, match=r"\(N,\); got \(2, 1\)"):
        increase_in_confidence(np.ones((2, 1)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="`masked`"):
        average_drop([0.5], [np.nan])
    with pytest.raises(TypeError):
        average_drop(["a"], [0.5])


def _sum_model(images):
    """score(n, masks) = sum(masks * images[n]): a linear model with a zero baseline."""
    calls = []

    def score(n, masks):
        calls.append((n, masks.copy()))
        return (masks * images[n]).sum(axis=(1, 2))

    return score, calls


def test_deletion_insertion_golden():
    # map [[0.4, 0.3], [0.2, 0.1]] ranks pixels (0,0), (0,1), (1,0), (1,1); image [[1, 2], [3, 4]]
    # steps=2 -> counts round(0, 2, 4) = 0, 2, 4 pixels
    # deletion:  all (10), without 1 and 2 (3 + 4 = 7), none (0)
    # insertion: none (0), only 1 and 2 (3), all (10)
    # AUC over (0, 0.5, 1): deletion 0.5 * (10 + 7)/2 + 0.5 * (7 + 0)/2 = 4.25 + 1.75 = 6
    #                       insertion 0.5 * (0 + 3)/2 + 0.5 * (3 + 10)/2 = 0.75 + 3.25 = 4
    maps = readonly(np.array([[[0.4, 0.3], [0.2, 0.1]]], dtype=np.float32))
    score, calls = _sum_model(np.array([[[1.0, 2.0], [3.0, 4.0]]]))
    curves = deletion_insertion(maps, score, steps=2)
    np.testing.assert_array_equal(curves.fractions, [0, 0.5, 1])
    np.testing.assert_allclose(curves.deletion, [[10, 7, 0]])
    np.testing.assert_allclose(curves.insertion, [[0, 3, 10]])
    np.testing.assert_allclose(curves.deletion_auc, [6.0])
    np.testing.assert_allclose(curves.insertion_auc, [4.0])
    assert len(calls) == 1 and calls[0][1].shape == (6, 2, 2) and calls[0][1].dtype == np.float32


def test_ties_broken_in_row_major_order():
    # a constant 1x4 map: pixel 0 ranks first, then 1, 2, 3
    np.testing.assert_array_equal(pixel_ranks(np.zeros((1, 1, 4))), [[[0, 1, 2, 3]]])
    np.testing.assert_array_equal(
        pixel_ranks(np.array([[[1.0, 2.0], [2.0, 1.0]]])), [[[2, 0], [1, 3]]]
    )
    score, calls = _sum_model(np.array([[[1.0, 10.0, 100.0, 1000.0]]]))
    curves = deletion_insertion(np.ones((1, 1, 4)), score, steps=4)
    # deletion removes pixel 0, then 1, ...: 1111, 1110, 1100, 1000, 0
    np.testing.assert_allclose(curves.deletion, [[1111, 1110, 1100, 1000, 0]])
    np.testing.assert_allclose(curves.insertion, [[0, 1, 11, 111, 1111]])


def _loop_curves(maps, images, steps):
    n, h, w = maps.shape
    p = h * w
    dele, ins = np.zeros((n, steps + 1)), np.zeros((n, steps + 1))
    for i in range(n):
        values = maps[i].ravel()
        order = sorted(range(p), key=lambda j: (-values[j], j))
        for s in range(steps + 1):
            c = int(np.floor(s * p / steps + 0.5))
            top = set(order[:c])
            keep_del = np.array([0.0 if j in top else 1.0 for j in range(p)]).reshape(h, w)
            dele[i, s] = (keep_del * images[i]).sum()
            ins[i, s] = ((1 - keep_del) * images[i]).sum()
    return dele, ins


@pytest.mark.parametrize("steps", [1, 3, 7, 20])
def test_matches_loop_and_chunking_invariant(steps):
    rng = np.random.default_rng(steps)
    maps = rng.integers(0, 4, (3, 5, 6)).astype(np.float64)  # many ties
    images = rng.random((3, 5, 6))
    want_del, want_ins = _loop_curves(maps, images, steps)
    results = []
    for bs in (1, 7, 64):
        score, calls = _sum_model(images)
        results.append(deletion_insertion(maps, score, steps=steps, batch_size=bs))
        assert max(c[1].shape[0] for c in calls) == min(bs, 2 * (steps + 1))
        assert sum(c[1].shape[0] for c in calls) == 3 * 2 * (steps + 1)
        assert all(np.isin(c[1], (0.0, 1.0)).all() for c in calls)
    for r in results:
        np.testing.assert_allclose(r.deletion, want_del, atol=1e-12)
        np.testing.assert_allclose(r.insertion, want_ins, atol=1e-12)
        np.testing.assert_array_equal(r.deletion_auc, results[0].deletion_auc)
        for i in range(3):
            auc = sum(
                (want_ins[i, s] + want_ins[i, s + 1]) / 2 / steps for s in range(steps)
            )
            assert r.insertion_auc[i] == pytest.approx(auc)


def test_batch_equals_each_image_alone():
    rng = np.random.default_rng(9)
    maps, images = rng.random((4, 3, 3)), rng.random((4, 3, 3))
    score, _ = _sum_model(images)
    batch = deletion_insertion(maps, score, steps=5)
    for i in range(4):
        one, _ = _sum_model(images[i : i + 1])
        alone = deletion_insertion(maps[i : i + 1], one, steps=5)
        np.testing.assert_array_equal(batch.deletion[i], alone.deletion[0])
        np.testing.assert_array_equal(batch.insertion[i], alone.insertion[0])


def test_curves_frozen():
    score, _ = _sum_model(np.ones((1, 2, 2)))
    curves = deletion_insertion(np.ones((1, 2, 2)), score, steps=2, progress=False)
    assert isinstance(curves, PerturbationCurves)
    with pytest.raises(dataclasses.FrozenInstanceError):
        curves.deletion = None


def test_deletion_insertion_bad_input():
    ok = lambda n, m: np.ones(len(m))  # noqa: E731
    with pytest.raises(ValueError, match=r"\(N, H, W\); got \(2, 2\)"):
        deletion_insertion(np.ones((2, 2)), ok)
    with pytest.raises(ValueError, match="empty"):
        deletion_insertion(np.ones((0, 2, 2)), ok)
    bad = np.ones((2, 3, 3))
    bad[1, 2, 1] = np.inf
    with pytest.raises(ValueError, match=r"\(1, 2, 1\)"):
        deletion_insertion(bad, ok)
    with pytest.raises(TypeError, match="callable"):
        deletion_insertion(np.ones((1, 2, 2)), None)
    with pytest.raises(ValueError, match="`steps`"):
        deletion_insertion(np.ones((1, 2, 2)), ok, steps=0)
    with pytest.raises(TypeError, match="`steps`"):
        deletion_insertion(np.ones((1, 2, 2)), ok, steps=2.5)
    with pytest.raises(ValueError, match="batch_size"):
        deletion_insertion(np.ones((1, 2, 2)), ok, batch_size=0)
    with pytest.raises(ValueError, match="one score per item"):
        deletion_insertion(np.ones((1, 2, 2)), lambda n, m: np.ones(1), steps=2)
    with pytest.raises(TypeError, match="dtype"):
        deletion_insertion(np.array([[["a"]]]), ok)
