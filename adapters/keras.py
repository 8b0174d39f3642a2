"""The Keras 3 adapter: records what the core needs from a Keras model, on any Keras backend.

One call of :func:`explain` (or :func:`capture`) is one :class:`KerasSession`:

- **The model's own graph, run by the adapter.** A functional model (``keras.Model(inputs,
  outputs)``, ``keras.Sequential`` once built, ``keras.applications`` models) is a graph of layer
  calls. The adapter reads that graph once per model (remembered weakly) and runs the layers itself
  in the graph's order, with ``training=False``; nested functional models (a backbone used as one
  layer) are opened up, so a layer inside them is reached by its path, e.g.
  ``"resnet50/conv5_block3_out"``. Nothing is added to, removed from or rebuilt in the user's
  model: no layer is called symbolically, no weight or flag is touched.
- **Body and head.** The layer calls split into the *body* (everything that does not depend on a
  target layer's output) and the *head* (everything that does). One forward pass runs the body
  with no gradient recording, then the head under the backend's autograd, watching only the
  target layers' outputs: ``tf.GradientTape`` on TensorFlow, ``torch.autograd.grad`` on the torch
  backend, ``jax.vjp`` on JAX. Values computed before the layer and used after it (skip
  connections crossing the layer) are constants of the head, which is exact, so the split always
  applies. With several layers, a later layer's gradient is its own and an earlier layer's
  gradient is the total one (through the later layer too). The backend is fixed when Keras is
  imported; the adapter asks ``keras.backend.backend()``.
- **Compiled on TensorFlow.** The forward pass, the gradient pass and the head run eagerly the
  first time and as ``tf.function``\\ s from the second time on (traced once per model, layer set
  and input shape, remembered with the model's graph), so a one-off call pays no tracing.
  Callable targets run eagerly (the callable need not be traceable). Other backends run eagerly.
- **Logits** are always pre-softmax: when the layer producing the model's output is a ``Dense``
  with an activation, the adapter computes ``input @ kernel + bias`` itself; when it is an
  ``Activation``/``Softmax`` layer, its input is taken. The model must return one ``(N, C)``
  tensor.
- **Layouts.** Inputs are the model's own layout (NHWC for channels-last models). Layer outputs
  ``(N, h, w, K)`` are handed to the core as ``(N, K, h, w)``; channels-first models (their conv
  layers say ``data_format="channels_first"``) are handed over as they are. Per layer, its own
  ``data_format`` decides, else the one reading whose grid has the input's aspect (a ``Permute``
  to channels-first inside a channels-last model), else the model's; ``layout=`` overrides.
- **Inputs** must be finite and non-empty: checked before any (compiled) call, so a NaN never
  turns into zero maps on a traced call.
- **Automatic layer:** the last 4-D output whose grid has the input's aspect; a model whose
  token outputs (``(N, P + T, D)`` from two or more layers) come after its last 4-D map is a
  transformer, and the call asks for ``layer=`` rather than explain the patch embedding.
- **CAM** needs global average pooling + one ``Dense``: the ``Dense`` producing the logits must
  take ``K`` inputs, and the logits must equal it applied to the spatial mean of the layer's
  output on the batch (relative tolerance 1e-4 of max |logit|); otherwise ``Capture.weights`` is
  None and the core refuses CAM with a message pointing to Grad-CAM.
- **Perturbation methods.** ``score_masked`` runs the model on ``x[n] * mask`` for each mask;
  ``score_ablated`` runs only the head on the layer's output of image ``n`` with one channel
  zeroed per batch item (the head's other inputs are that image's stored values), so Ablation-CAM
  never reruns the body.
- **Not supported:** subclassed models whose ``call`` is Python code (there is no graph to read;
  build the model functionally, or explain a functional model made of its parts, e.g.
  ``keras.Model(backbone.input, head(backbone.output))``), models with several inputs or outputs.
"""

from __future__ import annotations

import contextlib
import difflib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
from cam_core.adapters import _layout
from cam_core.adapters.models_keras import gap_classifier  # one builder, re-exported here

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
    "KerasSession",
    "capture",
    "explain",
    "find_layer",
    "gap_classifier",
    "guided_backprop",
    "inputs_from_nhwc",
    "layers_under_tape",
    "randomized_copy",
    "rest_target",
]

#: The width axis of the inputs this adapter takes, (N, H, W, C) (what the core flips for
#: ``aug_smooth``).
INPUT_WIDTH_AXIS = -2

_BACKEND = keras.backend.backend()
_RTOL = 1e-4  # GAP + Dense check, relative to max |logit|

if _BACKEND == "tensorflow":
    import tensorflow as tf
elif _BACKEND == "torch":
    import torch
elif _BACKEND == "jax":
    import jax
    import jax.numpy as jnp

try:  # the class of functional models (keras.Model(inputs, outputs), applications)
    from keras.src.models.functional import Functional as _Functional
except ImportError:  # pragma: no cover - a Keras without the private module
    _Functional = None

# Per model (weakly): its graph and the compiled functions per layer set.
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- the model's graph


@dataclass
class _Step:
    """One layer call: ``outs = op(*node.arguments filled from fill)``."""

    op: object
    node: object
    fill: dict  # id(KerasTensor) -> value id
    outs: list
    path: str
    shape: tuple | None


@dataclass
class _Graph:
    """A functional model's layer calls, nested functional models opened up, in running order."""

    input: int = 0
    output: int = -1
    steps: list = field(default_factory=list)
    # path -> list of (value id, layer object), one per call, in running order
    names: dict = field(default_factory=dict)
    producer: dict = field(default_factory=dict)  # value id -> step index
    channels_first: bool = False
    dtype: str = "float32"
    n_values: int = 1
    plans: dict = field(default_factory=dict)
    compiled: dict = field(default_factory=dict)

    def new(self) -> int:
        self.n_values += 1
        return self.n_values - 1


def _graph_model(model):
    """The functional model whose graph ``model`` runs, or None when it has none."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if _Functional is not None and isinstance(model, _Functional):
        if type(model).call is _Functional.call:
            return model
    return None


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__module__}.{type(model).__qualname__}")
    fn = _graph_model(model)
    if fn is None:
        if isinstance(model, keras.Sequential):
            raise ValueError(
                f"the Sequential model {model.name!r} is not built; give it an input shape "
                f"(keras.Input(shape) as its first layer) or call it once on a batch"
            )
        raise TypeError(
            f"`model` {model.name!r} ({type(model).__qualname__}) is a subclassed model: its "
            f"`call` is Python code, so there is no layer graph to capture a layer from. Build it "
            f"functionally (keras.Model(inputs, outputs)) or explain a functional model made of "
            f"its parts, e.g. keras.Model(backbone.input, head(backbone.output))"
        )
    if len(fn.inputs) != 1 or len(fn.outputs) != 1:
        raise ValueError(
            f"`model` must have one input and one output (the logits); got "
            f"{len(fn.inputs)} inputs and {len(fn.outputs)} outputs"
        )
    return fn


def _inline(fn, in_ids: list, prefix: str, g: _Graph) -> list:
    """Append ``fn``'s layer calls to ``g`` (reading ``in_ids``); return its output value ids."""
    env = {id(kt): v for kt, v in zip(fn.inputs, in_ids)}
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            op = node.operation
            if not op or node.is_input:
                continue
            if any(id(x) not in env for x in node.input_tensors):
                continue
            path = prefix + getattr(op, "name", type(op).__name__)
            inner = _graph_model(op) if isinstance(op, keras.Model) else None
            args = node.arguments
            if (
                inner is not None
                and len(inner.inputs) == 1
                and len(args.keras_tensors) == 1
                and len(args.args) == 1
                and args.args[0] is args.keras_tensors[0]
            ):  # called on one tensor (keyword options such as mask=None aside)
                outs = _inline(inner, [env[id(args.keras_tensors[0])]], path + "/", g)
            else:
                outs = [g.new() for _ in node.outputs]
                shape = tuple(node.outputs[0].shape) if len(node.outputs) == 1 else None
                g.steps.append(
                    _Step(op, node, {id(kt): env[id(kt)] for kt in args.keras_tensors}, outs, path, shape)
                )
                for v in outs:
                    g.producer[v] = len(g.steps) - 1
            for kt, v in zip(node.outputs, outs):
                env[id(kt)] = v
            if len(outs) == 1:
                g.names.setdefault(path, []).append((outs[0], op))
    return [env[id(kt)] for kt in fn.outputs]


def _graph(model) -> _Graph:
    fn = _check_model(model)
    memo = _GRAPHS.get(model)
    if memo is not None and memo[0]() is fn:
        return memo[1]
    g = _Graph(dtype=str(getattr(fn.inputs[0], "dtype", None) or "float32"))
    (g.output,) = _inline(fn, [g.input], "", g)
    fmt = keras.config.image_data_format()
    for s in g.steps:
        f = getattr(s.op, "data_format", None)
        if f in ("channels_first", "channels_last"):
            fmt = f
            break
    g.channels_first = fmt == "channels_first"
    _GRAPHS[model] = (weakref.ref(fn), g)  # weakly: the value must not keep the model (key) alive
    return g


# --------------------------------------------------------------------------- layers


def _close_names(g: _Graph, name: str) -> str:
    pool = sorted(set(g.names) | {p.rsplit("/", 1)[-1] for p in g.names})
    close = difflib.get_close_matches(name, pool, n=6, cutoff=0.5)
    if not close:
        close = [p for p in pool if name.lower() in p.lower()][:6]
    return ", ".join(repr(c) for c in close) if close else "none"


def _resolve(g: _Graph, layer, model) -> tuple[str, int, object]:
    """(path, value id, layer object) of one layer given by name, path or object."""
    if isinstance(layer, str):
        if layer in g.names:
            v, op = g.names[layer][-1]
            return layer, v, op
        hits = {p: e for p, e in g.names.items() if p.rsplit("/", 1)[-1] == layer}
        ops = {id(e[-1][1]) for e in hits.values()}
        if len(ops) > 1:
            raise ValueError(
                f"`layer` {layer!r} names several layers: {', '.join(repr(p) for p in sorted(hits))}; "
                f"give the path"
            )
        if hits:
            path = sorted(hits)[-1]
            v, op = hits[path][-1]
            return path, v, op
        raise ValueError(
            f"`layer` {layer!r} is not a layer of model {model.name!r}; close names: "
            f"{_close_names(g, layer)}"
        )
    if isinstance(layer, keras.layers.Layer):
        found = [(p, e) for p, entries in g.names.items() for e in entries if e[1] is layer]
        if not found:
            raise ValueError(
                f"`layer` {layer.name!r} ({type(layer).__name__}) is not called by model "
                f"{model.name!r}; close names: {_close_names(g, layer.name)}"
            )
        path, (v, op) = found[-1]
        return path, v, op
    raise TypeError(
        f"`layer` must be a layer name, a path such as 'resnet50/conv5_block3_out', a Keras layer "
        f"or None; got {type(layer).__name__}"
    )


def _needed(g: _Graph, roots) -> set:
    """Indices of the steps that the values ``roots`` depend on."""
    need, stack = set(), [v for v in roots]
    while stack:
        v = stack.pop()
        i = g.producer.get(v)
        if i is None or i in need:
            continue
        need.add(i)
        stack.extend(g.steps[i].fill.values())
    return need


def _spatial(g: _Graph, shape) -> bool:
    """True for a 4-D shape with (possibly) more than one spatial position."""
    if shape is None or len(shape) != 4:
        return False
    hw = shape[2:] if g.channels_first else shape[1:3]
    return not all(d == 1 for d in hw)


def _input_size(g: _Graph, model, input_size=None):
    if input_size is not None:
        return tuple(input_size)
    shape = tuple(_graph_model(model).inputs[0].shape)
    hw = shape[2:4] if g.channels_first else shape[1:3]
    return tuple(hw) if len(hw) == 2 and all(isinstance(d, int) for d in hw) else None


def _auto(g: _Graph, model, input_size=None) -> tuple[str, int, object]:
    need = _needed(g, [g.output])
    size = _input_size(g, model, input_size)
    token_layers: dict = {}  # token shape -> ids of the layers emitting it
    for i in sorted(need):
        shape = g.steps[i].shape
        if size is not None and shape is not None and len(shape) == 3 and shape[1]:
            grid = _layout.token_grid(int(shape[1]), size)
            if grid is not None and grid[1][0] * grid[1][1] > 1:
                token_layers.setdefault(shape[1:], set()).add(id(g.steps[i].op))
    for i in sorted(need, reverse=True):
        s = g.steps[i]
        shape = s.shape
        if shape is not None and len(shape) == 3 and len(token_layers.get(shape[1:], ())) >= 2:
            raise ValueError(
                f"model {model.name!r} looks like a transformer: layer {s.path!r} outputs tokens "
                f"{shape} after its last 4-D feature map, which would explain the patch "
                f"embedding. The Keras adapter explains 4-D feature maps only; pass `layer=` "
                f"(a 4-D layer) or reshape the tokens to a grid inside the model"
            )
        if _spatial(g, shape) and (
            size is None
            or not all(isinstance(d, int) for d in shape[1:])  # dynamic sizes: not checkable
            or any(_layout.readings(tuple(shape), size))
        ):
            return s.path, s.outs[0], s.op
    raise ValueError(
        f"model {model.name!r} has no 4-D layer output (N, h, w, K) before its logits; pass `layer`"
    )


def _layer_items(layer) -> list:
    if layer is None or isinstance(layer, (str, keras.layers.Layer)):
        return [layer]
    if isinstance(layer, Sequence) and len(layer) > 0:
        return list(layer)
    raise TypeError(
        f"`layer` must be a name, a Keras layer, None, or a non-empty list of them; got {layer!r}"
    )


def find_layer(model, layer=None) -> tuple[str, keras.layers.Layer]:
    """Find a target layer of ``model``.

    Parameters
    ----------
    model : keras.Model
        A functional model or a built ``Sequential`` (nested models are looked into).
    layer : str, keras.layers.Layer or None
        A layer name (``"conv5_block3_out"``), a path through nested models
        (``"resnet50/conv5_block3_out"``), the layer object, or None for the last layer with a
        4-D output of more than one position before the logits (the last feature map before
        global pooling), looked for inside nested models too.

    Returns
    -------
    (str, keras.layers.Layer)
        The layer's path (nested model names joined by ``"/"``) and the layer. A nested model
        given by name is its own layer; its output is the one explained.

    Raises
    ------
    ValueError
        An unknown name (the message lists close names), a name found in several nested models,
        or no 4-D output to be found.
    TypeError
        A subclassed model (no graph) or a ``layer`` of the wrong kind.
    """
    g = _graph(model)
    path, _, op = _auto(g, model) if layer is None else _resolve(g, layer, model)
    return path, op


def layers_under_tape(model, layer=None) -> list[str]:
    """The paths of the layer calls a gradient method re-runs under the gradient tape: the ones
    after ``layer`` (found as :func:`find_layer` does) on the way to the logits. The rest of the
    model runs once, outside the tape; the Keras adapter benchmark reports this list."""
    g = _graph(model)
    _, value, _ = _auto(g, model) if layer is None else _resolve(g, layer, model)
    return [g.steps[i].path for i in _plan(g, (value,)).head]


# --------------------------------------------------------------------------- backend helpers

# Where the core computes (``core=``): on the torch and JAX backends the layer's tensors can be
# handed to the core as they are (array-api-compat takes them); TensorFlow's stay NumPy.
_CORES = ("auto", "device", "numpy")
_DEVICE_BACKENDS = ("torch", "jax")


def _on_accelerator(t) -> bool:
    """True when the backend tensor ``t`` lives off the CPU (torch or JAX backends)."""
    if _BACKEND == "torch":
        return t.device.type != "cpu"
    if _BACKEND == "jax":
        return any(d.platform != "cpu" for d in t.devices())
    return False


def _np(t) -> np.ndarray:
    if _BACKEND == "tensorflow" and hasattr(t, "numpy"):
        return np.asarray(t.numpy(), dtype=np.float32)
    if _BACKEND == "torch" and isinstance(t, torch.Tensor):
        return t.detach().cpu().float().numpy()
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32)


def _detached(t):
    """A backend tensor cut from autograd (torch backend; JAX arrays carry no graph)."""
    if _BACKEND == "torch" and isinstance(t, torch.Tensor):
        return t.detach()
    return t


def _np_int(t) -> np.ndarray:
    """Channel indices (a backend tensor of the device path) on the host."""
    if _BACKEND == "torch" and isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(keras.ops.convert_to_numpy(t))


def _call(step: _Step, env: dict):
    args, kwargs = step.node.arguments.fill_in({k: env[v] for k, v in step.fill.items()})
    if "training" in getattr(step.op, "_call_context_args", ()):
        kwargs["training"] = False
    return step.op(*args, **kwargs)


def _linear_logits(step: _Step, env: dict):
    """The pre-activation output of the step producing the model's output, else None."""
    op = step.op
    if isinstance(op, keras.layers.Dense) and op.activation not in (None, keras.activations.linear):
        (x,), _ = step.node.arguments.fill_in({k: env[v] for k, v in step.fill.items()})
        y = keras.ops.matmul(x, op.kernel)
        return y + op.bias if op.bias is not None else y
    if isinstance(op, (keras.layers.Activation, keras.layers.Softmax)):
        (x,), _ = step.node.arguments.fill_in({k: env[v] for k, v in step.fill.items()})
        return x
    return None


@dataclass
class _Plan:
    """How one forward pass runs for a set of target values."""

    targets: tuple  # value ids of the layers' outputs
    body: list  # step indices, running order
    head: list
    head_inputs: list  # value ids computed by the body (or the input) that the head reads
    out_step: int


def _plan(g: _Graph, targets: tuple) -> _Plan:
    plan = g.plans.get(targets)
    if plan is not None:
        return plan
    need = _needed(g, [g.output, *targets])
    dependent = set(targets)
    head, body = [], []
    for i in sorted(need):
        s = g.steps[i]
        if any(v in dependent for v in s.fill.values()):
            head.append(i)
            dependent.update(s.outs)
        else:
            body.append(i)
    produced_by_head = {v for i in head for v in g.steps[i].outs}
    reads = []
    for i in head:
        for v in g.steps[i].fill.values():
            if v not in produced_by_head and v not in reads:
                reads.append(v)
    for t in targets:
        if t not in reads and t not in produced_by_head:
            reads.append(t)
    plan = _Plan(targets, body, head, reads, g.producer[g.output])
    g.plans[targets] = plan
    return plan


def _run(g: _Graph, steps: list, env: dict, out_step: int, hook=None, step_fn=None) -> None:
    """Run ``steps`` on ``env`` (value id -> tensor), in place; ``hook(v, t)`` may replace outputs,
    ``step_fn(i, step, env)`` may compute a step itself (None: the step runs as usual)."""
    for i in steps:
        s = g.steps[i]
        y = None if step_fn is None else step_fn(i, s, env)
        if y is not None:
            pass
        elif i == out_step:
            y = _linear_logits(s, env)
            if y is None:
                y = _call(s, env)
        else:
            y = _call(s, env)
        outs = keras.tree.flatten(y) if len(s.outs) > 1 else [y]
        for v, t in zip(s.outs, outs):
            env[v] = hook(v, t) if hook is not None else t


def _select(logits, ids):
    return keras.ops.take_along_axis(logits, keras.ops.expand_dims(ids, 1), axis=1)[:, 0]


def _forward(g: _Graph, plan: _Plan, x) -> dict:
    """A forward pass without gradient: the env with the targets, the head's inputs and logits."""
    env = {g.input: x}
    _run(g, plan.body, env, plan.out_step)
    _run(g, plan.head, env, plan.out_step)
    return env


def _grad_pass(g: _Graph, plan: _Plan, x, score_fn, hvp: bool = False):
    """Body without recording, head under autograd: (env, scores, gradients per target, and
    with ``hvp`` the Hessian-vector products ``H A`` per target, else None).

    ``H A`` of a target is the gradient of ``<g, A>`` (``A`` held fixed) with respect to ``A``:
    a second backward pass through the first one's graph; zeros where ``g`` does not depend on
    ``A``."""
    env = {g.input: x}
    from_head = {v for i in plan.head for v in g.steps[i].outs}
    body_targets = [t for t in plan.targets if t not in from_head]
    hvps = None
    if _BACKEND == "tensorflow":
        _run(g, plan.body, env, plan.out_step)
        # with hvp, an outer tape records the first backward pass too
        outer = tf.GradientTape(watch_accessed_variables=False, persistent=True) if hvp else None
        with outer or contextlib.nullcontext():
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                for t in body_targets:
                    tape.watch(env[t])
                    if outer is not None:
                        outer.watch(env[t])
                _run(g, plan.head, env, plan.out_step)
                scores = score_fn(env[g.output])
            grads = tape.gradient(scores, [env[t] for t in plan.targets])
        if outer is not None:
            hvps = []
            for t, gr in zip(plan.targets, grads):
                a = env[t]
                hv = None if gr is None else outer.gradient(gr, a, output_gradients=tf.stop_gradient(a))
                hvps.append(tf.zeros_like(a) if hv is None else hv)
            del outer
    elif _BACKEND == "torch":
        with torch.no_grad():
            _run(g, plan.body, env, plan.out_step)
        for t in body_targets:
            env[t] = env[t].detach().requires_grad_(True)
        with torch.enable_grad():
            _run(g, plan.head, env, plan.out_step)
            scores = score_fn(env[g.output])
            if not scores.requires_grad:
                grads = [None] * len(plan.targets)
            else:
                grads = torch.autograd.grad(
                    scores.sum(), [env[t] for t in plan.targets], allow_unused=True,
                    create_graph=hvp,
                )
            if hvp:
                hvps = []
                for t, gr in zip(plan.targets, grads):
                    a, hv = env[t], None
                    if gr is not None and gr.requires_grad:
                        (hv,) = torch.autograd.grad(gr, a, grad_outputs=a.detach(),
                                                    retain_graph=True, allow_unused=True)
                    hvps.append(torch.zeros_like(a).detach() if hv is None else hv.detach())
        grads = [None if gr is None else gr.detach() for gr in grads]
        scores = scores.detach()
    elif _BACKEND == "jax":
        _run(g, plan.body, env, plan.out_step)
        later = [t for t in plan.targets if t not in body_targets]
        base = dict(env)

        def f(leaves):
            env2 = dict(base)
            env2.update({t: leaves[str(t)] for t in body_targets})
            def hook(v, t):
                return (t + leaves[str(v)] if str(v) in leaves and v in later else t)
            _run(g, plan.head, env2, plan.out_step, hook)
            return score_fn(env2[g.output]), env2

        leaves = {str(t): env[t] for t in body_targets}
        # zero offsets of the later targets, shaped like them (a dry run gives the shapes)
        env_dry = dict(base)
        _run(g, plan.head, env_dry, plan.out_step)
        leaves.update({str(t): jnp.zeros_like(env_dry[t]) for t in later})
        scores, vjp, env = jax.vjp(f, leaves, has_aux=True)
        (back,) = vjp(jnp.ones_like(scores))
        grads = [back[str(t)] for t in plan.targets]
        if hvp:
            # forward-over-reverse: the derivative of the gradient along A (a later target's
            # leaf is an offset, so its direction is the target's value itself)
            def grad_of(lv):
                return jax.grad(lambda lv2: jnp.sum(f(lv2)[0]))(lv)

            hvps = []
            for t in plan.targets:
                tangent = {k: jnp.zeros_like(v) for k, v in leaves.items()}
                tangent[str(t)] = env[t]
                _, hv = jax.jvp(grad_of, (leaves,), (tangent,))
                hvps.append(hv[str(t)])
    else:  # pragma: no cover - Keras backends without autograd (openvino, numpy)
        raise ValueError(
            f"the Keras backend {_BACKEND!r} has no automatic differentiation; use a method "
            f"without gradients (cam, eigencam, scorecam, ablationcam) or the tensorflow, torch "
            f"or jax backend"
        )
    return env, scores, grads, hvps


def _compiled(g: _Graph, plan: _Plan, kind: str):
    """A ``tf.function`` of ``kind`` for this plan on TensorFlow; the plain function elsewhere."""
    key = (plan.targets, kind)
    entry = g.compiled.get(key)  # (plain function, compiled function or None)
    if entry is not None:
        if entry[1] is None:  # second use: compile
            entry = (entry[0], tf.function(entry[0], reduce_retracing=True))
            g.compiled[key] = entry
        return entry[1]
    keep = (*plan.targets, *plan.head_inputs, g.output)

    if kind == "forward":
        def fn(x):
            env = _forward(g, plan, x)
            return [env[v] for v in keep]
    elif kind in ("grad", "hvp"):
        def fn(x, ids, by_argmax):
            def score_fn(logits):
                if by_argmax:  # a Python bool: one trace per value
                    return keras.ops.max(logits, axis=1)
                return _select(logits, ids)

            env, scores, grads, hvps = _grad_pass(g, plan, x, score_fn, hvp=kind == "hvp")
            return [env[v] for v in keep], scores, list(grads), hvps
    elif kind == "head":
        def fn(values):
            env = dict(zip(plan.head_inputs, values))
            _run(g, plan.head, env, plan.out_step)
            return env[g.output]
    else:  # "logits"
        def fn(x):
            return _forward(g, plan, x)[g.output]
    # TensorFlow: the first use runs eagerly (no tracing for a one-off call), later ones compiled
    g.compiled[key] = (fn, None if _BACKEND == "tensorflow" else fn)
    return fn


# --------------------------------------------------------------------------- FullGrad

_BIAS_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def _bias_of(op):
    """The per-channel bias a 2-D convolution or a batch norm adds (FullGrad's ``b``) as NumPy,
    else None; a batch norm's folded: ``beta - moving_mean * gamma / sqrt(moving_var + eps)``."""
    if isinstance(op, _BIAS_CONVS):
        return None if not op.use_bias or op.bias is None else _np(op.bias).astype(np.float64)
    if isinstance(op, keras.layers.BatchNormalization):
        mean = _np(op.moving_mean).astype(np.float64)
        var = _np(op.moving_variance).astype(np.float64)
        gamma = np.ones_like(var) if op.gamma is None else _np(op.gamma).astype(np.float64)
        beta = np.zeros_like(mean) if op.beta is None else _np(op.beta).astype(np.float64)
        return beta - mean * gamma / np.sqrt(var + op.epsilon)
    return None


def _bias_channels_first(op, g: _Graph) -> bool:
    fmt = getattr(op, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return fmt == "channels_first"
    axis = getattr(op, "axis", -1)  # a batch norm
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    return axis == 1


def _pre_activation(op, step: _Step, env: dict):
    """A convolution's output before its fused activation, and that activation (None when it
    has none): the layer runs once with its activation set to linear, restored at once."""
    act = getattr(op, "activation", None)
    if act is None or act is keras.activations.linear:
        return _call(step, env), None
    op.activation = keras.activations.linear
    try:
        return _call(step, env), act
    finally:
        op.activation = act


def _bias_pass(g: _Graph, x, score_fn):
    """FullGrad's pass: the whole model under autograd with a zero probe added to each bias
    layer's pre-activation output (its gradient is that output's). Returns ``(logits, scores,
    d scores / d x, [(step index, d scores / d z), ...])`` in running order."""
    steps = sorted(_needed(g, [g.output]))
    bias_steps = {i for i in steps if _bias_of(g.steps[i].op) is not None}
    out_step = g.producer[g.output]

    def make_step_fn(probe):
        def step_fn(i, s, env):
            if i not in bias_steps:
                return None
            pre, act = _pre_activation(s.op, s, env)
            if keras.ops.ndim(pre) != 4:
                return pre if act is None else act(pre)
            pre = probe(i, pre)
            return pre if act is None else act(pre)

        return step_fn

    if _BACKEND == "tensorflow":
        probes: list = []
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)

            def probe(i, pre):
                p = tf.zeros_like(pre)
                tape.watch(p)
                probes.append((i, p))
                return pre + p

            env = {g.input: x}
            _run(g, steps, env, out_step, step_fn=make_step_fn(probe))
            logits = env[g.output]
            scores = score_fn(logits)
        grads = tape.gradient(scores, [x, *(p for _, p in probes)])
    elif _BACKEND == "torch":
        probes = []
        x = x.detach().requires_grad_(True)

        def probe(i, pre):
            p = torch.zeros_like(pre, requires_grad=True)
            probes.append((i, p))
            return pre + p

        with torch.enable_grad():
            env = {g.input: x}
            _run(g, steps, env, out_step, step_fn=make_step_fn(probe))
            logits = env[g.output]
            scores = score_fn(logits)
            grads = torch.autograd.grad(scores.sum(), [x, *(p for _, p in probes)],
                                        allow_unused=True)
        logits, scores = logits.detach(), scores.detach()
    elif _BACKEND == "jax":
        shapes: list = []

        def record(i, pre):
            shapes.append((i, pre))
            return pre

        _run(g, steps, {g.input: x}, out_step, step_fn=make_step_fn(record))
        leaves = {"x": x, **{str(i): jnp.zeros_like(t) for i, t in shapes}}

        def f(lv):
            env = {g.input: lv["x"]}
            _run(g, steps, env, out_step,
                 step_fn=make_step_fn(lambda i, pre: pre + lv[str(i)]))
            return score_fn(env[g.output]), env[g.output]

        scores, vjp, logits = jax.vjp(f, leaves, has_aux=True)
        (back,) = vjp(jnp.ones_like(scores))
        probes = [(i, None) for i, _ in shapes]
        grads = [back["x"], *(back[str(i)] for i, _ in shapes)]
    else:  # pragma: no cover - Keras backends without autograd (openvino, numpy)
        raise ValueError(f"FullGrad needs gradients; the Keras backend {_BACKEND!r} has none")
    return logits, scores, grads[0], [(i, gr) for (i, _), gr in zip(probes, grads[1:])]


# ------------------------------------------------------------------------------- LeGrad


def _mha_with_probe(op, step: _Step, env: dict, probe, check: bool = True):
    """A ``MultiHeadAttention`` step recomputed from its own sublayers with ``probe(probs)``
    between the softmax and the product with the values, so that the gradient of anything
    downstream with respect to the probe is its gradient with respect to the attention
    probabilities ``(N, heads, T, S)`` (Keras computes them inside the layer). The output is
    checked against the layer's own (``check``: not while JAX traces); masks, gates and several
    attention axes are refused."""
    args, kwargs = step.node.arguments.fill_in({k: env[v] for k, v in step.fill.items()})
    names = ("query", "value", "key")
    query, value, key = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names))
    key = value if key is None else key
    masked = any(kwargs.get(k) is not None for k in ("query_mask", "value_mask", "key_mask",
                                                     "attention_mask"))
    if masked or kwargs.get("use_causal_mask") or getattr(op, "_use_gate", False) \
            or len(getattr(op, "_attention_axes", None) or (1,)) != 1:
        raise ValueError(
            f"LeGrad reads MultiHeadAttention {op.name!r} without masks, gates or several "
            f"attention axes"
        )
    q = keras.ops.multiply(op._query_dense(query), op._inverse_sqrt_key_dim)
    scores = keras.ops.einsum(op._dot_product_equation, op._key_dense(key), q)
    probs = probe(keras.ops.softmax(scores, axis=-1))
    out = op._output_dense(keras.ops.einsum(op._combine_equation, probs, op._value_dense(value)))
    if not check:
        return out
    ref = _call(step, env)
    if not np.allclose(_np(out), _np(ref), rtol=1e-4, atol=1e-5 * max(float(np.abs(_np(ref)).max()),
                                                                      1e-6)):
        raise ValueError(f"LeGrad's recomputation of MultiHeadAttention {op.name!r} differs from "
                         f"its output; this attention is not one it can read")
    return out


def _legrad_pass(g: _Graph, x, score_fn, block: int, last: int):
    """The model up to block output ``block`` with its attention probabilities probed, that
    output put in place of the last block's (``last``) and the head after it: (the gradient of
    ``score_fn`` of those logits with respect to the probabilities, its block's attention step).
    """
    steps = sorted(_needed(g, [block]))
    mhas = [i for i in steps if isinstance(g.steps[i].op, keras.layers.MultiHeadAttention)]
    if not mhas:
        raise ValueError(f"{g.steps[g.producer[block]].path!r}: no MultiHeadAttention before it")
    attn = mhas[-1]
    head = _plan(g, (last,))
    if [v for v in head.head_inputs if v != last] or any(
            isinstance(g.steps[i].op, keras.layers.MultiHeadAttention) for i in head.head):
        raise ValueError("LeGrad needs the last block given to be the model's last one: what "
                         "follows it must read only its output and hold no attention")
    out_step = g.producer[g.output]

    def run(probe, check=True):
        def step_fn(i, s, env):
            return _mha_with_probe(s.op, s, env, probe, check) if i == attn else None

        env = {g.input: x}
        _run(g, steps, env, out_step, step_fn=step_fn)
        env[last] = env[block]
        _run(g, head.head, env, out_step)
        return score_fn(env[g.output])

    if _BACKEND == "tensorflow":
        box = []
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            def probe(p):
                z = tf.zeros_like(p)
                tape.watch(z)
                box.append(z)
                return p + z

            scores = run(probe)
        grad = tape.gradient(scores, box[-1])
    elif _BACKEND == "torch":
        box = []

        def probe(p):
            z = torch.zeros_like(p, requires_grad=True)
            box.append(z)
            return p + z

        with torch.enable_grad():
            scores = run(probe)
            (grad,) = torch.autograd.grad(scores.sum(), [box[-1]], allow_unused=True)
    elif _BACKEND == "jax":
        shape = []
        run(lambda p: shape.append(p) or p)
        zero = jnp.zeros_like(shape[-1])
        scores, vjp = jax.vjp(lambda z: run(lambda p: p + z, check=False), zero)
        (grad,) = vjp(jnp.ones_like(scores))
    else:  # pragma: no cover
        raise ValueError(f"LeGrad needs gradients; the Keras backend {_BACKEND!r} has none")
    return grad, g.steps[attn].path


# ----------------------------------------------------------------- guided backpropagation


def _guided_unit(op):
    """``(fused, upper)`` for a step guided backpropagation changes, else None: a ``ReLU``
    layer (``upper`` its ``max_value``), an ``Activation`` of relu / relu6, or a layer with
    relu / relu6 fused (``fused``: it runs linear, then the guided unit)."""
    uppers = {keras.activations.relu: None, keras.activations.relu6: 6.0}
    if isinstance(op, keras.layers.ReLU):
        if float(op.negative_slope) != 0.0 or float(op.threshold) != 0.0:
            raise ValueError(
                f"guided backpropagation is defined for plain ReLUs; layer {op.name!r} has "
                f"negative_slope={op.negative_slope}, threshold={op.threshold}"
            )
        return False, None if op.max_value is None else float(op.max_value)
    act = getattr(op, "activation", None)
    if act in uppers:
        return not isinstance(op, keras.layers.Activation), uppers[act]
    return None


def _guided_relu(z, upper):
    """``min(max(z, 0), upper)`` whose backward passes ``g`` only where the unit was active and
    ``g > 0``, in the backend's own custom-gradient mechanism."""
    if _BACKEND == "tensorflow":
        @tf.custom_gradient
        def f(z):
            y = tf.nn.relu(z) if upper is None else tf.clip_by_value(z, 0.0, upper)

            def grad(g):
                active = z > 0 if upper is None else (z > 0) & (z < upper)
                return g * tf.cast(active & (g > 0), g.dtype)

            return y, grad

        return f(z)
    if _BACKEND == "torch":
        return _TorchGuided.apply(z, upper)
    if _BACKEND == "jax":
        return _jax_guided(z, upper)
    raise ValueError(f"guided backpropagation needs gradients; the Keras backend {_BACKEND!r} "
                     f"has none")  # pragma: no cover


if _BACKEND == "torch":
    class _TorchGuided(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, upper):
            active = z > 0 if upper is None else (z > 0) & (z < upper)
            ctx.save_for_backward(active)
            return z.clamp(min=0) if upper is None else z.clamp(0.0, upper)

        @staticmethod
        def backward(ctx, g):
            (active,) = ctx.saved_tensors
            return g * (active & (g > 0)), None

elif _BACKEND == "jax":
    import functools

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def _jax_guided(z, upper):
        return jnp.maximum(z, 0) if upper is None else jnp.clip(z, 0, upper)

    def _jax_guided_fwd(z, upper):
        return _jax_guided(z, upper), z

    def _jax_guided_bwd(upper, z, g):
        active = z > 0 if upper is None else (z > 0) & (z < upper)
        return (g * (active & (g > 0)),)

    _jax_guided.defvjp(_jax_guided_fwd, _jax_guided_bwd)


def _guided_pass(g: _Graph, x, score_fn):
    """The model with every relu unit guided (:func:`_guided_unit`): ``(d scores / d x, scores,
    logits)``."""
    steps = sorted(_needed(g, [g.output]))
    units = {}
    for i in steps:
        unit = _guided_unit(g.steps[i].op)
        if unit is not None:
            units[i] = unit
    if not units:
        raise ValueError(
            "guided backpropagation changes the backward pass of the model's ReLUs (ReLU "
            "layers, relu / relu6 activations); this model has none"
        )
    out_step = g.producer[g.output]

    def step_fn(i, s, env):
        if i not in units:
            return None
        fused, upper = units[i]
        if fused:
            z, _ = _pre_activation(s.op, s, env)
        else:
            (z,), _ = s.node.arguments.fill_in({k: env[v] for k, v in s.fill.items()})
        return _guided_relu(z, upper)

    def forward(x):
        env = {g.input: x}
        _run(g, steps, env, out_step, step_fn=step_fn)
        return score_fn(env[g.output]), env[g.output]

    if _BACKEND == "tensorflow":
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            scores, logits = forward(x)
        gx = tape.gradient(scores, x)
    elif _BACKEND == "torch":
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            scores, logits = forward(x)
            (gx,) = torch.autograd.grad(scores.sum(), [x])
        scores, logits = scores.detach(), logits.detach()
    elif _BACKEND == "jax":
        scores, vjp, logits = jax.vjp(forward, x, has_aux=True)
        (gx,) = vjp(jnp.ones_like(scores))
    else:  # pragma: no cover
        raise ValueError(f"guided backpropagation needs gradients; the Keras backend "
                         f"{_BACKEND!r} has none")
    return gx, scores, logits


# --------------------------------------------------------------------------- the session


@dataclass
class _Layer:
    name: str
    value: int
    op: object
    channels_first: bool
    acts: object = None  # the layer's output tensor for the batch
    head_values: list | None = None  # this layer's head inputs for the batch (ablation)


class KerasSession:
    """One explanation of one batch: the object :func:`cam_core.explain.explain_session` drives.

    Parameters
    ----------
    model : keras.Model
    inputs : ndarray or backend tensor, shape (N, H, W, C) (or (N, C, H, W) channels-first)
    layer, targets
        As in :func:`explain`.
    weights : bool
        Look for the GAP + Dense head's weights (needed by CAM only).
    layout : {None, "channels_first", "channels_last"}
        As in :func:`explain`.

    Attributes
    ----------
    input_size : (int, int)
        ``(H, W)`` of the inputs.
    """

    def __init__(self, model, inputs, *, layer=None, targets=None, weights: bool = True,
                 core: str = "auto", layout=None):
        if core not in _CORES:
            raise ValueError(f"`core` must be one of {_CORES}; got {core!r}")
        if core == "device" and _BACKEND not in _DEVICE_BACKENDS:
            raise ValueError(
                f"core='device' needs the Keras torch or jax backend; this is {_BACKEND!r}, "
                f"whose tensors the core does not take (use core='auto' or 'numpy')"
            )
        self._core = core
        self.on_device = False  # set by capture()
        self.model = model
        self._layout = _layout.check_layout(layout)
        self._g = _graph(model)
        g = self._g
        dtype = g.dtype
        if isinstance(inputs, np.ndarray) or not hasattr(inputs, "shape"):
            inputs = np.asarray(inputs)
            if inputs.dtype.kind not in "biuf":  # strings would be parsed, complex cast to real
                raise TypeError(f"`inputs` must be a real numeric array; got dtype {inputs.dtype}")
            if inputs.dtype != np.dtype(dtype):
                inputs = inputs.astype(dtype)
        x = keras.ops.convert_to_tensor(inputs, dtype=dtype)
        shape = tuple(int(d) for d in x.shape)
        if len(shape) != 4:
            layout = "(N, C, H, W)" if g.channels_first else "(N, H, W, C)"
            raise ValueError(f"`inputs` must have shape {layout}; got {shape}")
        _check_batch(x, shape)
        self.x = x
        self.n = shape[0]
        self.input_size = shape[2:4] if g.channels_first else shape[1:3]
        self._layers: list[_Layer] = []
        for item in _layer_items(layer):
            path, v, op = (
                _auto(g, model, self.input_size) if item is None else _resolve(g, item, model)
            )
            if any(lay.value == v for lay in self._layers):
                raise ValueError(f"`layer` lists {path!r} twice")
            self._layers.append(_Layer(path, v, op, self._channels_first(path, v, op)))
        self._plan = _plan(g, tuple(lay.value for lay in self._layers))
        self._targets_spec = targets
        self._want_weights = bool(weights)
        self._target_ids = None
        self._captured = False

    def _channels_first(self, path: str, value: int, op) -> bool:
        """The layer's 4-D output layout: ``layout``, else the layer's own ``data_format``, else
        the one reading whose grid has the input's aspect, else the model's format."""
        if self._layout is not None:
            return self._layout == "channels_first"
        fmt = getattr(op, "data_format", None)
        if fmt in ("channels_first", "channels_last"):
            return fmt == "channels_first"
        shape = self._g.steps[self._g.producer[value]].shape if value in self._g.producer else None
        if shape is not None and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
            cf, cl = _layout.readings((self.n, *shape[1:]), self.input_size)
            if cf != cl:
                return cf
        return self._g.channels_first

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        for lay in self._layers:
            lay.acts = lay.head_values = None
        self.x = None
        return False

    # ---- capture

    def _score_fn(self):
        spec = self._targets_spec
        n = self.n

        def score_fn(logits):
            scores = spec(logits)
            shape = tuple(getattr(scores, "shape", ()))
            if shape != (n,):
                raise ValueError(
                    f"a callable `targets` must return one score per image, shape ({n},); got "
                    f"{shape if hasattr(scores, 'shape') else type(scores).__name__}"
                )
            return scores

        return score_fn

    def capture(self, *, gradients: bool, hvp: bool = False) -> list[Capture]:
        """One forward pass (with the head under autograd when ``gradients``): one Capture per
        layer; ``hvp`` (with ``gradients``) adds the Hessian-vector products (``Capture.hvp``)."""
        if hvp and not gradients:
            raise ValueError("`hvp` needs `gradients=True`")
        g, plan = self._g, self._plan
        keep = (*plan.targets, *plan.head_inputs, g.output)
        spec = self._targets_spec
        is_callable = callable(spec) and not hasattr(spec, "shape")
        grads = hvps = None
        if is_callable:
            if gradients:
                env, scores, grads, hvps = _grad_pass(g, plan, self.x, self._score_fn(), hvp=hvp)
                values = [env[v] for v in keep]
            else:
                env = _forward(g, plan, self.x)
                values = [env[v] for v in keep]
                scores = self._score_fn()(env[g.output])
            self._check_logits(values[-1])
            target_ids = np.full(self.n, -1, dtype=np.int64)
        elif gradients:
            ids, by_argmax = self._pre_targets()
            values, scores, grads, hvps = _compiled(g, plan, "hvp" if hvp else "grad")(
                self.x, keras.ops.convert_to_tensor(ids, "int32"), by_argmax
            )
            logits_np = self._check_logits(values[-1])
            target_ids = resolve_targets(None if by_argmax else ids, logits_np)
        else:
            values = _compiled(g, plan, "forward")(self.x)
            logits_np = self._check_logits(values[-1])
            target_ids = resolve_targets(self._targets_spec_np(), logits_np)
            scores = logits_np[np.arange(self.n), target_ids]
        env = dict(zip(keep, values))
        self.on_device = _BACKEND in _DEVICE_BACKENDS and (
            self._core == "device" or (self._core == "auto" and _on_accelerator(self.x))
        )
        logits_np = _np(env[g.output])
        self._target_ids = None if is_callable else target_ids
        self._logits = logits_np
        for lay, v in zip(self._layers, plan.targets):
            lay.acts = env[v]
        self._head_env = env
        out = []
        for i, lay in enumerate(self._layers):
            acts = self._to_maps(lay, self._for_core(lay.acts))
            grad = None
            if gradients:
                if grads[i] is None:
                    raise ValueError(
                        f"layer {lay.name!r} has no gradient path to the target score; pick a "
                        f"layer whose output the logits depend on (and a `targets` callable "
                        f"built from the logits tensor)"
                    )
                grad = self._to_maps(lay, self._for_core(grads[i]))
            hv = None if hvps is None else self._to_maps(lay, self._for_core(hvps[i]))
            weights = self._gap_weights(acts, logits_np) if self._want_weights else None
            out.append(
                Capture(
                    activations=acts,
                    logits=logits_np,
                    targets=target_ids,
                    scores=_np(scores).reshape(self.n),
                    gradients=grad,
                    weights=weights,
                    layer=lay.name,
                    hvp=hv,
                )
            )
        self._captured = True
        return out

    def _targets_spec_np(self):
        spec = self._targets_spec
        if spec is not None and hasattr(spec, "shape") and not isinstance(spec, np.ndarray):
            spec = keras.ops.convert_to_numpy(spec)
        return spec

    def _pre_targets(self) -> tuple[np.ndarray, bool]:
        """Target ids checked before the forward pass (None: argmax in the pass)."""
        spec = self._targets_spec_np()
        if spec is None:
            return np.zeros(self.n, dtype=np.int32), True
        c = self._classes()
        ids = resolve_targets(spec, np.zeros((self.n, c), dtype=np.float32))
        return ids.astype(np.int32), False

    def _classes(self) -> int:
        c = self._g.steps[self._plan.out_step].shape
        if c is None or len(c) != 2 or c[1] is None:
            raise ValueError(
                f"the model must return logits of shape (N, C); its output has shape {c}"
            )
        return int(c[1])

    def _check_logits(self, logits) -> np.ndarray:
        arr = _np(logits)
        if arr.ndim != 2 or arr.shape[0] != self.n:
            raise ValueError(
                f"the model must return logits of shape (N, C) with N = {self.n}; got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr).all(axis=1)).tolist()
            raise ValueError(
                f"the model returned non-finite logits (NaN or Inf) for images {bad[:10]}: an "
                f"overflow inside the model; check the scale of `inputs` (and the model)"
            )
        return arr

    def bias_gradients(self) -> BiasGradients:
        """FullGrad's gradients (:func:`_bias_pass`): the input's and the pre-activation output's
        of every 2-D convolution with a bias and every batch norm, with their biases."""
        g = self._g
        spec = self._targets_spec
        is_callable = callable(spec) and not hasattr(spec, "shape")
        if is_callable:
            score_fn = self._score_fn()
        else:
            ids, by_argmax = self._pre_targets()
            ids_t = keras.ops.convert_to_tensor(ids, "int32")

            def score_fn(logits):
                return keras.ops.max(logits, axis=1) if by_argmax else _select(logits, ids_t)

        logits, scores, gx, terms = _bias_pass(g, self.x, score_fn)
        if not terms and not any(_bias_of(s.op) is not None for s in g.steps):
            raise ValueError("FullGrad needs layers with a bias (Conv2D, DepthwiseConv2D, "
                             "SeparableConv2D, BatchNormalization); the model has none")
        logits_np = self._check_logits(logits)
        if is_callable:
            target_ids = np.full(self.n, -1, dtype=np.int64)
        else:
            target_ids = resolve_targets(None if by_argmax else ids, logits_np)
        self.on_device = _BACKEND in _DEVICE_BACKENDS and (
            self._core == "device" or (self._core == "auto" and _on_accelerator(self.x))
        )
        if gx is None:
            raise ValueError("the target score does not depend on the input")

        def first(t, channels_first: bool):
            t = self._for_core(t)
            if channels_first:
                return t
            if isinstance(t, np.ndarray):
                return np.ascontiguousarray(t.transpose(0, 3, 1, 2))
            return keras.ops.transpose(t, (0, 3, 1, 2))

        kept = [(i, gr) for i, gr in terms if gr is not None]
        ops = [g.steps[i].op for i, _ in kept]
        return BiasGradients(
            inputs=first(self.x, g.channels_first),
            input_gradients=first(gx, g.channels_first),
            gradients=tuple(first(gr, _bias_channels_first(op, g)) for (_, gr), op in zip(kept, ops)),
            biases=tuple(_bias_of(op).astype(np.float32) for op in ops),  # moved by the core
            layers=tuple(g.steps[i].path for i, _ in kept),
            logits=logits_np,
            targets=target_ids,
            scores=_np(scores).reshape(self.n),
        )

    def attention_gradients(self) -> AttentionGradients:
        """LeGrad's gradients (:func:`_legrad_pass`) for each block output of ``layer``, the last
        of which must be the model's last block: its output put in place of the last block's,
        the head's score of the target class against the probabilities of the last
        ``MultiHeadAttention`` before it. The classes are the whole model's."""
        g = self._g
        n = self.n
        logits = _forward(g, self._plan, self.x)[g.output]
        logits_np = self._check_logits(logits)
        spec = self._targets_spec
        if callable(spec) and not hasattr(spec, "shape"):
            score_fn = self._score_fn()
            target_ids = np.full(n, -1, dtype=np.int64)
            scores = _np(score_fn(logits)).reshape(n)
        else:
            target_ids = resolve_targets(self._targets_spec_np(), logits_np)
            ids_t = keras.ops.convert_to_tensor(target_ids.astype(np.int32))

            def score_fn(z):
                return _select(z, ids_t)

            scores = logits_np[np.arange(n), target_ids]
        last = self._layers[-1].value
        grads, grid = [], None
        for lay in self._layers:
            grad, _ = _legrad_pass(g, self.x, score_fn, lay.value, last)
            if grad is None:
                raise ValueError(f"block {lay.name!r}: the head's score does not depend on its "
                                 f"attention")
            keys = int(grad.shape[-1])
            found = _layout.token_grid(keys, self.input_size)
            if found is None:
                raise ValueError(f"block {lay.name!r} attends over {keys} tokens: no grid with "
                                 f"the input's aspect {self.input_size}")
            grid = found
            grads.append(_np(grad))
        prefix, hw = grid
        return AttentionGradients(gradients=tuple(grads), grid=hw, prefix=prefix,
                                  layers=tuple(lay.name for lay in self._layers),
                                  logits=logits_np, targets=target_ids, scores=scores)

    def guided_gradients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Guided backpropagation (:func:`_guided_pass`): ``(d scores / d inputs`` in the inputs'
        layout, float32 NumPy``, target classes, logits)``."""
        spec = self._targets_spec
        if callable(spec) and not hasattr(spec, "shape"):
            score_fn, by_argmax, ids = self._score_fn(), None, None
        else:
            ids, by_argmax = self._pre_targets()
            ids_t = keras.ops.convert_to_tensor(ids, "int32")

            def score_fn(logits):
                return keras.ops.max(logits, axis=1) if by_argmax else _select(logits, ids_t)

        gx, _, logits = _guided_pass(self._g, self.x, score_fn)
        logits_np = self._check_logits(logits)
        if by_argmax is None:
            target_ids = np.full(self.n, -1, dtype=np.int64)
        else:
            target_ids = resolve_targets(None if by_argmax else ids, logits_np)
        return _np(gx).astype(np.float32), target_ids, logits_np

    def _for_core(self, t):
        """A layer-sized backend tensor as the core gets it: NumPy, or float32 on its device."""
        return _detached(keras.ops.cast(t, "float32")) if self.on_device else _np(t)

    def to_host(self, maps) -> np.ndarray:
        """The final maps on the host."""
        return maps if isinstance(maps, np.ndarray) else _np(maps)

    def _to_maps(self, lay: _Layer, arr: np.ndarray) -> np.ndarray:
        if arr.ndim != 4:
            raise ValueError(
                f"layer {lay.name!r} outputs shape {tuple(arr.shape)}; CAM methods need a 4-D "
                f"feature map (N, h, w, K). Pick an earlier layer (before global pooling)"
            )
        if not isinstance(arr, np.ndarray):  # a backend tensor for the device path
            return arr if lay.channels_first else keras.ops.transpose(arr, (0, 3, 1, 2))
        if lay.channels_first:
            return np.ascontiguousarray(arr)
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))

    def _gap_weights(self, acts: np.ndarray, logits: np.ndarray) -> np.ndarray | None:
        op = self._g.steps[self._plan.out_step].op
        if not isinstance(op, keras.layers.Dense):
            return None
        kernel = _np(op.kernel)
        k = acts.shape[1]
        if kernel.ndim != 2 or kernel.shape != (k, logits.shape[1]):
            return None
        # float32 throughout: the check's tolerance is far above float32 rounding for any K.
        # The product runs in the backend, not in NumPy: a multi-threaded BLAS call here (the
        # (N, K) x (K, C) check) leaves OpenBLAS's threads spinning while the next call's graph
        # starts, which slowed that graph by 1.7x at batch 1 on 2 cores (issue 17)
        if isinstance(acts, np.ndarray):
            pooled = acts.mean(axis=(2, 3))
        else:  # device path: pool there, only (N, K) crosses
            pooled = _np(keras.ops.mean(acts, axis=(2, 3)))
        pred = _np(keras.ops.matmul(keras.ops.convert_to_tensor(pooled), op.kernel))
        if op.bias is not None:
            pred += _np(op.bias)
        scale = max(float(np.abs(logits).max()), np.finfo(np.float32).tiny)
        if float(np.abs(pred - logits).max()) > _RTOL * scale:
            return None
        if self.on_device:
            return _detached(keras.ops.transpose(keras.ops.cast(op.kernel, "float32")))
        return kernel.T  # (C, K), a transposed view of the kernel's copy

    # ---- perturbations

    def _check_captured(self) -> None:
        if not self._captured or self.x is None:
            raise RuntimeError("call `capture()` inside the session before scoring perturbations")

    def _scores_of(self, logits, index: int) -> np.ndarray:
        if self._target_ids is None:
            return _np(self._score_fn_any(logits))
        return _np(logits)[:, int(self._target_ids[index])]

    def _score_fn_any(self, logits):
        scores = self._targets_spec(logits)
        b = int(logits.shape[0])
        if tuple(scores.shape) != (b,):
            raise ValueError(
                f"a callable `targets` must return one score per image, shape ({b},); got "
                f"{tuple(scores.shape)}"
            )
        return scores

    def score_masked(self, index: int, masks: np.ndarray) -> np.ndarray:
        """Target score of image ``index`` times each mask ``(B, H, W)``: ``(B,)`` float32."""
        self._check_captured()
        on_device = self.on_device and not isinstance(masks, np.ndarray)
        m = masks if on_device else np.asarray(masks, dtype=np.float32)
        if m.ndim != 3 or tuple(m.shape[1:]) != tuple(self.input_size):
            raise ValueError(
                f"`masks` must have shape (B, {self.input_size[0]}, {self.input_size[1]}); got "
                f"{tuple(m.shape)}"
            )
        if on_device:  # the core made the masks on the device
            m = keras.ops.expand_dims(m, 1 if self._g.channels_first else -1)
        else:
            m = keras.ops.convert_to_tensor(m[:, None] if self._g.channels_first else m[..., None])
        batch = self.x[index : index + 1] * keras.ops.cast(m, self.x.dtype)
        logits = _compiled(self._g, self._plan, "logits")(batch)
        return self._scores_of(logits, index)

    def score_ablated(self, layer: int, index: int, channels: np.ndarray) -> np.ndarray:
        """Target score of image ``index`` with channel ``channels[b]`` zeroed: ``(B,)`` float32.

        Only the head (the layer calls after the layer) runs, on the stored values of the image.
        """
        self._check_captured()
        lay = self._layers[layer]
        g = self._g
        plan = _plan(g, (lay.value,))
        ch = np.asarray(channels if isinstance(channels, np.ndarray) else _np_int(channels),
                        dtype=np.int64)
        b = len(ch)
        if lay.head_values is None:
            env = self._head_env
            missing = [v for v in plan.head_inputs if v not in env]
            if missing:  # values this layer's head reads that the joint pass did not keep
                full = _forward(g, _plan(g, tuple(sorted({*self._plan.targets, *missing}))), self.x)
                env = {**full, **env}
            lay.head_values = [env[v] for v in plan.head_inputs]
        values = []
        k_axis = 1 if lay.channels_first else 3
        for v, t in zip(plan.head_inputs, lay.head_values):
            row = t[index : index + 1] if len(t.shape) and int(t.shape[0]) == self.n else None
            if row is None:
                values.append(t)
                continue
            if v == lay.value:  # the row times a mask per copy: broadcasting makes the copies
                k = int(row.shape[k_axis])
                onehot = np.ones((b, k), dtype=np.float32)
                onehot[np.arange(b), ch] = 0.0
                shape = (b, k, 1, 1) if lay.channels_first else (b, 1, 1, k)
                mask = keras.ops.convert_to_tensor(onehot.reshape(shape))
                values.append(row * keras.ops.cast(mask, row.dtype))
            else:
                values.append(keras.ops.repeat(row, b, axis=0))
        logits = _compiled(g, plan, "head")(values)
        return self._scores_of(logits, index)


def _check_batch(x, shape) -> None:
    """An empty batch or NaN / Inf inputs are a ``ValueError`` before any (compiled) call."""
    if shape[0] == 0:
        raise ValueError("`inputs`: the batch is empty; need at least one image")
    if not bool(keras.ops.convert_to_numpy(keras.ops.all(keras.ops.isfinite(x)))):
        arr = keras.ops.convert_to_numpy(x)
        bad = ~np.isfinite(arr)
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`inputs` must be finite; got {arr[where]} at index {where} ({int(bad.sum())} "
            f"non-finite values in all)"
        )


# --------------------------------------------------------------------------- public entry points


def explain(
    model,
    inputs,
    *,
    method: str = "gradcam",
    layer=None,
    targets=None,
    fuse: str | None = None,
    upsample: str = "bilinear",
    batch_size: int = 64,
    progress: bool | None = None,
    core: str = "auto",
    maps_on_device: bool = False,
    layout: str | None = None,
    eigen_smooth: bool = False,
    method_options: dict | None = None,
) -> Explanation:
    """Explain a batch of a Keras classifier with a class activation map method.

    Parameters
    ----------
    model : keras.Model
        A functional model or a built Sequential (nested models included) returning ``(N, C)``
        scores; a softmax on its last Dense is skipped (logits are pre-softmax). Never modified;
        its layers run with ``training=False``.
    inputs : ndarray or backend tensor, shape (N, H, W, C)
        The batch as the model takes it (``(N, C, H, W)`` for a channels-first model).
    method : str
        One of :data:`cam_core.explain.METHODS`.
    layer : str, keras layer, a list of them, or None
        A name, a path through nested models (``"resnet50/conv5_block3_out"``) or the layer; None
        finds the last 4-D feature map before global pooling. Several layers are captured in one
        pass and fused.
    targets, fuse, upsample, batch_size, progress
        As in :func:`cam_core.adapters.torch.explain`; a callable target gets the Keras logits
        tensor ``(N, C)`` and returns ``(N,)`` scores.
    core : {"auto", "device", "numpy"}
        Where the core computes. On the torch and JAX backends, ``"auto"`` hands the layer's
        tensors to the core where they are when they live on an accelerator (only the final maps
        cross to the host) and uses NumPy on the CPU; ``"device"`` always hands them over (CPU
        tensors included); ``"numpy"`` copies them to the host first. The TensorFlow backend
        always uses NumPy (``"device"`` is a ``ValueError`` there).
    maps_on_device : bool
        Keep ``maps`` and ``raw`` as backend tensors where the core computed them.
    layout : {None, "channels_first", "channels_last"}
        The layout of the layers' 4-D outputs; None takes a layer's own ``data_format``, else
        the one reading whose grid has the input's aspect, else the model's format.
    eigen_smooth : bool
        As in :func:`cam_core.adapters.torch.explain`.
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
    with KerasSession(
        model, inputs, layer=method_layer(spec.name, layer),
        targets=session_targets(spec.name, targets), weights=spec.needs_weights, core=core,
        layout=layout
    ) as session:
        return explain_session(
            session, spec.name, fuse=fuse, upsample=upsample, batch_size=batch_size,
            progress=progress, maps_on_device=bool(maps_on_device),
            eigen_smooth=bool(eigen_smooth), method_options=method_options,
        )


def capture(
    model, inputs, *, layer=None, targets=None, gradients: bool = True, layout=None,
    hvp: bool = False,
) -> list[Capture]:
    """Record activations, gradients, logits and the CAM weights of one batch.

    Parameters are as in :func:`explain`; ``gradients=False`` skips the gradient step;
    ``hvp=True`` adds the Hessian-vector products ``H A`` (ShapleyCAM's; ``Capture.hvp``).

    Returns
    -------
    list of cam_core.explain.Capture
        One per layer, in the order given; float32 NumPy arrays, channels-first ``(N, K, h, w)``.
    """
    with KerasSession(model, inputs, layer=layer, targets=targets, layout=layout) as session:
        return session.capture(gradients=bool(gradients), hvp=bool(hvp))


def rest_target(classes=None):
    """ShapleyCAM's ReST score as a ``targets`` callable: ``2 z_c - logsumexp(z)`` (see
    :func:`cam_core.adapters.torch.rest_target`), in ``keras.ops``."""

    def rest(logits):
        if classes is None:
            ids = keras.ops.argmax(logits, axis=1)
        else:
            ids = keras.ops.convert_to_tensor(
                resolve_targets(classes, np.zeros(tuple(logits.shape))).astype(np.int32))
        return 2 * _select(logits, ids) - keras.ops.logsumexp(logits, axis=1)

    return rest


def guided_backprop(model, inputs, *, targets=None) -> np.ndarray:
    """Guided backpropagation of the target scores to the inputs, in the inputs' layout, float32
    NumPy (see :meth:`KerasSession.guided_gradients`); ``targets`` as in :func:`explain`.
    :func:`cam_core.explain.explain_guided` multiplies it by a CAM."""
    with KerasSession(model, inputs, targets=targets, weights=False) as session:
        return session.guided_gradients()[0]


def randomized_copy(model, layers, /, *, seed: int = 0):
    """A copy of ``model`` (``keras.models.clone_model`` and its weights) with the weights of
    ``layers`` re-initialised, as :func:`cam_core.adapters.torch.randomized_copy` does: kernels
    He-normal (``fan_in`` the product of all but the last axis), ``bias`` and ``beta`` 0,
    ``gamma`` 1, moving statistics kept; draws from ``default_rng([seed, i])`` per weight ``i``.

    Parameters
    ----------
    model : keras.Model
    layers : str or sequence of str
        Layer names or paths, as :func:`find_layer` takes them.
    seed : int

    Returns
    -------
    keras.Model
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    i = 0
    for name in names:
        _, lay = find_layer(clone, name)
        for v in lay.weights:
            short = v.path.split("/")[-1] if hasattr(v, "path") else v.name.split("/")[-1]
            if "moving" in short:
                continue
            rng = np.random.default_rng([int(seed), i])
            i += 1
            shape = tuple(v.shape)
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[:-1]))
                new = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
            else:
                new = np.zeros(shape) if short.startswith(("bias", "beta")) else np.ones(shape)
            v.assign(new.astype(str(np.dtype(keras.backend.standardize_dtype(v.dtype)))))
    return clone


def inputs_from_nhwc(x_nhwc: np.ndarray) -> np.ndarray:
    """A preprocessed float32 NHWC batch as a Keras model takes it: unchanged."""
    return x_nhwc
