"""Errors and message helpers shared by the command line and the model loaders.

:class:`CliError` is a problem the user can fix (a missing file, a model that does not load, a
malformed option): ``cam-core`` prints it as one line without a traceback. It lives here, not in
:mod:`cam_core.cli`, because the model loaders of :mod:`cam_core.adapters.loading` raise it too.
"""

from __future__ import annotations

__all__ = ["CliError", "first_line"]


class CliError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when the message is empty)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
