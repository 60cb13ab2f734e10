"""How the project creates a contracted table on Postgres (macros/table_constraints.sql): as
`create table ... as select` (which Postgres may plan in parallel), with the contract's types,
order, not-null and check constraints as dbt's create-then-insert would give, and a row that
breaks one failing the build with nothing half-published. A one-model project that uses the
project's macro file, on the real test servers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psycopg
import pytest
import yaml
from dbt.cli.main import dbtRunner

from moovitamix.connection_url import ConnectionURL
from tests.conftest import create_warehouse

pytestmark = pytest.mark.integration

PROJECT_MACROS = Path(__file__).resolve().parents[2] / "dbt_project" / "macros"
CONTRACT = {
    "version": 2,
    "models": [
        {
            "name": "payments",
            "config": {
                "contract": {"enforced": True},
                "post_hook": ["{{ add_contract_constraints() }}", "{{ add_primary_key() }}"],
            },
            "constraints": [
                {"type": "primary_key", "columns": ["payment_id"]},
                {"type": "check", "name": "ck_payments_amount", "expression": "amount >= 0"},
            ],
            "columns": [
                {
                    "name": "payment_id",
                    "data_type": "bigint",
                    "constraints": [{"type": "not_null"}],
                },
                {"name": "amount", "data_type": "integer", "constraints": [{"type": "not_null"}]},
                {"name": "paid_at", "data_type": "timestamp with time zone"},
                {"name": "tags", "data_type": "text[]"},
            ],
        }
    ],
}
# the select's columns in another order than the contract's, one of them wider than declared
MODEL = """
select
    cast('2026-01-01' as timestamptz) as paid_at,
    cast(array['a'] as text[]) as tags,
    cast({{ var('amount') }} as integer) as amount,
    cast({{ var('payment_id') }} as bigint) as payment_id
"""


@pytest.fixture
def project(pg_admin_url: ConnectionURL, tmp_path: Path) -> tuple[Path, ConnectionURL]:
    url = create_warehouse(pg_admin_url, "mvx_ctas")
    for folder in ("models", "macros"):
        (tmp_path / folder).mkdir()
    shutil.copy(PROJECT_MACROS / "table_constraints.sql", tmp_path / "macros")
    (tmp_path / "models" / "payments.sql").write_text(MODEL, encoding="utf-8")
    (tmp_path / "models" / "payments.yml").write_text(yaml.safe_dump(CONTRACT), encoding="utf-8")
    (tmp_path / "dbt_project.yml").write_text(
        yaml.safe_dump(
            {
                "name": "ctas",
                "version": "1.0.0",
                "config-version": 2,
                "profile": "ctas",
                "flags": {"send_anonymous_usage_stats": False},
                "models": {"ctas": {"+materialized": "table"}},
            }
        ),
        encoding="utf-8",
    )
    target = {
        "type": "postgres",
        "host": url.host,
        "port": url.port,
        "user": url.user,
        "password": url.password,
        "dbname": url.database,
        "schema": "marts",
        "threads": 1,
    }
    (tmp_path / "profiles.yml").write_text(
        yaml.safe_dump({"ctas": {"target": "test", "outputs": {"test": target}}}),
        encoding="utf-8",
    )
    return tmp_path, url


def _run(project: Path, payment_id: str, amount: str) -> tuple[bool, str, int | None]:
    """dbt run of the one model; (success, the messages of what failed, the rows dbt says it
    wrote)."""
    result = dbtRunner().invoke(
        [
            "run",
            "--project-dir", str(project),
            "--profiles-dir", str(project),
            "--target-path", str(project / "target"),
            "--log-path", str(project / "logs"),
            "--vars", yaml.safe_dump({"payment_id": payment_id, "amount": amount}),
            "--quiet",
        ]
    )  # fmt: skip
    messages = " ".join(
        str(node.message) for node in (result.result or []) if node.status != "success"
    )
    if result.exception is not None:
        messages += f" {result.exception}"
    rows = [node.adapter_response.get("rows_affected") for node in (result.result or [])]
    return result.success, messages, rows[0] if rows else None


def _rows(url: ConnectionURL) -> list[tuple]:
    with psycopg.connect(url.url()) as conn:
        return conn.execute("select payment_id, amount from marts.payments").fetchall()


@pytest.mark.pg_servers("embedded", "system")
def test_a_contracted_table_is_created_as_select_with_its_whole_contract(project) -> None:
    path, url = project
    assert _run(path, "7", "10") == (True, "", 1)  # the rows written, as dbt's insert said
    statement = (path / "target" / "run" / "ctas" / "models" / "payments.sql").read_text()
    assert re.search(r"create table \S+payments__dbt_tmp\S* as \(", statement), statement
    assert "insert into" not in statement
    with psycopg.connect(url.url()) as conn:
        columns = conn.execute(
            "select attname::text, format_type(atttypid, atttypmod), attnotnull"
            " from pg_attribute where attrelid = 'marts.payments'::regclass and attnum > 0"
            " and not attisdropped order by attnum"
        ).fetchall()
        constraints = conn.execute(
            "select conname::text, contype::text, pg_get_constraintdef(oid)"
            " from pg_constraint where conrelid = 'marts.payments'::regclass"
            " and contype in ('c', 'p') order by contype"
        ).fetchall()
    assert columns == [
        ("payment_id", "bigint", True),
        ("amount", "integer", True),
        ("paid_at", "timestamp with time zone", False),
        ("tags", "text[]", False),
    ]
    assert [(name, kind) for name, kind, _ in constraints] == [
        ("ck_payments_amount", "c"),
        ("payments_pkey", "p"),
    ]
    assert constraints[0][2] == "CHECK ((amount >= 0))"
    assert _rows(url) == [(7, 10)]


@pytest.mark.pg_servers("embedded", "system")
@pytest.mark.parametrize(
    ("payment_id", "amount", "error"),
    [
        ("8", "-1", 'check constraint "ck_payments_amount"'),
        ("null", "5", 'column "payment_id" of relation "payments" contains null values'),
    ],
)
def test_a_row_that_breaks_the_contract_fails_and_the_table_stays_as_it_was(
    project, payment_id: str, amount: str, error: str
) -> None:
    path, url = project
    assert _run(path, "7", "10")[0]
    success, messages, _ = _run(path, payment_id, amount)
    assert not success
    assert error in messages, messages
    assert _rows(url) == [(7, 10)]  # the published table untouched, no half-built one left
    with psycopg.connect(url.url()) as conn:
        tables = conn.execute(
            "select tablename::text from pg_tables where schemaname = 'marts'"
        ).fetchall()
    assert tables == [("payments",)]


def test_a_select_of_other_types_than_the_contract_still_fails_its_check(project) -> None:
    path, url = project
    (path / "models" / "payments.sql").write_text(
        MODEL.replace("cast({{ var('amount') }} as integer)", "'{{ var('amount') }}'"),
        encoding="utf-8",
    )
    success, messages, _ = _run(path, "7", "10")
    assert not success
    assert "contract" in messages.lower() and "amount" in messages, messages
    with psycopg.connect(url.url()) as conn:
        assert conn.execute("select to_regclass('marts.payments')").fetchone() == (None,)


def test_without_the_hook_a_table_keeps_dbts_create_then_insert(project) -> None:
    path, url = project
    contract = yaml.safe_load((path / "models" / "payments.yml").read_text())
    contract["models"][0]["config"]["post_hook"] = ["{{ add_primary_key() }}"]
    (path / "models" / "payments.yml").write_text(yaml.safe_dump(contract), encoding="utf-8")
    assert _run(path, "7", "10") == (True, "", 1)
    statement = (path / "target" / "run" / "ctas" / "models" / "payments.sql").read_text()
    assert "insert into" in statement
    with psycopg.connect(url.url()) as conn:
        assert conn.execute(
            "select count(*) from pg_constraint where conrelid = 'marts.payments'::regclass"
            " and conname = 'ck_payments_amount'"
        ).fetchone() == (1,)
