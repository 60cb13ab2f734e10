"""Listeners who follow their lists: to show that an uptake metric moves (off by default).

Given a JSON file `{"<day>": {"<user_id>": [track_id, ...]}}` (the lists the users had on that
day, e.g. the warehouse's recommendations.user_top_tracks after the previous day's run), on day
d each user with a list for d, alive and created before d, follows it with probability `p`:
1 + Poisson(1) distinct tracks of the list (alive, created before d) are appended to their
history. The draws come from a random stream of their own, after the day's other changes, so a
world without lists for a day is the same as without following. The file is read each time a
world is built: a test writes day d's lists, then moves the simulator to day d.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator import clock
from simulator.generate import Stream, WorldBuilder

EXTRA_LISTENS = 1.0  # a follower plays 1 + Poisson(this) tracks of their list


@dataclass(frozen=True)
class Following:
    lists_path: Path
    p: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError("the follow probability must be in [0, 1]")

    def lists(self, day: int) -> dict[int, list[int]]:
        """The lists given for `day` (none if the file has no entry for it)."""
        if not self.lists_path.is_file():
            return {}
        days = json.loads(self.lists_path.read_text(encoding="utf-8"))
        return {
            int(user): [int(t) for t in tracks] for user, tracks in days.get(str(day), {}).items()
        }


def follow_lists(
    b: WorldBuilder, following: Following, users_before: int, tracks_before: int
) -> None:
    """Append the day's followed listens (see the module docstring) to `b`."""
    lists = following.lists(b.day)
    if not lists or following.p == 0:
        return
    rng = b.spec.rng(Stream.FOLLOW, b.day)
    user_row = {
        int(i): r for r, i in enumerate(b.users["id"][:users_before]) if b.users["alive"][r]
    }
    track_row = {
        int(i): r for r, i in enumerate(b.tracks["id"][:tracks_before]) if b.tracks["alive"][r]
    }
    rows, counts, items = [], [], []
    for user_id in sorted(lists):
        row = user_row.get(user_id)
        playable = [track_row[t] for t in dict.fromkeys(lists[user_id]) if t in track_row]
        follows = rng.random() < following.p
        wanted = 1 + int(rng.poisson(EXTRA_LISTENS))
        if row is None or not playable or not follows:
            continue
        picked = rng.choice(len(playable), size=min(wanted, len(playable)), replace=False)
        rows.append(row)
        counts.append(len(picked))
        items.extend(playable[i] for i in picked)
    if not rows:
        return
    user_rows = np.asarray(rows, dtype=np.int64)
    b.listens.append(
        user_rows, np.asarray(counts, dtype=np.int64), np.asarray(items, dtype=np.int32)
    )
    b.users["history_updated"][user_rows] = clock.in_range(rng, *clock.day_window(b.day), len(rows))
    b.events["followed_lists"] = b.events.get("followed_lists", 0) + len(rows)
