"""The pipeline only speaks HTTP to the simulator: no pipeline module imports it."""

import ast
from pathlib import Path

from moovitamix.settings import PROJECT_ROOT

PIPELINE_PACKAGES = ("moovitamix", "ingestion", "dbt_project", "expectations", "ml")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_pipeline_module_imports_the_simulator() -> None:
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for package in PIPELINE_PACKAGES
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if any(name.split(".")[0] == "simulator" for name in _imported_modules(path))
    ]
    assert offenders == []
