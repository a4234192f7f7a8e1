"""Rewrite the chart's generated parts: the `args` blocks of values.yaml (from `attnserve.serving.flags`) and
`files/haproxy.cfg`, the in-cluster edge (from `attnserve.serving.haproxy.kubernetes_edge_config`).

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
from attnserve.serving.haproxy import EdgeSettings, kubernetes_edge_config

VALUES_PATH = Path(__file__).resolve().parent / "attnserve" / "values.yaml"
EDGE_CONFIG_PATH = Path(__file__).resolve().parent / "attnserve" / "files" / "haproxy.cfg"
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
    # in-cluster: more requests per pod than the local default (a GPU replica batches more), same queue bound;
    # one access-log line per request on stdout (the container log)
    edge = kubernetes_edge_config(EdgeSettings(maxconn_per_replica=16, buffer_kb=256, access_log=True))
    wanted = {VALUES_PATH: render(VALUES_PATH.read_text()), EDGE_CONFIG_PATH: edge}
    stale = [path for path, text in wanted.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            sys.stderr.write(f"{path} is out of date: run python deploy/kubernetes/sync_values.py\n")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path])
    return 0


if __name__ == "__main__":
    sys.exit(main())
