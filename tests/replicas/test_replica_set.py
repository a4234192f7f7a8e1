"""Two real Triton replicas behind a real HAProxy: per-request balancing, equal answers, the load tester's count,
admission control under 3x overload (with Prometheus evaluating the HPA's query), and a SIGKILLed replica.

Bounded: every loop has a request count and a timeout; the module runs in about a minute on 2 shared cores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time

import numpy as np
import pytest

from .conftest import MAXCONN_PER_REPLICA, require_binary
from .helpers import WINDOW_S, Prometheus, closed_loop, hpa_query, hpa_target, open_loop, settled_counts

pytestmark = [pytest.mark.triton, pytest.mark.slow]
log = logging.getLogger(__name__)


def _pixels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, *shape), dtype=np.uint8)


def _settings(url: str, protocol: str, **extra):
    from attnserve.clients.settings import ClientSettings

    return ClientSettings(url=url, protocol=protocol, **extra)


@pytest.fixture(scope="module")
def prometheus(replica_set, tmp_path_factory: pytest.TempPathFactory):
    """Prometheus scraping every replica's metrics port, started before any load (idle baseline)."""
    from attnserve.serving.server import free_port

    binary = require_binary("prometheus", "prometheus")
    targets = [server.metrics_url.removeprefix("http://").removesuffix("/metrics") for server in replica_set.servers]
    server = Prometheus(binary, targets, tmp_path_factory.mktemp("prometheus"), free_port())
    server.start()
    try:
        server.wait_scraped(samples=3)
        yield server
    finally:
        server.stop()


def test_idle_replicas_read_below_the_hpa_target_in_prometheus(prometheus) -> None:
    values = prometheus.query(hpa_query())
    assert len(values) == len(prometheus.targets), values  # one value per replica (pod), from real scrapes
    assert max(values.values()) < hpa_target(), values


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_requests_reach_both_replicas_with_the_direct_answer(replica_set, replica_repository, protocol) -> None:
    from attnserve.clients.client import TritonClient

    pixels = _pixels((3, 8, 8), seed=11)
    urls = [server.http_url for server in replica_set.servers]
    direct_url = replica_set.servers[0].http_url if protocol == "http" else replica_set.servers[0].grpc_url
    with TritonClient(_settings(direct_url, protocol)) as direct:
        reference = direct.infer("rep_light", {"pixels": pixels})["logits"]
    np.testing.assert_allclose(reference, replica_repository.reference("rep_light", pixels), rtol=1e-5, atol=1e-5)
    before = settled_counts(urls, "rep_light")
    lb_url = replica_set.http_url if protocol == "http" else replica_set.grpc_url
    with TritonClient(_settings(lb_url, protocol)) as client:  # one connection: balancing must be per request
        answers = [client.infer("rep_light", {"pixels": pixels})["logits"] for _ in range(8)]
    after = settled_counts(urls, "rep_light")
    deltas = [a - b for a, b in zip(after, before)]
    assert all(delta >= 2 for delta in deltas), f"per-replica success deltas {deltas}: not balanced per request"
    assert sum(deltas) == 8, deltas
    for answer in answers:
        np.testing.assert_array_equal(answer, reference)


def test_load_tester_success_count_equals_the_replicas_deltas(replica_set) -> None:
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest

    urls = [server.http_url for server in replica_set.servers]
    before = settled_counts(urls, "rep_light")
    report = run_loadtest(
        _settings(replica_set.grpc_url, "grpc"),
        "rep_light",
        LoadTestOptions(concurrency=[4], warmup_s=0.0, window_s=0.5, min_windows=2, max_windows=3),
    )
    after = settled_counts(urls, "rep_light")
    level = report.levels[0]
    deltas = [a - b for a, b in zip(after, before)]
    assert not level.errors, level.errors
    assert level.client_success > 0 and min(deltas) > 0, deltas
    assert level.client_success == sum(deltas), (level.client_success, deltas)


async def _unloaded_and_capacity(settings, pixels: np.ndarray) -> tuple[float, float]:
    """Unloaded p99 (sequential, 40 requests) and capacity (closed loop on every admission slot, 80 requests)."""
    from attnserve.clients.client import AsyncTritonClient

    async with AsyncTritonClient(settings) as client:
        await closed_loop(client, "rep_heavy", pixels, 8, 1)  # warm-up
        sequential = await closed_loop(client, "rep_heavy", pixels, 40, 1)
        started = time.perf_counter()
        loaded = await closed_loop(client, "rep_heavy", pixels, 80, 2 * MAXCONN_PER_REPLICA)
        capacity = len(loaded) / (time.perf_counter() - started)
    assert all(o.kind is None for o in sequential + loaded)
    return float(np.percentile([o.latency_s for o in sequential], 99)), capacity


async def _burst(url: str, pixels: np.ndarray, rate: float, seconds: float):
    from attnserve.clients.client import make_transport, transport_module

    transport = make_transport(_settings(url, "grpc"), asynchronous=True)
    try:
        return await open_loop(transport, transport_module("grpc", True), "rep_heavy", pixels, rate, seconds)
    finally:
        await transport.close()


def _fast_enough(accepted: list[float], rejected: list[float], unloaded_p99_s: float) -> bool:
    """The asserted latency verdict: rejections within 20 ms (median), accepted p99 within 5x the unloaded p99."""
    if not (accepted and rejected):
        return False
    return bool(np.median(rejected) <= 0.020 and np.percentile(accepted, 99) <= 5 * unloaded_p99_s)


def _p(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q) * 1e3) if values else None


def test_overload_is_rejected_fast_and_accepted_requests_stay_fast(replica_set, prometheus, tmp_path) -> None:
    pixels = _pixels((1, 64, 256), seed=12)
    unloaded_p99, capacity = asyncio.run(_unloaded_and_capacity(_settings(replica_set.grpc_url, "grpc"), pixels))
    rate = 3.5 * capacity
    # The load generator, HAProxy and both replicas share 2 cores: one scheduler stall of ~0.2 s lands in the
    # accepted p99 of a 3 s burst (seen once in a fresh-clone CI run: 231 ms vs 5 x 16.6 ms). One more burst is
    # allowed when the first one's tail misses; an unbounded queue misses by far more every time (p99 in seconds).
    for _attempt in range(2):
        outcomes, send_rate = asyncio.run(_burst(replica_set.grpc_url, pixels, rate, seconds=3.0))
        accepted = [o.latency_s for o in outcomes if o.kind is None]
        rejected = [o.latency_s for o in outcomes if o.kind == "rejected"]
        if _fast_enough(accepted, rejected, unloaded_p99):
            break
        log.warning("overload burst: a latency verdict missed (a stall on the shared cores?), measuring once more")
    other = [o.kind for o in outcomes if o.kind not in (None, "rejected")]
    burst_end = time.time()
    time.sleep(2.5)  # Prometheus's next scrapes see the burst's counters
    # the HPA's metric as it read inside the burst: its window (WINDOW_S) ending 0.5-1 s before the end. A scrape
    # that comes late under the burst's load leaves a replica with one sample in a window, so no rate at that
    # instant (seen once in a fresh-clone run): each replica's reading is the highest of three instants.
    readings = [prometheus.query(hpa_query(), at=burst_end - offset) for offset in (0.5, 0.75, 1.0)]
    hpa = {pod: max(reading[pod] for reading in readings if pod in reading) for pod in set().union(*readings)}
    assert WINDOW_S + 1.0 <= 3.0  # every window lies inside the 3 s burst
    # contrast: half the burst rate (the same load per replica) for 2 s straight to one replica's unbounded queue
    direct, _ = asyncio.run(_burst(replica_set.servers[1].grpc_url, pixels, rate / 2, seconds=2.0))
    direct_ok = [o.latency_s for o in direct if o.kind is None]
    record = {
        "capacity_rps": capacity,
        "offered_rps": rate,
        "send_rps": send_rate,
        "requests": len(outcomes),
        "accepted": len(accepted),
        "rejected": len(rejected),
        "other_errors": other,
        "median_rejection_ms": _p(rejected, 50),
        "accepted_p99_ms": _p(accepted, 99),
        "unloaded_p99_ms": unloaded_p99 * 1e3,
        "direct_unbounded": {
            "requests": len(direct),
            "ok": len(direct_ok),
            "p50_ms": _p(direct_ok, 50),
            "p99_ms": _p(direct_ok, 99),
        },
        "hpa_metric": hpa,
        "hpa_target": hpa_target(),
        "loadavg": os.getloadavg(),
    }
    log.warning("overload: %s", json.dumps(record))
    assert send_rate >= 3 * capacity, record  # the client really offered >= 3x what the set can do
    assert not other, record
    assert rejected and accepted, record
    assert np.median(rejected) <= 0.020, record
    # with the replicas on their own CPU shares, 2.5-3.0x on a quiet machine (4 runs, docs/replicas.md)
    assert np.percentile(accepted, 99) <= 5 * unloaded_p99, record
    assert len(hpa) == 2 and np.mean(list(hpa.values())) > hpa_target(), record


def test_sigkilled_replica_loses_no_request_and_is_restarted(replica_set, replica_repository) -> None:
    from attnserve.clients.client import AsyncTritonClient, TritonClient

    pixels = _pixels((3, 8, 8), seed=13)
    reference = replica_repository.reference("rep_light", pixels)
    victim = replica_set.servers[1]
    old_pid, restarts_before = victim.pid, len(replica_set.restarts)
    requests = 2000

    async def run() -> list:
        # With one replica down, the admission limit rejects part of the closed loop's 8 requests in flight at
        # once (503 / UNAVAILABLE, by design): the client retries them, with a budget long enough for that.
        settings = _settings(replica_set.grpc_url, "grpc", retries=30, backoff_max_s=0.2, retry_budget_s=20)
        async with AsyncTritonClient(settings) as client:
            load = asyncio.create_task(closed_loop(client, "rep_light", pixels, requests, 8))
            await asyncio.sleep(0.5)  # mid-run
            os.kill(old_pid, signal.SIGKILL)
            return await asyncio.wait_for(load, timeout=120)

    outcomes = asyncio.run(run())
    failed = [o.kind for o in outcomes if o.kind is not None]
    assert len(outcomes) == requests and not failed, f"{len(failed)} failed: {set(failed)}"
    for outcome in outcomes:
        np.testing.assert_allclose(outcome.logits, reference, rtol=1e-5, atol=1e-5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        len(replica_set.restarts) > restarts_before and replica_set.restarts[-1].ready_at
    ):
        time.sleep(0.2)
    restart = replica_set.restarts[-1]
    log.warning(
        "SIGKILL run: %d requests, %d ok; restart %.1f s", requests, len(outcomes) - len(failed), restart.seconds
    )
    assert restart.replica == 1 and restart.seconds is not None and restart.seconds <= 15, restart
    assert victim.pid != old_pid and victim.is_running
    with TritonClient(_settings(victim.grpc_url, "grpc")) as direct:
        np.testing.assert_allclose(direct.infer("rep_light", {"pixels": pixels})["logits"], reference, atol=1e-5)
