"""Whether the incremental `fct_listens` is cheaper rebuilt than updated in place.

An incremental build deletes and rewrites the rows of every user whose listen history changed
after the table's watermark, one index entry and one key check per row, and leaves the deleted
rows for vacuum; a full build writes the table once and builds its indexes in bulk. While the
table and its indexes fit in the server's own buffers (`shared_buffers`) the rewrites stay
cheap; once they outgrow them each one is a page read and written back, and past a share of
changed histories (the `listens_rebuild_share` var of dbt_project.yml) the rebuild is the
cheaper build (dbt_project/README.md, "Incremental or rebuilt"): the transform step then asks
dbt to rebuild that model alone. Either way the rows are the same."""

from __future__ import annotations

from pathlib import Path

import psycopg
import yaml
from psycopg import sql

PROJECT_FILE = Path(__file__).resolve().parent / "dbt_project.yml"
# Read by fct_listens' config: "1" makes dbt rebuild it in full (its `full_refresh` config).
REBUILD_ENV = "MVX_DBT_REBUILD_FCT_LISTENS"
STAGING = "staging"  # dbt_project.yml, models.moovitamix.staging


def rebuild_share(project_file: Path = PROJECT_FILE) -> float:
    """The `listens_rebuild_share` var: above this share of changed histories, rebuild."""
    document = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    return float((document.get("vars") or {}).get("listens_rebuild_share", 1.0))


def changed_share(conn: psycopg.Connection, schema: str) -> float | None:
    """The share of current listen histories with a version that started or ended after the
    watermark of `schema`.fct_listens (the users an incremental build would rewrite, less those
    whose tracks came or went); None when the table does not exist or is empty (dbt builds it
    in full anyway) or staging does not exist yet. Reads raw's validity through its indexes."""
    listens = sql.Identifier(schema, "fct_listens")
    versions = sql.Identifier(STAGING, "stg_moovitamix__listen_history_versions")
    found = conn.execute(
        "select to_regclass(%s) is not null and to_regclass(%s) is not null",
        (listens.as_string(conn), versions.as_string(conn)),
    ).fetchone()
    if not found or not found[0]:  # no table yet, or staging not built yet
        return None
    query = sql.SQL(
        """
        with watermark as (
            select max(history_valid_from) as at from {listens}
        )
        select
            (
                select count(distinct versions.user_id)
                from {versions} as versions, watermark
                where versions.valid_from > watermark.at or versions.valid_to > watermark.at
            ),
            (select count(*) from {versions} as versions where versions.is_current),
            (select watermark.at is not null from watermark)
        """
    ).format(listens=listens, versions=versions)
    changed, current, has_rows = conn.execute(query).fetchone() or (0, 0, False)
    if not has_rows:
        return None
    return changed / current if current else 1.0


def outgrown_buffers(
    conn: psycopg.Connection, schema: str, buffer_bytes: int | None = None
) -> tuple[int, int] | None:
    """(bytes of `schema`.fct_listens with its indexes, the buffers' bytes: `buffer_bytes`, or
    the server's shared_buffers) when the first is the larger; None while the table fits, or
    when it does not exist."""
    row = conn.execute(
        "select pg_total_relation_size(to_regclass(%s)),"
        " coalesce(%s, pg_size_bytes(current_setting('shared_buffers')))",
        (sql.Identifier(schema, "fct_listens").as_string(conn), buffer_bytes),
    ).fetchone()
    if row is None or row[0] is None or row[0] <= row[1]:
        return None
    return int(row[0]), int(row[1])
