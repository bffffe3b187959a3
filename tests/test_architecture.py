"""The shape of the code, measured: no import cycle, short functions, the layering rules.

Read from the source with `ast` (nothing is imported), so a violation fails here with the
module and line that cause it, whatever the tests that exercise the code do.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "crmdrop"
MAX_FUNCTION_LINES = 80
# Modules whose module-level statements are data tables (label lists, regex tables) and
# may be long. Functions get no exemption anywhere.
DATA_TABLE_MODULES = {"crmdrop.mail.labels", "crmdrop.mail.dates"}  # label and month tables


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), str(MODULES[module]))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_imports(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The import statements that run when the module is imported: not those in a
    function or class body, nor under `if TYPE_CHECKING:` (which never runs)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or (
            isinstance(node, ast.If) and _is_type_checking(node)
        ):
            continue
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from _import_time_imports(inner)


def _imported(module: str, node: ast.stmt) -> Iterator[tuple[str, int]]:
    """The crmdrop modules an import statement names, with its line."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, node.lineno
        return
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield (full if full in MODULES else base), node.lineno


def _imports(module: str, *, module_level: bool) -> list[tuple[str, int]]:
    """The crmdrop modules `module` imports: at import time, or (`module_level=False`)
    anywhere, lazy imports in functions included."""
    tree = _tree(module)
    nodes = (
        list(_import_time_imports(tree.body))
        if module_level
        else [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    )
    return [
        (target, line)
        for node in nodes
        for target, line in _imported(module, node)
        if target == "crmdrop" or target.startswith("crmdrop.")
    ]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def _graph() -> dict[str, set[str]]:
    return {
        m: {t for t, _ in _imports(m, module_level=True) if t in MODULES and t != m}
        for m in MODULES
    }


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_the_import_walker_sees_module_level_from_imports() -> None:
    graph = _graph()
    assert "crmdrop.cli.common" in graph["crmdrop.cli.records"]
    assert "crmdrop.filing" in graph["crmdrop.worker"]
    assert "crmdrop.store.apply" in graph["crmdrop.filing"]


def test_no_import_cycle_in_src() -> None:
    """Import-time edges: every `import`/`from ... import` outside functions, classes and
    `if TYPE_CHECKING:` blocks. A lazy import inside a function is no import-time cycle."""
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _length(node: ast.stmt) -> int:
    assert node.end_lineno is not None
    return node.end_lineno - node.lineno + 1


def test_no_function_is_over_80_lines() -> None:
    long = [
        f"{module}:{fn.lineno} {fn.name}() is {_length(fn)} lines"
        for module, path in MODULES.items()
        for fn in _functions(_tree(module))
        if _length(fn) > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_only_declared_data_tables_have_long_module_level_statements() -> None:
    long = [
        f"{module}:{node.lineno} is {_length(node)} lines"
        for module, path in MODULES.items()
        if module not in DATA_TABLE_MODULES
        for node in _tree(module).body
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and _length(node) > MAX_FUNCTION_LINES
    ]
    assert long == []


def _violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    """Every import (also inside functions) from a module of `layer` into `forbidden`."""
    return [
        f"{module}:{line} imports {target}"
        for module in MODULES
        if module == layer or module.startswith(layer + ".")
        for target, line in _imports(module, module_level=False)
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]


def test_parsing_and_policy_know_nothing_of_storage_receiving_or_settings() -> None:
    forbidden = ("crmdrop.store", "crmdrop.receive", "crmdrop.config")
    assert _violations("crmdrop.mail", forbidden) == []
    assert _violations("crmdrop.dropbox", forbidden) == []


def test_the_store_knows_nothing_of_the_doors_or_protocols() -> None:
    forbidden = (
        "crmdrop.receive",
        "crmdrop.web",
        "crmdrop.cli",
        "crmdrop.outbound",
        "crmdrop.serve",
        "crmdrop.worker",
        "crmdrop.filing",
    )
    assert _violations("crmdrop.store", forbidden) == []


def test_the_doors_run_no_sql_of_their_own() -> None:
    """The CLI and the web are doors: queries live in store/, where all doors share them."""
    sql = {"select", "insert", "update", "delete", "text", "func"}
    found = [
        f"{module}:{node.lineno} imports {alias.name} from sqlalchemy"
        for module, path in MODULES.items()
        if module.startswith(("crmdrop.cli", "crmdrop.web"))
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy")
        for alias in node.names
        if alias.name in sql
    ]
    assert found == []


def test_the_layering_check_sees_a_violation() -> None:
    """The walker reads imports inside functions too (serve imports crmdrop.serve lazily)."""
    assert _violations("crmdrop.cli.server", ("crmdrop.serve",)) != []
