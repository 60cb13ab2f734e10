"""Hostile pages: what an untrusted API may serve, for testing the client's defences.

- `hostile=PAGE`: the first records of that page carry strings a careless pipeline executes or
  mangles. NASTY strings are valid data (SQL, quotes, semicolons, CSV delimiters, `\\.`, control
  characters, emoji, right-to-left marks) and must round-trip byte for byte; BAD ones cannot be
  stored as they are (a NUL character, a lone UTF-16 surrogate, a `hostile_mb` MB string) and
  must be rejected with a reason. In listen_history, which has no text field, the nasty
  strings go in a new field `note` and the bad ones replace `created_at`.
- `oversized=PAGE`: that page is a valid envelope padded past `oversized_mb` MB, streamed in
  chunks without a Content-Length (a client must stop reading at its cap, not after).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson

NASTY = (
    "Robert'); DROP TABLE raw.users; --",
    "\"double\" 'single' `back` $$dollar$$ %s %(x)s {0}; SELECT pg_sleep(10);",
    "a,b;c\td|e\n\\.\nf\r\ng\rh \\N NULL \\\\ end",
    "🎵 Zoë \u202eevil\u202c \u200f\u05e9\u05dc\u05d5\u05dd "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 👩\u200d👩\u200d👧",
    "ctl \x01\x07\x08\x0b\x0c\x1b[31mred\x1b[0m \x7f \u0085 \u2028 \ufeff",
    "",
)
NUL = "nul\x00byte"
LONE_SURROGATE = "half \ud800 a pair"

# The text fields that take the strings, per endpoint (listen_history: see the docstring).
_TEXT_FIELDS = {
    "tracks": ("name", "artist", "album"),
    "users": ("first_name", "last_name", "email"),
}


def big_string(megabytes: float) -> str:
    return "A" * int(megabytes * 2**20)


def make_hostile(endpoint: str, records: list[dict[str, Any]], megabytes: float) -> None:
    """Records 0..5 of the page get the NASTY strings, 6..8 the BAD ones (in place)."""
    bad = (NUL, LONE_SURROGATE, big_string(megabytes))
    for i, record in enumerate(records[: len(NASTY) + len(bad)]):
        if i < len(NASTY):
            value = NASTY[i]
            if endpoint == "listen_history":
                record["note"] = value
            else:
                for name in _TEXT_FIELDS[endpoint]:
                    record[name] = value
        else:
            name = "created_at" if endpoint == "listen_history" else _TEXT_FIELDS[endpoint][0]
            record[name] = bad[i - len(NASTY)]


def dumps(value: Any) -> bytes:
    """JSON bytes; lone surrogates (which orjson refuses) as \\u escapes."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode()
        except UnicodeEncodeError:
            return json.dumps(value, separators=(",", ":")).encode()


def oversized_chunks(body: bytes, megabytes: float, chunk: int = 2**20) -> Iterator[bytes]:
    """`body` (a JSON object) with a `padding` field first that takes it past `megabytes`."""
    pad = int(megabytes * 2**20) + 1
    yield b'{"padding":"'
    filler = b"x" * chunk
    while pad > 0:
        yield filler[: min(pad, chunk)]
        pad -= chunk
    yield b'",' + body[1:]
