"""Check that a PyTorch model and its Keras twin give the same logits, gradients, maps and boxes.

:func:`compare` runs the same batch through both adapters (:mod:`cam_core.adapters.torch` and
:mod:`cam_core.adapters.keras`) and measures how far apart everything is, from the logits to the
boxes. It is meant for any pair, e.g. a model ported by hand or with
:func:`cam_core.adapters.transfer.torch_to_keras`, not only the mirrored models of this package.

Conventions:

- **Inputs.** One NCHW batch; the Keras model gets the same values transposed to NHWC (Keras
  models here are channels-last). Both see float32.
- **Targets.** Both frameworks explain the same class for each image: with ``targets=None``, the
  torch model's top-1 class (so a top-1 disagreement does not show up as a map difference).
- **Relative differences** are ``max |torch - keras| / max |torch|`` over the whole array.
- **Boxes** are those of :meth:`cam_core.explain.Explanation.boxes` at ``threshold`` (the largest
  component): an image counts as identical when both frameworks give exactly the same box(es);
  for the others the IoU of the two boxes is reported (0 when one side has none).
- The torch model is put in eval mode for the call (every module's flag is restored after);
  Keras models are called with ``training=False`` by their adapter.

One capture (activations, gradients, logits) per batch and framework feeds every method that
needs nothing else; Score-CAM and Ablation-CAM go back to the models through the adapters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cam_core._progress import progress_bar
from cam_core._tables import md_table, sci
from cam_core._validate import as_float_array
from cam_core.boxes import best_iou
from cam_core.explain import METHODS, explain_session, method_spec, session_targets

__all__ = ["EquivalenceReport", "MethodAgreement", "compare"]

# every method that explains a CNN's layer (LeGrad reads a transformer's attention)
ALL_METHODS: tuple[str, ...] = tuple(m for m, spec in METHODS.items() if not spec.attention)


@dataclass(frozen=True)
class MethodAgreement:
    """How far one method's maps and boxes are apart between the two frameworks.

    Attributes
    ----------
    method : str
    max_abs_map : float
        ``max |torch - keras|`` over every normalised map (values in [0, 1]).
    identical_boxes : float
        Share of images whose boxes are exactly the same, in [0, 1].
    differing : tuple of int
        The images whose boxes differ.
    ious : tuple of float
        The IoU of the two boxes of each image in ``differing`` (same order).
    """

    method: str
    max_abs_map: float
    identical_boxes: float
    differing: tuple[int, ...] = ()
    ious: tuple[float, ...] = ()

    @property
    def min_iou(self) -> float | None:
        """The lowest IoU among the images whose boxes differ; None when none differ."""
        return min(self.ious) if self.ious else None


@dataclass(frozen=True)
class EquivalenceReport:
    """The result of :func:`compare`. Differences are maxima over the whole batch.

    Attributes
    ----------
    n_images : int
    layer_torch, layer_keras : str
        The layers explained.
    threshold : float
        The fraction of each map's maximum at which boxes were drawn.
    logits_max_abs, logits_max_rel : float
    activations_max_abs, activations_max_rel : float
    gradients_max_abs, gradients_max_rel : float
        NaN when no method needed gradients.
    top1_agreement : float
        Share of images with the same top-1 class in both frameworks.
    top1_differing : tuple of int
    methods : tuple of MethodAgreement
    """

    n_images: int
    layer_torch: str
    layer_keras: str
    threshold: float
    logits_max_abs: float
    logits_max_rel: float
    activations_max_abs: float
    activations_max_rel: float
    gradients_max_abs: float
    gradients_max_rel: float
    top1_agreement: float
    top1_differing: tuple[int, ...] = ()
    methods: tuple[MethodAgreement, ...] = field(default=())

    def method(self, name: str) -> MethodAgreement:
        """The :class:`MethodAgreement` of ``name`` (any spelling :func:`cam_core.explain` takes)."""
        key = method_spec(name).name
        for m in self.methods:
            if m.method == key:
                return m
        raise ValueError(f"`name` must be one of the compared methods {[m.method for m in self.methods]}; got {name!r}")

    def to_markdown(self) -> str:
        """The report as Markdown: the tensors, the top-1 agreement, then one row per method."""
        lines = [
            f"Torch layer `{self.layer_torch}` vs Keras layer `{self.layer_keras}`, "
            f"{self.n_images} image(s); boxes at {self.threshold:g} of each map's maximum.",
            "",
            md_table(["quantity", "max abs diff", "max rel diff"], [
                [name, sci(getattr(self, f"{name}_max_abs")), sci(getattr(self, f"{name}_max_rel"))]
                for name in ("logits", "activations", "gradients")]),
            "",
            f"Top-1 class agrees for {100 * self.top1_agreement:.2f}% of the images"
            + (f" (differs for images {_list(self.top1_differing)})." if self.top1_differing else "."),
        ]
        if self.methods:
            lines += ["", md_table(
                ["method", "max abs diff of maps", "identical boxes", "differing images",
                 "min IoU of those"],
                [[m.method, sci(m.max_abs_map), f"{100 * m.identical_boxes:.2f}%",
                  _list(m.differing) or "-", "-" if m.min_iou is None else f"{m.min_iou:.3f}"]
                 for m in self.methods])]
        return "\n".join(lines) + "\n"


def _list(items: Sequence[int], most: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:most])
    return shown + (f" (+{len(items) - most} more)" if len(items) > most else "")


class _Fixed:
    """A session whose capture is already taken: every method of one batch shares it."""

    def __init__(self, session, captures):
        self._session = session
        self._captures = captures
        self.input_size = session.input_size

    def capture(self, *, gradients: bool):
        return self._captures

    def score_masked(self, index, masks):
        return self._session.score_masked(index, masks)

    def score_ablated(self, layer, index, channels):
        return self._session.score_ablated(layer, index, channels)


def _run_side(session_cls, model, x, layer, targets, methods, options):
    """Capture once, then every method, on one framework: (Capture, {method: Explanation})."""
    with session_cls(model, x, layer=layer, targets=targets) as session:
        captures = session.capture(gradients=True)
        fixed = _Fixed(session, captures)
        out = {m: explain_session(fixed, m, **options) for m in methods if not _own_target(m)}
    for m in methods:  # their own session (see _own_target)
        if _own_target(m):
            with session_cls(model, x, layer=layer, targets=session_targets(m, targets)) as s:
                out[m] = explain_session(s, m, **options)
    return captures[0], {m: out[m] for m in methods}


def _own_target(method: str) -> bool:
    """A method that needs its own session: its own score (Finer-CAM), noisy captures, a second
    backward pass (ShapleyCAM) or every bias layer's gradient (FullGrad)."""
    spec = method_spec(method)
    return spec.target is not None or spec.noise or spec.second_order or spec.all_biases


class _Max:
    """Running max |a - b| and max |a|, for absolute and relative differences over batches."""

    def __init__(self):
        self.diff = 0.0
        self.ref = 0.0
        self.seen = False

    def add(self, a, b):
        if a is None or b is None:
            return
        self.seen = True
        self.diff = max(self.diff, float(np.max(np.abs(a - b), initial=0.0)))
        self.ref = max(self.ref, float(np.max(np.abs(a), initial=0.0)))

    def values(self) -> tuple[float, float]:
        if not self.seen:
            return float("nan"), float("nan")
        return self.diff, (self.diff / self.ref if self.ref > 0 else (0.0 if self.diff == 0 else float("inf")))


def _methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    names = tuple(dict.fromkeys(method_spec(m).name for m in methods))
    if not names:
        raise ValueError("`methods` must name at least one method; got an empty sequence")
    return names


@contextlib.contextmanager
def _eval_mode(model):
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def compare(
    torch_model,
    keras_model,
    inputs_nchw,
    /,
    *,
    layer_torch=None,
    layer_keras=None,
    methods: Sequence[str] | str = ALL_METHODS,
    threshold: float = 0.2,
    targets=None,
    batch_size: int = 32,
    score_batch_size: int = 64,
    upsample: str = "bilinear",
    progress: bool | None = None,
    on_batch: Callable[[int, dict, dict], None] | None = None,
) -> EquivalenceReport:
    """Compare a torch model and its Keras twin on the same images, from logits to boxes.

    Parameters
    ----------
    torch_model : torch.nn.Module
    keras_model : keras.Model
        Channels-last; takes the inputs transposed to NHWC.
    inputs_nchw : ndarray or torch tensor, shape (N, C, H, W)
        The images as the torch model takes them (used as float32).
    layer_torch, layer_keras : str or layer, optional
        The layers explained; ``layer_keras`` defaults to ``layer_torch`` when that is a name
        (mirrored models share names; leading underscores of each component dropped, as
        :func:`cam_core.adapters.transfer.keras_name` does), else both default to each adapter's
        automatic choice.
    methods : str or sequence of str
        Default: all nine methods of :data:`cam_core.explain.METHODS`.
    threshold : float
        Boxes are drawn at this fraction of each map's maximum (the CAM paper's 0.2).
    targets : None, int or sequence of int
        Classes explained, the same in both frameworks; None: the torch model's top-1 class.
    batch_size : int
        Images per step (the batch is processed in chunks to keep memory flat).
    score_batch_size : int
        Masked or ablated items per model call (Score-CAM, Ablation-CAM).
    upsample : str
        Interpolation of the maps to the input size.
    progress : bool or None
        A tqdm bar over the chunks (None: on a terminal, when there is more than one chunk).
    on_batch : callable, optional
        Called after each chunk as ``on_batch(start, torch_explanations, keras_explanations)``
        (two dicts method -> :class:`cam_core.explain.Explanation`), e.g. to feed a metric.

    Returns
    -------
    EquivalenceReport
    """
    import torch
    from cam_core.adapters.keras import KerasSession
    from cam_core.adapters.torch import TorchSession

    if not isinstance(torch_model, torch.nn.Module):
        raise TypeError(f"`torch_model` must be a torch.nn.Module; got {type(torch_model).__name__}")
    if isinstance(inputs_nchw, torch.Tensor):
        inputs_nchw = inputs_nchw.detach().cpu().numpy()
    x = as_float_array(inputs_nchw, "inputs_nchw", shape=("N", "C", "H", "W")).astype(np.float32, copy=False)
    names = _methods(methods)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"`threshold` must be a number in [0, 1]; got {threshold!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}")
    if callable(targets):
        raise TypeError("`targets` must be None, an int or a sequence of ints; a callable score "
                        "cannot be shared between two frameworks")
    if layer_keras is None and isinstance(layer_torch, str):
        from cam_core.adapters.transfer import keras_name

        layer_keras = keras_name(layer_torch)
    n = len(x)
    if targets is not None and not isinstance(targets, (int, np.integer)):
        targets = np.asarray(targets)
        if targets.ndim != 1 or len(targets) != n:
            raise ValueError(f"`targets` must have one entry per image ({n}); got shape {targets.shape}")
    options = {"upsample": upsample, "batch_size": score_batch_size, "progress": False}
    tally = _Tally(names, float(threshold))
    starts = progress_bar(range(0, n, int(batch_size)), progress=progress, auto_min=2,
                          desc="compare", unit="batch")
    with _eval_mode(torch_model):
        for start in starts:
            xb = x[start : start + int(batch_size)]
            tb = _chunk_targets(targets, start, torch_model, xb)
            cap_t, ex_t = _run_side(TorchSession, torch_model, xb, layer_torch, tb, names, options)
            cap_k, ex_k = _run_side(
                KerasSession, keras_model, np.ascontiguousarray(xb.transpose(0, 2, 3, 1)),
                layer_keras, tb, names, options,
            )
            tally.add(start, cap_t, cap_k, ex_t, ex_k)
            if on_batch is not None:
                on_batch(start, ex_t, ex_k)
    return tally.report(n)


class _Tally:
    """The differences between the two frameworks, batch by batch, and the report they make."""

    def __init__(self, names, threshold: float):
        self.names, self.threshold = names, threshold
        self.logits, self.acts, self.grads = _Max(), _Max(), _Max()
        self.maps = {m: _Max() for m in names}
        self.same_boxes = {m: 0 for m in names}
        self.differ = {m: ([], []) for m in names}
        self.top1_differ: list[int] = []
        self.layers = ("", "")

    def add(self, start: int, cap_t, cap_k, ex_t: dict, ex_k: dict) -> None:
        self.layers = (cap_t.layer, cap_k.layer)
        self.logits.add(cap_t.logits, cap_k.logits)
        self.acts.add(cap_t.activations, cap_k.activations)
        self.grads.add(cap_t.gradients, cap_k.gradients)
        top_t, top_k = cap_t.logits.argmax(1), cap_k.logits.argmax(1)
        self.top1_differ += [start + int(i) for i in np.flatnonzero(top_t != top_k)]
        for m in self.names:
            self.maps[m].add(ex_t[m].maps, ex_k[m].maps)
            pairs = zip(ex_t[m].boxes(self.threshold), ex_k[m].boxes(self.threshold))
            for i, (bt, bk) in enumerate(pairs):
                if bt.shape == bk.shape and np.array_equal(bt, bk):
                    self.same_boxes[m] += 1
                else:
                    self.differ[m][0].append(start + i)
                    self.differ[m][1].append(best_iou(bt, bk))

    def report(self, n: int) -> EquivalenceReport:
        agreements = tuple(
            MethodAgreement(method=m, max_abs_map=self.maps[m].values()[0],
                            identical_boxes=self.same_boxes[m] / n,
                            differing=tuple(self.differ[m][0]), ious=tuple(self.differ[m][1]))
            for m in self.names
        )
        return EquivalenceReport(
            n_images=n,
            layer_torch=self.layers[0],
            layer_keras=self.layers[1],
            threshold=self.threshold,
            logits_max_abs=self.logits.values()[0],
            logits_max_rel=self.logits.values()[1],
            activations_max_abs=self.acts.values()[0],
            activations_max_rel=self.acts.values()[1],
            gradients_max_abs=self.grads.values()[0],
            gradients_max_rel=self.grads.values()[1],
            top1_agreement=1.0 - len(self.top1_differ) / n,
            top1_differing=tuple(self.top1_differ),
            methods=agreements,
        )


def _chunk_targets(targets, start, torch_model, xb):
    """One class per image of the chunk; None becomes the torch model's top-1 class."""
    if targets is None:
        import torch

        with torch.no_grad():
            logits = torch_model(torch.tensor(xb))
        return np.asarray(logits.argmax(1).cpu().numpy(), dtype=np.int64)
    if isinstance(targets, (int, np.integer)):
        return int(targets)
    return np.asarray(targets[start : start + len(xb)])
