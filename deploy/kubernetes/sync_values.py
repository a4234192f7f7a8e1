"""Rewrite the generated `args` blocks of the chart's values.yaml from `attnserve.serving.flags`.

    python deploy/kubernetes/sync_values.py          # rewrite
    python deploy/kubernetes/sync_values.py --check  # exit 1 when the file is out of date (a test does the same)

A block runs from `# BEGIN GENERATED <function>` to `# END GENERATED`; its `args:` list is the function's result.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from attnserve.serving.flags import kserve_args, kubernetes_args

VALUES_PATH = Path(__file__).resolve().parent / "attnserve" / "values.yaml"
GENERATORS: dict[str, Callable[[], list[str]]] = {"kubernetes_args": kubernetes_args, "kserve_args": kserve_args}
_BLOCK = re.compile(
    r"^(?P<indent> *)# BEGIN GENERATED (?P<name>\w+)[^\n]*\n(?P<comments>(?:(?P=indent)#[^\n]*\n)*)"
    r"(?P=indent)args:.*?\n(?P=indent)# END GENERATED$",
    re.DOTALL | re.MULTILINE,
)


def render(text: str) -> str:
    """`text` with every generated block holding its function's current result (one JSON string per line)."""

    def block(match: re.Match[str]) -> str:
        indent, name = match.group("indent"), match.group("name")
        if name not in GENERATORS:
            raise SystemExit(f"{VALUES_PATH}: unknown generated block {name!r}; known: {sorted(GENERATORS)}")
        items = "".join(f"{indent}  - {json.dumps(arg)}\n" for arg in GENERATORS[name]())
        head = match.group(0).split("\n", 1)[0]
        return f"{head}\n{match.group('comments')}{indent}args:\n{items}{indent}# END GENERATED"

    rendered, count = _BLOCK.subn(block, text)
    if count != len(GENERATORS):
        raise SystemExit(f"{VALUES_PATH}: expected {len(GENERATORS)} generated blocks, found {count}")
    return rendered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is out of date")
    args = parser.parse_args()
    text = VALUES_PATH.read_text()
    rendered = render(text)
    if args.check:
        if rendered != text:
            sys.stderr.write(f"{VALUES_PATH} is out of date: run python deploy/kubernetes/sync_values.py\n")
            return 1
        return 0
    VALUES_PATH.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
