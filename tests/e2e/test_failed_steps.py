"""A failed run publishes nothing, whichever step fails: whole daily runs (`python -m
orchestrator` in a copy of the project of this test's own, the simulator over HTTP, the embedded
Postgres) after a good day, each broken for real in one step:

- transform: a dbt model (a table) added to the copy errors when it is built (division by
  zero), after `fct_listens`: training has started beside the build; the run stops it and
  waits for it before it drops what it staged;
- train: the copy's ml/config.toml asks for more judged users than the data has;
- audit_recs: the copy's ML step stages deliberately bad lists (half the users' lists dropped
  before they are committed), which the real recommendations audit refuses.

Each failing run exits with the step's code and names the step in one line; the marts, the
lists and the champion readers see are row for row those of the good day; nothing staged
(`__new` lists) is left behind; the next good run publishes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from tests.conftest import SimulatorFactory
from tests.e2e.daily_helpers import (
    SIMULATOR_ARGS,
    daily_env,
    fingerprint,
    published_by,
    query,
    run_daily,
    runs,
    scalar,
    set_simulator,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKEN_MODEL = "dbt_project/models/intermediate/int_broken_on_purpose.sql"
ML_CONFIG = "ml/config.toml"
ML_PUBLISH = "ml/publish.py"
# In ml.publish.stage, inside its transaction, after both lists are COPYed into __new.
STAGE_CHECK = "        if counts[USER_TOP_TRACKS.name] == 0:\n"
BAD_LISTS = (
    '        conn.execute("delete from recommendations.user_top_tracks__new'
    " where md5(user_id::text) < '8'\")  # deliberately bad lists (a test's copy)\n"
)
STAGED = "select count(*) from pg_tables where tablename like '%\\_\\_new'"


@pytest.fixture
def own_copy(tmp_path: Path) -> Path:
    """A copy of the project for this test alone: its code and config are broken on purpose."""
    from tests.hermetic import copy_project  # the plugin's: imported once pytest has loaded it

    return copy_project(tmp_path / "project" / "moovitamix")


def _published(url: ConnectionURL) -> dict[str, Any]:
    """Every table readers see in marts and recommendations, each as its row count and a hash
    of all its rows (sorted), the run that published them and the champion model runs."""
    with psycopg.connect(url.url()) as conn:
        tables = conn.execute(
            "select schemaname, tablename from pg_tables"
            " where schemaname in ('marts', 'recommendations') order by 1, 2"
        ).fetchall()
        seen: dict[str, Any] = {}
        for schema, table in tables:
            statement = sql.SQL(
                "select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), ''))"
                " from {} as t"
            ).format(sql.Identifier(schema, table))
            seen[f"{schema}.{table}"] = conn.execute(statement).fetchone()
        seen["champions"] = conn.execute(
            "select model_run_id, run_id from ml.model_runs where status = 'champion' order by 1"
        ).fetchall()
    seen["published by"] = published_by(url)
    return seen


def _run_id(output: str) -> str:
    first = next(line for line in output.splitlines() if line.startswith("MooVitamix daily run"))
    return first.split("daily run ", 1)[1].split(":", 1)[0]


def _failed_line(stderr: str, step: str) -> str:
    """The summary's one line of the failed step: `  <step>     failed: <error>`."""
    (line,) = [line for line in stderr.splitlines() if re.match(rf"\s+{step}\s+failed: ", line)]
    return line


def _good_run(env: dict[str, str], root: Path, url: ConnectionURL, beside: bool = True) -> str:
    """A run that passes and publishes; `beside`: training started beside the build (from the
    second run on: a run has measured its memory)."""
    result = run_daily(env, root)
    assert result.returncode == exit_codes.OK, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = _run_id(result.stdout)
    assert published_by(url) == run_id
    (recs_run,) = query(
        url,
        "select distinct m.run_id from recommendations.user_top_tracks as r "
        "join ml.model_runs as m using (model_run_id)",
    )
    assert recs_run == (run_id,), "the lists in place are this run's"
    assert scalar(url, STAGED) == 0
    (overlap,) = query(
        url,
        "select train.started_at < transform.finished_at"
        " from monitoring.pipeline_run_steps as train"
        " join monitoring.pipeline_run_steps as transform using (run_id)"
        " where run_id = %s and train.step = 'train' and transform.step = 'transform'",
        (run_id,),
    )
    assert overlap == (beside,), "training beside the build once a run measured its memory"
    return run_id


def _failing_run(env: dict[str, str], root: Path, url: ConnectionURL, step: str) -> tuple[str, str]:
    """A run that must fail in `step` and leave what readers see as it was: its error line (the
    summary's) and its whole output."""
    before = _published(url)
    result = run_daily(env, root)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == exit_codes.STEP_FAILED, output
    assert f"FAILED in step '{step}'" in result.stderr, output
    assert "nothing published: readers keep the last good run's marts and lists" in result.stderr
    assert [status for _, status, _ in runs(url)][-1] == "failed"
    (failed_step,) = query(
        url,
        "select failed_step from monitoring.pipeline_runs where run_id = %s",
        (_run_id(result.stdout),),
    )
    assert failed_step == (step,)
    assert _published(url) == before, "readers still see the last good day, row for row"
    assert scalar(url, STAGED) == 0, "what the failed run staged is dropped"
    return _failed_line(result.stderr, step), result.stdout + result.stderr


def _edit(root: Path, relative: str, old: str, new: str) -> str:
    path = root / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{relative} no longer holds {old!r}"
    path.write_text(text.replace(old, new))
    return text


def test_a_run_failing_in_transform_train_or_audit_recs_publishes_nothing(
    warehouse_env: ConnectionURL, start_simulator: SimulatorFactory, own_copy: Path
) -> None:
    api = start_simulator(*SIMULATOR_ARGS)
    env = daily_env(api)
    day0 = _good_run(env, own_copy, warehouse_env, beside=False)
    day0_seen = _published(warehouse_env)
    set_simulator(api, day=1)  # the failing runs have a new day to publish, and do not

    # transform: a model of the dbt project fails when it is built, after the marts training
    # reads: training has started beside the build, and is stopped
    broken = own_copy / BROKEN_MODEL
    broken.write_text(
        "{{ config(materialized='table') }}\n"
        "select 1 / (count(*) - count(*)) as x from {{ ref('fct_listens') }}\n"
    )
    line, output = _failing_run(env, own_copy, warehouse_env, "transform")
    assert "dbt build FAILED" in line, line
    assert "int_broken_on_purpose: Database Error in model int_broken_on_purpose" in line, line
    (train,) = query(
        warehouse_env,
        "select status from monitoring.pipeline_run_steps where run_id = %s and step = 'train'",
        (_run_id(output),),
    )
    assert train in (("success",), ("failed",)), "training started beside the build and ended"
    broken.unlink()

    # train: too few users to judge a model on
    config = _edit(own_copy, ML_CONFIG, "min_eval_users = 20    #", "min_eval_users = 100000 #")
    _edit(own_copy, ML_CONFIG, "max_eval_users = 20000 # per", "max_eval_users = 100000 # per")
    line, _ = _failing_run(env, own_copy, warehouse_env, "train")
    assert "evaluation needs at least 100000 of each" in line, line
    (own_copy / ML_CONFIG).write_text(config)

    # audit_recs: the lists staged for the audit leave about half the active users without any
    code = _edit(own_copy, ML_PUBLISH, STAGE_CHECK, BAD_LISTS + STAGE_CHECK)
    line, output = _failing_run(env, own_copy, warehouse_env, "audit_recs")
    assert "1 error expectation(s) failed: recommendations.active_users_covered" in line, line
    assert "staged {'user_top_tracks': " in output, "the lists were staged, then dropped"
    (own_copy / ML_PUBLISH).write_text(code)

    # repaired: the next run publishes day 1, and the champion of day 0 is still in the registry
    day1 = _good_run(env, own_copy, warehouse_env)
    assert day1 != day0
    day1_seen = _published(warehouse_env)
    assert day1_seen["marts.dim_users"] != day0_seen["marts.dim_users"], "day 1 is visible"
    statuses = [status for _, status, _ in runs(warehouse_env)]
    assert statuses == ["success", "failed", "failed", "failed", "success"]
    assert fingerprint(warehouse_env)["staged leftovers"] == (0, None)
