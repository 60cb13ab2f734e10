"""One parsed warehouse URL, rendered for each tool that needs it (libpq, SQLAlchemy, dlt); the
password leaves it unmasked only towards a driver: `masked` is what logs see."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from moovitamix.errors import one_line

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
        """A postgresql:// URL, read by libpq's own parser (percent-encoding, `?host=` sockets,
        unknown parameters refused)."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
            raise InvalidWarehouseURL(
                f"warehouse URL must start with postgresql://, got {scheme if sep else 'no scheme'}://"
            )
        try:
            params = conninfo_to_dict(f"postgresql://{rest}")
        except psycopg.ProgrammingError as exc:
            raise InvalidWarehouseURL(one_line(exc)) from None
        port = params.pop("port", None) or "5432"
        if not str(port).isdigit():
            raise InvalidWarehouseURL(f"warehouse URL has an invalid port: {port!r}")
        database = params.pop("dbname", None)
        if not database:
            raise InvalidWarehouseURL("warehouse URL names no database (postgresql://.../DBNAME)")
        return cls(
            user=str(params.pop("user", None) or "postgres"),
            password=str(params.pop("password", None) or ""),
            host=str(params.pop("host", None) or "localhost"),
            port=int(port),
            database=str(database),
            options=tuple((key, str(value)) for key, value in params.items()),
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
        """PG* variables for psql and any libpq client (password via env, not argv): each of
        the URL's parameters (sslmode, sslrootcert, ...) as the variable libpq reads it from."""
        env_of = {
            option.keyword.decode(): option.envvar.decode()
            for option in pq.Conninfo.get_defaults()
            if option.envvar
        }
        params = {"host": self.host, "port": str(self.port), "user": self.user}
        params |= {"dbname": self.database, "password": self.password, **dict(self.options)}
        return {env_of[key]: value for key, value in params.items() if value and key in env_of}
