"""The package layout shows the pipeline: stage subpackages whose imports flow one way, with no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import kuaimod_open

PKG = Path(kuaimod_open.__file__).resolve().parent

# Lower rank = earlier stage. A module may import its own stage or an earlier one, never a later one.
RANK = {
    "errors": 0,
    "_lazy": 0,
    "core": 1,
    "ingest": 2,
    "judge": 3,
    "first_stage": 4,
    "evaluation": 5,
    "loop": 6,
    "serving": 7,
    "cli": 8,
    "app": 8,
    "__main__": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["kuaimod_open", *parts])


def _imports(path: Path) -> set[str]:
    """Every kuaimod_open module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = _module_name(path).split(".")
    package = this if path.name == "__init__.py" else this[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "kuaimod_open":
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "kuaimod_open")
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _sources() -> list[Path]:
    # kuaimod_open/app is the review app (a link to the repository's app/ folder).
    return sorted(PKG.rglob("*.py"))


def test_every_module_belongs_to_a_known_stage():
    unknown = {_stage(_module_name(p)) for p in _sources()} - set(RANK) - {None}
    assert not unknown, f"modules outside the stage layout: {unknown}; add the subpackage to RANK and the README"


def test_imports_flow_from_earlier_stages_only():
    backwards = []
    checked = 0
    for path in _sources():
        here = _stage(_module_name(path))
        if here is None:
            continue
        for target in _imports(path):
            there = _stage(target)
            checked += 1
            if there is not None and RANK[there] > RANK[here]:
                backwards.append(f"{_module_name(path)} imports {target}")
    assert checked > 300, f"only {checked} imports found: the scan is broken"
    assert not backwards, "imports against the stage order:\n" + "\n".join(sorted(backwards))


def test_no_import_cycle_between_modules():
    modules = {_module_name(p): p for p in _sources()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(path):
            # "from kuaimod_open.judge import backends" names a subpackage: resolve to the closest module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges

    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # Package __init__ files that re-export their own submodules are not cycles worth reporting.
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c[1:])]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)
