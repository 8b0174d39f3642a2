"""The PyTorch adapter: records what the core needs from a ``torch.nn.Module``.

One call of :func:`explain` (or :func:`capture`) is one :class:`TorchSession`:

- **One forward pass.** The model runs once on the batch with autograd off. A forward hook on each
  target layer stores the layer's output and, when gradients are needed, switches autograd on and
  hands the rest of the network a copy of a fresh leaf tensor. So autograd records only what runs
  *after* the layer (the head), and ``torch.autograd.grad(scores.sum(), layer_outputs)`` gives the
  per-image gradients (images are independent in eval mode) with no full backward pass and no
  parameter gradient. The copy keeps the stored activations the layer's own output even when an
  in-place ``ReLU`` follows the layer.
- **Lifecycle.** Hooks live for one forward pass and are removed in ``finally``. During the session
  every module is in eval mode; each module's ``training`` flag is restored exactly afterwards,
  the global grad mode too. The model's parameters are never touched (no ``requires_grad`` flip).
  The call works inside ``torch.no_grad()`` and ``torch.inference_mode()`` blocks (it leaves
  inference mode locally and copies inference-mode inputs) and under ``torch.autocast`` (arrays
  come out float32).
- **Devices.** The model runs where its weights are; inputs are moved there. On an accelerator
  (``core="auto"``, the default, on CUDA and the like) the layer's activations, gradients and the
  CAM weights stay there as float32 tensors and the core computes on them (methods, upsampling,
  normalisation, Score-CAM's masks, Ablation-CAM's channel indices); only the final maps
  ``(N, H, W)`` float32 cross to the host, or stay on the device with ``maps_on_device=True``.
  On the CPU the layer's tensors become NumPy arrays that share their
  memory (no copy) and the NumPy core, the reference, runs as before; ``core="device"`` hands the
  CPU tensors to the core instead, ``core="numpy"`` copies a GPU's tensors to the host first.
  The logits and the scores are small and always cross to the host.
- **Layers** are given by name (``"layer4"``, ``"features.8"``), by module object, as a list of
  them (one forward, one ``autograd.grad`` for all, maps fused by the core), or found
  automatically (see *Automatic layer* below: the last feature map before global pooling, or a
  transformer's last block; one extra forward pass with hooks on every module, the
  first time a model sees an input shape; the answer is remembered per model, weakly). When that
  module runs several times in one forward pass (a shared activation module), the call found is
  the one explained; a shared module given by name or object is explained at its last call.
  Autograd starts at the explained call: the number of calls is learnt on the first capture (which
  records from the first call) and remembered, and a stale count is detected and redone.
- **Automatic layer.** The later of the last spatial feature map (a 4-D output with the input's
  aspect, read channels-first or channels-last) and, in a token model, the output of the last
  transformer block before the final norm (or that block's first norm when the head reads only
  the class token, so that the patch tokens get a gradient). A 4-D tensor that is not a map of the
  input (attention heads x tokens x head width) is never picked; when nothing qualifies the call
  raises and asks for ``layer=``.
- **Channels-last outputs** ``(N, h, w, K)`` (Swin stages, ConvNeXt blocks, ``nn.Linear`` on 4-D
  tensors) are detected (``layout=None``) or declared (``layout="channels_last"``) and handed to
  the core as ``(N, K, h, w)``; a layout that cannot be told is an error, never a guess.
- **Token outputs** (vision transformers) ``(N, P + T, D)`` become ``(N, D, h, w)``: ``reshape=None``
  infers the grid (``h * w = T``, square for square inputs, the input's aspect otherwise) and
  drops the ``P <= 8`` prefix tokens (class, distillation, register tokens); ``reshape=(h, w)``
  fixes the grid (the first ``P + T - h*w`` tokens are dropped); a callable maps the layer's
  output tensor (and, the same way, its gradient) to ``(N, K, h, w)``.
- **CAM** needs a head made of global average pooling and one linear layer. The adapter finds the
  ``nn.Linear`` with ``in_features == K`` and checks *numerically* on the batch that the logits
  equal it applied to the spatial mean of the layer's output; otherwise ``Capture.weights`` is None
  and the core refuses CAM with a message pointing to Grad-CAM.
- **Perturbation methods.** ``score_masked`` runs the model on the image times each mask.
  ``score_ablated`` re-runs only the part of the model after the layer where it can be cut out:
  an ``nn.Sequential`` chain is sliced, otherwise ``torch.fx`` traces the model with the layer as
  a leaf and keeps the nodes after it, provided they use nothing computed before the layer except
  shapes of the input. The cut is checked on the batch (it must reproduce the logits); otherwise a
  full forward pass replaces the layer's output by the ablated activations. The path taken per
  layer is in :attr:`TorchSession.ablation_paths` (``"sequential"``, ``"fx"`` or ``"forward"``)
  and logged at DEBUG level.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from cam_core.adapters import _layout
from cam_core.adapters.models_torch import gap_classifier  # one builder, re-exported here
from torch import nn

from cam_core.explain import (
    AttentionGradients,
    BiasGradients,
    Capture,
    Explanation,
    explain_session,
    method_layer,
    method_spec,
    resolve_targets,
    session_targets,
)

__all__ = [
    "INPUT_WIDTH_AXIS",
    "DistributedGroup",
    "TorchSession",
    "capture",
    "explain",
    "find_layer",
    "gap_classifier",
    "guided_backprop",
    "MASKED_CHANNELS_LAST_CUDA",
    "PINNED_COPY",
    "inputs_from_nhwc",
    "randomized_copy",
    "rest_target",
]

logger = logging.getLogger(__name__)

#: The width axis of the inputs this adapter takes, (N, C, H, W) (what the core flips for
#: ``aug_smooth``).
INPUT_WIDTH_AXIS = -1

# Relative tolerance of the GAP + linear check (and of the head-only cut), against max |logit|.
_RTOL = {torch.float64: 1e-4, torch.float32: 1e-4}
_RTOL_LOW_PRECISION = 3e-2  # bfloat16 / float16 logits or activations (autocast)
_MAX_PREFIX_TOKENS = _layout.MAX_PREFIX_TOKENS
_ABLATION_MODES = ("auto", "head", "forward")
_CORES = ("auto", "device", "numpy")
# Perturbation methods on an accelerator: items per model call when `batch_size` is None, from
# the free memory (a budget of _ITEM_BUDGET input images' bytes per item, clamped to the range)
_CPU_BATCH_SIZE = 64
_DEVICE_BATCH_RANGE = (16, 256)
_ITEM_BUDGET = 256
# Two switches a user (and the GPU benchmark, which times both settings) may flip:
# Copy the final maps from a GPU into pinned memory (non-blocking, then one stream sync) rather
# than a plain `.cpu()`. Measured on an H200 (benchmarks/results/gpu/report.md, warm calls, the
# pinned block reused by torch's host allocator): ResNet-50 Grad-CAM at batch 256 1.30x the
# forward pass through pinned memory against 2.22x through a pageable copy; batch 32 1.56x vs
# 1.77x. The first call of a size pays the pinned allocation (the cold column). The benchmark
# times the pageable copy beside it.
PINNED_COPY = True
# Score-CAM's masked batches channels-last on CUDA too (cuDNN's tensor-core kernels prefer it);
# off until measured (the GPU benchmark times both).
MASKED_CHANNELS_LAST_CUDA = False

# Per model (weakly): the layer found automatically and how often shared modules run, per input
# shape (C, H, W), so that later calls skip the extra forward pass of the auto-detection and start
# autograd at the right call of a shared module. A stale entry is detected and redone.
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _memo(model: nn.Module) -> dict:
    try:
        return _MEMO.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no memory
        return {}


# --------------------------------------------------------------------------- small helpers


def _check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    return model


def _model_place(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """The device and floating dtype of the model's first parameter (or buffer)."""
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    if t is None:
        return torch.device("cpu"), None
    return t.device, (t.dtype if t.is_floating_point() else None)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _rtol(*tensors: torch.Tensor) -> float:
    return max(_RTOL.get(t.dtype, _RTOL_LOW_PRECISION) for t in tensors)


def _close(pred: torch.Tensor, ref: torch.Tensor, rtol: float) -> bool:
    """``pred`` equals ``ref`` within ``rtol`` times the scale of ``ref`` (max |ref|, at least 1e-6)."""
    if pred.shape != ref.shape:
        return False
    pred, ref = pred.float(), ref.float()
    scale = max(float(ref.abs().max()), 1e-6)
    return bool(torch.isfinite(pred).all()) and float((pred - ref).abs().max()) <= rtol * scale


@contextlib.contextmanager
def _no_autocast(device: torch.device):
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def _module_names(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, mod in model.named_modules():
        names.setdefault(id(mod), name)
    return names


def _layer_items(layer) -> list:
    if isinstance(layer, (list, tuple)):
        if len(layer) == 0:
            raise ValueError("`layer` must name at least one layer; got an empty sequence")
        return list(layer)
    return [layer]


# --------------------------------------------------------------------------- finding layers


@dataclass
class _Call:
    """One module call seen by the auto-detection pass."""

    name: str
    module: nn.Module
    index: int  # the module's call number in the forward pass (0 for its first call)
    shape: tuple[int, ...] | None


def _trace_calls(model: nn.Module, x: torch.Tensor) -> list[_Call]:
    """Run ``model(x)`` once (no grad) with a hook on every module; calls in completion order."""
    calls: list[_Call] = []
    counts: dict[int, int] = {}
    handles = []

    def make_hook(name):
        def hook(mod, args, out):
            i = counts.get(id(mod), 0)
            counts[id(mod)] = i + 1
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            calls.append(_Call(name, mod, i, shape))

        return hook

    try:
        for name, mod in model.named_modules():
            if name:
                handles.append(mod.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def _auto_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module, int | None]:
    memo = _memo(model)
    key = ("auto", tuple(x.shape[1:]))
    if key in memo:
        name, call, ref = memo[key]
        mod = ref()
        if mod is not None and dict(model.named_modules()).get(name) is mod:
            return name, mod, call
    calls = _trace_calls(model, x)
    found = _auto_choice(model, x, calls)
    if found is None:
        four_d = [c for c in calls if c.shape is not None and len(c.shape) == 4]
        seen = (
            f"; the last 4-D output, {four_d[-1].name!r} {four_d[-1].shape}, is not a map of "
            f"the input's aspect (attention tensors and the like are never picked)"
            if four_d else ""
        )
        raise ValueError(
            "could not find a layer automatically: no module of the model outputs a 4-D "
            "(N, K, h, w) feature map or (N, T, D) tokens with more than one position" + seen +
            "; pass `layer=` (and `reshape` for tokens, `layout` for channels-last maps)"
        )
    call = found
    n_calls = sum(1 for c in calls if c.module is call.module)
    index = call.index if n_calls > 1 else None
    memo[key] = (call.name, index, weakref.ref(call.module))
    return call.name, call.module, index


def _has_children(mod: nn.Module) -> bool:
    return next(mod.children(), None) is not None


def _auto_choice(model: nn.Module, x: torch.Tensor, calls: list[_Call]) -> _Call | None:
    """The automatic layer: the last spatial feature map, or the token rule, whichever is later.

    A 4-D output counts as a feature map when its batch axis is N and it has the input's aspect
    read channels-first or channels-last (see ``_layout``); a 4-D tensor with an axis as long
    as a token sequence output before it (attention inside a block) never counts. A model is a
    token model when two or more modules output the same tokens ``(N, P + T, D)`` with a grid
    of more than one position. Its layer is the output of its last block (the last call of the
    outermost module class repeated along the token stream), before the final norm; when the
    patch tokens of that output do not reach the logits (a class-token head), the first output
    inside that block with the same shape (the block's first norm, the layer the ViT Grad-CAM
    literature uses) is taken instead.
    """
    n, size = x.shape[0], (int(x.shape[2]), int(x.shape[3]))
    tok_mods: dict[tuple, set] = {}
    for c in calls:
        s = c.shape
        if s is not None and len(s) == 3 and s[0] == n:
            g = _layout.token_grid(s[1], size)
            if g is not None and g[1][0] * g[1][1] > 1:
                tok_mods.setdefault(s, set()).add(id(c.module))
    token_shapes = {s for s, mods in tok_mods.items() if len(mods) >= 2}
    lengths_seen: set[int] = set()  # token counts output so far
    last_map = None
    for i, c in enumerate(calls):
        s = c.shape
        if s is not None and len(s) == 3 and s in tok_mods:
            lengths_seen.add(s[1])
        if s is None or len(s) != 4 or s[0] != n or lengths_seen & set(s[1:]):
            continue
        if any(_layout.readings(s, size)):
            last_map = i
    block = _last_block(calls, token_shapes)
    if block is None or (last_map is not None and last_map > block):
        return None if last_map is None else calls[last_map]
    chosen = calls[block]
    prefix = _layout.token_grid(chosen.shape[1], size)[0]
    if _has_children(chosen.module) and not _patch_tokens_reach_logits(model, x, chosen, prefix):
        start = max((i for i in range(block) if calls[i].module is chosen.module), default=-1)
        inside = [
            c for c in calls[start + 1 : block]
            if c.shape == chosen.shape and c.name.startswith(chosen.name + ".")
        ]
        if inside:
            logger.debug(
                "auto layer: the patch tokens of %r do not reach the logits; taking %r",
                chosen.name, inside[0].name,
            )
            return inside[0]
    return chosen


def _last_block(calls: list[_Call], token_shapes: set) -> int | None:
    """Index in ``calls`` of the last transformer block's call (see :func:`_auto_choice`)."""
    if not token_shapes:
        return None
    token_calls = [i for i, c in enumerate(calls) if c.shape in token_shapes]
    groups: dict[type, list[int]] = {}
    for i in token_calls:
        mod = calls[i].module
        if _has_children(mod) and not _plain_sequential(mod):
            groups.setdefault(type(mod), []).append(i)
    repeated = [v for v in groups.values() if len(v) >= 2]
    if not repeated:
        return token_calls[-1]
    best = min(repeated, key=lambda v: (calls[v[-1]].name.count("."), -len(v)))
    return best[-1]


def _patch_tokens_reach_logits(model: nn.Module, x: torch.Tensor, call: _Call, prefix: int) -> bool:
    """Whether zeroing the patch tokens of ``call``'s output changes the logits of one image."""
    count = [0]

    def hook(mod, args, out):
        c = count[0]
        count[0] += 1
        if c != call.index or not isinstance(out, torch.Tensor):
            return None
        out = out.clone()
        out[:, prefix:] = 0
        return out

    x1 = x[:1]
    with torch.no_grad():
        ref = model(x1)
        handle = call.module.register_forward_hook(hook)
        try:
            got = model(x1)
        finally:
            handle.remove()
    if not (isinstance(ref, torch.Tensor) and isinstance(got, torch.Tensor)):
        return True
    return not torch.equal(ref, got)


def _by_name(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
        f"; the model's top-level modules are "
        f"{', '.join(repr(n) for n, _ in model.named_children()) or 'none'}"
    )
    raise ValueError(f"`layer` {name!r} is not a module of the model{hint}")


def _resolve_one(model: nn.Module, layer, x: torch.Tensor | None):
    """(name, module, call index or None) of one layer specification."""
    if layer is None:
        if x is None:
            raise ValueError("finding the layer automatically (`layer=None`) needs `inputs`")
        return _auto_layer(model, x)
    if isinstance(layer, str):
        return layer, _by_name(model, layer), None
    if isinstance(layer, nn.Module):
        name = _module_names(model).get(id(layer))
        if name is None:
            raise ValueError(
                f"`layer` must be a submodule of the model; got a {type(layer).__name__} that "
                f"is not part of it"
            )
        return name, layer, None
    raise TypeError(
        f"`layer` must be None, a module name (str), an nn.Module or a list of them; "
        f"got {type(layer).__name__}"
    )


def find_layer(model, layer=None, *, inputs=None) -> tuple[str, nn.Module]:
    """Find a target layer of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str, torch.nn.Module or None
        A dotted module name (``"layer4"``, ``"features.8"``), the module itself, or None to find
        the layer automatically (the last spatial feature map before global pooling, or a
        transformer's last block; see the module docstring) by one forward pass of ``inputs``
        with hooks on every module.
    inputs : tensor or ndarray, shape (N, C, H, W), optional
        Needed when ``layer`` is None.

    Returns
    -------
    (str, torch.nn.Module)
        The layer's name in ``model.named_modules()`` and the module.

    Raises
    ------
    ValueError
        An unknown name (the message lists close names), a module that is not part of the model,
        or no 4-D output to be found.
    """
    model = _check_model(model)
    if layer is None:
        if inputs is None:
            raise ValueError("finding the layer automatically (`layer=None`) needs `inputs`")
        with _Prepared(model, inputs) as prep:
            name, mod, _ = _auto_layer(model, prep.x)
        return name, mod
    name, mod, _ = _resolve_one(model, layer, None)
    return name, mod


# --------------------------------------------------------------------------- the call's state


class _Prepared:
    """Context: eval mode, out of inference mode, inputs on the model's device.

    Restores every module's ``training`` flag and the grad mode on exit; never swallows.
    """

    def __init__(self, model: nn.Module, inputs):
        self.model = model
        self.inputs = inputs

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        try:
            if torch.is_inference_mode_enabled():
                self._stack.enter_context(torch.inference_mode(False))
            grad_mode = torch.is_grad_enabled()
            self._stack.callback(torch.set_grad_enabled, grad_mode)
            flags = [(m, m.training) for m in self.model.modules()]

            def restore():
                for m, flag in flags:
                    if m.training != flag:
                        m.training = flag

            self._stack.callback(restore)
            if any(flag for _, flag in flags):
                self.model.eval()  # through train(False), so that overrides of train() apply
            self.x = self._prepare(self.inputs)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self._stack.close()
        return False

    def _prepare(self, inputs) -> torch.Tensor:
        device, dtype = _model_place(self.model)
        if isinstance(inputs, torch.Tensor):
            x = inputs.detach()
        else:
            try:
                arr = np.asarray(inputs)
                if not arr.flags.writeable:  # torch warns on read-only arrays: copy (one batch)
                    arr = arr.copy()
                x = torch.as_tensor(arr)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(
                    f"`inputs` must be a torch tensor or a numeric array; got "
                    f"{type(inputs).__name__}"
                ) from exc
        if x.ndim != 4:
            raise ValueError(f"`inputs` must have shape (N, C, H, W); got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("`inputs`: the batch is empty; need at least one image")
        if x.is_inference():
            x = x.clone()
        _check_values(x)
        if x.dtype == torch.bool or not (x.is_floating_point() or x.dtype.is_complex):
            x = x.to(dtype or torch.float32)
        elif dtype is not None and x.dtype != dtype:
            x = x.to(dtype)
        return x.to(device)


def _all_finite(x: torch.Tensor) -> bool:
    """One reduction, no mask: NumPy on CPU (~1 ms for 32 x 3 x 224 x 224), ``aminmax``
    elsewhere (min and max are NaN when any value is, +-Inf when one is)."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return bool(np.isfinite(x.detach().numpy()).all())
    low, high = torch.aminmax(x.detach())
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def _check_values(x: torch.Tensor) -> None:
    """Complex inputs are a ``TypeError`` (never cast to real); NaN / Inf a ``ValueError``."""
    if x.dtype.is_complex:
        raise TypeError(f"`inputs` must be real; got dtype {x.dtype}")
    if x.is_floating_point() and not _all_finite(x):
        bad = ~torch.isfinite(x)
        where = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(
            f"`inputs` must be finite; got {float(x[where])} at index {where} "
            f"({int(bad.sum())} non-finite values in all)"
        )


@dataclass
class _Layer:
    """A target layer and what the capture learnt about it."""

    name: str
    module: nn.Module
    call: int | None  # which call of the module is explained; None: the last one
    n_calls: int = 0  # how many times the module ran in the captured forward pass
    guessed: bool = False  # `call` comes from an earlier session's count (checked, redone if stale)
    raw: torch.Tensor | None = None  # the layer's output as the model produced it (on device)
    prefix: int = 0  # token outputs: prefix tokens dropped
    grid: tuple[int, int] | None = None  # token outputs: (h, w)
    channels_last: bool = False  # 4-D outputs: (N, h, w, K), found on the first capture


class TorchSession(_Prepared):
    """One explanation of one batch: the object :func:`cam_core.explain.explain_session` drives.

    Use it as a context manager; the model is in eval mode (and out of inference mode) inside it
    and restored on exit.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : tensor or ndarray, shape (N, C, H, W)
    layer, targets, reshape
        As in :func:`explain`.
    weights : bool
        Look for the GAP + linear head's weights (needed by CAM only).
    layout : {None, "channels_first", "channels_last"}
        The layout of 4-D layer outputs; None detects it (see :func:`explain`).
    ablation : {"auto", "head", "forward"}
        How :meth:`score_ablated` reaches the model: the part after the layer when it can be cut
        out (``"auto"``; ``"head"`` raises when it cannot) or a full forward pass that replaces
        the layer's output (``"forward"``).

    Attributes
    ----------
    input_size : (int, int)
        ``(H, W)`` of the inputs.
    ablation_paths : dict of str to str
        The path :meth:`score_ablated` took per layer name: ``"sequential"``, ``"fx"`` or
        ``"forward"``.
    """

    def __init__(
        self,
        model,
        inputs,
        *,
        layer=None,
        targets=None,
        reshape=None,
        weights: bool = True,
        ablation: str = "auto",
        core: str = "auto",
        layout: str | None = None,
    ):
        super().__init__(_check_model(model), inputs)
        if core not in _CORES:
            raise ValueError(f"`core` must be one of {_CORES}; got {core!r}")
        self._core = core
        self._layout = _layout.check_layout(layout)
        if not (reshape is None or callable(reshape)):
            reshape = _check_grid(reshape)
        if ablation not in _ABLATION_MODES:
            raise ValueError(f"`ablation` must be one of {_ABLATION_MODES}; got {ablation!r}")
        self._layer_spec = layer
        self._targets_spec = targets
        self._reshape = reshape
        self._want_weights = bool(weights)
        self._ablation = ablation
        self._entered = False
        self.ablation_paths: dict[str, str] = {}
        self._heads: dict[int, Callable | None] = {}
        # Score-CAM's masked batches run channels-last on CPU (oneDNN's faster layout: 1.5-2x
        # for EfficientNet-Lite0 on 2 cores) until the model refuses such an input
        self.masked_channels_last: bool | None = None

    # ---- lifecycle

    def __enter__(self):
        super().__enter__()
        try:
            self.input_size = (int(self.x.shape[2]), int(self.x.shape[3]))
            self.on_device = self._core == "device" or (
                self._core == "auto" and self.x.device.type != "cpu"
            )
            self._layers = []
            seen = set()
            for item in _layer_items(self._layer_spec):
                name, mod, call = _resolve_one(self.model, item, self.x)
                if (id(mod), call) in seen:
                    raise ValueError(f"`layer` lists {name!r} twice")
                seen.add((id(mod), call))
                lay = _Layer(name, mod, call)
                if call is None:
                    n = _memo(self.model).get(("calls", id(mod), tuple(self.x.shape[1:])), 1)
                    lay.call, lay.guessed = (n - 1, True) if n > 1 else (None, False)
                self._layers.append(lay)
            self._captured = False
            self._entered = True
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self._entered = False
        for layer in getattr(self, "_layers", ()):
            layer.raw = None
        self._heads.clear()
        return super().__exit__(*exc)

    def _check_state(self, need_capture: bool = False) -> None:
        if not self._entered:
            raise RuntimeError("use the TorchSession inside a `with` block")
        if need_capture and not self._captured:
            raise RuntimeError("call `capture()` before scoring perturbations")

    # ---- capture

    def capture(self, *, gradients: bool, hvp: bool = False) -> list[Capture]:
        """One forward pass (and one ``autograd.grad`` when ``gradients``): one Capture per layer.

        ``hvp`` (with ``gradients``): also the Hessian-vector products ``H A`` of each layer
        (``Capture.hvp``; the first backward pass keeps its graph, a second one per layer).
        """
        self._check_state()
        if hvp and not gradients:
            raise ValueError("`hvp` needs `gradients=True`")
        result = self._forward(gradients, hvp)
        if result is None:  # a remembered call count of a shared module was stale: redo
            for lay in self._layers:
                if lay.guessed:
                    lay.call, lay.guessed = None, False
            result = self._forward(gradients, hvp)
        logits, scores, target_ids, stored, grads, counts, hvps = result
        memo = _memo(self.model)
        for i, layer in enumerate(self._layers):
            layer.n_calls = counts[i]
            if layer.call is None:
                layer.call = counts[i] - 1
            if counts[i] > 1:
                memo[("calls", id(layer.module), tuple(self.x.shape[1:]))] = counts[i]
            layer.raw = stored[i].detach()
        self._logits = logits.detach()
        self._captured = True

        logits_np = _to_numpy(logits)
        scores_np = _to_numpy(scores)
        captures = []
        for i, layer in enumerate(self._layers):
            acts = self._to_maps(layer, stored[i].detach(), set_grid=True)
            g = None if grads is None else self._for_core(self._to_maps(layer, grads[i]))
            hv = None if hvps is None else self._for_core(self._to_maps(layer, hvps[i]))
            w = self._gap_weights(acts, logits) if self._want_weights else None
            captures.append(
                Capture(
                    activations=self._for_core(acts),
                    logits=logits_np,
                    targets=target_ids,
                    scores=scores_np,
                    gradients=g,
                    weights=w,
                    layer=layer.name,
                    hvp=hv,
                )
            )
        return captures

    def _forward(self, gradients: bool, hvp: bool = False):
        """The forward pass with hooks; None when a guessed call index turned out wrong."""
        stored: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        handles = []

        def make_hook(i: int, layer: _Layer):
            def hook(mod, args, out):
                c = counts.get(i, 0)
                counts[i] = c + 1
                if layer.call is not None and c != layer.call:
                    return None
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"layer {layer.name!r} must output a tensor; got {type(out).__name__}"
                    )
                if gradients and not out.requires_grad:
                    # Autograd starts here: only the rest of the network is recorded.
                    torch.set_grad_enabled(True)
                    out = out.detach().requires_grad_()
                stored[i] = out
                return out.clone()

            return hook

        try:
            for i, layer in enumerate(self._layers):
                handles.append(layer.module.register_forward_hook(make_hook(i, layer)))
            torch.set_grad_enabled(False)
            logits = self._check_logits(self.model(self.x))
            if any(
                lay.guessed and counts.get(i, 0) != lay.call + 1
                for i, lay in enumerate(self._layers)
            ):
                return None
            missing = [lay.name for i, lay in enumerate(self._layers) if i not in stored]
            if missing:
                raise ValueError(
                    f"layer {missing[0]!r} did not run during the forward pass; pick a layer "
                    f"that the model calls"
                )
            scores, target_ids = self._scores(logits)
            grads = self._gradients(scores, stored, create_graph=hvp) if gradients else None
            hvps = _hessian_products(grads, [stored[i] for i in range(len(grads))]) if hvp else None
        finally:
            for h in handles:
                h.remove()
            torch.set_grad_enabled(False)
        grads = None if grads is None else [t.detach() for t in grads]
        return logits, scores, target_ids, stored, grads, counts, hvps

    def _check_logits(self, logits) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor):
            raise TypeError(
                f"the model must return a logits tensor (N, C); got {type(logits).__name__}. "
                f"Wrap it in a module that returns the logits"
            )
        n = self.x.shape[0]
        if logits.ndim != 2 or logits.shape[0] != n:
            raise ValueError(
                f"the model must return logits of shape (N, C) with N = {n}; got "
                f"{tuple(logits.shape)}"
            )
        if logits.is_floating_point() and not bool(torch.isfinite(logits).all()):
            bad = torch.nonzero(~torch.isfinite(logits).all(dim=1))[:, 0].tolist()
            raise ValueError(
                f"the model returned non-finite logits (NaN or Inf) for images {bad[:10]}: an "
                f"overflow inside the model; check the scale of `inputs` (and the model)"
            )
        return logits

    def _scores(self, logits: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """The target score of each image and the target classes (-1 for a callable)."""
        n = logits.shape[0]
        spec = self._targets_spec
        if callable(spec) and not isinstance(spec, torch.Tensor):
            scores = self._call_target(logits, n)
            self._target_ids = None
            return scores, np.full(n, -1, dtype=np.int64)
        if isinstance(spec, torch.Tensor):
            spec = spec.detach().cpu().numpy()
        ids = resolve_targets(spec, _to_numpy(logits))
        self._target_ids = ids
        index = torch.as_tensor(ids, device=logits.device)[:, None]
        return logits.gather(1, index)[:, 0], ids

    def _call_target(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        scores = self._targets_spec(logits)
        if not isinstance(scores, torch.Tensor):
            raise TypeError(
                f"a callable `targets` must return a tensor of scores (N,); got "
                f"{type(scores).__name__}"
            )
        if scores.shape != (n,):
            raise ValueError(
                f"a callable `targets` must return one score per image, shape ({n},); got "
                f"{tuple(scores.shape)}"
            )
        return scores

    def _scores_of(self, logits: torch.Tensor, index: int) -> np.ndarray:
        """Scores of a perturbed batch of image ``index``, as float32 NumPy."""
        if self._target_ids is None:
            scores = self._call_target(logits, logits.shape[0])
        else:
            scores = logits[:, int(self._target_ids[index])]
        return _to_numpy(scores)

    def _gradients(self, scores: torch.Tensor, stored: dict[int, torch.Tensor],
                   create_graph: bool = False):
        tensors = [stored[i] for i in range(len(self._layers))]
        if not scores.requires_grad:
            raise ValueError(
                f"layer {self._layers[0].name!r} has no gradient path to the target score: "
                f"the score does not depend on it. Pick a layer that the score depends on (and "
                f"a `targets` callable that keeps the logits' graph)"
            )
        try:
            grads = torch.autograd.grad(scores.sum(), tensors, allow_unused=True,
                                        create_graph=create_graph)
        except RuntimeError as exc:
            names = ", ".join(repr(lay.name) for lay in self._layers)
            raise ValueError(
                f"could not differentiate the target score with respect to layer {names}: "
                f"{exc}"
            ) from exc
        for layer, g in zip(self._layers, grads):
            if g is None:
                raise ValueError(
                    f"layer {layer.name!r} has no gradient path to the target score; pick a "
                    f"layer whose output the logits depend on"
                )
        return grads

    # ---- layouts

    def _to_maps(self, layer: _Layer, t: torch.Tensor, set_grid: bool = False) -> torch.Tensor:
        """The layer's output (or its gradient) as ``(N, K, h, w)``."""
        if callable(self._reshape):
            out = self._reshape(t)
            if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != t.shape[0]:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"`reshape` must map layer {layer.name!r}'s output {tuple(t.shape)} to "
                    f"(N, K, h, w); got {got}"
                )
            return out
        if t.ndim == 4:
            if set_grid:
                layer.channels_last = self._channels_last(layer, tuple(t.shape))
            return t.permute(0, 3, 1, 2) if layer.channels_last else t
        if t.ndim == 3:
            if set_grid:
                layer.prefix, layer.grid = self._token_grid(layer, tuple(t.shape))
            h, w = layer.grid
            tokens = t[:, layer.prefix:, :]
            return tokens.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)
        raise ValueError(
            f"layer {layer.name!r} outputs shape {tuple(t.shape)}; CAM methods need a 4-D "
            f"(N, K, h, w) feature map or 3-D tokens (N, T, D). Pick another layer or pass "
            f"`reshape` (a callable returning (N, K, h, w))"
        )

    def _channels_last(self, layer: _Layer, shape) -> bool:
        """Whether the layer's 4-D output is ``(N, h, w, K)``; see :func:`explain`'s ``layout``."""
        if self._layout is not None:
            return self._layout == "channels_last"
        kind = _output_kind(layer.module, shape)
        if kind is not None:
            return kind == "channels_last"
        cf, cl = _layout.readings(shape, self.input_size)
        if cf != cl:
            return cl
        kind, last_axis_ops = _consumer_layout(self.model, self.x, layer, shape)
        if kind is not None:
            return kind == "channels_last"
        widths = {m.in_features for m in self.model.modules() if isinstance(m, nn.Linear)}
        if (shape[1] in widths) != (shape[3] in widths):
            return shape[3] in widths
        if not cf or not last_axis_ops:
            # neither reading has the input's aspect, or no module of the model works on the
            # last axis of a 4-D tensor (no channels-last code anywhere): the torch convention
            return False
        raise ValueError(
            _layout.layout_message(
                layer.name, shape,
                f"both readings are grids of the input's aspect {self.input_size} and neither "
                f"the module nor the layers after it tell",
            )
        )

    def _token_grid(self, layer: _Layer, shape) -> tuple[int, tuple[int, int]]:
        n_tokens = shape[1]
        if self._reshape is not None:
            h, w = self._reshape
            prefix = n_tokens - h * w
            if prefix < 0:
                raise ValueError(
                    f"`reshape` {(h, w)} needs {h * w} tokens; layer {layer.name!r} outputs "
                    f"{n_tokens} (shape {shape})"
                )
            return prefix, (h, w)
        big_h, big_w = self.input_size
        found = _layout.token_grid(n_tokens, self.input_size)
        if found is not None:
            return found
        raise ValueError(
            f"layer {layer.name!r} outputs {n_tokens} tokens (shape {shape}): no grid with the "
            f"input's aspect {big_h}x{big_w} after dropping up to {_MAX_PREFIX_TOKENS} prefix "
            f"tokens; pass `reshape=(h, w)` or a callable"
        )

    # ---- CAM weights

    def _gap_weights(self, acts: torch.Tensor, logits: torch.Tensor) -> np.ndarray | None:
        n, k = acts.shape[:2]
        c = logits.shape[1]
        rtol = _rtol(acts, logits)
        with torch.no_grad(), _no_autocast(acts.device):
            pooled = acts.float().mean(dim=(2, 3))
            for mod in self.model.modules():
                if isinstance(mod, nn.Linear) and mod.in_features == k and mod.out_features == c:
                    wt = mod.weight.float()
                    pred = pooled.to(wt.device) @ wt.T
                    if mod.bias is not None:
                        pred = pred + mod.bias.float()
                    if _close(pred, logits.to(pred.device), rtol):
                        return self._for_core(wt)
        return None

    # ---- FullGrad

    def bias_gradients(self) -> BiasGradients:
        """One forward and one backward pass with the input under autograd: the gradient of
        the target score with respect to the input and to the output of every ``Conv2d`` and
        ``BatchNorm2d`` that has a bias (each call of a module is its own term), with the
        biases (a batch norm's folded from its running statistics)."""
        self._check_state()
        found = [(name, mod) for name, mod in self.model.named_modules() if _bias_of(mod) is not None]
        if not found:
            raise ValueError(
                "FullGrad needs layers with a bias (Conv2d, BatchNorm2d); the model has none"
            )
        biases = {id(mod): _bias_of(mod) for _, mod in found}
        outs: list[torch.Tensor] = []
        names: list[str] = []
        mods: list[nn.Module] = []
        handles = []

        def make_hook(name):
            def hook(mod, args, out):
                if isinstance(out, torch.Tensor) and out.ndim == 4 and out.requires_grad:
                    outs.append(out)
                    names.append(name)
                    mods.append(mod)
                    return out.clone()  # an in-place activation after it must not change `out`
                return None

            return hook

        x = self.x.detach().requires_grad_(True)
        try:
            for name, mod in found:
                handles.append(mod.register_forward_hook(make_hook(name)))
            with torch.enable_grad():
                logits = self._check_logits(self.model(x))
                scores, target_ids = self._scores(logits)
                if not scores.requires_grad:
                    raise ValueError("the target score does not depend on the input")
                grads = torch.autograd.grad(scores.sum(), [x, *outs], allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        gx, layer_grads = grads[0], grads[1:]
        terms = [(n, g, biases[id(mod)]) for n, g, mod in zip(names, layer_grads, mods)
                 if g is not None]
        return BiasGradients(
            inputs=self._for_core(x),
            input_gradients=self._for_core(gx),
            gradients=tuple(self._for_core(g) for _, g, _ in terms),
            biases=tuple(self._for_core(b) for _, _, b in terms),
            layers=tuple(n for n, _, _ in terms),
            logits=_to_numpy(logits),
            targets=target_ids,
            scores=_to_numpy(scores),
        )

    # ---- LeGrad

    def attention_gradients(self) -> AttentionGradients:
        """LeGrad's gradients: for each block of ``layer``, the model run with the blocks after it
        (its later siblings in the same ``nn.Sequential`` or ``nn.ModuleList``) passing their
        input through, so that the model's own norm, pooling and head read the block's output
        (its intermediate prediction); the gradient of the target class's score there with
        respect to the block's attention probabilities ``(N, heads, T, T)``. The probabilities
        are an ``nn.MultiheadAttention``'s weights (asked for per head) or the output of the
        block's last module that emits them (row-stochastic ``(N, heads, T, T)``, e.g. timm's
        ``attn_drop`` when ``fused_attn`` is off). The classes are the whole model's (its top-1
        when ``targets`` is None)."""
        self._check_state()
        n = self.x.shape[0]
        with torch.no_grad():
            logits = self._check_logits(self.model(self.x))
        scores, target_ids = self._scores(logits)
        grads, names = [], []
        grid = None
        for lay in self._layers:
            later = _later_blocks(self.model, lay.name)
            source = _attention_source(self.model, lay, self.x)
            probs: list[torch.Tensor] = []
            handles = source.install(probs)
            handles += [m.register_forward_hook(_pass_input) for m in later]
            try:
                with torch.enable_grad():
                    x = self.x.detach().requires_grad_(True)
                    out = self._check_logits(self.model(x))
                    if self._target_ids is None:
                        s_l = self._call_target(out, n)
                    else:
                        index = torch.as_tensor(self._target_ids, device=out.device)[:, None]
                        s_l = out.gather(1, index)[:, 0]
                    if not probs:
                        raise ValueError(f"block {lay.name!r}: its attention did not run")
                    (g,) = torch.autograd.grad(s_l.sum(), [probs[-1]], allow_unused=True)
            finally:
                for h in handles:
                    h.remove()
            if g is None:
                raise ValueError(f"block {lay.name!r}: the head's score does not depend on its "
                                 f"attention")
            keys = int(g.shape[-1])
            found = self._token_grid(lay, (n, keys, 0))
            if grid is not None and found != grid:
                raise ValueError(f"blocks attend over different tokens: {grid} and {found}")
            grid = found
            grads.append(self._for_core(g))
            names.append(lay.name)
        prefix, hw = grid
        return AttentionGradients(gradients=tuple(grads), grid=hw, prefix=prefix,
                                  layers=tuple(names), logits=_to_numpy(logits),
                                  targets=target_ids, scores=_to_numpy(scores))

    # ---- guided backpropagation

    def guided_gradients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Guided backpropagation (Springenberg et al., ICLR 2015 workshop): the gradient of the
        target score with respect to the input, where every ``nn.ReLU`` and ``nn.ReLU6`` passes
        back only positive gradients, and only where its input was active. Returns
        ``(gradients (N, C, H, W) float32, target classes, logits)``, NumPy.

        Only modules are reached: a ``torch.nn.functional.relu`` call inside ``forward`` keeps
        its plain gradient, and a model with no ReLU module is a ``ValueError``."""
        self._check_state()
        relus = [mod for mod in self.model.modules() if isinstance(mod, (nn.ReLU, nn.ReLU6))]
        if not relus:
            raise ValueError(
                "guided backpropagation changes the backward pass of the model's nn.ReLU / "
                "nn.ReLU6 modules; this model has none (functional relu calls cannot be reached)"
            )

        def hook(mod, args, out):
            return _GuidedReLU.apply(out, 6.0 if isinstance(mod, nn.ReLU6) else None)

        handles = [mod.register_forward_hook(hook) for mod in relus]
        x = self.x.detach().requires_grad_(True)
        try:
            with torch.enable_grad():
                logits = self._check_logits(self.model(x))
                scores, target_ids = self._scores(logits)
                (gx,) = torch.autograd.grad(scores.sum(), [x])
        finally:
            for h in handles:
                h.remove()
        return _to_numpy(gx), target_ids, _to_numpy(logits)

    # ---- where the core computes

    def _for_core(self, t: torch.Tensor):
        """A layer-sized tensor as the core gets it: float32 on the device, or NumPy."""
        return t.detach().float() if self.on_device else _to_numpy(t)

    def to_host(self, maps) -> np.ndarray:
        """The final maps on the host (through pinned memory from CUDA; see ``PINNED_COPY``)."""
        if not isinstance(maps, torch.Tensor):
            return np.asarray(maps)
        maps = maps.detach()
        if maps.device.type != "cuda" or not PINNED_COPY:
            return _to_numpy(maps)
        host = torch.empty(maps.shape, dtype=maps.dtype, pin_memory=True)
        host.copy_(maps, non_blocking=True)
        torch.cuda.current_stream(maps.device).synchronize()
        return host.numpy()

    def default_batch_size(self) -> int:
        """Items per model call of the perturbation methods when the caller gives none.

        64 on the CPU (as before); on CUDA, from the free memory: a budget of
        ``_ITEM_BUDGET`` input images' bytes per item, clamped to ``_DEVICE_BATCH_RANGE``
        (ResNet-50 at 224 x 224 on a GPU with tens of GiB free: 256).
        """
        if self.x.device.type != "cuda":
            return _CPU_BATCH_SIZE
        free, _ = torch.cuda.mem_get_info(self.x.device)
        per_item = _ITEM_BUDGET * self.x[0].numel() * self.x.element_size()
        low, high = _DEVICE_BATCH_RANGE
        return int(min(high, max(low, free // max(per_item, 1))))

    # ---- perturbations

    def score_masked(self, index: int, masks: np.ndarray) -> np.ndarray:
        """Target score of image ``index`` multiplied by each mask ``(B, H, W)``: ``(B,)`` float32."""
        self._check_state(need_capture=True)
        if not isinstance(masks, torch.Tensor):
            masks = np.asarray(masks)
        m = torch.as_tensor(masks, device=self.x.device, dtype=self.x.dtype)
        if m.ndim != 3 or tuple(m.shape[1:]) != self.input_size:
            raise ValueError(
                f"`masks` must have shape (B, {self.input_size[0]}, {self.input_size[1]}); got "
                f"{tuple(m.shape)}"
            )
        with torch.no_grad():
            batch = self.x[index : index + 1] * m[:, None]
            logits = self._check_batch_logits(self._masked_forward(batch), len(m))
            return self._scores_of(logits, index)

    def _masked_forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The model on masked inputs: channels-last on CPU, the plain layout otherwise or once
        the model fails on it (e.g. a ``.view()`` of a 4-D feature map); the model itself is
        never converted."""
        if self.masked_channels_last is None:
            self.masked_channels_last = batch.device.type == "cpu" or (
                batch.device.type == "cuda" and MASKED_CHANNELS_LAST_CUDA)
        if self.masked_channels_last:
            try:
                return self.model(batch.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                self.masked_channels_last = False  # a real error raises again just below
        return self.model(batch)

    def score_ablated(self, layer: int, index: int, channels: np.ndarray) -> np.ndarray:
        """Target score of image ``index`` with channel ``channels[b]`` of the layer zeroed: ``(B,)``."""
        self._check_state(need_capture=True)
        lay = self._layers[layer]
        if callable(self._reshape):
            raise ValueError(
                "Ablation-CAM needs to zero channels of the layer's own output; with a callable "
                "`reshape` the channels cannot be mapped back. Pass reshape=None or (h, w)"
            )
        if not isinstance(channels, torch.Tensor):
            channels = np.asarray(channels, dtype=np.int64)
        ch = torch.as_tensor(channels, dtype=torch.int64, device=lay.raw.device)
        b = len(ch)
        raw = lay.raw[index : index + 1]
        batch = raw.repeat(b, *([1] * (raw.ndim - 1)))
        rows = torch.arange(b, device=raw.device)
        if raw.ndim == 4 and lay.channels_last:
            batch[rows, :, :, ch] = 0
        elif raw.ndim == 4:
            batch[rows, ch] = 0
        else:  # tokens (N, P + T, D): zero the channel in the grid tokens
            grid = torch.arange(lay.prefix, raw.shape[1], device=raw.device)
            batch[rows[:, None], grid[None], ch[:, None]] = 0
        head = self._head(layer)
        with torch.no_grad():
            if head is not None:
                logits = head(batch, self.x[index : index + 1].expand(b, *self.x.shape[1:]))
            else:
                logits = self._replaced_forward(lay, batch, index)
            return self._scores_of(self._check_batch_logits(logits, b), index)

    def _check_batch_logits(self, logits, b: int) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != b:
            got = (
                tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            )
            raise ValueError(f"the model must return logits of shape ({b}, C); got {got}")
        return logits

    def _replaced_forward(self, lay: _Layer, batch: torch.Tensor, index: int) -> torch.Tensor:
        count = [0]

        def hook(mod, args, out):
            c = count[0]
            count[0] += 1
            return batch if c == lay.call else None

        handle = lay.module.register_forward_hook(hook)
        try:
            x = self.x[index : index + 1].repeat(len(batch), 1, 1, 1)
            return self.model(x)
        finally:
            handle.remove()

    def _head(self, i: int):
        """A callable ``(activations, inputs) -> logits`` running only the model after layer ``i``."""
        if i in self._heads:
            return self._heads[i]
        lay = self._layers[i]
        head, path, why = None, "forward", "ablation='forward'"
        if self._ablation != "forward":
            head, path, why = _cut_head(self.model, lay)
            if head is not None:
                with torch.no_grad():  # on a copy: an in-place op after the layer must not
                    got = head(lay.raw.clone(), self.x)  # change the stored activations
                ok = isinstance(got, torch.Tensor) and _close(
                    got, self._logits, _rtol(got, self._logits)
                )
                if not ok:
                    head, path, why = None, "forward", "the cut model does not reproduce the logits"
            if head is None and self._ablation == "head":
                raise ValueError(
                    f"cannot run only the part of the model after layer {lay.name!r} ({why}); "
                    f"use ablation='auto' or 'forward'"
                )
        self._heads[i] = head
        self.ablation_paths[lay.name] = path
        logger.debug("Ablation-CAM on layer %r: %s path (%s)", lay.name, path, why)
        return head


# --------------------------------------------------------------------------- 4-D layouts

# Modules whose 4-D output (or input) is channels-first by definition.
_CHANNELS_FIRST_KINDS = (
    nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d,
    nn.PixelShuffle, nn.Upsample,
)


_CHANNELS_FIRST_NAMES = frozenset(k.__name__ for k in _CHANNELS_FIRST_KINDS)


def _pass_input(mod, args, out):
    """A forward hook that makes a block the identity (LeGrad's bypass of later blocks)."""
    return args[0]


def _later_blocks(model: nn.Module, name: str) -> list[nn.Module]:
    """The siblings after block ``name`` in its ``nn.Sequential`` / ``nn.ModuleList``."""
    parent_name, _, child = name.rpartition(".")
    parent = _by_name(model, parent_name) if parent_name else model
    if not isinstance(parent, (nn.Sequential, nn.ModuleList)):
        raise ValueError(
            f"LeGrad reads each block's intermediate prediction by passing the later blocks "
            f"through: block {name!r} must be an item of an nn.Sequential or nn.ModuleList; its "
            f"parent is {type(parent).__name__}"
        )
    names = [k for k, _ in parent.named_children()]
    return [getattr(parent, k) if not k.isdigit() else parent[int(k)]
            for k in names[names.index(child) + 1:]]


class _AttentionSource:
    """Where a block's attention probabilities come from, and the hooks that record them."""

    def __init__(self, module: nn.Module, kind: str):
        self.module, self.kind = module, kind

    def install(self, store: list) -> list:
        if self.kind == "mha":
            def post(mod, args, kwargs, out):
                new, probs = _mha_recomputed(mod, args, kwargs, out)
                store.append(probs)
                return (new, *out[1:]) if isinstance(out, tuple) else new

            return [self.module.register_forward_hook(post, with_kwargs=True)]

        def hook(mod, args, out):
            store.append(out)

        return [self.module.register_forward_hook(hook)]


def _mha_recomputed(mod: nn.MultiheadAttention, args, kwargs, out):
    """An ``nn.MultiheadAttention``'s self-attention recomputed in plain operations, so that its
    probabilities ``(N, heads, T, T)`` are a tensor the output depends on (the weights the module
    returns are a copy off the graph): ``(output, probabilities)``, the output checked against
    the module's own. Refused: masks, added key/value biases or zero attention, separate key or
    value sizes, active dropout, cross-attention."""
    names = ("query", "key", "value")
    q_in, k_in, v_in = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names))
    masks = [kwargs.get(k) for k in ("attn_mask", "key_padding_mask")] + list(args[3:4]) + list(
        args[5:6])
    if not (q_in is k_in is v_in) or any(mk is not None for mk in masks) or not mod.batch_first \
            or mod.in_proj_weight is None or mod.bias_k is not None or mod.add_zero_attn \
            or (mod.training and mod.dropout > 0) or kwargs.get("is_causal"):
        raise ValueError(
            "LeGrad reads nn.MultiheadAttention as batch-first self-attention without masks, "
            "added key/value biases, zero attention or active dropout"
        )
    n, t, d = q_in.shape
    heads = mod.num_heads
    qkv = nn.functional.linear(q_in, mod.in_proj_weight, mod.in_proj_bias)
    q, k, v = (z.reshape(n, t, heads, d // heads).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
    probs = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, dim=-1)
    new = mod.out_proj((probs @ v).transpose(1, 2).reshape(n, t, d))
    ref = out[0] if isinstance(out, tuple) else out
    if not _close(new.detach(), ref.detach(), _rtol(ref)):
        raise ValueError("LeGrad's recomputation of an nn.MultiheadAttention differs from its "
                         "output; this attention is not one it can read")
    return new, probs


def _attention_source(model: nn.Module, lay, x: torch.Tensor) -> _AttentionSource:
    """The block's ``nn.MultiheadAttention``, else its last module whose output is row-stochastic
    ``(N, heads, T, T)`` (found by one forward pass with hooks on the block's modules)."""
    mhas = [m for m in lay.module.modules() if isinstance(m, nn.MultiheadAttention)]
    if len(mhas) == 1:
        if not mhas[0].batch_first:
            raise ValueError(f"block {lay.name!r}: LeGrad needs a batch-first nn.MultiheadAttention")
        return _AttentionSource(mhas[0], "mha")
    if len(mhas) > 1:
        raise ValueError(f"block {lay.name!r} holds {len(mhas)} nn.MultiheadAttention modules; "
                         f"give LeGrad blocks with one")
    found: list[nn.Module] = []

    def make(mod):
        def hook(m, args, out):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] == out.shape[-2] \
                    and out.is_floating_point() and bool((out >= 0).all()) \
                    and bool(torch.allclose(out.sum(-1), torch.ones((), dtype=out.dtype),
                                            atol=1e-3)):
                found.append(m)
        return hook

    handles = [m.register_forward_hook(make(m)) for m in lay.module.modules() if m is not lay.module]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not found:
        raise ValueError(
            f"block {lay.name!r}: no module outputs its attention probabilities (N, heads, T, T); "
            f"a fused attention (torch's scaled_dot_product_attention, timm's default) computes "
            f"them inside one call (timm: set `attn.fused_attn = False` on the blocks)"
        )
    return _AttentionSource(found[-1], "output")


class _GuidedReLU(torch.autograd.Function):
    """Identity on a ReLU's output; backward passes ``g`` where the unit was active (output > 0,
    and below ``upper`` for ReLU6) and ``g > 0``: guided backpropagation's rule."""

    @staticmethod
    def forward(ctx, out, upper):
        active = out > 0
        if upper is not None:
            active = active & (out < upper)
        ctx.save_for_backward(active)
        return out.clone()

    @staticmethod
    def backward(ctx, g):
        (active,) = ctx.saved_tensors
        return g * (active & (g > 0)), None


def _bias_of(mod: nn.Module) -> torch.Tensor | None:
    """The per-channel bias a ``Conv2d`` or ``BatchNorm2d`` adds (FullGrad's ``b``), else None;
    a batch norm's is folded: ``beta - running_mean * gamma / sqrt(running_var + eps)``."""
    if isinstance(mod, nn.Conv2d):
        return None if mod.bias is None else mod.bias.detach()
    if isinstance(mod, nn.BatchNorm2d):
        if mod.running_mean is None or mod.running_var is None:
            raise ValueError(
                f"FullGrad folds each batch norm's running statistics into its bias; "
                f"{type(mod).__name__} without running statistics normalises by the batch's "
                f"own, which has no fixed bias"
            )
        gamma = torch.ones_like(mod.running_var) if mod.weight is None else mod.weight.detach()
        beta = torch.zeros_like(mod.running_mean) if mod.bias is None else mod.bias.detach()
        return beta - mod.running_mean * gamma / torch.sqrt(mod.running_var + mod.eps)
    return None


def _hessian_products(grads, tensors) -> list[torch.Tensor]:
    """``H A`` per layer: the gradient of ``<g, A>`` (``A`` held fixed) with respect to ``A``,
    from ``grads`` built with ``create_graph=True``; zeros where ``g`` does not depend on ``A``
    (a path that is linear, or piecewise linear, from the layer to the score)."""
    out = []
    for g, a in zip(grads, tensors):
        hv = None
        if g.requires_grad:
            (hv,) = torch.autograd.grad(g, a, grad_outputs=a.detach(), retain_graph=True,
                                        allow_unused=True)
        out.append(torch.zeros_like(a).detach() if hv is None else hv.detach())
    return out


def _kind_name(mod: nn.Module) -> str:
    """The module's class name; a TorchScript module's original one (``Conv2d``, ``Sequential``)."""
    if isinstance(mod, torch.jit.ScriptModule):
        return str(getattr(mod, "original_name", type(mod).__name__))
    return type(mod).__name__


def _sequence_of(mod: nn.Module) -> list | None:
    """The children of a plain (or scripted) ``nn.Sequential`` in order; None for other modules."""
    if _plain_sequential(mod) or (
        isinstance(mod, torch.jit.ScriptModule) and _kind_name(mod) == "Sequential"
    ):
        return list(mod.children())
    return None


def _last_axis_kind(mod: nn.Module, shape) -> bool:
    """True for a module that works on the last axis of a 4-D tensor (channels-last evidence)."""
    name = _kind_name(mod)
    if isinstance(mod, nn.Linear) or (isinstance(mod, torch.jit.ScriptModule) and name == "Linear"):
        return True
    plain_norm = (
        isinstance(mod, nn.LayerNorm) and type(mod).forward is nn.LayerNorm.forward
    ) or (isinstance(mod, torch.jit.ScriptModule) and name == "LayerNorm")
    shape_of = getattr(mod, "normalized_shape", None)
    return plain_norm and shape_of is not None and tuple(shape_of) == (shape[3],)


def _kind(mod: nn.Module, shape, end: int) -> str | None:
    """The layout fixed by ``mod``'s kind; through sequences, their module at ``end`` (0 or -1)."""
    seq = _sequence_of(mod)
    while seq:
        mod = seq[end]
        seq = _sequence_of(mod)
    if isinstance(mod, _CHANNELS_FIRST_KINDS) or (
        isinstance(mod, torch.jit.ScriptModule) and _kind_name(mod) in _CHANNELS_FIRST_NAMES
    ):
        return "channels_first"
    if _last_axis_kind(mod, shape):
        return "channels_last"
    return None


def _output_kind(mod: nn.Module, shape) -> str | None:
    """The layout of ``mod``'s 4-D output when its kind fixes it (a sequence: its last module)."""
    return _kind(mod, shape, -1)


def _input_kind(mod: nn.Module, shape) -> str | None:
    """The layout ``mod`` expects of its 4-D input when its kind fixes it."""
    return _kind(mod, shape, 0)


def _consumer_layout(model: nn.Module, x: torch.Tensor, layer: _Layer, shape):
    """(layout, last-axis ops): the layout implied by the modules that take the layer's output
    (through shape-keeping modules such as activations), None when they do not tell or
    disagree; and whether any module of the model works on the last axis of a 4-D tensor
    (``nn.Linear``, ``nn.LayerNorm``), i.e. whether the model has channels-last code at all.
    Found by one forward pass with hooks on every module, remembered per model."""
    memo = _memo(model)
    key = ("layout", id(layer.module), layer.call, tuple(x.shape[1:]))
    if key in memo:
        return memo[key]
    watched: list[torch.Tensor] = []  # strong references: ids stay unique during the pass
    votes: set[str] = set()
    count = [0]
    last_axis = [False]

    def hook(mod, args, out):
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and first.ndim == 4:
            last_axis[0] = last_axis[0] or _last_axis_kind(mod, tuple(first.shape))
        if mod is layer.module:
            c = count[0]
            count[0] += 1
            if (layer.call is None or c == layer.call) and isinstance(out, torch.Tensor):
                watched.append(out)
            return None
        if not any(isinstance(a, torch.Tensor) and any(a is w for w in watched) for a in args):
            return None
        kind = _input_kind(mod, shape)
        if kind is not None:
            votes.add(kind)
        elif (
            isinstance(out, torch.Tensor)
            and tuple(out.shape[1:]) == tuple(shape[1:])
            and not _has_children(mod)
        ):
            watched.append(out)  # a shape-keeping module (activation, dropout): follow it
        return None

    handles = []
    try:
        for name, mod in model.named_modules():
            if name:
                handles.append(mod.register_forward_hook(hook))
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    result = (votes.pop() if len(votes) == 1 else None, last_axis[0])
    memo[key] = result
    return result


# --------------------------------------------------------------------------- cutting the head


def _plain_sequential(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Sequential) and type(mod).forward is nn.Sequential.forward


def _sequential_head(model: nn.Module, name: str):
    """The modules after ``name`` when every container on its path is a plain nn.Sequential."""
    parts = name.split(".")
    chain = [model]
    for p in parts[:-1]:
        chain.append(getattr(chain[-1], p))
    if not all(_plain_sequential(c) for c in chain):
        return None
    tail: list[nn.Module] = []
    for container, child in reversed(list(zip(chain, parts))):
        keys = list(container._modules)
        tail.extend(container._modules[k] for k in keys[keys.index(child) + 1 :])

    def head(a, x):
        for m in tail:
            a = m(a)
        return a

    return head


# Node ops that only read shapes: allowed to be recomputed from the inputs after the cut.
_SHAPE_METHODS = {"size", "dim"}
_SHAPE_FUNCTIONS = {getattr, operator.getitem, len}


def _shape_only(node) -> bool:
    """True when ``node`` (computed before the layer) depends on the inputs only through shapes."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op in ("placeholder", "get_attr"):
            continue
        if n.op == "call_method" and n.target in _SHAPE_METHODS:
            continue
        if n.op == "call_function" and n.target in _SHAPE_FUNCTIONS:
            if n.target is getattr and n.args[1] != "shape":
                return False
            stack.extend(m for m in n.all_input_nodes)
            continue
        return False
    return True


def _fx_head(model: nn.Module, lay: _Layer):
    import torch.fx as fx

    target = lay.module

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return m is target or super().is_leaf_module(m, qualname)

    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
    except Exception as exc:  # untraceable Python control flow and the like
        return None, f"torch.fx could not trace the model: {type(exc).__name__}: {exc}"
    nodes = list(graph.nodes)
    hits = [
        n for n in nodes
        if n.op == "call_module" and tracer.root.get_submodule(n.target) is target
    ]
    if len(hits) != lay.n_calls:
        return None, (
            f"the traced graph calls the layer {len(hits)} times, the forward pass "
            f"{lay.n_calls} times"
        )
    cut = nodes.index(hits[lay.call])
    before = set(nodes[:cut])
    placeholders = [n for n in nodes if n.op == "placeholder"]
    for n in nodes[cut + 1 :]:
        for m in n.all_input_nodes:
            if m in before and not _shape_only(m):
                return None, f"node {n.name!r} after the layer uses {m.name!r} computed before it"
    if len(placeholders) != 1:
        return None, "the model's forward takes more than one input"
    new = fx.Graph()
    env = {hits[lay.call]: new.placeholder("activations"), placeholders[0]: new.placeholder("inputs")}

    def copy(n):
        if n not in env:
            for m in n.all_input_nodes:
                copy(m)
            env[n] = new.node_copy(n, lambda m: env[m])
        return env[n]

    for n in nodes[cut + 1 :]:
        copy(n)
    gm = fx.GraphModule(tracer.root, new)
    return gm, "torch.fx cut"


def _cut_head(model: nn.Module, lay: _Layer):
    """(head or None, path name, reason) for the part of ``model`` after ``lay``."""
    head = _sequential_head(model, lay.name) if lay.name and lay.n_calls == 1 else None
    if head is not None:
        return head, "sequential", "nn.Sequential slice"
    gm, why = _fx_head(model, lay)
    if gm is None:
        return None, "forward", why
    return gm, "fx", why


# --------------------------------------------------------------------------- public entry points


def _check_grid(reshape) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in reshape)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"`reshape` must be None, an (h, w) pair or a callable; got {reshape!r}"
        ) from exc
    if h < 1 or w < 1:
        raise ValueError(f"`reshape` must be a positive (h, w) grid; got {reshape!r}")
    return h, w


def explain(
    model,
    inputs,
    *,
    method: str = "gradcam",
    layer=None,
    targets=None,
    fuse: str | None = None,
    upsample: str = "bilinear",
    batch_size: int | None = None,
    progress: bool | None = None,
    reshape=None,
    core: str = "auto",
    maps_on_device: bool = False,
    layout: str | None = None,
    eigen_smooth: bool = False,
    method_options: dict | None = None,
) -> Explanation:
    """Explain a batch of a PyTorch classifier with a class activation map method.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits ``(N, C)``. Never modified; run in eval mode during the call.
    inputs : tensor or ndarray, shape (N, C, H, W)
        The batch as the model takes it; moved to the model's device.
    method : str
        One of :data:`cam_core.explain.METHODS`.
    layer : str, nn.Module, a list of them, or None
        The target layer(s); None finds the last spatial feature map before global pooling, or
        a transformer's last block (one extra forward pass the first time per model and input
        shape; see the module docstring). Several layers are captured in one pass and fused.
    targets : None, int, sequence of int, or callable
        None: each image's predicted class; int: that class for every image; sequence: one class
        per image (any other length is a ``ValueError``); callable: maps the logits tensor
        ``(N, C)`` to scores ``(N,)`` (the explanation's targets are then -1).
    fuse : {"mean", "max", "product"} or None
        How several layers' maps are fused; None: the method's own (RefineCAM multiplies
        them), else ``"mean"``.
    upsample : {"bilinear", "bicubic", "nearest"}
        Interpolation of the maps to the input size.
    batch_size : int or None
        Masked or ablated items per model call (Score-CAM, Ablation-CAM). None: 64 on the
        CPU; on CUDA, sized to the free memory (from 16 to 256; see
        :meth:`TorchSession.default_batch_size`).
    progress : bool or None
        tqdm progress bar of the perturbation methods (None: on a terminal, for long runs).
    reshape : None, (int, int) or callable
        Token outputs: see the module docstring.
    core : {"auto", "device", "numpy"}
        Where the core computes: ``"auto"`` on the model's device when it is not the CPU, in
        NumPy on the CPU (the reference); ``"device"`` on the tensors wherever they are (torch
        CPU tensors included); ``"numpy"`` on host copies. The maps agree to float rounding.
    maps_on_device : bool
        Keep ``maps`` and ``raw`` as torch tensors where the core computed them (no copy to the
        host); :meth:`~cam_core.explain.Explanation.boxes`, the metrics and the sweep accept
        them.
    layout : {None, "channels_first", "channels_last"}
        The layout of 4-D layer outputs (``"NCHW"`` and ``"NHWC"`` are accepted too). None
        detects it: the module's kind (convolutions, 2-D norms and pooling are channels-first;
        ``nn.Linear`` and ``nn.LayerNorm`` over the last axis are channels-last), else the one
        reading whose grid has the input's aspect, else the modules that take the output, else
        a linear layer whose ``in_features`` matches one reading's channels; a layer that stays
        ambiguous is a ``ValueError`` asking for ``layout``.
    eigen_smooth : bool
        The first principal component of the method's per-channel terms instead of their sum
        (see :func:`cam_core.explain.explain_session`).
    method_options : dict, optional
        Keyword options of the method's core function (:mod:`cam_core.methods`), e.g.
        ``{"eps": 1e-6}`` for Grad-CAM++, ``{"max_n": 64}`` for Faster Score-CAM,
        ``{"kernel": "rbf"}`` for KPCA-CAM; an unknown option is a ``ValueError`` listing the
        method's own.

    Returns
    -------
    cam_core.explain.Explanation
        ``maps`` ``(N, H, W)`` float32 in [0, 1] at the input size.
    """
    spec = method_spec(method)
    with TorchSession(
        model, inputs, layer=method_layer(spec.name, layer),
        targets=session_targets(spec.name, targets), reshape=reshape,
        weights=spec.needs_weights, core=core, layout=layout,
    ) as session:
        return explain_session(
            session,
            spec.name,
            fuse=fuse,
            upsample=upsample,
            batch_size=session.default_batch_size() if batch_size is None else batch_size,
            progress=progress,
            maps_on_device=bool(maps_on_device),
            eigen_smooth=bool(eigen_smooth),
            method_options=method_options,
        )


def capture(
    model, inputs, *, layer=None, targets=None, gradients: bool = True, reshape=None,
    core: str = "numpy",
    layout: str | None = None,
    hvp: bool = False,
) -> list[Capture]:
    """Record activations, gradients, logits and the CAM weights of one batch.

    Parameters are as in :func:`explain`; ``gradients=False`` skips the backward step;
    ``hvp=True`` adds the Hessian-vector products ``H A`` (ShapleyCAM's; ``Capture.hvp``).
    ``core="numpy"`` (the default here) gives NumPy arrays; ``"device"`` or ``"auto"`` leave
    the layer-sized arrays as float32 tensors on the model's device (see :func:`explain`).

    Returns
    -------
    list of cam_core.explain.Capture
        One per layer, in the order given; arrays are float32, channels-first.
    """
    with TorchSession(
        model, inputs, layer=layer, targets=targets, reshape=reshape, core=core, layout=layout
    ) as session:
        return session.capture(gradients=bool(gradients), hvp=bool(hvp))


def rest_target(classes=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """ShapleyCAM's ReST score as a ``targets`` callable: ``2 z_c - logsumexp(z)``, the logit of
    class ``c`` plus its log-softmax (Cai, arXiv:2501.06261, 2025).

    ``classes``: None (each image's top-1), an int, or one int per image. Each image's score is
    its own; pytorch-grad-cam's ``ClassifierOutputReST`` subtracts the batch's *mean*
    cross-entropy instead, which is the same for a batch of one.
    """

    def rest(logits: torch.Tensor) -> torch.Tensor:
        if classes is None:
            ids = logits.argmax(dim=1)
        else:
            ids = torch.as_tensor(resolve_targets(classes, np.zeros(tuple(logits.shape))),
                                  device=logits.device)
        z = logits.gather(1, ids[:, None])[:, 0]
        return 2 * z - torch.logsumexp(logits, dim=1)

    return rest


def guided_backprop(model, inputs, *, targets=None) -> np.ndarray:
    """Guided backpropagation of the target scores to the inputs: ``(N, C, H, W)`` float32
    NumPy (see :meth:`TorchSession.guided_gradients`); ``targets`` as in :func:`explain`.
    :func:`cam_core.explain.explain_guided` multiplies it by a CAM."""
    with TorchSession(model, inputs, targets=targets, weights=False) as session:
        return session.guided_gradients()[0]


def randomized_copy(model, layers, /, *, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with the parameters of ``layers`` re-initialised.

    For the model-parameter randomisation check (Adebayo et al., "Sanity Checks for Saliency
    Maps", NeurIPS 2018): explain the copy and compare its maps with the model's
    (:func:`cam_core.faithfulness.rank_correlation`). Weights of two or more dimensions are drawn
    He-normal (``N(0, 2 / fan_in)``), 1-D ``bias`` parameters become 0 and other 1-D parameters
    (normalisation scales) 1; buffers (running statistics) are kept. Draws come from NumPy's
    ``default_rng([seed, i])`` per parameter ``i``. The model itself is not touched.

    Parameters
    ----------
    model : torch.nn.Module
    layers : str or sequence of str
        Module names (``"fc"``, ``"layer4"``); every parameter under them is re-initialised.
    seed : int

    Returns
    -------
    torch.nn.Module
    """
    import copy

    names = [layers] if isinstance(layers, str) else list(layers)
    clone = copy.deepcopy(_check_model(model))
    i = 0
    with torch.no_grad():
        for name in names:
            for pname, p in _by_name(clone, name).named_parameters():
                rng = np.random.default_rng([int(seed), i])
                i += 1
                if p.ndim >= 2:
                    fan_in = int(np.prod(p.shape[1:]))
                    new = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=tuple(p.shape))
                else:
                    new = np.zeros(p.shape) if pname.endswith("bias") else np.ones(p.shape)
                p.copy_(torch.as_tensor(new, dtype=p.dtype, device=p.device))
    return clone


def inputs_from_nhwc(x_nhwc: np.ndarray) -> torch.Tensor:
    """A preprocessed float32 NHWC batch as the NCHW tensor a torch model takes (on the CPU;
    :func:`explain` moves it to the model's device)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x_nhwc).transpose(0, 3, 1, 2)))


class DistributedGroup:
    """All-gather over the default ``torch.distributed`` process group (what
    :func:`cam_core.evaluate.evaluate` reduces its accumulator states over with
    ``distributed=True``)."""

    def __init__(self):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("`distributed=True` needs an initialised torch.distributed process "
                             "group (launch with torchrun and call init_process_group)")
        self.dist = dist

    def get_rank(self) -> int:
        return self.dist.get_rank()

    def get_world_size(self) -> int:
        return self.dist.get_world_size()

    def gather(self, obj) -> list:
        out = [None] * self.get_world_size()
        self.dist.all_gather_object(out, obj)
        return out
