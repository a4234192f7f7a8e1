"""The stub watchdog and a config loaded on purpose through model control (what `attnserve tune` does).

Loading a model with a config override replaces its instances, so its old stubs exit. The watchdog must not take
that for a dead stub (its reload used to put the repository's config back, undoing the override mid-measurement),
and when a stub of the overridden model really dies, its reload must keep the override.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any

import pytest

from .conftest import ReliabilityServer
from .helpers import stub_processes

pytestmark = pytest.mark.triton

MODEL = "rel_light"


def _call(server: ReliabilityServer, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(
        f"http://{server.http_url}{path}", data=data, method=method, headers=server.admin_headers
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read().decode() or "{}")


def _served(server: ReliabilityServer) -> tuple[int, int]:
    """(instance count, max queue delay in µs) of the served config."""
    config = _call(server, f"/v2/models/{MODEL}/config")
    count = sum(int(group.get("count", 1)) for group in config["instance_group"])
    return count, int(config["dynamic_batching"].get("max_queue_delay_microseconds", 0))


def _wait(what: str, predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_watchdog_keeps_a_config_loaded_through_model_control(reliability_server: ReliabilityServer) -> None:
    from attnserve.serving.watchdog import StubWatchdog

    server = reliability_server
    server_pid = server.server.pid  # type: ignore[attr-defined]
    base = _call(server, f"/v2/models/{MODEL}/config")
    override = {**base, "instance_group": [{**base["instance_group"][0], "count": 2}]}
    override["dynamic_batching"] = {**base["dynamic_batching"], "max_queue_delay_microseconds": 777}
    override["instance_group"][0].pop("name", None)
    try:
        with StubWatchdog(server.server, interval_s=0.2) as watchdog:  # type: ignore[arg-type]
            _call(server, f"/v2/repository/models/{MODEL}/load", {"parameters": {"config": json.dumps(override)}})
            _wait("two stubs after the override", lambda: len(stub_processes(server_pid, MODEL)) == 2, 30)
            time.sleep(2.0)  # ten looks of the watchdog
            assert watchdog.reloads == [], "a reload on purpose was taken for a dead stub"
            assert _served(server) == (2, 777)

            stubs = stub_processes(server_pid, MODEL)
            os.kill(stubs[0].pid, signal.SIGKILL)
            _wait("the watchdog to reload the model", lambda: watchdog.reloads == [MODEL], 30)
            _wait("two fresh stubs", lambda: len(stub_processes(server_pid, MODEL)) == 2, 30)
            assert stubs[0].pid not in {stub.pid for stub in stub_processes(server_pid, MODEL)}
            assert _served(server) == (2, 777), "the watchdog's reload must keep the overridden config"
    finally:  # the battery's other tests expect the repository's config (one stub)
        _call(server, f"/v2/repository/models/{MODEL}/unload", {})
        _call(server, f"/v2/repository/models/{MODEL}/load", {})
        _wait("the repository's config back", lambda: len(stub_processes(server_pid, MODEL)) == 1, 30)
