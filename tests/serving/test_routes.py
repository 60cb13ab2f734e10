"""Every route over real HTTP against the embedded Postgres and a trained, published model."""

from __future__ import annotations

import httpx
import numpy as np

from moovitamix.warehouse import connect
from tests.serving.conftest import HASHED_TOKEN, Trained, wait_for


def published(trained: Trained, query: str, *params: object) -> list[tuple]:
    with connect(trained.url) as conn:
        return conn.execute(query, params).fetchall()


def test_a_users_published_list(api: httpx.Client, trained: Trained) -> None:
    users, pairs = np.unique(trained.marts.listen_user, return_counts=True)
    user_id = int(users[np.argmax(pairs)])  # a full history: the model's list, not a blend
    body = api.get(f"/users/{user_id}/recommendations", params={"k": 5}).json()
    rows = published(
        trained,
        "select track_id, score, rank, model_run_id from recommendations.user_top_tracks "
        "where user_id = %s and rank <= 5 order by rank",
        user_id,
    )
    assert body["user_id"] == user_id and body["source"] == "model"
    assert body["model_run_id"] == rows[0][3] and body["generated_at"]
    assert [(i["track_id"], i["score"], i["rank"]) for i in body["items"]] == [r[:3] for r in rows]
    assert len(api.get(f"/users/{user_id}/recommendations").json()["items"]) == 10  # k=10


def test_an_unknown_user_gets_the_cold_start_list(api: httpx.Client, trained: Trained) -> None:
    unknown = int(trained.marts.user_ids.max()) + 1000
    body = api.get(f"/users/{unknown}/recommendations", params={"k": 7}).json()
    assert body["source"] == "fallback" and len(body["items"]) == 7
    assert [i["rank"] for i in body["items"]] == list(range(1, 8))
    most_listed = published(
        trained,
        "select track_id from recommendations.user_top_tracks group by track_id "
        "order by count(*) desc, track_id limit 7",
    )
    assert [i["track_id"] for i in body["items"]] == [r[0] for r in most_listed]


def test_play_next_and_its_fallback(api: httpx.Client, trained: Trained) -> None:
    track_id = published(trained, "select track_id from recommendations.similar_tracks limit 1")
    seed = track_id[0][0]
    body = api.get(f"/tracks/{seed}/next", params={"k": 3}).json()
    rows = published(
        trained,
        "select similar_track_id from recommendations.similar_tracks "
        "where track_id = %s and rank <= 3 order by rank",
        seed,
    )
    assert body["track_id"] == seed and body["source"] == "model"
    assert [i["track_id"] for i in body["items"]] == [r[0] for r in rows]
    unknown = api.get("/tracks/999999999/next").json()
    assert unknown["source"] == "fallback" and len(unknown["items"]) == 10


def test_fold_in_leaves_out_history_and_recent_listens(api: httpx.Client, trained: Trained) -> None:
    marts = trained.marts
    user_id = int(marts.listen_user[0])
    history = set(marts.listen_track[marts.listen_user == user_id].tolist())
    unheard = [int(t) for t in marts.track_ids if int(t) not in history]
    recent = unheard[:20]
    body = api.post(
        f"/users/{user_id}/recommendations", json={"recent_track_ids": recent, "k": 50}
    ).json()
    served = [i["track_id"] for i in body["items"]]
    assert body["source"] == "fold_in" and len(served) == 50
    assert not set(served) & (history | set(recent))
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # the recent listens move the list: without them it differs
    alone = api.post(f"/users/{user_id}/recommendations", json={"k": 50}).json()
    assert alone["source"] == "fold_in"
    assert [i["track_id"] for i in alone["items"]] != served


def test_fold_in_for_a_new_user_from_recent_listens_only(
    api: httpx.Client, trained: Trained
) -> None:
    recent = trained.marts.track_ids[:5].tolist()
    body = api.post("/users/123456789/recommendations", json={"recent_track_ids": recent}).json()
    assert body["source"] == "fold_in" and len(body["items"]) == 10
    assert not {i["track_id"] for i in body["items"]} & set(recent)
    nothing = api.post("/users/123456789/recommendations", json={"recent_track_ids": []}).json()
    assert nothing["source"] == "fallback" and len(nothing["items"]) == 10


def test_tokens_missing_wrong_and_hashed(api: httpx.Client) -> None:
    base = str(api.base_url)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
        for method, path in (
            ("GET", "/users/1/recommendations"),
            ("GET", "/tracks/1/next"),
            ("POST", "/users/1/recommendations"),
            ("GET", "/metrics"),
        ):
            response = httpx.request(method, base + path, headers=headers, json={})
            assert response.status_code == 401, (headers, path)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    hashed = httpx.get(
        base + "/users/1/recommendations", headers={"Authorization": f"Bearer {HASHED_TOKEN}"}
    )
    assert hashed.status_code == 200
    assert httpx.get(base + "/health").status_code == 200  # open


def test_validation_errors_name_the_field(api: httpx.Client) -> None:
    def field_of(response: httpx.Response) -> list[object]:
        assert response.status_code == 422, response.text
        return response.json()["detail"][0]["loc"]

    assert field_of(api.get("/users/1/recommendations", params={"k": 0})) == ["query", "k"]
    assert field_of(api.get("/users/1/recommendations", params={"k": 101})) == ["query", "k"]
    assert field_of(api.get("/users/abc/recommendations")) == ["path", "user_id"]
    assert field_of(api.get("/tracks/-1/next")) == ["path", "track_id"]
    assert field_of(api.get(f"/tracks/{2**63}/next")) == ["path", "track_id"]
    post = "/users/1/recommendations"
    assert field_of(api.post(post, json={"k": 0})) == ["body", "k"]
    assert field_of(api.post(post, json={"recent_track_ids": ["12"]})) == [
        "body",
        "recent_track_ids",
        0,
    ]
    assert field_of(api.post(post, json={"recent_track_ids": [1.5]}))[:2] == [
        "body",
        "recent_track_ids",
    ]
    assert field_of(api.post(post, json={"recent_track_ids": list(range(501))})) == [
        "body",
        "recent_track_ids",
    ]
    assert api.post(post, json={"recent_track_ids": list(range(500))}).status_code == 200


def test_health_and_metrics(api: httpx.Client, trained: Trained) -> None:
    health = api.get("/health").json()
    run = published(trained, "select model_run_id from recommendations.user_top_tracks limit 1")
    assert health["status"] == "ok" and health["database"] is True
    assert health["lists_model_run_id"] == health["fold_in_model_run_id"] == run[0][0]
    assert health["lists_age_s"] >= 0
    api.get("/users/1/recommendations")
    text = api.get("/metrics").text
    assert 'serving_requests_total{method="GET",route="/users/{user_id}/recommendations"' in text
    assert 'serving_request_seconds_bucket{le="0.01",method="GET",route="/health"}' in text
    assert "serving_model_swaps_total 1.0" in text


def test_every_list_served_is_logged(api: httpx.Client, trained: Trained) -> None:
    user_id = int(np.max(trained.marts.listen_user))
    listed = api.get(f"/users/{user_id}/recommendations", params={"k": 4}).json()
    folded = api.post(f"/users/{user_id}/recommendations", json={"k": 3}).json()
    nexts = api.get("/tracks/987654321/next", params={"k": 2}).json()
    query = (
        "select user_id, track_id, model_run_id, source, route, k, track_ids "
        "from monitoring.recommendation_impressions where user_id = %s or track_id = 987654321 "
        "order by served_at"
    )
    wait_for(lambda: len(published(trained, query, user_id)) == 3)
    rows = published(trained, query, user_id)
    assert rows == [
        (
            user_id,
            None,
            listed["model_run_id"],
            "model",
            "GET /users/{user_id}/recommendations",
            4,
            [i["track_id"] for i in listed["items"]],
        ),
        (
            user_id,
            None,
            folded["model_run_id"],
            "fold_in",
            "POST /users/{user_id}/recommendations",
            3,
            [i["track_id"] for i in folded["items"]],
        ),
        (
            None,
            987654321,
            nexts["model_run_id"],
            "fallback",
            "GET /tracks/{track_id}/next",
            2,
            [i["track_id"] for i in nexts["items"]],
        ),
    ]
    assert 'serving_impressions_total{outcome="flushed"}' in api.get("/metrics").text
