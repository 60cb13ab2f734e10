"""Write-audit-publish on the Spark engine: two slot databases of tables, one database of views.

Spark cannot rename a database, so the marts are built into the slot (`marts_a`, `marts_b`)
that is not published, audited there, and published by pointing every view of `marts` at it;
views of marts that no longer exist are dropped. Views are replaced one by one, so a reader may
briefly join today's with yesterday's (Postgres swaps all at once). Each database's state is a
property (`mvx_state`): a slot `building`, `unpublished` or `published by run ...`, `marts`
`published <slot>` or `publishing <slot> over <former>`; a publish that died half way is
pointed back at the former slot by the next run, and a slot left unpublished is rebuilt in full.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from moovitamix.errors import one_line
from moovitamix.publication import Publication, PublishFailed

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

MARTS = "marts"
SLOTS = ("marts_a", "marts_b")

BUILDING = "building"
UNPUBLISHED = "unpublished"
PUBLISHED = "published"
PUBLISHING = "publishing"
# The metastore keeps no comment change of a database (Hive), but it keeps its properties.
STATE_PROPERTY = "mvx_state"
_STATE = re.compile(rf"\({STATE_PROPERTY},([^)]*)\)")


class SparkPublishFailed(RuntimeError):
    """The views could not be switched; the message is one line."""


@dataclass(frozen=True)
class Candidate:
    slot: str  # the database dbt builds the marts into
    full_refresh: bool  # the slot holds what a failed run left: rebuild it in full


def _state(spark: SparkSession, database: str) -> str:
    """The state text of a database (its `mvx_state` property; "" when none)."""
    if not spark.catalog.databaseExists(database):
        return ""
    for row in spark.sql(f"describe database extended {database}").collect():
        if row[0] == "Properties":
            found = _STATE.search(row[1] or "")
            return found.group(1) if found else ""
    return ""


def _set_state(spark: SparkSession, database: str, text: str) -> None:
    at = datetime.now(UTC).isoformat(timespec="seconds")
    spark.sql(f"alter database {database} set dbproperties ('{STATE_PROPERTY}' = '{text} at {at}')")


def published_slot(spark: SparkSession) -> str | None:
    """The slot the views of `marts` read (None before the first publish)."""
    words = _state(spark, MARTS).split()
    if len(words) >= 2 and words[0] == PUBLISHED and words[1] in SLOTS:
        return words[1]
    return None


def _views(spark: SparkSession, database: str) -> list[str]:
    """The persistent views of `database` (listTables also lists the session's temp views)."""
    return [
        t.name
        for t in spark.catalog.listTables(database)
        if t.tableType == "VIEW" and not t.isTemporary
    ]


def _tables(spark: SparkSession, database: str) -> list[str]:
    return [
        t.name
        for t in spark.catalog.listTables(database)
        if t.tableType in ("MANAGED", "EXTERNAL") and not t.isTemporary
    ]


def _point_views(spark: SparkSession, slot: str) -> list[str]:
    """Every view of `marts` reads `slot`; views of tables `slot` does not have are dropped."""
    tables = _tables(spark, slot)
    for table in tables:
        spark.sql(f"create or replace view {MARTS}.{table} as select * from {slot}.{table}")
    for view in set(_views(spark, MARTS)) - set(tables):
        spark.sql(f"drop view if exists {MARTS}.{view}")
    return tables


def _recover(spark: SparkSession) -> None:
    """A publish that died half way: point every view back at the former slot."""
    words = _state(spark, MARTS).split()
    if len(words) < 4 or words[0] != PUBLISHING:
        return
    slot, former = words[1], words[3]
    if former in SLOTS:
        log.warning("a publish of %s died half way: the views read %s again", slot, former)
        _point_views(spark, former)
        _set_state(spark, MARTS, f"{PUBLISHED} {former} restored after a failed publish")
    else:  # nothing was published before it: no view may survive
        for view in _views(spark, MARTS):
            spark.sql(f"drop view if exists {MARTS}.{view}")
        _set_state(spark, MARTS, "empty restored after a failed publish")
    _set_state(spark, slot, f"{UNPUBLISHED} after a failed publish")


def prepare_candidate(spark: SparkSession, run_id: str) -> Candidate:
    """The slot this run builds into, marked `building`; recovers a half-done publish first."""
    for database in (MARTS, *SLOTS):
        spark.sql(f"create database if not exists {database}")
    _recover(spark)
    live = published_slot(spark)
    slot = SLOTS[1] if live == SLOTS[0] else SLOTS[0]
    state = (_state(spark, slot).split() or [""])[0]
    _set_state(spark, slot, f"{BUILDING} by run {run_id}")
    full_refresh = state in (BUILDING, UNPUBLISHED)
    if full_refresh:
        log.info("%s was left by a run that did not publish it: rebuilding it in full", slot)
    return Candidate(slot, full_refresh)


def mark_built(spark: SparkSession, slot: str, run_id: str) -> None:
    _set_state(spark, slot, f"{UNPUBLISHED} by run {run_id}")


def mark_unpublished(spark: SparkSession, slot: str, run_id: str) -> None:
    """A failed run's slot stays as it is, flagged for a full rebuild (same as `mark_built`)."""
    mark_built(spark, slot, run_id)


def publish_marts(spark: SparkSession, slot: str, run_id: str) -> dict[str, object]:
    """Point the views of `marts` at `slot`, which must be this run's complete build."""
    state = (_state(spark, slot).split() or [""])[0]
    if state != UNPUBLISHED:
        raise SparkPublishFailed(
            f"{slot} is not a complete build of this run (state {state!r}); nothing published"
        )
    former = published_slot(spark) or "none"
    _set_state(spark, MARTS, f"{PUBLISHING} {slot} over {former} by run {run_id}")
    try:
        tables = _point_views(spark, slot)
    except Exception as exc:
        raise SparkPublishFailed(
            f"switching the views of {MARTS} failed: {one_line(exc)}"
        ) from None
    _set_state(spark, MARTS, f"{PUBLISHED} {slot} by run {run_id}")
    _set_state(spark, slot, f"{PUBLISHED} by run {run_id}")
    return {"slot": slot, "views": len(tables), "former": former}


def stage_marts(publication: Publication, spark: SparkSession) -> Candidate:
    """Make this run's publication build the marts into a Spark slot: the candidate schema is
    the slot, the Postgres marts are not swapped, and the views switch last inside the publish
    transaction: a failure there rolls the Postgres part back (nothing of the day is live); only
    a failed COMMIT after the switch would leave the marts a day ahead of the lists."""
    candidate = prepare_candidate(spark, publication.run_id)
    publication.candidate = candidate.slot
    publication.swaps_postgres_marts = False

    def switch(conn: object) -> dict[str, object]:
        try:
            return publish_marts(spark, candidate.slot, publication.run_id)
        except SparkPublishFailed as exc:
            raise PublishFailed(str(exc)) from None

    publication.stage(
        "spark marts",
        switch,
        discard=lambda conn: mark_unpublished(spark, candidate.slot, publication.run_id),
        last=True,
    )
    return candidate
