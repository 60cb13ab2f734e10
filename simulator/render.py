"""Records as the API serves them: rows of the world turned into JSON-ready dicts, on request.

Field order and formats follow the contract (TracksOut, UsersOut, ListenHistoryOut).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from simulator import clock
from simulator.evolve import World
from simulator.vocabulary import EMAIL_DOMAINS, GENDERS, GENRES

Record = dict[str, Any]
ENDPOINTS = ("tracks", "users", "listen_history")


def email(kind: int, first: str, last: str, number: int, domain: int) -> str:
    """An address like Faker's: carl15@, carlsmith@, smithcarl@, carl.smith@, csmith@."""
    if kind == 0:
        local = f"{first}{number:02d}"
    elif kind == 1:
        local = f"{first}{last}"
    elif kind == 2:
        local = f"{last}{first}"
    elif kind == 3:
        local = f"{first}.{last}"
    else:
        local = f"{first[0]}{last}"
    return f"{local}@{EMAIL_DOMAINS[domain]}"


def duration(seconds: int) -> str:
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def track_records(world: World, rows: np.ndarray) -> list[Record]:
    t, pools = world.tracks, world.pools
    first, last, words = pools.first_names, pools.last_names, pools.words
    writer2 = t["writer2_first"][rows].tolist()
    writer2_last = t["writer2_last"][rows].tolist()
    out = []
    for i, (tid, name, af, al, wf, wl, dur, label, album, created, updated) in enumerate(
        zip(
            t["id"][rows].tolist(),
            t["name"][rows].tolist(),
            t["artist_first"][rows].tolist(),
            t["artist_last"][rows].tolist(),
            t["writer_first"][rows].tolist(),
            t["writer_last"][rows].tolist(),
            t["duration"][rows].tolist(),
            t["genre_label"][rows].tolist(),
            t["album"][rows].tolist(),
            clock.render(t["created"][rows]),
            clock.render(t["updated"][rows]),
            strict=True,
        )
    ):
        writers = f"{first[wf]} {last[wl]}"
        if writer2[i] >= 0:
            writers += f", {first[writer2[i]]} {last[writer2_last[i]]}"
        out.append(
            {
                "id": tid,
                "name": words[name],
                "artist": f"{first[af]} {last[al]}",
                "songwriters": writers,
                "duration": duration(dur),
                "genres": world.labels[label],
                "album": words[album],
                "created_at": created,
                "updated_at": updated,
            }
        )
    return out


def user_records(world: World, rows: np.ndarray) -> list[Record]:
    u, pools = world.users, world.pools
    first, last = pools.first_names, pools.last_names
    efirst, elast = pools.email_first, pools.email_last
    return [
        {
            "id": uid,
            "first_name": first[f],
            "last_name": last[la],
            "email": email(kind, efirst[ef], elast[el], num, dom),
            "gender": GENDERS[gender],
            "favorite_genres": GENRES[fav],
            "created_at": created,
            "updated_at": updated,
        }
        for uid, f, la, ef, el, kind, num, dom, gender, fav, created, updated in zip(
            u["id"][rows].tolist(),
            u["first"][rows].tolist(),
            u["last"][rows].tolist(),
            u["email_first"][rows].tolist(),
            u["email_last"][rows].tolist(),
            u["email_kind"][rows].tolist(),
            u["email_num"][rows].tolist(),
            u["email_domain"][rows].tolist(),
            u["gender"][rows].tolist(),
            u["preferred"][rows, 0].tolist(),
            clock.render(u["created"][rows]),
            clock.render(u["updated"][rows]),
            strict=True,
        )
    ]


def history_records(world: World, rows: np.ndarray) -> list[Record]:
    u, csr = world.users, world.listens
    track_ids = world.tracks["id"]
    return [
        {
            "user_id": uid,
            "items": track_ids[csr.items[start:end]].tolist(),
            "created_at": created,
            "updated_at": updated,
        }
        for uid, start, end, created, updated in zip(
            u["id"][rows].tolist(),
            csr.offsets[rows].tolist(),
            csr.offsets[rows + 1].tolist(),
            clock.render(u["history_created"][rows]),
            clock.render(u["history_updated"][rows]),
            strict=True,
        )
    ]


RENDERERS: dict[str, Callable[[World, np.ndarray], list[Record]]] = {
    "tracks": track_records,
    "users": user_records,
    "listen_history": history_records,
}


def view(world: World, endpoint: str) -> np.ndarray:
    """The live rows an endpoint serves, in serving order."""
    return world.track_view if endpoint == "tracks" else world.user_view


def record_ids(world: World, endpoint: str, rows: np.ndarray) -> np.ndarray:
    table = world.tracks if endpoint == "tracks" else world.users
    return table["id"][rows]
