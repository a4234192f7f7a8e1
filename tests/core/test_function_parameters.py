"""No library function takes more than 7 parameters: past that a call site cannot be read without the signature,
and the parameters want an options object (`ExportOptions`, `TritonEndpoints`, `VideoConfig`, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = ("attnserve", "models", "export", "serving", "clients")
MAX_PARAMETERS = 7

ALLOWED: dict[str, str] = {}
"""`path:function` -> why it may take more (none today; a reason is required for any entry)."""


def parameter_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Positional and keyword-only parameters, less a leading `self` / `cls` (`*args` / `**kwargs` not counted:
    they name no parameter of their own)."""
    arguments = function.args
    names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def test_no_library_function_takes_more_than_7_parameters() -> None:
    too_wide: list[str] = []
    functions = 0
    for folder in PACKAGE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions += 1
                    count = len(parameter_names(node))
                    key = f"{path.relative_to(ROOT)}:{node.name}"
                    if count > MAX_PARAMETERS and key not in ALLOWED:
                        too_wide.append(f"{key} (line {node.lineno}): {count} parameters")
    assert functions > 300, f"only {functions} functions found: is the walk reading the package?"
    assert not too_wide, f"functions with more than {MAX_PARAMETERS} parameters:\n" + "\n".join(too_wide)


def test_every_allowed_entry_says_why() -> None:
    assert all(reason.strip() for reason in ALLOWED.values())


def test_the_count_leaves_out_self_and_counts_keyword_only() -> None:
    method = ast.parse("class A:\n    def f(self, a, /, b, *args, c, d=1, **kwargs): ...\n").body[0].body[0]  # type: ignore[attr-defined]
    assert parameter_names(method) == ["a", "b", "c", "d"]
