"""Record ids: unique, spread over a large range, never reused within a seed.

The n-th record ever created for an entity (n = 0, 1, 2, ... over all days) gets the id
`permute(n) + 1`, where `permute` is a keyed bijection of [0, upper) (a Feistel network with
cycle walking). Ids therefore look random, like the reference server's draws from 1..100000,
and two records can never share one.
"""

from __future__ import annotations

import numpy as np

from simulator.hashing import splitmix64

REFERENCE_ID_RANGE = 100_000
_ROUNDS = 4


def id_upper_bound(initial_count: int) -> int:
    """Ids are drawn from 1..upper: the reference's 1..100000, or 100x the initial size."""
    return max(REFERENCE_ID_RANGE, 100 * initial_count)


class IdPermutation:
    """A keyed bijection from creation numbers [0, upper) to ids [1, upper]."""

    def __init__(self, seed: int, stream: int, upper: int) -> None:
        self.upper = upper
        bits = max(2, int(upper - 1).bit_length())
        bits += bits % 2
        self._half = np.uint64(bits // 2)
        self._mask = np.uint64((1 << (bits // 2)) - 1)
        state = np.random.SeedSequence([seed, stream, 0x1D5]).generate_state(_ROUNDS, np.uint64)
        self._keys = [np.uint64(k) for k in state]

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left = x >> self._half
        right = x & self._mask
        for key in self._keys:
            left, right = right, left ^ (splitmix64(right ^ key) & self._mask)
        return (left << self._half) | right

    def ids(self, creation_numbers: np.ndarray) -> np.ndarray:
        seq = np.asarray(creation_numbers, dtype=np.uint64)
        if seq.size and int(seq.max()) >= self.upper:
            raise ValueError(
                f"more than {self.upper} records created: the id range is exhausted "
                "(start with larger --users/--tracks or fewer days)"
            )
        out = self._feistel(seq)
        outside = out >= np.uint64(self.upper)
        while outside.any():
            out[outside] = self._feistel(out[outside])
            outside = out >= np.uint64(self.upper)
        return out.astype(np.int64) + 1
