import pytest

from dbt_project.runner import dbt_env
from moovitamix.connection_url import ConnectionURL, InvalidWarehouseURL


def test_tcp_url_round_trips_and_masks_password() -> None:
    url = ConnectionURL.parse("postgresql://alice:p%40ss;word@db.example:6543/wh?sslmode=require")
    assert (url.user, url.password, url.host, url.port, url.database) == (
        "alice",
        "p@ss;word",
        "db.example",
        6543,
        "wh",
    )
    assert ConnectionURL.parse(url.url()) == url
    assert "p@ss" not in url.masked and "p%40ss" not in url.masked
    assert url.masked == "postgresql://alice:****@db.example:6543/wh?sslmode=require"
    assert url.sqlalchemy_url().startswith("postgresql+psycopg2://alice:")


def test_socket_url_keeps_the_socket_directory() -> None:
    url = ConnectionURL.parse("postgresql://postgres:unused@localhost/moovitamix?host=/tmp/pg")
    assert url.is_socket and url.host == "/tmp/pg" and url.port == 5432
    assert ConnectionURL.parse(url.url()) == url
    assert url.libpq_env()["PGHOST"] == "/tmp/pg"
    assert dbt_env(url)["MVX_DBT_DATABASE"] == "moovitamix"


def test_password_goes_to_libpq_env_not_argv() -> None:
    url = ConnectionURL.parse("postgresql://u:secret@h/db")
    assert url.libpq_env()["PGPASSWORD"] == "secret"
    assert "secret" not in url.describe()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("mysql://u:p@h/db", "must start with postgresql://"),
        ("postgresql://u:p@h:5432/", "names no database"),
        ("postgresql://u:p@h:notaport/db", "invalid port"),
        ("postgresql://u:p@h/db?sslmod=require", 'invalid URI query parameter: "sslmod"'),
    ],
)
def test_invalid_urls_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(InvalidWarehouseURL, match=message):
        ConnectionURL.parse(raw)
