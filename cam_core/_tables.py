"""Numbers and Markdown tables as the package and its benchmarks print them (one home)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["fmt", "md_table", "sci"]


def fmt(value, digits: int = 1) -> str:
    """A number for a table: rounded once to ``digits`` fixed digits; ints and bools as they are;
    "-" for None, NaN and infinities; anything else through ``str``."""
    if value is None:
        return "-"
    if isinstance(value, (bool, int, str)):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{v:.{digits}f}" if math.isfinite(v) else "-"


def sci(value, digits: int = 2) -> str:
    """A number in scientific notation (``1.23e-06``, for differences that span magnitudes);
    "-" for None, NaN and infinities."""
    if value is None:
        return "-"
    v = float(value)
    return f"{v:.{digits}e}" if math.isfinite(v) else "-"


def md_table(header: Sequence[str], rows: Sequence[Sequence], digits: int = 1) -> str:
    """A Markdown table; cells that are not strings go through :func:`fmt` with ``digits``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c, digits) for c in row)
                     + " |")
    return "\n".join(lines)
