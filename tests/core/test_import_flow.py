"""Data flows one way: models -> export -> repository -> serving -> clients; nothing imports back up.

Walks every module of the package (the source folders, parsed, so imports inside functions count too) and
fails on an edge that breaks the flow: export -> serving, serving -> export or models, anything below the top
floor -> the top floor, and clients reaching torch, directly or through another attnserve module. The top floor
orchestrates the stages (the console script, the demo and its report, `tune`, and the benchmarks in bench/): it
may import every stage and no stage imports it. No module is imported by a name in a string (`importlib.import_module`, `__import__`),
so every edge is one the walk sees.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = {"attnserve": "attnserve", "models": "attnserve.models", "export": "attnserve.export"}
SOURCE_FOLDERS |= {"serving": "attnserve.serving", "clients": "attnserve.clients", "bench": "bench"}
STAGE_PACKAGES = ("models", "export", "repository", "runtimes", "serving", "clients")
TOP_FLOOR = ("cli", "demo", "demo_report", "tune")
"""`attnserve.<name>` modules and packages that orchestrate the stages."""

# stage -> the attnserve stages it may import ("core" = the top-level modules: spec, errors, security, ...)
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "runtimes": {"core", "runtimes"},
    "repository": {"core", "runtimes", "repository"},
    "models": {"core", "models"},
    "export": {"core", "models", "repository", "runtimes", "export"},
    "serving": {"core", "repository", "runtimes", "serving"},
    "clients": {"core", "clients"},
}


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the installed package's source folders."""
    modules: dict[str, Path] = {}
    for folder, package in SOURCE_FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _imports(module: str, path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved against `module`)."""
    names: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def stage_of(module: str) -> str | None:
    """The stage an attnserve module belongs to (None for third-party modules)."""
    parts = module.split(".")
    if parts[0] == "bench":
        return "top"  # benchmark entry points: outside the package, orchestrating every stage
    if parts[0] != "attnserve":
        return None
    if len(parts) == 1:
        return "core"
    if parts[1] in TOP_FLOOR:
        return "top"
    if parts[1] in STAGE_PACKAGES:
        return parts[1]
    return parts[1] if (ROOT / "attnserve" / parts[1]).is_dir() else "core"


def _graph() -> dict[str, set[str]]:
    modules = _module_files()
    return {module: _imports(module, path) for module, path in modules.items()}


GRAPH = _graph()


def test_the_walk_sees_every_stage() -> None:
    stages = {stage_of(module) for module in GRAPH}
    assert {"core", "models", "export", "repository", "runtimes", "serving", "clients", "top"} <= stages
    top = {module for module in GRAPH if stage_of(module) == "top"}
    assert {"attnserve.cli", "attnserve.demo", "attnserve.tune.run", "bench.small_data", "bench.soak"} <= top


def _bad_edges(importer: str, imported_names: set[str]) -> list[str]:
    """The edges of `importer` that run against the flow."""
    stage = stage_of(importer)
    bad: list[str] = []
    for imported in sorted(imported_names):
        target = stage_of(imported)
        if target is None or target == stage:
            continue
        if target == "top" or (stage in ALLOWED and target not in ALLOWED[stage]):
            bad.append(f"{importer} ({stage}) -> {imported} ({target})")
    return bad


@pytest.mark.parametrize("importer", sorted(GRAPH))
def test_no_import_runs_back_up_the_flow(importer: str) -> None:
    bad = _bad_edges(importer, GRAPH[importer])
    assert not bad, "imports against the flow models -> export -> repository -> serving -> clients:\n" + "\n".join(bad)


def test_clients_never_reach_torch() -> None:
    """Transitively: a clients module imports no attnserve module that imports torch."""
    reached: dict[str, list[str]] = {m: [m] for m in GRAPH if stage_of(m) == "clients"}
    frontier = list(reached)
    while frontier:
        module = frontier.pop()
        for imported in GRAPH[module]:
            if imported.split(".")[0] == "torch":
                pytest.fail(f"clients reach torch: {' -> '.join(reached[module])} -> {imported}")
            if imported in GRAPH and imported not in reached:
                reached[imported] = [*reached[module], imported]
                frontier.append(imported)


def test_the_walk_catches_a_bad_edge(tmp_path: Path) -> None:
    """Not vacuous: an export module importing serving is seen as such."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from attnserve.serving.server import TritonServer\n")
    imported = _imports("attnserve.export.bad", bad)
    assert "attnserve.serving.server" in imported and stage_of("attnserve.serving.server") not in ALLOWED["export"]


def test_no_module_is_imported_by_a_name_in_a_string() -> None:
    dynamic: list[str] = []
    for module, path in _module_files().items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in ("import_module", "__import__"):
                    dynamic.append(f"{module}:{node.lineno}")
    assert dynamic == [], "imports the walk cannot see (import the module, or call a function that imports it)"


def test_the_top_floor_may_import_every_stage_and_none_imports_it(tmp_path: Path) -> None:
    """Not vacuous: the console script reaches every stage's commands, and a stage importing tune is caught."""
    reached = {stage_of(imported) for imported in GRAPH["attnserve.cli"]}
    assert {"models", "export", "serving", "clients", "top"} <= reached
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from attnserve.tune.run import TuneOptions\n    from bench.soak import main\n")
    caught = _bad_edges("attnserve.serving.bad", _imports("attnserve.serving.bad", bad))
    assert any("-> attnserve.tune.run " in edge for edge in caught) and any("-> bench.soak " in edge for edge in caught)
