"""Atomic file writing shared by the CLI, the report, the pictures and the benchmarks.

Every file the library writes goes to a temporary name in the target's folder first and is then
renamed over the target with :func:`os.replace`, so a reader (or a crash, or Ctrl-C) never sees a
half-written file. The temporary file gets the permissions an ordinary ``open(path, "w")`` would
give (``0o666`` less the umask), not the private ``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_bytes", "to_jsonable", "write_json", "write_text"]


@functools.cache
def _umask() -> int:
    """The process umask, read once: reading it means setting it, and a file another thread
    created in that instant would get no umask at all, so this is not done per write."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_path(path) -> Path:
    """``path`` as a Path to a file: a ``TypeError`` for other kinds, a ``ValueError`` for an
    empty path or a folder (which ``os.replace`` would fail on with an OS error)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike; got {type(path).__name__}")
    if os.fspath(path) in ("", b""):
        raise ValueError("`path` must name a file; got an empty path")
    out = Path(os.fsdecode(path))
    if out.is_dir() or out.name in ("", ".", ".."):
        raise ValueError(f"`path` must name a file; got the folder {str(out)!r}")
    return out


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Parameters
    ----------
    path : str or os.PathLike
        The target; its folder is created when missing.
    data : bytes
        The whole content.

    Returns
    -------
    pathlib.Path
        ``path``. On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = _file_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj):
    """``obj`` with NumPy arrays and scalars as plain lists and numbers, paths as strings, dict
    keys as strings and non-finite floats as ``None`` (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, data) -> Path:
    """Write ``data`` as indented JSON atomically (through :func:`to_jsonable`)."""
    return write_text(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")
