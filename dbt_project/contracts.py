"""The marts' contracts, from the models' YAML, against what a schema's tables hold.

An incremental mart built by an older version of the project (a column added or renamed since)
would fail its build (`on_schema_change='fail'`), and one that lacks a check constraint added
since would not enforce it on the rows it keeps; the transform step rebuilds such a schema in
full instead, once, and says why. After a full build every mart matches its contract (they are
enforced), so a difference means the project changed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml

MARTS_YML = Path(__file__).resolve().parent / "models" / "marts" / "_marts__models.yml"


def _models(path: Path) -> list[dict]:
    """The marts' model entries of the YAML at `path`."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return document.get("models") or []


def contracted_columns(path: Path = MARTS_YML) -> dict[str, set[str]]:
    """Each mart's columns, as its YAML declares them."""
    return {
        model["name"]: {column["name"] for column in model.get("columns") or []}
        for model in _models(path)
        if model.get("columns")
    }


def contracted_checks(path: Path = MARTS_YML) -> dict[str, set[str]]:
    """Each mart's named check constraints, as its YAML declares them."""
    return {
        model["name"]: {
            constraint["name"]
            for constraint in model.get("constraints") or []
            if constraint["type"] == "check" and constraint.get("name")
        }
        for model in _models(path)
    }


def drifted_tables(
    conn: psycopg.Connection,
    schema: str,
    contracts: dict[str, set[str]] | None = None,
    checks: dict[str, set[str]] | None = None,
) -> dict[str, str]:
    """The tables of `schema` whose columns or named check constraints differ from their
    contract: name -> what differs (one line). A mart not built yet is not drift. `contracts`
    (columns) and `checks` default to the YAML's; given columns alone, checks are not compared."""
    if contracts is None:
        contracts = contracted_columns()
        checks = contracted_checks() if checks is None else checks
    checks = checks or {}
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
    built_checks: dict[str, set[str]] = {}
    for table, name in conn.execute(
        "select c.relname, k.conname from pg_constraint as k "
        "join pg_class as c on c.oid = k.conrelid "
        "join pg_namespace as n on n.oid = c.relnamespace "
        "where n.nspname = %s and k.contype = 'c'",
        (schema,),
    ):
        built_checks.setdefault(table, set()).add(name)
    drift = {}
    for name, wanted in sorted(contracts.items()):
        if name not in built:
            continue
        compared = [("", wanted, built[name])]
        if name in checks:
            compared.append(("check ", checks[name], built_checks.get(name, set())))
        parts = []
        for what, want, have in compared:
            missing, extra = sorted(want - have), sorted(have - want)
            parts += [f"lacks {what}{', '.join(missing)}"] if missing else []
            parts += [f"has {what}{', '.join(extra)} no longer in its contract"] if extra else []
        if parts:
            drift[name] = "; ".join(parts)
    return drift


# Data tests that a mart's enforced constraints already prove on Postgres carry this tag, and
# a Postgres build leaves them out (dbt_project/runner.py): the constraint is checked as the
# rows are written, so the test would scan the table again to find what cannot be there. On
# Spark nothing is enforced and every test runs. `proven_tests` says which tests the tag
# belongs on; a test checks that the YAML tags exactly those.
ENFORCED_TAG = "enforced_by_constraint"


@dataclass(frozen=True)
class DataTest:
    """One generic data test of a mart, as its YAML declares it."""

    model: str
    column: str | None
    name: str  # the generic test: not_null, relationships, ...
    arguments: dict
    tags: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.model}.{self.column or '*'}: {self.name} {self.arguments or ''}".rstrip()


def _data_tests(model: str, column: str | None, entries: list) -> list[DataTest]:
    tests = []
    for entry in entries or []:
        if isinstance(entry, str):
            tests.append(DataTest(model, column, entry, {}, ()))
            continue
        ((name, body),) = entry.items()
        body = body or {}
        tags = (body.get("config") or {}).get("tags") or ()
        tests.append(DataTest(model, column, name, dict(body.get("arguments") or {}), tuple(tags)))
    return tests


def mart_tests(path: Path = MARTS_YML) -> list[DataTest]:
    """Every generic data test of the marts (model-level and column-level)."""
    tests = []
    for model in _models(path):
        tests += _data_tests(model["name"], None, model.get("data_tests"))
        for column in model.get("columns") or []:
            tests += _data_tests(model["name"], column["name"], column.get("data_tests"))
    return tests


@dataclass
class _Constraints:
    not_null: set[str] = field(default_factory=set)
    unique: list[set[str]] = field(default_factory=list)  # primary and unique keys
    foreign: set[tuple[str, str, str]] = field(default_factory=set)  # (column, to, to_column)
    checks: set[str] = field(default_factory=set)  # the conjuncts of every check


def _normal(expression: str) -> str:
    """One spacing, and without parentheses around the whole."""
    expression = " ".join(expression.split())
    while expression.startswith("(") and expression.endswith(")"):
        depth = 0
        for i, char in enumerate(expression):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0 and i < len(expression) - 1:
                return expression  # the first parenthesis closes before the end
        expression = expression[1:-1].strip()
    return expression


def _conjuncts(expression: str) -> set[str]:
    """The top-level `and` terms of a check (not an `and` inside parentheses or a `between`)."""
    terms, depth, start, between = [], 0, 0, False
    text = " ".join(expression.split())
    for match in re.finditer(r"[()]|\b(and|between)\b", text, flags=re.I):
        word = match.group().lower()
        if word in "()":
            depth += 1 if word == "(" else -1
        elif depth > 0:
            continue
        elif word == "between" or between:
            between = word == "between"
        else:
            terms.append(text[start : match.start()])
            start = match.end()
    return {_normal(term) for term in [*terms, text[start:]]}


def _constraints(model: dict) -> _Constraints:
    found = _Constraints()

    def add(constraint: dict, columns: list[str]) -> None:
        kind = constraint["type"]
        if kind == "not_null":
            found.not_null.update(columns)
        elif kind in ("primary_key", "unique"):
            found.unique.append(set(columns))
            if kind == "primary_key":
                found.not_null.update(columns)
        elif kind == "foreign_key" and len(columns) == 1:
            (to_column,) = constraint.get("to_columns") or [None]
            found.foreign.add((columns[0], constraint.get("to"), to_column))
        elif kind == "check":
            found.checks |= _conjuncts(constraint["expression"])

    for constraint in model.get("constraints") or []:
        add(constraint, list(constraint.get("columns") or []))
    for column in model.get("columns") or []:
        for constraint in column.get("constraints") or []:
            add(constraint, [column["name"]])
    return found


def _proven(test: DataTest, constraints: _Constraints, columns: set[str]) -> bool:
    args, column = test.arguments, test.column
    if test.name == "not_null":
        return column in constraints.not_null
    if test.name == "unique":
        return {column} in constraints.unique
    if test.name == "unique_combination_of_columns":
        return set(args["combination_of_columns"]) in constraints.unique
    if test.name == "relationships":
        return (column, args.get("to"), args.get("field")) in constraints.foreign
    if test.name == "accepted_range":  # nulls pass both the test and a check
        if args.get("inclusive", True) is False:
            return False
        bounds = [(">=", args.get("min_value")), ("<=", args.get("max_value"))]
        wanted = {f"{column} {op} {value}" for op, value in bounds if value is not None}
        return bool(wanted) and wanted <= constraints.checks
    if test.name == "expression_is_true":  # a null fails the test but passes a check
        expression = _normal(f"{column or ''} {args['expression']}")
        never_null = re.sub(r"\b[a-z_][a-z0-9_]*\s+is\s+(not\s+)?null\b", "", expression)
        named = set(re.findall(r"[a-z_][a-z0-9_]*", never_null)) & columns
        return _conjuncts(expression) <= constraints.checks and named <= constraints.not_null
    return False


def proven_tests(path: Path = MARTS_YML) -> list[DataTest]:
    """The marts' data tests that their enforced constraints prove on Postgres: not_null on a
    not-null or key column, unique on a key, relationships along a foreign key, a range or an
    expression whose terms are among a check's conjuncts (over not-null columns, or tested with
    `is [not] null`, only: a null passes a check but fails the test)."""
    models = {model["name"]: model for model in _models(path)}
    constraints = {name: _constraints(model) for name, model in models.items()}
    columns = {
        name: {column["name"] for column in model.get("columns") or []}
        for name, model in models.items()
    }
    return [
        test
        for test in mart_tests(path)
        if _proven(test, constraints[test.model], columns[test.model])
    ]
