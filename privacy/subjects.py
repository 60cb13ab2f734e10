"""Who is suppressed, without keeping who: salted SHA-256 hashes of a user's id and e-mail. The
salt is made once per warehouse (privacy.salt, moovitamix/roles.sql) and readable only by the
roles that must compare hashes (privacy, loader, transformer), so a hash reveals nothing to
anyone else. SQL computes the same hashes with `subject_hash_sql`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg

USER_ID, EMAIL = "user_id", "email"
SALT_TABLE, SUPPRESSIONS = "privacy.salt", "privacy.suppressions"


def email_key(email: str) -> str:
    """An e-mail as the marts keep it (trimmed, lowercased): one person, one hash."""
    return email.strip().lower()


def subject_hash(salt: bytes, kind: str, value: object) -> str:
    """sha256(salt || '<kind>:<value>') in hex; e-mails hashed as `email_key` gives them."""
    text = email_key(str(value)) if kind == EMAIL else str(value)
    return hashlib.sha256(salt + f"{kind}:{text}".encode()).hexdigest()


def subject_hash_sql(kind: str, value_sql: str, salt_sql: str = "salt.salt") -> str:
    """The same hash in Postgres SQL, of the SQL expression `value_sql`."""
    text = f"lower(trim({value_sql}))" if kind == EMAIL else f"cast({value_sql} as text)"
    return f"encode(sha256({salt_sql} || convert_to('{kind}:' || {text}, 'UTF8')), 'hex')"


def read_salt(conn: psycopg.Connection) -> bytes:
    row = conn.execute(f"select salt from {SALT_TABLE}").fetchone()
    if row is None:
        raise RuntimeError(f"{SALT_TABLE} is empty: open the warehouse once to create it")
    return bytes(row[0])


@dataclass(frozen=True)
class Suppression:
    """The suppression list as ingestion uses it: is this id or e-mail to be dropped?"""

    salt: bytes
    hashes: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def user_id(self, value: object) -> bool:
        """An id, or an id served as text (a record that breaks the contract)."""
        if type(value) is str and value.strip().isdigit():
            value = int(value)
        return type(value) is int and subject_hash(self.salt, USER_ID, value) in self.hashes

    def email(self, value: object) -> bool:
        return type(value) is str and subject_hash(self.salt, EMAIL, value) in self.hashes


def load_suppression(conn: psycopg.Connection) -> Suppression:
    """The warehouse's suppression list (empty on a warehouse without one yet)."""
    exists = conn.execute("select to_regclass(%s) is not null", (SUPPRESSIONS,)).fetchone()
    if not exists or not exists[0]:
        return Suppression(b"", frozenset())
    hashes = frozenset(r[0] for r in conn.execute(f"select subject_hash from {SUPPRESSIONS}"))
    return Suppression(read_salt(conn) if hashes else b"", hashes)
