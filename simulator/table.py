"""A columnar table with spare capacity: rows are appended in creation order, never moved."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ColumnSpec = Mapping[str, tuple[type | np.dtype, tuple[int, ...]]]


class Table:
    """Named numpy columns of equal length; `t[name]` is the filled part of a column."""

    def __init__(self, capacity: int, spec: ColumnSpec) -> None:
        self._cols = {
            name: np.empty((capacity, *shape), dtype=dtype) for name, (dtype, shape) in spec.items()
        }
        self.n = 0

    @property
    def capacity(self) -> int:
        return len(next(iter(self._cols.values())))

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name][: self.n]

    def append(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Write new rows (every column given); return their row numbers."""
        missing = self._cols.keys() - values.keys()
        extra = values.keys() - self._cols.keys()
        if missing or extra:
            raise ValueError(f"append: missing {sorted(missing)}, unknown {sorted(extra)}")
        count = len(next(iter(values.values())))
        if self.n + count > self.capacity:
            raise ValueError(f"table full: {self.n} + {count} > {self.capacity}")
        for name, column in values.items():
            self._cols[name][self.n : self.n + count] = column
        rows = np.arange(self.n, self.n + count)
        self.n += count
        return rows
