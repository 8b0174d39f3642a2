"""Slow, obviously-right oracles shared by the unit and property tests."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def brute_native(maps, gts, taus, deltas):
    """One scipy labelling per threshold and per image, boxes by hand, IoU by hand."""
    correct = np.zeros((len(taus), len(deltas)), dtype=np.int64)
    correct_all = np.zeros_like(correct)
    for m, gt in zip(maps, gts):
        for k, tau in enumerate(taus):
            mask = m >= np.asarray(tau, dtype=m.dtype) * m.max()
            lab, n = ndi.label(mask, structure=np.ones((3, 3)))
            boxes, sizes = [], []
            for i in range(1, n + 1):
                ys, xs = np.nonzero(lab == i)
                boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
                sizes.append(len(xs))
            ious = []
            for b in boxes:
                best = 0.0
                for g in gt:
                    w = max(0, min(b[2], g[2]) - max(b[0], g[0]))
                    h = max(0, min(b[3], g[3]) - max(b[1], g[1]))
                    inter = w * h
                    union = (b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
                    best = max(best, inter / union if union else 0.0)
                ious.append(best)
            one = ious[int(np.argmax(sizes))] if ious else 0.0
            every = max(ious) if ious else 0.0
            for d, delta in enumerate(deltas):
                correct[k, d] += one >= delta
                correct_all[k, d] += every >= delta
    return correct, correct_all
