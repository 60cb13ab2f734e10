"""The checks' limits, severities, wording and parameters, read from `thresholds.toml` (what an
operator edits); `[metrics]` says what each run records for the day-over-day checks."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

Severity = Literal["error", "warning"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning")
WORDING = ("description", "alert")
DEFAULT_PATH = Path(__file__).resolve().parent / "thresholds.toml"


class ThresholdsError(ValueError):
    """thresholds.toml is missing a check or its description, or holds something that is not a
    limit."""


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ThresholdsError(f"{where} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CheckLimits:
    name: str  # "<layer>.<check>", e.g. "raw.rejected_share"
    levels: Mapping[Severity, float]
    description: str  # `{table}` stands for the table checked
    alert: str = ""  # the alert's title; empty: the description
    params: Mapping[str, object] = field(default_factory=dict)

    @property
    def check(self) -> str:
        """The name without its layer: the expectation's name in the results."""
        return self.name.split(".", 1)[1]

    def param(self, key: str, default: float) -> float:
        return _number(self.params.get(key, default), f"{self.name}.{key}")


@dataclass(frozen=True)
class Thresholds:
    checks: Mapping[str, CheckLimits]
    volume_tables: tuple[str, ...]
    path: Path | None = None

    def __getitem__(self, name: str) -> CheckLimits:
        if name not in self.checks:
            raise ThresholdsError(f"{self.path or 'thresholds'} has no [{name}] table")
        return self.checks[name]


def parse_thresholds(data: Mapping[str, object], path: Path | None = None) -> Thresholds:
    checks: dict[str, CheckLimits] = {}
    for layer, tables in data.items():
        if not isinstance(tables, Mapping):
            raise ThresholdsError(f"{layer} must be a table, got {tables!r}")
        for check, table in tables.items() if layer != "metrics" else ():
            name = f"{layer}.{check}"
            if not isinstance(table, Mapping):
                raise ThresholdsError(f"[{name}] must be a table")
            levels = {
                cast(Severity, k): _number(v, f"[{name}] {k}")
                for k, v in table.items()
                if k in SEVERITIES
            }
            if not levels:
                raise ThresholdsError(f"[{name}] sets neither `error` nor `warning`")
            if not isinstance(table.get("description"), str):
                raise ThresholdsError(f"[{name}] has no `description`")
            params = {k: v for k, v in table.items() if k not in (*SEVERITIES, *WORDING)}
            alert = str(table.get("alert", ""))
            checks[name] = CheckLimits(name, levels, table["description"], alert, params)
    metrics = data.get("metrics", {})
    volume = metrics.get("volume_tables", []) if isinstance(metrics, Mapping) else None
    if not isinstance(volume, list) or not all(
        isinstance(t, str) and t.count(".") == 1 for t in volume
    ):
        raise ThresholdsError("[metrics] volume_tables must list tables as 'schema.table'")
    return Thresholds(checks, tuple(volume), path)


def load_thresholds(path: Path = DEFAULT_PATH) -> Thresholds:
    with path.open("rb") as file:
        return parse_thresholds(tomllib.load(file), path)
