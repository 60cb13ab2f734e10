"""The suites, as code: each one validates one data asset (a table, or a query over one) with
the checks of expectations/checks.py, limits from thresholds.toml.

Stages: the `data` suites (raw, marts) run after the transform and before ML, so that an error
stops the run before anything is trained or published; the `recommendations` suite checks what
the ML step published, so it runs after it. A suite whose tables do not exist yet (a fresh
warehouse, ML never run) is skipped, not failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from expectations.dialect import POSTGRES, Dialect
from moovitamix.publication import LIVE, Relations

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

    from expectations.thresholds import Thresholds


class UnknownSuite(ValueError):
    pass


class Stage(StrEnum):
    DATA = "data"
    RECOMMENDATIONS = "recommendations"
    ALL = "all"


@dataclass(frozen=True)
class AssetSpec:
    """A GX data asset of the warehouse datasource: a whole table, or a query."""

    name: str
    table: str | None = None  # "schema.table": `{batch}` is the table itself
    query: str | None = None  # `{batch}` is this query (the checks alias it: checks.py)
    current_of: str | None = None  # the raw table whose current rows the query selects


@dataclass(frozen=True)
class BuildContext:
    run_id: str
    thresholds: Thresholds
    # where the tables are: the daily run audits its candidate marts and staged lists
    # (moovitamix/publication.py); suites name tables through `ctx.rel(...)`
    rel: Relations = field(default=LIVE)
    # the engine's SQL differences (expectations/dialect.py)
    dialect: Dialect = field(default=POSTGRES)


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    asset: AssetSpec
    stage: Stage
    requires: tuple[str, ...]  # tables that must exist for the suite to run
    build: Callable[[BuildContext], list[Expectation]]

    def in_stage(self, stage: Stage) -> bool:
        return stage is Stage.ALL or self.stage is stage

    def located(self, rel: Relations) -> SuiteSpec:
        """This suite on the tables `rel` points at; a moved asset gets its own GX name."""
        table = rel(self.asset.table) if self.asset.table else None
        asset = self.asset
        if table != self.asset.table:
            asset = replace(asset, name=f"{asset.name}__candidate", table=table)
        return replace(self, asset=asset, requires=tuple(rel(name) for name in self.requires))


def all_suites() -> tuple[SuiteSpec, ...]:
    from expectations.suites import marts, raw, recommendations

    return (*raw.SUITES, *marts.SUITES, *recommendations.SUITES)
