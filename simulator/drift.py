"""What moves with the days (realistic profile): users' taste and tracks' popularity.

Both are hashed from (seed, row, day): no state, no random stream, day 0 unchanged; a day's
listens are drawn from that day's taste and popularity.

- Taste drift: DRIFTING_SHARE of the users start, on a day of their own (within
  ADOPTION_WINDOW days of their first), to move towards a new genre: its share of their
  preferred listens grows by NEW_GENRE_SHARE / RAMP_DAYS a day up to NEW_GENRE_SHARE. And
  each user leaves their scene in every genre for another one after an exponential time
  (mean SCENE_STAY_DAYS): what they play inside a genre changes too.
- Popularity waves: a track's popularity is multiplied by exp(slope * age in days), clipped
  to exp(+-WAVE_CAP); slopes are uniform in [-WAVE_RATE, WAVE_RATE] for day-0 tracks (some
  rise, some fall) and in [0, 2 x WAVE_RATE] for tracks added later (new releases rise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator import clock
from simulator.hashing import key64, units_for_ids
from simulator.vocabulary import GENRES

DRIFTING_SHARE = 0.3
ADOPTION_WINDOW = 30
RAMP_DAYS = 10
NEW_GENRE_SHARE = 0.6
SCENE_STAY_DAYS = 120.0
WAVE_RATE = 0.05  # a day
WAVE_CAP = 2.0


def _uniform(rows: np.ndarray, seed: int, what: str) -> np.ndarray:
    """A number in [0, 1) per row, fixed by (seed, what, row)."""
    return units_for_ids(key64(seed, "drift", what), rows)


def day_of(timestamps: np.ndarray) -> np.ndarray:
    """The day (0 for anything before the anchor) a timestamp falls in."""
    return np.maximum(0, (timestamps - clock.ANCHOR_US) // clock.DAY_US).astype(np.int64)


@dataclass(frozen=True)
class Taste:
    """Users' hidden taste on one day, beyond their preferred genres (one value per user)."""

    new_genre: np.ndarray  # int64 genre code the user moves towards
    new_share: np.ndarray  # float64 share of their preferred listens that go to it
    scene_shift: np.ndarray  # int64 added to their scene in every genre

    def subset(self, index: slice) -> Taste:
        return Taste(self.new_genre[index], self.new_share[index], self.scene_shift[index])


def taste_on(
    seed: int, user_rows: np.ndarray, first_day: np.ndarray, day: int, scenes: int
) -> Taste:
    """The drifted taste of users (rows, with the day they arrived) on `day`."""
    age = np.maximum(0, day - first_day)
    drifting = _uniform(user_rows, seed, "drifting") < DRIFTING_SHARE
    adopt_after = 1 + np.floor(_uniform(user_rows, seed, "adoption") * ADOPTION_WINDOW)
    ramp = np.clip((age - adopt_after) / RAMP_DAYS, 0.0, 1.0) * NEW_GENRE_SHARE
    new_genre = np.floor(_uniform(user_rows, seed, "new genre") * len(GENRES)).astype(np.int64)
    stay = -np.log1p(-_uniform(user_rows, seed, "scene stay")) * SCENE_STAY_DAYS
    shift = 1 + np.floor(_uniform(user_rows, seed, "scene shift") * (scenes - 1)).astype(np.int64)
    return Taste(
        new_genre=new_genre,
        new_share=np.where(drifting, ramp, 0.0),
        scene_shift=np.where(age >= stay, shift, 0),
    )


def popularity_on(seed: int, base: np.ndarray, first_day: np.ndarray, day: int) -> np.ndarray:
    """Tracks' popularity on `day`: `base` moved by each track's wave (tracks are rows)."""
    u = _uniform(np.arange(len(base)), seed, "wave")
    slope = np.where(first_day > 0, 2.0 * u, 2.0 * u - 1.0) * WAVE_RATE
    age = np.maximum(0, day - first_day)
    return base * np.exp(np.clip(slope * age, -WAVE_CAP, WAVE_CAP))
