"""The floors of the project, enforced: imports only point down, and never in a circle.

    fulfil/           tools: CLI, operator tools, AsyncAPI export, dev harness   (may import all)
    services/<name>/  allocator, projector, notifier       (schemas, fulfil_platform, itself)
    fulfil_platform/  config, Kafka, logs, metrics, dead letters, migrations   (schemas)
    schemas/          the contract                          (nothing of the project)

A small AST check over every module of the four packages, with no exception
list. Every import counts for the floors, wherever it is written: at module
level, inside a function (a lazy import is still a dependency) or under
`if TYPE_CHECKING:`. A service imports no other service. No two modules may
import each other, directly or round a longer loop, through imports that run
(module-level or lazy); an `if TYPE_CHECKING:` import never runs, so it may
close a loop that exists for annotations only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("schemas", "fulfil_platform", "services", "fulfil")  # bottom first


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    runs: bool  # False under `if TYPE_CHECKING:`


def modules(root: Path) -> dict[str, Path]:
    """Every project module under `root`, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for floor in FLOORS:
        for path in sorted((root / floor).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, runs: bool = True):
    """(node, runs) for every import statement in `tree`, at any depth."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, runs
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), runs=False)
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), runs=runs)
        else:
            yield from _import_nodes(node, runs)


def _known(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(root: Path) -> list[Import]:
    """Every import of a project module by a project module."""
    known = modules(root)
    found: dict[Import, None] = {}  # ordered, without repeats (`from m import a, b`)
    for source, path in known.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node, runs in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` imports the module; `from mod import name` the module.
                names = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            for name in names:
                target = _known(name, known)
                if target is not None and target != source:
                    found[Import(source, target, node.lineno, runs)] = None
    return list(found)


def _floor(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


def _service(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def upward(found: list[Import]) -> list[str]:
    """Imports that point up a floor, or from one service into another."""
    problems = []
    for imp in found:
        where = f"{imp.source}:{imp.line} imports {imp.target}"
        if _floor(imp.target) > _floor(imp.source):
            problems.append(
                f"{where}: {FLOORS[_floor(imp.target)]} is above {FLOORS[_floor(imp.source)]}"
            )
        elif (
            _service(imp.source)
            and _service(imp.target)
            and _service(imp.source) != _service(imp.target)
        ):
            problems.append(f"{where}: a service imports no other service")
    return problems


def cycles(found: list[Import]) -> list[list[str]]:
    """The import loops among imports that run (Tarjan's strongly connected components)."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        if imp.runs:
            graph.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return loops


# ------------------------------------------------------------------ the project


@pytest.fixture(scope="module")
def project() -> list[Import]:
    return imports(ROOT)


def test_the_check_sees_the_whole_project(project: list[Import]) -> None:
    known = modules(ROOT)
    assert {
        "schemas.contract",
        "fulfil_platform.kafka",
        "services.allocator.entrypoints.core",
        "fulfil.cli",
    } <= set(known)
    sources = {imp.source.split(".")[0] for imp in project}
    assert sources == set(FLOORS)


def test_imports_point_down(project: list[Import]) -> None:
    assert upward(project) == []


def test_no_import_cycles(project: list[Import]) -> None:
    assert cycles(project) == []


# ------------------------------------------------------------ the check itself


def _tree(root: Path, files: dict[str, str]) -> Path:
    for floor in FLOORS:
        (root / floor).mkdir(parents=True, exist_ok=True)
        (root / floor / "__init__.py").touch()
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "schemas/contract.py": "import json\n",
            "fulfil_platform/kafka.py": "from schemas.contract import X\n",
            "services/one/__init__.py": "",
            "services/one/app.py": "from . import core\nfrom fulfil_platform import kafka\n",
            "services/one/core.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from services.one.app import A\n",
            "fulfil/cli.py": "def main():\n    from services.one import app\n",
        },
    )
    found = imports(root)
    assert Import("services.one.app", "services.one.core", 1, True) in found
    assert Import("services.one.app", "fulfil_platform.kafka", 2, True) in found
    assert upward(found) == [] and cycles(found) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {
                "schemas/contract.py": "from fulfil_platform import kafka\n",
                "fulfil_platform/kafka.py": "",
            },
            "schemas.contract:1 imports fulfil_platform.kafka: fulfil_platform is above schemas",
        ),
        (
            {
                "fulfil_platform/kafka.py": "def f():\n    import services.one.app\n",
                "services/one/app.py": "",
            },
            "fulfil_platform.kafka:2 imports services.one.app: services is above fulfil_platform",
        ),
        (
            {
                "services/one/app.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fulfil.cli import x\n",
                "fulfil/cli.py": "",
            },
            "services.one.app:3 imports fulfil.cli: fulfil is above services",
        ),
        (
            {
                "services/one/app.py": "from services.two.domain import rules\n",
                "services/two/domain/rules.py": "",
            },
            "services.one.app:1 imports services.two.domain.rules: a service imports no other service",
        ),
    ],
)
def test_an_upward_import_fails(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    assert upward(imports(_tree(tmp_path, files))) == [expected]


def test_a_cycle_fails_even_through_a_lazy_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "fulfil/cli.py": "def register():\n    from fulfil import cli_sim\n",
            "fulfil/cli_sim.py": "from fulfil.tracing import trace\n",
            "fulfil/tracing.py": "def f():\n    from fulfil.cli import fail_usage\n",
            "schemas/a.py": "from . import b\n",
            "schemas/b.py": "from .a import X\n",
        },
    )
    assert cycles(imports(root)) == [
        ["fulfil.cli", "fulfil.cli_sim", "fulfil.tracing"],
        ["schemas.a", "schemas.b"],
    ]
