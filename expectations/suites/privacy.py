"""The suppression suite: no erased user is back in any table that holds users (raw, its
quarantine, the marts). Their ids and e-mails are known only as salted hashes
(privacy.suppressions), so each table's distinct ids are hashed with the warehouse's salt and
looked up; a hit is an error (the run does not publish). Postgres only: the list and its salt
live there (on Spark, ingestion still drops erased users before the lake; README.md)."""

from __future__ import annotations

from expectations import tables as t
from expectations.checks import Check
from expectations.dialect import POSTGRES
from expectations.suites import BuildContext, SuiteSpec
from privacy.subjects import EMAIL, USER_ID, subject_hash_sql

SUPPRESSIONS, SALT = "privacy.suppressions", "privacy.salt"


def _suppressed_present(ctx: BuildContext) -> list[Check]:
    if ctx.dialect is not POSTGRES:
        return []
    id_sources = {
        t.RAW_USERS: "id",
        t.RAW_LISTEN_HISTORY: "user_id",
        t.RAW_LISTEN_HISTORY_ITEMS: "user_id",
        ctx.rel(t.DIM_USERS): "user_id",
        ctx.rel(t.FCT_LISTENS): "user_id",
    }
    ids = "\n        union all ".join(
        f"select '{table}' as subject, {column} as user_id from (select distinct {column}"
        f" from {table}) as d"
        for table, column in id_sources.items()
    )
    # the subjects: the tables with ids (a table's existence test, not its distinct ids)
    subjects = "\n              union all ".join(
        f"select '{table}' as subject where exists (select from {table})" for table in id_sources
    )
    rejected_users = "endpoint <> 'tracks' and record_key ~ '^[0-9]{{1,18}}$'"  # a user's id
    id_hash, email_hash = (
        subject_hash_sql(USER_ID, "ids.user_id"),
        subject_hash_sql(EMAIL, "u.email"),
    )
    query = f"""
        with ids as ({ids}
        union all
        select '{t.RAW_REJECTED}' as subject, cast(record_key as bigint) as user_id
        from (select distinct record_key from {t.RAW_REJECTED}
              where {rejected_users}) as r
        ),
        hits as (
            select ids.subject from ids cross join {SALT} as salt
            where {id_hash} in (select b.subject_hash from {{batch}} as b where b.kind = 'user_id')
              and exists (select from {{batch}} as b where b.kind = 'user_id')
            union all
            select '{t.RAW_USERS} (e-mail)' from {t.RAW_USERS} as u cross join {SALT} as salt
            where {email_hash} in (select b.subject_hash from {{batch}} as b where b.kind = 'email')
              and exists (select from {{batch}} as b where b.kind = 'email')
        )
        select s.subject, count(h.subject) as observed
        from ({subjects}
              union all
              select '{t.RAW_REJECTED}' where exists (
                  select from {t.RAW_REJECTED} where {rejected_users})
              union all
              select '{t.RAW_USERS} (e-mail)') as s
        left join hits as h on h.subject = s.subject
        group by s.subject"""
    return [Check(ctx.thresholds["privacy.suppressed_users_absent"], query, "rows")]


SUITES = (
    SuiteSpec(
        "privacy.suppressed",
        SUPPRESSIONS,
        _suppressed_present,
        (
            SALT,
            t.RAW_USERS,
            t.RAW_LISTEN_HISTORY,
            t.RAW_LISTEN_HISTORY_ITEMS,
            t.RAW_REJECTED,
            t.DIM_USERS,
            t.FCT_LISTENS,
        ),
        postgres_only=True,
    ),
)
