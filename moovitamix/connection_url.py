"""One parsed warehouse URL, rendered for each tool that needs it (libpq, SQLAlchemy, dlt).

Passwords never leave this object unmasked except towards a driver: `masked` is what logs see.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

MASK = "****"
# libpq's connection parameters that have an environment variable, for clients that take no URL
# (psql through PG* variables; dbt, whose profile names host, port, user and database only).
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcertmode": "PGSSLCERTMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "requirepeer": "PGREQUIREPEER",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
}


class InvalidWarehouseURL(ValueError):
    pass


@dataclass(frozen=True)
class ConnectionURL:
    user: str
    password: str
    host: str  # a hostname, or a Unix socket directory (absolute path)
    port: int
    database: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> ConnectionURL:
        parts = urlsplit(url)
        scheme = parts.scheme.split("+", 1)[0]
        if scheme not in ("postgresql", "postgres"):
            raise InvalidWarehouseURL(
                f"warehouse URL must start with postgresql://, got {scheme or 'no scheme'}://"
            )
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")]
        params = dict(parse_qsl(parts.query))
        host = params.get("host") or parts.hostname or "localhost"
        try:
            port = int(params.get("port") or parts.port or 5432)
        except ValueError as exc:
            raise InvalidWarehouseURL(f"warehouse URL has an invalid port: {exc}") from None
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise InvalidWarehouseURL("warehouse URL names no database (postgresql://.../DBNAME)")
        return cls(
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            host=host,
            port=port,
            database=database,
            options=tuple(query),
        )

    @property
    def requires_tls(self) -> bool:
        """sslmode require, verify-ca or verify-full: a client without TLS cannot connect."""
        return dict(self.options).get("sslmode") in ("require", "verify-ca", "verify-full")

    @property
    def is_socket(self) -> bool:
        return self.host.startswith("/")

    def with_database(self, database: str) -> ConnectionURL:
        return ConnectionURL(self.user, self.password, self.host, self.port, database, self.options)

    def with_user(self, user: str, password: str) -> ConnectionURL:
        return ConnectionURL(user, password, self.host, self.port, self.database, self.options)

    def _render(self, scheme: str, password: str) -> str:
        # dlt rejects an empty password; local trust auth ignores whatever is given.
        secret = password if password == MASK else quote(password or "unused", safe="")
        auth = f"{quote(self.user, safe='')}:{secret}"
        query = list(self.options)
        if self.is_socket:
            netloc = f"{auth}@localhost"
            query = [("host", self.host), ("port", str(self.port)), *query]
        else:
            netloc = f"{auth}@{self.host}:{self.port}"
        # quote, not quote_plus: libpq does not decode "+" as a space (options=-c a=b -c ...)
        suffix = f"?{urlencode(query, safe='/', quote_via=quote)}" if query else ""
        return f"{scheme}://{netloc}/{quote(self.database, safe='')}{suffix}"

    def url(self) -> str:
        """The full URL, password included: for drivers only, never for output."""
        return self._render("postgresql", self.password)

    def sqlalchemy_url(self) -> str:
        return self._render("postgresql+psycopg2", self.password)

    @property
    def masked(self) -> str:
        """The URL as it may be printed: the password replaced by ****."""
        return self._render("postgresql", MASK if self.password else "")

    def describe(self) -> str:
        where = f"socket {self.host}" if self.is_socket else f"{self.host}:{self.port}"
        return f"host {where}, database {self.database}, user {self.user}"

    def libpq_env(self) -> dict[str, str]:
        """PG* variables for psql and any libpq client (password via env, not argv), with the
        URL's options (sslmode, sslrootcert, ...) unchanged."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        env.update({LIBPQ_ENV[key]: value for key, value in self.options if key in LIBPQ_ENV})
        return env
