"""The threshold sweep of the box metrics, both protocols, in one module (private).

:mod:`cam_core.metrics` holds the accumulators; everything they sweep is here: the WSOL
reference's 8-bit quantisation and threshold levels (:func:`wsol_quantise`), the box chosen per
level and its IoU with the ground truth (:func:`batch_ious`, at the end of the module), and below
them the connected components of ``q > t`` for many levels ``t`` of an integer map. For an integer map
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
  returns (the same in OpenCV 4.8.1 and 5.0.0, the versions checked): the contour tree in
  pre-order, siblings in reverse order of discovery, a component discovered at its first pixel
  in row-major order, a hole at the pixel left of its first pixel.
  ``max(contours, key=cv2.contourArea)`` picks the first contour of largest area in that list,
  so ties go to the smallest ``order``.

Two implementations. :func:`sweep_labelled` labels the mask of every level and lists every
contour with its area and order (simple; the oracle of the tests, checked against OpenCV).
:func:`sweep` is the fast one and lists only what the metrics use, with identical results for
them: every box, and for the "largest contour" choice only the contours that can win it.

Why :func:`sweep` may drop contours from that choice: a component's outer polygon encloses the
polygons of its holes and of everything nested inside them, so none of those has a larger area,
and each comes after its top-level ancestor in OpenCV's pre-order, so none wins a tie either. Only
top-level components (those not inside a hole) are candidates. Their outer area is the window
rule above applied to the level's *filled* mask (the complement of the background region that
reaches the image border), since a filled top-level component is a component of that mask.

How :func:`sweep` works: it lists the row runs of ``q > t`` of all levels at once (a run starts
at ``x`` for the levels ``q[x-1] <= t < q[x]``), links runs of consecutive rows of a level that
touch at 8-connectivity, and gets the components of all levels from one call of
:func:`scipy.sparse.csgraph.connected_components` (no labelling per level); boxes, pixel counts
and window-rule areas are sums over runs and links (a link between runs ``[a0, a1]`` and
``[b0, b1]`` with ``lo = max(a0, b0) <= hi = min(a1, b1)`` holds ``hi - lo`` windows of 4 pixels,
plus a window of 3 at each end where the runs do not end alike). The run graph also gives the
Euler number (runs minus links), so the number of holes of every level (components minus Euler
number) comes free. Only the levels with holes (``fast`` False) need more: their gaps
(background runs) are linked at 4-connectivity, with one frame node per level for the gaps that
touch the border; gap components without the frame are the holes. A hole's window-rule area is
``4 * pixels`` minus the same link sum over its gaps, and a top-level component's filled area is
the sum of the areas of everything nested in it (its own, its holes', their islands'...), each
part attached to its parent through the run or gap just left of its first run or gap.
Several maps are swept together by numbering their levels one after the other
(:func:`sweep_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from cam_core.boxes import paired_iou

_S8 = np.ones((3, 3), dtype=bool)
_S4 = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class LevelComponents:
    """Components (and holes) of all levels, concatenated level by level.

    ``level`` (K,) int64 index into the levels; ``box`` (K, 4) int64 inclusive pixel boxes;
    ``hole`` (K,) bool; ``pixels`` (K,) int64; ``area2`` (K,) int64 (0 when not asked for);
    ``order`` (K,) int64 rank within the level (OpenCV's contour order when holes were asked
    for, else row-major order of the components' first pixels); ``candidate`` (K,) bool, the
    rows that compete for "largest" (the others only add boxes; their ``area2`` and ``order``
    are not meaningful); ``fast`` (L,) bool, per level, whether the runs alone solved it.
    """

    level: np.ndarray
    box: np.ndarray
    hole: np.ndarray
    pixels: np.ndarray
    area2: np.ndarray
    order: np.ndarray
    candidate: np.ndarray
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
        candidate=np.ones(len(level), dtype=bool),
        fast=fast,
    )


def sweep_labelled(q: np.ndarray, levels: np.ndarray, *, holes: bool, area: bool
                   ) -> LevelComponents:
    """Components of ``q > t`` for each ``t`` in ``levels``, one labelling per level."""
    rows = [_level_labelled(q > t, holes=holes, area=area) for t in levels]
    return _pack(rows, np.zeros(len(levels), dtype=bool))


# --------------------------------------------------------------------------- runs

def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges ``[lo_i, hi_i)``: the index ``i`` of each element and the element itself.

    Both come in the dtype of ``lo`` (int32 for pixel-sized inputs), ordered by ``i``.
    """
    counts = hi - lo
    keep = np.flatnonzero(counts > 0).astype(lo.dtype, copy=False)
    counts = counts[keep]
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=lo.dtype), np.zeros(0, dtype=lo.dtype)
    owner = np.repeat(keep, counts)
    # element j of range i is lo_i + (j - first position of range i)
    shift = np.repeat(lo[keep] - (np.cumsum(counts, dtype=lo.dtype) - counts), counts)
    return owner, np.arange(total, dtype=lo.dtype) + shift


def _runs(qs: np.ndarray, levels: list[np.ndarray]):
    """All runs of ``qs[i] > t`` for all maps and their levels, sorted by (k, row, start).

    ``k`` numbers the levels of all maps one after the other (map 0's levels first). Pixel-sized
    arrays are int32 (memory traffic dominates here).
    """
    n, height, width = qs.shape
    counts = np.array([len(lv) for lv in levels], dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    # index of the first level >= v for every pixel value v (a table lookup): the pixel is in
    # the masks of the levels below it
    here = np.empty(qs.shape, dtype=np.int32)
    for i in range(n):
        table = np.searchsorted(levels[i], np.arange(int(qs[i].max()) + 1), side="left")
        here[i] = np.take((table + offsets[i]).astype(np.int32), qs[i])
    # a run starts at x for the levels q[x-1] <= t < q[x]: from the left neighbour's index
    # (the map's first level at x = 0) up to this pixel's; it ends at x likewise with the right
    # neighbour
    first = offsets.astype(np.int32)[:, None]
    lo_s = np.empty_like(here)
    lo_s[:, :, 0] = first
    lo_s[:, :, 1:] = here[:, :, :-1]
    pix_s, k_s = _expand(lo_s.ravel(), here.ravel())
    lo_e = lo_s  # reuse the buffer
    lo_e[:, :, -1] = first
    lo_e[:, :, :-1] = here[:, :, 1:]
    pix_e, k_e = _expand(lo_e.ravel(), here.ravel())
    # the entries come by pixel, then level: a stable sort by level gives (level, row, x); radix
    # sort (stable sort of 16-bit integers) when the level count allows
    small = np.int16 if counts.sum() < 2 ** 15 else np.int32
    order_s = np.argsort(k_s.astype(small), kind="stable")
    order_e = np.argsort(k_e.astype(small), kind="stable")
    k = k_s[order_s]
    pix = pix_s[order_s]
    start = pix % width
    row = (pix // width) % height
    end = pix_e[order_e] % width
    return k, row, start, end


def _link(k, row, start, end, height: int, width: int, reach: int):
    """Pairs (a, b) of runs, b in the row below a at the same level, that touch.

    Runs sorted by (level, row, start); ``reach`` 1 links diagonal neighbours (8-connectivity),
    0 only overlapping runs (4-connectivity). ``b.end >= a.start - reach`` and
    ``b.start <= a.end + reach``.
    """
    base = (k.astype(np.int64) * height + row) * width
    nxt = base + width
    lo = np.searchsorted(base + end, nxt + np.maximum(start - reach, 0), side="left")
    hi = np.searchsorted(base + start, nxt + np.minimum(end + reach, width - 1), side="right")
    hi[row == height - 1] = 0  # the last row has no next row (the keys run on to the next level)
    return _expand(lo, hi)


def _label_graph(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the undirected graph on ``n`` nodes with edges (a, b), a sorted.

    Labels are numbered in order of each component's smallest node.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(a, minlength=n), out=indptr[1:])
    graph = csr_matrix((np.ones(len(a), dtype=np.int8), b, indptr), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _band2(sa, ea, sb, eb) -> np.ndarray:
    """Windows of 4 pixels (x2) plus windows of 3 between linked runs [sa, ea] and [sb, eb]."""
    lo = np.maximum(sa, sb)
    hi = np.minimum(ea, eb)
    return np.where(lo <= hi, 2 * (hi - lo) + (sa != sb) + (ea != eb), 0)


def _first_of_labels(label: np.ndarray) -> np.ndarray:
    """Index of the first node of each label (labels numbered in order of first node)."""
    return np.flatnonzero(np.r_[True, label[1:] > np.maximum.accumulate(label)[:-1]])


def _components_from_runs(qs: np.ndarray, levels: list[np.ndarray], *, area: bool) -> dict:
    """8-connected components of every level from the run graph.

    Returns a dict: the runs (``k``, ``row``, ``start``, ``end``, ``label``), and per component
    ``level``, inclusive ``box``, ``pixels``, ``area2`` (window rule on the component itself: its
    outer area when it has no hole), ``first`` (its first run) and ``rank`` within its level in
    row-major order of first pixels; per level ``holes``, the number of holes.
    """
    height, width = qs.shape[1:]
    n_levels = sum(len(lv) for lv in levels)
    k, row, start, end = _runs(qs, levels)
    n = len(k)
    a, b = _link(k, row, start, end, height, width, 1)
    label = _label_graph(n, a, b) if n else np.zeros(0, dtype=np.int64)
    count = int(label.max()) + 1 if n else 0
    first = _first_of_labels(label) if n else np.zeros(0, dtype=np.int64)
    comp_level = k[first]
    # ufunc.at is fast only when the dtypes match
    x0 = np.full(count, width, dtype=start.dtype)
    np.minimum.at(x0, label, start)
    x1 = np.full(count, -1, dtype=end.dtype)
    np.maximum.at(x1, label, end)
    y1 = np.full(count, -1, dtype=row.dtype)
    np.maximum.at(y1, label, row)
    box = np.stack([x0, row[first], x1, y1], axis=1).astype(np.int64)
    pixels = np.bincount(label, weights=end - start + 1, minlength=count).astype(np.int64)
    if area and n:
        band = _band2(start[a], end[a], start[b], end[b])
        area2 = np.bincount(label[a], weights=band, minlength=count).astype(np.int64)
    else:
        area2 = np.zeros(count, dtype=np.int64)
    per_level = np.bincount(comp_level, minlength=n_levels)
    rank = np.arange(count) - (np.cumsum(per_level) - per_level)[comp_level]
    # Euler number (8-connected objects) = runs - links; holes = components - Euler number
    euler = np.bincount(k, minlength=n_levels) - np.bincount(k[a], minlength=n_levels)
    return dict(k=k, row=row, start=start, end=end, label=label, level=comp_level, box=box,
                pixels=pixels, area2=area2, first=first, rank=rank, per_level=per_level,
                holes=per_level - euler)


def _holes_from_runs(c: dict, slow: np.ndarray, height: int, width: int) -> dict:
    """Holes of the levels ``slow`` (indices) from the gaps between their runs.

    Gaps (background runs) of consecutive rows are linked at 4-connectivity, and every gap that
    touches the image border to a frame node of its level; a hole is a gap component without
    the frame. A hole's parent is the component of the run left of its first gap; a component
    nested in a hole has the hole of the gap left of its first run as parent. Returns the hole
    boxes (grown by one pixel), levels and window-rule areas, and for every component its
    top-level ancestor and the window-rule area of its filled self (meaningful for top-level
    components of the slow levels).
    """
    k, row, start, end, label = c["k"], c["row"], c["start"], c["end"], c["label"]
    count = len(c["level"])
    is_slow = np.zeros(int(max(k.max(initial=0), slow.max(initial=0))) + 1, dtype=bool)
    is_slow[slow] = True
    sel = np.flatnonzero(is_slow[k])
    rk, rr, rs, re = k[sel], row[sel], start[sel], end[sel]
    same = np.r_[False, (rk[1:] == rk[:-1]) & (rr[1:] == rr[:-1])]
    last = ~np.r_[same[1:], False]
    prev_end = np.where(same, np.r_[-1, re[:-1]], -1)
    # gaps: before each run, after the last run of a row, and whole empty rows. Two slots per
    # run (the gap before it, the gap after it) keep the gaps of rows with runs in (level, row,
    # start) order; the empty rows are then inserted at their (level, row) place.
    before = prev_end + 1 <= rs - 1
    after = last & (re < width - 1)
    m = len(sel)
    valid = np.empty(2 * m, dtype=bool)
    valid[0::2], valid[1::2] = before, after
    g_s = np.empty(2 * m, dtype=np.int64)
    g_s[0::2], g_s[1::2] = prev_end + 1, re + 1
    g_e = np.empty(2 * m, dtype=np.int64)
    g_e[0::2], g_e[1::2] = rs - 1, width - 1
    g_left = np.empty(2 * m, dtype=np.int64)  # the run left of the gap
    g_left[0::2], g_left[1::2] = np.where(same, sel - 1, -1), sel
    keep = np.flatnonzero(valid)
    gk, gr = rk[keep // 2].astype(np.int64), rr[keep // 2].astype(np.int64)
    gs, ge, left_run = g_s[keep], g_e[keep], g_left[keep]
    gap_of_run = np.full(len(k), -1, dtype=np.int64)  # the gap just left of a run, if any
    gap_of_run[sel[before]] = (np.cumsum(valid) - 1)[0::2][before]
    levels_all = np.asarray(slow, dtype=np.int64)
    present = np.zeros((len(levels_all), height), dtype=bool)
    present[np.searchsorted(levels_all, rk), rr] = True
    ek, er = np.nonzero(~present)
    if len(ek):
        key = gk * height + gr
        empty_key = levels_all[ek] * height + er
        at = np.searchsorted(key, empty_key)
        gap_of_run[gap_of_run >= 0] += np.searchsorted(empty_key, key[gap_of_run[gap_of_run >= 0]])
        gk = np.insert(gk, at, levels_all[ek])
        gr = np.insert(gr, at, er)
        gs = np.insert(gs, at, 0)
        ge = np.insert(ge, at, width - 1)
        left_run = np.insert(left_run, at, -1)
    ng = len(gk)
    a, b = _link(gk, gr, gs, ge, height, width, 0)
    # every gap touching the border is linked to its level's frame node; with the frame nodes
    # numbered after the gaps, those edges keep ``a`` sorted for the CSR build
    border = np.flatnonzero((gs == 0) | (ge == width - 1) | (gr == 0) | (gr == height - 1))
    frame = ng + np.searchsorted(levels_all, gk[border])
    glabel = _label_graph(ng + len(levels_all), np.concatenate([a, frame]),
                          np.concatenate([b, border]))
    framed = np.zeros(int(glabel.max()) + 1, dtype=bool)
    framed[glabel[ng:]] = True
    is_hole = ~framed[glabel[:ng]]
    # hole components, numbered in order of their first gap
    hole_gaps = np.flatnonzero(is_hole)
    _, hole_id = np.unique(glabel[hole_gaps], return_inverse=True)
    n_holes = int(hole_id.max()) + 1 if hole_gaps.size else 0
    hole_first = hole_gaps[_first_of_labels(hole_id)] if n_holes else np.zeros(0, np.int64)
    # hole_id is numbered by label value, which follows first gaps: the same order
    hx0 = np.full(n_holes, width, dtype=np.int64)
    np.minimum.at(hx0, hole_id, gs[hole_gaps])
    hx1 = np.full(n_holes, -1, dtype=np.int64)
    np.maximum.at(hx1, hole_id, ge[hole_gaps])
    hy1 = np.full(n_holes, -1, dtype=np.int64)
    np.maximum.at(hy1, hole_id, gr[hole_gaps])
    hole_box = np.stack([hx0 - 1, gr[hole_first] - 1, hx1 + 1, hy1 + 1], axis=1)
    hole_of_gap = np.full(ng, -1, dtype=np.int64)
    hole_of_gap[hole_gaps] = hole_id
    size = np.bincount(hole_id, weights=(ge - gs + 1)[hole_gaps], minlength=n_holes)
    inner = (hole_of_gap[a] >= 0) if len(a) else np.zeros(0, dtype=bool)
    band = np.bincount(hole_of_gap[a[inner]], weights=_band2(gs[a[inner]], ge[a[inner]],
                                                                gs[b[inner]], ge[b[inner]]),
                       minlength=n_holes)
    hole_area2 = (4 * size - band).astype(np.int64)
    hole_parent = label[left_run[hole_first]]
    # each component's parent hole (-1: top level), then its top-level ancestor
    comp_parent_hole = np.full(count, -1, dtype=np.int64)
    firsts = c["first"]
    g = gap_of_run[firsts]
    has_gap = g >= 0
    comp_parent_hole[has_gap] = hole_of_gap[g[has_gap]]
    up = np.arange(count)
    nested = comp_parent_hole >= 0
    up[nested] = hole_parent[comp_parent_hole[nested]]
    while True:
        nxt = up[up]
        if np.array_equal(nxt, up):
            break
        up = nxt
    filled_area2 = np.bincount(up, weights=c["area2"], minlength=count)
    filled_area2 += np.bincount(up[hole_parent], weights=hole_area2, minlength=count)
    return dict(box=hole_box, level=gk[hole_first], area2=hole_area2, pixels=size.astype(np.int64),
                top=up, filled_area2=filled_area2.astype(np.int64))


def sweep(q: np.ndarray, levels: np.ndarray, *, holes: bool, area: bool) -> LevelComponents:
    """Components (and holes) of ``q > t`` for each ``t`` in ``levels`` (sorted, distinct, >= 0).

    Every component and hole box of :func:`sweep_labelled`, and the same winner of "largest"
    (most ``area2``, then smallest ``order``; or most ``pixels``, then smallest ``order``, with
    ``holes=False``) among the ``candidate`` rows.
    """
    return sweep_batch(np.asarray(q)[None], [levels], holes=holes, area=area)


def sweep_batch(qs: np.ndarray, levels: list[np.ndarray], *, holes: bool, area: bool
                ) -> LevelComponents:
    """:func:`sweep` of several maps ``qs`` (N, H, W) at once, ``levels[i]`` for map ``i``.

    The levels of all maps are numbered one after the other: ``level`` of a row is
    ``sum(len(levels[j]) for j < i) + index of the level in levels[i]``.
    """
    levels = [np.asarray(lv, dtype=np.int64) for lv in levels]
    height, width = qs.shape[1:]
    c = _components_from_runs(qs, levels, area=area)
    comp_level, per_level = c["level"], c["per_level"]
    n_levels = len(per_level)
    slow = (c["holes"] > 0) if holes else np.zeros(n_levels, dtype=bool)
    area2 = c["area2"]
    candidate = np.ones(len(comp_level), dtype=bool)
    if holes:
        order = per_level[comp_level] - 1 - c["rank"]  # no holes: OpenCV lists them in reverse
    else:
        order = c["rank"]
    parts = []
    if slow.any():
        h = _holes_from_runs(c, np.flatnonzero(slow), height, width)
        in_slow = slow[comp_level]
        top = h["top"] == np.arange(len(comp_level))
        candidate = ~in_slow | top
        area2 = np.where(in_slow, h["filled_area2"], area2)
        # OpenCV order among the top-level components of a slow level: reverse discovery
        tops = np.flatnonzero(in_slow & top)
        n_top = np.bincount(comp_level[tops], minlength=n_levels)
        rank_top = np.arange(len(tops)) - (np.cumsum(n_top) - n_top)[comp_level[tops]]
        order = order.copy()
        order[tops] = n_top[comp_level[tops]] - 1 - rank_top
        n_h = len(h["level"])
        parts.append(LevelComponents(
            level=h["level"], box=h["box"], hole=np.ones(n_h, dtype=bool), pixels=h["pixels"],
            area2=h["area2"], order=np.full(n_h, -1, dtype=np.int64),
            candidate=np.zeros(n_h, dtype=bool), fast=~slow))
    parts.insert(0, LevelComponents(
        level=comp_level, box=c["box"], hole=np.zeros(len(comp_level), dtype=bool),
        pixels=c["pixels"], area2=area2, order=order, candidate=candidate, fast=~slow))
    return LevelComponents(
        level=np.concatenate([p.level for p in parts]),
        box=np.concatenate([p.box for p in parts]),
        hole=np.concatenate([p.hole for p in parts]),
        pixels=np.concatenate([p.pixels for p in parts]),
        area2=np.concatenate([p.area2 for p in parts]),
        order=np.concatenate([p.order for p in parts]),
        candidate=np.concatenate([p.candidate for p in parts]),
        fast=~slow,
    )


# --------------------------------------------------------------------------------------------
# the two protocols on top of the components: the WSOL reference's 8-bit quantisation and
# threshold levels, the box chosen per level (largest contour, or every box), the IoU with the
# ground truth. cam_core.metrics keeps only the accumulators.


def wsol_quantise(m: np.ndarray) -> np.ndarray:
    """Steps 1-2 of the reference: min-max normalise in float64, then floor(255 * map).

    The reference converts every map to float64 (its ``t2n``) before normalising; doing the
    subtraction and division in a float32 or float16 map's own dtype puts some pixels on the
    neighbouring 8-bit level, so the map is promoted first, whatever its dtype.
    """
    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    if lo == hi:
        return np.zeros(m.shape, dtype=np.uint8)
    m = m - lo
    m = m / m.max()
    return (m * 255).astype(np.uint8)


def _select_first(level: np.ndarray, keys: list[np.ndarray], n_levels: int) -> np.ndarray:
    """Index of the first item of each level after sorting by ``keys`` (last key = primary).

    ``keys`` as in :func:`numpy.lexsort` without the level; levels without items get -1.
    """
    out = np.full(n_levels, -1, dtype=np.int64)
    if level.size == 0:
        return out
    idx = np.lexsort(tuple(keys) + (level,))
    lv = level[idx]
    first = np.ones(lv.size, dtype=bool)
    first[1:] = lv[1:] != lv[:-1]
    out[lv[first]] = idx[first]
    return out


_CHUNK = 4  # maps swept together: amortises call overhead, keeps the run lists in cache


def batch_ious(maps: np.ndarray, gts: list[np.ndarray], taus: np.ndarray, protocol: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best IoU per (map, tau) with the largest box and with all boxes, and whether the mask had
    no hole (solved from the row runs alone; always True for "native").

    ``gts[i]`` is float64 (G, 4): half-open for "native", inclusive for "wsol". Returns three
    (N, T) arrays.
    """
    outs = [_chunk_ious(maps[i:i + _CHUNK], gts[i:i + _CHUNK], taus, protocol)
            for i in range(0, len(maps), _CHUNK)]
    return tuple(np.concatenate([o[j] for o in outs]) for j in range(3))


def _chunk_ious(maps: np.ndarray, gts: list[np.ndarray], taus: np.ndarray, protocol: str):
    n, height, width = maps.shape
    levels, inverse = [], []
    if protocol == "wsol":
        qs = np.empty(maps.shape, dtype=np.uint8)
        for i, m in enumerate(maps):
            qs[i] = wsol_quantise(m)
            t = (taus * float(qs[i].max())).astype(np.int64)  # int(tau * max(u)): truncation
            lv, inv = np.unique(t, return_inverse=True)
            levels.append(lv)
            inverse.append(inv)
    else:
        qs = np.empty(maps.shape, dtype=np.int64)
        for i, m in enumerate(maps):
            thr = taus.astype(m.dtype) * m.max()  # as threshold_fraction computes it
            lv, inv = np.unique(thr, return_inverse=True)
            qs[i] = np.searchsorted(lv, m, side="right")  # m >= lv[j]  <=>  q > j
            levels.append(np.arange(len(lv)))
            inverse.append(inv)
    wsol = protocol == "wsol"
    comps = sweep_batch(qs, levels, holes=wsol, area=wsol)
    counts = np.array([len(lv) for lv in levels])
    offsets = np.cumsum(counts) - counts
    n_levels = int(counts.sum())
    image = np.searchsorted(offsets, comps.level, side="right") - 1
    # ground truth padded to (N, G, 4) half-open boxes; padding far outside gives IoU 0
    g_max = max(len(g) for g in gts)
    gt = np.full((n, g_max, 4), -10.0)
    gt[:, :, 2:] = -9.0
    for i, g in enumerate(gts):
        gt[i, :len(g)] = g + ((0, 0, 1, 1) if wsol else (0, 0, 0, 0))
    if wsol:  # the reference's boxes: x1 = min(x + w, W - 1), inclusive, so + 1 half-open
        pred = np.stack([comps.box[:, 0], comps.box[:, 1],
                         np.minimum(comps.box[:, 2] + 1, width - 1) + 1,
                         np.minimum(comps.box[:, 3] + 1, height - 1) + 1], axis=1)
        size = comps.area2
        empty = np.array([[0.0, 0.0, 1.0, 1.0]])  # the reference's box (0, 0, 0, 0)
        empty_iou = np.array([_pair_iou(empty, gt[i:i + 1]).max() for i in range(n)])
    else:
        pred = comps.box + (0, 0, 1, 1)
        size = comps.pixels
        empty_iou = np.zeros(n)
    best = _pair_iou(pred.astype(np.float64), gt[image]).max(axis=1)
    cand = np.flatnonzero(comps.candidate)
    chosen = _select_first(comps.level[cand], [comps.order[cand], -size[cand]], n_levels)
    has = chosen >= 0
    level_image = np.repeat(np.arange(n), counts)
    one = empty_iou[level_image]
    one[has] = best[cand[chosen[has]]]
    every = np.full(n_levels, -np.inf)
    np.maximum.at(every, comps.level, best)
    every[~has] = empty_iou[level_image[~has]]
    idx = np.stack([offsets[i] + inverse[i] for i in range(n)])  # (n, T) global levels
    return one[idx], every[idx], comps.fast[idx]


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of half-open boxes a (K, 4) with each of b (K, G, 4) -> (K, G)."""
    return paired_iou(a[:, None, :], b)
