"""Thresholds that turn maps into binary masks.

Every function accepts one map ``(H, W)`` or a batch ``(N, H, W)`` and answers in the same form
(one value or mask per map). The rule that selects the pixels depends on the method, and each one
is stated once here:

- **fraction** (the CAM paper's 0.2, Grad-CAM's 0.15): keep ``map >= fraction * max(map)``, the
  maximum taken per map. A constant map keeps every pixel (each pixel equals the maximum); meant
  for non-negative maps, as produced by :mod:`cam_core.maps`.
- **otsu**: keep ``map > t`` with ``t`` from :func:`skimage.filters.threshold_otsu` (strictly
  greater, scikit-image's convention). For a constant map Otsu's ``t`` is the constant itself, so
  the mask is empty.
- **percentile**: keep ``map >= t`` with ``t = numpy.percentile(map, q)`` (linear
  interpolation), so about ``100 - q`` percent of the pixels are kept; ties at ``t`` are kept, so
  a constant map keeps every pixel.

Maps are checked by :mod:`cam_core._validate`: a numeric dtype (``TypeError`` otherwise), the rank
(``ValueError`` echoing the shape) and finiteness (``ValueError`` naming the first NaN or Inf).
Inputs are never modified.

The map side (:func:`threshold_fraction`, :func:`threshold_sweep`, :func:`binarize`) runs on the
arrays it is given (NumPy, torch on its device, JAX, CuPy, ``array-api-strict``; see
:mod:`cam_core._validate`) and returns masks of that kind. The standard has no percentile and no
Otsu: :func:`threshold_percentile` and :func:`threshold_otsu` compute on a host copy and return
their ``(N,)`` thresholds in the maps' library (a single map still gives a float).
"""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_otsu as _skimage_otsu

from cam_core._validate import (
    array_namespace,
    as_float,
    as_fractions,
    as_real,
    check_finite,
    device_of,
    is_numpy_namespace,
    to_numpy,
)

__all__ = [
    "binarize",
    "threshold_fraction",
    "threshold_otsu",
    "threshold_percentile",
    "threshold_sweep",
]

_METHODS = ("fraction", "otsu", "percentile")


def _as_maps(maps, name: str = "maps") -> tuple[np.ndarray, bool]:
    """Return ``maps`` as a float ``(N, H, W)`` array and whether a single map came in."""
    arr = as_float(maps, name)
    if arr.ndim == 2:
        single = True
        arr = arr[None, ...]
    elif arr.ndim == 3:
        single = False
    else:
        raise ValueError(
            f"`{name}` must have shape (H, W) or (N, H, W); got {tuple(arr.shape)}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"`{name}` must not be empty; got shape {tuple(arr.shape)}")
    check_finite(arr[0, ...] if single else arr, name)
    return arr, single


def _like(values: np.ndarray, arr):
    """Host results (thresholds) moved to the library and device of the maps ``arr``."""
    xp = array_namespace(arr)
    if is_numpy_namespace(xp):
        return values
    return xp.asarray(values, device=device_of(arr))


def _per_map_max(arr):
    xp = array_namespace(arr)
    return xp.max(xp.reshape(arr, (arr.shape[0], -1)), axis=1)


def threshold_fraction(maps, /, fraction: float) -> np.ndarray:
    """Masks of the pixels at or above ``fraction`` times each map's maximum.

    Parameters
    ----------
    maps : array_like, shape (H, W) or (N, H, W)
        Maps, usually non-negative (normalised maps lie in [0, 1]).
    fraction : float
        In [0, 1]; 0.2 in the CAM paper, 0.15 in the Grad-CAM paper.

    Returns
    -------
    ndarray of bool, shape (H, W) or (N, H, W)
        ``map >= fraction * max(map)``, the maximum taken per map.
    """
    fraction = as_real(fraction, "fraction", low=0.0, high=1.0)
    arr, single = _as_maps(maps)
    xp = array_namespace(arr)
    cut = xp.astype(fraction * _per_map_max(arr), arr.dtype)
    masks = arr >= cut[:, None, None]
    return masks[0, ...] if single else masks


def threshold_otsu(maps, /) -> np.ndarray | float:
    """Otsu's threshold of each map (:func:`skimage.filters.threshold_otsu`, 256 bins).

    Parameters
    ----------
    maps : array_like, shape (H, W) or (N, H, W)

    Returns
    -------
    float or ndarray, shape (N,)
        One threshold per map, in the maps' float dtype. A constant map gives its constant value
        (so ``map > t`` selects nothing).
    """
    arr, single = _as_maps(maps)
    host = to_numpy(arr)
    out = np.array([_skimage_otsu(m) for m in host], dtype=host.dtype)
    return out[0].item() if single else _like(out, arr)


def threshold_percentile(maps, /, q: float) -> np.ndarray | float:
    """The ``q``-th percentile of each map's values (linear interpolation).

    Parameters
    ----------
    maps : array_like, shape (H, W) or (N, H, W)
    q : float
        Percentile in [0, 100].

    Returns
    -------
    float or ndarray, shape (N,)
        One threshold per map, in the maps' float dtype.
    """
    q = as_real(q, "q", low=0.0, high=100.0)
    arr, single = _as_maps(maps)
    host = to_numpy(arr)
    out = np.percentile(host.reshape(host.shape[0], -1), q, axis=1).astype(host.dtype)
    return out[0].item() if single else _like(out, arr)


def binarize(maps, /, *, method: str = "fraction", value: float | None = None) -> np.ndarray:
    """Masks of each map by one of the thresholding rules of this module.

    Parameters
    ----------
    maps : array_like, shape (H, W) or (N, H, W)
    method : {"fraction", "otsu", "percentile"}
        The rule (see the module docstring for each one's comparison).
    value : float, optional
        The fraction of the maximum for ``"fraction"`` (default 0.2) or the percentile ``q`` for
        ``"percentile"`` (default 80); must be None for ``"otsu"``.

    Returns
    -------
    ndarray of bool, shape (H, W) or (N, H, W)
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}; got {method!r}")
    if method == "fraction":  # `value` checked under its own name
        value = 0.2 if value is None else as_real(value, "value", low=0.0, high=1.0)
        return threshold_fraction(maps, value)
    if method == "percentile":
        q = as_real(80.0 if value is None else value, "value", low=0.0, high=100.0)
        arr, single = _as_maps(maps)
        cut = threshold_percentile(arr, q)  # (N,): arr is a batch
        masks = arr >= cut[:, None, None]
        return masks[0, ...] if single else masks
    if value is not None:
        raise ValueError(f"`value` must be None for method='otsu'; got {value!r}")
    arr, single = _as_maps(maps)
    cut = threshold_otsu(arr)  # (N,): arr is a batch
    masks = arr > cut[:, None, None]
    return masks[0, ...] if single else masks


def threshold_sweep(maps, /, taus) -> np.ndarray:
    """Fraction-of-maximum masks at several thresholds at once (for small inputs).

    Parameters
    ----------
    maps : array_like, shape (H, W) or (N, H, W)
    taus : array_like, shape (T,)
        Fractions in [0, 1].

    Returns
    -------
    ndarray of bool, shape (T, H, W) or (T, N, H, W)
        ``masks[t] == threshold_fraction(maps, taus[t])``. This holds ``T`` full masks in memory;
        the metrics in :mod:`cam_core.metrics` sweep without building it.
    """
    arr, single = _as_maps(maps)
    taus = as_fractions(taus, "taus")
    xp = array_namespace(arr)
    # the same float arithmetic as threshold_fraction: the fraction in the maps' dtype, times max
    taus = _like(taus.astype(np.float32 if arr.dtype == xp.float32 else np.float64), arr)
    cut = taus[:, None] * _per_map_max(arr)[None, :]  # (T, N)
    masks = arr[None, ...] >= cut[:, :, None, None]
    return masks[:, 0, ...] if single else masks
