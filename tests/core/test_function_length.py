"""No function is longer than 60 lines of code (its docstring aside): the project's rule, checked over every
module of the installed package and the benchmarks (ruff's PLR0915 limits statements; this limits lines)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED_FOLDERS = ("attnserve", "models", "export", "serving", "clients", "bench")
MAX_LINES = 60


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from `def` to the function's last line, less its docstring."""
    lines = (function.end_lineno or function.lineno) - function.lineno + 1
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= (first.end_lineno or first.lineno) - first.lineno + 1
    return lines


def test_no_library_or_bench_function_is_longer_than_60_lines() -> None:
    too_long: list[str] = []
    functions = 0
    for folder in CHECKED_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions += 1
                    if (length := code_lines(node)) > MAX_LINES:
                        too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert functions > 300, f"only {functions} functions found: is the walk reading the package?"
    assert not too_long, f"functions longer than {MAX_LINES} lines of code:\n" + "\n".join(too_long)


def test_the_measure_counts_code_not_docstrings() -> None:
    source = 'def f():\n    """Doc\n    string."""\n    a = 1\n    return a\n'
    assert code_lines(ast.parse(source).body[0]) == 3  # type: ignore[arg-type]
