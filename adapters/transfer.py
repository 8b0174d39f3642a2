"""Copy the weights of a torch model into its Keras mirror.

The mapping is by name: a Keras layer that holds weights is paired with the torch module whose
dotted path equals the layer's path (the names of enclosing nested Keras models joined with ".",
then the layer's name), as the mirrored models of :mod:`cam_core.adapters.models_keras` are
built. Keras on TensorFlow refuses names that start with "_", so a torch path with private-style
components (``_blocks.3._bn1``) is also matched by the same path with the leading underscores of
each component removed (``blocks.3.bn1``; :func:`keras_name`). ``mapping`` renames paths for
other pairs. Layouts are converted per kind:

==========================  ==========================================  =========================
torch module                torch tensor                                 Keras variable
==========================  ==========================================  =========================
``Conv2d`` (groups=1)       ``weight`` (O, I, kh, kw), ``bias`` (O,)      ``kernel`` (kh, kw, I, O)
``Conv2d`` (depthwise)      ``weight`` (I*m, 1, kh, kw)                   ``kernel`` (kh, kw, I, m)
``Linear``                  ``weight`` (out, in), ``bias``                ``kernel`` (in, out)
``BatchNorm1d/2d``          ``weight, bias, running_mean, running_var``  ``gamma, beta,
                                                                         moving_mean,
                                                                         moving_variance``
==========================  ==========================================  =========================

Every tensor of the torch ``state_dict`` must be used exactly once (BatchNorm's
``num_batches_tracked`` counter has no Keras counterpart and is the only one skipped); anything
else is a ``ValueError`` that names the layer and both shapes, and nothing is written unless the
whole model checks out.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
from torch import nn

__all__ = ["keras_name", "keras_weight_layers", "torch_to_keras", "weight_differences"]

_SKIPPED_BUFFERS = ("num_batches_tracked",)


def keras_name(torch_path: str, /) -> str:
    """The Keras name of a torch module path: each dotted component without leading underscores."""
    return ".".join(part.lstrip("_") or part for part in torch_path.split("."))


def keras_weight_layers(keras_model, /) -> dict[str, keras.layers.Layer]:
    """Every layer of ``keras_model`` that holds weights, by path (nested models joined with ".")."""
    if not isinstance(keras_model, keras.Model):
        raise TypeError(f"`keras_model` must be a keras.Model; got {type(keras_model).__name__}")
    out: dict[str, keras.layers.Layer] = {}

    def walk(model, prefix):
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                walk(layer, f"{prefix}{layer.name}.")
            elif layer.weights:
                path = prefix + layer.name
                if path in out:
                    raise ValueError(f"`keras_model` has two layers at path {path!r}")
                out[path] = layer

    walk(keras_model, "")
    return out


def _pair(v) -> tuple[int, int]:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return (int(v[0]), int(v[-1]))


def _plan_conv(path, mod, layer):
    if not isinstance(mod, nn.Conv2d):
        raise ValueError(f"layer {path!r}: Keras {type(layer).__name__} mirrors a torch Conv2d; "
                         f"got {type(mod).__name__}")
    if _pair(mod.stride) != _pair(layer.strides):
        raise ValueError(f"layer {path!r}: torch stride {tuple(mod.stride)} != Keras strides {tuple(layer.strides)}")
    if _pair(mod.dilation) != _pair(layer.dilation_rate):
        raise ValueError(
            f"layer {path!r}: torch dilation {tuple(mod.dilation)} != Keras dilation_rate {tuple(layer.dilation_rate)}"
        )
    w = mod.weight.detach().cpu().numpy()
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        if mod.groups != mod.in_channels:
            raise ValueError(
                f"layer {path!r}: Keras DepthwiseConv2D mirrors a depthwise torch Conv2d "
                f"(groups == in_channels); got groups={mod.groups}, in_channels={mod.in_channels}"
            )
        o, _, kh, kw = w.shape
        m = o // mod.in_channels
        value = w.reshape(mod.in_channels, m, kh, kw).transpose(2, 3, 0, 1)
    else:
        if mod.groups != 1:
            raise ValueError(f"layer {path!r}: Keras Conv2D mirrors a torch Conv2d with groups=1; "
                             f"got groups={mod.groups}")
        value = w.transpose(2, 3, 1, 0)
    return value


def _plan(path, mod, layer):
    """``[(keras variable, value, torch key suffix, torch shape)]`` for one layer pair."""
    items = []
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        items.append((layer.kernel, _plan_conv(path, mod, layer), "weight", tuple(mod.weight.shape)))
        items += _bias(path, mod, layer)
    elif isinstance(layer, keras.layers.Dense):
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"layer {path!r}: Keras Dense mirrors a torch Linear; got {type(mod).__name__}")
        w = mod.weight.detach().cpu().numpy()
        items.append((layer.kernel, w.T, "weight", tuple(w.shape)))
        items += _bias(path, mod, layer)
    elif isinstance(layer, keras.layers.BatchNormalization):
        if not isinstance(mod, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"layer {path!r}: Keras BatchNormalization mirrors a torch BatchNorm; "
                             f"got {type(mod).__name__}")
        if not np.isclose(float(mod.eps), float(layer.epsilon), rtol=1e-6, atol=0.0):
            raise ValueError(
                f"layer {path!r}: BatchNorm epsilon differs: torch eps={mod.eps}, Keras epsilon={layer.epsilon}"
            )
        if not mod.track_running_stats:
            raise ValueError(f"layer {path!r}: the torch BatchNorm keeps no running statistics")
        affine = bool(mod.affine)
        if bool(layer.scale) != affine or bool(layer.center) != affine:
            raise ValueError(
                f"layer {path!r}: torch BatchNorm affine={affine}, Keras scale={layer.scale}, center={layer.center}"
            )
        pairs = [("running_mean", layer.moving_mean), ("running_var", layer.moving_variance)]
        if affine:
            pairs = [("weight", layer.gamma), ("bias", layer.beta)] + pairs
        for key, var in pairs:
            t = getattr(mod, key).detach().cpu().numpy()
            items.append((var, t, key, tuple(t.shape)))
    else:
        raise ValueError(
            f"layer {path!r}: no rule to transfer weights into a Keras {type(layer).__name__} "
            "(Conv2D, DepthwiseConv2D, Dense and BatchNormalization are supported)"
        )
    return items


def _bias(path, mod, layer):
    has_t = mod.bias is not None
    has_k = bool(layer.use_bias)
    if has_t != has_k:
        raise ValueError(f"layer {path!r}: torch bias={'yes' if has_t else 'none'}, Keras use_bias={has_k}")
    if not has_t:
        return []
    b = mod.bias.detach().cpu().numpy()
    return [(layer.bias, b, "bias", tuple(b.shape))]


def torch_to_keras(torch_model, keras_model, /, *, mapping: Mapping[str, str] | None = None):
    """Copy ``torch_model``'s weights and BatchNorm statistics into its Keras mirror ``keras_model``.

    Parameters
    ----------
    torch_model : torch.nn.Module
        The source; it is only read.
    keras_model : keras.Model
        The mirror (built); its weights are overwritten, all or none.
    mapping : mapping of str to str, optional
        Keras layer path -> torch module path, for layers whose names differ (default: equal).

    Returns
    -------
    keras.Model
        ``keras_model``.

    Raises
    ------
    ValueError
        A Keras weight layer with no torch module of the same path or of the wrong kind; a shape,
        stride, dilation, bias or BatchNorm-epsilon mismatch (naming the layer and both values);
        a torch tensor used twice or never used.
    """
    if not isinstance(torch_model, nn.Module):
        raise TypeError(f"`torch_model` must be a torch.nn.Module; got {type(torch_model).__name__}")
    mapping = dict(mapping or {})
    modules = dict(torch_model.named_modules())
    by_keras_name: dict[str, str] = {}
    for name in modules:
        by_keras_name.setdefault(keras_name(name), name)
    state = torch_model.state_dict(keep_vars=False)
    used: dict[str, str] = {}
    writes = []
    for path, layer in keras_weight_layers(keras_model).items():
        tpath = mapping.get(path, path)
        if tpath not in modules:
            tpath = by_keras_name.get(tpath, tpath)
        mod = modules.get(tpath)
        if mod is None or tpath == "":
            raise ValueError(
                f"Keras layer {path!r} has no torch module named {tpath!r} in "
                f"{type(torch_model).__name__}"
            )
        for var, value, key, tshape in _plan(path, mod, layer):
            full = f"{tpath}.{key}"
            if full not in state:
                raise ValueError(f"layer {path!r}: torch state_dict has no entry {full!r}")
            if full in used:
                raise ValueError(
                    f"torch tensor {full!r} is used twice: by Keras layers {used[full]!r} and {path!r}"
                )
            used[full] = path
            kshape = tuple(var.shape)
            if tuple(value.shape) != kshape:
                raise ValueError(
                    f"layer {path!r}: torch {key} of shape {tshape} does not fit Keras "
                    f"{var.name} of shape {kshape}"
                )
            writes.append((var, value))
    left = [k for k in state if k not in used and not k.endswith(_SKIPPED_BUFFERS)]
    if left:
        more = f" and {len(left) - 8} more" if len(left) > 8 else ""
        raise ValueError(
            f"{len(left)} torch tensor(s) have no Keras counterpart: {', '.join(left[:8])}{more}"
        )
    for var, value in writes:
        var.assign(np.ascontiguousarray(value, dtype=np.dtype(var.dtype)))
    return keras_model


def weight_differences(torch_model, keras_model, /, *, mapping: Mapping[str, str] | None = None
                       ) -> dict[str, float]:
    """``max |torch - Keras|`` per paired tensor, the torch tensor in the Keras layout.

    The pairing and the layouts are those of :func:`torch_to_keras` (after a transfer every
    value is 0; after both copies were trained, the distance between them). Keys are
    ``"<keras layer path>/<torch key>"`` (e.g. ``"fc/weight"``); a pair that cannot be made is
    the same ``ValueError`` as in :func:`torch_to_keras`.
    """
    if not isinstance(torch_model, nn.Module):
        raise TypeError(f"`torch_model` must be a torch.nn.Module; got {type(torch_model).__name__}")
    mapping = dict(mapping or {})
    modules = dict(torch_model.named_modules())
    by_keras_name: dict[str, str] = {}
    for name in modules:
        by_keras_name.setdefault(keras_name(name), name)
    out: dict[str, float] = {}
    for path, layer in keras_weight_layers(keras_model).items():
        tpath = mapping.get(path, path)
        tpath = tpath if tpath in modules else by_keras_name.get(tpath, tpath)
        mod = modules.get(tpath)
        if mod is None or tpath == "":
            raise ValueError(
                f"Keras layer {path!r} has no torch module named {tpath!r} in "
                f"{type(torch_model).__name__}"
            )
        for var, value, key, _ in _plan(path, mod, layer):
            kv = keras.ops.convert_to_numpy(var.value).astype(np.float64)
            out[f"{path}/{key}"] = float(np.max(np.abs(kv - value.astype(np.float64)), initial=0.0))
    return out
