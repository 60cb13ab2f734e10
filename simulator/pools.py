"""Small pools of names and words, built once per seed with Faker.

Records never call Faker: they hold indexes into these pools, drawn with numpy, so a million
users cost a few arrays of integers. The pools are rendered to strings only when a page is served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from faker import Faker

_FIRST_NAME_DRAWS = 4000
_LAST_NAME_DRAWS = 4000
_WORD_COUNT = 900


@dataclass(frozen=True)
class Pools:
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    words: tuple[str, ...]
    # lower-case ASCII forms of the names, for e-mail local parts
    email_first: tuple[str, ...]
    email_last: tuple[str, ...]


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _email_part(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()) or "user"


@lru_cache(maxsize=8)
def build_pools(seed: int) -> Pools:
    """The pools for `seed`: same seed, same pools (Faker is seeded, en_US)."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    # one weighted draw of many names (common names first): far faster than a call per name
    person = fake.provider("faker.providers.person")
    first = _unique(fake.random_elements(person.first_names, _FIRST_NAME_DRAWS, use_weighting=True))
    last = _unique(fake.random_elements(person.last_names, _LAST_NAME_DRAWS, use_weighting=True))
    words = _unique(fake.words(nb=_WORD_COUNT, unique=True))
    return Pools(
        first_names=first,
        last_names=last,
        words=words,
        email_first=tuple(_email_part(n) for n in first),
        email_last=tuple(_email_part(n) for n in last),
    )
