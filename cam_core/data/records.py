"""Records and datasets: one image with its label and boxes, and a list of them (see
:mod:`cam_core.data` for the box conventions)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cam_core._validate import as_size
from cam_core.boxes import scale_boxes

# --------------------------------------------------------------------------------------------
# records and datasets


def frozen(arr: np.ndarray) -> np.ndarray:
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
        """The boxes of every record scaled to the working size ``(H, W)``
        (:func:`cam_core.boxes.scale_boxes`)."""
        as_size(size)
        return [scale_boxes(r.boxes, r.size, size) for r in self.records]


