"""Console output for people and for logs: one place that decides how the CLI writes.

- On a terminal: rich tables sized to the window, spinners and progress bars.
- Piped or redirected (`| cat`, `> demo.log`): no spinner or bar redraws, and tables keep their natural
  width so every number survives (rich would squeeze them into 80 columns, every cell `c…`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

PIPED_WIDTH = 1_000
"""Console width when not on a terminal: wide enough that no table cell is cut."""


def is_terminal(stream: IO[str] | None = None) -> bool:
    """True when `stream` (default stdout) is an interactive terminal."""
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def make_console(stderr: bool = False) -> Any:
    """A rich Console that never cuts table cells when piped (`PIPED_WIDTH`) and never wraps long lines."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if is_terminal(stream):
        return Console(stderr=stderr, soft_wrap=True)
    return Console(stderr=stderr, width=PIPED_WIDTH, soft_wrap=True, no_color=True, highlight=False)


@contextlib.contextmanager
def status(console: Any, message: str) -> Iterator[Any]:
    """`console.status(message)` on a terminal; on a pipe/log, one line and a no-op updater (no redraws)."""
    if console.is_terminal:
        with console.status(message) as spinner:
            yield spinner
        return
    console.print(message)

    class _Quiet:
        def update(self, *args: Any, **kwargs: Any) -> None:
            """Drop the update: a log gets the per-level lines, not every window's redraw."""

    yield _Quiet()


def print_json(payload: Any) -> None:
    """Write `payload` as indented JSON on stdout (the `--json` output of a command)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()
