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

The perturbation methods (:func:`scorecam`, :func:`ablationcam`) reach the model only through a
score callable supplied by the adapter, called in chunks of ``batch_size``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np

from cam_core._validate import (
    as_float_array,
    as_int_array,
    as_size,
    check_finite,
    check_same_batch,
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

# A progress bar is shown by default (progress=None) from this many chunks on, on a terminal.
_PROGRESS_MIN_CHUNKS = 8


# --------------------------------------------------------------------------- validation helpers


def _activations(x, name: str = "activations") -> np.ndarray:
    arr = as_float_array(x, name, shape=_LAYER_SHAPE)
    check_same_batch(**{name: arr})
    check_nonempty_axes(arr, name, "at least one channel and one position")
    check_finite(arr, name)
    return arr


def _pair(activations, gradients) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    a = as_float_array(activations, "activations", shape=_LAYER_SHAPE)
    g = as_float_array(gradients, "gradients", shape=_LAYER_SHAPE)
    check_same_batch(activations=a, gradients=g)
    check_nonempty_axes(a, "activations", "at least one channel and one position")
    if a.shape != g.shape:
        raise ValueError(
            f"`gradients` must have the shape of `activations` {a.shape}; got {g.shape}"
        )
    check_finite(a, "activations")
    check_finite(g, "gradients")
    return a, g, np.result_type(a, g)


def _per_channel(x, name: str, n: int, k: int) -> np.ndarray:
    """An (N, K) array of per-channel scores, checked against the activations' N and K."""
    arr = as_float_array(x, name, shape=("N", "K"))
    if arr.shape != (n, k):
        raise ValueError(f"`{name}` must have shape ({n}, {k}) (N, K); got {arr.shape}")
    check_finite(arr, name)
    return arr


def _base_scores(x, n: int) -> np.ndarray:
    """Ablation-CAM's unablated scores: (N,), finite and non-zero (they are divided by)."""
    base = as_float_array(x, "base_scores", shape=("N",))
    if len(base) != n:
        raise ValueError(
            f"batch sizes differ: `activations` has {n}, `base_scores` has {len(base)}"
        )
    check_finite(base, "base_scores")
    zero = np.flatnonzero(base == 0)
    if zero.size:
        raise ValueError(
            f"`base_scores` must be non-zero (Ablation-CAM divides by the score); "
            f"got 0 for image {int(zero[0])}"
        )
    return base


def _combine(weights: np.ndarray, a: np.ndarray, dtype) -> np.ndarray:
    """``sum_k weights[n, k] * a[n, k]`` in float64, cast to ``dtype``: (N, K) x (N, K, h, w)."""
    n, k, h, w = a.shape
    flat = a.reshape(n, k, h * w).astype(np.float64, copy=False)
    raw = np.matmul(weights.astype(np.float64, copy=False)[:, None, :], flat)[:, 0]
    return raw.reshape(n, h, w).astype(dtype, copy=False)


# ------------------------------------------------------------------------------ class weights


def cam(activations, weights, classes, /) -> np.ndarray:
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
    ndarray, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    w = as_float_array(weights, "weights", shape=("C", "K"))
    c = as_int_array(classes, "classes", shape=("N",))
    n, k = a.shape[:2]
    check_same_batch(activations=a, classes=c)
    if w.shape[1] != k:
        raise ValueError(
            f"`weights` must have one column per channel of `activations` ({k}); "
            f"got shape {w.shape}"
        )
    if w.shape[0] == 0:
        raise ValueError(f"`weights` must have at least one class row; got shape {w.shape}")
    check_finite(w, "weights")
    bad = (c < 0) | (c >= w.shape[0])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"`classes` must be indices in [0, {w.shape[0]}); got {int(c[i])} for image {i}"
        )
    return _combine(w[c], a, np.result_type(a, w))


def gradcam(activations, gradients, /) -> np.ndarray:
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
    ndarray, shape (N, h, w)
        Raw maps, signed.
    """
    a, g, dtype = _pair(activations, gradients)
    weights = g.mean(axis=(2, 3), dtype=np.float64)
    return _combine(weights, a, dtype)


def gradcam_pp(activations, gradients, /) -> np.ndarray:
    """Grad-CAM++: channel weights from positive gradients, weighted per position.

    Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018, in its exponential-score form: with ``Y = exp(y)`` the higher
    derivatives of ``Y`` are powers of the first derivative ``g`` of ``y``, which gives

        ``alpha_k^ij = g^2 / (2 g^2 + sum_ab A_k^ab g^3)``  (all ``g`` at ``k, ij``),
        ``w_k = sum_ij alpha_k^ij ReLU(g_k^ij)``,  ``M = sum_k w_k A_k``.

    The powers of ``g`` stand in for the true second and third derivatives, as the common
    implementations do. ``alpha`` is 0 where its denominator is 0. The paper's final ReLU is
    left to the display step.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    ndarray, shape (N, h, w)
        Raw maps, signed.
    """
    a, g, dtype = _pair(activations, gradients)
    g64 = g.astype(np.float64)
    g2 = g64 * g64
    sum_a = a.sum(axis=(2, 3), dtype=np.float64)[:, :, None, None]
    denom = 2.0 * g2 + sum_a * g2 * g64
    zero = denom == 0
    alpha = g2 / np.where(zero, 1.0, denom)
    alpha[zero] = 0.0
    weights = (alpha * np.maximum(g64, 0.0)).sum(axis=(2, 3))
    return _combine(weights, a, dtype)


def xgradcam(activations, gradients, /) -> np.ndarray:
    """XGrad-CAM: gradients averaged with the activations as weights.

    ``w_k = sum_ij (A_k^ij / sum_ab A_k^ab) g_k^ij``, ``M = sum_k w_k A_k`` (Fu et al.,
    "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs", BMVC 2020).
    A channel whose activations sum to 0 gets ``w_k = 0``. The ReLU is left to the display step.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    ndarray, shape (N, h, w)
        Raw maps, signed.
    """
    a, g, dtype = _pair(activations, gradients)
    a64 = a.astype(np.float64)
    sum_a = a64.sum(axis=(2, 3))
    num = (a64 * g).sum(axis=(2, 3))
    zero = sum_a == 0
    weights = num / np.where(zero, 1.0, sum_a)
    weights[zero] = 0.0
    return _combine(weights, a, dtype)


def layercam(activations, gradients, /) -> np.ndarray:
    """LayerCAM: activations weighted position by position by their positive gradient.

    ``M = sum_k ReLU(g_k) * A_k`` element-wise (Jiang et al., "LayerCAM: Exploring Hierarchical
    Class Activation Maps for Localization", IEEE TIP 2021). The inner ``ReLU(g)`` is part of
    the method and applied here; the outer ReLU is left to the display step.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    ndarray, shape (N, h, w)
        Raw maps, signed (negative only where activations are negative).
    """
    a, g, dtype = _pair(activations, gradients)
    return np.einsum("nkhw,nkhw->nhw", np.maximum(g, 0).astype(np.float64), a).astype(
        dtype, copy=False
    )


def hirescam(activations, gradients, /) -> np.ndarray:
    """HiResCAM: activations times gradients element-wise, summed over channels.

    ``M = sum_k g_k * A_k`` (Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks", arXiv:2011.08891, 2020). For a global
    average pooling + linear head it equals ``cam(...) / (h w)``. ReLU for display only.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    ndarray, shape (N, h, w)
        Raw maps, signed.
    """
    a, g, dtype = _pair(activations, gradients)
    return np.einsum("nkhw,nkhw->nhw", g.astype(np.float64), a).astype(dtype, copy=False)


def eigencam(activations, /) -> np.ndarray:
    """Eigen-CAM: the activations projected on their first principal component.

    Per image, ``X`` is ``A`` laid out as ``(h w, K)`` (positions by channels), centred by
    subtracting each channel's mean over positions; the map is ``X v`` with ``v`` the first
    right singular vector of ``X`` (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using
    Principal Components", IJCNN 2020). No gradient and no class are used.

    A singular vector's sign is arbitrary, so it is fixed here: the map is made to correlate
    positively with the channel-mean map ``mean_k A_k``; when that correlation is exactly 0,
    the map's entry of largest magnitude (the first, in row-major order) is made positive.

    ``X v`` is computed from the smaller Gram matrix in float64: ``X X^T`` (``hw x hw``) when
    ``h w <= K``, whose top eigenpair ``(lambda, u)`` gives ``X v = sqrt(lambda) u``, else
    ``X^T X`` (``K x K``), whose top eigenvector is ``v``.

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)

    Returns
    -------
    ndarray, shape (N, h, w)
        Raw maps, signed, centred (each sums to 0); all zeros where ``A`` does not vary over
        positions.
    """
    a = _activations(activations)
    n, k, h, w = a.shape
    x = a.reshape(n, k, h * w).transpose(0, 2, 1).astype(np.float64)  # (N, hw, K)
    x -= x.mean(axis=1, keepdims=True)
    if h * w <= k:
        gram = np.matmul(x, x.transpose(0, 2, 1))  # (N, hw, hw)
        values, vectors = np.linalg.eigh(gram)
        top = np.maximum(values[:, -1], 0.0)
        proj = vectors[:, :, -1] * np.sqrt(top)[:, None]
    else:
        cov = np.matmul(x.transpose(0, 2, 1), x)  # (N, K, K)
        _, vectors = np.linalg.eigh(cov)
        proj = np.matmul(x, vectors[:, :, -1:])[:, :, 0]
    # Fix the sign: positive correlation with the channel-mean map.
    mean_map = a.reshape(n, k, h * w).mean(axis=1, dtype=np.float64)
    mean_map -= mean_map.mean(axis=1, keepdims=True)
    corr = np.einsum("np,np->n", proj, mean_map)
    largest = proj[np.arange(n), np.argmax(np.abs(proj), axis=1)]
    sign = np.where(corr != 0, np.sign(corr), np.where(largest < 0, -1.0, 1.0))
    proj *= sign[:, None]
    return proj.reshape(n, h, w).astype(a.dtype, copy=False)


# ----------------------------------------------------------------------- perturbation methods


def scorecam_combine(activations, scores, /) -> np.ndarray:
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
    ndarray, shape (N, h, w)
        Raw maps, signed (the paper's ReLU is left to the display step).
    """
    a = _activations(activations)
    s = _per_channel(scores, "scores", *a.shape[:2]).astype(np.float64)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    weights = e / e.sum(axis=1, keepdims=True)
    return _combine(weights, a, a.dtype)


def ablationcam_combine(activations, ablated_scores, base_scores, /) -> np.ndarray:
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
    ndarray, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    n, k = a.shape[:2]
    ablated = _per_channel(ablated_scores, "ablated_scores", n, k)
    base = _base_scores(base_scores, n)
    y = base.astype(np.float64)[:, None]
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
    """Call a score callable and check it returned ``expected`` finite scores."""
    out = np.asarray(fn(n, arg))
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
) -> np.ndarray:
    """Score-CAM: each channel, as a mask on the input, is scored by the model.

    For image ``n`` and channel ``k``, ``mask_k`` is ``A[n, k]`` upsampled bilinearly to the
    input size and min-max normalised to ``[0, 1]`` (a constant channel gives an all-zero mask);
    ``s_k = score_masked(n, masks)[k]`` is the target score of the input multiplied by
    ``mask_k``; then :func:`scorecam_combine`. Masks are made and scored ``batch_size`` at a
    time, so at most one chunk of masks exists at once.

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    score_masked : callable ``(index, masks) -> scores``
        ``masks`` is a float32 ``(B, H, W)`` array; returns ``(B,)`` scores for image ``index``.
    input_size : int or (H, W)
        The model's input size.
    batch_size : int
        Masks per call of ``score_masked``.
    progress : bool or None
        Show a tqdm bar over chunks; None shows one on a terminal when there are many chunks.

    Returns
    -------
    ndarray, shape (N, h, w)
        Raw maps, signed.
    """
    from cam_core.maps import normalize
    from cam_core.resize import upsample

    a = _activations(activations)
    _check_callable(score_masked, "score_masked")
    size = as_size(input_size, "input_size")
    batch_size = _check_batch_size(batch_size)

    def masks(n: int, start: int, stop: int) -> np.ndarray:
        up = upsample(a[n, start:stop], size, method="bilinear")
        return normalize(up).astype(np.float32, copy=False)

    scores = _chunked_scores(
        score_masked, masks, a.shape[:2], batch_size, progress, "score_masked", "Score-CAM"
    )
    return scorecam_combine(a, scores).astype(a.dtype, copy=False)


def ablationcam(
    activations,
    score_ablated: Callable[[int, np.ndarray], np.ndarray],
    base_scores,
    /,
    *,
    batch_size: int = 64,
    progress: bool | None = None,
) -> np.ndarray:
    """Ablation-CAM: each channel is zeroed in turn and the score drop weighs it.

    For image ``n``, ``score_ablated(n, channels)`` returns, for each channel index in
    ``channels`` (int64, ``(B,)``), the target score with that one channel of the layer set to
    zero; channels are asked for ``batch_size`` at a time. Then :func:`ablationcam_combine`.

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
    ndarray, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    _check_callable(score_ablated, "score_ablated")
    base = _base_scores(base_scores, len(a))
    batch_size = _check_batch_size(batch_size)

    def channels(n: int, start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop, dtype=np.int64)

    ablated = _chunked_scores(
        score_ablated, channels, a.shape[:2], batch_size, progress, "score_ablated",
        "Ablation-CAM",
    )
    return ablationcam_combine(a, ablated, base).astype(a.dtype, copy=False)


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
