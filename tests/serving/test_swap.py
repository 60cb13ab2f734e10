"""A new champion published while requests run: every request gets one model's answer, old or
new, never a mix, and none fails; a broken artifact keeps the old model and raises an alert."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import psycopg

from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import Publication, publish
from moovitamix.roles import ML, as_role
from moovitamix.warehouse import connect
from serving.foldin import ServedModel
from tests.conftest import Webhook
from tests.ml.synthetic import generate
from tests.serving.conftest import (
    MARTS,
    TOKEN,
    Trained,
    config,
    make_warehouse,
    running_api,
    train,
    wait_for,
)

NEXT_RUN = "20261202T000000Z-bbbbbb"


def user_lists(trained: Trained) -> tuple[str, dict[int, list[int]]]:
    with connect(trained.url) as conn:
        rows = conn.execute(
            "select user_id, track_id, model_run_id from recommendations.user_top_tracks "
            "order by user_id, rank"
        ).fetchall()
    lists: dict[int, list[int]] = {}
    for user_id, track_id, _ in rows:
        lists.setdefault(user_id, []).append(track_id)
    return rows[0][2], lists


def history(trained: Trained, user_id: int) -> dict[int, int]:
    marts = trained.marts
    mine = marts.listen_user == user_id
    tracks, counts = marts.listen_track[mine].tolist(), marts.listen_count[mine].tolist()
    return dict(zip(tracks, counts, strict=True))


def fold_in_model(client: httpx.Client) -> str | None:
    return client.get("/health").json()["fold_in_model_run_id"]


def test_a_publish_during_requests_swaps_models_whole(fresh_trained: Trained) -> None:
    trained = fresh_trained
    old_run, old_lists = user_lists(trained)
    users = [int(u) for u in np.unique(trained.marts.listen_user)[:15]]
    recent = [int(t) for t in trained.marts.track_ids[-3:]]
    answers: list[tuple[str, int, int, dict]] = []
    stop = threading.Event()

    def hammer(base_url: str) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            while not stop.is_set():
                for user_id in users:
                    got = client.get(f"/users/{user_id}/recommendations")
                    answers.append(("get", user_id, got.status_code, got.json()))
                    body = {"recent_track_ids": recent, "k": 10}
                    got = client.post(f"/users/{user_id}/recommendations", json=body)
                    answers.append(("fold_in", user_id, got.status_code, got.json()))

    with running_api(trained.settings, config(trained)) as client:
        assert fold_in_model(client) == old_run
        threads = [threading.Thread(target=hammer, args=(str(client.base_url),)) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answers) > 60)
        new_run = train(trained, NEXT_RUN, "model.random_state=7")
        wait_for(lambda: fold_in_model(client) == new_run)
        seen = len(answers)
        wait_for(lambda: len(answers) > seen + 60)
        stop.set()
        for thread in threads:
            thread.join()

    assert new_run != old_run
    _, new_lists = user_lists(trained)
    lists = {old_run: old_lists, new_run: new_lists}
    models = {run: ServedModel.load(trained.artifacts / run) for run in lists}
    assert any(old_lists[u] != new_lists[u] for u in users)  # the swap changes what is served
    runs_seen = {"get": set(), "fold_in": set()}
    for kind, user_id, status, body in answers:
        assert status == 200, body
        run = body["model_run_id"]
        runs_seen[kind].add(run)
        served = [item["track_id"] for item in body["items"]]
        if kind == "get":
            assert served == lists[run][user_id]
        else:
            ranked = models[run].fold_in(history(trained, user_id), recent, 10)
            assert ranked is not None and served == [track for track, _ in ranked]
    assert runs_seen == {"get": {old_run, new_run}, "fold_in": {old_run, new_run}}


def test_a_broken_artifact_keeps_the_old_model_and_alerts(
    fresh_trained: Trained, webhook: Webhook
) -> None:
    trained = fresh_trained
    old_run, _ = user_lists(trained)
    settings = replace(trained.settings, alert_webhook_url=webhook.url)

    def break_the_artifact(conn: psycopg.Connection) -> dict[str, object]:
        """After the swap, before the commit: saved, but the API cannot have loaded it."""
        new = [p for p in trained.artifacts.iterdir() if p.name != old_run]
        Path(new[0], "model.npz").write_bytes(b"not a numpy archive")
        return {}

    # `make train`'s publication, with the artifact broken last in its transaction
    publication = Publication(NEXT_RUN, candidate="marts", swaps_postgres_marts=False)
    with running_api(settings, config(trained)) as client:
        new_run = train(trained, NEXT_RUN, "model.random_state=7", publication=publication)
        publication.stage("break the artifact", break_the_artifact, last=True)
        publish(as_role(trained.url, ML), publication)
        wait_for(lambda: client.get("/health").json()["lists_model_run_id"] == new_run)
        wait_for(lambda: "serving_model_load_failures_total 1.0" in client.get("/metrics").text)
        assert fold_in_model(client) == old_run
        folded = client.post("/users/1/recommendations", json={"recent_track_ids": [1, 2]})
        assert folded.status_code == 200 and folded.json()["model_run_id"] == old_run
        user_id = int(trained.marts.listen_user[0])
        listed = client.get(f"/users/{user_id}/recommendations").json()
        assert listed["model_run_id"] == new_run  # the published lists are served regardless
        metrics = client.get("/metrics").text
    assert "serving_model_swaps_total 1.0" in metrics
    assert len(webhook.bodies) == 1  # one alert, not one per poll
    alert = webhook.bodies[0]
    assert alert["severity"] == "error" and alert["step"] == "serving"
    assert new_run in alert["title"] and old_run in alert["title"]


def test_nothing_published_yet_then_the_first_publish(
    admin_url: ConnectionURL, tmp_path: Path
) -> None:
    trained = make_warehouse(admin_url, tmp_path, generate(**MARTS))
    with running_api(trained.settings, config(trained)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded" and health.json()["database"] is True
        listed = client.get("/users/1/recommendations")
        assert listed.status_code == 503 and listed.json()["detail"] == "nothing published yet"
        run = train(trained, "20261201T000000Z-aaaaaa")
        wait_for(lambda: client.get("/health").status_code == 200)
        assert fold_in_model(client) == run
        user_id = int(trained.marts.listen_user[0])
        listed = client.get(f"/users/{user_id}/recommendations")
        assert listed.status_code == 200 and listed.json()["model_run_id"] == run
