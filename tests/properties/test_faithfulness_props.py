"""Hypothesis properties of cam_core.faithfulness.deletion_insertion with a linear model."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cam_core.faithfulness import deletion_insertion, pixel_ranks


@given(
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
    st.integers(1, 12),
    st.integers(1, 9),
    st.integers(0, 2**32 - 1),
)
def test_curves_of_a_linear_model(shape, steps, batch_size, seed):
    rng = np.random.default_rng(seed)
    maps = rng.integers(0, 3, shape).astype(np.float32)  # ties on purpose
    images = rng.random(shape)

    def score(n, masks):
        assert masks.dtype == np.float32 and masks.shape[1:] == shape[1:]
        return (masks * images[n]).sum(axis=(1, 2))

    c = deletion_insertion(maps, score, steps=steps, batch_size=batch_size)
    total = images.sum(axis=(1, 2))[:, None]
    # a pixel is either deleted or inserted: the two curves add up to the whole image
    np.testing.assert_allclose(c.deletion + c.insertion, np.broadcast_to(total, c.deletion.shape))
    # non-negative pixels: deletion never rises, insertion never falls; both ends are exact
    assert np.all(np.diff(c.deletion, axis=1) <= 1e-12)
    assert np.all(np.diff(c.insertion, axis=1) >= -1e-12)
    np.testing.assert_allclose(c.deletion[:, 0], total[:, 0])
    np.testing.assert_allclose(c.insertion[:, -1], total[:, 0])
    np.testing.assert_allclose(c.deletion[:, -1], 0, atol=1e-12)
    np.testing.assert_allclose(c.deletion_auc + c.insertion_auc, total[:, 0])


@given(st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)), st.integers(0, 2**32 - 1))
def test_ranks_are_a_permutation_ordered_by_value(shape, seed):
    maps = np.random.default_rng(seed).integers(0, 4, shape).astype(np.float64)
    ranks = pixel_ranks(maps).reshape(shape[0], -1)
    flat = maps.reshape(shape[0], -1)
    for n in range(shape[0]):
        assert sorted(ranks[n]) == list(range(flat.shape[1]))
        order = np.argsort(ranks[n])
        assert np.all(np.diff(flat[n][order]) <= 0)  # values never increase along the ranks
