"""Errors and message helpers shared by the command line and the model loaders.

:class:`CliError` is a problem the user can fix (a missing file, a model that does not load, a
malformed option): ``cam-core`` prints it as one line without a traceback. It lives here, not in
:mod:`cam_core.cli`, because the model loaders of :mod:`cam_core.adapters.loading` raise it too.
"""

from __future__ import annotations

__all__ = ["MODEL_ERRORS", "CliError", "explain_error", "first_line"]

#: What a model or an adapter raises on a batch it cannot explain (see :func:`explain_error`).
MODEL_ERRORS = (RuntimeError, AssertionError, ValueError, TypeError, KeyError, LookupError)


class CliError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when the message is empty)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def explain_error(exc: BaseException, *, image_size, size_name: str, targets_name: str | None,
                  layer_name: str | None) -> str:
    """One line for an error of :data:`MODEL_ERRORS` raised while explaining a batch, saying
    which input to look at: the image size (the model itself failed: a RuntimeError or an
    AssertionError), the targets or the layer (named ``targets_name`` / ``layer_name`` as the
    caller's user knows them: an option of the command line, an argument of a function; None
    when the caller gave none), else the message as it is."""
    msg = first_line(exc)
    if isinstance(exc, (RuntimeError, AssertionError)):
        h, w = image_size
        return (f"the model failed on {h}x{w} inputs (is {size_name} right for it?): "
                f"{type(exc).__name__}: {msg}")
    if targets_name is not None and "target" in msg:
        return f"{targets_name}: {msg}"
    if layer_name is not None and "layer" in msg.lower():
        return f"{layer_name}: {msg}"
    return msg
