"""Input checks shared by the whole core.

Every public function of the core turns its array arguments into NumPy arrays with the helpers
below, so that the rules are stated once:

- **Dtypes.** float32 stays float32 and float64 stays float64; float16 is computed in float32;
  integers and bools become float64. Anything else (strings, objects, complex) is a ``TypeError``.
- **Shapes.** A wrong rank or shape is a ``ValueError`` that names the parameter, says what was
  expected and echoes what came, e.g. "`maps` must have shape (N, H, W); got (3, 5)".
- **Values.** NaN or Inf in a map is a ``ValueError`` that says where the first one is.
- **Inputs are never modified.** The helpers may return a view of the caller's array; the core only
  ever reads from it (the tests pass read-only arrays).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "as_float_array",
    "as_int_array",
    "as_size",
    "check_finite",
    "check_fits_memory",
    "check_same_batch",
]


def _shape_text(shape: Sequence[str | int]) -> str:
    inner = ", ".join(str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def as_float_array(x, name: str, *, shape: Sequence[str | int] | None = None) -> np.ndarray:
    """Return ``x`` as a floating array following the dtype rules of this module.

    Parameters
    ----------
    x : array_like
        The caller's value.
    name : str
        The parameter name used in error messages.
    shape : sequence of str or int, optional
        The expected shape, one entry per axis: an int fixes that axis, a str is a free axis named
        in messages (e.g. ``("N", "K", "h", "w")``). Only the rank and the fixed axes are checked.
    """
    if isinstance(x, (str, bytes)):
        raise TypeError(f"`{name}` must be a numeric array; got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"`{name}` must be a numeric array; got {type(x).__name__}") from exc
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        elif arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
    elif kind in "biu":
        arr = arr.astype(np.float64)
    else:
        raise TypeError(f"`{name}` must have a numeric dtype; got dtype {arr.dtype}")
    if shape is not None:
        _check_shape(arr, name, shape)
    return arr


def as_int_array(x, name: str, *, shape: Sequence[str | int] | None = None) -> np.ndarray:
    """Return ``x`` as an int64 array; floats must hold whole numbers, bools are refused."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"`{name}` must be an integer array; got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"`{name}` must hold whole numbers; got {arr.ravel()[:6]!r}")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iu":
        arr = arr.astype(np.int64, copy=False)
    else:
        raise TypeError(f"`{name}` must have an integer dtype; got dtype {arr.dtype}")
    if shape is not None:
        _check_shape(arr, name, shape)
    return arr


def _check_shape(arr: np.ndarray, name: str, shape: Sequence[str | int]) -> None:
    ok = arr.ndim == len(shape) and all(
        isinstance(s, str) or arr.shape[i] == s for i, s in enumerate(shape)
    )
    if not ok:
        raise ValueError(
            f"`{name}` must have shape {_shape_text(shape)}; got {_shape_text(arr.shape)}"
        )


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming the first NaN or Inf of ``arr`` (by index)."""
    finite = np.isfinite(arr)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        bad = arr[where]
        raise ValueError(
            f"`{name}` must be finite; got {bad} at index {where} "
            f"({int((~finite).sum())} non-finite values in all)"
        )


def check_same_batch(**arrays) -> int:
    """Check that all given arrays share their first axis and return its length.

    An empty batch is a ``ValueError``: every core function needs at least one item.
    """
    sizes = {name: len(a) for name, a in arrays.items() if a is not None}
    values = set(sizes.values())
    if len(values) > 1:
        listing = ", ".join(f"`{k}` has {v}" for k, v in sizes.items())
        raise ValueError(f"batch sizes differ: {listing}")
    n = values.pop() if values else 0
    if n == 0:
        names = ", ".join(f"`{k}`" for k in sizes)
        raise ValueError(f"{names}: the batch is empty; need at least one item")
    return n


def physical_memory() -> int | None:
    """The machine's memory in bytes, or None where the platform does not say."""
    import os

    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return memory if memory > 0 else None


def check_fits_memory(nbytes: int, name: str, what: str) -> None:
    """A ``ValueError`` naming ``name`` when ``what`` needs more bytes than the machine's memory
    (instead of NumPy's "Maximum allowed size exceeded" or hours of swapping)."""
    memory = physical_memory()
    if memory is not None and nbytes > memory:
        raise ValueError(
            f"`{name}`: {what} needs {nbytes / 2**30:.3g} GiB; this machine has "
            f"{memory / 2**30:.3g} GiB of memory"
        )


def as_size(size, name: str = "size") -> tuple[int, int]:
    """Return ``size`` as ``(H, W)``: an int means a square, a pair is (height, width)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    else:
        try:
            items = list(size)
        except TypeError as exc:
            raise TypeError(
                f"`{name}` must be an int or a (height, width) pair; got {size!r}"
            ) from exc
        for s in items:  # whole real numbers only: no str, bool, NaN, 2.5
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, float, np.integer, np.floating)):
                raise TypeError(
                    f"`{name}` must be an int or a (height, width) pair of ints; got {size!r}"
                )
            if not np.isfinite(float(s)) or float(s) != int(s):
                raise ValueError(f"`{name}` must hold whole numbers; got {size!r}")
        if len(items) != 2:
            raise ValueError(f"`{name}` must be an int or a (height, width) pair; got {size!r}")
        pair = (int(items[0]), int(items[1]))
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"`{name}` must be positive; got {size!r}")
    return pair


def check_nonempty_axes(arr, name: str, what: str) -> None:
    """A ``ValueError`` when an axis after the first (the batch) has length 0."""
    if 0 in tuple(arr.shape)[1:]:
        raise ValueError(f"`{name}` must have {what}; got shape {tuple(arr.shape)}")


def _all_finite(out) -> bool:
    if isinstance(out, np.ndarray):
        return bool(np.isfinite(out).all())
    from array_api_compat import array_namespace  # arrays of another library, on their device

    xp = array_namespace(out)
    return bool(xp.all(xp.isfinite(out)))


def finite_result(*names: str):
    """Decorator of a core function whose inputs are checked finite: it runs with NumPy's
    overflow warnings off, and a non-finite result (an overflow of the result's dtype) is a
    ``ValueError`` naming ``names`` instead of Inf or NaN maps."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def checked(*args, **kwargs):
            with np.errstate(over="ignore", invalid="ignore"):
                out = fn(*args, **kwargs)
            if not _all_finite(out):
                inputs = ", ".join(f"`{n}`" for n in names)
                dtype = getattr(out, "dtype", "")
                raise ValueError(
                    f"{fn.__name__}: the maps overflow {dtype}; {inputs} are too large (pass "
                    f"float64 arrays or scale them down)"
                )
            return out

        return checked

    return wrap
