import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from psycopg.types.json import Jsonb

from ml import families
from ml.families.base import MODEL_FILE, PARAMS_FILE
from ml.interactions import build_interactions
from ml.params import AlsParams, BprParams, EaseParams, ItemKnnParams, LmfParams, Params
from ml.registry import (
    ID_MAPS_FILE,
    META_FILE,
    ModelRun,
    apply_retention,
    current_champion,
    ensure_model_runs,
    load_model,
    record_model_runs,
    save_model,
)
from moovitamix.warehouse import connect

# ml.model_runs as it was before there were families (no family, no split columns)
OLD_MODEL_RUNS_DDL = """
create table if not exists ml.model_runs (
    model_run_id text primary key,
    run_id text not null,
    trained_at timestamptz not null,
    params jsonb not null,
    metrics jsonb not null,
    baseline_metrics jsonb not null,
    n_users integer not null,
    n_tracks integer not null,
    n_interactions bigint not null,
    status text not null check (status in ('champion', 'challenger', 'rejected')),
    artifact_path text
);
create index if not exists model_runs_status_trained_at_idx
on ml.model_runs (status, trained_at desc);
"""


@pytest.mark.parametrize(
    "params",
    [
        AlsParams(factors=8, iterations=3),
        BprParams(factors=8, iterations=5),
        LmfParams(factors=8, iterations=3),
        ItemKnnParams(neighbours=20),
        EaseParams(regularization=50.0),
    ],
    ids=lambda p: p.family,
)
def test_artifacts_are_plain_npz_and_reload_to_the_same_recommendations(
    tmp_path: Path, structured_marts, params: Params
) -> None:
    m = structured_marts
    interactions = build_interactions(m.listen_user, m.listen_track, m.listen_count)
    fitted = families.fit(interactions.matrix, params, num_threads=1)
    path = save_model(
        tmp_path,
        "run-m00",
        fitted,
        interactions.user_ids,
        interactions.track_ids,
        {"model_run_id": "run-m00", "family": params.family},
    )
    files = sorted(p.name for p in path.iterdir())
    assert files == sorted([ID_MAPS_FILE, META_FILE, MODEL_FILE, PARAMS_FILE])
    for name in (MODEL_FILE, ID_MAPS_FILE):
        with zipfile.ZipFile(path / name) as archive:  # only .npy arrays inside
            assert all(member.endswith(".npy") for member in archive.namelist())
        with np.load(path / name, allow_pickle=False) as data:
            assert all(data[key].dtype != object for key in data.files)
    loaded = load_model(path)
    assert type(loaded.model) is type(fitted) and loaded.model.params == params
    assert json.loads((path / PARAMS_FILE).read_text())["family"] == params.family
    assert loaded.meta == {"model_run_id": "run-m00", "family": params.family}
    np.testing.assert_array_equal(loaded.user_ids, interactions.user_ids)
    np.testing.assert_array_equal(loaded.track_ids, interactions.track_ids)
    rows = np.arange(50)
    before = fitted.recommend(rows, interactions.matrix, 10)
    after = loaded.model.recommend(rows, interactions.matrix, 10)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1], rtol=1e-5)
    assert not list(tmp_path.glob(".*.tmp"))


def test_retention_keeps_the_newest_and_the_protected(tmp_path: Path) -> None:
    for name in (
        "20260101T000000Z-a-m00",
        "20260102T000000Z-b-m01",
        "20260103T000000Z-c-m00",
        "20260104T000000Z-d-m02",
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / META_FILE).write_text("{}")
    (tmp_path / "notes").mkdir()  # not an artifact: never touched
    removed = apply_retention(tmp_path, keep=2, protect={"20260101T000000Z-a-m00"})
    assert [p.name for p in removed] == ["20260102T000000Z-b-m01"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [
        "20260101T000000Z-a-m00",
        "20260103T000000Z-c-m00",
        "20260104T000000Z-d-m02",
        "notes",
    ]


def _run(model_run_id: str, day: int, family: str, params: dict, status: str, **kw) -> ModelRun:
    return ModelRun(
        model_run_id,
        run_id=model_run_id.rsplit("-", 1)[0],
        trained_at=datetime(2026, 11, day, tzinfo=UTC),
        family=family,
        split=kw.pop("split", "time"),
        params=params,
        metrics=kw.pop("metrics", {"ndcg": 0.2}),
        baseline_metrics={"popularity": {"ndcg": 0.1}},
        n_users=3,
        n_tracks=4,
        n_interactions=5,
        status=status,
        **kw,
    )


def test_model_runs_hold_the_family_and_split_and_the_champion_parses(fresh_warehouse) -> None:
    knn = ItemKnnParams(neighbours=20)
    with connect(fresh_warehouse, autocommit=True) as conn:
        assert current_champion(conn) is None  # creates the table
        record_model_runs(
            conn,
            [
                _run("r1-m00", 1, "als", AlsParams().to_json(), "champion", artifact_path="/a"),
                _run("r2-m00", 2, "als", AlsParams().to_json(), "rejected", split="holdout"),
                _run("r2-m01", 2, "item_knn", knn.to_json(), "champion", artifact_path="/b"),
                _run("r3-m00", 3, "item_knn", knn.to_json(), "rejected"),
                _run("r3-genre_popularity", 3, "genre_popularity", {}, "champion"),
                _run(
                    "r3-m01", 3, "ease", EaseParams().to_json(), "rejected", metrics={"x": np.nan}
                ),
            ],
        )
        champion = current_champion(conn)  # a published baseline is no champion
        assert champion is not None and champion.model_run_id == "r2-m01"
        assert champion.params == knn and champion.artifact_path == "/b"
        rows = conn.execute(
            "select model_run_id, family, split, metrics from ml.model_runs order by 1"
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("r1-m00", "als", "time"),
        ("r2-m00", "als", "holdout"),
        ("r2-m01", "item_knn", "time"),
        ("r3-genre_popularity", "genre_popularity", "time"),
        ("r3-m00", "item_knn", "time"),
        ("r3-m01", "ease", "time"),
    ]
    assert rows[-1][3] == {"x": None}  # NaN is stored as JSON null


def test_a_registry_from_before_families_is_migrated(fresh_warehouse) -> None:
    old_params = {"model": "als", "use_gpu": False, "factors": 64, "regularization": 0.05}
    with connect(fresh_warehouse, autocommit=True) as conn:
        conn.execute(OLD_MODEL_RUNS_DDL)
        conn.execute(
            "insert into ml.model_runs values ('r0-m00', 'r0', '2026-11-01', %s, %s, %s, "
            "3, 4, 5, 'champion', '/old')",
            (Jsonb(old_params), Jsonb({"ndcg": 0.2}), Jsonb({})),
        )
        ensure_model_runs(conn)
        ensure_model_runs(conn)  # idempotent
        row = conn.execute("select family, split from ml.model_runs").fetchone()
        assert row == ("als", "holdout")
        nullable = conn.execute(
            "select column_name, is_nullable from information_schema.columns "
            "where table_schema = 'ml' and table_name = 'model_runs' "
            "and column_name in ('family', 'split') order by 1"
        ).fetchall()
        assert nullable == [("family", "NO"), ("split", "NO")]
        champion = current_champion(conn)
        assert champion is not None and champion.model_run_id == "r0-m00"
        assert champion.params == AlsParams(factors=64, regularization=0.05)
        assert champion.artifact_path == "/old"
        # a new run writes next to the old rows
        record_model_runs(conn, [_run("r1-m00", 2, "bpr", BprParams().to_json(), "champion")])
        assert current_champion(conn).params == BprParams()  # type: ignore[union-attr]
