"""The package's imports point one way, down, with no cycle (issue 14).

Layers, lowest first: the model (events, subjects, schemas, errors), the core (settings, ports, the settings
file), the transport (publisher parts, spool, connection, auth), then the integrations and the surfaces (client,
module API, CLI, consumer, testing). A module may import its own layer and those below; ``model``, the core and
the transport never reach an integration or a surface. Every import counts, lazy ones inside functions and
``TYPE_CHECKING`` ones included: a dependency is a dependency whenever it is paid.
"""

from __future__ import annotations

import ast
import pathlib

import databricks_nats

PACKAGE = pathlib.Path(databricks_nats.__file__).parent

# The lowest layer a module may be in, by name prefix (the longest prefix wins).
LAYERS = {
    "databricks_nats._version": 0,
    "databricks_nats._lazy": 0,
    "databricks_nats.errors": 0,
    "databricks_nats.model": 0,
    "databricks_nats._sections": 1,
    "databricks_nats.values": 1,
    "databricks_nats.config_file": 1,
    "databricks_nats.jobparams": 1,
    "databricks_nats.settings": 1,
    "databricks_nats.setting_sources": 1,
    "databricks_nats.ports": 1,
    "databricks_nats.transport": 2,
}
UPPER = 3  # integrations and surfaces
NAMES = {0: "model", 1: "core (settings, ports)", 2: "transport", UPPER: "integrations or surfaces"}


def layer(module: str) -> int:
    best, found = "", UPPER
    for prefix, level in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best, found = prefix, level
    return found


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join([*package[: len(package) - node.level + 1], node.module or ""]).strip(".")
            else:
                base = node.module or ""
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    found = set()
    for target in targets:
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known and target != name and target != "databricks_nats":
            found.add(target)
    return found


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_lower_layers_never_import_upwards() -> None:
    upward = [
        f"{m} ({NAMES[layer(m)]}) imports {d} ({NAMES[layer(d)]})"
        for m, deps in sorted(GRAPH.items())
        for d in sorted(deps)
        if layer(m) < UPPER and layer(d) > layer(m)
    ]
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    cycles = strongly_connected(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_walk_sees_the_package() -> None:
    """The walk is not vacuous: it finds the layers and the known edges between them."""
    assert {layer(m) for m in GRAPH} == {0, 1, 2, UPPER}
    assert "databricks_nats.model.events" in GRAPH["databricks_nats.transport.publisher"] or any(
        d.startswith("databricks_nats.model") for d in GRAPH["databricks_nats.transport.publisher"]
    )
    assert any(d.startswith("databricks_nats.transport") for d in GRAPH["databricks_nats._api"])


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of two or more modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)
    return groups
