"""ROAD (noisy linear imputation, MoRF / LeRF) and the rank correlation of the randomisation check."""

from __future__ import annotations

import numpy as np
import pytest

from cam_core.faithfulness import (
    RoadCurves,
    noisy_linear_impute,
    pixel_ranks,
    rank_correlation,
    road,
)
from tests.conftest import readonly


def test_imputation_golden():
    # the centre of a 3x3 image: direct neighbours (0) weigh 1/6 each, diagonal ones 1/12;
    # only the corner (2, 2) = 6 is non-zero: v = (6 / 12) / (4/6 + 4/12) = 0.5
    img = np.zeros((1, 3, 3))
    img[0, 2, 2] = 6.0
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    out = noisy_linear_impute(readonly(img), removed, noise=0)
    expected = img.copy()
    expected[0, 1, 1] = 0.5
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # two removed pixels depend on each other: a 1x3 row (3, ?, ?):
    #   v1: (1/6 + 1/6) v1 - v2 / 6 = 3 / 6;  v2: v2 / 6 - v1 / 6 = 0  ->  v1 = v2 = 3
    row = np.array([[[3.0, -1.0, 7.0]]])
    out = noisy_linear_impute(row, np.array([[False, True, True]]), noise=0)
    np.testing.assert_allclose(out, [[[3.0, 3.0, 3.0]]], atol=1e-12)


def test_imputation_keeps_linear_images_and_adds_seeded_noise():
    img = np.stack([np.add.outer(np.arange(6.0), 2 * np.arange(5.0)), np.full((6, 5), 3.0)])
    removed = np.random.default_rng(0).random((6, 5)) < 0.4
    removed[[0, -1], :] = removed[:, [0, -1]] = False  # interior pixels: all 8 neighbours
    exact = noisy_linear_impute(img, removed, noise=0)
    np.testing.assert_allclose(exact, img, atol=1e-9)  # a plane is its neighbours' mean
    noisy = noisy_linear_impute(img, removed, noise=0.5, seed=3)
    np.testing.assert_array_equal(noisy[:, ~removed], img[:, ~removed])  # kept pixels untouched
    assert np.all(noisy[:, removed] != exact[:, removed])
    np.testing.assert_array_equal(noisy, noisy_linear_impute(img, removed, noise=0.5, seed=3))


def test_road_golden():
    # a 1x4 image (1, 2, 3, 10), map (0, 0, 1, 2): order pixel 3, 2, 0, 1 (tie: 0 first);
    # the score is the image's sum.
    img = np.array([[[[1.0, 2.0, 3.0, 10.0]]]])
    maps = np.array([[[0.0, 0.0, 1.0, 2.0]]])
    np.testing.assert_array_equal(pixel_ranks(maps), [[[2, 3, 1, 0]]])
    # MoRF 25%: pixel 3 from pixel 2 -> (1, 2, 3, 3): 9; 50%: pixels 2, 3 from pixel 1 -> 7
    # LeRF 25%: pixel 1 from 0 and 2 -> (1, 2, 3, 10): 16; 50%: pixels 0, 1 from 2 -> 19
    calls = []

    def score(n, batch):
        calls.append(batch.shape)
        return batch.reshape(len(batch), -1).sum(1)

    r = road(img, maps, score, percentages=(25, 50), noise=0, batch_size=3)
    assert isinstance(r, RoadCurves)
    np.testing.assert_allclose(r.morf, [[9.0, 7.0]], atol=1e-9)
    np.testing.assert_allclose(r.lerf, [[16.0, 19.0]], atol=1e-9)
    assert r.combined == pytest.approx((7 + 12) / 4)
    assert calls == [(3, 1, 1, 4), (1, 1, 1, 4)]


def test_road_matches_a_loop_and_the_batch_changes_nothing():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    maps = rng.random((2, 8, 8))
    w = rng.normal(size=(3, 8, 8))

    def score(n, batch):
        return np.einsum("bchw,chw->b", batch, w) + n

    r = road(img, maps, score, percentages=(20, 60), seed=4, batch_size=2)
    again = road(img, maps, score, percentages=(20, 60), seed=4, batch_size=64)
    np.testing.assert_allclose(again.morf, r.morf)
    np.testing.assert_allclose(again.lerf, r.lerf)
    ranks = pixel_ranks(maps)
    for n in range(2):
        for p, pct in enumerate((20, 60)):
            k = round(pct / 100 * 64)
            for lerf, got in ((0, r.morf), (1, r.lerf)):
                removed = ranks[n] >= 64 - k if lerf else ranks[n] < k
                seed = np.random.SeedSequence([4, n, p, lerf]).generate_state(1)[0]
                ref = noisy_linear_impute(img[n], removed, noise=0.01, seed=seed)
                assert got[n, p] == pytest.approx(score(n, ref[None].astype(np.float32))[0], rel=1e-5)


def test_road_refuses_bad_arguments():
    img, maps = np.zeros((1, 1, 4, 4)), np.zeros((1, 4, 4))
    with pytest.raises(ValueError, match="percentages"):
        road(img, maps, lambda n, b: np.zeros(len(b)), percentages=(0, 50))
    with pytest.raises(ValueError, match="size"):
        road(img, np.zeros((1, 3, 4)), lambda n, b: np.zeros(len(b)))
    with pytest.raises(ValueError, match="every pixel"):
        noisy_linear_impute(img[0], np.ones((4, 4), bool))
    with pytest.raises(TypeError, match="removed"):
        noisy_linear_impute(img[0], np.ones((4, 4)))


def test_rank_correlation_golden_and_scipy():
    from scipy.stats import spearmanr

    a = np.array([[[1.0, 2.0], [3.0, 4.0]]] * 3)
    b = np.stack([a[0] * 2, a[0][::-1, ::-1], np.ones((2, 2))])
    np.testing.assert_allclose(rank_correlation(a, b), [1.0, -1.0, 0.0])
    rng = np.random.default_rng(2)
    x, y = rng.random((4, 5, 6)), rng.random((4, 5, 6))
    x[0, 0, :3] = 0.5  # ties: average ranks, as SciPy
    for i, r in enumerate(rank_correlation(x, y)):
        assert r == pytest.approx(spearmanr(x[i].ravel(), y[i].ravel()).statistic)
    with pytest.raises(ValueError, match="maps_b"):
        rank_correlation(x, y[:, :4])
