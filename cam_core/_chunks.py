"""Scoring a model over many inputs, a chunk at a time (private; shared by :mod:`cam_core.methods`
for Score-CAM, SS-CAM, IS-CAM and Ablation-CAM, and by :mod:`cam_core.faithfulness`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from cam_core._progress import progress_bar
from cam_core._validate import to_numpy

__all__ = ["check_batch_size", "check_callable", "chunked_scores"]

# A progress bar is shown by default (progress=None) from this many chunks on, on a terminal.
_PROGRESS_MIN_CHUNKS = 8


def _progress_bar(total: int, progress, desc: str):
    return progress_bar(total=total, progress=progress, auto_min=_PROGRESS_MIN_CHUNKS, desc=desc,
                        unit="chunk", leave=False)


def check_callable(fn, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"`{name}` must be callable; got {type(fn).__name__}")


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"`batch_size` must be an int; got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1; got {batch_size}")
    return int(batch_size)


def _scores_from(fn, n: int, arg, expected: int, what: str) -> np.ndarray:
    """Call a score callable and check it returned ``expected`` finite scores (on the host)."""
    out = to_numpy(fn(n, arg))
    if out.dtype.kind not in "biuf":
        raise TypeError(f"`{what}` must return numeric scores; got dtype {out.dtype}")
    if out.shape != (expected,):
        raise ValueError(
            f"`{what}` must return one score per item, shape ({expected},); "
            f"got {np.shape(out)} for image {n}"
        )
    if not np.all(np.isfinite(out)):
        raise ValueError(f"`{what}` returned a non-finite score for image {n}: {out}")
    return out.astype(np.float64, copy=False)


def chunked_scores(
    fn: Callable[[int, np.ndarray], np.ndarray],
    make: Callable[[int, int, int], np.ndarray],
    shape: tuple[int, int],
    batch_size: int,
    progress,
    what: str,
    desc: str,
) -> np.ndarray:
    """Scores ``(N, M)``: for each image ``n``, ``fn(n, make(n, start, stop))`` per chunk.

    ``make`` builds one chunk's argument (masks, channel indices) only when it is needed, so at
    most one chunk exists at a time; a tqdm bar counts the chunks.
    """
    n_img, count = shape
    out = np.empty((n_img, count), dtype=np.float64)
    with _progress_bar(n_img * math.ceil(count / batch_size), progress, desc) as bar:
        for n in range(n_img):
            for start in range(0, count, batch_size):
                stop = min(start + batch_size, count)
                out[n, start:stop] = _scores_from(fn, n, make(n, start, stop), stop - start, what)
                bar.update(1)
    return out
