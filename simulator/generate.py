"""Day-0 data: users, tracks and listen histories, generated column-wise with numpy.

Everything is decided by the WorldSpec (seed, profile, sizes): two processes with the same spec
hold identical data. Records are rows of numpy columns holding codes and pool indexes; strings
are only made when a page is rendered (simulator.render).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from simulator import clock
from simulator.drift import day_of, popularity_on, taste_on
from simulator.genre_labels import NO_GENRE, GenreLabels
from simulator.ids import IdPermutation, id_upper_bound
from simulator.listens import SCENES, Csr, ListenLog, ListenSampler, csr_from_counts
from simulator.pools import Pools, build_pools
from simulator.sessions import ALBUM_EXTRA_TRACKS, album_starts
from simulator.table import ColumnSpec, Table
from simulator.vocabulary import EMAIL_DOMAINS, GENDER_WEIGHTS, GENDERS, GENRE_WEIGHTS, GENRES

PROFILES = ("realistic", "reference")
_PROFILE_CODES = {"realistic": 1, "reference": 2}

REFERENCE_LISTENS_PER_USER = 5
# realistic profile
LISTENS_LOG_MEAN = 2.6  # lognormal listens per user: mean ~20, long tail
LISTENS_LOG_SIGMA = 0.9
MAX_LISTENS_PER_USER = 2000
POPULARITY_EXPONENT = 1.0  # Zipf-like: weight = rank ** -exponent
SECOND_GENRE_SHARE = 0.4
GENRE_VARIANT_SHARE = 0.06  # tracks whose `genres` text is not canonical
SECOND_WRITER_SHARE = 0.1
PREFERRED_GENRE_COUNT_SHARES = (0.3, 0.4, 0.3)  # users with 1, 2, 3 preferred genres
EMAIL_KINDS = 5  # see render.email

USER_COLUMNS: ColumnSpec = {
    "id": (np.int64, ()),
    "first": (np.int32, ()),
    "last": (np.int32, ()),
    "email_first": (np.int32, ()),
    "email_last": (np.int32, ()),
    "email_kind": (np.int8, ()),
    "email_num": (np.int16, ()),
    "email_domain": (np.int8, ()),
    "gender": (np.int8, ()),
    "preferred": (np.int8, (3,)),  # genre codes, -1 padded; the first is favorite_genres
    "created": (np.int64, ()),
    "updated": (np.int64, ()),
    "history_created": (np.int64, ()),
    "history_updated": (np.int64, ()),
    "alive": (np.bool_, ()),
}

TRACK_COLUMNS: ColumnSpec = {
    "id": (np.int64, ()),
    "name": (np.int32, ()),
    "artist_first": (np.int32, ()),
    "artist_last": (np.int32, ()),
    "writer_first": (np.int32, ()),
    "writer_last": (np.int32, ()),
    "writer2_first": (np.int32, ()),  # -1: a single songwriter
    "writer2_last": (np.int32, ()),
    "duration": (np.int16, ()),  # seconds, < 3600
    "genre_label": (np.int32, ()),  # index into GenreLabels
    "g1": (np.int8, ()),  # genre codes (realistic profile), -1 when none
    "g2": (np.int8, ()),
    "album": (np.int32, ()),
    "album_row": (np.int64, ()),  # hidden: the row opening the track's album (realistic)
    "popularity": (np.float32, ()),
    "created": (np.int64, ()),
    "updated": (np.int64, ()),
    "alive": (np.bool_, ()),
}


class Stream(IntEnum):
    """Independent random streams, so that changing one part leaves the others alone."""

    USERS = 1
    TRACKS = 2
    LISTENS = 3
    DAY = 4
    COUNTS = 5
    USER_IDS = 6
    TRACK_IDS = 7
    FOLLOW = 8  # simulator.follow


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 1
    profile: str = "realistic"
    users: int = 1000
    tracks: int = 1000

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {self.profile!r}")
        if self.users < 1 or self.tracks < 1:
            raise ValueError("users and tracks must be >= 1")

    @property
    def realistic(self) -> bool:
        return self.profile == "realistic"

    def rng(self, stream: Stream, day: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, _PROFILE_CODES[self.profile], stream, day])


@dataclass
class WorldBuilder:
    """The mutable state while a day's world is being built (see simulator.evolve)."""

    spec: WorldSpec
    pools: Pools
    users: Table
    tracks: Table
    labels: GenreLabels
    listens: ListenLog
    user_ids: IdPermutation
    track_ids: IdPermutation
    day: int = 0
    events: dict[str, int] = field(default_factory=dict)


def _weights(values: tuple[float, ...]) -> np.ndarray:
    w = np.asarray(values, dtype=np.float64)
    return w / w.sum()


def distinct_genres(rng: np.random.Generator, taken: list[np.ndarray], n: int) -> np.ndarray:
    """Genre codes drawn by GENRE_WEIGHTS, each different from the codes in `taken` rows."""
    p = _weights(GENRE_WEIGHTS)
    out = rng.choice(len(GENRES), size=n, p=p)
    clash = np.zeros(n, dtype=bool)
    for t in taken:
        clash |= out == t
    while clash.any():
        out[clash] = rng.choice(len(GENRES), size=int(clash.sum()), p=p)
        clash[:] = False
        for t in taken:
            clash |= out == t
    return out.astype(np.int8)


def preferred_genres(spec: WorldSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """n x 3 genre codes, -1 padded: 1-3 distinct tastes (realistic) or one uniform genre."""
    pref = np.full((n, 3), NO_GENRE, dtype=np.int8)
    if not spec.realistic:
        pref[:, 0] = rng.integers(0, len(GENRES), n)
        return pref
    count = rng.choice(3, size=n, p=_weights(PREFERRED_GENRE_COUNT_SHARES)) + 1
    pref[:, 0] = distinct_genres(rng, [], n)
    second = distinct_genres(rng, [pref[:, 0]], n)
    third = distinct_genres(rng, [pref[:, 0], second], n)
    pref[:, 1] = np.where(count >= 2, second, NO_GENRE)
    pref[:, 2] = np.where(count >= 3, third, NO_GENRE)
    return pref


def new_users(
    b: WorldBuilder,
    rng: np.random.Generator,
    created: np.ndarray,
    updated: np.ndarray,
    history_created: np.ndarray,
    history_updated: np.ndarray,
) -> np.ndarray:
    """Append users (with the given timestamps); return their rows."""
    n = len(created)
    pools, realistic = b.pools, b.spec.realistic
    first = rng.integers(0, len(pools.first_names), n, dtype=np.int32)
    last = rng.integers(0, len(pools.last_names), n, dtype=np.int32)
    if realistic:  # the address is made from the name, as people do
        email_first, email_last = first, last
        gender = rng.choice(len(GENDERS), size=n, p=_weights(GENDER_WEIGHTS))
    else:  # the reference server draws each field independently
        email_first = rng.integers(0, len(pools.first_names), n, dtype=np.int32)
        email_last = rng.integers(0, len(pools.last_names), n, dtype=np.int32)
        gender = rng.integers(0, len(GENDERS), n)
    start = b.users.n
    return b.users.append(
        {
            "id": b.user_ids.ids(np.arange(start, start + n)),
            "first": first,
            "last": last,
            "email_first": email_first,
            "email_last": email_last,
            "email_kind": rng.integers(0, EMAIL_KINDS, n),
            "email_num": rng.integers(0, 100, n),
            "email_domain": rng.integers(0, len(EMAIL_DOMAINS), n),
            "gender": gender,
            "preferred": preferred_genres(b.spec, rng, n),
            "created": created,
            "updated": updated,
            "history_created": history_created,
            "history_updated": history_updated,
            "alive": np.ones(n, dtype=bool),
        }
    )


def track_genres(
    b: WorldBuilder, rng: np.random.Generator, n: int, opener: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g1, g2, label index) for n tracks; tracks share the genres of their `opener` (index)."""
    if not b.spec.realistic:  # the reference server: a random word, no genre codes
        label = rng.integers(0, len(b.pools.words), n, dtype=np.int32)
        none = np.full(n, NO_GENRE, dtype=np.int8)
        return none, none.copy(), label
    g1 = distinct_genres(rng, [], n)
    g2 = distinct_genres(rng, [g1], n)
    g2[rng.random(n) >= SECOND_GENRE_SHARE] = NO_GENRE
    g1, g2 = g1[opener], g2[opener]
    label = b.labels.canonical(g1, g2).astype(np.int32)
    variant = np.flatnonzero(rng.random(n) < GENRE_VARIANT_SHARE)
    choices = rng.integers(0, 1 << 16, len(variant))
    for row, choice in zip(variant.tolist(), choices.tolist(), strict=True):
        label[row] = b.labels.variant(int(g1[row]), int(g2[row]), choice)
    return g1, g2, label


def durations(spec: WorldSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds: uniform over 00:00-59:59 (reference), or a song-like ~3.5 min (realistic)."""
    if not spec.realistic:
        return rng.integers(0, 3600, n).astype(np.int16)
    seconds = np.exp(rng.normal(np.log(210.0), 0.35, n))
    return np.clip(np.rint(seconds), 30, 3599).astype(np.int16)


def new_tracks(
    b: WorldBuilder, rng: np.random.Generator, created: np.ndarray, updated: np.ndarray
) -> np.ndarray:
    """Append tracks (with the given timestamps); return their rows."""
    n = len(created)
    pools = b.pools
    names, words = len(pools.first_names), len(pools.words)
    lasts = len(pools.last_names)
    start = b.tracks.n
    # realistic: albums of consecutive rows share artist, album name and genres
    album = album_starts(rng, start, n) if b.spec.realistic else np.arange(start, start + n)
    opener = album - start
    g1, g2, label = track_genres(b, rng, n, opener)
    writer2_first = rng.integers(0, names, n, dtype=np.int32)
    writer2_last = rng.integers(0, lasts, n, dtype=np.int32)
    single = rng.random(n) >= (SECOND_WRITER_SHARE if b.spec.realistic else 0.0)
    writer2_first[single] = -1
    writer2_last[single] = -1
    if b.spec.realistic:  # Zipf-like: a few hits, a long tail
        rank = rng.integers(1, b.spec.tracks + 1, n) if b.day else rng.permutation(n) + 1
        # by album (its opener's rank, in albums), then by place on it: the singles come first
        album_rank = np.maximum(1.0, rank[opener] / (1 + ALBUM_EXTRA_TRACKS))
        popularity = album_rank**-POPULARITY_EXPONENT * (1.0 + np.arange(n) - opener) ** -0.5
    else:
        popularity = np.ones(n)
    return b.tracks.append(
        {
            "id": b.track_ids.ids(np.arange(start, start + n)),
            "name": rng.integers(0, words, n, dtype=np.int32),
            "artist_first": rng.integers(0, names, n, dtype=np.int32)[opener],
            "artist_last": rng.integers(0, lasts, n, dtype=np.int32)[opener],
            "writer_first": rng.integers(0, names, n, dtype=np.int32),
            "writer_last": rng.integers(0, lasts, n, dtype=np.int32),
            "writer2_first": writer2_first,
            "writer2_last": writer2_last,
            "duration": durations(b.spec, rng, n),
            "genre_label": label,
            "g1": g1,
            "g2": g2,
            "album": rng.integers(0, words, n, dtype=np.int32)[opener],
            "album_row": album,
            "popularity": popularity,
            "created": created,
            "updated": updated,
            "alive": np.ones(n, dtype=bool),
        }
    )


def listen_counts(spec: WorldSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    if not spec.realistic:
        return np.full(n, REFERENCE_LISTENS_PER_USER, dtype=np.int64)
    counts = np.rint(np.exp(rng.normal(LISTENS_LOG_MEAN, LISTENS_LOG_SIGMA, n)))
    return np.clip(counts, 1, MAX_LISTENS_PER_USER).astype(np.int64)


def sampler_for(b: WorldBuilder, rows: np.ndarray) -> ListenSampler:
    """A sampler over track `rows` with the popularity of the day being built."""
    t = b.tracks
    popularity = t["popularity"]
    if b.spec.realistic and b.day:
        popularity = popularity_on(b.spec.seed, popularity, day_of(t["created"]), b.day)
    return ListenSampler(rows, t["g1"], t["g2"], popularity, t["album_row"])


def draw_listens(
    b: WorldBuilder,
    rng: np.random.Generator,
    sampler: ListenSampler,
    user_rows: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    if not b.spec.realistic:
        return sampler.uniform(rng, int(counts.sum()))
    taste = None
    if b.day:  # taste drifts after day 0
        first_day = day_of(b.users["created"][user_rows])
        taste = taste_on(b.spec.seed, user_rows, first_day, b.day, SCENES)
    return sampler.for_users(rng, user_rows, b.users["preferred"][user_rows], counts, taste)


def _day0_timestamps(
    spec: WorldSpec, rng: np.random.Generator, n: int, years: float
) -> tuple[np.ndarray, np.ndarray]:
    """(created, updated) before the anchor: independent (reference) or updated >= created."""
    anchor = clock.ANCHOR_US
    if not spec.realistic:  # the reference draws both independently within the past year
        created = clock.in_range(rng, anchor - clock.YEAR_US, anchor, n)
        updated = clock.in_range(rng, anchor - clock.YEAR_US, anchor, n)
        return created, updated
    span = int(years * clock.YEAR_US)
    created = clock.with_microseconds(anchor - 1 - (rng.random(n) ** 1.5 * span).astype(np.int64))
    edited = rng.random(n) < 0.45
    updated = created.copy()
    updated[edited] = clock.in_range(rng, created[edited], anchor, int(edited.sum()))
    return created, updated


def generate_initial(spec: WorldSpec, user_capacity: int, track_capacity: int) -> WorldBuilder:
    """The day-0 world, in tables with room for the rows later days will add."""
    b = WorldBuilder(
        spec=spec,
        pools=build_pools(spec.seed),
        users=Table(user_capacity, USER_COLUMNS),
        tracks=Table(track_capacity, TRACK_COLUMNS),
        labels=GenreLabels(() if spec.realistic else build_pools(spec.seed).words),
        listens=ListenLog(empty_csr()),
        user_ids=IdPermutation(spec.seed, Stream.USER_IDS, id_upper_bound(spec.users)),
        track_ids=IdPermutation(spec.seed, Stream.TRACK_IDS, id_upper_bound(spec.tracks)),
    )
    rng = spec.rng(Stream.TRACKS)
    created, updated = _day0_timestamps(spec, rng, spec.tracks, years=5)
    new_tracks(b, rng, created, updated)

    rng = spec.rng(Stream.USERS)
    n, anchor = spec.users, clock.ANCHOR_US
    created, updated = _day0_timestamps(spec, rng, n, years=3)
    if spec.realistic:  # the history starts with the account and was last changed recently
        h_created = np.minimum(
            created + (rng.random(n) * 600 * clock.SECOND_US).astype(np.int64), anchor - 1
        )
        h_created = clock.with_microseconds(h_created)
        late = (rng.random(n) ** 0.3 * (anchor - h_created)).astype(np.int64)
        h_updated = clock.with_microseconds(np.minimum(h_created + late, anchor - 1))
    else:
        h_created = clock.in_range(rng, anchor - clock.YEAR_US, anchor, n)
        h_updated = clock.in_range(rng, h_created, anchor, n)
    rows = new_users(b, rng, created, updated, h_created, h_updated)

    rng = spec.rng(Stream.LISTENS)
    counts = listen_counts(spec, rng, n)
    sampler = sampler_for(b, np.arange(b.tracks.n))
    b.listens = ListenLog(csr_from_counts(counts, draw_listens(b, rng, sampler, rows, counts)))
    return b


def empty_csr() -> Csr:
    return csr_from_counts(np.zeros(0, dtype=np.int64), np.empty(0))
