"""Every fault kind: observable over HTTP, off by default, reproducible, recoverable by retrying."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import pytest

from simulator import faults
from simulator.launcher import running

ENDPOINTS = ("tracks", "users", "listen_history")
TOTAL = 300  # users; tracks: 200


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running(["--seed", "21", "--users", str(TOTAL), "--tracks", "200"]) as sim:
        assert sim.url is not None
        yield sim.url


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as c:
        yield c
        c.post("/_admin/state", json={"faults": {}})  # leave the server clean


def set_faults(client: httpx.Client, spec: dict[str, Any] | list[str]) -> dict[str, Any]:
    response = client.post("/_admin/state", json={"faults": spec})
    assert response.status_code == 200, response.text
    return response.json()


def statuses(client: httpx.Client, endpoint: str, requests: list[tuple[int, int]]) -> list[int]:
    return [
        client.get(f"/{endpoint}", params={"page": p, "size": s}).status_code for p, s in requests
    ]


def test_no_fault_by_default(client: httpx.Client) -> None:
    assert client.get("/_admin/state").json()["faults"] == {}
    for endpoint in ENDPOINTS:
        for page in range(1, 6):
            response = client.get(f"/{endpoint}", params={"page": page, "size": 50})
            assert response.status_code == 200
            body = response.json()
            assert body["total"] is not None
            for record in body["items"]:
                assert isinstance(record.get("id", record.get("user_id")), int)


def test_server_errors_are_reproducible_and_recoverable(client: httpx.Client) -> None:
    set_faults(client, ["tracks:http_5xx=0.5"])
    plan = [(p, 10) for p in range(1, 21)] * 3  # each page three times: attempts 0, 1, 2
    first = statuses(client, "tracks", plan)
    assert set(first) - {200} <= {500, 502, 503, 504}
    assert 0.25 < first.count(200) / len(first) < 0.75
    assert len(set(first) - {200}) >= 2  # several kinds of 5xx
    set_faults(client, ["tracks:http_5xx=0.5"])  # resets the attempt counters
    assert statuses(client, "tracks", plan) == first  # the same run repeats
    # other endpoints are untouched
    assert set(statuses(client, "users", plan[:20])) == {200}
    # every page comes through with retries
    for page in range(1, 21):
        for _ in range(40):
            if client.get("/tracks", params={"page": page, "size": 10}).status_code == 200:
                break
        else:
            pytest.fail(f"page {page} never succeeded")


def test_429_with_and_without_retry_after(client: httpx.Client) -> None:
    set_faults(client, {"users": {"http_429": 1.0, "retry_after_s": 2}})
    seen = Counter()
    for page in range(1, 41):
        response = client.get("/users", params={"page": page})
        assert response.status_code == 429
        seen[response.headers.get("retry-after")] += 1
    assert set(seen) == {"2", None}


def test_latency(client: httpx.Client) -> None:
    """The plan delays what the spec names, and only that; over HTTP, a delay far beyond the
    client's read timeout makes it fire (the one direction no slow machine can flip)."""
    spec = faults.FaultConfig.from_specs(["listen_history:latency=1,latency_ms=250"])
    plans = {
        endpoint: faults.plan_request(21, 0, endpoint, 1, 100, 1, spec.for_endpoint(endpoint))
        for endpoint in ENDPOINTS
    }
    assert {e: p.delay_s for e, p in plans.items()} == {
        "tracks": 0.0, "users": 0.0, "listen_history": 0.25,
    }  # fmt: skip
    set_faults(client, ["listen_history:latency=1,latency_ms=5000"])
    with pytest.raises(httpx.ReadTimeout):
        client.get("/listen_history", timeout=0.5)
    assert client.get("/users").status_code == 200


def test_timeout_then_retry(client: httpx.Client) -> None:
    set_faults(client, {"tracks": {"timeout": 0.5, "timeout_s": 1.5}})
    outcomes = []
    for page in range(1, 9):
        try:
            client.get("/tracks", params={"page": page, "size": 5}, timeout=0.5)
            outcomes.append("ok")
        except httpx.ReadTimeout:
            outcomes.append("timeout")
    assert set(outcomes) == {"ok", "timeout"}


def test_dropped_connection(client: httpx.Client) -> None:
    set_faults(client, ["users:drop=1"])
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/users")
    assert client.get("/tracks").status_code == 200  # the client recovers on a new connection


def test_malformed_bodies_with_status_200(client: httpx.Client) -> None:
    set_faults(client, ["tracks:malformed=1"])
    kinds = set()
    for page in range(1, 30):
        response = client.get("/tracks", params={"page": page % 3 + 1, "size": 50})
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)
        text = response.text
        kinds.add("html" if text.startswith("<html") else "garbage" if "\n{" in text else "cut")
    assert kinds == {"html", "garbage", "cut"}


def test_bad_records_are_stable_per_id(client: httpx.Client) -> None:
    set_faults(client, ["*:bad_records=0.1"])
    bad_keys = 0
    for endpoint, key in (("users", "id"), ("tracks", "id"), ("listen_history", "user_id")):
        first = client.get(f"/{endpoint}", params={"size": 100}).json()["items"]
        again = client.get(f"/{endpoint}", params={"size": 100}).json()["items"]
        assert first == again
        other_size = []
        for page in range(1, 6):
            other_size += client.get(f"/{endpoint}", params={"page": page, "size": 20}).json()[
                "items"
            ]
        assert other_size == first  # decided per record, not per page
        broken = [r for r in first if not valid(r, endpoint)]
        assert 2 <= len(broken) <= 25, endpoint
        bad_keys += sum(key not in r or not isinstance(r[key], int) for r in broken)
    assert bad_keys > 0


def valid(record: dict[str, Any], endpoint: str) -> bool:
    key = "user_id" if endpoint == "listen_history" else "id"
    if not isinstance(record.get(key), int):
        return False
    try:
        datetime.fromisoformat(record["created_at"])
        datetime.fromisoformat(record["updated_at"])
    except ValueError:
        return False
    if endpoint == "listen_history":
        items = record["items"]
        return isinstance(items, list) and all(isinstance(i, int) for i in items)
    return all(isinstance(v, str) for k, v in record.items() if k != "id")


def test_every_record_break_kind_occurs() -> None:
    ids = np.arange(1, 5001)
    for endpoint in ENDPOINTS:
        kinds = Counter(faults.record_breaks(3, endpoint, ids, 0.2))
        assert 800 < sum(n for k, n in kinds.items() if k) < 1200
        assert len(kinds) == 6  # None and five ways to break


def test_null_totals(client: httpx.Client) -> None:
    set_faults(client, ["users:null_totals=1"])
    body = client.get("/users").json()
    assert body["total"] is None
    assert body["pages"] is None
    assert len(body["items"]) == 100


def test_unstable_order_moves_records_between_pages(client: httpx.Client) -> None:
    set_faults(client, ["users:unstable_order=1"])
    reads = [client.get("/users", params={"page": 1}).json()["items"] for _ in range(3)]
    ids = [[r["id"] for r in read] for read in reads]
    assert ids[0] != ids[1] or ids[1] != ids[2]
    seen = []
    for page in range(1, 4):
        seen += [r["id"] for r in client.get("/users", params={"page": page}).json()["items"]]
    assert len(seen) == TOTAL
    assert len(set(seen)) < TOTAL  # duplicates, hence missing records: a client must notice


def test_missing_records_are_not_served_and_the_totals_agree(client: httpx.Client) -> None:
    every = [
        r["id"] for p in (1, 2, 3) for r in client.get("/users", params={"page": p}).json()["items"]
    ]
    set_faults(client, ["users:missing_records=0.5"])
    first = client.get("/users", params={"size": 100}).json()
    served = [
        r["id"]
        for p in range(1, first["pages"] + 1)
        for r in client.get("/users", params={"page": p}).json()["items"]
    ]
    assert len(served) == first["total"] and 0.35 * TOTAL < len(served) < 0.65 * TOTAL
    assert set(served) < set(every) and served == sorted(served, key=every.index)
    again = [r["id"] for r in client.get("/users", params={"size": 100}).json()["items"]]
    assert again == served[:100]  # the same records on every read
    assert client.get("/tracks").json()["total"] == 200  # other endpoints untouched


def test_always_fail(client: httpx.Client) -> None:
    set_faults(client, {"listen_history": {"always_fail": True}})
    assert set(statuses(client, "listen_history", [(1, 100)] * 20)) == {500}
    assert client.get("/users").status_code == 200


def test_admin_refuses_bad_specs_and_reports_faults(client: httpx.Client) -> None:
    assert client.post("/_admin/state", json={"faults": ["nope:http_5xx=1"]}).status_code == 422
    assert client.post("/_admin/state", json={"faults": {"users": {"x": 1}}}).status_code == 422
    state = set_faults(client, ["*:latency=0.1", "users:http_5xx=0.2"])
    assert state["faults"]["users"] == {"latency": 0.1, "http_5xx": 0.2}
    assert state["faults"]["tracks"] == {"latency": 0.1}
    assert set_faults(client, [])["faults"] == {}


@pytest.mark.parametrize("kind", ["http_5xx", "http_429", "timeout", "drop", "malformed"])
def test_plans_repeat_and_retries_recover(kind: str) -> None:
    config = faults.EndpointFaults(**{kind: 0.7})
    for page in range(1, 50):
        plans = [faults.plan_request(1, 0, "users", page, 100, a, config) for a in range(40)]
        again = [faults.plan_request(1, 0, "users", page, 100, a, config) for a in range(40)]
        assert plans == again
        clean = faults.RequestPlan()
        assert clean in plans, f"page {page} never recovers"
    other_seed = [faults.plan_request(2, 0, "users", p, 100, 0, config) for p in range(1, 50)]
    assert other_seed != [
        faults.plan_request(1, 0, "users", p, 100, 0, config) for p in range(1, 50)
    ]
