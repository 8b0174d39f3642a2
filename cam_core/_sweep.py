"""Connected components of ``q > t`` for many levels ``t`` of one integer map (private).

This is the engine behind the threshold sweeps of :mod:`cam_core.metrics`. For an integer map
``q`` of shape (H, W) and a list of levels, it lists, level by level, every 8-connected component
of the mask ``q > t`` and, on request, every hole (a 4-connected background component that does
not reach the image border), with what the metrics need:

- ``box``: the inclusive bounding box ``(x0, y0, x1, y1)`` of the component's pixels, or for a
  hole of its border (the hole's pixels grown by one pixel on each side), as
  ``cv2.boundingRect`` gives them;
- ``pixels``: its pixel count;
- ``area2``: twice the area of the polygon that OpenCV's border following
  (``cv2.findContours``, 8-connected objects) traces through the centres of its border pixels, the
  value ``cv2.contourArea`` gives. For a component it is the polygon of the outer border, for a
  hole that of the hole border. Both come from counting 2x2 windows: with ``F`` the component with
  its holes filled, every window holding 4 pixels of ``F`` adds 1 and every window holding 3 adds
  1/2; with ``F`` the hole with whatever it encloses, every window holding 2 to 4 of its pixels
  adds 1 and every window holding 1 adds 1/2. A single pixel or a one-pixel-wide line has area 0.
- ``order``: the position of its contour in the list ``cv2.findContours(..., RETR_TREE, ...)``
  returns (OpenCV 5.0, checked against it in the tests): the contour tree in pre-order, siblings
  in reverse order of discovery, a component discovered at its first pixel in row-major order, a
  hole at the pixel left of its first pixel. ``max(contours, key=cv2.contourArea)`` picks the
  first contour of largest area in that list, so ties go to the smallest ``order``.

Two implementations give identical results: :func:`sweep_labelled` labels the mask of every
level (simple, the oracle of the tests) and :func:`sweep` takes a fast path for the levels where
every row of the mask is a single run of pixels (then there are no holes and everything follows
from the two run ends of each row), labelling only the other levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

_S8 = np.ones((3, 3), dtype=bool)
_S4 = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class LevelComponents:
    """Components (and holes) of all levels, concatenated level by level.

    ``level`` (K,) int64 index into the levels; ``box`` (K, 4) int64 inclusive pixel boxes;
    ``hole`` (K,) bool; ``pixels`` (K,) int64; ``area2`` (K,) int64 (0 when not asked for);
    ``order`` (K,) int64 rank within the level (OpenCV's contour order when holes were asked
    for, else row-major order of the components' first pixels); ``fast`` (L,) bool, per level,
    whether the run-based fast path produced it.
    """

    level: np.ndarray
    box: np.ndarray
    hole: np.ndarray
    pixels: np.ndarray
    area2: np.ndarray
    order: np.ndarray
    fast: np.ndarray


def _window_counts(f: np.ndarray) -> np.ndarray:
    """Number of set pixels in every 2x2 window of ``f`` padded by one pixel of zeros."""
    g = np.pad(f, 1).astype(np.int8)
    return g[:-1, :-1] + g[1:, :-1] + g[:-1, 1:] + g[1:, 1:]


def _outer_area2(filled: np.ndarray) -> int:
    c = _window_counts(filled)
    return int(2 * np.count_nonzero(c == 4) + np.count_nonzero(c == 3))


def _hole_area2(filled: np.ndarray) -> int:
    c = _window_counts(filled)
    return int(2 * np.count_nonzero(c >= 2) + np.count_nonzero(c == 1))


def _level_labelled(mask: np.ndarray, *, holes: bool, area: bool) -> list[tuple]:
    """One level by labelling: rows (box, hole, pixels, area2, order)."""
    padded = np.pad(mask, 1)
    fg, n_fg = ndi.label(padded, structure=_S8)
    if n_fg == 0:
        return []
    fg_slices = ndi.find_objects(fg)
    fg_pixels = np.bincount(fg.ravel(), minlength=n_fg + 1)
    nodes = []  # [kind, label, key, box, pixels, area2, parent]
    hole_nodes = []
    bg = frame = None
    has_holes = np.zeros(n_fg + 1, dtype=bool)
    if holes:
        bg, n_bg = ndi.label(~padded, structure=_S4)
        frame = bg[0, 0]
        bg_slices = ndi.find_objects(bg)
        for j, sl in enumerate(bg_slices):
            lab = j + 1
            if lab == frame:
                continue
            inside = bg[sl] == lab
            y0, x0 = sl[0].start, sl[1].start
            fx = x0 + int(np.argmax(inside[0]))
            parent = int(fg[y0, fx - 1])
            has_holes[parent] = True
            a2 = _hole_area2(ndi.binary_fill_holes(inside, _S8)) if area else 0
            # unpadded, inclusive, grown by one pixel: the hole border runs on the object pixels
            box = (x0 - 2, y0 - 2, sl[1].stop - 1, sl[0].stop - 1)
            hole_nodes.append(["h", lab, (y0, fx - 1), box, int(inside.sum()), a2, ("o", parent)])
    if area:
        c = _window_counts(padded[1:-1, 1:-1])
        lab_of_cell = np.maximum.reduce([fg[:-1, :-1], fg[1:, :-1], fg[:-1, 1:], fg[1:, 1:]])
        weight = np.where(c == 4, 2, np.where(c == 3, 1, 0))
        simple_area2 = np.bincount(lab_of_cell.ravel(), weights=weight.ravel(),
                                   minlength=n_fg + 1).astype(np.int64)
    for i, sl in enumerate(fg_slices):
        lab = i + 1
        inside = fg[sl] == lab
        y0, x0 = sl[0].start, sl[1].start
        fx = x0 + int(np.argmax(inside[0]))
        if not area:
            a2 = 0
        elif has_holes[lab]:
            a2 = _outer_area2(ndi.binary_fill_holes(inside))
        else:
            a2 = int(simple_area2[lab])
        parent = None
        if holes and bg[y0, fx - 1] != frame:
            parent = ("h", int(bg[y0, fx - 1]))
        box = (x0 - 1, y0 - 1, sl[1].stop - 2, sl[0].stop - 2)
        nodes.append(["o", lab, (y0, fx), box, int(fg_pixels[lab]), a2, parent])
    if not holes:
        return [(n[3], False, n[4], n[5], k) for k, n in enumerate(nodes)]
    children: dict = {}
    for n in nodes + hole_nodes:
        children.setdefault(n[6], []).append(n)
    out: list[tuple] = []
    stack = [None]
    # pre-order, siblings in reverse discovery order (an explicit stack: no recursion limit)
    pending = sorted(children.get(None, []), key=lambda n: n[2])  # ascending: pop() = last
    stack = pending
    while stack:
        n = stack.pop()
        out.append((n[3], n[0] == "h", n[4], n[5], len(out)))
        stack.extend(sorted(children.get((n[0], n[1]), []), key=lambda m: m[2]))
    return out


def _pack(rows_per_level: list[list[tuple]], fast: np.ndarray) -> LevelComponents:
    level, box, hole, pixels, area2, order = [], [], [], [], [], []
    for li, rows in enumerate(rows_per_level):
        for b, h, p, a, o in rows:
            level.append(li)
            box.append(b)
            hole.append(h)
            pixels.append(p)
            area2.append(a)
            order.append(o)
    return LevelComponents(
        level=np.asarray(level, dtype=np.int64),
        box=np.asarray(box, dtype=np.int64).reshape(-1, 4),
        hole=np.asarray(hole, dtype=bool),
        pixels=np.asarray(pixels, dtype=np.int64),
        area2=np.asarray(area2, dtype=np.int64),
        order=np.asarray(order, dtype=np.int64),
        fast=fast,
    )


def sweep_labelled(q: np.ndarray, levels: np.ndarray, *, holes: bool, area: bool
                   ) -> LevelComponents:
    """Components of ``q > t`` for each ``t`` in ``levels``, one labelling per level."""
    rows = [_level_labelled(q > t, holes=holes, area=area) for t in levels]
    return _pack(rows, np.zeros(len(levels), dtype=bool))


sweep = sweep_labelled
