"""Per-map normalisation and the fusion of several layers' maps.

Maps are ``(N, H, W)``: one map per image. Normalisation is per map (never over the batch):
an optional ReLU, then min-max to ``[0, 1]``; a constant map has no range and becomes all zeros
(never NaN). NaN or Inf in a map is a ``ValueError`` that says where.

Both functions run on the arrays they are given (NumPy, torch on its device, JAX, CuPy,
``array-api-strict``; see :mod:`cam_core._validate`) and return an array of that kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import array_api_compat
import numpy as np

from cam_core._validate import (
    accumulation_dtype,
    array_namespace,
    as_float,
    check_finite,
    device_of,
)

__all__ = ["FUSIONS", "fuse", "normalize"]

FUSIONS = ("mean", "max", "product")


def normalize(maps, /, *, relu: bool = False):
    """Min-max normalise each map to ``[0, 1]``, after a ReLU if asked.

    Parameters
    ----------
    maps : array_like, shape (N, H, W)
        Finite maps.
    relu : bool
        Clip negative values to 0 before normalising (the display step of Grad-CAM and most
        gradient methods).

    Returns
    -------
    array, shape (N, H, W)
        Each map's minimum becomes exactly 0 and its maximum exactly 1; a constant map (after
        the ReLU) becomes zeros. float32 for float32 input, float64 otherwise. Normalising a
        normalised batch returns it unchanged. Of the input's library and device.
    """
    x = as_float(maps, "maps", shape=("N", "H", "W"))
    if x.shape[0] == 0:
        raise ValueError("`maps`: the batch is empty; need at least one map")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"`maps` must have non-empty spatial axes; got {tuple(x.shape)}")
    check_finite(x, "maps")
    xp = array_namespace(x)
    zero = xp.zeros((), dtype=x.dtype, device=device_of(x))
    # Computed in the input's dtype. The maximum maps to (max - min) / (max - min) == 1 exactly
    # and the minimum to 0, so a second call is a no-op.
    work = xp.maximum(x, zero) if relu else x
    low = xp.min(work, axis=(1, 2), keepdims=True)
    high = xp.max(work, axis=(1, 2), keepdims=True)
    with np.errstate(over="ignore"):  # NumPy (and libraries built on it) would warn
        span = high - low
    overflow = ~xp.isfinite(span)
    if bool(xp.any(overflow)):  # the range overflows the dtype: halve those maps first
        half = xp.where(overflow, xp.asarray(0.5, dtype=x.dtype, device=device_of(x)),
                        xp.ones((), dtype=x.dtype, device=device_of(x)))
        work = work * half
        low = low * half
        span = xp.where(overflow, high * half - low, span)
    work = work - low
    flat = span == 0
    any_flat = bool(xp.any(flat))
    if any_flat:
        span = xp.where(flat, xp.ones((), dtype=x.dtype, device=device_of(x)), span)
    work = work / span
    if any_flat:  # a constant map has no range: zeros, not NaN
        work = xp.where(flat, zero, work)
    return work


def _check_sum_fits(stack, name: str) -> None:
    """The mean over layers adds them first: values beyond float64's range / L are refused."""
    if isinstance(stack, np.ndarray) and stack.shape[0] > 1 and stack.size:
        big = float(np.max(np.abs(stack)))  # NaN / Inf: left to check_finite
        if np.isfinite(big) and big > np.finfo(np.float64).max / stack.shape[0]:
            raise ValueError(
                f"`{name}`: values up to {big:.3g} overflow float64 when {stack.shape[0]} "
                f"layers are added (maps to fuse are normalised to [0, 1])"
            )


def fuse(maps, /, *, how: str = "mean") -> np.ndarray:
    """Fuse the maps of several layers of the same images into one map per image.

    Parameters
    ----------
    maps : sequence of array_like (N, H, W), or array_like (L, N, H, W)
        One batch of maps per layer, already normalised and resized to a common size.
    how : {"mean", "max", "product"}
        ``"mean"`` (the default) averages the layers: every layer contributes and a strong spot
        found by one layer alone is damped, so the fused map is smoother and less noisy than
        its noisiest (usually earliest) layer. ``"max"`` keeps each pixel's strongest layer,
        which keeps fine detail from early layers and their noise. For reference, torch-cam's
        ``fuse_cams`` takes the element-wise maximum (its LayerCAM first rescales the maps of
        shallow layers with ``tanh``, as the LayerCAM paper does); weighted sums are also
        found in published code. ``"product"`` multiplies the layers (RefineCAM's fusion: a
        pixel stays hot only where every layer finds it, which removes an early layer's
        off-object noise; see :data:`cam_core.explain.METHODS` ``"refinecam"``).

    Returns
    -------
    ndarray, shape (N, H, W)
        float32 when all inputs are float32, float64 otherwise. The result of any fusion of maps
        in ``[0, 1]`` stays in ``[0, 1]`` (not re-normalised).
    """
    if not isinstance(how, str):
        raise TypeError(f"`how` must be a str; got {type(how).__name__}")
    if how not in FUSIONS:
        raise ValueError(f"`how` must be one of {list(FUSIONS)}; got {how!r}")
    if array_api_compat.is_array_api_obj(maps):
        stack = as_float(maps, "maps", shape=("L", "N", "H", "W"))
    else:
        if isinstance(maps, (str, bytes)) or not isinstance(maps, Sequence):
            raise TypeError(
                f"`maps` must be a sequence of (N, H, W) arrays or an (L, N, H, W) array; "
                f"got {type(maps).__name__}"
            )
        layers = []
        for i, m in enumerate(maps):
            like = layers[0] if layers else None
            layers.append(as_float(m, f"maps[{i}]", shape=("N", "H", "W"), like=like))
        for i, m in enumerate(layers[1:], start=1):
            if m.shape != layers[0].shape:
                raise ValueError(
                    f"`maps` must all have the same shape; maps[0] has "
                    f"{tuple(layers[0].shape)}, maps[{i}] has {tuple(m.shape)}"
                )
        if not layers:
            raise ValueError("`maps` is empty; need at least one layer")
        xp = array_namespace(layers[0])
        dtype = xp.result_type(*layers)
        layers = [xp.astype(m, dtype, copy=False) for m in layers]
        stack = xp.stack(layers) if len(layers) > 1 else layers[0][None, ...]
    if stack.shape[0] == 0:
        raise ValueError("`maps` is empty; need at least one layer")
    if stack.shape[1] == 0:
        raise ValueError("`maps`: the batch is empty; need at least one map")
    _check_sum_fits(stack, "maps")
    check_finite(stack, "maps")
    xp = array_namespace(stack)
    if how == "max":
        return xp.max(stack, axis=0)
    if how == "product":
        out = xp.prod(stack, axis=0, dtype=stack.dtype)
        if not bool(xp.all(xp.isfinite(out))):
            raise ValueError("`maps`: the product of the layers overflows (maps to fuse are "
                             "normalised to [0, 1])")
        return out
    # the sum in float64 divided by the count: NumPy's own mean(dtype=float64), bit for bit
    total = xp.sum(stack, axis=0, dtype=accumulation_dtype(xp, device_of(stack)))
    return xp.astype(total / stack.shape[0], stack.dtype, copy=False)
