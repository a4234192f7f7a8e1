"""Restart python-backend stubs that died: Triton 2.51 does not.

When a python-backend stub process dies (killed, OOM, a crash in native code), Triton 2.51 keeps the model
READY but fails every request to that instance with INTERNAL "Stub process '<instance>' is not healthy." until
the model is loaded again (measured in `tests/reliability/test_faults.py`). `StubWatchdog` watches the server's
stub processes and, when one of a READY model dies, loads that model again through the (token-protected)
repository API (unload, then load), which starts fresh stubs. Clients that retry "not healthy" and "no
available versions" answers (`attnserve.clients.status`) then recover by themselves.

    with TritonServer(repository) as server, StubWatchdog(server):
        ...

Linux only (reads `/proc`). Models unloaded on purpose are left alone: only models the repository index
reports READY are reloaded. A model reloaded on purpose (e.g. `attnserve tune` loading a candidate config through
model control) also loses its stubs, for new ones: the watchdog tells the two apart by counting, and reloads only
a model that has had fewer live stubs than its served config's instance count on two looks in a row. Its reload
keeps the config the server serves (a config override survives it).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Protocol

logger = logging.getLogger(__name__)

STUB_BINARY = "triton_python_backend_stub"


class _Server(Protocol):
    """What the watchdog needs from `attnserve.serving.server.TritonServer`."""

    @property
    def pid(self) -> int | None: ...

    @property
    def http_url(self) -> str: ...

    @property
    def admin_headers(self) -> dict[str, str]: ...


def stub_pids(server_pid: int) -> dict[int, str]:
    """Live python-backend stubs started by `server_pid`: pid -> model name (from the stub's `model.py` path)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid != server_pid or state == "Z" or not cmdline or not cmdline[0].endswith(STUB_BINARY.encode()):
            continue
        if len(cmdline) > 1:  # <repository>/<model>/<version>/model.py
            found[int(entry.name)] = Path(cmdline[1].decode(errors="replace")).parent.parent.name
    return found


class StubWatchdog:
    """A thread that reloads a READY model whose python-backend stub died (see the module docstring).

    Args:
        server: the running server (its pid, HTTP URL and admin headers are used).
        interval_s: seconds between two looks at the stub processes.
    """

    def __init__(self, server: _Server, interval_s: float = 0.5) -> None:
        self.server = server
        self.interval_s = interval_s
        self.reloads: list[str] = []
        """Models reloaded so far, in order."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._short: set[str] = set()  # models short of stubs on the previous look

    def _call(self, path: str, body: bytes | None = b"", method: str = "POST") -> str:
        request = urllib.request.Request(
            f"http://{self.server.http_url}{path}", data=body, method=method, headers=self.server.admin_headers
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.read().decode()

    def reload(self, model: str) -> None:
        """Unload `model`, then load it again: fresh stubs.

        A plain load of a loaded model is a no-op in Triton 2.51 when it sees no change (measured: it reloads
        once after start-up, then no more), which would leave the dead stub in place. Between the unload and the
        load, requests get "has no available versions", which the client retries. The load carries the config
        the server served (Triton's config override), so a config loaded through model control is kept.
        """
        config = self._call(f"/v2/models/{model}/config", body=None, method="GET")
        self._call(f"/v2/repository/models/{model}/unload")
        self._call(f"/v2/repository/models/{model}/load", json.dumps({"parameters": {"config": config}}).encode())

    def _ready_models(self) -> set[str]:
        index = json.loads(self._call("/v2/repository/index") or "[]")
        return {entry["name"] for entry in index if entry.get("state") == "READY"}

    def _instance_count(self, model: str) -> int:
        """How many instances (one stub each) the served config of `model` asks for."""
        config = json.loads(self._call(f"/v2/models/{model}/config", body=None, method="GET"))
        return sum(int(group.get("count", 1)) for group in config.get("instance_group") or [{}])

    def _models_to_reload(self, suspects: set[str], alive: dict[int, str]) -> list[str]:
        """Of `suspects` (lost a stub, or short on the last look), the READY ones short of stubs twice in a row.

        A reload on purpose starts the new instances before the old ones stop, so a model is short only for
        the instant between two looks; a killed stub leaves it short until it is reloaded.
        """
        ready = self._ready_models()
        short = {model for model in suspects & ready if list(alive.values()).count(model) < self._instance_count(model)}
        due = sorted(short & self._short)
        self._short = short - set(due)
        return due

    def check_once(self, known: dict[int, str]) -> dict[int, str]:
        """Compare the stubs with `known`; reload READY models that lost one. Returns the stubs now alive."""
        server_pid = self.server.pid
        if server_pid is None:
            return {}
        alive = stub_pids(server_pid)
        suspects = {model for pid, model in known.items() if pid not in alive} | self._short
        if not suspects:
            return alive
        due = self._models_to_reload(suspects, alive)
        for model in due:
            logger.warning("python-backend stub of %r died; loading the model again", model)
            try:
                self.reload(model)
                self.reloads.append(model)
            except (urllib.error.URLError, OSError) as exc:
                logger.error("reloading %r after its stub died failed: %s", model, exc)
        return stub_pids(server_pid) if due else alive

    def _run(self) -> None:
        known = stub_pids(self.server.pid or -1)
        while not self._stop.wait(self.interval_s):
            try:
                known = self.check_once(known)
            except (urllib.error.URLError, OSError, ValueError) as exc:  # server stopping: keep watching quietly
                logger.debug("stub watchdog: %s", exc)

    def start(self) -> StubWatchdog:
        """Start watching (returns at once)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="attnserve-stub-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (call before stopping the server, whose stubs then exit on purpose)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10 + self.interval_s)
            self._thread = None

    def __enter__(self) -> StubWatchdog:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
