"""One line of error text for summaries, alerts and the run log."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The exception's message on one line: its first three non-blank lines joined (the reason
    and the detail a driver or tool puts under it), or the exception's type when it says nothing."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__
