"""The layers: the pipeline only speaks HTTP to the simulator; the core (moovitamix) imports no
step package; only the orchestrator, on top, imports the steps' packages together."""

import ast
from pathlib import Path

from moovitamix.settings import PROJECT_ROOT

CORE = "moovitamix"
STEP_PACKAGES = ("ingestion", "dbt_project", "expectations", "ml")
ORCHESTRATOR = "orchestrator"


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _importers(packages: tuple[str, ...], forbidden: set[str]) -> list[str]:
    return [
        str(path.relative_to(PROJECT_ROOT))
        for package in packages
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if any(name.split(".")[0] in forbidden for name in _imported_modules(path))
    ]


def test_no_pipeline_module_imports_the_simulator() -> None:
    assert _importers((CORE, *STEP_PACKAGES, ORCHESTRATOR), {"simulator"}) == []


def test_the_core_imports_no_step_and_no_step_imports_the_orchestrator() -> None:
    assert _importers((CORE,), {*STEP_PACKAGES, ORCHESTRATOR}) == []
    assert _importers(STEP_PACKAGES, {ORCHESTRATOR}) == []
    # the scan sees imports inside functions too: the orchestrator's of every step package
    assert _importers((ORCHESTRATOR,), set(STEP_PACKAGES)) != []
