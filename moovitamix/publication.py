"""Write-audit-publish (README "Write-audit-publish"): readers never see a day that failed its
audits. One transaction swaps `marts` <-> `marts_candidate` and runs what each step registered
(`Publication.stage`); a run that fails before it drops what it staged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.warehouse import connect, take_publish_locks

log = logging.getLogger(__name__)

MARTS = "marts"
CANDIDATE = "marts_candidate"
_SWAP = "marts__swap"
# One publisher at a time, across processes (the daily run also holds its run lock).
PUBLISH_LOCK_KEY = 0x6D76785F707562  # "mvx_pub"

# The state of a marts schema, as the first word of its comment.
BUILDING = "building"  # a run is building it (or died doing so)
UNPUBLISHED = "unpublished"  # built by a run that did not publish it
PUBLISHED = "published"  # the marts readers see, or the former ones

InTransaction = Callable[[psycopg.Connection], Mapping[str, object]]
AfterCommit = Callable[[], None]


class PublishFailed(RuntimeError):
    """The publish transaction failed; yesterday's state stays. The message is one line."""


@dataclass(frozen=True)
class Relations:
    """Where this run's tables are: "schema.table" names, as readers know them, mapped to the
    tables a step must read or check. The identity outside write-audit-publish."""

    schemas: Mapping[str, str] = field(default_factory=dict)
    tables: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, name: str) -> str:
        schema, dot, table = name.partition(".")
        return self.tables.get(name) or f"{self.schemas.get(schema, schema)}{dot}{table}"


LIVE = Relations()


@dataclass
class _Action:
    name: str
    in_transaction: InTransaction
    after_commit: AfterCommit | None
    discard: Callable[[psycopg.Connection], None] | None
    last: bool = False  # runs after the others: a change outside Postgres that cannot roll back


@dataclass
class Publication:
    """What one run writes aside and publishes at its end. Steps register their part."""

    run_id: str
    staged_tables: dict[str, str] = field(default_factory=dict)  # "recommendations.x" -> staged
    actions: list[_Action] = field(default_factory=list)
    # Where the candidate marts are built. On the Spark engine the marts live in Spark (a slot
    # database, moovitamix/spark_publication.py) and the Postgres marts are not swapped.
    candidate: str = CANDIDATE
    swaps_postgres_marts: bool = True
    # steps may run side by side (orchestrator/daily.py): one registers at a time
    _registering: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @property
    def relations(self) -> Relations:
        """Where the audits and the ML step find this run's tables."""
        return Relations(schemas={MARTS: self.candidate}, tables=dict(self.staged_tables))

    def stage(
        self,
        name: str,
        in_transaction: InTransaction,
        *,
        tables: Mapping[str, str] | None = None,
        after_commit: AfterCommit | None = None,
        discard: Callable[[psycopg.Connection], None] | None = None,
        last: bool = False,
    ) -> None:
        """Register a part: `in_transaction(conn)` runs in the publish transaction (figures for
        the ledger), `after_commit()` once it committed, `discard(conn)` if the run fails first;
        `tables` maps live names to staged ones. A `last` part (a change outside Postgres, which
        no rollback undoes) runs after all others, just before the commit."""
        with self._registering:
            self.staged_tables.update(tables or {})
            self.actions = [a for a in self.actions if a.name != name]
            self.actions.append(_Action(name, in_transaction, after_commit, discard, last))


def _comment(conn: psycopg.Connection, schema: str, state: str, run_id: str) -> None:
    at = datetime.now(UTC).isoformat(timespec="seconds")
    conn.execute(
        sql.SQL("comment on schema {} is {}").format(
            sql.Identifier(schema), sql.Literal(f"{state} by run {run_id} at {at}")
        )
    )


def schema_state(conn: psycopg.Connection, schema: str) -> str | None:
    """The state word of a marts schema's comment (None: no such schema, or no comment)."""
    row = conn.execute(
        "select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = %s",
        (schema,),
    ).fetchone()
    if row is None or not row[0]:
        return None
    return str(row[0]).split(" ", 1)[0]


def _recreate_candidate(conn: psycopg.Connection) -> None:
    """Create `marts_candidate` again with the schema grants roles.sql gives it (its owner,
    mvx_publisher, may): no bootstrap user needed."""
    schema = sql.Identifier(CANDIDATE)
    conn.execute(sql.SQL("create schema {}").format(schema))
    conn.execute(sql.SQL("grant usage, create on schema {} to mvx_transformer").format(schema))
    conn.execute(sql.SQL("grant usage on schema {} to mvx_ml, mvx_analyst, mvx_app").format(schema))
    if conn.execute("select current_user <> 'mvx_publisher'").fetchone() == (True,):
        conn.execute(sql.SQL("alter schema {} owner to mvx_publisher").format(schema))


def prepare_candidate(url: ConnectionURL, run_id: str) -> bool:
    """Make sure `marts_candidate` exists and mark it as being built by `run_id`. True: it holds
    what a failed run left (half-built or unpublished), to be rebuilt in full (an empty one
    needs no flag: dbt builds missing tables in full anyway)."""
    with connect(url) as conn:
        exists = conn.execute(
            "select 1 from pg_namespace where nspname = %s", (CANDIDATE,)
        ).fetchone()
        if not exists:  # dropped by hand: a new schema has none of the old one's grants
            _recreate_candidate(conn)
        state = schema_state(conn, CANDIDATE)
        _comment(conn, CANDIDATE, BUILDING, run_id)
    full_refresh = state in (BUILDING, UNPUBLISHED)
    if full_refresh:
        log.info("%s was left by a run that did not publish it: rebuilding it in full", CANDIDATE)
    return full_refresh


def mark_built(url: ConnectionURL, run_id: str) -> None:
    """The candidate is complete (dbt built it); it stays `unpublished` unless published."""
    with connect(url) as conn:
        _comment(conn, CANDIDATE, UNPUBLISHED, run_id)


def discard(url: ConnectionURL, publication: Publication) -> None:
    """The run failed before publishing: drop what its steps staged (the candidate marts stay,
    marked `unpublished`, and are rebuilt in full by the next run)."""
    with connect(url) as conn:
        for action in publication.actions:
            if action.discard is not None:
                action.discard(conn)


def _swap_marts(conn: psycopg.Connection, run_id: str) -> None:
    state = schema_state(conn, CANDIDATE)
    if state != UNPUBLISHED:
        raise PublishFailed(
            f"{CANDIDATE} is not a complete build of this run (state {state!r}); nothing published"
        )
    rename = sql.SQL("alter schema {} rename to {}")
    conn.execute(rename.format(sql.Identifier(MARTS), sql.Identifier(_SWAP)))
    conn.execute(rename.format(sql.Identifier(CANDIDATE), sql.Identifier(MARTS)))
    conn.execute(rename.format(sql.Identifier(_SWAP), sql.Identifier(CANDIDATE)))
    _comment(conn, MARTS, PUBLISHED, run_id)


def publish(
    url: ConnectionURL, publication: Publication, *, lock_timeout_s: float = 60.0
) -> dict[str, object]:
    """Swap the candidate marts in and run every registered part, in one transaction."""
    figures: dict[str, object] = {}
    what = "marts and recommendations" if publication.swaps_postgres_marts else "lists"
    try:
        with connect(url, autocommit=True) as conn, conn.transaction():
            take_publish_locks(conn, PUBLISH_LOCK_KEY, lock_timeout_s)
            if publication.swaps_postgres_marts:
                _swap_marts(conn, publication.run_id)
                figures[MARTS] = "swapped in"
            for action in sorted(publication.actions, key=lambda a: a.last):
                figures[action.name] = dict(action.in_transaction(conn))
    except psycopg.errors.LockNotAvailable:
        raise PublishFailed(
            f"gave up after waiting {lock_timeout_s:g}s for readers of the published tables; "
            f"yesterday's {what} stay"
        ) from None
    except psycopg.Error as exc:
        raise PublishFailed(
            f"publishing failed ({one_line(exc)}); yesterday's {what} stay"
        ) from None
    for action in publication.actions:
        if action.after_commit is not None:
            try:
                action.after_commit()
            except Exception:  # housekeeping (artifact retention): never un-publishes
                log.exception("after publishing, %s's housekeeping failed", action.name)
    log.info("published run %s: %s", publication.run_id, figures)
    return figures
