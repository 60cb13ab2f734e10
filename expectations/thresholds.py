"""The checks' limits and severities, read from `thresholds.toml` (what an operator edits).

A check's table holds one limit per severity (`warning = ...`, `error = ...`) and any parameters
of the check; `[metrics]` configures what each run records for the day-over-day checks.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

Severity = Literal["error", "warning"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning")
DEFAULT_PATH = Path(__file__).resolve().parent / "thresholds.toml"


class ThresholdsError(ValueError):
    """thresholds.toml is missing a check, or holds something that is not a limit."""


@dataclass(frozen=True)
class CheckLimits:
    name: str  # "<layer>.<check>", e.g. "raw.rejected_share"
    levels: Mapping[Severity, float]  # severity -> limit
    params: Mapping[str, object] = field(default_factory=dict)

    @property
    def check(self) -> str:
        """The check's name without its layer: the expectation's name in the results."""
        return self.name.split(".", 1)[1]

    def param(self, key: str, default: float) -> float:
        value = self.params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ThresholdsError(f"{self.name}.{key} must be a number, got {value!r}")
        return float(value)


@dataclass(frozen=True)
class Thresholds:
    checks: Mapping[str, CheckLimits]
    volume_tables: tuple[str, ...]
    path: Path | None = None

    def __getitem__(self, name: str) -> CheckLimits:
        try:
            return self.checks[name]
        except KeyError:
            where = self.path or "thresholds"
            raise ThresholdsError(f"{where} has no [{name}] table") from None


def _limits(name: str, table: Mapping[str, object]) -> CheckLimits:
    levels: dict[Severity, float] = {}
    params: dict[str, object] = {}
    for key, value in table.items():
        if key in SEVERITIES:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ThresholdsError(f"[{name}] {key} must be a number, got {value!r}")
            levels[cast(Severity, key)] = float(value)
        else:
            params[key] = value
    if not levels:
        raise ThresholdsError(f"[{name}] sets neither `error` nor `warning`")
    return CheckLimits(name, levels, params)


def parse_thresholds(data: Mapping[str, object], path: Path | None = None) -> Thresholds:
    checks: dict[str, CheckLimits] = {}
    metrics: Mapping[str, object] = {}
    for layer, tables in data.items():
        if not isinstance(tables, Mapping):
            raise ThresholdsError(f"{layer} must be a table, got {tables!r}")
        if layer == "metrics":
            metrics = tables
            continue
        for check, table in tables.items():
            if not isinstance(table, Mapping):
                raise ThresholdsError(f"[{layer}.{check}] must be a table")
            checks[f"{layer}.{check}"] = _limits(f"{layer}.{check}", table)
    tables = metrics.get("volume_tables", [])
    if not isinstance(tables, list) or not all(
        isinstance(t, str) and t.count(".") == 1 for t in tables
    ):
        raise ThresholdsError("[metrics] volume_tables must list tables as 'schema.table'")
    return Thresholds(checks, tuple(tables), path)


def load_thresholds(path: Path = DEFAULT_PATH) -> Thresholds:
    with path.open("rb") as file:
        return parse_thresholds(tomllib.load(file), path)
