"""Annotation readers: the WSOL metadata layout, Pascal VOC / ImageNet XML, and CSV boxes; every
malformed line is a ``ValueError`` that starts with ``path:line:``."""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from xml.parsers import expat

import numpy as np
from PIL import Image

from cam_core.data.records import Dataset, Record, frozen

# --------------------------------------------------------------------------------------------
# annotation-file parsing


def _err(path, line: int | None, message: str) -> ValueError:
    where = f"{path}:{line}" if line is not None else f"{path}"
    return ValueError(f"{where}: {message}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (spreadsheets) is dropped
    except FileNotFoundError:
        raise ValueError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the annotation file ({exc})") from exc
    return [(i, s.strip()) for i, s in enumerate(text.splitlines(), 1) if s.strip()]


def _int(text: str, path, line: int, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise _err(path, line, f"{what} must be a number; got {text.strip()!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise _err(path, line, f"{what} must be a whole number; got {text.strip()!r}")
    return int(value)


def _fields(text: str, n: int, path, line: int, layout: str) -> list[str]:
    cells = [c.strip() for c in text.split(",")]
    if len(cells) != n:
        raise _err(path, line, f"expected {n} comma-separated fields ({layout}); got {text!r}")
    return cells


def _check_box(box: tuple[int, int, int, int], size: tuple[int, int], path, line, shown: str):
    """``box`` is half-open; ``shown`` is the box as the file writes it, for the message."""
    x0, y0, x1, y1 = box
    width, height = size
    if x1 <= x0 or y1 <= y0:
        raise _err(path, line, f"box {shown} is empty or inverted (x1 < x0 or y1 < y0)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise _err(
            path, line, f"box {shown} lies outside the {width}x{height} image (width x height)"
        )


def read_class_names(path, *, column: str = "names") -> tuple[str, ...]:
    """Read a class table such as ``classes.tsv`` of the ImageNet subset.

    The file is tab-separated with a header row holding an ``index`` column and ``column``
    (``index<TAB>wnid<TAB>names`` for ImageNet). The indices must be ``0 .. C-1``, each once.

    Parameters
    ----------
    path : str or path-like
        The TSV file.
    column : str
        The column to return: ``"names"`` (e.g. ``"tabby, tabby cat"``) or ``"wnid"``.

    Returns
    -------
    tuple of str, length C
        Entry ``i`` belongs to class index ``i``.
    """
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise _err(path, None, "the class table is empty")
    head_line, head = lines[0]
    header = [h.strip() for h in head.split("\t")]
    if "index" not in header or column not in header:
        raise _err(
            path, head_line,
            f"the header must name the columns 'index' and {column!r}; got {header}",
        )
    i_col, v_col = header.index("index"), header.index(column)
    values: dict[int, str] = {}
    for line, text in lines[1:]:
        cells = text.split("\t")
        if len(cells) != len(header):
            raise _err(path, line, f"expected {len(header)} tab-separated fields; got {len(cells)}")
        index = _int(cells[i_col], path, line, "the class index")
        if index in values:
            raise _err(path, line, f"class index {index} appears twice")
        values[index] = cells[v_col].strip()
    missing = sorted(set(range(len(values))) - set(values))
    if missing:
        raise _err(path, None, f"class indices must run 0..{len(values) - 1}; {missing[0]} is missing")
    return tuple(values[i] for i in range(len(values)))


def read_wsol(root, *, split: str | None = None) -> Dataset:
    """Read a dataset in the metadata layout of the WSOL benchmark (Choe et al., CVPR 2020).

    Layout under ``root``: ``metadata/image_ids.txt`` (one image path per line, relative to
    ``root``), ``metadata/class_labels.txt`` (``id,label``), ``metadata/image_sizes.txt``
    (``id,width,height`` of the ORIGINAL image) and ``metadata/localization.txt``
    (``id,x0,y0,x1,y1``, inclusive 0-based corners in original pixels, one line per box), and
    optionally ``metadata/classes.tsv`` (see :func:`read_class_names`).

    Every id must have exactly one label and one size, every listed image file must exist, and
    every box must lie inside its original image; otherwise ``ValueError`` naming file and line.

    Parameters
    ----------
    root : str or path-like
        The dataset folder (e.g. ``../shared/data/imagenet-val-1300``).
    split : str, optional
        Read ``metadata/<split>/`` instead of ``metadata/`` (one metadata folder per split, e.g.
        ``../shared/data/tiny-imagenet-dogs`` with ``"train"`` and ``"val"``); ``classes.tsv``
        is looked up there first, then in ``metadata/``.

    Returns
    -------
    Dataset
        Records in the order of ``image_ids.txt``; boxes half-open in original pixels.
    """
    root = Path(root)
    meta = root / "metadata"
    if split is not None:
        if not isinstance(split, str) or not split or "/" in split or split in (".", ".."):
            raise ValueError(f"`split` must be the name of a folder under metadata/; got {split!r}")
        meta = meta / split
    ids_path = meta / "image_ids.txt"
    order: dict[str, int] = {}
    for line, text in _lines(ids_path):
        if text in order:
            raise _err(ids_path, line, f"image id {text!r} is listed twice")
        if not (root / text).is_file():
            raise _err(ids_path, line, f"image file {root / text} does not exist")
        order[text] = line
    if not order:
        raise _err(ids_path, None, "no image ids")

    def per_image(name: str, n: int, layout: str) -> dict[str, tuple[list[int], int]]:
        path = meta / name
        out: dict[str, tuple[list[int], int]] = {}
        for line, text in _lines(path):
            cells = _fields(text, n, path, line, layout)
            if cells[0] not in order:
                raise _err(path, line, f"unknown image id {cells[0]!r} (not in image_ids.txt)")
            if cells[0] in out:
                raise _err(path, line, f"image id {cells[0]!r} appears twice")
            out[cells[0]] = ([_int(c, path, line, "a value") for c in cells[1:]], line)
        for image_id, line in order.items():
            if image_id not in out:
                raise _err(ids_path, line, f"image {image_id!r} has no entry in {path}")
        return out

    labels = per_image("class_labels.txt", 2, "id,label")
    sizes = per_image("image_sizes.txt", 3, "id,width,height")
    classes_path = meta / "classes.tsv"
    if split is not None and not classes_path.is_file():
        classes_path = meta.parent / "classes.tsv"
    class_names = read_class_names(classes_path) if classes_path.is_file() else None

    for _image_id, ((label,), line) in labels.items():
        if label < 0 or (class_names is not None and label >= len(class_names)):
            limit = f"0..{len(class_names) - 1}" if class_names is not None else ">= 0"
            raise _err(meta / "class_labels.txt", line, f"label {label} is not in {limit}")
    for _image_id, ((w, h), line) in sizes.items():
        if w < 1 or h < 1:
            raise _err(meta / "image_sizes.txt", line, f"size {w}x{h} must be positive")

    loc_path = meta / "localization.txt"
    boxes: dict[str, list[tuple[int, int, int, int]]] = {k: [] for k in order}
    for line, text in _lines(loc_path):
        cells = _fields(text, 5, loc_path, line, "id,x0,y0,x1,y1")
        if cells[0] not in order:
            raise _err(loc_path, line, f"unknown image id {cells[0]!r} (not in image_ids.txt)")
        x0, y0, x1, y1 = (_int(c, loc_path, line, "a box corner") for c in cells[1:])
        box = (x0, y0, x1 + 1, y1 + 1)
        _check_box(box, tuple(sizes[cells[0]][0]), loc_path, line, f"({x0}, {y0}, {x1}, {y1})")
        boxes[cells[0]].append(box)

    records = tuple(
        Record(
            id=image_id,
            path=root / image_id,
            label=labels[image_id][0][0],
            boxes=frozen(np.array(boxes[image_id], dtype=np.int64).reshape(-1, 4)),
            size=(sizes[image_id][0][0], sizes[image_id][0][1]),
        )
        for image_id in order
    )
    return Dataset(records, class_names)


def read_voc(annotations_dir, images_dir, *, class_index: Mapping[str, int] | None = None,
             origin: int = 0) -> Dataset:
    """Read PASCAL-VOC-style XML annotations (the format of ImageNet and Stanford Dogs boxes).

    Each ``*.xml`` file of ``annotations_dir`` (sorted by name) describes one image:
    ``<filename>``, ``<size><width>/<height>``, and one ``<object>`` per box with ``<name>`` and
    ``<bndbox><xmin>/<ymin>/<xmax>/<ymax>`` as inclusive corner pixels. The image file is
    ``images_dir / filename``; when ``filename`` lacks an extension (ImageNet XML writes the bare
    id), ``.JPEG``, ``.jpg``, ``.jpeg`` and ``.png`` are tried.

    Coordinates: ``origin=0`` (the default) reads the first pixel as 0, as the ILSVRC and
    Stanford Dogs XML are read by the WSOL benchmark (whose ImageNet boxes reach at most
    ``width - 1``); ``origin=1`` is the PASCAL VOC convention (first pixel 1, ``xmax`` up to
    ``width``). Both become half-open 0-based boxes.

    One class per image: all objects of a file must share a name (WSOL images show one class);
    mixed names are a ``ValueError``, never a silent choice.

    Parameters
    ----------
    annotations_dir, images_dir : str or path-like
        The XML folder and the image folder.
    class_index : mapping of str to int, optional
        Object name (e.g. ImageNet wnid) -> class index. Left out: the sorted distinct names get
        indices 0, 1, ..., and become the dataset's ``class_names``. An object name missing from
        the mapping is a ``ValueError``.
    origin : {0, 1}
        The index of the first pixel in the files.

    Returns
    -------
    Dataset
        One record per XML file, boxes half-open in original pixels.
    """
    if origin not in (0, 1):
        raise ValueError(f"`origin` must be 0 or 1; got {origin!r}")
    ann_dir, img_dir = Path(annotations_dir), Path(images_dir)
    if not ann_dir.is_dir():
        raise ValueError(f"`annotations_dir` must be a folder; got {ann_dir}")
    files = sorted(ann_dir.glob("*.xml"))
    if not files:
        raise ValueError(f"`annotations_dir` {ann_dir} holds no .xml files")

    raw = [_voc_file(path, img_dir, origin) for path in files]
    names_seen = {entry[3][0] for entry in raw}

    if class_index is None:
        class_names = tuple(sorted(names_seen))
        lookup = {n: i for i, n in enumerate(class_names)}
    else:
        class_names = None
        lookup = dict(class_index)
    records = []
    for path, filename, image_path, (name, line), boxes, size in raw:
        if name not in lookup:
            raise _err(path, line, f"object name {name!r} is not in `class_index`")
        records.append(Record(
            id=filename, path=image_path, label=int(lookup[name]),
            boxes=frozen(np.array(boxes, dtype=np.int64).reshape(-1, 4)), size=size,
        ))
    return Dataset(tuple(records), class_names)


def _xml_text(node, tag: str, path: Path, lines: dict) -> tuple[str, int]:
    """The stripped text of ``node``'s child ``tag`` and its line; missing or empty is an error."""
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise _err(path, lines[id(node)], f"<{tag}> is missing or empty in <{node.tag}>")
    return child.text.strip(), lines[id(child)]


def _voc_file(path: Path, img_dir: Path, origin: int) -> tuple:
    """One VOC XML file: (path, filename, image path, (class name, its line), half-open boxes,
    (width, height)); every defect is a ``ValueError`` naming the file and the line."""
    root_node, lines = _parse_xml(path)
    filename, file_line = _xml_text(root_node, "filename", path, lines)
    size_node = root_node.find("size")
    if size_node is None:
        raise _err(path, lines[id(root_node)], "<size> is missing")
    (w_text, w_line) = _xml_text(size_node, "width", path, lines)
    (h_text, h_line) = _xml_text(size_node, "height", path, lines)
    width = _int(w_text, path, w_line, "<width>")
    height = _int(h_text, path, h_line, "<height>")
    if width < 1 or height < 1:
        raise _err(path, lines[id(size_node)], f"image size {width}x{height} must be positive")
    image_path = _find_image(img_dir, filename)
    if image_path is None:
        raise _err(path, file_line, f"image {filename!r} not found in {img_dir}")
    boxes, names = _voc_objects(root_node, path, lines, origin, (width, height))
    return path, filename, image_path, names[0], boxes, (width, height)


def _voc_objects(root_node, path: Path, lines: dict, origin: int, size: tuple[int, int]):
    """The half-open boxes of a file's ``<object>`` elements and their (name, line) pairs, all
    of one class."""
    boxes, names = [], []
    for obj in root_node.findall("object"):
        name, name_line = _xml_text(obj, "name", path, lines)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise _err(path, lines[id(obj)], f"object {name!r} has no <bndbox>")
        corners = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            value, line = _xml_text(bnd, tag, path, lines)
            corners.append(_int(value, path, line, f"<{tag}>"))
        x0, y0, x1, y1 = corners
        box = (x0 - origin, y0 - origin, x1 - origin + 1, y1 - origin + 1)
        _check_box(box, size, path, lines[id(bnd)],
                   f"({x0}, {y0}, {x1}, {y1}) with origin {origin}")
        boxes.append(box)
        names.append((name, name_line))
    if not names:
        raise _err(path, lines[id(root_node)], "no <object>: the image has no class label")
    for name, line in names[1:]:
        if name != names[0][0]:
            raise _err(path, line, f"object class {name!r} differs from {names[0][0]!r} of "
                                   "the first object; one class per image is expected")
    return boxes, names


def _parse_xml(path: Path):
    """Parse an XML file into an ElementTree element and a map id(element) -> line number."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _err(path, None, f"cannot read the annotation file ({exc})") from exc
    builder = ET.TreeBuilder()
    lines: dict[int, int] = {}
    parser = expat.ParserCreate()

    def start(tag, attrs):
        lines[id(builder.start(tag, attrs))] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise _err(path, exc.lineno, f"malformed XML ({expat.ErrorString(exc.code)})") from None
    return builder.close(), lines


def _find_image(images_dir: Path, filename: str) -> Path | None:
    candidate = images_dir / filename
    if candidate.is_file():
        return candidate
    if not Path(filename).suffix:
        for ext in (".JPEG", ".jpg", ".jpeg", ".png"):
            if (images_dir / (filename + ext)).is_file():
                return images_dir / (filename + ext)
    return None


def read_csv_boxes(path, *, images_dir, class_index: Mapping[str, int] | None = None) -> Dataset:
    """Read boxes from a plain CSV file with the header ``image,x0,y0,x1,y1,class``.

    One row per box; the rows of one image are gathered into one record (images in order of
    first appearance). ``image`` is a file name relative to ``images_dir``. The corners are
    already in this project's convention: half-open, 0-based, in the pixels of the image file
    (``x0 <= x < x1``; a box over a whole 640 x 480 image is ``0,0,640,480``). The original size
    is read from the image file's header. ``class`` is an integer class index, or a name looked
    up in ``class_index`` (left out: the sorted distinct names get 0, 1, ... and become the
    dataset's ``class_names``). All rows of an image must give the same class.

    Parameters
    ----------
    path : str or path-like
        The CSV file.
    images_dir : str or path-like
        The folder of the images.
    class_index : mapping of str to int, optional
        Class name -> index, for a ``class`` column of names.

    Returns
    -------
    Dataset
    """
    path, img_dir = Path(path), Path(images_dir)
    lines = _lines(path)
    if not lines:
        raise _err(path, None, "the file is empty; expected the header image,x0,y0,x1,y1,class")
    expected = ["image", "x0", "y0", "x1", "y1", "class"]
    head_line, head = lines[0]
    header = [h.strip().lower() for h in next(csv.reader([head]))]
    if header != expected:
        raise _err(path, head_line, f"the header must be {','.join(expected)}; got {head!r}")
    rows = []
    for line, text in lines[1:]:
        cells = [c.strip() for c in next(csv.reader([text]))]
        if len(cells) != 6:
            raise _err(path, line, f"expected 6 fields (image,x0,y0,x1,y1,class); got {text!r}")
        if not cells[0]:
            raise _err(path, line, "the image name is empty")
        if not cells[5]:
            raise _err(path, line, "the class is missing")
        rows.append((line, cells))
    if not rows:
        raise _err(path, None, "no rows after the header")

    numeric = all(_is_int(c[5]) for _, c in rows)
    if numeric:
        lookup, class_names = None, None
    elif class_index is not None:
        lookup, class_names = dict(class_index), None
    else:
        class_names = tuple(sorted({c[5] for _, c in rows}))
        lookup = {n: i for i, n in enumerate(class_names)}

    images: dict[str, dict] = {}
    for line, cells in rows:
        name = cells[0]
        if name not in images:
            image_path = img_dir / name
            try:
                with Image.open(image_path) as im:
                    size = im.size
            except FileNotFoundError:
                raise _err(path, line, f"image {name!r} not found in {img_dir}") from None
            except Exception as exc:
                raise _err(path, line, f"image {image_path} cannot be read ({exc})") from exc
            images[name] = {"path": image_path, "size": size, "label": None, "boxes": []}
        entry = images[name]
        corners = tuple(_int(c, path, line, "a box corner") for c in cells[1:5])
        _check_box(corners, entry["size"], path, line, str(corners))
        if lookup is None:
            label = _int(cells[5], path, line, "the class")
            if label < 0:
                raise _err(path, line, f"the class index must be >= 0; got {label}")
        elif cells[5] in lookup:
            label = int(lookup[cells[5]])
        else:
            raise _err(path, line, f"class {cells[5]!r} is not in `class_index`")
        if entry["label"] is not None and entry["label"] != label:
            raise _err(path, line, f"image {name!r} has class {entry['label']} on an earlier row "
                                   f"and {cells[5]!r} here; one class per image is expected")
        entry["label"] = label
        entry["boxes"].append(corners)
    records = tuple(
        Record(id=name, path=e["path"], label=e["label"],
               boxes=frozen(np.array(e["boxes"], dtype=np.int64).reshape(-1, 4)), size=e["size"])
        for name, e in images.items()
    )
    return Dataset(records, class_names)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


