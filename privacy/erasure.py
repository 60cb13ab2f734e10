"""Processing erasure requests (monitoring.erasure_requests), as mvx_privacy: the subject's
hashes go on the suppression list first (an ingestion that starts later drops them), then each
store is erased in its own transaction that also records what it removed (monitoring.
erasure_steps): a killed erasure resumes at the next store, and a request done is never run
again. The stores are found, not listed: every table of the user-holding schemas with a
`user_id` column, raw's users, the quarantine's payloads, the model artifacts, dlt's pending
load packages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.roles import PRIVACY, as_role
from moovitamix.settings import Settings
from moovitamix.warehouse import connect
from privacy import ErasureFailed
from privacy.subjects import EMAIL, SUPPRESSIONS, USER_ID, read_salt, subject_hash, subject_hash_sql

log = logging.getLogger(__name__)

REQUESTS, STEPS = "monitoring.erasure_requests", "monitoring.erasure_steps"
OWN_TABLES = {("monitoring", "erasure_requests"), ("monitoring", "erasure_steps")}
# Where users' rows are: dlt's raw (and its merge staging), dbt's staging copy of the lists, the
# marts (published and candidate), the lists, monitoring's impressions.
USER_SCHEMAS = (
    "raw", "raw_staging", "staging", "marts", "marts_candidate", "recommendations", "monitoring",
)  # fmt: skip
USERS_TABLES = ("raw.users", "raw_staging.users")  # keyed by `id`
REJECTED_TABLES = ("raw._rejected", "raw_staging._rejected")
IMPRESSIONS = "monitoring.recommendation_impressions"
SUPPRESSION_STEP = SUPPRESSIONS
INGESTION_LOCK = 0x6D76785F696E6765  # ingestion.raw_tables.LOCK_KEY: one writer of raw at once
Store = Callable[[psycopg.Connection, "Subject"], int]


@dataclass(frozen=True)
class Subject:
    request_id: int
    user_id: int
    salt: bytes
    email_hashes: frozenset[str] = frozenset()  # the suppressed e-mails (files have no SQL)


@dataclass
class Erased:
    """One request's outcome: rows removed per store (this attempt and earlier ones)."""

    request_id: int
    subject_hash: str
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def request_erasure(conn: psycopg.Connection, user_id: int, reason: str) -> int:
    """A pending request for `user_id` (an operator may insert the row directly too)."""
    row = conn.execute(
        f"insert into {REQUESTS} (user_id, reason) values (%s, %s) returning request_id",
        (user_id, reason),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _tables_with_user_id(conn: psycopg.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "select c.table_schema, c.table_name from information_schema.columns c"
        " join information_schema.tables t using (table_schema, table_name)"
        " where c.column_name = 'user_id' and t.table_type = 'BASE TABLE'"
        " and c.table_schema = any(%s) order by 1, 2",
        (list(USER_SCHEMAS),),
    ).fetchall()
    return [(schema, table) for schema, table in rows if (schema, table) not in OWN_TABLES]


def _existing(conn: psycopg.Connection, tables: tuple[str, ...]) -> list[str]:
    query = "select name from unnest(%s::text[]) as name where to_regclass(name) is not null"
    return [r[0] for r in conn.execute(query, (list(tables),))]


def _delete_where(column: str) -> Callable[[str, str], Store]:
    def store(schema: str, table: str) -> Store:
        def erase(conn: psycopg.Connection, subject: Subject) -> int:
            statement = sql.SQL("delete from {} where {} = %s").format(
                sql.Identifier(schema, table), sql.Identifier(column)
            )
            return conn.execute(statement, (subject.user_id,)).rowcount

        return erase

    return store


def _rejected(schema: str, table: str) -> Store:
    """Quarantined payloads that are the user's: their id as a user endpoint's record key or
    field (a track's id is no user's), or an e-mail on the suppression list (hashes compared in
    SQL: no plain e-mail needed on resume)."""

    def erase(conn: psycopg.Connection, subject: Subject) -> int:
        payload = "(case when left(ltrim(r.payload), 1) = '{' then r.payload::jsonb end)"
        email = subject_hash_sql(EMAIL, f"({payload} ->> 'email')", "%(salt)s")
        where = sql.Identifier(schema, table).as_string(conn)
        statement = (
            f"delete from {where} as r where (r.endpoint in ('users', 'listen_history')"
            " and r.record_key = %(id)s)"
            f" or (r.endpoint = 'users' and {payload} ->> 'id' = %(id)s)"
            f" or (r.endpoint = 'listen_history' and {payload} ->> 'user_id' = %(id)s)"
            f" or {email} in (select subject_hash from {SUPPRESSIONS} where kind = 'email')"
        )
        params = {"id": str(subject.user_id), "salt": subject.salt}
        return conn.execute(statement, params).rowcount  # type: ignore[arg-type]

    return erase


def stores(conn: psycopg.Connection) -> dict[str, Store]:
    """Every store in the warehouse that can hold the user, by name (`schema.table`)."""
    found: dict[str, Store] = {}
    for name in _existing(conn, USERS_TABLES):
        found[name] = _delete_where("id")(*name.split("."))
    for name in _existing(conn, REJECTED_TABLES):
        found[name] = _rejected(*name.split("."))
    for schema, table in _tables_with_user_id(conn):
        found[f"{schema}.{table}"] = _delete_where("user_id")(schema, table)
    return found


def _emails(conn: psycopg.Connection, user_id: int) -> set[str]:
    """The user's e-mails, every version and the quarantine's, to suppress by hash."""
    found: set[str] = set()
    for table in _existing(conn, USERS_TABLES):
        where = sql.Identifier(*table.split(".")).as_string(conn)
        query = f"select distinct email from {where} where id = %s and email is not null"
        found |= {r[0] for r in conn.execute(query, (user_id,))}  # type: ignore[arg-type]
    for table in _existing(conn, REJECTED_TABLES):
        where = sql.Identifier(*table.split(".")).as_string(conn)
        query = (
            f"select distinct r.payload::jsonb ->> 'email' from {where} as r"
            " where r.endpoint = 'users' and r.record_key = %s"
            " and left(ltrim(r.payload), 1) = '{'"
        )
        rows = conn.execute(query, (str(user_id),))  # type: ignore[arg-type]
        found |= {r[0] for r in rows if isinstance(r[0], str) and "@" in r[0]}
    return found


def _done_steps(conn: psycopg.Connection, request_id: int) -> dict[str, int]:
    rows = conn.execute(f"select store, removed from {STEPS} where request_id = %s", (request_id,))
    return {store: int(removed) for store, removed in rows}


def _record(conn: psycopg.Connection, request_id: int, store: str, removed: int) -> None:
    conn.execute(
        f"insert into {STEPS} (request_id, store, removed) values (%s, %s, %s)",
        (request_id, store, removed),
    )


def _suppress(conn: psycopg.Connection, subject: Subject) -> int:
    """The subject's id and e-mails on the suppression list; returns the entries added."""
    hashes = {(subject_hash(subject.salt, USER_ID, subject.user_id), USER_ID)}
    emails = _emails(conn, subject.user_id)
    hashes |= {(subject_hash(subject.salt, EMAIL, email), EMAIL) for email in emails}
    added = 0
    for digest, kind in sorted(hashes):
        added += conn.execute(
            f"insert into {SUPPRESSIONS} (subject_hash, kind, request_id) values (%s, %s, %s)"
            " on conflict (subject_hash) do nothing",
            (digest, kind, subject.request_id),
        ).rowcount
    return added


def _erase_tables(
    conn: psycopg.Connection, subject: Subject, remaining: list[tuple[str, Store]]
) -> None:
    """Each table in its own transaction; one whose rows others still reference (the marts'
    foreign keys) is tried again once they are gone."""
    while remaining:
        postponed = []
        for name, store in remaining:
            try:
                with conn.transaction():
                    _record(conn, subject.request_id, name, store(conn, subject))
            except psycopg.errors.ForeignKeyViolation:
                postponed.append((name, store))
        if len(postponed) == len(remaining):
            names = ", ".join(name for name, _ in postponed)
            raise ErasureFailed(f"the user's rows in {names} are referenced by rows kept")
        remaining = postponed


def sweep_impressions(conn: psycopg.Connection) -> int:
    """Impressions the serving API logged for erased users since their erasure (the app may
    keep asking for them): found by hash, deleted. Run with every processing."""
    if not _existing(conn, (IMPRESSIONS,)):
        return 0
    digest = subject_hash_sql(USER_ID, "i.user_id")
    statement = (
        f"delete from {IMPRESSIONS} as i using privacy.salt as salt where i.user_id is not null"
        f" and {digest} in (select subject_hash from {SUPPRESSIONS} where kind = 'user_id')"
    )
    return conn.execute(statement).rowcount  # type: ignore[arg-type]


OuterStore = Callable[[Subject], int]  # a store outside Postgres (artifacts, dlt's packages)


def erase_request(
    conn: psycopg.Connection, request_id: int, outer: dict[str, OuterStore] | None = None
) -> Erased:
    """Erase one request's user everywhere; resumes after a kill; a done request is reported,
    not run again."""
    row = conn.execute(
        f"select user_id, status, subject_hash from {REQUESTS} where request_id = %s",
        (request_id,),
    ).fetchone()
    if row is None:
        raise ErasureFailed(f"no erasure request {request_id}")
    user_id, status, digest = row
    if status == "done":
        return Erased(request_id, digest, _done_steps(conn, request_id))
    subject = Subject(request_id, int(user_id), read_salt(conn))
    digest = subject_hash(subject.salt, USER_ID, subject.user_id)
    with conn.transaction():
        conn.execute(
            f"update {REQUESTS} set status = 'running', subject_hash = %s,"
            " started_at = coalesce(started_at, now()) where request_id = %s",
            (digest, request_id),
        )
        if SUPPRESSION_STEP not in _done_steps(conn, request_id):
            _record(conn, request_id, SUPPRESSION_STEP, _suppress(conn, subject))
    emails = f"select subject_hash from {SUPPRESSIONS} where kind = 'email'"
    subject = replace(subject, email_hashes=frozenset(r[0] for r in conn.execute(emails)))
    done = _done_steps(conn, request_id)
    _erase_tables(conn, subject, [(n, s) for n, s in stores(conn).items() if n not in done])
    for name, outer_store in (outer or {}).items():
        if name in _done_steps(conn, request_id):
            continue
        removed = outer_store(subject)  # idempotent: a rerun after a kill removes nothing more
        with conn.transaction():
            _record(conn, request_id, name, removed)
    with conn.transaction():
        conn.execute(
            f"update {REQUESTS} set status = 'done', finished_at = now(), user_id = null"
            " where request_id = %s",
            (request_id,),
        )
    erased = Erased(request_id, digest, _done_steps(conn, request_id))
    log.info("erasure request %d done: %d rows removed", request_id, erased.total)
    return erased


def pending_requests(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute(f"select request_id from {REQUESTS} where status <> 'done' order by 1")
    return [int(r[0]) for r in rows]


def process_requests(
    warehouse: ConnectionURL,
    settings: Settings,
    *,
    role: str = PRIVACY,
    only: int | None = None,
) -> list[Erased]:
    """Every pending request (or request `only`), as `role`, holding the ingestion's lock (no
    load runs while a user is erased). ErasureFailed, in one line, if the role may not."""
    from privacy.outer_stores import outer_stores

    try:
        with connect(as_role(warehouse, role), autocommit=True) as conn:
            locked = conn.execute("select pg_try_advisory_lock(%s)", (INGESTION_LOCK,)).fetchone()
            if not locked or not locked[0]:
                raise ErasureFailed("an ingestion run is loading: try again once it is done")
            try:
                ids = pending_requests(conn) if only is None else [only]
                outer = outer_stores(settings, warehouse)
                done = [erase_request(conn, request_id, outer) for request_id in ids]
                if swept := sweep_impressions(conn):
                    log.info("deleted %d impressions of erased users logged since", swept)
                return done
            finally:  # released now: a closed session's lock lingers until its backend exits
                with suppress(psycopg.Error):
                    conn.execute("select pg_advisory_unlock(%s)", (INGESTION_LOCK,))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ErasureFailed(f"{role} may not erase: {one_line(exc)}") from None
