"""Write-audit-publish on Spark (moovitamix/spark_publication.py), on a real local Spark: the
views of `marts` switch between two slots, failed builds are rebuilt in full, and a publish that
died half way is undone before anything is built."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moovitamix import spark_publication as sp

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.fixture
def catalog(spark) -> Iterator[object]:
    def clean() -> None:
        for database in (sp.MARTS, *sp.SLOTS):
            spark.sql(f"drop database if exists {database} cascade")

    clean()
    yield spark
    clean()


def _build(spark, slot: str, tables: dict[str, list[int]]) -> None:
    """What dbt does to a slot: (re)create its tables."""
    for name, values in tables.items():
        spark.sql(f"drop table if exists {slot}.{name}")
        rows = ", ".join(f"({v})" for v in values) or "(0)"
        spark.sql(
            f"create table {slot}.{name} using parquet as select * from values {rows} as t(v)"
        )


def _read(spark, view: str) -> list[int]:
    return sorted(row.v for row in spark.sql(f"select v from {sp.MARTS}.{view}").collect())


def _views(spark) -> set[str]:
    return {t.name for t in spark.catalog.listTables(sp.MARTS) if t.tableType == "VIEW"}


def test_views_switch_slots_and_follow_the_marts_that_exist(catalog) -> None:
    spark = catalog
    first = sp.prepare_candidate(spark, "run-1")
    assert first == sp.Candidate("marts_a", full_refresh=False)
    _build(spark, first.slot, {"dim_users": [1, 2], "fct_listens": [10]})
    sp.mark_built(spark, first.slot, "run-1")
    assert sp.publish_marts(spark, first.slot, "run-1")["views"] == 2
    assert sp.published_slot(spark) == "marts_a"
    assert _read(spark, "dim_users") == [1, 2]

    second = sp.prepare_candidate(spark, "run-2")
    assert second == sp.Candidate("marts_b", full_refresh=False)
    _build(spark, second.slot, {"dim_users": [1, 2, 3], "track_popularity": [7]})
    sp.mark_built(spark, second.slot, "run-2")
    # until the publish, readers keep run-1's marts
    assert _read(spark, "dim_users") == [1, 2]
    sp.publish_marts(spark, second.slot, "run-2")
    assert _read(spark, "dim_users") == [1, 2, 3]
    assert _views(spark) == {"dim_users", "track_popularity"}  # fct_listens left with run-1
    # the next run builds over the former slot
    assert sp.prepare_candidate(spark, "run-3").slot == "marts_a"


def test_a_slot_a_failed_run_left_is_rebuilt_in_full_and_never_published(catalog) -> None:
    spark = catalog
    slot = sp.prepare_candidate(spark, "run-1").slot
    _build(spark, slot, {"dim_users": [1]})
    # the run failed before mark_built: its slot says "building"
    with pytest.raises(sp.SparkPublishFailed, match="not a complete build"):
        sp.publish_marts(spark, slot, "run-1")
    assert _views(spark) == set()
    again = sp.prepare_candidate(spark, "run-2")
    assert again == sp.Candidate(slot, full_refresh=True)
    sp.mark_built(spark, slot, "run-2")
    # built, audited, but the run failed later: unpublished, rebuilt in full next time
    assert sp.prepare_candidate(spark, "run-3").full_refresh


def test_a_publish_that_died_half_way_is_undone_before_the_next_build(catalog) -> None:
    spark = catalog
    slot = sp.prepare_candidate(spark, "run-1").slot
    _build(spark, slot, {"dim_users": [1], "dim_tracks": [5]})
    sp.mark_built(spark, slot, "run-1")
    sp.publish_marts(spark, slot, "run-1")

    candidate = sp.prepare_candidate(spark, "run-2").slot
    _build(spark, candidate, {"dim_users": [1, 2], "dim_tracks": [5, 6]})
    sp.mark_built(spark, candidate, "run-2")
    # What a kill in the middle of publish_marts leaves: the comment says "publishing", one
    # view reads the new slot, the other the old one.
    sp._set_state(spark, sp.MARTS, f"{sp.PUBLISHING} {candidate} over {slot} by run run-2")
    spark.sql(f"create or replace view marts.dim_users as select * from {candidate}.dim_users")
    assert _read(spark, "dim_users") == [1, 2] and _read(spark, "dim_tracks") == [5]

    nxt = sp.prepare_candidate(spark, "run-3")
    assert _read(spark, "dim_users") == [1] and _read(spark, "dim_tracks") == [5]
    assert sp.published_slot(spark) == slot
    assert nxt == sp.Candidate(candidate, full_refresh=True)
