"""The one progress-bar policy of the package (the benchmarks use it too).

Every ``progress`` argument takes ``None``, ``True`` or ``False``:

- ``False``: no bar;
- ``True``: a bar (``tqdm.auto``: a widget in a notebook, text on stderr elsewhere), because the
  caller asked for one;
- ``None``: a bar only when stderr is a terminal and the work has at least ``auto_min`` steps, so
  that short calls, pipes and CI logs stay quiet.
"""

from __future__ import annotations

import sys

import numpy as np
from tqdm.auto import tqdm

__all__ = ["check_progress", "progress_bar"]


def check_progress(progress) -> bool | None:
    """``progress`` as ``None``/``True``/``False``; a ``TypeError`` naming it otherwise."""
    if isinstance(progress, np.bool_):
        return bool(progress)
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be None or a bool; got {type(progress).__name__}")
    return progress


def progress_bar(iterable=None, *, progress, total: int | None = None, auto_min: int = 0,
                 **kwargs):
    """A tqdm bar over ``iterable`` (or one updated by hand up to ``total``), shown by the
    policy of the module docstring; ``kwargs`` go to tqdm (``desc``, ``unit``, ...)."""

    progress = check_progress(progress)
    if progress is None:
        steps = total if total is not None else (
            len(iterable) if hasattr(iterable, "__len__") else auto_min)
        show = steps >= auto_min and sys.stderr.isatty()
    else:
        show = progress
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, disable=not show, **kwargs)
