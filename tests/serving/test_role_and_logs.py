"""The API's warehouse sessions run as mvx_app, and its log lines hold no token and no body
(SECURITY.md, "The serving API"), with the API serving real requests over HTTP.

The API logs in as its own LOGIN role, `mvx_app_login` (moovitamix/logins.py), a member of
mvx_app only, and acts as mvx_app (libpq's `--role=mvx_app`; RESET ROLE would return it to the
login, which may do no more). Both are read inside the warehouse by a probe trigger on the one
table the API writes (its impressions, flushed from the pool that also serves the reads)."""

from __future__ import annotations

import json
import logging

import psycopg
import pytest

from moovitamix.logins import PROJECT_LOGINS
from moovitamix.roles import APP
from tests.serving.conftest import HASHED_TOKEN, TOKEN, Trained, config, running_api, wait_for

WRONG_TOKEN = "not-the-token-7f3a9c"
CLIENT_LOGGERS = ("httpx", "httpcore")  # the test's own client, not the API

PROBE = """
create schema probe;
create table probe.writers (acting_as text, logged_in_as text);
grant usage on schema probe to public;
grant insert on probe.writers to public;
create function probe.note_writer() returns trigger language plpgsql as $$
begin
    insert into probe.writers values (current_user, session_user);
    return null;
end $$;
create trigger note_writer after insert on monitoring.recommendation_impressions
for each statement execute function probe.note_writer();
"""


def _writers(trained: Trained) -> list[tuple[str, str]]:
    with psycopg.connect(trained.url.url()) as conn:
        return conn.execute("select acting_as, logged_in_as from probe.writers").fetchall()


def test_the_apis_sessions_act_as_mvx_app_and_its_logs_hold_no_token_or_body(
    fresh_trained: Trained, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    trained = fresh_trained
    with psycopg.connect(trained.url.url(), autocommit=True) as conn:
        conn.execute(PROBE)
    marts = trained.marts
    user_id, track_id = int(marts.listen_user[0]), int(marts.track_ids[0])
    recent = [int(t) for t in marts.track_ids[-12:]]
    caplog.set_level(logging.DEBUG)
    bodies = []
    # everything the API and uvicorn log, at debug, access lines included, to the test's capture
    with running_api(
        trained.settings, config(trained), log_level="debug", log_config=None, access_log=True
    ) as api:
        listed = api.get(f"/users/{user_id}/recommendations", params={"k": 5})
        folded = api.post(
            f"/users/{user_id}/recommendations", json={"recent_track_ids": recent, "k": 7}
        )
        following = api.get(
            f"/tracks/{track_id}/next", headers={"Authorization": f"Bearer {HASHED_TOKEN}"}
        )
        refused = api.get(
            f"/users/{user_id}/recommendations",
            headers={"Authorization": f"Bearer {WRONG_TOKEN}"},
        )
        invalid = api.post(f"/users/{user_id}/recommendations", json={"k": 1000})
        assert [r.status_code for r in (listed, folded, following, refused, invalid)] == [
            200, 200, 200, 401, 422,
        ]  # fmt: skip
        bodies = [listed, folded, following, refused, invalid]
        wait_for(lambda: len(_writers(trained)) > 0)  # the impressions flushed, as the pool's
        writers = set(_writers(trained))

    assert writers == {(APP, PROJECT_LOGINS[APP])}, "the API logs in as its own login"

    api_records = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    captured = capfd.readouterr()
    logged = "\n".join(
        [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in api_records]
        + [captured.out, captured.err]
    )
    assert f"/users/{user_id}/recommendations" in logged, "the control: access lines captured"
    for secret in (TOKEN, HASHED_TOKEN, WRONG_TOKEN, "Bearer"):
        assert secret not in logged, f"the API logged a token ({secret[:4]}...)"
    served = [item["track_id"] for r in (listed, folded, following) for item in r.json()["items"]]
    assert served
    for response in bodies:
        assert response.text not in logged
    for content in (json.dumps(recent), str(recent), "recent_track_ids", '"items"'):
        assert content not in logged, f"the API logged a body: {content}"
    for r in (listed, folded, following):  # no list served, whole or in its first ids
        ids = [item["track_id"] for item in r.json()["items"]]
        assert str(ids) not in logged and json.dumps(ids) not in logged
