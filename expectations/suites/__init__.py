"""The suites, as code: each reads one batch (a table, or a raw table's current rows) with its
checks. The `data` suites run after the transform, the `recommendations` one after the ML step;
a suite whose tables do not exist yet is skipped, not failed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from expectations.checks import Check
from expectations.dialect import POSTGRES, Dialect
from expectations.thresholds import Thresholds
from moovitamix.publication import LIVE, Relations


class UnknownSuite(ValueError):
    pass


class Stage(StrEnum):
    DATA = "data"
    RECOMMENDATIONS = "recommendations"
    ALL = "all"


@dataclass(frozen=True)
class BuildContext:
    run_id: str
    thresholds: Thresholds
    rel: Relations = field(default=LIVE)  # where the tables are (the daily run's candidates)
    dialect: Dialect = field(default=POSTGRES)


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    table: str  # the batch: this table, or its current rows when `current`
    build: Callable[[BuildContext], list[Check]]
    also_reads: tuple[str, ...] = ()
    stage: Stage = Stage.DATA
    current: bool = False
    postgres_only: bool = False  # its tables live in Postgres on either engine: not on Spark

    def runs_on(self, dialect: Dialect) -> bool:
        return dialect is POSTGRES or not self.postgres_only

    @property
    def requires(self) -> tuple[str, ...]:
        """The tables that must exist for the suite to run."""
        return (self.table, *self.also_reads)

    def in_stage(self, stage: Stage) -> bool:
        return stage is Stage.ALL or self.stage is stage

    def batch(self, ctx: BuildContext) -> str:
        """What `{batch}` stands for in the checks' queries."""
        table = ctx.rel(self.table)
        if self.current:
            return f"(select * from {table} where {ctx.dialect.current_rows(self.table)})"
        return table


def all_suites() -> tuple[SuiteSpec, ...]:
    from expectations.suites import marts, privacy, raw, recommendations

    return (*raw.SUITES, *marts.SUITES, *privacy.SUITES, *recommendations.SUITES)
