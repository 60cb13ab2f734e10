"""The project uses its tools (dlt, dbt, Great Expectations, implicit, Spark) through their
public, documented API only: an upgrade of a tool must not break it silently.

Two checks over every Python file of the repository, by its syntax tree:
- imports from a tool come from the modules its documentation presents (the allow-list below,
  one line of why each);
- no private attribute (`x._name`, `getattr(x, "_name")`) is reached that the project does not
  define itself: a private name of ours is fine, one of a tool is not;
- a subclass of a tool's class defines no `_method` (it would override, or later collide with,
  one of the tool's private ones).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".git", ".data", "target", "logs", "dbt_packages", "node_modules"}
TOOLS = ("dlt", "dbt", "great_expectations", "implicit", "pyspark")

# Module prefixes each tool documents for users (reference pages and examples).
PUBLIC = (
    "dlt.sources.helpers",  # requests helper and rest_client (RESTClient, paginators)
    "dlt.sources.rest_api",  # the declarative REST API source
    "dlt.sources.filesystem",  # the filesystem source/readers
    "dlt.destinations",  # destination factories: postgres, duckdb, filesystem
    "dlt.common.pipeline",  # LoadInfo, returned by pipeline.run()
    "dlt.common.schema.typing",  # column/table schema hints in type annotations
    "dlt.pipeline.exceptions",  # PipelineStepFailed, raised by pipeline.run()
    "dlt.common.schema.exceptions",  # DataValidationError, the schema contract's failure
    "dlt.common.normalizers.naming",  # naming conventions, documented for custom naming
    "dbt.cli.main",  # dbtRunner: dbt's documented programmatic invocation
    "dbt.artifacts.schemas",  # result objects returned by dbtRunner
    "great_expectations",  # `import great_expectations as gx`: context, expectations, core
    "implicit",  # models (implicit.als, implicit.cpu.als), nearest_neighbours, evaluation, topk
    "pyspark",  # the whole pyspark API is public (sql, ml, errors, StorageLevel)
)
# Public as themselves only: `import dlt` (dlt.source, dlt.resource, dlt.pipeline, dlt.mark).
EXACT = ("dlt",)
PRIVATE_MODULES = ("dlt.extract", "dlt.normalize", "dlt.load", "dlt.common.storages")


def python_files() -> list[Path]:
    return [
        path for path in ROOT.rglob("*.py") if not SKIP.intersection(path.relative_to(ROOT).parts)
    ]


def trees() -> dict[Path, ast.AST]:
    return {path: ast.parse(path.read_text(), str(path)) for path in python_files()}


def tool_names(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, module, local name) of every name the file imports from a tool."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module, a.asname or a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, a.asname or a.name.split(".")[0]) for a in node.names]
    return [name for name in found if name[1].split(".")[0] in TOOLS]


def tool_imports(tree: ast.AST) -> list[tuple[int, str]]:
    return list(dict.fromkeys((line, module) for line, module, _ in tool_names(tree)))


def is_public(module: str) -> bool:
    if any(part.startswith("_") for part in module.split(".")):
        return False
    if any(module == p or module.startswith(p + ".") for p in PRIVATE_MODULES):
        return False
    return module in EXACT or any(module == p or module.startswith(p + ".") for p in PUBLIC)


def own_private_names(all_trees: dict[Path, ast.AST]) -> set[str]:
    """Every `_name` the project itself defines: functions, classes, attributes, variables."""
    names: set[str] = set()
    for tree in all_trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
    return {name for name in names if name.startswith("_")}


def foreign_private_attributes(tree: ast.AST, own: set[str]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            name = node.args[1].value
        if name and name.startswith("_") and not name.startswith("__") and name not in own:
            found.append((node.lineno, name))
    return found


def private_overrides(tree: ast.AST) -> list[tuple[int, str]]:
    """`_method`s defined in a class whose base was imported from a tool."""
    from_tools = {local for _, _, local in tool_names(tree)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        roots = set()
        for base in node.bases:
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name):
                roots.add(base.id)
        if roots & from_tools:
            found += [
                (item.lineno, item.name)
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                and item.name.startswith("_")
                and not item.name.startswith("__")
            ]
    return found


def test_tools_are_imported_from_their_public_modules() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path, tree in trees().items()
        for line, module in tool_imports(tree)
        if not is_public(module)
    ]
    assert offences == [], "imports of a tool's undocumented module:\n" + "\n".join(offences)


def test_no_private_attribute_of_a_tool_is_reached() -> None:
    all_trees = trees()
    own = own_private_names(all_trees)
    offences = [
        f"{path.relative_to(ROOT)}:{line}: .{name}"
        for path, tree in all_trees.items()
        for line, name in foreign_private_attributes(tree, own)
    ]
    assert offences == [], "private attributes the project does not define:\n" + "\n".join(offences)


def test_no_private_method_of_a_tool_is_overridden() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: def {name}"
        for path, tree in trees().items()
        for line, name in private_overrides(tree)
    ]
    assert offences == [], "private methods of a tool overridden:\n" + "\n".join(offences)


def test_the_checks_catch_what_they_are_for() -> None:
    """The two checks flag a private module, a private attribute and a getattr by string."""
    tree = ast.parse(
        "from dlt.extract.items import DataItemWithMeta\n"
        "import great_expectations._internal\n"
        "engine = validator._execution_engine\n"
        "conn = getattr(engine, '_engine')\n"
        "from great_expectations.expectations import UnexpectedRowsExpectation\n"
        "class Check(UnexpectedRowsExpectation):\n"
        "    def _validate(self): ...\n"
        "    def _helper(self): ...\n"
    )
    assert [m for _, m in tool_imports(tree) if not is_public(m)] == [
        "dlt.extract.items",
        "great_expectations._internal",
    ]
    assert [n for _, n in foreign_private_attributes(tree, set())] == [
        "_execution_engine",
        "_engine",
    ]
    assert [n for _, n in private_overrides(tree)] == ["_validate", "_helper"]
