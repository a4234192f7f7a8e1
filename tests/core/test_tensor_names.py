"""Tensor names have one home, `attnserve.spec`: every side of an entry (export, repository configs, python-backend
models, clients) uses its constants, so renaming a tensor is one edit and no side can drift."""

from __future__ import annotations

import ast
from pathlib import Path

from attnserve import spec

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = ("attnserve", "models", "export", "serving", "clients")
HOME = ROOT / "attnserve" / "spec.py"

UNIQUE_NAMES = {
    spec.INPUT_NAME,
    spec.OUTPUT_NAME,
    spec.ATTENTION_OUTPUT_NAME,
    *spec.DETECTION_OUTPUTS,
    spec.DETECTIONS_OUTPUT,
    spec.ORIGINAL_SIZE,
    spec.TIMELINE_TENSORS.output,
}
"""Names that mean nothing else in the code: their string may appear in the home module only."""

TENSOR_NAME_CALLS = {
    "Tensor": 0,  # pb_utils.Tensor(name, array)
    "get_input_tensor_by_name": 1,  # pb_utils.get_input_tensor_by_name(request, name)
    "get_output_tensor_by_name": 1,
    "InferInput": 0,  # tritonclient
    "InferRequestedOutput": 0,
}
"""Calls whose positional argument at that index is a tensor name."""
TENSOR_NAME_KEYWORDS = {"name", "requested_output_names", "input_map", "output_map"}
"""Keywords that hold tensor names (`TensorConfig(name=...)`, BLS requests, ensemble steps)."""


def _docstrings(tree: ast.AST) -> set[int]:
    bodies = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, bodies) and node.body and isinstance(node.body[0], ast.Expr)
    }


def _all_lists(tree: ast.AST) -> set[int]:
    """String constants of `__all__ = [...]` (names of Python objects, not tensors)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            found |= {id(constant) for constant in ast.walk(node.value)}
    return found


def _package_files() -> list[Path]:
    return [path for folder in PACKAGE_FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))]


def _literal_strings(node: ast.AST) -> list[str]:
    return [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def test_unique_tensor_names_are_spelled_in_their_home_only() -> None:
    spelled: list[str] = []
    for path in _package_files():
        if path == HOME:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _docstrings(tree) | _all_lists(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in UNIQUE_NAMES and id(node) not in skip:
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not spelled, "tensor names spelled outside attnserve/spec.py (use its constants):\n" + "\n".join(spelled)


def test_no_tensor_name_is_a_literal_where_a_tensor_is_named() -> None:
    literals: list[str] = []
    for path in _package_files():
        for call in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(call, ast.Call):
                continue
            index = TENSOR_NAME_CALLS.get(_callee(call))
            named = [call.args[index]] if index is not None and len(call.args) > index else []
            if _callee(call) in ("TensorConfig", "InferenceRequest"):
                named += [k.value for k in call.keywords if k.arg in TENSOR_NAME_KEYWORDS]
            if _callee(call) == "EnsembleStep":
                named += [k.value for k in call.keywords if k.arg in ("input_map", "output_map")]
            literals += [
                f"{path.relative_to(ROOT)}:{call.lineno} {_callee(call)} {s!r}"
                for n in named
                for s in _literal_strings(n)
            ]
    assert not literals, "tensor names as string literals (use attnserve.spec's constants):\n" + "\n".join(literals)


def test_the_walk_sees_the_places_that_name_tensors() -> None:
    """Guard against a vacuous pass: the calls above exist in the package."""
    seen = {
        _callee(node)
        for path in _package_files()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
    }
    assert {"Tensor", "get_input_tensor_by_name", "TensorConfig", "EnsembleStep", "InferenceRequest"} <= seen
