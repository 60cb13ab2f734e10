"""`make erasure-report`: the audit of every erasure request on one screen, from
monitoring.erasure_audit (hashed subject, when, rows removed per store, by which role)."""

from __future__ import annotations

import psycopg

AUDIT_QUERY = (
    "select request_id, subject_hash, reason, status, requested_at, finished_at, removed,"
    " removed_by_store, erased_by from monitoring.erasure_audit order by request_id"
)


def erasure_report(conn: psycopg.Connection) -> str:
    """The report's text; per request, the stores with rows removed (the others: 0)."""
    lines = []
    for rid, digest, reason, status, asked, finished, removed, by_store, role in conn.execute(
        AUDIT_QUERY
    ):
        when = finished.isoformat(timespec="seconds") if finished else "-"
        subject = f"{digest[:16]}..." if digest else "(not started)"
        lines.append(
            f"request {rid} [{status}] subject {subject} reason {reason or '-'}: requested "
            f"{asked.isoformat(timespec='seconds')}, finished {when}, by {role or '-'}, "
            f"{removed:,} rows removed"
        )
        stores = {store: n for store, n in sorted(by_store.items()) if n}
        lines += [f"    {store}: {n:,}" for store, n in stores.items()]
        if zero := len(by_store) - len(stores):
            lines.append(f"    ({zero} other stores checked: nothing of the user's)")
    return "\n".join(lines) if lines else "no erasure requests"
