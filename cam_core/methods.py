"""Class activation map methods: arrays in, raw maps out.

Axis convention: activations ``A`` and gradients ``g`` of the target layer are channels-first,
``(N, K, h, w)`` (images, channels, height, width); a raw map is ``(N, h, w)``, at the layer's
resolution. ``g[n] = d y[n] / d A[n]`` where ``y[n]`` is image ``n``'s target score (by default
the pre-softmax logit of its class). Sums over ``ij`` run over the ``h * w`` positions, sums over
``k`` over the ``K`` channels.

**Raw maps keep their sign and scale.** No method here applies a final ReLU or normalises: the
display ReLU and the min-max are the caller's (:func:`cam_core.maps.normalize`, and
``cam_core.explain.METHODS[name].relu`` says whether the method's paper applies a ReLU). A ReLU
that is part of a method's *weights* (LayerCAM's ``ReLU(g)``, Grad-CAM++'s ``ReLU(g)``) is kept.

Dtypes: float32 in, float32 out. The result has the dtype of ``activations`` promoted with that
of ``gradients`` (or ``weights`` for CAM); per-channel scores do not change it. Sums are
accumulated in float64 and the result is cast once. Inputs are only read. NaN or Inf in an input is a ``ValueError`` saying
where; an empty batch, mismatched batch sizes or shapes are ``ValueError``; non-numeric arrays
are ``TypeError``.

**Arrays of any library.** Every method runs on the arrays it is given, through the array API
standard (:mod:`cam_core._validate`): NumPy arrays give NumPy maps (the reference), torch tensors
give torch maps on their device (CPU or CUDA), and likewise JAX, CuPy and ``array-api-strict``
arrays. The other arguments (CAM's ``weights``, per-channel scores) are moved to the activations'
library and device. On a device without float64 the sums are accumulated in float32.

The perturbation methods (:func:`scorecam`, :func:`ablationcam`) reach the model only through a
score callable supplied by the adapter, called in chunks of ``batch_size``; their masks and
channel indices are built in the activations' library, on their device.

**Where the common implementations differ** (and how to get their numbers):

- Grad-CAM++: pytorch-grad-cam adds ``eps = 1e-6`` to ``alpha``'s denominator, which dominates
  when the squared gradients are small (about 1e-7 and below); ``gradcam_pp(..., eps=1e-6)``
  reproduces it, and with ``eps=0`` (the default) the two agree exactly. torch-cam 0.5 divides a
  temporary copy of ``alpha`` in place, so its weights skip the division altogether:
  ``w_k = sum_ij g^2 ReLU(g)``, not the paper's formula (not offered here).
- Eigen-CAM: pytorch-grad-cam keeps the sign of each image's SVD as the library returns it
  (arbitrary, and it may differ between NumPy, torch and devices) and applies a ReLU before
  min-max; here the sign is fixed (see :func:`eigencam`) and no ReLU is applied.
  ``eigencam(..., sign="svd")`` keeps the SVD's sign, and ``normalize(..., relu=True)`` adds the
  ReLU.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np

from cam_core._validate import (
    accumulation_dtype,
    array_namespace,
    as_float,
    as_int_array,
    as_size,
    check_finite,
    check_same_batch,
    device_of,
    is_numpy_namespace,
    to_numpy,
)
from cam_core._validate import check_nonempty_axes, finite_result

__all__ = [
    "ablationcam",
    "ablationcam_combine",
    "cam",
    "eigencam",
    "gradcam",
    "gradcam_pp",
    "hirescam",
    "layercam",
    "scorecam",
    "scorecam_combine",
    "xgradcam",
]

_LAYER_SHAPE = ("N", "K", "h", "w")
EIGENCAM_SIGNS = ("correlation", "svd")

# A progress bar is shown by default (progress=None) from this many chunks on, on a terminal.
_PROGRESS_MIN_CHUNKS = 8


# --------------------------------------------------------------------------- validation helpers


def _activations(x, name: str = "activations"):
    arr = as_float(x, name, shape=_LAYER_SHAPE)
    check_same_batch(**{name: arr})
    check_nonempty_axes(arr, name, "at least one channel and one position")
    check_finite(arr, name)
    return arr


def _pair(activations, gradients):
    a = as_float(activations, "activations", shape=_LAYER_SHAPE)
    g = as_float(gradients, "gradients", shape=_LAYER_SHAPE, like=a)
    check_same_batch(activations=a, gradients=g)
    check_nonempty_axes(a, "activations", "at least one channel and one position")
    if a.shape != g.shape:
        raise ValueError(
            f"`gradients` must have the shape of `activations` {tuple(a.shape)}; got "
            f"{tuple(g.shape)}"
        )
    check_finite(a, "activations")
    check_finite(g, "gradients")
    xp = array_namespace(a)
    return a, g, xp.result_type(a, g)


def _per_channel(x, name: str, n: int, k: int, like):
    """An (N, K) array of per-channel scores, checked against the activations' N and K."""
    arr = as_float(x, name, shape=("N", "K"), like=like)
    if tuple(arr.shape) != (n, k):
        raise ValueError(f"`{name}` must have shape ({n}, {k}) (N, K); got {tuple(arr.shape)}")
    check_finite(arr, name)
    return arr


def _base_scores(x, n: int, like):
    """Ablation-CAM's unablated scores: (N,), finite and non-zero (they are divided by)."""
    base = as_float(x, "base_scores", shape=("N",), like=like)
    if base.shape[0] != n:
        raise ValueError(
            f"batch sizes differ: `activations` has {n}, `base_scores` has {base.shape[0]}"
        )
    check_finite(base, "base_scores")
    xp = array_namespace(base)
    if bool(xp.any(base == 0)):
        zero = np.flatnonzero(to_numpy(base) == 0)
        raise ValueError(
            f"`base_scores` must be non-zero (Ablation-CAM divides by the score); "
            f"got 0 for image {int(zero[0])}"
        )
    return base


def _acc(xp, a):
    """The accumulation dtype for ``a``: float64 (float32 on a device without float64)."""
    return accumulation_dtype(xp, device_of(a))


def _combine(weights, a, dtype):
    """``sum_k weights[n, k] * a[n, k]`` in float64, cast to ``dtype``: (N, K) x (N, K, h, w)."""
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    n, k, h, w = a.shape
    flat = xp.astype(xp.reshape(a, (n, k, h * w)), f64, copy=False)
    raw = xp.matmul(xp.astype(weights, f64, copy=False)[:, None, :], flat)[:, 0, :]
    return xp.astype(xp.reshape(raw, (n, h, w)), dtype, copy=False)


def _sum_k_product(x, a):
    """``sum_k x[n, k] * a[n, k]`` (both (N, K, h, w), ``x`` in the accumulation dtype).

    ``einsum`` where the namespace has one (NumPy's numbers stay those of ``np.einsum``), else
    the product summed over the channel axis.
    """
    xp = array_namespace(a)
    if is_numpy_namespace(xp):
        return np.einsum("nkhw,nkhw->nhw", x, a)
    a = xp.astype(a, x.dtype, copy=False)
    if hasattr(xp, "einsum"):
        return xp.einsum("nkhw,nkhw->nhw", x, a)
    return xp.sum(x * a, axis=1)


def _zeros_where(xp, mask, x):
    """``x`` with 0 where ``mask`` (``x[mask] = 0`` without writing into ``x``)."""
    return xp.where(mask, xp.zeros((), dtype=x.dtype, device=device_of(x)), x)


def _safe(xp, mask, x):
    """``x`` with 1 where ``mask`` (a denominator that is 0 replaced by 1)."""
    return xp.where(mask, xp.ones((), dtype=x.dtype, device=device_of(x)), x)


# ------------------------------------------------------------------------------ class weights


def cam(activations, weights, classes, /):
    """CAM: the classifier's weights of the target class applied to the channels.

    ``M_c = sum_k W[c, k] A_k`` (Zhou et al., "Learning Deep Features for Discriminative
    Localization", CVPR 2016). Valid for a head made of global average pooling and one linear
    layer; the bias adds the same constant to every position and is dropped.

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    weights : array_like, shape (C, K)
        The linear layer's weight matrix (output classes by channels).
    classes : array_like of int, shape (N,)
        The class explained for each image, in ``[0, C)``.

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed, of the activations' library and device.
    """
    a = _activations(activations)
    xp = array_namespace(a)
    w = as_float(weights, "weights", shape=("C", "K"), like=a)
    c = as_int_array(classes, "classes", shape=("N",))
    n, k = a.shape[:2]
    check_same_batch(activations=a, classes=c)
    if w.shape[1] != k:
        raise ValueError(
            f"`weights` must have one column per channel of `activations` ({k}); "
            f"got shape {tuple(w.shape)}"
        )
    if w.shape[0] == 0:
        raise ValueError(
            f"`weights` must have at least one class row; got shape {tuple(w.shape)}"
        )
    check_finite(w, "weights")
    bad = (c < 0) | (c >= w.shape[0])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"`classes` must be indices in [0, {w.shape[0]}); got {int(c[i])} for image {i}"
        )
    rows = xp.take(w, xp.asarray(c, device=device_of(a)), axis=0)
    return _combine(rows, a, xp.result_type(a, w))


def gradcam(activations, gradients, /):
    """Grad-CAM: channels weighted by their spatially averaged gradient.

    ``w_k = mean_ij g_k^ij``, ``M = sum_k w_k A_k`` (Selvaraju et al., "Grad-CAM: Visual
    Explanations from Deep Networks via Gradient-based Localization", ICCV 2017). The paper's
    ``ReLU(M)`` is left to the display step. For a global-average-pooling + linear head,
    ``g_k = W[c, k] / (h w)`` everywhere, so this equals ``cam(...) / (h w)``.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a, g, dtype = _pair(activations, gradients)
    xp = array_namespace(a)
    h, w = a.shape[2:]
    # the sum in float64 divided by the count: NumPy's own mean(dtype=float64), bit for bit
    weights = xp.sum(g, axis=(2, 3), dtype=_acc(xp, a)) / (h * w)
    return _combine(weights, a, dtype)


def gradcam_pp(activations, gradients, /, *, eps: float = 0.0):
    """Grad-CAM++: channel weights from positive gradients, weighted per position.

    Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018, in its exponential-score form: with ``Y = exp(y)`` the higher
    derivatives of ``Y`` are powers of the first derivative ``g`` of ``y``, which gives

        ``alpha_k^ij = g^2 / (2 g^2 + sum_ab A_k^ab g^3 + eps)``  (all ``g`` at ``k, ij``),
        ``w_k = sum_ij alpha_k^ij ReLU(g_k^ij)``,  ``M = sum_k w_k A_k``.

    The powers of ``g`` stand in for the true second and third derivatives, as the common
    implementations do. ``alpha`` is 0 where its denominator is 0. The paper's final ReLU is
    left to the display step.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)
    eps : float
        Added to ``alpha``'s denominator. 0 (the default) is the paper's formula;
        pytorch-grad-cam uses ``1e-6``, which changes the maps wherever the squared gradients
        are not much larger than it (see the module docstring).

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"`eps` must be a real number; got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"`eps` must be finite and >= 0; got {eps}")
    a, g, dtype = _pair(activations, gradients)
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    g64 = xp.astype(g, f64)
    g2 = g64 * g64
    sum_a = xp.sum(a, axis=(2, 3), dtype=f64)[:, :, None, None]
    denom = 2.0 * g2 + sum_a * g2 * g64
    if eps:
        denom = denom + float(eps)
    zero = denom == 0
    alpha = _zeros_where(xp, zero, g2 / _safe(xp, zero, denom))
    weights = xp.sum(alpha * xp.maximum(g64, xp.zeros((), dtype=f64, device=device_of(a))),
                     axis=(2, 3))
    return _combine(weights, a, dtype)


def xgradcam(activations, gradients, /):
    """XGrad-CAM: gradients averaged with the activations as weights.

    ``w_k = sum_ij (A_k^ij / sum_ab A_k^ab) g_k^ij``, ``M = sum_k w_k A_k`` (Fu et al.,
    "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs", BMVC 2020).
    A channel whose activations sum to 0 gets ``w_k = 0``. The ReLU is left to the display step.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a, g, dtype = _pair(activations, gradients)
    xp = array_namespace(a)
    a64 = xp.astype(a, _acc(xp, a))
    sum_a = xp.sum(a64, axis=(2, 3))
    num = xp.sum(a64 * xp.astype(g, a64.dtype, copy=False), axis=(2, 3))
    zero = sum_a == 0
    weights = _zeros_where(xp, zero, num / _safe(xp, zero, sum_a))
    return _combine(weights, a, dtype)


def layercam(activations, gradients, /):
    """LayerCAM: activations weighted position by position by their positive gradient.

    ``M = sum_k ReLU(g_k) * A_k`` element-wise (Jiang et al., "LayerCAM: Exploring Hierarchical
    Class Activation Maps for Localization", IEEE TIP 2021). The inner ``ReLU(g)`` is part of
    the method and applied here; the outer ReLU is left to the display step.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed (negative only where activations are negative).
    """
    a, g, dtype = _pair(activations, gradients)
    xp = array_namespace(a)
    relu_g = xp.maximum(g, xp.zeros((), dtype=g.dtype, device=device_of(g)))
    raw = _sum_k_product(xp.astype(relu_g, _acc(xp, a)), a)
    return xp.astype(raw, dtype, copy=False)


def hirescam(activations, gradients, /):
    """HiResCAM: activations times gradients element-wise, summed over channels.

    ``M = sum_k g_k * A_k`` (Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks", arXiv:2011.08891, 2020). For a global
    average pooling + linear head it equals ``cam(...) / (h w)``. ReLU for display only.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a, g, dtype = _pair(activations, gradients)
    xp = array_namespace(a)
    raw = _sum_k_product(xp.astype(g, _acc(xp, a)), a)
    return xp.astype(raw, dtype, copy=False)


def eigencam(activations, /, *, sign: str = "correlation"):
    """Eigen-CAM: the activations projected on their first principal component.

    Per image, ``X`` is ``A`` laid out as ``(h w, K)`` (positions by channels), centred by
    subtracting each channel's mean over positions; the map is ``X v`` with ``v`` the first
    right singular vector of ``X`` (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using
    Principal Components", IJCNN 2020). No gradient and no class are used.

    A singular vector's sign is arbitrary, so it is fixed here (``sign="correlation"``): the
    map is made to correlate positively with the channel-mean map ``mean_k A_k``; when that
    correlation is exactly 0, the map's entry of largest magnitude (the first, in row-major
    order) is made positive. The fixed sign does not depend on the array library or device.

    ``X v`` is computed from the smaller Gram matrix in float64: ``X X^T`` (``hw x hw``) when
    ``h w <= K``, whose top eigenpair ``(lambda, u)`` gives ``X v = sqrt(lambda) u``, else
    ``X^T X`` (``K x K``), whose top eigenvector is ``v``.

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    sign : {"correlation", "svd"}
        ``"correlation"`` (the default) fixes the sign as above. ``"svd"`` is pytorch-grad-cam's
        convention: ``v`` is the first row of ``V^T`` of each image's SVD of ``X`` (computed in
        the activations' dtype), with whatever sign the library's SVD gives it. That sign is
        arbitrary: it may differ between NumPy and torch, CPU and GPU. pytorch-grad-cam also
        applies a ReLU before the min-max (``normalize(..., relu=True)``).

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed, centred (each sums to 0); all zeros where ``A`` does not vary over
        positions (``sign="correlation"``).
    """
    if sign not in EIGENCAM_SIGNS:
        raise ValueError(f"`sign` must be one of {list(EIGENCAM_SIGNS)}; got {sign!r}")
    a = _activations(activations)
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    n, k, h, w = a.shape
    flat = xp.reshape(a, (n, k, h * w))
    if sign == "svd":
        x = xp.permute_dims(flat, (0, 2, 1))  # (N, hw, K), the activations' dtype
        x = x - xp.mean(x, axis=1, keepdims=True)
        _, _, vt = xp.linalg.svd(x, full_matrices=False)
        proj = xp.matmul(x, vt[:, 0, :, None])[:, :, 0]
        return xp.astype(xp.reshape(proj, (n, h, w)), a.dtype, copy=False)
    x = xp.astype(xp.permute_dims(flat, (0, 2, 1)), f64)  # (N, hw, K)
    x = x - xp.mean(x, axis=1, keepdims=True)
    if h * w <= k:
        gram = xp.matmul(x, xp.permute_dims(x, (0, 2, 1)))  # (N, hw, hw)
        values, vectors = xp.linalg.eigh(gram)
        top = xp.maximum(values[:, -1], xp.zeros((), dtype=f64, device=device_of(a)))
        proj = vectors[:, :, -1] * xp.sqrt(top)[:, None]
    else:
        cov = xp.matmul(xp.permute_dims(x, (0, 2, 1)), x)  # (N, K, K)
        _, vectors = xp.linalg.eigh(cov)
        proj = xp.matmul(x, vectors[:, :, -1:])[:, :, 0]
    # Fix the sign: positive correlation with the channel-mean map.
    mean_map = xp.sum(flat, axis=1, dtype=f64) / k  # NumPy's mean(dtype=float64), bit for bit
    mean_map = mean_map - xp.mean(mean_map, axis=1, keepdims=True)
    if is_numpy_namespace(xp):
        corr = np.einsum("np,np->n", proj, mean_map)
    else:
        corr = xp.sum(proj * mean_map, axis=1)
    idx = xp.argmax(xp.abs(proj), axis=1)
    largest = xp.take_along_axis(proj, idx[:, None], axis=1)[:, 0]
    one = xp.ones((), dtype=f64, device=device_of(a))
    sign_arr = xp.where(corr != 0, xp.sign(corr), xp.where(largest < 0, -one, one))
    proj = proj * sign_arr[:, None]
    return xp.astype(xp.reshape(proj, (n, h, w)), a.dtype, copy=False)


# ----------------------------------------------------------------------- perturbation methods


def scorecam_combine(activations, scores, /):
    """Score-CAM's combination: channels weighted by the softmax of their masked scores.

    ``w = softmax_k(s)``, ``M = sum_k w_k A_k`` with ``s_k`` the target score of the input
    multiplied by the normalised, upsampled channel ``k`` (Wang et al., "Score-CAM:
    Score-Weighted Visual Explanations for Convolutional Neural Networks", CVPR Workshops 2020).
    The softmax subtracts the maximum score first, so large scores do not overflow.

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    scores : array_like, shape (N, K)
        ``s[n, k]``, image ``n``'s target score with channel ``k``'s mask.

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed (the paper's ReLU is left to the display step).
    """
    a = _activations(activations)
    xp = array_namespace(a)
    s = xp.astype(_per_channel(scores, "scores", *a.shape[:2], like=a), _acc(xp, a))
    e = xp.exp(s - xp.max(s, axis=1, keepdims=True))
    weights = e / xp.sum(e, axis=1, keepdims=True)
    return _combine(weights, a, a.dtype)


def ablationcam_combine(activations, ablated_scores, base_scores, /):
    """Ablation-CAM's combination: channels weighted by the relative score drop they cause.

    ``w_k = (y - y_k) / y``, ``M = sum_k w_k A_k`` with ``y`` the target score and ``y_k`` the
    score when channel ``k`` of the layer is set to zero (Desai & Ramaswamy, "Ablation-CAM:
    Visual Explanations for Deep Convolutional Network via Gradient-free Localization",
    WACV 2020).

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    ablated_scores : array_like, shape (N, K)
        ``y_k`` per image and channel.
    base_scores : array_like, shape (N,)
        ``y`` per image; must be non-zero.

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    xp = array_namespace(a)
    n, k = a.shape[:2]
    ablated = _per_channel(ablated_scores, "ablated_scores", n, k, like=a)
    base = _base_scores(base_scores, n, like=a)
    y = xp.astype(base, _acc(xp, a))[:, None]
    weights = (y - ablated) / y
    return _combine(weights, a, a.dtype)


def _progress_bar(total: int, progress, desc: str):
    if isinstance(progress, np.bool_):
        progress = bool(progress)
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be None or a bool; got {type(progress).__name__}")
    from tqdm.auto import tqdm

    if progress is None:
        show = total >= _PROGRESS_MIN_CHUNKS and sys.stderr.isatty()
    else:
        show = progress
    return tqdm(total=total, desc=desc, unit="chunk", disable=not show, leave=False)


def _check_callable(fn, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"`{name}` must be callable; got {type(fn).__name__}")


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"`batch_size` must be an int; got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1; got {batch_size}")
    return int(batch_size)


def _scores_from(fn, n: int, arg, expected: int, what: str) -> np.ndarray:
    """Call a score callable and check it returned ``expected`` finite scores (on the host)."""
    out = to_numpy(fn(n, arg))
    if out.dtype.kind not in "biuf":
        raise TypeError(f"`{what}` must return numeric scores; got dtype {out.dtype}")
    if out.shape != (expected,):
        raise ValueError(
            f"`{what}` must return one score per item, shape ({expected},); "
            f"got {np.shape(out)} for image {n}"
        )
    if not np.all(np.isfinite(out)):
        raise ValueError(f"`{what}` returned a non-finite score for image {n}: {out}")
    return out.astype(np.float64, copy=False)


def _chunked_scores(
    fn: Callable[[int, np.ndarray], np.ndarray],
    make: Callable[[int, int, int], np.ndarray],
    shape: tuple[int, int],
    batch_size: int,
    progress,
    what: str,
    desc: str,
) -> np.ndarray:
    """Scores ``(N, M)``: for each image ``n``, ``fn(n, make(n, start, stop))`` per chunk.

    ``make`` builds one chunk's argument (masks, channel indices) only when it is needed, so at
    most one chunk exists at a time; a tqdm bar counts the chunks.
    """
    n_img, count = shape
    out = np.empty((n_img, count), dtype=np.float64)
    with _progress_bar(n_img * math.ceil(count / batch_size), progress, desc) as bar:
        for n in range(n_img):
            for start in range(0, count, batch_size):
                stop = min(start + batch_size, count)
                out[n, start:stop] = _scores_from(fn, n, make(n, start, stop), stop - start, what)
                bar.update(1)
    return out


def scorecam(
    activations,
    score_masked: Callable[[int, np.ndarray], np.ndarray],
    /,
    *,
    input_size,
    batch_size: int = 64,
    progress: bool | None = None,
):
    """Score-CAM: each channel, as a mask on the input, is scored by the model.

    For image ``n`` and channel ``k``, ``mask_k`` is ``A[n, k]`` upsampled bilinearly to the
    input size and min-max normalised to ``[0, 1]`` (a constant channel gives an all-zero mask);
    ``s_k = score_masked(n, masks)[k]`` is the target score of the input multiplied by
    ``mask_k``; then :func:`scorecam_combine`. Masks are made and scored ``batch_size`` at a
    time, so at most one chunk of masks exists at once; they are made in the activations'
    library, on their device (a GPU's masks never cross to the host).

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    score_masked : callable ``(index, masks) -> scores``
        ``masks`` is a float32 ``(B, H, W)`` array of the activations' library and device;
        returns ``(B,)`` scores (of any library) for image ``index``.
    input_size : int or (H, W)
        The model's input size.
    batch_size : int
        Masks per call of ``score_masked``.
    progress : bool or None
        Show a tqdm bar over chunks; None shows one on a terminal when there are many chunks.

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    from cam_core.maps import normalize
    from cam_core.resize import upsample

    a = _activations(activations)
    xp = array_namespace(a)
    _check_callable(score_masked, "score_masked")
    size = as_size(input_size, "input_size")
    batch_size = _check_batch_size(batch_size)

    def masks(n: int, start: int, stop: int):
        up = upsample(a[n, start:stop, ...], size, method="bilinear")
        return xp.astype(normalize(up), xp.float32, copy=False)

    scores = _chunked_scores(
        score_masked, masks, a.shape[:2], batch_size, progress, "score_masked", "Score-CAM"
    )
    return xp.astype(scorecam_combine(a, scores), a.dtype, copy=False)


def ablationcam(
    activations,
    score_ablated: Callable[[int, np.ndarray], np.ndarray],
    base_scores,
    /,
    *,
    batch_size: int = 64,
    progress: bool | None = None,
):
    """Ablation-CAM: each channel is zeroed in turn and the score drop weighs it.

    For image ``n``, ``score_ablated(n, channels)`` returns, for each channel index in
    ``channels`` (int64 (int32 for JAX without x64), ``(B,)``, of the activations' library and
    device), the target score
    with that one channel of the layer set to zero; channels are asked for ``batch_size`` at a
    time. Then :func:`ablationcam_combine`.

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    score_ablated : callable ``(index, channels) -> scores``
        Returns ``(B,)`` scores.
    base_scores : array_like, shape (N,)
        The unablated target scores; must be non-zero.
    batch_size : int
        Channels per call of ``score_ablated``.
    progress : bool or None
        Show a tqdm bar over chunks; None shows one on a terminal when there are many chunks.

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    xp = array_namespace(a)
    _check_callable(score_ablated, "score_ablated")
    base = _base_scores(base_scores, a.shape[0], like=a)
    batch_size = _check_batch_size(batch_size)
    device = device_of(a)
    # int64, or int32 where the library has no 64-bit types (JAX without x64)
    index = xp.int64 if accumulation_dtype(xp, device) == xp.float64 else xp.int32

    def channels(n: int, start: int, stop: int):
        return xp.arange(start, stop, dtype=index, device=device)

    ablated = _chunked_scores(
        score_ablated, channels, a.shape[:2], batch_size, progress, "score_ablated",
        "Ablation-CAM",
    )
    return xp.astype(ablationcam_combine(a, ablated, base), a.dtype, copy=False)


# Overflow (inputs are checked finite, so a non-finite map is one) is a ValueError naming the
# inputs, not Inf maps; NumPy's overflow warnings are off inside (see finite_result).
cam = finite_result("activations", "weights")(cam)
gradcam = finite_result("activations", "gradients")(gradcam)
gradcam_pp = finite_result("activations", "gradients")(gradcam_pp)
xgradcam = finite_result("activations", "gradients")(xgradcam)
layercam = finite_result("activations", "gradients")(layercam)
hirescam = finite_result("activations", "gradients")(hirescam)
eigencam = finite_result("activations")(eigencam)
scorecam_combine = finite_result("activations", "scores")(scorecam_combine)
ablationcam_combine = finite_result("activations", "ablated_scores", "base_scores")(
    ablationcam_combine
)
