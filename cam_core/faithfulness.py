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

- **ROAD** (Rong et al., ICML 2022; :func:`road`): the removed pixels are imputed from their
  neighbours instead (:func:`noisy_linear_impute`), so the images go through a
  ``score_images(index, images)`` callable, MoRF and LeRF.
- **Model-parameter randomisation** (Adebayo et al., NeurIPS 2018): :func:`rank_correlation`
  of the maps of a model and of its copy with re-initialised top layers (the adapters'
  ``randomized_copy``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cam_core._chunks import check_batch_size, check_callable, chunked_scores
from cam_core._validate import as_float_array, check_finite, check_fits_memory, check_same_batch

__all__ = [
    "ROAD_PERCENTAGES",
    "PerturbationCurves",
    "RoadCurves",
    "average_drop",
    "deletion_insertion",
    "increase_in_confidence",
    "noisy_linear_impute",
    "pixel_ranks",
    "rank_correlation",
    "road",
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
    check_callable(score_masked, "score_masked")
    steps = _check_steps(steps)
    check_fits_memory(16 * (steps + 1), "steps", f"{steps} steps")
    batch_size = check_batch_size(batch_size)
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

    scores = chunked_scores(
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


# ------------------------------------------------------------------------------------ ROAD
#
# Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
# ICML 2022. Removing pixels by setting them to a constant leaks the map's shape to the model
# (the model sees where the removed pixels are); ROAD fills them by noisy linear imputation from
# their neighbours instead, and scores the imputed images.

# The imputation's neighbourhood (the paper's kernel): direct neighbours 1/6, diagonal 1/12.
_ROAD_NEIGHBOURS = (
    (0, 1, 1 / 6), (0, -1, 1 / 6), (1, 0, 1 / 6), (-1, 0, 1 / 6),
    (1, 1, 1 / 12), (1, -1, 1 / 12), (-1, 1, 1 / 12), (-1, -1, 1 / 12),
)
ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def noisy_linear_impute(image, removed, /, *, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """Fill the removed pixels of one image from their neighbours (ROAD's imputation).

    Each removed pixel ``p`` takes the weighted mean of its in-image neighbours ``q`` (weight
    1/6 for the four direct ones, 1/12 for the diagonal ones): ``sum_q w_pq (v_p - v_q) = 0``,
    one sparse linear system over all removed pixels (their values depend on each other), solved
    for every channel at once; kept pixels are unchanged. Then Gaussian noise of standard
    deviation ``noise`` is added to the imputed pixels (Rong et al., ICML 2022, section 4).

    Parameters
    ----------
    image : array_like, shape (C, H, W)
        Channels-first, as the model takes it (normalised inputs included).
    removed : array_like of bool, shape (H, W)
        The pixels to impute; at least one pixel must be kept.
    noise : float
        The noise's standard deviation (the paper's 0.01 for inputs in [0, 1]), >= 0.
    seed : int
        Seed of NumPy's ``default_rng`` for the noise.

    Returns
    -------
    ndarray, shape (C, H, W), float64
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    x = as_float_array(image, "image", shape=("C", "H", "W")).astype(np.float64)
    check_finite(x, "image")
    mask = np.asarray(removed)
    if mask.dtype != bool:
        raise TypeError(f"`removed` must be a boolean array; got dtype {mask.dtype}")
    if mask.shape != x.shape[1:]:
        raise ValueError(f"`removed` must have shape {x.shape[1:]} (H, W); got {mask.shape}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"`noise` must be finite and >= 0; got {noise}")
    out = x.copy()
    ys, xs = np.nonzero(mask)
    m = len(ys)
    if m == 0:
        return out
    if m == mask.size:
        raise ValueError("`removed` covers every pixel; ROAD's imputation needs kept neighbours")
    height, width = mask.shape
    index = np.full(mask.shape, -1, dtype=np.int64)
    index[ys, xs] = np.arange(m)
    diag = np.zeros(m)
    rhs = np.zeros((m, x.shape[0]))
    rows, cols, vals = [np.arange(m)], [np.arange(m)], []
    for dy, dx, w in _ROAD_NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        p, ny, nx = np.flatnonzero(inside), ny[inside], nx[inside]
        diag[p] += w
        q = index[ny, nx]
        gone = q >= 0
        rows.append(p[gone])
        cols.append(q[gone])
        vals.append(np.full(int(gone.sum()), -w))
        np.add.at(rhs, p[~gone], w * x[:, ny[~gone], nx[~gone]].T)
    a = coo_matrix(
        (np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))),
        shape=(m, m),
    ).tocsc()
    values = splu(a).solve(rhs)  # (m, C)
    if noise:
        values = values + noise * np.random.default_rng(seed).standard_normal(values.shape)
    out[:, ys, xs] = values.T
    return out


@dataclass(frozen=True)
class RoadCurves:
    """ROAD's scores of a batch of maps.

    Attributes
    ----------
    percentages : ndarray, shape (P,)
        The share of pixels removed, in percent.
    morf : ndarray, shape (N, P)
        Score with the most relevant ``percentages[p]`` % of the pixels imputed (lower is
        better: a faithful map removes what the model needs first).
    lerf : ndarray, shape (N, P)
        Score with the least relevant ones imputed (higher is better).
    """

    percentages: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray

    @property
    def combined(self) -> float:
        """``mean(lerf - morf) / 2`` over images and percentages (pytorch-grad-cam's
        ROADCombined); higher is better."""
        return float(np.mean(self.lerf - self.morf) / 2)


def road(
    images,
    maps,
    score_images: Callable[[int, np.ndarray], np.ndarray],
    /,
    *,
    percentages=ROAD_PERCENTAGES,
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool | None = None,
) -> RoadCurves:
    """ROAD, most relevant first (MoRF) and least relevant first (LeRF).

    For image ``n`` and each percentage ``p``, the ``round(p / 100 * H * W)`` pixels of largest
    (MoRF) or smallest (LeRF) map value (ties as in :func:`pixel_ranks`) are imputed by
    :func:`noisy_linear_impute` (seeded ``(seed, n, p, order)``), and ``score_images(n, batch)``
    scores the imputed images (Rong et al., ICML 2022; the paper reports accuracy, pytorch-grad-
    cam the class probability: pass what ``score_images`` returns). MoRF items come first, then
    LeRF, ``batch_size`` per call.

    Parameters
    ----------
    images : array_like, shape (N, C, H, W)
        Channels-first, as the scoring function's model takes them after transposing.
    maps : array_like, shape (N, H, W)
        The maps at the images' size.
    score_images : callable ``(index, images) -> scores``
        ``images`` is ``(B, C, H, W)`` float32; returns ``(B,)`` scores of image ``index``'s class.
    percentages : sequence of float
        In (0, 100).
    noise, seed
        As in :func:`noisy_linear_impute`.
    batch_size : int
    progress : bool or None

    Returns
    -------
    RoadCurves
    """
    x = as_float_array(images, "images", shape=("N", "C", "H", "W"))
    ranks = pixel_ranks(maps)
    check_same_batch(images=x, maps=ranks)
    if ranks.shape[1:] != x.shape[2:]:
        raise ValueError(
            f"`maps` must have the images' size {x.shape[2:]}; got {ranks.shape[1:]}"
        )
    check_finite(x, "images")
    check_callable(score_images, "score_images")
    batch_size = check_batch_size(batch_size)
    pct = np.asarray(percentages, dtype=np.float64)
    if pct.ndim != 1 or pct.size == 0 or np.any((pct <= 0) | (pct >= 100)):
        raise ValueError(
            f"`percentages` must be a non-empty sequence in (0, 100); got {percentages!r}"
        )
    n, _, height, width = x.shape
    pixels = height * width
    counts = np.clip(np.rint(pct / 100 * pixels).astype(np.int64), 0, pixels - 1)
    n_p = len(pct)

    def batch(i: int, start: int, stop: int) -> np.ndarray:
        out = []
        for j in range(start, stop):
            lerf, p = divmod(j, n_p)
            removed = (ranks[i] >= pixels - counts[p]) if lerf else (ranks[i] < counts[p])
            state = np.random.SeedSequence([seed, i, p, lerf]).generate_state(1)[0]
            out.append(noisy_linear_impute(x[i], removed, noise=noise, seed=int(state)))
        return np.stack(out).astype(np.float32)

    scores = chunked_scores(score_images, batch, (n, 2 * n_p), batch_size, progress,
                             "score_images", "ROAD")
    return RoadCurves(percentages=pct, morf=scores[:, :n_p], lerf=scores[:, n_p:])


# ------------------------------------------------------------ model-parameter randomisation


def rank_correlation(maps_a, maps_b, /) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps: ``(N,)``, in [-1, 1].

    The sanity check of Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018
    (section 3): the maps of a model whose top layers are re-initialised should differ from the
    trained model's, so a low rank correlation passes and a high one fails. Ties get their
    average rank; a constant map against anything gives 0.
    """
    from scipy.stats import rankdata

    a = as_float_array(maps_a, "maps_a", shape=("N", "H", "W"))
    b = as_float_array(maps_b, "maps_b", shape=("N", "H", "W"))
    if a.shape != b.shape:
        raise ValueError(f"`maps_b` must have the shape of `maps_a` {a.shape}; got {b.shape}")
    check_finite(a, "maps_a")
    check_finite(b, "maps_b")
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    num = (ra * rb).sum(1)
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
