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
(:func:`cam_core.boxes.scale_boxes`, the home of box scaling and of the ground truth of a
record; :meth:`Dataset.boxes_at`, :func:`iter_batches`). Because the scaling is of edges, a box
that covers a whole image still covers the whole resized image.

**Sizes** given to this module are ``(height, width)`` (an int means a square), like every size
in the core; the original size of a record is ``(width, height)``, as annotation files write it.

**Errors.** A malformed, inconsistent or incomplete annotation file is a ``ValueError`` whose
message starts with ``path:line:``. Nothing is dropped silently: an image without a box keeps an
empty ``(0, 4)`` array, a label or size missing for an image is an error.

The synthetic set (:func:`make_synthetic`) draws one shape per image on textures cut from the
photographs that scikit-image ships (no download), with exact boxes and masks;
:func:`sample_photos` gives six of those photographs with this project's own box annotations.
"""

from cam_core.data.batches import Batch, iter_batches
from cam_core.data.readers import read_class_names, read_csv_boxes, read_voc, read_wsol
from cam_core.data.records import Dataset, Record
from cam_core.data.synthetic import SHAPES, Photo, SyntheticData, make_synthetic, sample_photos

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
]

