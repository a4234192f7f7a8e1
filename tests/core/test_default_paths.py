"""The default folders (model repository, runs, reports) are spelled once, in attnserve/defaults.py: every command,
library default and benchmark reads REPOSITORY_DIR, RUNS_DIR and REPORTS_DIR from there."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED_FOLDERS = ("attnserve", "models", "export", "serving", "clients", "bench")
DEFAULTS = ROOT / "attnserve" / "defaults.py"
DEFAULT_FOLDERS = ("model_repository", "runs", "reports")


def _spells_a_default_folder(value: object) -> bool:
    return isinstance(value, str) and any(value == name or value.startswith(f"{name}/") for name in DEFAULT_FOLDERS)


def path_literals(source: str) -> list[int]:
    """Lines of `Path("runs")`, `Path("reports/bench/x.json")`, `Path(f"reports/...")` and the like in `source`."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Path"):
            continue
        if not node.args:
            continue
        first = node.args[0]
        if isinstance(first, ast.JoinedStr) and first.values and isinstance(first.values[0], ast.Constant):
            first = first.values[0]
        if isinstance(first, ast.Constant) and _spells_a_default_folder(first.value):
            lines.append(node.lineno)
    return sorted(lines)


def test_default_folders_are_spelled_only_in_defaults() -> None:
    found: list[str] = []
    for folder in SCANNED_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == DEFAULTS:
                continue
            found += [f"{path.relative_to(ROOT)}:{line}" for line in path_literals(path.read_text())]
    assert not found, "use attnserve.defaults (REPOSITORY_DIR, RUNS_DIR, REPORTS_DIR) instead of:\n" + "\n".join(found)


def test_defaults_spell_them() -> None:
    assert len(path_literals(DEFAULTS.read_text())) == len(DEFAULT_FOLDERS)


def test_the_scan_finds_each_spelling() -> None:
    source = 'Path("runs")\nPath("reports/bench/x.json")\nPath(f"reports/{name}.json")\nPath("model_repository")\n'
    assert path_literals(source) == [1, 2, 3, 4]
    assert path_literals('Path("runs_other")\nPath("scratch/runs")\nscratch / "model_repository"\n') == []
