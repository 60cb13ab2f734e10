"""Faults a production API shows, injected on purpose, reproducibly. All off by default.

Request-level faults are decided by a hash of (seed, day, endpoint, page, size, attempt, kind),
where `attempt` counts the requests for that page so far: a retry is a new attempt with a new
decision, so any rate below 1 is recoverable, and the same sequence of requests meets the same
faults in every run. Record-level faults (`bad_records`) are decided by a hash of
(seed, endpoint, record id), so a broken record stays broken on every re-read.

The syntax of a fault spec is FAULT_SPEC_HELP below (also in `python -m simulator --help`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from simulator.hashing import key64, unit, units_for_ids
from simulator.render import ENDPOINTS, Record

ALL = "*"
FAULT_SPEC_HELP = """\
  --fault ENDPOINT:KEY=VALUE[,KEY=VALUE...]    repeatable; ENDPOINT: tracks, users,
                                               listen_history, or * for all three
  rates, each a share 0..1 of the requests (decided per page and attempt: retries recover):
    http_5xx        answer 500, 502, 503 or 504
    http_429        answer 429, half of them with Retry-After: <retry_after_s>
    latency         answer <latency_ms> later
    timeout         sleep <timeout_s> before answering (past a client's timeout)
    drop            200 declaring its Content-Length, connection closed mid-body
    malformed       200 whose body is not JSON (truncated, trailing garbage, an HTML page)
    null_totals     "total" and "pages" are null
    unstable_order  the records are shifted by 1..2*size positions (they move between pages)
    bad_records     a share of the RECORDS (chosen by id, the same on every read) that break
                    the contract: id missing or "abc", unparsable timestamp, a null or
                    wrongly typed field; in listen_history user_id missing or "abc", null
                    items, a non-integer item
    missing_records a share of the RECORDS (chosen by id) that the API stops serving, as if
                    deleted: total and pages count only the others (e.g. users:missing_records=0.5
                    drops half the users)
  flag:         always_fail=true     every request answers 500
  pages (0: off):
    hostile=PAGE    that page's first records carry SQL, quotes, CSV delimiters, control
                    characters, emoji, RTL marks (valid), and a NUL, a lone surrogate and a
                    <hostile_mb> MB string (not storable); see simulator/hostile.py
    oversized=PAGE  that page is padded past <oversized_mb> MB, streamed without a length
  parameters:   latency_ms (300)  timeout_s (30)  retry_after_s (1)  hostile_mb (10)
                oversized_mb (51)
  e.g. --fault 'tracks:http_5xx=0.1,http_429=0.05' --fault '*:latency=0.2,latency_ms=50'
"""
RATE_KINDS = (
    "http_5xx",
    "http_429",
    "latency",
    "timeout",
    "drop",
    "malformed",
    "bad_records",
    "missing_records",
    "null_totals",
    "unstable_order",
)
PAGE_KINDS = ("hostile", "oversized")
SERVER_ERRORS = (500, 502, 503, 504)
MALFORMED_KINDS = ("truncated", "trailing_garbage", "html_page")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class EndpointFaults:
    http_5xx: float = 0.0  # share of requests answered 500/502/503/504
    http_429: float = 0.0  # share answered 429, half of them with Retry-After
    latency: float = 0.0  # share delayed by latency_ms
    timeout: float = 0.0  # share that sleeps timeout_s before answering (past a client timeout)
    drop: float = 0.0  # share whose connection closes mid-body (Content-Length not honoured)
    malformed: float = 0.0  # share answered 200 with a body that is not valid JSON
    bad_records: float = 0.0  # share of records (by id) that break the contract
    missing_records: float = 0.0  # share of records (by id) the API does not serve at all
    null_totals: float = 0.0  # share of pages with total and pages null
    unstable_order: float = 0.0  # share of requests that see the records shifted across pages
    always_fail: bool = False  # every request answers 500
    hostile: int = 0  # this page serves hostile strings (simulator.hostile); 0: none
    oversized: int = 0  # this page is padded past oversized_mb MB; 0: none
    latency_ms: float = 300.0
    timeout_s: float = 30.0
    retry_after_s: float = 1.0
    hostile_mb: float = 10.0  # the size of the hostile page's absurd string
    oversized_mb: float = 51.0  # the oversized page is larger than this

    def __post_init__(self) -> None:
        for kind in RATE_KINDS:
            rate = getattr(self, kind)
            if not 0.0 <= rate <= 1.0:
                raise FaultSpecError(f"{kind}={rate}: a rate is between 0 and 1")
        for name in ("latency_ms", "timeout_s", "retry_after_s", "hostile_mb", "oversized_mb"):
            if getattr(self, name) < 0:
                raise FaultSpecError(f"{name} must be >= 0")
        for name in PAGE_KINDS:
            value = getattr(self, name)
            if value < 0 or value != int(value):
                raise FaultSpecError(f"{name}={value}: a page number (0: off)")
            object.__setattr__(self, name, int(value))

    @property
    def active(self) -> bool:
        return self.always_fail or any(
            getattr(self, kind) > 0 for kind in (*RATE_KINDS, *PAGE_KINDS)
        )


_FIELD_TYPES = {f.name: f.type for f in fields(EndpointFaults)}


def _value(key: str, raw: Any) -> float | bool:
    if key not in _FIELD_TYPES:
        known = ", ".join(_FIELD_TYPES)
        raise FaultSpecError(f"unknown fault key {key!r} (known: {known})")
    if key == "always_fail":
        if isinstance(raw, str):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise FaultSpecError(f"always_fail={raw!r}: expected true/false")
            return raw.lower() in {"1", "true", "yes", "on"}
        return bool(raw)
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise FaultSpecError(f"{key}={raw!r}: expected a number") from exc
    if not math.isfinite(value):
        raise FaultSpecError(f"{key}={raw!r}: expected a finite number")
    return value


def _endpoints(name: str) -> tuple[str, ...]:
    if name in (ALL, "all"):
        return ENDPOINTS
    if name not in ENDPOINTS:
        raise FaultSpecError(f"unknown endpoint {name!r} (one of {', '.join(ENDPOINTS)} or *)")
    return (name,)


@dataclass(frozen=True)
class FaultConfig:
    """Faults per endpoint (an endpoint absent from the map has none)."""

    endpoints: dict[str, EndpointFaults] = field(default_factory=dict)

    def for_endpoint(self, endpoint: str) -> EndpointFaults:
        return self.endpoints.get(endpoint) or EndpointFaults()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        default = asdict(EndpointFaults())
        return {
            ep: {k: v for k, v in asdict(f).items() if v != default[k]}
            for ep, f in sorted(self.endpoints.items())
            if f.active
        }

    @classmethod
    def from_mapping(cls, mapping: dict[str, dict[str, Any]]) -> FaultConfig:
        """{"tracks": {"http_5xx": 0.1}, "*": {...}}; "*" first, then per endpoint."""
        if not isinstance(mapping, dict):
            raise FaultSpecError("faults: expected an object {endpoint: {key: value}}")
        merged: dict[str, dict[str, Any]] = {ep: {} for ep in ENDPOINTS}
        ordered = sorted(mapping.items(), key=lambda kv: kv[0] not in (ALL, "all"))
        for name, settings in ordered:
            if not isinstance(settings, dict):
                raise FaultSpecError(f"faults[{name!r}]: expected an object of key: value")
            for ep in _endpoints(name):
                merged[ep].update({k: _value(k, v) for k, v in settings.items()})
        return cls({ep: EndpointFaults(**kv) for ep, kv in merged.items() if kv})

    @classmethod
    def from_specs(cls, specs: list[str]) -> FaultConfig:
        """Parse CLI specs, e.g. ["tracks:http_5xx=0.1,http_429=0.05", "*:latency=0.2"]."""
        mapping: dict[str, dict[str, Any]] = {}
        for spec in specs:
            name, sep, body = spec.partition(":")
            if not sep or not body:
                raise FaultSpecError(f"fault spec {spec!r}: expected ENDPOINT:KEY=VALUE[,...]")
            settings = mapping.setdefault(name.strip(), {})
            for item in body.split(","):
                key, eq, raw = item.partition("=")
                if not eq:
                    raise FaultSpecError(f"fault spec {spec!r}: {item!r} is not KEY=VALUE")
                settings[key.strip()] = raw.strip()
        return cls.from_mapping(mapping)

    def merged_with(self, other: FaultConfig) -> FaultConfig:
        endpoints = dict(self.endpoints)
        for ep, f in other.endpoints.items():
            base = endpoints.get(ep, EndpointFaults())
            changed = {k: v for k, v in asdict(f).items() if v != asdict(EndpointFaults())[k]}
            endpoints[ep] = replace(base, **changed)
        return FaultConfig(endpoints)


@dataclass(frozen=True)
class RequestPlan:
    """What to do to one request (all None/False/0: serve it normally)."""

    status: int | None = None
    retry_after_s: float | None = None
    delay_s: float = 0.0
    drop: bool = False
    malformed: str | None = None
    null_totals: bool = False
    shift: int = 0


def plan_request(
    seed: int, day: int, endpoint: str, page: int, size: int, attempt: int, f: EndpointFaults
) -> RequestPlan:
    """The faults of one attempt at one page (at most one of status/drop/malformed)."""

    def hit(kind: str) -> bool:
        rate = getattr(f, kind)
        return rate > 0 and unit(seed, day, endpoint, page, size, attempt, kind) < rate

    def pick(kind: str, options: tuple[Any, ...]) -> Any:
        return options[key64(seed, day, endpoint, page, size, attempt, kind, "pick") % len(options)]

    delay = (f.latency_ms / 1000.0) if hit("latency") else 0.0
    if f.always_fail:
        return RequestPlan(status=500, delay_s=delay)
    if hit("http_5xx"):
        return RequestPlan(status=pick("http_5xx", SERVER_ERRORS), delay_s=delay)
    if hit("http_429"):
        retry_after = pick("http_429", (f.retry_after_s, None))
        return RequestPlan(status=429, retry_after_s=retry_after, delay_s=delay)
    if hit("timeout"):
        delay += f.timeout_s
    shift = pick("unstable_order", tuple(range(1, 2 * size + 1))) if hit("unstable_order") else 0
    return RequestPlan(
        delay_s=delay,
        drop=hit("drop"),
        malformed=pick("malformed", MALFORMED_KINDS) if hit("malformed") else None,
        null_totals=hit("null_totals"),
        shift=shift,
    )


# ---- record-level faults -------------------------------------------------------------------

_RECORD_BREAKS = {
    "tracks": ("missing_id", "id_not_int", "bad_timestamp", "null_field", "wrong_type"),
    "users": ("missing_id", "id_not_int", "bad_timestamp", "null_field", "wrong_type"),
    "listen_history": (
        "missing_user_id",
        "user_id_not_int",
        "bad_timestamp",
        "null_items",
        "item_not_int",
    ),
}
_NULLED = {"tracks": "name", "users": "email"}
_WRONG_TYPED = {"tracks": ("duration", 252), "users": ("gender", 3)}
BAD_TIMESTAMPS = ("not-a-timestamp", "2026-02-30T25:61:00.000000", "")


def served_rows(seed: int, endpoint: str, ids: np.ndarray, rate: float) -> np.ndarray:
    """Which records the API serves under `missing_records` (chosen by id, the same on every
    read): a mask over `ids`."""
    if rate <= 0 or len(ids) == 0:
        return np.ones(len(ids), dtype=bool)
    return units_for_ids(key64(seed, endpoint, "missing_records"), ids) >= rate


def record_breaks(seed: int, endpoint: str, ids: np.ndarray, rate: float) -> list[str | None]:
    """Per record id: how it breaks the contract (None: it doesn't)."""
    if rate <= 0 or len(ids) == 0:
        return [None] * len(ids)
    chosen = units_for_ids(key64(seed, endpoint, "bad_records"), ids) < rate
    kinds = _RECORD_BREAKS[endpoint]
    which = (units_for_ids(key64(seed, endpoint, "bad_kind"), ids) * len(kinds)).astype(int)
    return [kinds[k] if c else None for c, k in zip(chosen.tolist(), which.tolist(), strict=True)]


def break_record(record: Record, endpoint: str, how: str, salt: int) -> None:
    """Make `record` violate the contract in the way `how` names (in place)."""
    if how == "missing_id":
        del record["id"]
    elif how == "id_not_int":
        record["id"] = "abc"
    elif how == "missing_user_id":
        del record["user_id"]
    elif how == "user_id_not_int":
        record["user_id"] = "abc"
    elif how == "bad_timestamp":
        column = ("created_at", "updated_at")[salt % 2]
        record[column] = BAD_TIMESTAMPS[salt % len(BAD_TIMESTAMPS)]
    elif how == "null_field":
        record[_NULLED[endpoint]] = None
    elif how == "wrong_type":
        column, value = _WRONG_TYPED[endpoint]
        record[column] = value
    elif how == "null_items":
        record["items"] = None
    elif how == "item_not_int":
        record["items"] = [*record["items"], "abc"]
    else:
        raise ValueError(f"unknown record break {how!r}")


def break_records(
    seed: int, endpoint: str, records: list[Record], ids: np.ndarray, rate: float
) -> None:
    for record, rid, how in zip(
        records, ids.tolist(), record_breaks(seed, endpoint, ids, rate), strict=True
    ):
        if how is not None:
            break_record(record, endpoint, how, rid)


# ---- body-level faults ---------------------------------------------------------------------


def malformed_body(body: bytes, how: str, salt: int) -> bytes:
    """A 200 body that no JSON parser accepts."""
    if how == "truncated":
        cut = max(1, min(len(body) - 1, len(body) * (1 + salt % 8) // 10))
        return body[:cut]
    if how == "trailing_garbage":
        return body + b'\n{"items": ['
    return b"<html><body><h1>Service temporarily overloaded</h1></body></html>"
