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
accumulated in float64 and the result is cast once. Inputs are only read. NaN or Inf in an
input is a ``ValueError`` saying where; an empty batch, mismatched batch sizes or shapes are
``ValueError``; non-numeric arrays are ``TypeError``.

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

**Methods that combine layers or passes** are the pipeline's, not functions here: RefineCAM
(pytorch-grad-cam 1.5.7's ``RefineCAM``, arXiv 2605.14641) is :func:`gradcam_pp` at each layer,
each layer's map ReLU'd and min-max normalised at the input size, the maps multiplied pixel by
pixel and the product normalised again (``METHODS["refinecam"]``, ``fuse="product"``);
pytorch-grad-cam feeds it base maps already min-max normalised, so its extra division by the
maximum changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import array_api_compat
import numpy as np

from cam_core._chunks import check_batch_size, check_callable, chunked_scores
from cam_core._validate import (
    accumulation_dtype,
    array_namespace,
    as_float,
    as_int_array,
    as_size,
    check_finite,
    check_nonempty_axes,
    check_same_batch,
    device_of,
    finite_result,
    is_numpy_namespace,
    resolve_targets,
    to_numpy,
)
from cam_core.maps import normalize
from cam_core.resize import upsample

__all__ = [
    "EIGENCAM_SIGNS",
    "FEM_CONVENTIONS",
    "FULLGRAD_CONVENTIONS",
    "FinerTarget",
    "ISCAM_CONVENTIONS",
    "KPCA_KERNELS",
    "ablationcam",
    "ablationcam_combine",
    "cam",
    "cam_terms",
    "eigencam",
    "eigengradcam",
    "fem",
    "finer_weights",
    "fullgrad",
    "gradcam",
    "gradcam_elementwise",
    "gradcam_elementwise_terms",
    "gradcam_pp",
    "gradcam_pp_terms",
    "gradcam_terms",
    "guided_gradcam",
    "hirescam",
    "hirescam_terms",
    "input_noise",
    "iscam",
    "iscam_coefficients",
    "kpcacam",
    "layercam",
    "layercam_terms",
    "legrad",
    "mask_noise",
    "random_weights",
    "randomcam",
    "randomcam_terms",
    "scorecam",
    "scorecam_combine",
    "shapleycam",
    "smoothgradcam_pp",
    "sscam",
    "xgradcam",
    "xgradcam_terms",
]

_LAYER_SHAPE = ("N", "K", "h", "w")
EIGENCAM_SIGNS = ("correlation", "svd")
FULLGRAD_CONVENTIONS = ("paper", "pytorch-grad-cam")
FEM_CONVENTIONS = ("paper", "pytorch-grad-cam")


# --------------------------------------------------------------------------- validation helpers


def _activations(x, name: str = "activations"):
    arr = as_float(x, name, shape=_LAYER_SHAPE)
    check_same_batch(**{name: arr})
    check_nonempty_axes(arr, name, "at least one channel and one position")
    check_finite(arr, name)
    return arr


def _same_shape(x, y, names=("activations", "gradients"), shape=_LAYER_SHAPE,
                what="at least one channel and one position"):
    """Two arrays of one shape (the second moved to the first's library), checked: batch,
    non-empty axes, equal shapes, finite values."""
    a = as_float(x, names[0], shape=shape)
    b = as_float(y, names[1], shape=shape, like=a)
    check_same_batch(**{names[0]: a, names[1]: b})
    check_nonempty_axes(a, names[0], what)
    if a.shape != b.shape:
        raise ValueError(
            f"`{names[1]}` must have the shape of `{names[0]}` {tuple(a.shape)}; got "
            f"{tuple(b.shape)}"
        )
    check_finite(a, names[0])
    check_finite(b, names[1])
    return a, b


def _pair(activations, gradients):
    a, g = _same_shape(activations, gradients)
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
    if isinstance(w, np.ndarray):  # np.take would first copy a transposed kernel whole
        rows = w[c]
    else:
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


def shapleycam(activations, gradients, hvp, /):
    """ShapleyCAM: Grad-CAM's weights from a second-order expansion of the score.

    ``w_k = mean_ij (g - hvp / 2)_k^ij``, ``M = sum_k w_k A_k``, with ``hvp = H A`` the Hessian
    of the target score with respect to the layer's output applied to that output,
    ``hvp^ij_k = sum_{k'i'j'} d^2 y / (dA_k^ij dA_k'^i'j') A_k'^i'j'`` (Cai, "CAMs as Shapley
    Value-based Explainers", arXiv:2501.06261, 2025: the weights approximate each channel's
    Shapley value by a second-order Taylor expansion of ``y`` around ``A``). Where ``y`` is
    linear in ``A`` (a logit after global average pooling and a linear head, or any piecewise
    linear path such as ReLU networks between ``A`` and a logit), ``H = 0`` and ShapleyCAM is
    Grad-CAM; the paper explains a softmax-based score (its ReST target, offered by the
    adapters as ``rest_target``), where ``H`` is not 0. The adapters compute ``hvp`` by a second
    backward pass (``Session.capture(..., hvp=True)``). ReLU for display only.

    Parameters
    ----------
    activations, gradients, hvp : array_like, shape (N, K, h, w)

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a, g, dtype = _pair(activations, gradients)
    hv = as_float(hvp, "hvp", shape=_LAYER_SHAPE, like=a)
    if hv.shape != a.shape:
        raise ValueError(
            f"`hvp` must have the shape of `activations` {tuple(a.shape)}; got {tuple(hv.shape)}"
        )
    check_finite(hv, "hvp")
    xp = array_namespace(a)
    h, w = a.shape[2:]
    acc = _acc(xp, a)
    half = xp.sum(hv, axis=(2, 3), dtype=acc) / 2
    weights = (xp.sum(g, axis=(2, 3), dtype=acc) - half) / (h * w)
    return _combine(weights, a, xp.result_type(dtype, hv.dtype))


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


def scorecam(
    activations,
    score_masked: Callable[[int, np.ndarray], np.ndarray],
    /,
    *,
    input_size,
    batch_size: int = 64,
    progress: bool | None = None,
    max_n: int | None = None,
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
    max_n : int, optional
        Faster Score-CAM (T. Tabayashi's variant, tf-keras-vis's ``max_N``): only the ``max_n``
        channels of each image with the largest spatial standard deviation of ``A[n, k]`` are
        masked and scored (ties to the lower channel index), and the softmax and the sum run
        over them alone; ``K / max_n`` times fewer forward passes. None, or ``max_n >= K``,
        is Score-CAM itself. (tf-keras-vis takes the union of the images' channels over the
        batch and weighs by the raw scores, without the softmax; here each image has its own
        channels and the paper's softmax.)

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    xp = array_namespace(a)
    check_callable(score_masked, "score_masked")
    size = as_size(input_size, "input_size")
    batch_size = check_batch_size(batch_size)
    if max_n is not None:
        if isinstance(max_n, bool) or not isinstance(max_n, (int, np.integer)) or max_n < 1:
            raise ValueError(f"`max_n` must be None or a positive int; got {max_n!r}")
        if max_n < a.shape[1]:
            return _faster_scorecam(a, score_masked, size, batch_size, progress, int(max_n))

    def masks(n: int, start: int, stop: int):
        up = upsample(a[n, start:stop, ...], size, method="bilinear")
        return xp.astype(normalize(up), xp.float32, copy=False)

    scores = chunked_scores(
        score_masked, masks, a.shape[:2], batch_size, progress, "score_masked", "Score-CAM"
    )
    return xp.astype(scorecam_combine(a, scores), a.dtype, copy=False)


def _faster_scorecam(a, score_masked, size, batch_size, progress, max_n: int):
    """Score-CAM over each image's ``max_n`` channels of largest spatial standard deviation."""
    xp = array_namespace(a)
    n_img = a.shape[0]
    flat = xp.reshape(xp.astype(a, _acc(xp, a)), (n_img, a.shape[1], -1))
    spread = xp.std(flat, axis=2)
    order = xp.argsort(-spread, axis=1, stable=True)[:, :max_n]
    chosen = xp.sort(order, axis=1)  # (N, max_n), ascending channel indices
    subset = xp.stack([xp.take(a[n, ...], chosen[n, ...], axis=0) for n in range(n_img)])

    def masks(n: int, start: int, stop: int):
        up = upsample(subset[n, start:stop, ...], size, method="bilinear")
        return xp.astype(normalize(up), xp.float32, copy=False)

    scores = chunked_scores(
        score_masked, masks, subset.shape[:2], batch_size, progress, "score_masked",
        "Faster Score-CAM"
    )
    return xp.astype(scorecam_combine(subset, scores), a.dtype, copy=False)


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
    check_callable(score_ablated, "score_ablated")
    base = _base_scores(base_scores, a.shape[0], like=a)
    batch_size = check_batch_size(batch_size)
    device = device_of(a)
    # int64, or int32 where the library has no 64-bit types (JAX without x64)
    index = xp.int64 if accumulation_dtype(xp, device) == xp.float64 else xp.int32

    def channels(n: int, start: int, stop: int):
        return xp.arange(start, stop, dtype=index, device=device)

    ablated = chunked_scores(
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
shapleycam = finite_result("activations", "gradients", "hvp")(shapleycam)
eigencam = finite_result("activations")(eigencam)
scorecam_combine = finite_result("activations", "scores")(scorecam_combine)
ablationcam_combine = finite_result("activations", "ablated_scores", "base_scores")(
    ablationcam_combine
)
# ------------------------------------------------------------- more methods (issue 15)
#
# Each is a function of what a capture holds (activations, gradients, classifier weights,
# logits) or reaches the model only through the adapter's ``score_masked`` callable, so it
# runs for PyTorch and Keras alike. Peers' conventions are stated where they differ.

KPCA_KERNELS = ("linear", "poly", "rbf", "sigmoid")


def _relu(xp, x):
    return xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device_of(x)))


def gradcam_elementwise(activations, gradients, /):
    """Grad-CAM element-wise: the positive part of each channel's activation-gradient product.

    ``M = sum_k ReLU(g_k * A_k)`` element-wise. This is the variant pytorch-grad-cam ships as
    ``GradCAMElementWise`` (no paper of its own): HiResCAM's product
    (Draelos & Carin, arXiv:2011.08891, 2020, eq. 3, ``sum_k g_k * A_k``) with the ReLU moved
    inside the channel sum, so a channel cannot cancel another. The map is non-negative.

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, >= 0.
    """
    a, g, dtype = _pair(activations, gradients)
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    prod = xp.astype(a, f64) * xp.astype(g, f64)
    return xp.astype(xp.sum(_relu(xp, prod), axis=1), dtype, copy=False)


def eigengradcam(activations, gradients, /, *, sign: str = "correlation"):
    """Eigen-Grad-CAM: Eigen-CAM of the gradient-weighted activations.

    ``M = eigencam(g * A)``: the first principal component (Muhammad & Yeasin, IJCNN 2020,
    see :func:`eigencam`) of the element-wise product of gradients and activations, which makes
    Eigen-CAM class-discriminative. This is pytorch-grad-cam's ``EigenGradCAM`` (the product is
    element-wise, HiResCAM's weighting, not Grad-CAM's channel means); the sign is fixed as in
    :func:`eigencam` (``sign="svd"`` keeps the SVD's).

    Parameters
    ----------
    activations, gradients : array_like, shape (N, K, h, w)
    sign : {"correlation", "svd"}
        As in :func:`eigencam`.

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed, centred.
    """
    a, g, dtype = _pair(activations, gradients)
    xp = array_namespace(a)
    prod = xp.astype(a, dtype) * xp.astype(g, dtype)
    if not bool(xp.all(xp.isfinite(prod))):
        raise ValueError(f"eigengradcam: the product of `activations` and `gradients` overflows "
                         f"{dtype}; they are too large (pass float64 arrays or scale them down)")
    return eigencam(prod, sign=sign)


def _fix_sign(xp, proj, flat, f64):
    """``proj`` (N, P) times +-1 per image: positive correlation with the channel-mean map of
    ``flat`` (N, K, P); the entry of largest magnitude positive when that correlation is 0."""
    k = flat.shape[1]
    mean_map = xp.sum(flat, axis=1, dtype=f64) / k
    mean_map = mean_map - xp.mean(mean_map, axis=1, keepdims=True)
    corr = xp.sum(proj * mean_map, axis=1)
    idx = xp.argmax(xp.abs(proj), axis=1)
    largest = xp.take_along_axis(proj, idx[:, None], axis=1)[:, 0]
    one = xp.ones((), dtype=f64, device=device_of(proj))
    sign_arr = xp.where(corr != 0, xp.sign(corr), xp.where(largest < 0, -one, one))
    return proj * sign_arr[:, None]


def kpcacam(
    activations,
    /,
    *,
    kernel: str = "sigmoid",
    gamma: float | None = None,
    coef0: float = 1.0,
    degree: int = 3,
):
    """KPCA-CAM: the activations projected on their first kernel principal component.

    Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models using Kernel
    PCA", arXiv:2410.00267, 2024 (eq. 4-6): per image, ``X`` is ``A`` as ``(h w, K)``, centred
    over positions as in Eigen-CAM; ``G = k(X, X)`` is the kernel matrix of the positions, centred
    in feature space (``G - 1G - G1 + 1G1`` with ``1`` the matrix of ``1 / (h w)``); its top
    eigenpair ``(lambda, u)`` gives the map ``sqrt(lambda) u`` (scikit-learn's
    ``KernelPCA(n_components=1).fit_transform``, which pytorch-grad-cam's ``KPCA_CAM`` calls).
    The kernels are scikit-learn's: ``linear`` ``<x, y>``,
    ``poly`` ``(gamma <x, y> + coef0)^degree``, ``rbf`` ``exp(-gamma |x - y|^2)``,
    ``sigmoid`` ``tanh(gamma <x, y> + coef0)``, with
    ``gamma = 1 / K`` by default. With ``kernel="linear"`` this is exactly :func:`eigencam`.
    The sign is fixed as in :func:`eigencam` (scikit-learn makes the largest entry of ``u``
    positive instead; the two agree up to one sign per image).

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    kernel : {"linear", "poly", "rbf", "sigmoid"}
        pytorch-grad-cam's default is ``"sigmoid"``.
    gamma : float, optional
        The kernel's scale; None is ``1 / K``.
    coef0 : float
        The constant of the ``poly`` and ``sigmoid`` kernels.
    degree : int
        The ``poly`` kernel's degree.

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed (each sums to 0: the kernel is centred).
    """
    if kernel not in KPCA_KERNELS:
        raise ValueError(f"`kernel` must be one of {list(KPCA_KERNELS)}; got {kernel!r}")
    for name, v in (("gamma", gamma), ("coef0", coef0)):
        if v is None and name == "gamma":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"`{name}` must be a real number; got {type(v).__name__}")
        if not math.isfinite(v):
            raise ValueError(f"`{name}` must be finite; got {v}")
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 1:
        raise ValueError(f"`degree` must be an int >= 1; got {degree!r}")
    a = _activations(activations)
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    n, k, h, w = a.shape
    p = h * w
    gam = 1.0 / k if gamma is None else float(gamma)
    flat = xp.reshape(a, (n, k, p))
    x = xp.astype(xp.permute_dims(flat, (0, 2, 1)), f64)  # (N, hw, K)
    x = x - xp.mean(x, axis=1, keepdims=True)
    dot = xp.matmul(x, xp.permute_dims(x, (0, 2, 1)))  # (N, hw, hw)
    if kernel == "linear":
        gram = dot
    elif kernel == "poly":
        gram = (gam * dot + float(coef0)) ** int(degree)
    elif kernel == "sigmoid":
        gram = xp.tanh(gam * dot + float(coef0))
    else:
        sq = xp.sum(x * x, axis=2)
        dist = _relu(xp, sq[:, :, None] + sq[:, None, :] - 2.0 * dot)
        gram = xp.exp(-gam * dist)
    row = xp.mean(gram, axis=2, keepdims=True)
    col = xp.mean(gram, axis=1, keepdims=True)
    total = xp.mean(row, axis=1, keepdims=True)
    centred = gram - row - col + total
    centred = (centred + xp.permute_dims(centred, (0, 2, 1))) / 2.0  # exactly symmetric
    values, vectors = xp.linalg.eigh(centred)
    top = _relu(xp, values[:, -1])
    proj = vectors[:, :, -1] * xp.sqrt(top)[:, None]
    proj = _fix_sign(xp, proj, flat, f64)
    return xp.astype(xp.reshape(proj, (n, h, w)), a.dtype, copy=False)


def fem(activations, /, *, k: float = 2.0, convention: str = "paper"):
    """FEM: channels' strong responses, kept as binary masks weighted by the channel means.

    Fuad et al., "Features Understanding in 3D CNNs for Actions Recognition in Video", IPTA 2020
    (the Feature Explanation Method): per channel, ``B_k = [A_k > mu_k + k sigma_k]`` with
    ``mu_k`` and ``sigma_k`` the mean and (population) standard deviation of ``A_k`` over
    positions; ``w_k = mu_k``; ``M = sum_k w_k B_k``. No gradient and no class are used.

    pytorch-grad-cam 1.5.7's ``FEM`` (``k = 2``) computes another map from the same masks: the
    activations weighted by the *fraction* of each channel's positions that pass,
    ``M = sum_k mean_ij(B_k) A_k`` (``convention="pytorch-grad-cam"``).

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    k : float
        How many standard deviations above the mean a response must be.
    convention : {"paper", "pytorch-grad-cam"}

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed where channel means are negative.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise TypeError(f"`k` must be a real number; got {type(k).__name__}")
    if not math.isfinite(k):
        raise ValueError(f"`k` must be finite; got {k}")
    if not isinstance(convention, str) or convention not in FEM_CONVENTIONS:
        raise ValueError(f"`convention` must be one of {list(FEM_CONVENTIONS)}; got {convention!r}")
    a = _activations(activations)
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    a64 = xp.astype(a, f64)
    mu = xp.mean(a64, axis=(2, 3), keepdims=True)
    sigma = xp.sqrt(xp.mean((a64 - mu) ** 2, axis=(2, 3), keepdims=True))
    mask = xp.astype(a64 > mu + float(k) * sigma, f64)
    if convention == "paper":
        return xp.astype(xp.sum(mu * mask, axis=1), a.dtype, copy=False)
    return xp.astype(xp.sum(xp.mean(mask, axis=(2, 3), keepdims=True) * a64, axis=1), a.dtype,
                     copy=False)


def random_weights(k: int, /, *, seed: int = 0) -> np.ndarray:
    """RandomCAM's channel weights: ``K`` draws of ``U(-1, 1)`` from NumPy's
    ``default_rng(seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0; got {seed!r}")
    return np.random.default_rng(int(seed)).uniform(-1.0, 1.0, size=int(k))


def randomcam(activations, /, *, seed: int = 0):
    """RandomCAM: channels weighted at random, a baseline any method should beat.

    ``w_k ~ U(-1, 1)``, ``M = sum_k w_k A_k`` (pytorch-grad-cam's ``RandomCAM``). The weights are
    :func:`random_weights` ``(K, seed)``, the same for every image of the batch and on every
    library and device, so a batch gives each image's own map and two frameworks agree
    (pytorch-grad-cam draws new weights per image and per call).

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    seed : int

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    xp = array_namespace(a)
    n, k = a.shape[:2]
    w = random_weights(k, seed=seed)
    weights = xp.asarray(np.broadcast_to(w, (n, k)).copy(), dtype=_acc(xp, a), device=device_of(a))
    return _combine(weights, a, a.dtype)


# ------------------------------------------------------------------- Finer-CAM's target score


def finer_weights(logits, /, classes=None, *, gamma: float = 0.6, references: int = 3):
    """Finer-CAM's target score as weights on the logits: ``(N, C)`` float64, NumPy.

    Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual
    Explanation", CVPR 2025 (eq. 3): the score explained is
    ``y_c - gamma * mean_t y_{d_t}``, with ``d_1..d_T`` the ``T = references`` classes whose logits
    are closest to the target's (``|y_j - y_c|`` smallest, the target excluded, ties to the
    lower index; ``T`` capped at ``C - 1``). The score is linear in the logits, so it is
    ``sum_j W[n, j] y_j`` with ``W[n, c] = 1`` and ``W[n, d_t] = -gamma / T``, and its gradient
    is the same combination of the classes' gradients. Defaults are torch-cam 0.5's
    (``gamma=0.6``, three references).

    Parameters
    ----------
    logits : array_like, shape (N, C)
    classes : None, int or array_like of int, shape (N,)
        The target classes; None takes each image's top-1.
    gamma : float
        The comparison strength, >= 0.
    references : int
        How many most similar classes are subtracted, >= 1.

    Returns
    -------
    ndarray, shape (N, C)
    """
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)):
        raise TypeError(f"`gamma` must be a real number; got {type(gamma).__name__}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"`gamma` must be finite and >= 0; got {gamma}")
    if isinstance(references, bool) or not isinstance(references, (int, np.integer)):
        raise TypeError(f"`references` must be an int; got {type(references).__name__}")
    if references < 1:
        raise ValueError(f"`references` must be >= 1; got {references}")
    y = to_numpy(logits).astype(np.float64)
    if y.ndim != 2:
        raise ValueError(f"`logits` must have shape (N, C); got {y.shape}")
    n, c = y.shape
    if c < 2:
        raise ValueError(f"Finer-CAM needs at least two classes; `logits` has shape {y.shape}")
    cls = resolve_targets(classes, y)
    t = min(int(references), c - 1)
    dist = np.abs(y - y[np.arange(n), cls][:, None])
    dist[np.arange(n), cls] = np.inf
    refs = np.argsort(dist, axis=1, kind="stable")[:, :t]
    w = np.zeros((n, c), dtype=np.float64)
    np.put_along_axis(w, refs, -float(gamma) / t, axis=1)
    w[np.arange(n), cls] = 1.0
    return w


class FinerTarget:
    """A ``targets`` callable giving Finer-CAM's score (see :func:`finer_weights`).

    Called by an adapter with the framework's logits ``(N, C)``; returns
    ``sum_j W[n, j] logits[n, j]`` in the same framework (differentiable), with ``W`` chosen from
    the logits' values. Works for torch, JAX, NumPy and TensorFlow tensors.
    """

    def __init__(self, classes=None, *, gamma: float = 0.6, references: int = 3):
        finer_weights(np.zeros((1, 2)), None, gamma=gamma, references=references)  # checks
        self.classes = classes
        self.gamma = gamma
        self.references = references

    def __call__(self, logits):
        w = finer_weights(logits, self.classes, gamma=self.gamma, references=self.references)
        if array_api_compat.is_array_api_obj(logits):
            xp = array_namespace(logits)
            wt = xp.asarray(w, dtype=logits.dtype, device=device_of(logits))
            return xp.sum(logits * wt, axis=1)
        return _framework_sum(logits, w)

    def __repr__(self) -> str:
        return (f"FinerTarget(classes={self.classes!r}, gamma={self.gamma}, "
                f"references={self.references})")


def _framework_sum(logits, w):
    """``sum(logits * w, axis=1)`` through operators only, for a tensor the array API does not
    cover (TensorFlow): the product and a matrix product with a column of ones, then column 0."""
    dtype = str(getattr(getattr(logits, "dtype", None), "name", "float32"))
    w = w.astype(dtype)
    return ((logits * w) @ np.ones((w.shape[1], 1), dtype=dtype))[:, 0]


# ------------------------------------------------- Score-CAM variants through `score_masked`

ISCAM_CONVENTIONS = ("paper", "torch-cam")


def _check_samples(samples) -> int:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)):
        raise TypeError(f"`samples` must be an int; got {type(samples).__name__}")
    if samples < 1:
        raise ValueError(f"`samples` must be >= 1; got {samples}")
    return int(samples)


def _channel_masks(a, n: int, channels, size):
    """Score-CAM's masks of image ``n`` for the channel indices ``channels`` (a Python list)."""
    xp = array_namespace(a)
    idx = xp.asarray(channels, dtype=xp.int64, device=device_of(a))
    up = upsample(xp.take(a[n], idx, axis=0), size, method="bilinear")
    return xp.astype(normalize(up), xp.float32, copy=False)


def mask_noise(seed: int, sample: int, channel: int, size) -> np.ndarray:
    """SS-CAM's noise for one sample and channel: standard normal ``(H, W)`` float32, NumPy,
    from ``default_rng([seed, sample, channel])`` (the same for every image, library and
    device; independent of the chunking)."""
    rng = np.random.default_rng([int(seed), int(sample), int(channel)])
    return rng.standard_normal(tuple(size), dtype=np.float32)


def sscam(
    activations,
    score_masked: Callable[[int, np.ndarray], np.ndarray],
    /,
    *,
    input_size,
    samples: int = 35,
    std: float = 2.0,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool | None = None,
):
    """SS-CAM: Score-CAM with its scores averaged over noisy masks.

    Wang et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization",
    arXiv:2006.14255, 2020 (eq. 6-7, noise on the masks): with ``mask_k`` Score-CAM's mask
    (:func:`scorecam`), ``s_k = (1/S) sum_s y_c(x * (mask_k + eps_sk))``,
    ``eps_sk ~ N(0, std^2)`` per pixel; then ``w = softmax(s)``, ``M = sum_k w_k A_k``. The
    noise is :func:`mask_noise` ``(seed, s, k)``, so the maps are reproducible and the same in
    every framework. Defaults are torch-cam 0.5's (35 samples, ``std = 2``); torch-cam
    subtracts the unmasked score first, which a softmax ignores.

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    score_masked : callable ``(index, masks) -> scores``
        As in :func:`scorecam` (the masks here are not confined to [0, 1]).
    input_size : int or (H, W)
    samples : int
        ``S``, noisy copies of each mask.
    std : float
        The noise's standard deviation, >= 0.
    seed : int
    batch_size : int
        Masks per call of ``score_masked``.
    progress : bool or None

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    xp = array_namespace(a)
    check_callable(score_masked, "score_masked")
    size = as_size(input_size, "input_size")
    samples = _check_samples(samples)
    if isinstance(std, bool) or not isinstance(std, (int, float, np.integer, np.floating)):
        raise TypeError(f"`std` must be a real number; got {type(std).__name__}")
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"`std` must be finite and >= 0; got {std}")
    random_weights(1, seed=seed)  # checks the seed
    batch_size = check_batch_size(batch_size)
    k = a.shape[1]
    device = device_of(a)

    def masks(n: int, start: int, stop: int):
        items = range(start, stop)  # item j: sample j // K, channel j % K
        base = _channel_masks(a, n, [j % k for j in items], size)
        noise = np.stack([mask_noise(seed, j // k, j % k, size) for j in items]) * np.float32(std)
        return base + xp.asarray(noise, device=device)

    scores = chunked_scores(
        score_masked, masks, (a.shape[0], samples * k), batch_size, progress, "score_masked",
        "SS-CAM",
    )
    mean = scores.reshape(a.shape[0], samples, k).mean(axis=1)
    return xp.astype(scorecam_combine(a, mean), a.dtype, copy=False)


def iscam_coefficients(samples: int, convention: str = "paper") -> np.ndarray:
    """IS-CAM's mask scales ``c_1..c_S``: ``sum_{j=0}^{i-1} j / S`` (the paper's eq. 5) or
    ``sum_{j=1}^{i} j / S`` (torch-cam 0.5, whose sum starts one step later)."""
    samples = _check_samples(samples)
    if convention not in ISCAM_CONVENTIONS:
        raise ValueError(
            f"`convention` must be one of {list(ISCAM_CONVENTIONS)}; got {convention!r}"
        )
    i = np.arange(1, samples + 1, dtype=np.float64)
    return (i - 1) * i / (2 * samples) if convention == "paper" else i * (i + 1) / (2 * samples)


def iscam(
    activations,
    score_masked: Callable[[int, np.ndarray], np.ndarray],
    /,
    *,
    input_size,
    samples: int = 10,
    convention: str = "paper",
    batch_size: int = 64,
    progress: bool | None = None,
):
    """IS-CAM: Score-CAM with its scores integrated over scaled masks.

    Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based explanations",
    arXiv:2010.03023, 2020 (eq. 5-6): ``s_k = (1/S) sum_i y_c(x * c_i mask_k)`` with ``mask_k``
    Score-CAM's mask and ``c_i`` :func:`iscam_coefficients` ``(S, convention)``; then
    ``w = softmax(s)``, ``M = sum_k w_k A_k``. (The paper subtracts the baseline's score, a
    constant that the softmax ignores.)

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    score_masked : callable ``(index, masks) -> scores``
    input_size : int or (H, W)
    samples : int
        ``S`` (torch-cam's default 10).
    convention : {"paper", "torch-cam"}
    batch_size : int
    progress : bool or None

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    a = _activations(activations)
    xp = array_namespace(a)
    check_callable(score_masked, "score_masked")
    size = as_size(input_size, "input_size")
    coeff = iscam_coefficients(samples, convention)
    samples = len(coeff)
    batch_size = check_batch_size(batch_size)
    k = a.shape[1]
    device = device_of(a)

    def masks(n: int, start: int, stop: int):
        items = range(start, stop)
        base = _channel_masks(a, n, [j % k for j in items], size)
        c = np.asarray([coeff[j // k] for j in items], dtype=np.float32)
        return base * xp.asarray(c, device=device)[:, None, None]

    scores = chunked_scores(
        score_masked, masks, (a.shape[0], samples * k), batch_size, progress, "score_masked",
        "IS-CAM",
    )
    mean = scores.reshape(a.shape[0], samples, k).mean(axis=1)
    return xp.astype(scorecam_combine(a, mean), a.dtype, copy=False)


# ------------------------------------------------------------------------------ eigen_smooth
# Per-channel terms ``T[n, k]`` whose channel sum is a method's raw map (to float rounding);
# ``eigen_smooth`` (pytorch-grad-cam's option) replaces the sum by the first principal component
# of these terms, ``eigencam(terms)``. A method's ``MethodSpec.terms`` names its function here
# (cam_core.explain.weighted_activations calls it). Each takes its method's arguments and returns
# (N, K, h, w) float64 (float32 on a device without float64).


def cam_terms(activations, weights, classes, /):
    """CAM's terms ``W[c, k] A_k`` (see :func:`cam`)."""
    a = _activations(activations)
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    w = as_float(weights, "weights", shape=("C", "K"), like=a)
    c = xp.asarray(as_int_array(classes, "classes", shape=("N",)), device=device_of(a))
    wk = xp.astype(xp.take(w, c, axis=0), f64)
    return wk[:, :, None, None] * xp.astype(a, f64)


def randomcam_terms(activations, /, *, seed: int = 0):
    """RandomCAM's terms ``w_k A_k`` (see :func:`randomcam`)."""
    a = _activations(activations)
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    n, k = a.shape[:2]
    wk = xp.asarray(np.broadcast_to(random_weights(k, seed=seed), (n, k)).copy(),
                    dtype=f64, device=device_of(a))
    return wk[:, :, None, None] * xp.astype(a, f64)


def _pair64(activations, gradients):
    """The checked pair, its namespace and both in the accumulation dtype."""
    a, g, _ = _pair(activations, gradients)
    xp = array_namespace(a)
    f64 = _acc(xp, a)
    return xp, a, xp.astype(a, f64), xp.astype(g, f64)


def gradcam_terms(activations, gradients, /):
    """Grad-CAM's terms ``mean_ij(g_k) A_k`` (see :func:`gradcam`; Finer-CAM's too)."""
    xp, a, a64, g64 = _pair64(activations, gradients)
    h, w = a.shape[2:]
    wk = xp.sum(g64, axis=(2, 3)) / (h * w)
    return wk[:, :, None, None] * a64


def gradcam_pp_terms(activations, gradients, /):
    """Grad-CAM++'s terms ``w_k A_k`` (see :func:`gradcam_pp`, ``eps = 0``)."""
    xp, a, a64, g64 = _pair64(activations, gradients)
    g2 = g64 * g64
    denom = 2.0 * g2 + xp.sum(a64, axis=(2, 3))[:, :, None, None] * g2 * g64
    zero = denom == 0
    alpha = _zeros_where(xp, zero, g2 / _safe(xp, zero, denom))
    wk = xp.sum(alpha * _relu(xp, g64), axis=(2, 3))
    return wk[:, :, None, None] * a64


def xgradcam_terms(activations, gradients, /):
    """XGrad-CAM's terms ``w_k A_k`` (see :func:`xgradcam`)."""
    xp, a, a64, g64 = _pair64(activations, gradients)
    sum_a = xp.sum(a64, axis=(2, 3))
    zero = sum_a == 0
    wk = _zeros_where(xp, zero, xp.sum(a64 * g64, axis=(2, 3)) / _safe(xp, zero, sum_a))
    return wk[:, :, None, None] * a64


def hirescam_terms(activations, gradients, /):
    """HiResCAM's terms ``g_k A_k`` (see :func:`hirescam`)."""
    _, _, a64, g64 = _pair64(activations, gradients)
    return g64 * a64


def layercam_terms(activations, gradients, /):
    """LayerCAM's terms ``ReLU(g_k) A_k`` (see :func:`layercam`)."""
    xp, _, a64, g64 = _pair64(activations, gradients)
    return _relu(xp, g64) * a64


def gradcam_elementwise_terms(activations, gradients, /):
    """Grad-CAM element-wise's terms ``ReLU(g_k A_k)`` (see :func:`gradcam_elementwise`)."""
    xp, _, a64, g64 = _pair64(activations, gradients)
    return _relu(xp, g64 * a64)


# ----------------------------------------------------------------------- Smooth Grad-CAM++


def smoothgradcam_pp(activations, gradient_samples, /, *, eps: float = 0.0):
    """Smooth Grad-CAM++: Grad-CAM++ with gradient powers averaged over noisy inputs.

    Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for
    Deep Convolutional Neural Network Models", arXiv:1908.01224, 2019 (eq. 9-11): with
    ``g_s`` the gradients at the layer for the input plus noise sample ``s`` and
    ``D_p = (1/S) sum_s g_s^p``,

        ``alpha = D_2 / (2 D_2 + sum_ab A^ab D_3 + eps)`` (0 where the denominator is 0),
        ``w_k = sum_ij alpha_k^ij ReLU(D_1)_k^ij``, ``M = sum_k w_k A_k``,

    ``A`` the activations of the clean input. With one sample of zero noise this is
    :func:`gradcam_pp`. torch-cam 0.5 takes ``ReLU`` of the last sample's gradient instead of
    ``D_1`` and ``eps = 1e-8``.

    Parameters
    ----------
    activations : array_like, shape (N, K, h, w)
    gradient_samples : array_like, shape (S, N, K, h, w)
    eps : float

    Returns
    -------
    array, shape (N, h, w)
        Raw maps, signed.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"`eps` must be a real number; got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"`eps` must be finite and >= 0; got {eps}")
    a = _activations(activations)
    xp = array_namespace(a)
    gs = as_float(gradient_samples, "gradient_samples", shape=("S", "N", "K", "h", "w"), like=a)
    if tuple(gs.shape[1:]) != tuple(a.shape) or gs.shape[0] == 0:
        raise ValueError(
            f"`gradient_samples` must have shape (S, *{tuple(a.shape)}) with S >= 1; got "
            f"{tuple(gs.shape)}"
        )
    check_finite(gs, "gradient_samples")
    f64 = _acc(xp, a)
    g = xp.astype(gs, f64)
    d1, d2, d3 = xp.mean(g, axis=0), xp.mean(g * g, axis=0), xp.mean(g * g * g, axis=0)
    sum_a = xp.sum(a, axis=(2, 3), dtype=f64)[:, :, None, None]
    denom = 2.0 * d2 + sum_a * d3
    if eps:
        denom = denom + float(eps)
    zero = denom == 0
    alpha = _zeros_where(xp, zero, d2 / _safe(xp, zero, denom))
    weights = xp.sum(alpha * _relu(xp, d1), axis=(2, 3))
    return _combine(weights, a, xp.result_type(a, gs))


def input_noise(seed: int, sample: int, shape) -> np.ndarray:
    """Smooth Grad-CAM++'s input noise for one sample: standard normal float32 of ``shape``
    (one image, channels-first ``(C, H, W)``), NumPy, from ``default_rng([seed, sample])``."""
    rng = np.random.default_rng([int(seed), int(sample)])
    return rng.standard_normal(tuple(shape), dtype=np.float32)


# the same overflow rule for the methods added above
gradcam_elementwise = finite_result("activations", "gradients")(gradcam_elementwise)
eigengradcam = finite_result("activations", "gradients")(eigengradcam)
smoothgradcam_pp = finite_result("activations", "gradient_samples")(smoothgradcam_pp)


# ------------------------------------------------------------ FullGrad: every bias's gradient


def _fullgrad_rescaled(t, convention: str):
    """``|t|`` rescaled to ``[0, 1]``: per image over all channels and positions (the paper's
    code, ``/ (max + 1e-6)``) or per image and channel (pytorch-grad-cam, ``/ (max + 1e-7)``)."""
    xp = array_namespace(t)
    t = xp.abs(t)
    axes = (1, 2, 3) if convention == "paper" else (2, 3)
    eps = 1e-6 if convention == "paper" else 1e-7
    t = t - xp.min(t, axis=axes, keepdims=True)
    return t / (xp.max(t, axis=axes, keepdims=True) + eps)


def fullgrad(inputs, input_gradients, gradients, biases, /, *, convention: str = "paper"):
    """FullGrad: the input-gradient term plus every bias's gradient term, at the input's size.

    ``S = psi(grad_x y * x) + sum_l sum_c psi(grad_{z_l} y * b_l)_c`` (Srinivas & Fleuret,
    "Full-Gradient Representation for Neural Network Visualization", NeurIPS 2019, eq. 5 and
    Section 4): ``z_l`` is the output of bias layer ``l`` *before* any activation (a
    convolution's, or a batch norm's with its folded bias ``beta - mu gamma / sqrt(var + eps)``)
    and ``b_l`` its bias per channel; ``psi`` takes the absolute value, rescales it to ``[0, 1]``
    and upsamples bilinearly to the input's size. Each layer's rescaled term is summed over its
    channels (a sum commutes with the upsampling, so it is summed first); the input term over
    the colour channels. No ReLU (every term is >= 0); the display step min-max normalises.

    Parameters
    ----------
    inputs, input_gradients : array_like, shape (N, C, H, W)
        The batch as the model took it (channels-first) and ``d y / d x``.
    gradients : sequence of array_like, each (N, K_l, h_l, w_l)
        ``d y / d z_l`` per bias layer (channels-first).
    biases : sequence of array_like, each (K_l,)
        The bias of each layer.
    convention : {"paper", "pytorch-grad-cam"}
        How ``psi`` rescales: ``"paper"`` (the authors' code: per image over all channels and
        positions of a term, ``(t - min) / (max + 1e-6)``) or ``"pytorch-grad-cam"`` (per image
        *and channel*, ``/ (max + 1e-7)``, so each channel of a layer counts as much as any
        other, however weak).

    Returns
    -------
    array, shape (N, H, W)
        The raw saliency, >= 0, at the input's size. The upsampling is cam_core's bilinear
        (half-pixel centres, :func:`cam_core.resize.upsample`); the paper's code uses
        ``align_corners=True``.
    """
    if not isinstance(convention, str) or convention not in FULLGRAD_CONVENTIONS:
        raise ValueError(
            f"`convention` must be one of {list(FULLGRAD_CONVENTIONS)}; got {convention!r}"
        )
    x, gx = _same_shape(inputs, input_gradients, ("inputs", "input_gradients"),
                        ("N", "C", "H", "W"), "at least one channel and one pixel")
    if isinstance(gradients, (str, bytes)) or not hasattr(gradients, "__len__"):
        raise TypeError(f"`gradients` must be a sequence of arrays; got {type(gradients).__name__}")
    if isinstance(biases, (str, bytes)) or not hasattr(biases, "__len__"):
        raise TypeError(f"`biases` must be a sequence of arrays; got {type(biases).__name__}")
    if len(gradients) != len(biases):
        raise ValueError(
            f"`gradients` and `biases` must have one entry per layer; got {len(gradients)} and "
            f"{len(biases)}"
        )
    xp = array_namespace(x)
    n, size = x.shape[0], (int(x.shape[2]), int(x.shape[3]))
    dtype = x.dtype
    acc = _acc(xp, x)
    total = xp.sum(_fullgrad_rescaled(gx * x, convention), axis=1, dtype=acc)
    for i, (g, b) in enumerate(zip(gradients, biases)):
        g = as_float(g, f"gradients[{i}]", shape=_LAYER_SHAPE, like=x)
        b = as_float(b, f"biases[{i}]", shape=("K",), like=x)
        if g.shape[0] != n:
            raise ValueError(f"batch sizes differ: `inputs` has {n}, `gradients[{i}]` has "
                             f"{g.shape[0]}")
        if b.shape[0] != g.shape[1]:
            raise ValueError(
                f"`biases[{i}]` must have one value per channel of `gradients[{i}]` "
                f"({g.shape[1]}); got {b.shape[0]}"
            )
        check_nonempty_axes(g, f"gradients[{i}]", "at least one channel and one position")
        check_finite(g, f"gradients[{i}]")
        check_finite(b, f"biases[{i}]")
        term = _fullgrad_rescaled(g * xp.reshape(b, (1, -1, 1, 1)), convention)
        summed = xp.astype(xp.sum(term, axis=1, dtype=acc), dtype, copy=False)
        total = total + xp.astype(upsample(summed, size, method="bilinear"), acc, copy=False)
    return xp.astype(total, dtype, copy=False)


# ------------------------------------------------------------------------- Guided Grad-CAM


def guided_gradcam(guided, maps, /, *, channel_axis: int | None = None):
    """Guided Grad-CAM: guided backpropagation times a class activation map, pixel by pixel.

    ``G_c = GB_c * L_c`` (Selvaraju et al., ICCV 2017, Section 3.1): ``GB_c`` the guided
    backpropagation of the class score to the input (Springenberg et al., "Striving for
    Simplicity: The All Convolutional Net", ICLR 2015 workshop; the adapters'
    ``guided_backprop``), ``L_c`` the map upsampled to the input's size (any method's
    ``Explanation.maps``; the paper's is Grad-CAM). Fine-grained and class-discriminative, for
    looking at: not a localisation map (the package's metrics take ``maps``, not this).

    Parameters
    ----------
    guided : array_like, shape (N, C, H, W) or (N, H, W, C)
        Guided backpropagation, in the inputs' layout.
    maps : array_like, shape (N, H, W)
    channel_axis : {1, 3, -1} or None
        Where ``guided``'s channels are; None finds the axis from the maps' ``(H, W)`` (a
        ``ValueError`` when both readings fit, e.g. 3 channels on a 3 x 3 input).

    Returns
    -------
    array, the shape of ``guided``
    """
    gb = as_float(guided, "guided", shape=("N", "a", "b", "c"))
    mp = as_float(maps, "maps", shape=("N", "H", "W"), like=gb)
    check_same_batch(guided=gb, maps=mp)
    check_finite(gb, "guided")
    check_finite(mp, "maps")
    hw = tuple(mp.shape[1:])
    first, last = tuple(gb.shape[2:]) == hw, tuple(gb.shape[1:3]) == hw
    if channel_axis is None:
        if first and last:
            raise ValueError(
                f"`guided` {tuple(gb.shape)} reads as channels-first and as channels-last "
                f"against maps of {hw}; give `channel_axis`"
            )
        if not (first or last):
            raise ValueError(f"`guided` {tuple(gb.shape)} has no (H, W) = {hw} of the maps")
        channel_axis = 1 if first else 3
    if channel_axis not in (1, 3, -1):
        raise ValueError(f"`channel_axis` must be 1, 3 or -1; got {channel_axis!r}")
    if (channel_axis == 1 and not first) or (channel_axis in (3, -1) and not last):
        raise ValueError(f"`guided` {tuple(gb.shape)} does not have the maps' {hw} around "
                         f"channel axis {channel_axis}")
    xp = array_namespace(gb)
    weight = mp[:, None, :, :] if channel_axis == 1 else mp[:, :, :, None]
    return gb * xp.astype(weight, gb.dtype, copy=False)


# ------------------------------------------------------------------- LeGrad: attention maps


def legrad(attention_gradients, /, *, grid, prefix: int = 1):
    """LeGrad: how each layer's own class score moves with its attention, over layers.

    Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via Feature
    Formation Sensitivity", arXiv:2404.03214 (ICCV 2025): for each chosen block ``l``, ``s^l`` is
    the class score the model's head gives to the block's output tokens (the intermediate
    prediction) and ``G^l = d s^l / d A^l`` its gradient with respect to the block's attention
    probabilities ``A^l`` (heads x queries x keys). The map is
    ``sum_l mean_{heads, queries} ReLU(G^l)`` over the patch keys (the ``prefix`` keys dropped),
    laid out on the patch grid; the display step min-max normalises it (so a sum and the paper's
    mean over layers give the same map). No attention values are multiplied in.

    Parameters
    ----------
    attention_gradients : sequence of array_like, each (N, heads, T, T)
        ``G^l`` per block (the adapters' ``attention_gradients``).
    grid : (int, int)
        The patch grid ``(h, w)``, ``h * w = T - prefix``.
    prefix : int
        Keys before the patches (class, distillation, register tokens).

    Returns
    -------
    array, shape (N, h, w)
        >= 0.
    """
    if isinstance(attention_gradients, (str, bytes)) or not hasattr(attention_gradients, "__len__"):
        raise TypeError(f"`attention_gradients` must be a sequence of arrays; got "
                        f"{type(attention_gradients).__name__}")
    if len(attention_gradients) == 0:
        raise ValueError("`attention_gradients` is empty; need at least one block")
    h, w = as_size(grid, "grid")
    if isinstance(prefix, bool) or not isinstance(prefix, (int, np.integer)) or prefix < 0:
        raise ValueError(f"`prefix` must be an int >= 0; got {prefix!r}")
    first = None
    total = None
    for i, g in enumerate(attention_gradients):
        g = as_float(g, f"attention_gradients[{i}]", shape=("N", "heads", "T", "T"), like=first)
        if first is None:
            first = g
        elif g.shape[0] != first.shape[0] or g.shape[3] != first.shape[3]:
            raise ValueError(
                f"`attention_gradients[{i}]` {tuple(g.shape)} does not match the first block's "
                f"{tuple(first.shape)} in images or keys"
            )
        keys = g.shape[3]
        if keys - prefix != h * w:
            raise ValueError(
                f"`grid` {(h, w)} needs {h * w} patch keys; attention_gradients[{i}] has {keys} keys "
                f"and `prefix` {prefix}"
            )
        check_finite(g, f"attention_gradients[{i}]")
        xp = array_namespace(g)
        acc = _acc(xp, g)
        pos = xp.astype(xp.maximum(g, xp.zeros((), dtype=g.dtype, device=device_of(g))), acc)
        per_key = xp.mean(xp.mean(pos, axis=1), axis=1)  # heads, then queries: (N, T)
        total = per_key if total is None else total + per_key
    xp = array_namespace(first)
    n = first.shape[0]
    raw = xp.reshape(total[:, prefix:], (n, h, w))
    return xp.astype(raw, first.dtype, copy=False)


# the same overflow rule as the methods above
fullgrad = finite_result("inputs", "input_gradients", "gradients", "biases")(fullgrad)
legrad = finite_result("attention_gradients")(legrad)
guided_gradcam = finite_result("guided", "maps")(guided_gradcam)
