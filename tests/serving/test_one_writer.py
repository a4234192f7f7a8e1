"""One writer of the repository: pipelines, `tune` and the CPU-variant choice write through
`attnserve.repository.entries`, and a second write never rewrites a version a running server may hold."""

from __future__ import annotations

import ast
from pathlib import Path

from attnserve.repository.layout import existing_versions
from attnserve.serving.pipelines import write_pipeline_entries

ROOT = Path(__file__).resolve().parents[2]
WRITERS_OF_ENTRIES = ("serving/pipelines.py", "attnserve/tune/apply.py", "export/cpu_choice.py", "export/pipeline.py")
"""Modules that put entries into the source repository (the server's runtime view is serving's own, rebuilt)."""
FILE_OPERATIONS = {"rmtree", "copyfile", "copy2", "copy", "copytree", "move"}


def test_writing_pipelines_again_adds_versions_and_leaves_the_old_ones(tiny_repository: Path) -> None:
    from attnserve.repository.entries import read_entry_spec

    spec = read_entry_spec(tiny_repository / "tiny")
    preprocess_dir, pipeline_dir = (tiny_repository / spec.preprocess_name, tiny_repository / spec.pipeline_name)
    first = (preprocess_dir / "1" / "model.py").read_bytes()
    stamp = (preprocess_dir / "1" / "model.py").stat().st_mtime_ns
    write_pipeline_entries(spec, tiny_repository)
    assert existing_versions(preprocess_dir) == [1, 2] and existing_versions(pipeline_dir) == [1, 2]
    assert (preprocess_dir / "1" / "model.py").read_bytes() == first
    assert (preprocess_dir / "1" / "model.py").stat().st_mtime_ns == stamp
    assert (preprocess_dir / "2" / "model.py").read_bytes() == first


def test_entry_writers_touch_no_file_themselves() -> None:
    """They build configs and call the repository's writer; no copy, move or delete of their own."""
    found: list[str] = []
    for relative in WRITERS_OF_ENTRIES:
        tree = ast.parse((ROOT / relative).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in FILE_OPERATIONS:
                found.append(f"{relative}:{node.lineno}: {ast.unparse(node.func)}")
    assert found == [], "\n".join(found)
