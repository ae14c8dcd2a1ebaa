"""The shape of the code: only the composition root and the entry points import `Gateway`,
and no module imports itself back through others (imports under TYPE_CHECKING count: a
cycle for the type checker is a cycle for the reader); SQLite files are opened in one
place; the parts of the flexibility service reach the rest of the gateway only through
the Protocols of gateway.flex.ports (and gateway.core)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "gateway": ROOT / "gateway",
    "drivers": ROOT / "drivers",
    "fwsim": ROOT / "firmware-sim" / "fwsim",
}
#: the composition root, and the commands that build a gateway through it
MAY_IMPORT_GATEWAY = {"gateway.app", "gateway.cli", "gateway.demo"}
#: the one module that opens SQLite files
SQLITE = "gateway.sqlite"
#: the flexibility service's parts along the CRP flow
FLEX_PARTS = {
    "gateway.flex.reservation",
    "gateway.flex.activation",
    "gateway.flex.verification",
    "gateway.flex.recovery",
    "gateway.flex.running",
}
#: what they may import from outside gateway.flex: typed config and values, the core's
#: Protocols; nothing that holds state or does I/O (the point table, the store, the
#: controller, the north link: those come in as gateway.flex.ports Protocols)
FLEX_PARTS_MAY_IMPORT = {
    "gateway.config",
    "gateway.core",
    "gateway.errors",
    "gateway.mapping",
    "gateway.model",
    "gateway.units",
}
#: modules of gateway.flex the parts must not import: the concrete records, the service
#: that builds the parts, its northbound bridge
FLEX_CONCRETE = {"gateway.flex.records", "gateway.flex.service", "gateway.flex.bridge"}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name an import statement of the module names: the module and, for
    `from m import x`, `m.x` too (x may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {
        module: {name for name in imported_names(module, path) if name in known} - {module}
        for module, path in known.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_graph_sees_the_imports_the_code_has() -> None:
    graph = import_graph()
    assert "gateway.market" in graph["gateway.app"]
    assert "gateway.protocols.base" in graph["drivers.modbus.protocol"]
    assert "fwsim.frontend" in graph["drivers.modbus.simulator"]


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e", "e2"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_only_the_composition_root_and_entry_points_import_gateway_app() -> None:
    importers = sorted(
        module for module, imports in import_graph().items() if "gateway.app" in imports
    )
    assert importers, "the CLI runs the gateway through gateway.app"
    assert set(importers) <= MAY_IMPORT_GATEWAY, importers


def sqlite_connects(path: Path) -> list[int]:
    """Lines where the module calls `sqlite3.connect` (or imports `connect` from sqlite3)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "connect"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sqlite3"
        ) or (
            isinstance(node, ast.ImportFrom)
            and node.module == "sqlite3"
            and any(a.name == "connect" for a in node.names)
        ):
            lines.append(node.lineno)
    return lines


def test_the_connect_check_finds_a_connect(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import sqlite3\n\ndb = sqlite3.connect(':memory:')\n")
    assert sqlite_connects(source) == [3]
    source.write_text("from sqlite3 import connect\n")
    assert sqlite_connects(source) == [1]
    assert sqlite_connects(modules()[SQLITE]), "gateway.sqlite opens the files"


def test_only_gateway_sqlite_opens_sqlite_files() -> None:
    found = {
        f"{module}:{line}"
        for module, path in modules().items()
        if module != SQLITE
        for line in sqlite_connects(path)
    }
    assert not found, f"open state files through {SQLITE}.Database or read_only: {found}"


def flex_part_violations(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    out = {}
    for part in FLEX_PARTS:
        wrong = {
            name
            for name in graph[part]
            if name.startswith("gateway.")
            and (
                name in FLEX_CONCRETE
                or not (name.startswith("gateway.flex.") or name in FLEX_PARTS_MAY_IMPORT)
            )
        }
        if wrong:
            out[part] = wrong
    return out


def test_the_flex_part_check_finds_a_concrete_import() -> None:
    graph = {part: {"gateway.flex.ports", "gateway.mapping"} for part in FLEX_PARTS}
    assert flex_part_violations(graph) == {}
    graph["gateway.flex.recovery"] |= {"gateway.points", "gateway.flex.records"}
    graph["gateway.flex.activation"].add("gateway.store")
    assert flex_part_violations(graph) == {
        "gateway.flex.recovery": {"gateway.points", "gateway.flex.records"},
        "gateway.flex.activation": {"gateway.store"},
    }


def test_flex_parts_reach_the_gateway_only_through_ports() -> None:
    graph = import_graph()
    assert set(graph) >= FLEX_PARTS
    assert flex_part_violations(graph) == {}
