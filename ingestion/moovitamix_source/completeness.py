"""Is a read of an endpoint complete? Records received == the API's total, ids unique, and the
total unchanged from the first page to the last.

Ids are kept in compact arrays (12 bytes per record: id and page), not in Python sets, so the
check stays small when the API grows.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np


class ReadMismatch(RuntimeError):
    """The records of a read do not add up; `problems` says what differed (`first_read`: what
    differed in the first of several reads)."""

    def __init__(
        self, endpoint: str, problems: list[str], first_read: list[str] | None = None
    ) -> None:
        self.endpoint = endpoint
        self.problems = problems
        self.first_read = first_read or []
        super().__init__(f"{endpoint}: " + "; ".join(problems))


@dataclass
class _PageTotal:
    page: int
    total: int | None


class ReadCheck:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.total: int | None = None  # as page 1 reported it
        self.received = 0
        self.unkeyed = 0  # records without a readable id (rejected): counted, not id-checked
        self._first: _PageTotal | None = None
        self._changed: list[_PageTotal] = []
        self._ids = array("q")
        self._pages = array("i")

    def add_page(self, page: int, total: int | None, keys: list[int | None]) -> None:
        # The first total reported is the reference (page 1's, unless it came as null).
        if total is not None:
            if self._first is None:
                self._first = _PageTotal(page, total)
                self.total = total
            elif total != self._first.total:
                self._changed.append(_PageTotal(page, total))
        self.received += len(keys)
        for key in keys:
            if key is None:
                self.unkeyed += 1
            else:
                self._ids.append(key)
                self._pages.append(page)

    def problems(self) -> list[str]:
        found = []
        if self._changed and self._first is not None:
            first = self._first
            change = self._changed[0]
            found.append(
                f"the total changed during the read: page {first.page} said {first.total}, "
                f"page {change.page} said {change.total}"
            )
        if self.total is not None and self.received != self.total:
            found.append(f"received {self.received} records but the API's total is {self.total}")
        duplicates = self._duplicates()
        if duplicates:
            count, example, pages = duplicates
            where = ", ".join(str(p) for p in pages)
            found.append(
                f"{count} id{'s' if count > 1 else ''} served more than once "
                f"(e.g. id {example} on pages {where})"
            )
        return found

    def _duplicates(self) -> tuple[int, int, list[int]] | None:
        if not self._ids:
            return None
        ids = np.frombuffer(self._ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        ordered = ids[order]
        repeated = ordered[1:] == ordered[:-1]
        if not repeated.any():
            return None
        duplicate_ids = np.unique(ordered[1:][repeated])
        example = int(duplicate_ids[0])
        pages = np.frombuffer(self._pages, dtype=np.int32)[ids == example]
        return len(duplicate_ids), example, sorted(int(p) for p in pages)

    def verify(self) -> None:
        problems = self.problems()
        if problems:
            raise ReadMismatch(self.endpoint, problems)
