"""What a dbt invocation did, as plain data: one row per node, a table, a one-line summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

BAD_STATUSES = frozenset({"error", "fail", "runtime error"})  # dbt's; warn is not bad
TEST_TYPES = frozenset({"test", "unit_test"})
MATERIALIZATIONS = {"test": "test", "unit_test": "unit", "operation": "hook"}


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    name: str
    resource_type: str  # model, seed, test, unit_test, operation, source, ...
    materialization: str  # view, table, incremental, seed, test, unit, hook
    status: str  # success, error, skipped, pass, fail, warn, ...
    seconds: float
    rows_affected: int | None = None  # models and seeds: rows written, when dbt knows
    failures: int | None = None  # tests: failing rows
    message: str = ""
    age_seconds: float | None = None  # source freshness: time since the last new row

    @property
    def is_test(self) -> bool:
        return self.resource_type in TEST_TYPES

    @property
    def is_bad(self) -> bool:
        return self.status in BAD_STATUSES

    @classmethod
    def from_dbt(cls, result: Any) -> NodeResult:
        """From a dbt RunResult (`dbtRunnerResult.result.results[i]`)."""
        node = result.node
        kind = str(getattr(node.resource_type, "value", node.resource_type))
        materialized = getattr(getattr(node, "config", None), "materialized", "")
        response = result.adapter_response or {}
        rows = response.get("rows_affected") if isinstance(response, dict) else None
        return cls(
            unique_id=node.unique_id,
            name=node.name,
            resource_type=kind,
            materialization=MATERIALIZATIONS.get(kind) or str(materialized or kind),
            status=str(getattr(result.status, "value", result.status)),
            seconds=float(result.execution_time or 0.0),
            rows_affected=rows if isinstance(rows, int) and rows >= 0 else None,
            failures=result.failures if kind in TEST_TYPES else None,
            message=str(result.message or ""),
            age_seconds=getattr(result, "age", None),
        )


@dataclass
class BuildResult:
    command: str
    run_id: str
    success: bool
    seconds: float
    nodes: list[NodeResult] = field(default_factory=list)
    error: str | None = None  # dbt itself failed (bad project, unreachable database)

    @property
    def models(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.resource_type in ("model", "seed", "snapshot")]

    @property
    def tests(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.is_test]

    @property
    def sources(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.resource_type == "source"]

    @property
    def failed(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.is_bad]

    @property
    def warned(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status == "warn"]

    def rows(self, name: str) -> int | None:
        """Rows written by the model or seed `name` in this build (None if not built)."""
        return next((n.rows_affected for n in self.models if n.name == name), None)

    def summary(self) -> str:
        """One line: what ran, and the first failure if any."""
        if self.error:
            return f"dbt {self.command} failed: {self.error}"
        line = f"dbt {self.command} {'OK' if self.success else 'FAILED'} in {self.seconds:.1f}s"
        if self.sources:
            line += f": {len(self.sources)} sources ({_counts(self.sources)})"
        elif self.nodes:
            tests = _counts(self.tests) or "none"
            line += f": {len(self.models)} models/seeds, {len(self.tests)} tests ({tests})"
        if self.failed:
            first = self.failed[0]
            line += f"; {len(self.failed)} failed, first: {first.name}: "
            line += _first_line(first.message)
        elif not self.success:
            line += "; see dbt_project/logs/dbt.log"
        return line

    def freshness_table(self) -> str:
        """Sources checked: status and hours since their latest row."""
        return "\n".join(
            f"{n.name:<24} {n.status:<14} "
            + ("-" if n.age_seconds is None else f"{n.age_seconds / 3600:.1f} h")
            for n in self.sources
        )

    def table(self) -> str:
        """Models and seeds built, with rows and seconds; then what did not pass."""
        rows = [("model", "materialized", "rows", "status", "seconds")] + [
            (n.name, n.materialization, "-" if n.rows_affected is None else f"{n.rows_affected:,}",
             n.status, f"{n.seconds:.2f}")
            for n in self.models
        ]  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = [
            "  ".join(
                cell.rjust(width) if i in (2, 4) else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        for node in [*self.warned, *[n for n in self.failed if n.is_test]]:
            count = f" ({node.failures} rows)" if node.failures else ""
            lines.append(f"{node.status.upper()} {node.name}{count}: {_first_line(node.message)}")
        lines += [f"ERROR {n.name}: {_first_line(n.message)}" for n in self.failed if not n.is_test]
        return "\n".join(lines)


def _counts(nodes: list[NodeResult]) -> str:
    counts = sorted(Counter(n.status for n in nodes).items())
    return ", ".join(f"{count} {status}" for status, count in counts)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
