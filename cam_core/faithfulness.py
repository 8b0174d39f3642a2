"""Faithfulness figures: does the model's score follow the map?

Two families, both with the model in the loop through the adapter's score callable:

- **Average Drop and Increase in Confidence** (Chattopadhay et al., Grad-CAM++, WACV 2018):
  ``y`` is the class probability on the image and ``o`` the one on the image multiplied by its
  (upsampled, normalised) map. The caller computes both; these functions only aggregate them.
- **Deletion and insertion** (Petsiuk et al., "RISE: Randomized Input Sampling for Explanation
  of Black-box Models", BMVC 2018): pixels are removed from (deletion) or added to (insertion)
  the image in decreasing order of map value, and the score is recorded after each step. A
  faithful map makes the deletion curve fall fast (small area) and the insertion curve rise fast
  (large area).

Masks follow Score-CAM's convention (:func:`cam_core.methods.scorecam`): a ``(B, H, W)`` float32
array passed to ``score_masked(index, masks)``, which multiplies image ``index`` by each mask and
returns ``(B,)`` scores. Masks here are 0 or 1, so a removed pixel becomes the input value 0,
i.e. **the baseline is the zero input** (after the model's preprocessing: for a normalised input,
the dataset mean). Pass class probabilities from ``score_masked`` to get the usual figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cam_core._validate import as_float_array, check_finite, check_fits_memory, check_same_batch
from cam_core.methods import _check_batch_size, _check_callable, _chunked_scores

__all__ = [
    "PerturbationCurves",
    "average_drop",
    "deletion_insertion",
    "increase_in_confidence",
    "pixel_ranks",
]


def _score_pair(base, masked) -> tuple[np.ndarray, np.ndarray]:
    y = as_float_array(base, "base", shape=("N",))
    o = as_float_array(masked, "masked", shape=("N",))
    check_same_batch(base=y, masked=o)
    check_finite(y, "base")
    check_finite(o, "masked")
    return y.astype(np.float64), o.astype(np.float64)


def average_drop(base, masked, /) -> float:
    """Average Drop in percent: ``100 * mean_n(ReLU(y_n - o_n) / y_n)``. Lower is better.

    Parameters
    ----------
    base : array_like, shape (N,)
        ``y``: the class probability of each image; must be positive.
    masked : array_like, shape (N,)
        ``o``: the class probability of each image multiplied by its map.

    Returns
    -------
    float
    """
    y, o = _score_pair(base, masked)
    bad = np.flatnonzero(y <= 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"`base` must hold positive scores (probabilities); got {y[i]} for image {i}"
        )
    return float(100.0 * np.mean(np.maximum(y - o, 0.0) / y))


def increase_in_confidence(base, masked, /) -> float:
    """Increase in Confidence in percent: ``100 * mean_n(o_n > y_n)``. Higher is better.

    Parameters
    ----------
    base, masked : array_like, shape (N,)
        ``y`` and ``o`` as in :func:`average_drop`.

    Returns
    -------
    float
    """
    y, o = _score_pair(base, masked)
    return float(100.0 * np.mean(o > y))


@dataclass(frozen=True)
class PerturbationCurves:
    """Deletion and insertion curves of a batch of maps.

    Attributes
    ----------
    fractions : ndarray, shape (S + 1,)
        ``0, 1/S, ..., 1``: the share of pixels removed (deletion) or kept (insertion).
    deletion : ndarray, shape (N, S + 1)
        Score with the top ``fractions[s]`` of each map's pixels removed.
    insertion : ndarray, shape (N, S + 1)
        Score with only the top ``fractions[s]`` kept.
    deletion_auc, insertion_auc : ndarray, shape (N,)
        Trapezoidal area under each curve over ``fractions`` in ``[0, 1]``.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"`steps` must be an int; got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1; got {steps}")
    return int(steps)


def pixel_ranks(maps, /) -> np.ndarray:
    """Each pixel's rank in its map, 0 for the largest value: ``(N, H, W)`` int64.

    Ties are broken by a stable order: among equal values, the pixel that comes first in
    row-major order (smaller ``y``, then smaller ``x``) ranks first.
    """
    x = as_float_array(maps, "maps", shape=("N", "H", "W"))
    n = check_same_batch(maps=x)
    check_finite(x, "maps")
    flat = x.reshape(n, -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks.reshape(x.shape)


def deletion_insertion(
    maps,
    score_masked: Callable[[int, np.ndarray], np.ndarray],
    /,
    *,
    steps: int = 20,
    batch_size: int = 64,
    progress: bool | None = None,
) -> PerturbationCurves:
    """Deletion and insertion curves and their areas.

    At step ``s`` of ``S = steps``, the ``c_s = round(s * H * W / S)`` pixels of largest map
    value (half rounded up; ties as in :func:`pixel_ranks`) are set to 0 in the deletion mask
    and are the only ones set to 1 in the insertion mask. All ``2 (S + 1)`` masks of an image go
    through ``score_masked(n, masks)``, ``batch_size`` at a time (deletion first).

    Parameters
    ----------
    maps : array_like, shape (N, H, W)
        The maps at the input's size; only the order of their values matters.
    score_masked : callable ``(index, masks) -> scores``
        ``masks`` is float32 ``(B, H, W)`` with values 0 and 1; returns ``(B,)`` scores of
        image ``index`` multiplied by each mask (zero baseline, see the module docstring).
    steps : int
        Number of steps ``S`` (``S + 1`` points per curve, both ends included).
    batch_size : int
        Masks per call of ``score_masked``.
    progress : bool or None
        Show a tqdm bar over chunks; None shows one on a terminal when there are many chunks.

    Returns
    -------
    PerturbationCurves
    """
    ranks = pixel_ranks(maps)
    _check_callable(score_masked, "score_masked")
    steps = _check_steps(steps)
    check_fits_memory(16 * (steps + 1), "steps", f"{steps} steps")
    batch_size = _check_batch_size(batch_size)
    n, height, width = ranks.shape
    pixels = height * width
    s = np.arange(steps + 1, dtype=np.int64)
    counts = (2 * s * pixels + steps) // (2 * steps)  # round(s * P / S), half up
    # item j < S + 1: deletion with counts[j]; item j >= S + 1: insertion with counts[j - S - 1]
    kept_if_below = np.concatenate([counts, counts])
    insertion = np.arange(2 * (steps + 1)) > steps

    def masks(i: int, start: int, stop: int) -> np.ndarray:
        below = ranks[i][None] < kept_if_below[start:stop, None, None]  # (B, H, W)
        return (below == insertion[start:stop, None, None]).astype(np.float32)

    scores = _chunked_scores(
        score_masked, masks, (n, 2 * (steps + 1)), batch_size, progress, "score_masked",
        "deletion/insertion",
    )
    fractions = s / steps
    deletion, inserted = scores[:, : steps + 1], scores[:, steps + 1 :]
    return PerturbationCurves(
        fractions=fractions,
        deletion=deletion,
        insertion=inserted,
        deletion_auc=np.trapezoid(deletion, fractions, axis=1),
        insertion_auc=np.trapezoid(inserted, fractions, axis=1),
    )
