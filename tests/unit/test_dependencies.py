"""Every third-party module the package imports is a dependency it declares.

A module imported only by an optional feature belongs to that feature's extra and is
imported lazily (inside a function, or guarded by ``except ImportError``), so a plain
``pip install conveyor`` never meets an import it cannot satisfy.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "conveyor"

#: Extras and the modules allowed to import them (lazily, outside these paths).
EXTRA_HOMES = {"redis": ("backends/redis/",)}

#: Imported in ``try: ... except ImportError`` as a speed-up only; brought by a core
#: dependency where the platform supports it.
SOFT = {"uvloop": "uvicorn[standard]"}


@dataclass(frozen=True)
class Import:
    module: str  # top-level name
    path: str  # relative to the package
    line: int
    lazy: bool  # inside a function or an ImportError guard


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", spec)
    assert match, spec
    return _normal(match.group(0))


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(spec) for spec in project["dependencies"]}
    extras = {
        extra: {_requirement_name(spec) for spec in specs}
        for extra, specs in project.get("optional-dependencies", {}).items()
    }
    return core, extras


class _Collector(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.depth = 0  # functions and ImportError guards entered
        self.found: list[Import] = []

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _nested

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(
            isinstance(h.type, ast.Name) and h.type.id in {"ImportError", "ModuleNotFoundError"}
            for h in node.handlers
        )
        self.depth += guarded
        for child in node.body:
            self.visit(child)
        self.depth -= guarded
        for rest in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(rest)

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return  # annotations only: never imported at run time
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node.lineno)

    def _add(self, name: str, line: int) -> None:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "conveyor":
            return
        self.found.append(Import(top, self.path, line, self.depth > 0))


def _imports() -> list[Import]:
    found: list[Import] = []
    for file in sorted(PACKAGE.rglob("*.py")):
        collector = _Collector(file.relative_to(PACKAGE).as_posix())
        collector.visit(ast.parse(file.read_text(), str(file)))
        found += collector.found
    return found


def test_every_runtime_import_is_a_declared_dependency() -> None:
    core, extras = _declared()
    owners = packages_distributions()
    problems: list[str] = []
    for imp in _imports():
        where = f"{imp.path}:{imp.line} imports {imp.module}"
        if imp.module in SOFT:
            if not imp.lazy:
                problems.append(f"{where} without an ImportError guard")
            continue
        dists = {_normal(d) for d in owners.get(imp.module, [])}
        if not dists:
            problems.append(f"{where}, which no installed distribution provides")
        elif dists & core:
            continue
        else:
            extra = next((e for e, names in extras.items() if dists & names), None)
            if extra is None or extra == "dev":
                problems.append(f"{where}: {sorted(dists)} is not a runtime dependency")
            elif not (imp.path.startswith(EXTRA_HOMES.get(extra, ())) or imp.lazy):
                problems.append(f"{where} eagerly, but it comes with the extra [{extra}] only")
    assert not problems, "\n".join(problems)


def test_the_check_sees_imports_of_every_kind() -> None:
    # The collector itself: an eager import, a lazy one, a guarded one, a typing-only one.
    source = (
        "import orjson\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import httpx\n"
        "try:\n    import uvloop\nexcept ImportError:\n    pass\n"
        "def f():\n    import redis.asyncio\n"
    )
    collector = _Collector("x.py")
    collector.visit(ast.parse(source))
    assert [(i.module, i.lazy) for i in collector.found] == [
        ("orjson", False),
        ("uvloop", True),
        ("redis", True),
    ]
