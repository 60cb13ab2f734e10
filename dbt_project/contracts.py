"""The marts' contracted columns, from the models' YAML, against what a schema's tables hold.

An incremental mart built by an older version of the project (a column added or renamed since)
would fail its build (`on_schema_change='fail'`); the transform step rebuilds such a schema in
full instead, once, and says why. After a full build every mart matches its contract (they are
enforced), so a difference means the project changed."""

from __future__ import annotations

from pathlib import Path

import psycopg
import yaml

MARTS_YML = Path(__file__).resolve().parent / "models" / "marts" / "_marts__models.yml"


def contracted_columns(path: Path = MARTS_YML) -> dict[str, set[str]]:
    """Each mart's columns, as its YAML declares them."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {
        model["name"]: {column["name"] for column in model.get("columns") or []}
        for model in document.get("models") or []
        if model.get("columns")
    }


def drifted_tables(
    conn: psycopg.Connection, schema: str, contracts: dict[str, set[str]] | None = None
) -> dict[str, str]:
    """The tables of `schema` whose columns differ from their contract: name -> what differs
    (one line). A mart not built yet is not drift."""
    contracts = contracted_columns() if contracts is None else contracts
    built: dict[str, set[str]] = {}
    for table, column in conn.execute(  # the catalog: whatever the role may read
        "select c.relname, a.attname from pg_attribute as a "
        "join pg_class as c on c.oid = a.attrelid "
        "join pg_namespace as n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind in ('r', 'p', 'v', 'm') "
        "and a.attnum > 0 and not a.attisdropped",
        (schema,),
    ):
        built.setdefault(table, set()).add(column)
    drift = {}
    for name, wanted in sorted(contracts.items()):
        if name not in built or built[name] == wanted:
            continue
        missing, extra = sorted(wanted - built[name]), sorted(built[name] - wanted)
        parts = [f"lacks {', '.join(missing)}"] if missing else []
        parts += [f"has {', '.join(extra)} no longer in its contract"] if extra else []
        drift[name] = "; ".join(parts)
    return drift
