"""Deterministic hashing: the simulator's only source of 'randomness' outside numpy generators.

Faults and ids are decided from hashes of stable keys (seed, endpoint, page, attempt, record id),
so the same run repeats exactly and a retry (a new attempt number) gets a fresh decision.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_64 = float(2**64)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on a uint64 array (wrapping arithmetic)."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
    return z


def key64(*parts: object) -> int:
    """A 64-bit key from any printable parts (stable across processes, unlike hash())."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def unit(*parts: object) -> float:
    """A number in [0, 1) decided by the parts."""
    return key64(*parts) / _TWO_POW_64


def units_for_ids(key: int, ids: np.ndarray) -> np.ndarray:
    """One number in [0, 1) per id, decided by (key, id): stable for a record across reads."""
    mixed = splitmix64(ids.astype(np.uint64) ^ np.uint64(key))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)
