"""The warehouse's least-privilege roles: `roles.sql` creates them, the schemas and their grants;
`ensure_roles` applies it, `as_role` gives a URL whose sessions run as one role."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import psycopg
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line

log = logging.getLogger(__name__)

LOADER = "mvx_loader"
TRANSFORMER = "mvx_transformer"
ML = "mvx_ml"
ANALYST = "mvx_analyst"
APP = "mvx_app"
PII_READER = "mvx_pii_reader"
PUBLISHER = "mvx_publisher"  # owns the marts schemas: swaps them in, records the run
PRIVACY = "mvx_privacy"  # erases a user on request (privacy/)
ROLES = (LOADER, TRANSFORMER, ML, ANALYST, APP, PII_READER, PUBLISHER, PRIVACY)
SCHEMAS = (
    "raw", "raw_staging", "staging", "marts", "marts_candidate", "recommendations", "ml",
    "monitoring", "privacy",
)  # fmt: skip
ROLES_SQL = Path(__file__).with_name("roles.sql")
CONNECT_TIMEOUT_S = 10
# Roles are cluster-wide: two databases of one server setting them up at once may collide.
_COLLISIONS = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DuplicateObject,
    psycopg.errors.InternalError_,  # "tuple concurrently updated"
)


class RolesError(RuntimeError):
    """The roles could not be created or granted; the message says what a DBA must do."""


def as_role(url: ConnectionURL, role: str, **settings: str) -> ConnectionURL:
    """The same URL, its sessions running as `role` (and with `settings`) from the start (libpq
    `options`): for tools that only take a URL. The URL's user must be a member of `role`."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    # Tab-separated: dlt re-renders a URL with quote_plus, and libpq reads its "+" literally;
    # the server splits `options` on any white space.
    options = dict(url.options)
    setting = "\t".join(f"--{k}={v}" for k, v in {"role": role, **settings}.items())
    options["options"] = f"{options['options']}\t{setting}" if "options" in options else setting
    return replace(url, options=tuple(options.items()))


def apply_roles(conn: psycopg.Connection) -> list[str]:
    """Run roles.sql on `conn`, in its transaction; returns what it changed."""
    changes: list[str] = []

    def collect(notice: psycopg.errors.Diagnostic) -> None:
        # the file's own notices; the server's "already exists, skipping" have a SQLSTATE
        if notice.sqlstate == "00000" and notice.message_primary:
            changes.append(notice.message_primary)

    conn.add_notice_handler(collect)
    try:
        conn.execute(ROLES_SQL.read_bytes())
    finally:
        conn.remove_notice_handler(collect)
    return changes


def _apply(url: ConnectionURL) -> list[str]:
    with psycopg.connect(url.url(), connect_timeout=CONNECT_TIMEOUT_S) as conn:
        return apply_roles(conn)


def ensure_roles(url: ConnectionURL) -> list[str]:
    """Apply roles.sql to the URL's database (idempotent); returns what it changed."""
    retrying = Retrying(
        stop=stop_after_attempt(3), retry=retry_if_exception_type(_COLLISIONS), reraise=True
    )
    try:
        changes = retrying(_apply, url)
    except _COLLISIONS as exc:
        raise RolesError(f"creating the roles collided with another process: {exc}") from None
    except psycopg.errors.RaiseException as exc:  # roles.sql's own message
        raise RolesError(one_line(exc)) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise RolesError(
            f"cannot set up the warehouse roles as {url.user} ({one_line(exc)}): the warehouse "
            "user needs CREATEROLE (or a DBA creates the roles and grants them to it WITH "
            "ADMIN OPTION) and must own the schemas; see SECURITY.md"
        ) from None
    for change in changes:
        log.info("roles: %s", change)
    return changes
