"""Every rule of the source contract (shared/moovitamix-api.md), checked over real HTTP.

By default this starts its own simulator. With MOOVITAMIX_CONTRACT_URL set it checks that server
instead (the reference server, or any build of the API) and skips what needs a known seed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from simulator.launcher import running
from simulator.vocabulary import GENDERS, GENRES

EXTERNAL_URL = os.environ.get("MOOVITAMIX_CONTRACT_URL", "").rstrip("/")
ENDPOINTS = ("tracks", "users", "listen_history")
SCHEMAS = {"tracks": "TracksOut", "users": "UsersOut", "listen_history": "ListenHistoryOut"}
FIELDS = {
    "tracks": [
        "id",
        "name",
        "artist",
        "songwriters",
        "duration",
        "genres",
        "album",
        "created_at",
        "updated_at",
    ],
    "users": [
        "id",
        "first_name",
        "last_name",
        "email",
        "gender",
        "favorite_genres",
        "created_at",
        "updated_at",
    ],
    "listen_history": ["user_id", "items", "created_at", "updated_at"],
}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
DURATION = re.compile(r"^[0-5]\d:[0-5]\d$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]+$")
# sizes of our own simulator: not multiples of 100, so last pages are partial
OWN_USERS, OWN_TRACKS = 250, 230

needs_own = pytest.mark.skipif(bool(EXTERNAL_URL), reason="needs the simulator's known seed")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    if EXTERNAL_URL:
        yield EXTERNAL_URL
        return
    args = ["--seed", "11", "--users", str(OWN_USERS), "--tracks", str(OWN_TRACKS)]
    with running(args) as sim:
        assert sim.url is not None
        yield sim.url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def read_all(client: httpx.Client, endpoint: str, size: int = 100) -> list[dict[str, Any]]:
    first = client.get(f"/{endpoint}", params={"size": size}).json()
    records = list(first["items"])
    for page in range(2, first["pages"] + 1):
        body = client.get(f"/{endpoint}", params={"page": page, "size": size}).json()
        records.extend(body["items"])
    return records


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_default_page_is_page_1_of_size_100(client: httpx.Client, endpoint: str) -> None:
    response = client.get(f"/{endpoint}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["items", "total", "page", "size", "pages"]
    assert body["page"] == 1
    assert body["size"] == 100
    assert isinstance(body["total"], int)
    assert body["pages"] == math.ceil(body["total"] / 100)
    assert len(body["items"]) == min(100, body["total"])


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("size", [1, 7, 100])
def test_total_and_pages_maths(client: httpx.Client, endpoint: str, size: int) -> None:
    first = client.get(f"/{endpoint}", params={"size": size}).json()
    total, pages = first["total"], first["pages"]
    assert pages == math.ceil(total / size)
    # size=1 on a big external server: check the two ends only
    pages_to_read = [1, pages] if pages > 200 else list(range(1, pages + 1))
    for page in pages_to_read:
        body = client.get(f"/{endpoint}", params={"page": page, "size": size}).json()
        assert (body["page"], body["size"], body["total"], body["pages"]) == (
            page,
            size,
            total,
            pages,
        )
        expected = size if page < pages else total - (pages - 1) * size
        assert len(body["items"]) == expected


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_all_pages_hold_every_record_once(client: httpx.Client, endpoint: str) -> None:
    records = read_all(client, endpoint)
    key = "user_id" if endpoint == "listen_history" else "id"
    ids = [r[key] for r in records]
    total = client.get(f"/{endpoint}", params={"size": 1}).json()["total"]
    assert len(ids) == total
    assert len(set(ids)) == total


@needs_own
def test_own_simulator_sizes(client: httpx.Client) -> None:
    totals = {ep: client.get(f"/{ep}").json()["total"] for ep in ENDPOINTS}
    assert totals == {"tracks": OWN_TRACKS, "users": OWN_USERS, "listen_history": OWN_USERS}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("page_offset", [1, 2, 1000])
def test_page_past_the_end_is_200_and_empty(
    client: httpx.Client, endpoint: str, page_offset: int
) -> None:
    pages = client.get(f"/{endpoint}").json()["pages"]
    response = client.get(f"/{endpoint}", params={"page": pages + page_offset})
    assert response.status_code == 200
    body = response.json()
    assert body["items"] == []
    assert body["page"] == pages + page_offset
    assert body["pages"] == pages


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("params", "field", "error_type"),
    [
        ({"size": 101}, "size", "less_than_equal"),
        ({"size": 1000}, "size", "less_than_equal"),
        ({"size": 0}, "size", "greater_than_equal"),
        ({"size": -5}, "size", "greater_than_equal"),
        ({"page": 0}, "page", "greater_than_equal"),
        ({"page": -1}, "page", "greater_than_equal"),
        ({"page": "abc"}, "page", "int_parsing"),
        ({"size": "1.5"}, "size", "int_parsing"),
    ],
)
def test_invalid_page_or_size_is_a_422_validation_body(
    client: httpx.Client, endpoint: str, params: dict[str, Any], field: str, error_type: str
) -> None:
    response = client.get(f"/{endpoint}", params=params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert len(detail) == 1
    error = detail[0]
    assert error["loc"] == ["query", field]
    assert error["type"] == error_type
    assert isinstance(error["msg"], str)
    assert error["msg"]
    assert error["input"] == str(params[field])
    if error_type != "int_parsing":
        bound = {"less_than_equal": {"le": 100}, "greater_than_equal": {"ge": 1}}[error_type]
        assert error["ctx"] == bound


def test_both_parameters_invalid_reports_both(client: httpx.Client) -> None:
    response = client.get("/users", params={"page": 0, "size": 101})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "page"], ["query", "size"]]


def test_root_redirects_to_docs(client: httpx.Client) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code in (302, 303, 307, 308)
    assert response.headers["location"] == "/docs"
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_openapi_describes_the_three_endpoints(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    schemas = spec["components"]["schemas"]
    for endpoint, record in SCHEMAS.items():
        operation = spec["paths"][f"/{endpoint}"]["get"]
        params = {p["name"]: p for p in operation["parameters"]}
        assert set(params) == {"page", "size"}
        page, size = params["page"], params["size"]
        assert page["in"] == size["in"] == "query"
        assert not page["required"]
        assert not size["required"]
        assert page["schema"]["type"] == size["schema"]["type"] == "integer"
        assert page["schema"]["default"] == 1
        assert page["schema"]["minimum"] == 1
        assert size["schema"]["default"] == 100
        assert (size["schema"]["minimum"], size["schema"]["maximum"]) == (1, 100)

        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        envelope = schemas[ref.rsplit("/", 1)[1]]
        assert envelope["required"] == ["items"]
        props = envelope["properties"]
        assert props["items"]["type"] == "array"
        assert props["items"]["items"]["$ref"].endswith(f"/{record}")
        for name in ("total", "page", "size", "pages"):
            types = {option.get("type") for option in props[name]["anyOf"]}
            assert types == {"integer", "null"}, name
        assert "422" in operation["responses"]

        model = schemas[record]
        assert list(model["properties"]) == FIELDS[endpoint]
        assert set(model["required"]) == set(FIELDS[endpoint])


def test_openapi_field_types(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for record, fields in (("TracksOut", FIELDS["tracks"]), ("UsersOut", FIELDS["users"])):
        props = schemas[record]["properties"]
        assert props["id"]["type"] == "integer"
        for name in fields:
            if name.endswith("_at"):
                assert (props[name]["type"], props[name]["format"]) == ("string", "date-time")
            elif name != "id":
                assert props[name]["type"] == "string"
    history = schemas["ListenHistoryOut"]["properties"]
    assert {o.get("type") for o in history["user_id"]["anyOf"]} == {"integer", "null"}
    items = {o.get("type"): o for o in history["items"]["anyOf"]}
    assert set(items) == {"array", "null"}
    assert items["array"]["items"]["type"] == "integer"


def check_timestamps(record: dict[str, Any]) -> tuple[datetime, datetime]:
    for name in ("created_at", "updated_at"):
        assert TIMESTAMP.match(record[name]), record[name]
    return (
        datetime.fromisoformat(record["created_at"]),
        datetime.fromisoformat(record["updated_at"]),
    )


@pytest.fixture(scope="module")
def everything(client: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    return {endpoint: read_all(client, endpoint) for endpoint in ENDPOINTS}


def test_track_records(everything: dict[str, list[dict[str, Any]]]) -> None:
    for track in everything["tracks"]:
        assert list(track) == FIELDS["tracks"]
        assert type(track["id"]) is int
        for name in ("name", "artist", "songwriters", "genres", "album"):
            assert isinstance(track[name], str)
            assert track[name]
        assert DURATION.match(track["duration"]), track["duration"]
        check_timestamps(track)


def test_user_records(everything: dict[str, list[dict[str, Any]]]) -> None:
    for user in everything["users"]:
        assert list(user) == FIELDS["users"]
        assert type(user["id"]) is int
        assert isinstance(user["first_name"], str)
        assert isinstance(user["last_name"], str)
        assert EMAIL.match(user["email"]), user["email"]
        assert user["gender"] in GENDERS
        assert user["favorite_genres"] in GENRES
        check_timestamps(user)


def test_listen_history_records(everything: dict[str, list[dict[str, Any]]]) -> None:
    user_ids = {u["id"] for u in everything["users"]}
    track_ids = {t["id"] for t in everything["tracks"]}
    histories = everything["listen_history"]
    assert {h["user_id"] for h in histories} == user_ids  # one history per user
    for history in histories:
        assert list(history) == FIELDS["listen_history"]
        assert type(history["user_id"]) is int
        assert isinstance(history["items"], list)
        assert all(type(item) is int for item in history["items"])
        assert set(history["items"]) <= track_ids
        created, updated = check_timestamps(history)
        assert updated >= created


@needs_own
def test_ids_are_drawn_from_1_to_100000(everything: dict[str, list[dict[str, Any]]]) -> None:
    for endpoint in ("tracks", "users"):
        ids = [r["id"] for r in everything[endpoint]]
        assert min(ids) >= 1
        assert max(ids) <= 100_000
        assert ids != sorted(ids)  # drawn, not a sequence


@needs_own
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_parity_with_a_fastapi_pagination_server() -> None:
    """The same records served by fastapi-pagination's paginate(): identical bytes and schema."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse
    from fastapi.testclient import TestClient
    from fastapi_pagination import add_pagination, paginate
    from fastapi_pagination.utils import disable_installed_extensions_check

    from simulator.app import create_app
    from simulator.generate import WorldSpec
    from simulator.render import RENDERERS, view
    from simulator.schemas import ListenHistoryOut, Page, TracksOut, UsersOut
    from simulator.state import Simulator

    disable_installed_extensions_check()
    simulator = Simulator(WorldSpec(seed=3, users=250, tracks=230))
    world = simulator.snapshot.world
    reference = FastAPI()

    @reference.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @reference.get("/tracks", response_model=Page[TracksOut])
    async def get_tracks() -> Any:
        return paginate(RENDERERS["tracks"](world, view(world, "tracks")))

    @reference.get("/users", response_model=Page[UsersOut])
    async def get_users() -> Any:
        return paginate(RENDERERS["users"](world, view(world, "users")))

    @reference.get("/listen_history", response_model=Page[ListenHistoryOut])
    async def get_listen_history() -> Any:
        return paginate(RENDERERS["listen_history"](world, view(world, "listen_history")))

    add_pagination(reference)
    ours = create_app(simulator)
    assert ours.openapi() == reference.openapi()
    queries = ["", "?page=2", "?page=3&size=100", "?size=7&page=36", "?page=99", "?size=0"]
    queries += ["?size=101&page=0", "?page=abc", f"?page={10**30}", "?page=+2&size=050"]
    with TestClient(ours) as a, TestClient(reference) as b:
        for endpoint in ENDPOINTS:
            for query in queries:
                ra, rb = a.get(f"/{endpoint}{query}"), b.get(f"/{endpoint}{query}")
                assert ra.status_code == rb.status_code, (endpoint, query)
                assert ra.content == rb.content, (endpoint, query)
                assert ra.headers["content-type"] == rb.headers["content-type"]
