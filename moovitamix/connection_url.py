"""One parsed warehouse URL, rendered for each tool that needs it (libpq, SQLAlchemy, dbt, dlt).

Passwords never leave this object unmasked except towards a driver: `masked` is what logs see.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

MASK = "****"


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
        """PG* variables for psql and any libpq client (password via env, not argv)."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def dbt_env(self) -> dict[str, str]:
        """The variables `dbt_project/profiles.yml` reads with env_var()."""
        return {
            "MVX_DBT_HOST": self.host,
            "MVX_DBT_PORT": str(self.port),
            "MVX_DBT_USER": self.user,
            "MVX_DBT_PASSWORD": self.password,
            "MVX_DBT_DATABASE": self.database,
        }
