"""The bridge between adapters and the core: `Capture`, `Explanation` and `explain()`.

An adapter (``cam_core.adapters.torch``, ``cam_core.adapters.keras``) talks to its framework and
hands the core one :class:`Capture` per target layer: the layer's activations ``(N, K, h, w)``
(channels-first, whatever the framework's layout), the gradients of the target scores with
respect to them, the logits ``(N, C)``, the target class of each image, and the classifier
weights ``(C, K)`` when the model ends in global average pooling + a linear layer.

**Where the arrays live.** The layer-sized arrays (activations, gradients, weights) are either
NumPy arrays or the framework's own tensors where the model left them (a GPU's included): the
core's array functions run on whatever they are given (:mod:`cam_core._validate`), so on a GPU
the method, the upsampling and the normalisation run there and only the final maps
``(N, H, W)`` float32 cross to the host, through the session's ``to_host`` when it has one.
With ``maps_on_device=True`` they stay on the device:
:attr:`Explanation.maps` and ``raw`` are then the framework's arrays, and
:meth:`Explanation.boxes`, the metrics and the sweep copy them to the host themselves. The
logits, targets and scores are small and always NumPy.

Everything after that is the core's: :func:`raw_maps` turns a capture into a method's raw maps,
and :func:`explain_session` runs the whole pipeline

    raw (N, h, w) --ReLU where the method's paper applies it--> --upsample to the input size-->
    --per-map min-max to [0, 1]--> maps (N, H, W), fused over layers when there are several.

Upsampling comes before min-max so that every map spans exactly [0, 1] whatever the
interpolation (bicubic overshoots), as in the WSOL protocol (resize, then normalise).

**Adding a method** touches one function and one registry entry: write the function in
:mod:`cam_core.methods` (its paper and equation in the docstring; export it in its ``__all__``
and in ``cam_core.__all__``), then add its entry to :data:`METHODS`::

    MethodSpec("mycam", needs_gradients=True, relu=True, function=m.mycam,
               aliases=("mycamv2",),      # other spellings method_spec accepts (optional)
               terms=m.gradcam_terms)     # its per-channel terms, for eigen_smooth (optional)

What the spec says the method needs (:class:`MethodSpec`: gradients, the classifier weights, a
masked or ablated score, a second backward pass, every bias, attention gradients) picks how
:func:`raw_maps` calls the function and what an adapter's session is asked for; ``relu`` is the
display ReLU of its paper. Every adapter, the engine, the command line and the equivalence check
then know the method by its name; no other table lists methods (``tests/core/test_explain.py``
checks that every registered function is exported).

Perturbation methods (Score-CAM, Ablation-CAM) reach the model only through two callables of the
adapter's session, called in chunks of ``batch_size``:

- ``score_masked(index, masks)``: the target score of image ``index`` multiplied by each mask of
  ``masks`` ``(B, H, W)`` (values in [0, 1]), returned as ``(B,)``;
- ``score_ablated(layer, index, channels)``: the target score of image ``index`` when channel
  ``channels[b]`` of layer number ``layer`` is set to zero, returned as ``(B,)``.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import array_api_compat
import numpy as np

from cam_core import methods as m
from cam_core._validate import (
    array_namespace,
    as_size,
    device_of,
    resolve_targets,
    to_numpy,
)
from cam_core.boxes import boxes_from_map
from cam_core.maps import FUSIONS, normalize
from cam_core.maps import fuse as fuse_maps
from cam_core.methods import FinerTarget, input_noise
from cam_core.resize import INTERPOLATIONS
from cam_core.resize import upsample as upsample_maps

__all__ = [
    "METHODS",
    "AttentionGradients",
    "BiasGradients",
    "Capture",
    "ConstantMapWarning",
    "Explanation",
    "MethodSpec",
    "Session",
    "check_method_options",
    "display_maps",
    "explain",
    "explain_guided",
    "explain_session",
    "method_fusion",
    "method_layer",
    "method_spec",
    "raw_maps",
    "resolve_targets",
    "session_targets",
    "weighted_activations",
]


@dataclass(frozen=True)
class MethodSpec:
    """A CAM method: its core function, what it needs from the model and how its raw map is
    displayed. Adding a method is a function in :mod:`cam_core.methods` and an entry in
    :data:`METHODS`; how the function is called follows from what the spec says it needs:

    - ``needs_weights``: ``function(activations, weights, targets)`` (CAM);
    - ``needs_gradients``: ``function(activations, gradients)``; with ``noise``,
      ``function(activations, gradient_samples)`` over gradients at noisy inputs;
    - ``perturbation="masked"``: ``function(activations, score_masked, input_size=,
      batch_size=, progress=)``; ``"ablated"``: ``function(activations, score_ablated, scores,
      batch_size=, progress=)``;
    - ``second_order``: ``function(activations, gradients, hvp)`` with ``Capture.hvp`` (the
      session's ``capture(gradients=True, hvp=True)``; ShapleyCAM);
    - ``all_biases``: ``function(inputs, input_gradients, gradients, biases)`` from the
      session's ``bias_gradients()`` (:class:`BiasGradients`; FullGrad), at the input's size;
    - ``attention``: ``function(gradients, grid=, prefix=)`` from the session's
      ``attention_gradients()`` (:class:`AttentionGradients`; LeGrad);
    - otherwise ``function(activations)``.

    ``fuse`` is a method's own fusion of layers (RefineCAM multiplies them). ``aliases`` are
    other spellings :func:`method_spec` accepts, written as it compares them (lower case, no
    ``_`` or ``-``). ``terms`` is the function of :mod:`cam_core.methods` giving the per-channel
    terms whose channel sum is the raw map, called with the same arguments as ``function``
    (:func:`weighted_activations`); a method with ``terms`` takes ``eigen_smooth``.
    """

    name: str
    needs_gradients: bool
    relu: bool
    needs_weights: bool = False
    perturbation: str | None = None  # "masked" (Score-CAM) or "ablated" (Ablation-CAM)
    target: str | None = None  # "finer": the score explained is Finer-CAM's (see `session_targets`)
    noise: bool = False  # gradients at noisy inputs too (Smooth Grad-CAM++, `noisy_captures`)
    fuse: str | None = None  # the method's own fusion of layers (RefineCAM: "product")
    second_order: bool = False  # needs the Hessian-vector product H A too (`Capture.hvp`)
    all_biases: bool = False  # every bias layer's gradient, no target layer (`BiasGradients`)
    attention: bool = False  # each block's attention gradients (`AttentionGradients`)
    function: Callable | None = field(default=None, compare=False, repr=False)
    aliases: tuple[str, ...] = ()  # other spellings, normalised as `method_spec` compares them
    terms: Callable | None = field(default=None, compare=False, repr=False)  # eigen_smooth's


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        # Zhou et al. min-max normalise the signed map; no ReLU in the paper.
        MethodSpec("cam", needs_gradients=False, relu=False, needs_weights=True, function=m.cam,
                   terms=m.cam_terms),
        MethodSpec("gradcam", needs_gradients=True, relu=True, function=m.gradcam,
                   terms=m.gradcam_terms),
        MethodSpec("gradcam++", needs_gradients=True, relu=True, function=m.gradcam_pp,
                   aliases=("gradcampp", "gradcamplusplus"), terms=m.gradcam_pp_terms),
        MethodSpec("xgradcam", needs_gradients=True, relu=True, function=m.xgradcam,
                   terms=m.xgradcam_terms),
        MethodSpec("layercam", needs_gradients=True, relu=True, function=m.layercam,
                   terms=m.layercam_terms),
        MethodSpec("hirescam", needs_gradients=True, relu=True, function=m.hirescam,
                   terms=m.hirescam_terms),
        # The projection's sign is fixed by the core; the map is min-max normalised as it is.
        MethodSpec("eigencam", needs_gradients=False, relu=False, function=m.eigencam),
        MethodSpec("scorecam", needs_gradients=False, relu=True, perturbation="masked",
                   function=m.scorecam),
        MethodSpec("ablationcam", needs_gradients=False, relu=True, perturbation="ablated",
                   function=m.ablationcam),
        # issue 15: pytorch-grad-cam's and torch-cam's other methods (cam_core.methods)
        MethodSpec("gradcamelementwise", needs_gradients=True, relu=True,
                   function=m.gradcam_elementwise, aliases=("gradcamew",),
                   terms=m.gradcam_elementwise_terms),
        # the signs of the projections are fixed, as Eigen-CAM's
        MethodSpec("eigengradcam", needs_gradients=True, relu=False, function=m.eigengradcam),
        MethodSpec("kpcacam", needs_gradients=False, relu=False, function=m.kpcacam),
        MethodSpec("fem", needs_gradients=False, relu=True, function=m.fem),
        MethodSpec("randomcam", needs_gradients=False, relu=True, function=m.randomcam,
                   terms=m.randomcam_terms),
        # Grad-CAM of Finer-CAM's contrastive score (`session_targets` builds it)
        MethodSpec("finercam", needs_gradients=True, relu=True, target="finer",
                   function=m.gradcam, terms=m.gradcam_terms),
        MethodSpec("sscam", needs_gradients=False, relu=True, perturbation="masked",
                   function=m.sscam, aliases=("smoothscorecam",)),
        MethodSpec("iscam", needs_gradients=False, relu=True, perturbation="masked",
                   function=m.iscam, aliases=("integratedscorecam",)),
        # gradients at noisy copies of the input: `noisy_captures`
        MethodSpec("smoothgradcam++", needs_gradients=True, relu=True, noise=True,
                   function=m.smoothgradcam_pp,
                   aliases=("smoothgradcampp", "smoothgradcamplusplus")),
        # Grad-CAM++ per layer, the layers' [0, 1] maps multiplied and normalised again
        MethodSpec("refinecam", needs_gradients=True, relu=True, fuse="product",
                   function=m.gradcam_pp),
        # Grad-CAM's weights less half the Hessian-vector product: a second backward pass
        MethodSpec("shapleycam", needs_gradients=True, relu=True, second_order=True,
                   function=m.shapleycam),
        # every bias layer's gradient and the input's (the session's `bias_gradients`)
        MethodSpec("fullgrad", needs_gradients=True, relu=False, all_biases=True,
                   function=m.fullgrad),
        # vision transformers: each block's class score against its attention probabilities
        MethodSpec("legrad", needs_gradients=True, relu=False, attention=True,
                   function=m.legrad),
    )
}
# Methods whose raw map is a channel sum of per-channel terms (`MethodSpec.terms`): `eigen_smooth`
# applies to them.
EIGEN_SMOOTH_METHODS = tuple(name for name, spec in METHODS.items() if spec.terms is not None)
# pytorch-grad-cam's test-time augmentation (through ttach): horizontal flip x intensity factors
AUG_SMOOTH_FACTORS = (0.9, 1.0, 1.1)


def method_spec(method: str) -> MethodSpec:
    """Return the :class:`MethodSpec` of ``method`` or raise a ``ValueError`` listing the names."""
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a str; got {type(method).__name__}")
    key = method.lower().replace("_", "").replace("-", "")
    if key in METHODS:
        return METHODS[key]
    for spec in METHODS.values():
        if key in spec.aliases:
            return spec
    raise ValueError(f"`method` must be one of {sorted(METHODS)}; got {method!r}")


def weighted_activations(method: str, activations, gradients=None, /, *, weights=None,
                         classes=None, seed: int = 0):
    """The per-channel terms ``T[n, k]`` whose channel sum is ``method``'s raw map.

    ``sum_k T[:, k]`` equals the method's map (to float rounding): ``w_k A_k`` for the
    channel-weight methods (Grad-CAM, Grad-CAM++, XGrad-CAM, RandomCAM, CAM), the element-wise
    products for HiResCAM (``g A``), LayerCAM (``ReLU(g) A``) and Grad-CAM element-wise
    (``ReLU(g A)``). ``eigen_smooth`` (pytorch-grad-cam's option) replaces the sum by the first
    principal component of these terms: ``eigencam(weighted_activations(...))``. The method's
    :attr:`MethodSpec.terms` computes them (:mod:`cam_core.methods`).

    Parameters
    ----------
    method : str
        A method of :data:`METHODS` with ``terms`` (:data:`EIGEN_SMOOTH_METHODS`).
    activations, gradients : array_like, shape (N, K, h, w)
        ``gradients`` for the gradient methods.
    weights, classes
        CAM's classifier weights ``(C, K)`` and classes ``(N,)``.
    seed : int
        RandomCAM's seed (the methods that need neither gradients nor weights take it).

    Returns
    -------
    array, shape (N, K, h, w), float64 (float32 on a device without float64)
    """
    spec = method_spec(method)
    if spec.terms is None:
        raise ValueError(
            f"`method` {method!r} is not a sum of per-channel terms of the activations; "
            f"eigen_smooth applies to {', '.join(EIGEN_SMOOTH_METHODS)}"
        )
    if spec.needs_weights:
        return spec.terms(activations, weights, classes)
    if spec.needs_gradients:
        return spec.terms(activations, gradients)
    return spec.terms(activations, seed=seed)


@dataclass(frozen=True)
class Capture:
    """What an adapter records for one target layer of one batch (channels-first).

    The layer-sized arrays (``activations``, ``gradients``, ``weights``) are NumPy arrays or
    arrays of the model's framework on its device (see the module docstring); the rest is NumPy.

    Attributes
    ----------
    activations : array, shape (N, K, h, w), float32
        The target layer's output.
    logits : ndarray, shape (N, C), float32
        The model's pre-softmax scores.
    targets : ndarray, shape (N,), int64
        The class explained for each image; -1 where the target is a user callable.
    scores : ndarray, shape (N,), float32
        The target score of each image (the logit of its target, or the callable's value).
    gradients : array, shape (N, K, h, w), float32, optional
        d scores[n] / d activations[n]; None when the method needs no gradient.
    weights : array, shape (C, K), float32, optional
        The linear layer after global average pooling, when the head is GAP + linear.
    layer : str
        The layer's name in the model.
    hvp : array, shape (N, K, h, w), float32, optional
        ``H A``: the Hessian of ``scores[n]`` with respect to ``activations[n]`` applied to
        ``activations[n]`` (ShapleyCAM); None unless the capture was asked for it.
    """

    activations: np.ndarray
    logits: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    gradients: np.ndarray | None = None
    weights: np.ndarray | None = None
    layer: str = ""
    hvp: np.ndarray | None = None


@dataclass(frozen=True)
class BiasGradients:
    """What an adapter records for FullGrad: the input's gradient and every bias layer's.

    Layer-sized arrays are NumPy or the framework's arrays on the model's device (as in
    :class:`Capture`); all channels-first.

    Attributes
    ----------
    inputs, input_gradients : array, shape (N, C, H, W)
        The batch as the model took it and ``d scores / d inputs``.
    gradients : tuple of arrays, each (N, K, h, w)
        ``d scores / d z`` for each call of each bias layer, ``z`` its output before any
        activation, in the order the model ran them.
    biases : tuple of arrays, each (K,)
        The bias of each (a batch norm's folded: ``beta - mean * gamma / sqrt(var + eps)``).
    layers : tuple of str
        Their names.
    logits, targets, scores
        As in :class:`Capture`.
    """

    inputs: np.ndarray
    input_gradients: np.ndarray
    gradients: tuple
    biases: tuple
    layers: tuple
    logits: np.ndarray
    targets: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class AttentionGradients:
    """What an adapter records for LeGrad: per block, the gradient of the block's own class
    score (the model's head on the block's output) with respect to its attention probabilities.

    Attributes
    ----------
    gradients : tuple of arrays, each (N, heads, T, T)
    grid : (int, int)
        The patch grid of the ``T - prefix`` patch tokens.
    prefix : int
        Tokens before the patches.
    layers : tuple of str
        The blocks.
    logits, targets, scores
        As in :class:`Capture` (of the whole model).
    """

    gradients: tuple
    grid: tuple
    prefix: int
    layers: tuple
    logits: np.ndarray
    targets: np.ndarray
    scores: np.ndarray


class Session(Protocol):
    """What an adapter provides to :func:`explain_session` for one call on one batch."""

    input_size: tuple[int, int]

    def capture(self, *, gradients: bool) -> list[Capture]: ...

    # ``capture(gradients=True, hvp=True)`` also fills ``Capture.hvp`` (second-order methods)
    # optional: ``bias_gradients() -> BiasGradients`` (FullGrad)
    # optional: ``attention_gradients() -> AttentionGradients`` (LeGrad)

    def score_masked(self, index: int, masks: np.ndarray) -> np.ndarray: ...

    def score_ablated(self, layer: int, index: int, channels: np.ndarray) -> np.ndarray: ...

    # optional: ``to_host(array) -> ndarray``, the adapter's fastest copy of the final maps
    # optional: ``x``, the batch as the model takes it, settable (Smooth Grad-CAM++ adds noise)


class ConstantMapWarning(RuntimeWarning):
    """Some maps of an :func:`explain` call are constant: they carry no localisation (their boxes
    cover the whole image). Issued once per call; :attr:`Explanation.constant` says which."""


@dataclass(frozen=True)
class Explanation:
    """The result of :func:`explain`.

    Attributes
    ----------
    maps : ndarray, shape (N, H, W), float32
        Normalised maps at the input's spatial size, each in [0, 1] (all zeros when constant).
        NumPy, unless the adapter was asked for ``maps_on_device=True``: then an array of the
        model's framework on its device.
    raw : ndarray, shape (N, h, w), or tuple of them
        The method's raw maps, sign and scale kept; a tuple with one array per layer when several
        layers were fused. On the host or the device as ``maps``.
    logits : ndarray, shape (N, C)
    targets : ndarray, shape (N,), int64 (-1 for a callable target)
    method : str
    layers : tuple of str
    """

    maps: np.ndarray
    raw: np.ndarray | tuple[np.ndarray, ...]
    logits: np.ndarray
    targets: np.ndarray
    method: str
    layers: tuple[str, ...] = field(default=())

    @property
    def constant(self) -> np.ndarray:
        """Bool ``(N,)``: True for the images whose map is constant (all zeros after
        normalisation), e.g. a layer whose positions get no gradient or a head that ignores it.
        Such a map localises nothing; :meth:`boxes` gives one box over the whole image for it."""
        return _constant_flags(self.maps)

    def boxes(
        self,
        threshold: float = 0.2,
        *,
        mode: str = "largest",
        connectivity: int = 8,
    ) -> list[np.ndarray]:
        """Boxes of each map at ``threshold`` times its maximum (the CAM paper's 20% by default).

        Returns one ``(K, 4)`` int64 array of half-open ``(x0, y0, x1, y1)`` boxes per image; see
        :func:`cam_core.boxes_from_map` for ``mode`` and ``connectivity``.
        """

        maps = to_numpy(self.maps)  # device maps cross to the host once
        return [
            boxes_from_map(m, threshold=threshold, mode=mode, connectivity=connectivity)
            for m in maps
        ]


def display_maps(raws, /, *, relu: bool, size, upsample: str = "bilinear", fuse: str = "mean",
                 normalise: bool = True):
    """Raw maps -> the maps people look at and score: the one display pipeline of the package.

    Per layer: ReLU where the method's paper applies it (``relu``, a
    :class:`MethodSpec`'s), upsampling to ``size`` by ``upsample``, min-max normalisation
    (:func:`cam_core.maps.normalize`); then the layers fused by ``fuse`` and the result cast to
    float32. Any array library (the arrays stay where they are).

    Parameters
    ----------
    raws : array or sequence of arrays, each (N, h, w)
        One layer's raw maps, or one array per layer.
    relu : bool
    size : int or (H, W)
    upsample : str
        One of :data:`cam_core.resize.INTERPOLATIONS`.
    fuse : str
        How layers combine (:func:`cam_core.maps.fuse`); unused for one layer. A product of
        layers is min-max normalised again (RefineCAM).
    normalise : bool
        False keeps the upsampled values (what the WSOL reference is fed: it normalises itself).

    Returns
    -------
    array (N, H, W) float32
    """
    layers = list(raws) if isinstance(raws, (list, tuple)) else [raws]
    out = []
    for raw in layers:
        xp = array_namespace(raw)
        if relu:
            raw = xp.maximum(raw, xp.zeros((), dtype=raw.dtype, device=device_of(raw)))
        up = upsample_maps(raw, size, method=upsample)
        out.append(normalize(up, relu=False) if normalise else up)
    maps = out[0] if len(out) == 1 else fuse_maps(out, how=fuse)
    if len(out) > 1 and fuse == "product" and normalise:
        maps = normalize(maps, relu=False)  # a product of [0, 1] maps shrinks: stretch it back
    xp = array_namespace(maps)
    return xp.astype(maps, xp.float32, copy=False)


def raw_maps(
    method: str,
    capture: Capture,
    *,
    score_masked: Callable[[int, np.ndarray], np.ndarray] | None = None,
    score_ablated: Callable[[int, np.ndarray], np.ndarray] | None = None,
    input_size=None,
    batch_size: int = 64,
    progress: bool | None = None,
    options: Mapping | None = None,
) -> np.ndarray:
    """Compute ``method``'s raw maps ``(N, h, w)`` from one layer's :class:`Capture`.

    ``score_masked`` and ``input_size`` are needed by Score-CAM, ``score_ablated`` (already bound
    to the layer) by Ablation-CAM. ``options`` are keyword options of the method's function
    (:func:`check_method_options`), e.g. ``{"eps": 1e-6}`` for Grad-CAM++ or ``{"max_n": 64}`` for
    Score-CAM.
    """

    spec = method_spec(method)
    opts = check_method_options(spec.name, options)
    a = capture.activations
    if spec.needs_weights:
        if capture.weights is None:
            raise ValueError(
                f"CAM needs a model whose head is global average pooling + one linear layer; "
                f"layer {capture.layer!r} is not followed by one. Use method='gradcam', which "
                f"equals CAM (up to a constant) on such heads and works on any head."
            )
        if np.any(to_numpy(capture.targets) < 0):
            raise ValueError("CAM needs class indices as targets, not a callable score")
        return spec.function(a, capture.weights, capture.targets, **opts)
    if spec.noise:
        raise ValueError(
            f"{spec.name} needs gradients at noisy copies of the input, which one capture does "
            f"not hold; use explain() or explain_session()"
        )
    if spec.all_biases or spec.attention:
        what = ("the gradients of every bias layer and of the input" if spec.all_biases else
                "each block's attention probabilities and their gradients")
        raise ValueError(
            f"{spec.name} needs {what}, which one capture does not hold; use explain() or "
            f"explain_session()"
        )
    if spec.needs_gradients:
        if capture.gradients is None:
            raise ValueError(f"method {spec.name!r} needs gradients; the capture has none")
        if spec.second_order:
            if capture.hvp is None:
                raise ValueError(
                    f"method {spec.name!r} needs the Hessian-vector product; capture with "
                    f"`capture(gradients=True, hvp=True)`"
                )
            return spec.function(a, capture.gradients, capture.hvp, **opts)
        return spec.function(a, capture.gradients, **opts)
    if spec.perturbation == "masked":
        if score_masked is None or input_size is None:
            raise ValueError(
                f"{spec.name} needs the adapter's `score_masked` and the `input_size`"
            )
        return spec.function(
            a, score_masked, input_size=input_size, batch_size=batch_size, progress=progress,
            **opts
        )
    if spec.perturbation == "ablated":
        if score_ablated is None:
            raise ValueError("Ablation-CAM needs the adapter's `score_ablated`")
        return spec.function(
            a, score_ablated, capture.scores, batch_size=batch_size, progress=progress, **opts
        )
    return spec.function(a, **opts)


# set by the pipeline itself, never a method option
_PIPELINE_ARGS = frozenset({"input_size", "batch_size", "progress", "grid", "prefix"})


def check_method_options(method: str, options: Mapping | None) -> dict:
    """``options`` checked against the keyword options of ``method``'s core function (its
    keyword-only parameters, less those the pipeline sets: ``input_size``, ``batch_size``,
    ``progress``); a ``ValueError`` naming the option and listing the method's otherwise. The
    values themselves are checked by the function."""
    spec = method_spec(method)
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"`method_options` must be a dict; got {type(options).__name__}")
    params = inspect.signature(spec.function).parameters.values()
    allowed = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _PIPELINE_ARGS]
    bad = [k for k in options if k not in allowed]
    if bad:
        raise ValueError(
            f"`method_options` {bad} are not options of {spec.name!r} "
            f"({spec.function.__name__}); its options: {allowed or 'none'}"
        )
    return dict(options)


def explain_session(
    session: Session,
    method: str,
    *,
    fuse: str | None = None,
    upsample: str = "bilinear",
    batch_size: int = 64,
    progress: bool | None = None,
    maps_on_device: bool = False,
    eigen_smooth: bool = False,
    method_options: Mapping | None = None,
) -> Explanation:
    """Run the core pipeline on an adapter's session and return the :class:`Explanation`.

    ``fuse`` None is the method's own fusion of layers (:attr:`MethodSpec.fuse`: ``"product"``
    for RefineCAM), else ``"mean"``; a method with its own fusion refuses another.
    ``method_options`` go to the method's core function (:func:`check_method_options`: Grad-CAM++'s
    ``eps``, Eigen-CAM's ``sign``, Score-CAM's ``max_n``, KPCA-CAM's ``kernel``, ...).

    The pipeline runs where the capture's arrays are; the maps and raw maps are copied to the
    host at the end (the session's ``to_host`` when it has one) unless ``maps_on_device``.
    ``eigen_smooth`` replaces the method's channel sum by the first principal component of its
    per-channel terms (:func:`weighted_activations`, then
    :func:`cam_core.methods.eigencam`, sign fixed, no display ReLU), for the methods in
    :data:`EIGEN_SMOOTH_METHODS` (those with ``MethodSpec.terms``).
    """

    spec = method_spec(method)
    fuse = method_fusion(spec.name, fuse)
    _check_choices(fuse=fuse, upsample=upsample)
    opts = check_method_options(spec.name, method_options)
    if eigen_smooth and opts:
        raise ValueError("`eigen_smooth` replaces the method's combination; it takes no "
                         f"`method_options` (got {sorted(opts)})")
    if eigen_smooth and spec.terms is None:
        raise ValueError(
            f"`eigen_smooth` applies to {list(EIGEN_SMOOTH_METHODS)}; got method {spec.name!r}"
        )
    size = as_size(session.input_size, "input_size")
    if spec.all_biases:
        return _explain_biases(session, spec, size, upsample, maps_on_device, opts)
    if spec.attention:
        return _explain_attention(session, spec, size, upsample, maps_on_device, opts)
    if spec.second_order:
        if "hvp" not in inspect.signature(session.capture).parameters:
            raise TypeError(
                f"{spec.name} needs the Hessian-vector product: a session whose `capture` takes "
                f"`hvp=True`; {type(session).__name__}.capture does not"
            )
        captures = session.capture(gradients=True, hvp=True)
    else:
        captures = session.capture(gradients=spec.needs_gradients)
    noisy = noisy_captures(session, SMOOTHGRAD_SAMPLES, SMOOTHGRAD_STD) if spec.noise else None
    raws = []
    for li, cap in enumerate(captures):
        if spec.noise:
            xp = array_namespace(cap.activations)
            samples = xp.stack([c[li].gradients for c in noisy])
            raws.append(spec.function(cap.activations, samples, **opts))
            continue
        if eigen_smooth:
            raws.append(_eigen_smoothed(spec.name, cap))
            continue
        raw = raw_maps(
            spec.name,
            cap,
            score_masked=session.score_masked,
            score_ablated=lambda n, ch, li=li: session.score_ablated(li, n, ch),
            input_size=size,
            batch_size=batch_size,
            progress=progress,
            options=opts,
        )
        raws.append(raw)
    # an eigen-smoothed map is a signed projection, displayed as it is (as Eigen-CAM)
    relu = spec.relu and not eigen_smooth
    maps = display_maps(raws, relu=relu, size=size, upsample=upsample, fuse=fuse)
    if not maps_on_device:
        to_host = getattr(session, "to_host", None) or to_numpy
        maps = to_host(maps)
        raws = [to_numpy(r) for r in raws]
    first = captures[0]
    _warn_constant(maps, spec.name, tuple(c.layer for c in captures))
    return Explanation(
        maps=maps,
        raw=raws[0] if len(raws) == 1 else tuple(raws),
        logits=first.logits,
        targets=first.targets,
        method=spec.name,
        layers=tuple(c.layer for c in captures),
    )


def _explain_biases(session, spec: MethodSpec, size, upsample: str, maps_on_device: bool,
                    opts: dict) -> Explanation:
    """FullGrad's pipeline: the session's :class:`BiasGradients`, the method's raw map at the
    input size, min-max normalised; ``layers`` are the bias layers."""
    t = _session_record(session, "bias_gradients", spec, "every bias layer's gradient")
    raw = spec.function(t.inputs, t.input_gradients, t.gradients, t.biases, **opts)
    return _one_map(session, spec, raw, t, size, upsample, maps_on_device,
                    (f"the input and {len(t.layers)} bias layers",))


def _explain_attention(session, spec: MethodSpec, size, upsample: str, maps_on_device: bool,
                       opts: dict) -> Explanation:
    """LeGrad's pipeline: the session's :class:`AttentionGradients`, the raw map on the patch
    grid, upsampled and min-max normalised; ``layers`` are the blocks."""
    t = _session_record(session, "attention_gradients", spec,
                        "each block's attention probabilities and their gradients")
    raw = spec.function(t.gradients, grid=t.grid, prefix=t.prefix, **opts)
    return _one_map(session, spec, raw, t, size, upsample, maps_on_device, tuple(t.layers))


def _session_record(session, name: str, spec: MethodSpec, what: str):
    """The record of the session's optional method ``name`` (a ``TypeError`` saying what
    ``spec``'s method needs when the session has no such method)."""
    method = getattr(session, name, None)
    if method is None:
        raise TypeError(f"{spec.name} needs {what}: a session with `{name}()`; "
                        f"{type(session).__name__} has none")
    return method()


def _one_map(session, spec: MethodSpec, raw, record, size, upsample: str, maps_on_device: bool,
             shown: tuple) -> Explanation:
    """The end of a pipeline that makes one raw map from what the session recorded (``record``:
    its ``logits``, ``targets`` and ``layers``): display maps, the host copy, the constant-map
    warning (naming ``shown``) and the :class:`Explanation`."""
    maps = display_maps(raw, relu=spec.relu, size=size, upsample=upsample)
    if not maps_on_device:
        maps = (getattr(session, "to_host", None) or to_numpy)(maps)
        raw = to_numpy(raw)
    _warn_constant(maps, spec.name, shown)
    return Explanation(maps=maps, raw=raw, logits=record.logits, targets=record.targets,
                       method=spec.name, layers=tuple(record.layers))


def method_layer(method: str, layer):
    """``layer`` checked for ``method``: FullGrad takes no target layer (it uses every bias
    layer), so one given is a ``ValueError``; LeGrad needs its blocks named; ``layer`` unchanged
    otherwise."""
    spec = method_spec(method)
    if spec.all_biases and layer is not None:
        raise ValueError(
            f"{spec.name} uses the gradient of every bias layer and of the input, not a target "
            f"layer; leave `layer` out (got {layer!r})"
        )
    if spec.attention and layer is None:
        raise ValueError(
            f"{spec.name} needs `layer`: the transformer blocks to read (items of the model's "
            f"nn.Sequential of blocks), e.g. layer=['blocks.10', 'blocks.11']"
        )
    return layer


def method_fusion(method: str, fuse: str | None) -> str:
    """The fusion of layers for ``method``: ``fuse`` (``"mean"`` when None) for most methods;
    the method's own (:attr:`MethodSpec.fuse`) when it has one, which refuses any other."""
    spec = method_spec(method)
    if spec.fuse is None:
        return "mean" if fuse is None else fuse
    if fuse is not None and fuse != spec.fuse:
        raise ValueError(
            f"{spec.name} fuses its layers by {spec.fuse!r} (that is the method); got "
            f"fuse={fuse!r}. Leave `fuse` out, or use the base method "
            f"({spec.function.__name__}) with fuse={fuse!r}"
        )
    return spec.fuse


def _check_choices(**options) -> None:
    """``fuse`` and ``upsample`` checked under their own names before the model runs."""
    allowed = {"fuse": FUSIONS, "upsample": INTERPOLATIONS}
    for name, value in options.items():
        if not isinstance(value, str) or value not in allowed[name]:
            raise ValueError(f"`{name}` must be one of {list(allowed[name])}; got {value!r}")


def _constant_flags(maps) -> np.ndarray:
    """Bool ``(N,)`` NumPy: True where a normalised map has no positive value (is constant).
    Maps of another array library (on a device) are reduced there; only the flags move."""
    if isinstance(maps, np.ndarray):
        return ~np.any(maps.reshape(len(maps), -1) > 0, axis=1)
    xp = array_namespace(maps)
    flags = ~xp.any(xp.reshape(maps, (maps.shape[0], -1)) > 0, axis=1)
    return to_numpy(flags)


def _warn_constant(maps: np.ndarray, method: str, layers: tuple[str, ...]) -> None:
    """One :class:`ConstantMapWarning` naming the images whose maps are constant, if any."""
    flags = _constant_flags(maps)
    bad = np.flatnonzero(flags)
    if len(bad) == 0:
        return
    shown = ", ".join(str(int(i)) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
    warnings.warn(
        f"{len(bad)} of {len(flags)} {method} maps at layer {', '.join(map(repr, layers))} are "
        f"constant (images {shown}): they localise nothing and their boxes cover the whole "
        f"image. No position has positive evidence for the target: the model may reject that "
        f"class for those images (the raw map has no positive value; `Explanation.raw` keeps "
        f"it), or the layer's positions get no signal (e.g. a class-token head explained at the "
        f"last block's output, or a zero head); `Explanation.constant` marks them",
        ConstantMapWarning,
        stacklevel=_outside_stacklevel(),
    )


def _outside_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside cam_core, for a warning issued by our caller."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("cam_core"):
        frame, level = frame.f_back, level + 1
    return level


SMOOTHGRAD_SAMPLES = 4  # torch-cam 0.5's defaults
SMOOTHGRAD_STD = 0.3


def noisy_captures(session, samples: int, std: float, *, seed: int = 0) -> list[list[Capture]]:
    """Captures (with gradients) of the session's batch plus Gaussian noise, one per sample.

    The noise is :func:`cam_core.methods.input_noise` ``(seed, s)`` of one image's shape, drawn
    channels-first and transposed for a channels-last batch, times ``std``, the same for every
    image (so a batch gives each image's own map), added on the inputs' device; the session's
    inputs (its ``x``) are restored afterwards and captured clean again, so its later calls see
    the clean batch. The same noise reaches both frameworks.
    """

    if not hasattr(session, "x"):
        raise TypeError(
            f"Smooth Grad-CAM++ needs a session with its inputs as `x`; "
            f"{type(session).__name__} has none"
        )
    x0 = session.x
    xp = array_namespace(x0) if _array_api(x0) else np
    shape = tuple(x0.shape)
    h, w = as_size(session.input_size, "input_size")
    last = shape[1:3] == (h, w) and shape[2:] != (h, w)  # channels-last (N, H, W, C)
    chw = (shape[3], shape[1], shape[2]) if last else shape[1:]
    out = []
    try:
        for s in range(samples):
            noise = (input_noise(seed, s, chw) * np.float32(std))[None]
            if last:
                noise = np.ascontiguousarray(noise.transpose(0, 2, 3, 1))
            if isinstance(x0, np.ndarray):
                session.x = x0 + noise.astype(x0.dtype)
            elif xp is not np:  # torch, JAX, CuPy: on the inputs' device
                session.x = x0 + xp.asarray(noise, dtype=x0.dtype, device=device_of(x0))
            else:  # a tensor the array API does not cover (TensorFlow): its own conversion
                session.x = x0 + noise
            out.append(session.capture(gradients=True))
    finally:
        session.x = x0
    session.capture(gradients=True)
    return out


def _array_api(x) -> bool:
    return array_api_compat.is_array_api_obj(x)


def _eigen_smoothed(name: str, cap: Capture):
    """``eigen_smooth``: Eigen-CAM of the method's per-channel terms, in the activations' dtype."""
    if name == "cam" and cap.weights is None:
        raw_maps(name, cap)  # raises the message that explains CAM's head
    terms = weighted_activations(
        name, cap.activations, cap.gradients, weights=cap.weights, classes=cap.targets
    )
    xp = array_namespace(cap.activations)
    return xp.astype(m.eigencam(terms), cap.activations.dtype, copy=False)


def session_targets(method: str, targets, **finer):
    """The ``targets`` an adapter's session gets for ``method``.

    For Finer-CAM (``MethodSpec.target == "finer"``) a :class:`cam_core.methods.FinerTarget`
    of the given classes (None: each image's top-1; ``finer`` passes ``gamma`` and
    ``references``); ``targets`` unchanged for every other method.
    """
    spec = method_spec(method)
    if spec.target != "finer":
        return targets

    if callable(targets) and not hasattr(targets, "shape"):
        raise TypeError("Finer-CAM builds its own score from the classes; `targets` must be None, "
                        "an int or a sequence of ints, not a callable")
    return FinerTarget(targets, **finer)


_FRAMEWORK_ROOTS = {
    "torch": "torch",
    "keras": "keras",
    "tf_keras": "keras",
    "tensorflow": "keras",
}


def framework_of(model) -> str | None:
    """``"torch"`` or ``"keras"`` from the model's class (its module's top-level package, for
    the class and its bases), else None. Nothing is imported."""
    for cls in type(model).__mro__:
        root = (getattr(cls, "__module__", "") or "").split(".")[0]
        kind = _FRAMEWORK_ROOTS.get(root)
        if kind is not None and root in sys.modules:
            return kind
    return None


def adapter_for(model):
    """The adapter module of ``model``'s framework (:mod:`cam_core.adapters.torch` or
    :mod:`cam_core.adapters.keras`), importing only that one; ``TypeError`` for anything else."""
    kind = framework_of(model)
    if kind == "torch":
        from cam_core.adapters import torch as adapter
    elif kind == "keras":
        from cam_core.adapters import keras as adapter
    else:
        raise TypeError(
            f"`model` must be a torch.nn.Module or a Keras model; got {type(model).__module__}."
            f"{type(model).__qualname__}"
        )
    return adapter


def explain(
    model,
    inputs,
    *,
    method: str = "gradcam",
    layer=None,
    targets=None,
    aug_smooth: bool = False,
    **options,
) -> Explanation:
    """Explain a batch with a class activation map method, for a PyTorch or a Keras model.

    Parameters
    ----------
    model : torch.nn.Module or keras.Model
        The classifier. It is never modified (training flags are restored, no layer is edited).
    inputs : tensor or ndarray
        The batch exactly as the model takes it: NCHW for torch, the model's own channels-last
        layout for Keras.
    method : str
        One of "cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam",
        "scorecam", "ablationcam", "gradcamelementwise", "eigengradcam", "kpcacam", "fem",
        "randomcam", "finercam" (Grad-CAM of Finer-CAM's contrastive score of ``targets``),
        "sscam", "iscam", "smoothgradcam++", "refinecam", "shapleycam", "fullgrad" (no
        ``layer``: every bias layer), "legrad" (vision transformers: ``layer`` the
        blocks) (:data:`METHODS`; papers in :mod:`cam_core.methods`;
        Guided Grad-CAM is :func:`explain_guided`). Method options (Grad-CAM++'s ``eps``, Score-CAM's
        ``max_n``, KPCA-CAM's ``kernel``, SS-CAM's ``samples``, ...) go in
        ``method_options={...}``, a keyword of ``options`` below.
    layer : str, layer object, or a sequence of them, optional
        The target layer(s); by default the last 4-D output before global pooling. Several layers
        are fused (``fuse="mean"``, ``"max"`` or ``"product"``; RefineCAM's is its product).
    targets : None, int, sequence of int, or callable
        None explains each image's predicted class; an int is used for every image; a sequence
        gives one class per image; a callable maps the logits (a framework tensor) to one score
        per image.
    aug_smooth : bool
        Test-time augmentation (pytorch-grad-cam's ``aug_smooth``): the batch is explained
        flipped horizontally or not, times each intensity factor of
        :data:`AUG_SMOOTH_FACTORS` (six runs); each map is flipped back, the maps are averaged
        and min-max normalised again (``raw`` is the mean of the flipped-back raw maps). The
        classes are those of the plain run (its top-1 when ``targets`` is None). The width axis
        is the inputs' last for torch (NCHW) and the one before last for Keras (channels-last).
    **options
        Passed to the adapter: ``fuse``, ``upsample``, ``batch_size``, ``progress``,
        ``eigen_smooth`` (see :func:`explain_session`) and the adapter's own (e.g. ``reshape``
        for token outputs).

    Returns
    -------
    Explanation
    """
    spec = method_spec(method)
    adapter = adapter_for(model)
    if not isinstance(aug_smooth, bool):
        raise TypeError(f"`aug_smooth` must be a bool; got {type(aug_smooth).__name__}")
    if aug_smooth:
        return _aug_smoothed(adapter, model, inputs, spec, layer, targets, options)
    return adapter.explain(model, inputs, method=spec.name, layer=layer, targets=targets, **options)


def explain_guided(model, inputs, *, method: str = "gradcam", layer=None, targets=None,
                   **options) -> tuple:
    """Guided Grad-CAM for a PyTorch or a Keras model: ``(guided Grad-CAM, explanation)``.

    The explanation is :func:`explain`'s (``method``, ``layer``, ``targets`` and ``options`` as
    there; Grad-CAM by default, the paper's); the guided backpropagation
    (``adapter.guided_backprop``) is of the same classes; their product
    (:func:`cam_core.methods.guided_gradcam`) has the inputs' shape and layout, NumPy.
    """
    e = explain(model, inputs, method=method, layer=layer, targets=targets, **options)
    adapter = adapter_for(model)
    classes = targets if callable(targets) and not hasattr(targets, "shape") else e.targets
    guided = adapter.guided_backprop(model, inputs, targets=classes)
    maps = to_numpy(e.maps)
    first = tuple(guided.shape[2:]) == tuple(maps.shape[1:])
    return m.guided_gradcam(guided, maps, channel_axis=1 if first else 3), e


def _aug_smoothed(adapter, model, inputs, spec, layer, targets, options) -> Explanation:
    """``aug_smooth``: explain flipped and scaled copies, flip the maps back, average."""
    width_axis = adapter.INPUT_WIDTH_AXIS
    x = inputs if array_api_compat.is_array_api_obj(inputs) else to_numpy(inputs)
    xp = array_namespace(x)
    plain = adapter.explain(model, x, method=spec.name, layer=layer, targets=targets, **options)
    if targets is None or (callable(targets) and not hasattr(targets, "shape")):
        classes = targets if callable(targets) else np.argmax(plain.logits, axis=1)
    else:
        classes = targets
    maps, raws = [], []
    for flip in (False, True):
        for factor in AUG_SMOOTH_FACTORS:
            if not flip and factor == 1.0:
                e = plain
            else:
                xa = xp.flip(x, axis=width_axis) if flip else x
                e = adapter.explain(model, xa * factor, method=spec.name, layer=layer,
                                    targets=classes, **options)
            mp, rw = to_numpy(e.maps), e.raw
            rw = rw if isinstance(rw, tuple) else (rw,)
            rw = tuple(to_numpy(r) for r in rw)
            if flip:
                mp, rw = mp[:, :, ::-1], tuple(r[:, :, ::-1] for r in rw)
            maps.append(mp)
            raws.append(rw)
    mean = normalize(np.mean(np.stack(maps), axis=0), relu=False).astype(np.float32)
    raw = tuple(np.mean(np.stack([r[i] for r in raws]), axis=0) for i in range(len(raws[0])))
    return Explanation(
        maps=mean,
        raw=raw[0] if len(raw) == 1 else raw,
        logits=plain.logits,
        targets=plain.targets,
        method=spec.name,
        layers=plain.layers,
    )
