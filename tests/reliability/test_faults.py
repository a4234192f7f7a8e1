"""Faults: a killed python-backend stub, a restarted server, a corrupt model file.

All on the battery's own server (`reliability_server`), never the shared one. A background thread keeps a typed
client (`attnserve.clients.client.TritonClient`, with retries) busy on `rel_light` while the fault is injected;
every answer it gets is compared with the in-process ONNX Runtime answer for its own input, so "recovered" means
right answers again, and no wrong answer is ever accepted.

What Triton 2.51 does with a killed stub (measured here, and what the test asserts): it does **not** restart it.
Every later request to that instance waits ~1 s for the stub's health check and fails with INTERNAL
"Stub process '<model>_0_0' is not healthy."; the model still reports READY. Loading the model again through
the (token-protected) repository API starts a fresh stub; `attnserve.serving.watchdog.StubWatchdog` does that
by itself, and the client retries "not healthy" answers, so with the watchdog the client recovers on its own.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from attnserve.clients.client import TritonClient
from attnserve.clients.settings import ClientSettings
from attnserve.errors import InferenceError, ServerError

from .conftest import ReliabilityServer
from .helpers import ProcessInfo, stub_processes

pytestmark = pytest.mark.triton

MODEL = "rel_light"
MAX_CALLS = 2_000
"""Upper bound on the background loop's calls (it normally stops long before)."""


@dataclass
class LoadLoop:
    """A background thread calling `infer` until stopped; keeps every input, output and error."""

    settings: ClientSettings
    server: ReliabilityServer
    pause_s: float = 0.01
    outcomes: list[tuple[float, np.ndarray, np.ndarray | None, InferenceError | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LoadLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        shape = self.server.specs[MODEL].io.input_shape
        with TritonClient(self.settings) as client:
            for _ in range(MAX_CALLS):
                if self._stop.is_set():
                    return
                pixels = rng.integers(0, 256, (2, *shape), dtype=np.uint8)
                try:
                    logits = client.infer(MODEL, {"pixels": pixels})["logits"]
                    self.outcomes.append((time.monotonic(), pixels, logits, None))
                except InferenceError as exc:
                    self.outcomes.append((time.monotonic(), pixels, None, exc))
                time.sleep(self.pause_s)

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the load loop did not stop"

    def successes(self) -> int:
        return sum(1 for *_, error in self.outcomes if error is None)

    def failures(self) -> list[InferenceError]:
        return [error for *_, error in self.outcomes if error is not None]

    def answers_after(self, since: float) -> int:
        """Answers received after `since` (time.monotonic)."""
        return sum(1 for t, *_, error in self.outcomes if error is None and t > since)

    def wait_for(self, condition: str, predicate: object, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {condition}; outcomes so far: {self.summary()}"
            time.sleep(0.05)

    def summary(self) -> dict[str, object]:
        return {
            "calls": len(self.outcomes),
            "ok": self.successes(),
            "errors": sorted({str(e)[:160] for e in self.failures()}),
        }

    def assert_all_answers_right(self) -> None:
        answered = [(pixels, logits) for _, pixels, logits, error in self.outcomes if error is None]
        assert answered, "no answers at all"
        pixels = np.concatenate([p for p, _ in answered])
        logits = np.concatenate([lg for _, lg in answered])
        np.testing.assert_allclose(logits, self.server.reference(MODEL, pixels), rtol=1e-5, atol=1e-5)


def _load_model(server: ReliabilityServer, model: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/repository/models/{model}/load",
        data=b"",
        method="POST",
        headers=server.admin_headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _the_stub(server: ReliabilityServer) -> tuple[int, list[ProcessInfo]]:
    """The server's pid and the one Python stub of `MODEL` (its only instance)."""
    server_pid = server.server.pid  # type: ignore[attr-defined]
    stubs = stub_processes(server_pid, MODEL)
    assert len(stubs) == 1, f"expected one stub for {MODEL}, found {stubs}"
    return server_pid, stubs


def _assert_stub_replaced(server_pid: int, stubs: list[ProcessInfo]) -> None:
    """One stub of `MODEL` again, a new process."""
    new_stubs = stub_processes(server_pid, MODEL)
    assert len(new_stubs) == 1 and new_stubs[0].pid != stubs[0].pid, (stubs, new_stubs)


def test_killed_stub_without_watchdog_fails_clearly_until_reloaded(reliability_server: ReliabilityServer) -> None:
    """Triton alone: requests fail (INTERNAL, named instance; the client's small retry budget gives up
    clearly), no wrong answer; an admin reload of the model is what brings it back."""
    server_pid, stubs = _the_stub(reliability_server)
    settings = ClientSettings(
        url=reliability_server.grpc_url, protocol="grpc", retries=1, retry_budget_s=0.5, timeout_s=20
    )
    loop = LoadLoop(settings, reliability_server).start()
    try:
        loop.wait_for("10 answers before the fault", lambda: loop.successes() >= 10, 30)
        os.kill(stubs[0].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        loop.wait_for("requests to fail after the kill", lambda: len(loop.failures()) >= 2, 30)
        # the recovery an operator makes (token needed): unload + load, as the watchdog does. A plain load is
        # a no-op when Triton sees no change in the model's files.
        from attnserve.serving.watchdog import StubWatchdog

        StubWatchdog(reliability_server.server).reload(MODEL)  # type: ignore[arg-type]
        reloaded_at = time.monotonic()
        loop.wait_for(
            "10 answers after the reload",
            lambda: loop.answers_after(reloaded_at) >= 10,
            30,
        )
    finally:
        loop.stop()

    _assert_stub_replaced(server_pid, stubs)
    failures = loop.failures()
    assert failures, "killing the stub went unnoticed"
    assert any(f"Stub process '{MODEL}_0_0' is not healthy" in str(e) for e in failures), failures
    for error in failures:  # clear and named: the dead stub, or the model between unload and load
        dead_stub = f"Stub process '{MODEL}_0_0' is not healthy" in str(error) and error.status == "StatusCode.INTERNAL"
        reloading = f"'{MODEL}' has no available versions" in str(error)
        assert dead_stub or reloading, error
    failed_at = [t for t, *_, e in loop.outcomes if e is not None]
    assert min(failed_at) >= killed_at and max(failed_at) <= reloaded_at + 2.0, "failures outside the fault window"
    assert all(e is None for *_, e in loop.outcomes[-10:]), loop.summary()
    loop.assert_all_answers_right()
    print(f"\nstub kill without watchdog: {loop.summary()}")


def test_killed_stub_with_watchdog_is_bridged_by_client_retries(reliability_server: ReliabilityServer) -> None:
    """With `StubWatchdog` running, the model is reloaded by itself and the client's retries bridge the gap:
    no failure reaches the caller and every answer is right."""
    from attnserve.serving.watchdog import StubWatchdog

    server_pid, stubs = _the_stub(reliability_server)
    settings = ClientSettings(
        url=reliability_server.grpc_url,
        protocol="grpc",
        retries=20,
        backoff_s=0.05,
        backoff_max_s=0.5,
        retry_budget_s=30,
        timeout_s=20,
    )
    with StubWatchdog(reliability_server.server, interval_s=0.2) as watchdog:  # type: ignore[arg-type]
        loop = LoadLoop(settings, reliability_server).start()
        try:
            loop.wait_for("10 answers before the fault", lambda: loop.successes() >= 10, 30)
            os.kill(stubs[0].pid, signal.SIGKILL)
            killed_at = time.monotonic()
            loop.wait_for("the watchdog to reload the model", lambda: watchdog.reloads == [MODEL], 30)
            loop.wait_for(
                "10 answers after the kill",
                lambda: loop.answers_after(killed_at) >= 10,
                30,
            )
        finally:
            loop.stop()
    _assert_stub_replaced(server_pid, stubs)
    assert not loop.failures(), f"the client's retries should bridge the reload: {loop.summary()}"
    loop.assert_all_answers_right()
    print(f"\nstub kill with watchdog: {loop.summary()}; reloads {watchdog.reloads}")


def test_corrupt_model_fails_to_load_while_others_serve(reliability_server: ReliabilityServer) -> None:
    status, body = _load_model(reliability_server, "rel_broken")
    assert status == 400, f"loading a corrupt ONNX must fail: {status} {body}"
    message = json.loads(body)["error"]
    assert "rel_broken" in message, message
    settings = ClientSettings(url=reliability_server.http_url, protocol="http", retries=0)
    rng = np.random.default_rng(5)
    with TritonClient(settings) as client:
        for model in ("rel_light", "rel_heavy"):
            pixels = rng.integers(0, 256, (2, *reliability_server.specs[model].io.input_shape), dtype=np.uint8)
            logits = client.infer(model, {"pixels": pixels})["logits"]
            np.testing.assert_allclose(logits, reliability_server.reference(model, pixels), rtol=1e-4, atol=1e-5)
        with pytest.raises(InferenceError, match="rel_broken"):
            client.infer("rel_broken", {"pixels": pixels})
    print(f"\ncorrupt model load refused: {message[:300]}")


def test_corrupt_model_at_startup_fails_fast_naming_it(reliability_server: ReliabilityServer, tmp_path: Path) -> None:
    """Start-up with a corrupt model listed: the server exits (exit-on-error) and the error names the model."""
    from support.servers import local_server

    server = local_server(
        reliability_server.repository, ["rel_light", "rel_broken"], tmp_path / "server", exit_timeout_s=2
    )
    with pytest.raises(ServerError) as failed:
        with server:
            pass
    assert "rel_broken" in str(failed.value)
    assert not server.is_running


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_restart_is_bridged_by_client_retries(reliability_server: ReliabilityServer, protocol: str) -> None:
    """Stop and start the whole server mid-load: a client whose retry budget covers the downtime sees no
    failure and only right answers; a client with a small budget fails clearly (ServerUnavailableError)."""
    from attnserve.clients.status import ServerUnavailableError

    server = reliability_server.server
    url = reliability_server.grpc_url if protocol == "grpc" else reliability_server.http_url
    patient = ClientSettings(
        url=url, protocol=protocol, retries=100, backoff_s=0.05, backoff_max_s=0.5, retry_budget_s=60, timeout_s=20
    )
    impatient = ClientSettings(
        url=url, protocol=protocol, retries=2, backoff_s=0.05, backoff_max_s=0.1, retry_budget_s=0.3, timeout_s=5
    )
    loop = LoadLoop(patient, reliability_server).start()
    pixels = np.zeros((1, *reliability_server.specs[MODEL].io.input_shape), dtype=np.uint8)
    try:
        loop.wait_for("10 answers before the restart", lambda: loop.successes() >= 10, 30)
        stopped_at = time.monotonic()
        server.stop()  # type: ignore[attr-defined]
        with TritonClient(impatient) as client, pytest.raises(ServerUnavailableError) as gave_up:
            client.infer(MODEL, {"pixels": pixels})
        server.start()  # type: ignore[attr-defined]
        server.wait_ready()  # type: ignore[attr-defined]
        ready_at = time.monotonic()
        loop.wait_for(
            "10 answers after the restart",
            lambda: loop.answers_after(ready_at) >= 10,
            60,
        )
    finally:
        loop.stop()
        if not server.is_running:  # type: ignore[attr-defined]
            server.start()  # type: ignore[attr-defined]
            server.wait_ready()  # type: ignore[attr-defined]

    assert "gave up after" in str(gave_up.value) and gave_up.value.kind == "connection", gave_up.value
    assert not loop.failures(), f"the retry budget should bridge the restart: {loop.summary()}"
    loop.assert_all_answers_right()
    print(
        f"\nrestart ({protocol}): downtime {ready_at - stopped_at:.1f} s; {loop.summary()}; "
        f"impatient client: {gave_up.value}"
    )
