"""The model registry: ml.model_runs (one row per candidate trained), the artifacts on disk
(`<root>/<model_run_id>/`, nothing pickled: ml/README.md) and their retention."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ml import families
from ml.families import Recommender
from ml.params import Params, parse_params
from moovitamix.warehouse import ensure_tables

log = logging.getLogger(__name__)

MODEL_RUNS_DDL = (Path(__file__).parent / "model_runs.sql").read_text(encoding="utf-8")
ID_MAPS_FILE, META_FILE = "id_maps.npz", "meta.json"
STALE_TMP_S = 24 * 3600


@dataclass(frozen=True)
class ModelRun:
    model_run_id: str
    run_id: str
    trained_at: datetime
    family: str  # the params' family, or the baseline published
    split: str  # how it was judged: "time" or "holdout" (ml.split)
    params: dict[str, Any]
    metrics: dict[str, Any]
    baseline_metrics: dict[str, Any]
    n_users: int
    n_tracks: int
    n_interactions: int
    status: str
    artifact_path: str | None = None


@dataclass(frozen=True)
class Champion:
    model_run_id: str
    params: Params
    artifact_path: str | None


def ensure_model_runs(conn: psycopg.Connection) -> None:
    """The table, and the columns later versions added (the DDL is idempotent)."""
    ensure_tables(conn, ["ml.model_runs"], MODEL_RUNS_DDL)
    (missing,) = conn.execute(
        "select 2 - count(*) from information_schema.columns where table_schema = 'ml' "
        "and table_name = 'model_runs' and column_name in ('family', 'split')"
    ).fetchone() or (0,)
    if missing:
        conn.execute(MODEL_RUNS_DDL)


def record_model_runs(conn: psycopg.Connection, runs: Sequence[ModelRun]) -> None:
    """The runs' rows (a rerun under the same run id replaces its rows)."""
    columns = [sql.Identifier(field.name) for field in fields(ModelRun)]  # the table's order
    statement = sql.SQL(
        "insert into ml.model_runs ({}) values ({}) on conflict (model_run_id) do update set {}"
    ).format(
        sql.SQL(", ").join(columns),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(c) for c in columns[1:]),
    )
    rows = [
        tuple(Jsonb(finite_json(v)) if isinstance(v, dict) else v for v in astuple(r)) for r in runs
    ]
    ensure_model_runs(conn)
    with conn.cursor() as cur:
        cur.executemany(statement, rows)


def recent_fit_seconds(conn: psycopg.Connection) -> dict[str, float]:
    """Each family's latest recorded fit time (the search's guess of what a challenger of that
    family will cost today)."""
    ensure_model_runs(conn)
    rows = conn.execute(
        "select distinct on (family) family, (metrics ->> 'fit_seconds')::float8 "
        "from ml.model_runs where metrics ? 'fit_seconds' "
        "order by family, trained_at desc"
    ).fetchall()
    return {family: seconds for family, seconds in rows if seconds is not None}


def recent_step_timings(conn: psycopg.Connection, runs: int = 7) -> dict[str, float]:
    """Each phase's seconds in the latest of the last `runs` serving rows that timed it (a
    phase a run skipped comes from the run before): what the step's time budget expects."""
    ensure_model_runs(conn)
    rows = conn.execute(
        "select metrics -> 'step' -> 'timings_s' from ml.model_runs "
        "where status = 'champion' and metrics -> 'step' ? 'timings_s' "
        "order by trained_at desc, model_run_id desc limit %s",
        (runs,),
    ).fetchall()
    found: dict[str, float] = {}
    for (timings,) in rows:
        for phase, seconds in (timings or {}).items():
            if isinstance(seconds, int | float):
                found.setdefault(phase, float(seconds))
    return found


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float as None (JSON has neither: a metric that is
    undefined, e.g. a segment without users or the churn of a first day, is null)."""
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def current_champion(conn: psycopg.Connection) -> Champion | None:
    """The latest model that won a run (a run that published a baseline has none)."""
    ensure_model_runs(conn)
    row = conn.execute(
        "select model_run_id, params, artifact_path from ml.model_runs "
        "where status = 'champion' and family not in ('popularity', 'genre_popularity') "
        "order by trained_at desc, model_run_id desc limit 1"
    ).fetchone()
    if row is None:
        return None
    return Champion(row[0], parse_params(row[1]), row[2])


@dataclass
class LoadedModel:
    model: Recommender
    user_ids: np.ndarray
    track_ids: np.ndarray
    meta: dict[str, Any]


def save_model(
    root: Path,
    model_run_id: str,
    model: Recommender,
    user_ids: np.ndarray,
    track_ids: np.ndarray,
    meta: dict[str, Any],
) -> Path:
    """Write the artifact to a temporary directory, then rename it into place."""
    final, tmp = root / model_run_id, root / f".{model_run_id}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp)
    np.savez(tmp / ID_MAPS_FILE, user_ids=user_ids, track_ids=track_ids)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def load_model(path: Path) -> LoadedModel:
    """An artifact back: the model (ml.families.load, allow_pickle=False) and the id maps."""
    model = families.load(path)
    with np.load(path / ID_MAPS_FILE, allow_pickle=False) as maps:
        user_ids, track_ids = maps["user_ids"], maps["track_ids"]
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    return LoadedModel(model, user_ids, track_ids, meta)


def apply_retention(root: Path, keep: int, protect: Iterable[str] = ()) -> list[Path]:
    """Keep the newest `keep` artifact directories (model run ids sort by time) and the
    protected ones; remove the others, and temporary directories older than a day."""
    if not root.is_dir():
        return []
    protected = set(protect)
    artifacts = sorted(
        p for p in root.iterdir() if not p.name.startswith(".") and (p / META_FILE).is_file()
    )
    doomed = [p for p in artifacts[: max(len(artifacts) - keep, 0)] if p.name not in protected]
    now = time.time()
    doomed += [
        p for p in root.glob(".*.tmp") if p.is_dir() and now - p.stat().st_mtime > STALE_TMP_S
    ]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
        log.info("retention: removed %s", path)
    return doomed
