"""Real Triton servers for tests: on free loopback ports, so tests never collide with each other or other runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from attnserve.serving.flags import TritonEndpoints
from attnserve.serving.server import ServerProcess, TritonServer


def local_server(
    view: Path, models: Sequence[str], work_dir: Path | None = None, *, exit_timeout_s: int = 5
) -> TritonServer:
    """A `TritonServer` (not started) for `models` of the runtime view `view`, HTTP, gRPC and metrics on free ports.

    Args:
        view: the runtime view (`attnserve.serving.runtime_view.build_runtime_repository`).
        models: the entries to load at start-up.
        work_dir: the server's work folder (default: a new temporary one).
        exit_timeout_s: how long `stop` waits for a clean exit before killing.
    """
    return TritonServer(
        view,
        models=list(models),
        endpoints=TritonEndpoints.any_free(),
        work_dir=work_dir,
        process=ServerProcess(exit_timeout_s=exit_timeout_s),
    )
