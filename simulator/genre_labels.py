"""The text of the tracks' `genres` field.

A track's genres are kept as codes (g1, g2) for sampling listens, and its `genres` text as an
index into a growing list of distinct labels. In the realistic profile most labels are the
canonical "Rock" or "Rock, Pop"; a small fraction uses another separator or spelling.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from simulator.vocabulary import GENRE_SEPARATORS, GENRE_VARIANTS, GENRES

NO_GENRE = -1


class GenreLabels:
    """Distinct label strings with their index; canonical labels are indexed by (g1, g2)."""

    def __init__(self, initial: Iterable[str] = ()) -> None:
        self.labels: list[str] = []
        self._index: dict[str, int] = {}
        for label in initial:
            self.index(label)
        self._canonical: np.ndarray | None = None

    def index(self, label: str) -> int:
        found = self._index.get(label)
        if found is None:
            found = self._index[label] = len(self.labels)
            self.labels.append(label)
        return found

    def canonical(self, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        """Label indexes of "G1" or "G1, G2" (canonical spelling, ", " separator)."""
        if self._canonical is None:
            table = np.empty((len(GENRES), len(GENRES) + 1), dtype=np.int32)
            for a, first in enumerate(GENRES):
                table[a, 0] = self.index(first)
                for b, second in enumerate(GENRES):
                    table[a, b + 1] = self.index(f"{first}{GENRE_SEPARATORS[0]}{second}")
            self._canonical = table
        return self._canonical[g1.astype(np.int64), g2.astype(np.int64) + 1]

    def variant(self, g1: int, g2: int, choice: int) -> int:
        """A non-canonical label for (g1, g2); `choice` picks separator and spellings."""
        names = [GENRES[g1]] + ([GENRES[g2]] if g2 != NO_GENRE else [])
        spelled = []
        for k, name in enumerate(names):
            options = (name, *GENRE_VARIANTS[name])
            spelled.append(options[(choice >> (3 * k)) % len(options)])
        separator = GENRE_SEPARATORS[(choice >> 8) % len(GENRE_SEPARATORS)]
        label = separator.join(spelled)
        if label == GENRE_SEPARATORS[0].join(names):  # the choice fell on the canonical label
            label = label.lower() if choice % 2 else label.upper()
        return self.index(label)
