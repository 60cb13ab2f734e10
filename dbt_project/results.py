"""What a dbt invocation did, as plain data: one row per node, a table, a one-line summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# dbt's statuses that mean something went wrong (warn does not).
BAD_STATUSES = frozenset({"error", "fail", "runtime error"})
TEST_TYPES = frozenset({"test", "unit_test"})


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    name: str
    resource_type: str  # model, seed, test, unit_test, operation, ...
    materialization: str  # view, table, incremental, seed, test, unit, hook
    status: str  # success, error, skipped, pass, fail, warn
    seconds: float
    rows_affected: int | None = None  # models and seeds: rows written; None when unknown
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
        resource_type = str(getattr(node.resource_type, "value", node.resource_type))
        config = getattr(node, "config", None)
        materialization = {
            "test": "test",
            "unit_test": "unit",
            "operation": "hook",
        }.get(resource_type) or str(getattr(config, "materialized", "") or resource_type)
        response = result.adapter_response or {}
        rows = response.get("rows_affected") if isinstance(response, dict) else None
        return cls(
            unique_id=node.unique_id,
            name=node.name,
            resource_type=resource_type,
            materialization=materialization,
            status=str(getattr(result.status, "value", result.status)),
            seconds=float(result.execution_time or 0.0),
            rows_affected=rows if isinstance(rows, int) and rows >= 0 else None,
            failures=result.failures if resource_type in TEST_TYPES else None,
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
    error: str | None = None  # set when dbt itself failed (bad project, unreachable database)

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
        """Rows affected by the model or seed `name` in this build (None if not built)."""
        for node in self.models:
            if node.name == name:
                return node.rows_affected
        return None

    def summary(self) -> str:
        """One line: what ran, and the first failure if any."""
        if self.error:
            return f"dbt {self.command} failed: {self.error}"
        counts: dict[str, int] = {}
        for node in self.tests:
            counts[node.status] = counts.get(node.status, 0) + 1
        tests = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        outcome = f"dbt {self.command} {'OK' if self.success else 'FAILED'} in {self.seconds:.1f}s"
        if not self.nodes:
            line = outcome
        elif self.sources:
            states = Counter(node.status for node in self.sources)
            line = (
                f"{outcome}: {len(self.sources)} sources ("
                + ", ".join(f"{count} {status}" for status, count in sorted(states.items()))
                + ")"
            )
        else:
            line = (
                f"{outcome}: {len(self.models)} models/seeds, "
                f"{len(self.tests)} tests ({tests or 'none'})"
            )
        failed = self.failed
        if failed:
            first = failed[0]
            line += f"; {len(failed)} failed, first: {first.name}: {_first_line(first.message)}"
        elif not self.success:
            line += "; see dbt_project/logs/dbt.log"
        return line

    def freshness_table(self) -> str:
        """Sources checked: status and hours since their latest row."""
        lines = []
        for node in self.sources:
            age = "-" if node.age_seconds is None else f"{node.age_seconds / 3600:.1f} h"
            lines.append(f"{node.name:<24} {node.status:<14} {age}")
        return "\n".join(lines)

    def table(self) -> str:
        """Models and seeds built, with rows and seconds; then the tests that did not pass."""
        header = ("model", "materialized", "rows", "status", "seconds")
        rows = [
            (
                n.name,
                n.materialization,
                "-" if n.rows_affected is None else f"{n.rows_affected:,}",
                n.status,
                f"{n.seconds:.2f}",
            )
            for n in self.models
        ]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.rjust(w) if i in (2, 4) else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in [header, *rows]
        ]
        for node in [*self.warned, *[n for n in self.failed if n.is_test]]:
            count = f" ({node.failures} rows)" if node.failures else ""
            lines.append(f"{node.status.upper()} {node.name}{count}: {_first_line(node.message)}")
        for node in self.failed:
            if not node.is_test:
                lines.append(f"ERROR {node.name}: {_first_line(node.message)}")
        return "\n".join(lines)


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""
