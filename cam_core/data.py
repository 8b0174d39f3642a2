"""Datasets for weakly supervised localisation: readers for real data and a synthetic set.

**Boxes.** Every box this module returns is ``(x0, y0, x1, y1)`` on half-open pixel edges: it
covers the pixels ``x0 <= x < x1``, ``y0 <= y < y1``. Annotation files that store inclusive corner
pixels are converted once, here, when they are read:

========================  ===================================  ==============================
reader                    corners in the file                  conversion to half-open
========================  ===================================  ==============================
:func:`read_wsol`         inclusive, 0-based (first pixel 0)   ``(x0, y0, x1 + 1, y1 + 1)``
:func:`read_voc`          inclusive, ``origin``-based          ``(x0 - o, y0 - o, x1 - o + 1,
                          (ImageNet / Stanford Dogs XML: 0;    y1 - o + 1)`` with ``o = origin``
                          PASCAL VOC XML: 1)
:func:`read_csv_boxes`    already half-open, 0-based           none
========================  ===================================  ==============================

A box must lie inside its image (``0 <= x0 < x1 <= width``, same for y); anything else is a
``ValueError`` naming the file and the line.

**Original and working pixels.** A :class:`Record` keeps its boxes in the pixels of the ORIGINAL
image, with the original size ``(width, height)``. The stored file may have other pixels (the
ImageNet subset was squashed to 227 x 227 without cropping): boxes reach any working size
``(H, W)`` by scaling each edge, ``x * W / width``, ``y * H / height``, kept as floats
(:meth:`Dataset.boxes_at`, :func:`iter_batches`). Because the scaling is of edges, a box that
covers a whole image still covers the whole resized image.

**Sizes** given to this module are ``(height, width)`` (an int means a square), like every size
in the core; the original size of a record is ``(width, height)``, as annotation files write it.

**Errors.** A malformed, inconsistent or incomplete annotation file is a ``ValueError`` whose
message starts with ``path:line:``. Nothing is dropped silently: an image without a box keeps an
empty ``(0, 4)`` array, a label or size missing for an image is an error.

The synthetic set (:func:`make_synthetic`) draws one shape per image on textures cut from the
photographs that scikit-image ships (no download), with exact boxes and masks;
:func:`sample_photos` gives six of those photographs with this project's own box annotations.
"""

from __future__ import annotations

import csv
import functools
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import numpy as np
from PIL import Image

from cam_core._progress import progress_bar
from cam_core._validate import as_float_array, as_size, check_finite, physical_memory

__all__ = [
    "Batch",
    "Dataset",
    "Photo",
    "Record",
    "SHAPES",
    "SyntheticData",
    "iter_batches",
    "make_synthetic",
    "read_class_names",
    "read_csv_boxes",
    "read_voc",
    "read_wsol",
    "sample_photos",
    "scale_boxes",
]


# --------------------------------------------------------------------------------------------
# records and datasets


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Record:
    """One annotated image.

    Attributes
    ----------
    id : str
        The image's name in its annotation files (e.g. ``"val/ILSVRC2012_val_00000347.JPEG"``).
    path : pathlib.Path
        The image file.
    label : int
        The class index.
    boxes : ndarray of int64, shape (G, 4)
        Half-open boxes in ORIGINAL image pixels (read-only); ``(0, 4)`` when there is none.
    size : tuple of int
        The ORIGINAL image size ``(width, height)``, the frame of ``boxes``.
    """

    id: str
    path: Path
    label: int
    boxes: np.ndarray
    size: tuple[int, int]


def scale_boxes(boxes, /, from_size, to_size) -> np.ndarray:
    """Scale half-open boxes from one image size to another.

    Parameters
    ----------
    boxes : array_like, shape (G, 4)
        ``(x0, y0, x1, y1)`` in the pixels of an image of ``from_size``.
    from_size : tuple of int
        ``(width, height)`` of the frame of ``boxes`` (the annotation-file order).
    to_size : int or tuple of int
        The working size ``(height, width)`` (the core's order).

    Returns
    -------
    ndarray of float64, shape (G, 4)
        ``x * W / width`` and ``y * H / height`` for every edge.
    """
    b = _scalable_boxes(boxes)
    if from_size is None or isinstance(from_size, (int, np.integer)):
        raise TypeError(f"`from_size` must be a (width, height) pair; got {from_size!r}")
    height, width = as_size(from_size, "from_size")[::-1]  # checked as a pair; order (w, h)
    h, w = as_size(to_size, "to_size")
    with np.errstate(over="ignore"):
        out = b * np.array([w, h, w, h], dtype=np.float64) / np.array([width, height, width, height])
    if not np.isfinite(out).all():
        raise ValueError(f"`boxes` scaled by {to_size!r} / {from_size!r} overflow float64")
    return out


def _scalable_boxes(boxes) -> np.ndarray:
    """``boxes`` as finite float64 ``(G, 4)`` with ``x0 <= x1`` and ``y0 <= y1``."""

    b = as_float_array(boxes, "boxes").astype(np.float64, copy=False)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"`boxes` must have shape (G, 4); got {b.shape}")
    check_finite(b, "boxes")
    inverted = np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))
    if inverted.size:
        i = int(inverted[0])
        raise ValueError(
            f"`boxes` must have x0 <= x1 and y0 <= y1; got {b[i].tolist()} at row {i}"
        )
    return b


@dataclass(frozen=True)
class Dataset:
    """An ordered collection of :class:`Record` with optional class names.

    ``len(ds)``, ``ds[i]`` (a :class:`Record`), ``ds[2:10]``, ``ds[[0, 5]]`` and ``ds[mask]``
    (a :class:`Dataset`, the subset in the given order) and iteration over records all work.
    """

    records: tuple[Record, ...]
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self.records[int(key)]
        if isinstance(key, slice):
            return Dataset(self.records[key], self.class_names)
        idx = np.asarray(key)
        if idx.size == 0 and idx.ndim == 1:
            return Dataset((), self.class_names)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"a boolean index must have shape ({len(self)},); got {idx.shape}"
                )
            idx = np.flatnonzero(idx)
        elif idx.dtype.kind not in "iu" or idx.ndim != 1:
            raise TypeError(
                "a Dataset is indexed by an int, a slice, a 1-D integer array or a boolean mask; "
                f"got {type(key).__name__}"
            )
        n = len(self)
        bad = idx[(idx < -n) | (idx >= n)]
        if bad.size:
            raise IndexError(f"index {int(bad[0])} is out of range for {n} records")
        return Dataset(tuple(self.records[int(i)] for i in idx), self.class_names)

    @property
    def ids(self) -> tuple[str, ...]:
        """The image ids, in order."""
        return tuple(r.id for r in self.records)

    @property
    def labels(self) -> np.ndarray:
        """The class indices, shape (N,), int64."""
        return np.array([r.label for r in self.records], dtype=np.int64)

    @property
    def sizes(self) -> np.ndarray:
        """The original sizes ``(width, height)``, shape (N, 2), int64."""
        return np.array([r.size for r in self.records], dtype=np.int64).reshape(-1, 2)

    @property
    def boxes(self) -> list[np.ndarray]:
        """The boxes of every record in original pixels, each (G, 4) int64."""
        return [r.boxes for r in self.records]

    def boxes_at(self, size) -> list[np.ndarray]:
        """The boxes of every record scaled to the working size ``(H, W)`` (see :func:`scale_boxes`)."""
        as_size(size)
        return [scale_boxes(r.boxes, r.size, size) for r in self.records]


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
            boxes=_frozen(np.array(boxes[image_id], dtype=np.int64).reshape(-1, 4)),
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

    raw = []
    names_seen: set[str] = set()
    for path in files:
        root_node, lines = _parse_xml(path)

        def text_of(node, tag: str, path=path, lines=lines) -> tuple[str, int]:
            child = node.find(tag)
            if child is None or child.text is None or not child.text.strip():
                raise _err(path, lines[id(node)], f"<{tag}> is missing or empty in <{node.tag}>")
            return child.text.strip(), lines[id(child)]

        filename, file_line = text_of(root_node, "filename")
        size_node = root_node.find("size")
        if size_node is None:
            raise _err(path, lines[id(root_node)], "<size> is missing")
        (w_text, w_line), (h_text, h_line) = text_of(size_node, "width"), text_of(size_node, "height")
        width = _int(w_text, path, w_line, "<width>")
        height = _int(h_text, path, h_line, "<height>")
        if width < 1 or height < 1:
            raise _err(path, lines[id(size_node)], f"image size {width}x{height} must be positive")
        image_path = _find_image(img_dir, filename)
        if image_path is None:
            raise _err(path, file_line, f"image {filename!r} not found in {img_dir}")
        boxes, names = [], []
        for obj in root_node.findall("object"):
            name, name_line = text_of(obj, "name")
            bnd = obj.find("bndbox")
            if bnd is None:
                raise _err(path, lines[id(obj)], f"object {name!r} has no <bndbox>")
            corners = []
            for tag in ("xmin", "ymin", "xmax", "ymax"):
                value, line = text_of(bnd, tag)
                corners.append(_int(value, path, line, f"<{tag}>"))
            x0, y0, x1, y1 = corners
            box = (x0 - origin, y0 - origin, x1 - origin + 1, y1 - origin + 1)
            _check_box(box, (width, height), path, lines[id(bnd)],
                       f"({x0}, {y0}, {x1}, {y1}) with origin {origin}")
            boxes.append(box)
            names.append((name, name_line))
        if not names:
            raise _err(path, lines[id(root_node)], "no <object>: the image has no class label")
        for name, line in names[1:]:
            if name != names[0][0]:
                raise _err(path, line, f"object class {name!r} differs from {names[0][0]!r} of "
                                       "the first object; one class per image is expected")
        names_seen.add(names[0][0])
        raw.append((path, filename, image_path, names[0], boxes, (width, height)))

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
            boxes=_frozen(np.array(boxes, dtype=np.int64).reshape(-1, 4)), size=size,
        ))
    return Dataset(tuple(records), class_names)


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
               boxes=_frozen(np.array(e["boxes"], dtype=np.int64).reshape(-1, 4)), size=e["size"])
        for name, e in images.items()
    )
    return Dataset(records, class_names)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# streaming


@dataclass(frozen=True)
class Batch:
    """One batch of :func:`iter_batches`.

    Attributes
    ----------
    images : ndarray of uint8, shape (B, H, W, 3)
        RGB, resized to the working size with Pillow's bilinear filter.
    labels : ndarray of int64, shape (B,)
    boxes : list of ndarray of float64, each (G, 4)
        Half-open boxes in the working frame: ``x * W / width_orig``, ``y * H / height_orig``.
    ids : tuple of str
    sizes : ndarray of int64, shape (B, 2)
        The original sizes ``(width, height)``.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: list[np.ndarray]
    ids: tuple[str, ...]
    sizes: np.ndarray


_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


def to_rgb8(im: Image.Image) -> Image.Image:
    """A Pillow image as 8-bit RGB; 16-bit images are scaled (``round(v * 255 / 65535)``).

    Pillow's own ``convert("RGB")`` clips 16-bit values at 255, so a 16-bit PNG would come out
    all white. 32-bit integer and float images have no agreed range and are refused
    (``ValueError``; the caller names the file).
    """
    if im.mode in _WIDE_MODES:
        a = np.asarray(im).astype(np.uint32)
        a8 = ((a * 255 + _WIDE_MODES[im.mode] // 2) // _WIDE_MODES[im.mode]).astype(np.uint8)
        return Image.fromarray(a8, mode="L").convert("RGB")
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        if im.mode == "I" and im.format == "PNG":  # Pillow reads some 16-bit PNGs as "I"
            a = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
            return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8),
                                   mode="L").convert("RGB")
        raise ValueError(f"{im.mode!r} pixels (32-bit integers or floats) have no agreed range; "
                         "save the image as 8- or 16-bit")
    return im.convert("RGB")


def _load_rgb(path: Path, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = to_rgb8(im)
            if size_wh is not None and im.size != size_wh:
                im = im.resize(size_wh, Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def iter_batches(dataset: Dataset, *, batch_size: int = 32, size=(224, 224),
                 progress: bool | None = False) -> Iterator[Batch]:
    """Stream a dataset as resized batches, so that memory stays flat however large it is.

    Images are read with Pillow, converted to RGB (EXIF orientation is NOT applied: annotations
    refer to the stored pixel grid) and resized to ``size`` with Pillow's bilinear filter, the
    aspect ratio not kept. Boxes are scaled from the original size (see :func:`scale_boxes`).

    Parameters
    ----------
    dataset : Dataset
    batch_size : int
        Images per batch (the last batch may be smaller).
    size : int or tuple of int
        The working size ``(H, W)``.
    progress : bool or None
        A tqdm bar over batches: True shows one, None only on a terminal for two or more batches
        (the package's policy, :mod:`cam_core._progress`).

    Yields
    ------
    Batch
        An image that cannot be read is a ``ValueError`` naming its file.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"`dataset` must be a Dataset; got {type(dataset).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}")
    h, w = as_size(size)
    starts = progress_bar(range(0, len(dataset), int(batch_size)), progress=progress, auto_min=2,
                          desc="images", unit="batch")
    for start in starts:
        chunk = dataset.records[start : start + int(batch_size)]
        images = np.stack([_load_rgb(r.path, (w, h)) for r in chunk])
        yield Batch(
            images=images,
            labels=np.array([r.label for r in chunk], dtype=np.int64),
            boxes=[scale_boxes(r.boxes, r.size, (h, w)) for r in chunk],
            ids=tuple(r.id for r in chunk),
            sizes=np.array([r.size for r in chunk], dtype=np.int64).reshape(-1, 2),
        )


# --------------------------------------------------------------------------------------------
# the synthetic dataset

# Each shape is a list of (polygon, sign) in a unit frame where the shape spans [-1, 1] on its
# longer side; sign +1 paints, -1 erases (holes). Circles are 48-gons.


def _circle(cx: float = 0.0, cy: float = 0.0, r: float = 1.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    pts[:, 1] -= (pts[:, 1].max() + pts[:, 1].min()) / 2.0  # centre it vertically
    return pts


_SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "disc": [(_circle(), 1)],
    "square": [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 1)],
    "triangle": [(np.array([[0, -1], [1, 1], [-1, 1]], float), 1)],
    "cross": [(np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
                         [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]),
               1)],
    "ring": [(_circle(), 1), (_circle(r=0.55), -1)],
    "star": [(_star(), 1)],
    "diamond": [(np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], float), 1)],
    "bar": [(np.array([[-1, -0.28], [1, -0.28], [1, 0.28], [-1, 0.28]]), 1)],
    "L-shape": [(np.array([[-1, -1], [-0.3, -1], [-0.3, 0.35], [1, 0.35], [1, 1], [-1, 1]]), 1)],
    "arrow": [(np.array([[-1, -0.25], [0.15, -0.25], [0.15, -0.8], [1, 0], [0.15, 0.8],
                         [0.15, 0.25], [-1, 0.25]]), 1)],
    "crescent": [(_circle(), 1), (_circle(cx=0.45, cy=-0.2, r=0.8), -1)],
    "hourglass": [(np.array([[-0.8, -1], [0.8, -1], [0.12, 0], [0.8, 1], [-0.8, 1],
                             [-0.12, 0]]), 1)],
}
SHAPES: tuple[str, ...] = tuple(_SHAPES)
"""The shape classes of :func:`make_synthetic`, in class-index order."""

# Photographs shipped with scikit-image (no download), used as background textures. Not
# coins(): its round coins would look like the disc and ring classes.
_TEXTURES: tuple[str, ...] = (
    "brick", "grass", "gravel", "camera", "text", "cell", "moon",
    "astronaut", "coffee", "rocket", "chelsea", "immunohistochemistry",
)


@dataclass(frozen=True)
class SyntheticData:
    """The synthetic localisation set of :func:`make_synthetic`.

    Attributes
    ----------
    images : ndarray of uint8, shape (N, S, S, 3)
        RGB images.
    labels : ndarray of int64, shape (N,)
        The shape class of each image, an index into ``class_names``.
    boxes : list of ndarray of int64, each (1, 4)
        The exact half-open box of the object: the tight extent of its pixels.
    class_names : tuple of str
    masks : ndarray of bool, shape (N, S, S)
        The object's pixels (the ground truth of ``boxes``, usable for pixel metrics).
    backgrounds : ndarray of int64, shape (N,)
        The texture each background was cut from, an index into ``background_names``; drawn
        independently of the class.
    background_names : tuple of str
        The scikit-image sample images used as textures.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: list[np.ndarray]
    class_names: tuple[str, ...]
    masks: np.ndarray
    backgrounds: np.ndarray
    background_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


@functools.lru_cache(maxsize=4)
def _texture_pool(size: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """Each texture as float32 arrays (h, w, c) standardised to mean 0, std 1 per channel, at
    three scales (shorter side 1.5, 3 and 6 times ``size``), so that a crop is only a slice."""
    import skimage.data

    pool = []
    for name in _TEXTURES:
        img = getattr(skimage.data, name)()
        if img.dtype != np.uint8:
            img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.dtype.kind == "f" else img
        pil = Image.fromarray(img)
        scales = []
        for factor in (1.5, 3.0, 6.0):
            short = max(size + 1, int(round(factor * size)))
            ratio = short / min(pil.size)
            new = (max(size + 1, round(pil.size[0] * ratio)), max(size + 1, round(pil.size[1] * ratio)))
            arr = np.asarray(pil.resize(new, Image.Resampling.BILINEAR), dtype=np.float32)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            arr = (arr - arr.mean(axis=(0, 1))) / (arr.std(axis=(0, 1)) + 1e-6)
            scales.append(arr)
        pool.append(tuple(scales))
    return tuple(pool)


def _rasterise(parts, size: int) -> np.ndarray:
    from skimage.draw import polygon

    mask = np.zeros((size, size), dtype=bool)
    for pts, sign in parts:
        rr, cc = polygon(pts[:, 1], pts[:, 0], shape=(size, size))
        mask[rr, cc] = sign > 0
    return mask


def _object_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """Place ``shape`` at a random position, scale, aspect and tilt; return its pixel mask."""
    # One canonical orientation per class (+-10 degrees): quarter turns made the set markedly
    # slower to learn for small CNNs, and a square must never look like a diamond.
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    if rng.random() < 0.5 and shape in {"L-shape", "crescent"}:
        flip = np.array([-1.0, 1.0])  # mirror image, same class
    else:
        flip = np.array([1.0, 1.0])
    aspect = rng.uniform(0.85, 1.15)
    extent = rng.uniform(0.25, 0.55) * size  # the longer side of the unrotated shape, in pixels
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = np.array([aspect, 1.0 / aspect]) * flip * extent / 2.0
    placed = [((pts * scale) @ rot.T, sign) for pts, sign in _SHAPES[shape]]
    allpts = np.concatenate([p for p, _ in placed])
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    cx = rng.uniform(1.0 - lo[0], size - 2.0 - hi[0])
    cy = rng.uniform(1.0 - lo[1], size - 2.0 - hi[1])
    return _rasterise([(p + np.array([cx, cy]), s) for p, s in placed], size)


def _distractor_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A thin stroke, a curve or a small blob: clutter that is none of the shape classes."""
    from skimage.draw import bezier_curve, ellipse, line

    mask = np.zeros((size, size), dtype=bool)
    kind = rng.integers(3)
    c0 = rng.uniform(0, size - 1, size=2)
    if kind == 2:  # a small elongated blob
        r_major = rng.uniform(0.04, 0.09) * size
        r_minor = r_major * rng.uniform(0.3, 0.6)
        rr, cc = ellipse(c0[1], c0[0], r_minor, r_major, shape=(size, size),
                         rotation=rng.uniform(0, np.pi))
        mask[rr, cc] = True
        return mask
    length = rng.uniform(0.15, 0.35) * size
    direction = rng.uniform(0, 2 * np.pi)
    c1 = c0 + length * np.array([np.cos(direction), np.sin(direction)])
    c1 = np.clip(c1, 0, size - 1)
    if kind == 0:  # a straight stroke
        rr, cc = line(int(c0[1]), int(c0[0]), int(c1[1]), int(c1[0]))
    else:  # a curve through a random control point
        mid = (c0 + c1) / 2 + rng.normal(0, length / 2.5, size=2)
        mid = np.clip(mid, 0, size - 1)
        rr, cc = bezier_curve(int(c0[1]), int(c0[0]), int(mid[1]), int(mid[0]),
                              int(c1[1]), int(c1[0]), weight=1.0, shape=(size, size))
    mask[rr, cc] = True
    if size >= 96 or rng.random() < 0.5:  # sometimes two pixels wide
        mask[:, 1:] |= mask[:, :-1]
    return mask


def _random_colour(rng: np.random.Generator, away_from: np.ndarray | None = None,
                   distance: float = 0.0) -> np.ndarray:
    for _ in range(50):
        c = rng.uniform(0.0, 1.0, size=3)
        if away_from is None or np.linalg.norm(c - away_from) >= distance:
            return c
    return 1.0 - np.round(away_from)  # the far corner of the RGB cube


def _synthetic_image(rng: np.random.Generator, label: int, size: int, pool) -> tuple:
    # 1. background: a random texture, crop, flip and colouring; nothing here sees `label`
    tex = int(rng.integers(len(pool)))
    src = pool[tex][int(rng.integers(3))]
    y = int(rng.integers(src.shape[0] - size + 1))
    x = int(rng.integers(src.shape[1] - size + 1))
    crop = src[y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    base = rng.uniform(0.15, 0.85, size=3)
    contrast = rng.uniform(0.06, 0.14)
    if crop.shape[2] == 3:
        crop = crop[:, :, rng.permutation(3)]
        img = base + contrast * crop
    else:
        tint = rng.uniform(0.6, 1.4, size=3)
        img = base + contrast * crop * tint
    # 2. the object's pixels (placed before the clutter so that clutter can avoid it)
    mask = _object_mask(rng, SHAPES[label], size)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    # 3. clutter: never touching the object, at most 10% of its pixels inside the object's box
    near = mask.copy()
    near[1:] |= mask[:-1]; near[:-1] |= mask[1:]  # noqa: E702
    near[:, 1:] |= near[:, :-1]; near[:, :-1] |= near[:, 1:]  # noqa: E702
    near[1:] |= near[:-1].copy(); near[:-1] |= near[1:].copy()  # noqa: E702
    in_box = np.zeros_like(mask)
    in_box[box[1] : box[3], box[0] : box[2]] = True
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(10):
            d = _distractor_mask(rng, size)
            n = d.sum()
            if n and not (d & near).any() and (d & in_box).sum() <= 0.1 * n:
                img[d] = _random_colour(rng)
                break
    # 4. the object: a colour far from the background's, with a gentle shading
    colour = _random_colour(rng, away_from=base, distance=0.45)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    g = rng.uniform(-0.12, 0.12, size=2)
    shade = (g[0] * (xx - 0.5) + g[1] * (yy - 0.5))[mask]
    img[mask] = colour + shade[:, None]
    out = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return out, mask, box, tex


def _check_fits_memory(n: int, size: int) -> None:
    """Refuse a synthetic set larger than the machine's memory (images and masks: 4 bytes a
    pixel) instead of running for days; no check where the memory size is unknown."""

    memory = physical_memory()
    need = n * size * size * 4
    if memory is not None and need > memory:
        raise ValueError(
            f"`n` = {n} images of {size}x{size} need {need / 2**30:.3g} GiB; this machine has "
            f"{memory / 2**30:.3g} GiB of memory. Make the set in parts (image i depends only "
            f"on (seed, i)) or lower `n`"
        )


def make_synthetic(n: int, *, seed: int = 0, size: int = 64, num_classes: int = 10) -> SyntheticData:
    """Generate a synthetic weakly supervised localisation set, the same for the same arguments.

    Each image shows one object, a filled shape of class ``SHAPES[label]`` (disc, square,
    triangle, cross, ring, star, diamond, bar, L-shape, arrow, crescent, hourglass) whose box spans
    about 20-65% of the image side on its longer axis, at a random position, aspect (0.85-1.15),
    tilt (+-10 degrees around one canonical orientation per class; the L-shape and crescent may
    be mirrored) and colour, on a background
    cut from a scikit-image sample photograph (random texture, scale, crop, flips, channel order,
    mean colour and contrast), with 1-3 pieces of clutter (thin strokes, curves, small blobs) that
    never touch the object and put at most 10% of their pixels inside its box.

    The class is not predictable from the background: texture and colours are drawn without
    looking at the label. The classes are balanced: every run of ``num_classes`` consecutive
    images holds each class once, in a random order. Image ``i`` depends only on ``(seed, i)``,
    so a larger ``n`` extends a smaller one.

    Parameters
    ----------
    n : int
        Number of images (>= 1).
    seed : int
        The random seed (>= 0).
    size : int
        Side of the square images in pixels (>= 32).
    num_classes : int
        The first ``num_classes`` shapes of :data:`SHAPES` are used (2 to 12).

    Returns
    -------
    SyntheticData
        ``boxes[i]`` is the tight half-open box of ``masks[i]``.
    """
    for name, value, low in (("n", n, 1), ("seed", seed, 0), ("size", size, 32),
                             ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"`{name}` must be an int; got {type(value).__name__}")
        if value < low:
            raise ValueError(f"`{name}` must be >= {low}; got {value}")
    if num_classes > len(SHAPES):
        raise ValueError(f"`num_classes` must be <= {len(SHAPES)}; got {num_classes}")
    n, seed, size, num_classes = int(n), int(seed), int(size), int(num_classes)
    _check_fits_memory(n, size)
    pool = _texture_pool(size)
    labels = np.concatenate([
        np.random.default_rng([seed, 1, block]).permutation(num_classes)
        for block in range(-(-n // num_classes))
    ])[:n].astype(np.int64)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    backgrounds = np.empty(n, dtype=np.int64)
    boxes = []
    for i in range(n):
        rng = np.random.default_rng([seed, 0, i])
        images[i], masks[i], box, backgrounds[i] = _synthetic_image(rng, int(labels[i]), size, pool)
        boxes.append(_frozen(np.array([box], dtype=np.int64)))
    return SyntheticData(images, labels, boxes, SHAPES[:num_classes], masks, backgrounds,
                         _TEXTURES)


# --------------------------------------------------------------------------------------------
# real photographs shipped with scikit-image


@dataclass(frozen=True)
class Photo:
    """A real photograph from scikit-image with this project's own box annotation.

    Attributes
    ----------
    name : str
        The ``skimage.data`` function that loads it.
    image : ndarray of uint8, shape (H, W, 3)
        RGB (grey photographs are repeated over the three channels).
    boxes : ndarray of int64, shape (G, 4)
        Half-open boxes in the image's own pixels.
    class_name : str
        What the boxes hold.
    imagenet_index : int or None
        The ImageNet-1k class index (the order of ``classes.tsv``) of ``class_name``, or None
        when ImageNet-1k has no such class.
    """

    name: str
    image: np.ndarray
    boxes: np.ndarray
    class_name: str
    imagenet_index: int | None


# Annotated for this project by looking at each image with a 10-pixel grid (about +-2 pixels):
# name, boxes (x0, y0, x1, y1) half-open, class name, ImageNet-1k index.
_PHOTO_ANNOTATIONS: tuple[tuple[str, tuple[tuple[int, int, int, int], ...], str, int | None], ...] = (
    # the cat's head and chest fill the frame up to the right ear's tip
    ("chelsea", ((0, 0, 402, 300),), "tabby cat", 281),
    # the cup with its handle, without saucer and spoon
    ("coffee", ((172, 18, 409, 305),), "espresso", 967),
    # the launcher on its pad, from the fairing's tip to the launch table
    ("rocket", ((310, 126, 336, 407),), "missile", 657),
    # the space shuttle model behind the astronaut (orbiter, tank, boosters; not the plinth)
    ("astronaut", ((354, 0, 456, 270),), "space shuttle", 812),
    # the tripod from its head under the camcorder to the feet at the image's bottom edge
    ("camera", ((229, 184, 407, 512),), "tripod", 872),
    # the whole motorcycle, rear lamp to front tyre, mirror to tyre bottom (no ImageNet class)
    ("stereo_motorcycle", ((93, 77, 681, 452),), "motorcycle", None),
)


def sample_photos() -> list[Photo]:
    """Six real photographs that scikit-image ships (no download), each with a box annotation.

    The boxes are this project's own annotation (drawn by eye on a pixel grid, about +-2
    pixels), half-open in each image's own pixels: ``chelsea`` (tabby cat, ImageNet 281),
    ``coffee`` (espresso, 967), ``rocket`` (missile, 657), ``astronaut`` (the space shuttle
    model, 812), ``camera`` (tripod, 872) and ``stereo_motorcycle`` (left view; motorcycle, not
    an ImageNet-1k class). Handy for demonstrations and smoke tests on real pixels.

    Returns
    -------
    list of Photo
    """
    import skimage.data

    photos = []
    for name, boxes, class_name, index in _PHOTO_ANNOTATIONS:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
            img = img[0]
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)
        photos.append(Photo(name, _frozen(img), _frozen(np.array(boxes, dtype=np.int64)),
                            class_name, index))
    return photos
