"""The hostile-page and oversized-page faults (simulator/hostile.py)."""

from __future__ import annotations

import json

import pytest

from simulator.faults import FaultConfig, FaultSpecError
from simulator.hostile import NASTY, NUL, dumps, make_hostile, oversized_chunks


def test_page_faults_parse_as_page_numbers() -> None:
    config = FaultConfig.from_specs(["users:hostile=2,hostile_mb=1", "tracks:oversized=3"])
    assert config.for_endpoint("users").hostile == 2
    assert config.for_endpoint("users").hostile_mb == 1
    assert config.for_endpoint("tracks").oversized == 3 and config.for_endpoint("tracks").active
    assert config.to_dict() == {
        "tracks": {"oversized": 3},
        "users": {"hostile": 2, "hostile_mb": 1.0},
    }
    for bad in ("users:hostile=1.5", "users:hostile=-1"):
        with pytest.raises(FaultSpecError):
            FaultConfig.from_specs([bad])


def test_a_hostile_page_serializes_and_parses_back() -> None:
    records = [{"id": i, "first_name": "a", "last_name": "b", "email": "c"} for i in range(12)]
    make_hostile("users", records, 0.01)
    assert [r["first_name"] for r in records[: len(NASTY)]] == list(NASTY)
    assert records[6]["first_name"] == NUL and len(records[8]["first_name"]) == 10485
    assert json.loads(dumps(records)) == records  # a lone surrogate goes out as \ud800


def test_an_oversized_body_is_valid_json_past_the_size() -> None:
    body = b"".join(oversized_chunks(b'{"items":[],"total":0}', 0.5))
    assert len(body) > 2**19 and json.loads(body)["total"] == 0
