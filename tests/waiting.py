"""Waiting on a condition, never on the clock: the one place in the suite that sleeps.

A test that needs the other side to have acted waits until it has; the timeout only bounds a
hang (a generous one, reported as such), it is never what a test asserts."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], object], what: str, timeout_s: float = 60.0, poll_s: float = 0.02
) -> None:
    """Poll `condition` until it is true; AssertionError naming `what` if it never becomes so."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)
