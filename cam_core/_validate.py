"""Input checks shared by the whole core, and the array-namespace helpers.

Every public function of the core checks its array arguments with the helpers below, so that the
rules are stated once:

- **Dtypes.** float32 stays float32 and float64 stays float64; float16 is computed in float32;
  integers and bools become float64. Anything else (strings, objects, complex) is a ``TypeError``.
- **Shapes.** A wrong rank or shape is a ``ValueError`` that names the parameter, says what was
  expected and echoes what came, e.g. "`maps` must have shape (N, H, W); got (3, 5)".
- **Values.** NaN or Inf in a map is a ``ValueError`` that says where the first one is.
- **Inputs are never modified.** The helpers may return a view of the caller's array; the core only
  ever reads from it (the tests pass read-only arrays).

**Array namespaces.** The core's array functions (the methods, :mod:`cam_core.maps`,
:func:`cam_core.resize.upsample`, the map side of :mod:`cam_core.threshold`,
:func:`cam_core.boxes.box_iou`) are written against the Python array API standard and run on the
arrays they are given: :func:`as_float` keeps a torch tensor, a JAX, CuPy or ``array-api-strict``
array in its own library and on its device (``array-api-compat`` gives the namespace), and the
result is of the kind that came in. NumPy arrays, lists and scalars are NumPy, exactly as before;
NumPy stays the default and the reference. A library is only ever used for arrays that already
come from it: nothing here imports a framework (``array-api-compat`` recognises arrays by the
modules already loaded). The rest of the core (connected components, sweeps, metrics) is NumPy and
SciPy on the host: :func:`as_float_array` copies a device array to the host (:func:`to_numpy`).
Where the standard lacks something:

- **float64 accumulation.** Sums are accumulated in float64 as in NumPy; on a device without
  float64 (Apple's MPS, JAX without ``jax_enable_x64``) they are accumulated in float32
  (:func:`accumulation_dtype`), and integers and bools become float32 there instead of float64.
- **Eigen-CAM's sign** is fixed from the data (a correlation), not taken from the library's
  eigen- or singular vectors, whose signs differ between libraries and devices.
- Functions with no standard equivalent (percentiles, Otsu's threshold) run in NumPy on the host
  and their small results are moved back; ``einsum`` is used where the namespace has it (NumPy,
  torch, JAX, CuPy) and a product and a sum otherwise, so NumPy's numbers do not change.
"""

from __future__ import annotations

import functools
import numbers
import os
import warnings
from collections.abc import Sequence

import array_api_compat
import numpy as np

__all__ = [
    "as_mask",
    "as_boxes",
    "check_box_order",
    "checked_boxes",
    "as_real",
    "as_fractions",
    "accumulation_dtype",
    "array_namespace",
    "as_float",
    "as_float_array",
    "as_int_array",
    "as_size",
    "check_finite",
    "check_fits_memory",
    "check_same_batch",
    "device_of",
    "is_numpy_namespace",
    "resolve_targets",
    "to_numpy",
]

_NP = array_api_compat.array_namespace(np.zeros(0))  # array-api-compat's NumPy namespace


def _is_host(x) -> bool:
    """NumPy arrays and scalars, lists, Python numbers: everything that becomes a NumPy array."""
    return isinstance(x, (np.ndarray, np.generic)) or not array_api_compat.is_array_api_obj(x)


def array_namespace(*arrays):
    """The array namespace of ``arrays`` (None entries ignored).

    NumPy arrays, lists and scalars give array-api-compat's NumPy namespace; an array of another
    library gives that library's (compatible) namespace. Arrays of two different non-NumPy
    libraries are a ``TypeError``; NumPy arrays mixed with one other library take that library's
    namespace (the NumPy arrays are moved to it by :func:`as_float`).
    """
    found = None
    for a in arrays:
        if a is None or _is_host(a):
            continue
        xp = array_api_compat.array_namespace(a)
        if found is None:
            found = xp
        elif xp is not found:
            raise TypeError(
                f"arrays of different libraries cannot be mixed; got {found.__name__} and "
                f"{xp.__name__} arrays"
            )
    return _NP if found is None else found


def is_numpy_namespace(xp) -> bool:
    """True for NumPy (the reference path, whose numbers must not change)."""
    return xp is _NP or xp is np


def device_of(x):
    """The device of an array (``"cpu"`` for NumPy)."""
    return "cpu" if _is_host(x) else array_api_compat.device(x)


def to_numpy(x) -> np.ndarray:
    """``x`` as a NumPy array on the host (a device array is copied; NumPy is returned as is).

    Uses only the array's own methods (nothing is imported): torch ``detach().cpu()`` (bfloat16
    becomes float32, which NumPy lacks), CuPy ``get()``, DLPack or ``__array__`` otherwise.
    """
    if isinstance(x, np.ndarray):
        return x
    if _is_host(x):
        return np.asarray(x)
    if array_api_compat.is_torch_array(x):
        t = x.detach()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    try:
        return np.asarray(x)
    except Exception:  # no __array__: the DLPack protocol (array-api-strict and the like)
        return np.from_dlpack(x)


_FLOAT64_OK: dict[tuple[str, str], bool] = {}


def accumulation_dtype(xp, device):
    """float64 when the device has it, else float32 (see the module docstring)."""
    if is_numpy_namespace(xp):
        return np.float64
    key = (xp.__name__, str(device))
    ok = _FLOAT64_OK.get(key)
    if ok is None:
        try:
            with warnings.catch_warnings():  # JAX without x64 warns and gives float32
                warnings.simplefilter("ignore")
                ok = xp.zeros(1, dtype=xp.float64, device=device).dtype == xp.float64
        except Exception:  # e.g. torch on Apple's MPS: "float64 is not supported"
            ok = False
        _FLOAT64_OK[key] = ok
    return xp.float64 if ok else xp.float32


def _xp_float(x, name: str, xp):
    """The dtype rules of this module for an array of a non-NumPy namespace."""
    dt = x.dtype
    if xp.isdtype(dt, "real floating"):
        if dt == xp.float32 or dt == xp.float64:
            return x
        if xp.finfo(dt).bits < 32:  # float16, bfloat16: computed in float32
            return xp.astype(x, xp.float32)
        return xp.astype(x, accumulation_dtype(xp, array_api_compat.device(x)))
    if xp.isdtype(dt, ("bool", "integral")):
        return xp.astype(x, accumulation_dtype(xp, array_api_compat.device(x)))
    raise TypeError(f"`{name}` must have a numeric dtype; got dtype {dt}")


def as_float(x, name: str, *, shape: Sequence[str | int] | None = None, like=None):
    """:func:`as_float_array` that keeps arrays of other libraries in their library and device.

    Parameters
    ----------
    x : array_like
        The caller's value.
    name : str
        The parameter name used in error messages.
    shape : sequence of str or int, optional
        As in :func:`as_float_array`.
    like : array, optional
        An array already checked: ``x`` is brought to its namespace and device (NumPy values are
        moved to the device; a device array meets a NumPy ``like`` on the host).

    Returns
    -------
    array
        NumPy for NumPy input (exactly :func:`as_float_array`), else an array of ``x``'s library.
    """
    if like is not None:
        xp = array_namespace(like)
        if is_numpy_namespace(xp):
            return as_float_array(x, name, shape=shape)
        if _is_host(x) or array_namespace(x) is not xp:
            arr = xp.asarray(as_float_array(x, name), device=array_api_compat.device(like))
        else:
            arr = _xp_float(x, name, xp)
            dev = array_api_compat.device(like)
            if array_api_compat.device(arr) != dev:
                arr = array_api_compat.to_device(arr, dev)
        if shape is not None:
            _check_shape(arr, name, shape)
        return arr
    if _is_host(x):
        return as_float_array(x, name, shape=shape)
    arr = _xp_float(x, name, array_api_compat.array_namespace(x))
    if shape is not None:
        _check_shape(arr, name, shape)
    return arr


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
    if not _is_host(x):  # an array of another library: to the host
        x = to_numpy(x)
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
    arr = np.asarray(x if _is_host(x) else to_numpy(x))
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


def _check_shape(arr, name: str, shape: Sequence[str | int]) -> None:
    ok = arr.ndim == len(shape) and all(
        isinstance(s, str) or arr.shape[i] == s for i, s in enumerate(shape)
    )
    if not ok:
        raise ValueError(
            f"`{name}` must have shape {_shape_text(shape)}; got {_shape_text(tuple(arr.shape))}"
        )


def check_finite(arr, name: str) -> None:
    """Raise ``ValueError`` naming the first NaN or Inf of ``arr`` (by index).

    A device array is checked on its device (one reduction); only a failing one is copied to the
    host, to say where.
    """
    if not isinstance(arr, np.ndarray):
        xp = array_namespace(arr)
        if bool(xp.all(xp.isfinite(arr))):
            return
        arr = to_numpy(arr)
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
    sizes = {
        name: (a.shape[0] if hasattr(a, "shape") else len(a))
        for name, a in arrays.items()
        if a is not None
    }
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
    xp = array_api_compat.array_namespace(out)  # arrays of another library, on their device
    return bool(xp.all(xp.isfinite(out)))


def finite_result(*names: str):
    """Decorator of a core function whose inputs are checked finite: it runs with NumPy's
    overflow warnings off, and a non-finite result (an overflow of the result's dtype) is a
    ``ValueError`` naming ``names`` instead of Inf or NaN maps."""

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


# ----------------------------------------------------------------- boxes, masks, scalars


def as_mask(mask, name: str, ndim: int | tuple[int, ...] = 2) -> np.ndarray:
    """A bool array; bools as they are, integers must hold only 0 and 1."""
    if isinstance(mask, (str, bytes)):
        raise TypeError(f"`{name}` must be a boolean array; got {type(mask).__name__}")
    arr = np.asarray(mask)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"`{name}` must hold only 0 and 1 (or bools); got values "
                             f"from {arr.min()} to {arr.max()}")
        arr = arr.astype(bool)
    elif arr.dtype.kind != "b":
        raise TypeError(f"`{name}` must be a boolean array; got dtype {arr.dtype}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in dims:
        want = " or ".join({2: "(H, W)", 3: "(N, H, W)"}[d] for d in dims)
        raise ValueError(f"`{name}` must have shape {want}; got {tuple(arr.shape)}")
    return arr


def as_boxes(boxes, name: str) -> np.ndarray:
    """Boxes as an (N, 4) int64 or float array, checked (finite, x1 >= x0, y1 >= y0)."""
    if isinstance(boxes, (str, bytes)):
        raise TypeError(f"`{name}` must be a numeric array; got {type(boxes).__name__}")
    arr = np.asarray(boxes)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64, copy=False)
    elif arr.dtype.kind == "f":
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
        check_finite(arr, name)
    elif arr.dtype.kind == "b":
        raise TypeError(f"`{name}` must have a numeric dtype; got dtype bool")
    else:
        raise TypeError(f"`{name}` must have a numeric dtype; got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"`{name}` must have shape (N, 4); got {tuple(arr.shape)}")
    return arr


def check_box_order(arr: np.ndarray, name: str, *, echo: np.ndarray | None = None) -> None:
    """``x1 >= x0`` and ``y1 >= y0`` in half-open xyxy; ``echo`` is what the caller gave."""
    echo = arr if echo is None else echo
    for lo, hi, axis in ((0, 2, "x"), (1, 3, "y")):
        bad = np.flatnonzero(arr[:, hi] < arr[:, lo])
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"`{name}` row {row}: {axis}1 < {axis}0 (got {echo[row].tolist()}); boxes are "
                f"(x0, y0, x1, y1) with x1 >= x0 and y1 >= y0"
            )


def checked_boxes(boxes, name: str) -> np.ndarray:
    arr = as_boxes(boxes, name)
    check_box_order(arr, name)
    return arr


def as_real(value, name: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be finite; got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"`{name}` must lie in [{low}, {high}]; got {value}")
    return value


def as_fractions(values, name: str) -> np.ndarray:
    """A non-empty float64 1-D array of finite fractions in [0, 1] (threshold grids)."""
    arr = as_float_array(values, name, shape=("T",)).astype(np.float64)
    check_finite(arr, name)
    if arr.size == 0:
        raise ValueError(f"`{name}` must hold at least one value; got an empty array")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"`{name}` must lie in [0, 1]; got values from {arr.min()} to {arr.max()}")
    return arr


def resolve_targets(targets, logits: np.ndarray) -> np.ndarray:
    """Turn the user's ``targets`` into one class index per image.

    ``None`` picks each image's predicted class; an int is broadcast to the whole batch; a
    sequence must have exactly one entry per image. Classes outside ``[0, C)`` are refused.
    Callables are handled by the adapters (they need the framework's logits) and never reach here.
    """
    logits = as_float_array(logits, "logits", shape=("N", "C"))

    check_finite(logits, "logits")  # argmax would pick a NaN's class
    n, c = logits.shape
    if targets is None:
        out = np.argmax(logits, axis=1).astype(np.int64)
    elif isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        out = np.full(n, int(targets), dtype=np.int64)
    else:
        if isinstance(targets, bool):
            raise TypeError("`targets` must be None, an int, a sequence of ints or a callable")
        out = as_int_array(targets, "targets")
        if out.ndim != 1:
            raise ValueError(f"`targets` must be one-dimensional; got shape {out.shape}")
        if len(out) != n:
            raise ValueError(
                f"`targets` must have one entry per image ({n}); got {len(out)}"
            )
    bad = (out < 0) | (out >= c)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"`targets` must be class indices in [0, {c}); got {int(out[i])} for image {i}"
        )
    return out
