"""Overload: a bounded queue turns traffic beyond capacity into fast UNAVAILABLE rejections, not unbounded latency.

`rel_heavy` (conftest) has `max_batch_size` 4, `max_queue_size` 8 and `queue_timeout_us` 250 ms with
`timeout_action: REJECT`, all rendered from its ModelSpec by the export's repository writer. Its capacity is
measured first (closed loop), then the load tester offers an open-loop rate several times above it. The figures
are printed (run with `-s`) and attached to the test report as properties.

The latency bound is the behaviour under test, so it is the one time assertion in the suite, and generous:
queue timeout + a compute margin for a batch on two busy cores.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from .conftest import ReliabilityServer

pytestmark = pytest.mark.triton

MODEL = "rel_heavy"
UNBOUNDED_MODEL = "rel_heavy_unbounded"
COMPUTE_MARGIN_MS = 1_500.0
"""Room for one batch's compute, Python-backend overhead and scheduling noise on 2 shared cores."""
OVERLOAD_FACTOR = 4.0
MIN_OFFERED_RATE = 300.0
MAX_OFFERED_RATE = 600.0
"""The load generator shares the 2 cores with Triton: beyond this it mostly starves the model it measures."""
BURST_REQUESTS = 150
BURST_GAP_S = 0.002
BURST_WAVE = 5
UNBOUNDED_BURST = 400


def _queue_bounds(server: ReliabilityServer) -> tuple[int, float]:
    spec = server.specs[MODEL]
    assert spec.serving.max_queue_size > 0 and spec.serving.queue_timeout_us > 0, (
        "the overload tests need a bounded queue"
    )
    return spec.serving.max_queue_size, spec.serving.queue_timeout_us / 1e3


def test_served_config_has_the_specs_queue_policy(reliability_server: ReliabilityServer) -> None:
    """What Triton actually loaded carries the spec's bounded queue with REJECT."""
    import tritonclient.http as httpclient

    max_queue_size, timeout_ms = _queue_bounds(reliability_server)
    client = httpclient.InferenceServerClient(reliability_server.http_url)
    try:
        policy = client.get_model_config(MODEL)["dynamic_batching"]["default_queue_policy"]
    finally:
        client.close()
    assert policy["timeout_action"] == "REJECT"
    assert int(policy["max_queue_size"]) == max_queue_size
    assert int(policy["default_timeout_microseconds"]) == int(timeout_ms * 1e3)


def test_open_loop_overload_is_rejected_not_queued(
    reliability_server: ReliabilityServer, record_property: Callable[[str, object], None]
) -> None:
    """The load tester at several times capacity: rejections counted apart from failures; p99 stays bounded."""
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest
    from attnserve.clients.settings import ClientSettings

    _, timeout_ms = _queue_bounds(reliability_server)
    settings = ClientSettings(url=reliability_server.grpc_url, protocol="grpc", retries=0, timeout_s=30)

    # Capacity is measured on the unbounded twin (same ONNX, same batching): on Triton 2.51 a bounded queue
    # policy stalls the batcher ~0.5 s now and then (ModelSpec.max_queue_size), which would understate it.
    closed = run_loadtest(
        settings,
        UNBOUNDED_MODEL,
        LoadTestOptions(concurrency=[4], warmup_s=0.3, window_s=1.0, min_windows=1, max_windows=2),
    ).levels[0]
    capacity = closed.achieved_rate
    assert capacity > 0, f"the closed loop (one batch in flight) served nothing: {closed.errors}"

    offered = min(max(OVERLOAD_FACTOR * capacity, MIN_OFFERED_RATE), MAX_OFFERED_RATE)
    level = run_loadtest(
        settings, MODEL, LoadTestOptions(rates=[offered], warmup_s=0.3, window_s=1.0, min_windows=2, max_windows=2)
    ).levels[0]
    rejected = level.errors.get("rejected", 0)
    other_errors = {kind: count for kind, count in level.errors.items() if kind != "rejected"}
    figures: dict[str, object] = {
        "capacity_closed_loop_c4_req_s": round(capacity, 1),
        "offered_rate_req_s": round(offered, 1),
        "send_rate_req_s": round(level.send_rate, 1),
        "accepted_rate_req_s": round(level.achieved_rate, 1),
        "accepted": level.client_success,
        "rejected": rejected,
        "other_errors": other_errors,
        "p50_accepted_ms": round(level.latency.p50_ms, 1),
        "p99_accepted_ms": round(level.latency.p99_ms, 1),
        "max_accepted_ms": round(level.latency.max_ms, 1),
        "queue_timeout_ms": timeout_ms,
        "server_avg_queue_us": round(level.server.queue_us, 1),
        "server_avg_batch": round(level.server.avg_batch_size, 2),
    }
    for key, value in figures.items():
        record_property(key, value)

    print(f"\noverload figures: {figures}")

    assert rejected > 0, f"offered {offered:.0f}/s against ~{capacity:.0f}/s and nothing was rejected: {figures}"
    assert not other_errors, f"overload must be answered with rejections only, got {other_errors}"
    assert level.client_success > 0, "some requests must still be served under overload"
    assert level.server_success == level.client_success, "client and Triton disagree on the successes"
    assert level.latency.p99_ms <= timeout_ms + COMPUTE_MARGIN_MS, (
        f"p99 of accepted requests {level.latency.p99_ms:.0f} ms exceeds queue timeout {timeout_ms:.0f} ms "
        f"+ {COMPUTE_MARGIN_MS:.0f} ms compute margin: the queue is not bounded ({figures})"
    )


def test_burst_rejections_are_fast_and_accepted_answers_correct(reliability_server: ReliabilityServer) -> None:
    """A burst at ~2,500 req/s (client-limited): rejections are UNAVAILABLE with Triton's queue message, arrive quickly, and every
    accepted request returns exactly the in-process ONNX Runtime answer for its own input."""
    import tritonclient.grpc.aio as grpc_aio
    from tritonclient.utils import InferenceServerException

    max_queue_size, timeout_ms = _queue_bounds(reliability_server)
    spec = reliability_server.specs[MODEL]
    rng = np.random.default_rng(7)
    samples = rng.integers(0, 256, (BURST_REQUESTS, 1, *spec.io.input_shape), dtype=np.uint8)

    async def burst(model: str, count: int = BURST_REQUESTS) -> list[tuple[int, str, float, np.ndarray | None, str]]:
        client = grpc_aio.InferenceServerClient(reliability_server.grpc_url)

        async def one(index: int) -> tuple[int, str, float, np.ndarray | None, str]:
            tensor = grpc_aio.InferInput("pixels", list(samples[index].shape), "UINT8")
            tensor.set_data_from_numpy(samples[index])
            started = time.perf_counter()
            try:
                result = await client.infer(model, [tensor], client_timeout=60)
                return index, "OK", time.perf_counter() - started, result.as_numpy("logits"), ""
            except InferenceServerException as exc:
                return index, str(exc.status()), time.perf_counter() - started, None, exc.message() or ""

        try:
            tasks = []
            for index in range(count):  # open loop: waves of BURST_WAVE every BURST_GAP_S, far above capacity
                tasks.append(asyncio.create_task(one(index % BURST_REQUESTS)))
                if index % BURST_WAVE == BURST_WAVE - 1:
                    await asyncio.sleep(BURST_GAP_S)
            return await asyncio.gather(*tasks)
        finally:
            await client.close()

    outcomes = asyncio.run(burst(MODEL))
    unbounded = asyncio.run(burst(UNBOUNDED_MODEL, UNBOUNDED_BURST))  # contrast: a longer burst, no queue bound
    unbounded_ms = np.array([s * 1e3 for _, status, s, _, _ in unbounded if status == "OK"])
    statuses = Counter(status for _, status, _, _, _ in outcomes)
    messages = Counter(message.split("] ")[-1] for _, status, _, _, message in outcomes if status != "OK")
    accepted = [(i, logits) for i, status, _, logits, _ in outcomes if status == "OK"]
    queue_full_ms = np.array(
        [
            s * 1e3
            for _, status, s, _, message in outcomes
            if status != "OK" and message.endswith("Exceeds maximum queue size")
        ]
    )
    accepted_ms = np.array([s * 1e3 for _, status, s, _, _ in outcomes if status == "OK"])
    print(
        f"\nburst of {BURST_REQUESTS}: {dict(statuses)}; messages {dict(messages)}; queue-full rejection p50 "
        f"{np.median(queue_full_ms) if queue_full_ms.size else float('nan'):.1f} ms; accepted max "
        f"{accepted_ms.max() if accepted_ms.size else float('nan'):.1f} ms; unbounded queue: "
        f"{unbounded_ms.size} accepted, max {unbounded_ms.max() if unbounded_ms.size else float('nan'):.1f} ms"
    )

    assert set(statuses) <= {"OK", "StatusCode.UNAVAILABLE"}, statuses
    assert statuses["StatusCode.UNAVAILABLE"] > 0 and accepted, statuses
    assert set(messages) <= {"Exceeds maximum queue size", "Request timeout expired"}, messages
    assert messages["Exceeds maximum queue size"] > 0, messages
    # fast rejection: a full queue refuses at once, without waiting for the queue timeout (requests refused by
    # the timeout itself have waited for it by definition, and Triton notices expired ones lazily)
    assert float(np.median(queue_full_ms)) < timeout_ms, (
        f"queue-full rejections are slow: {np.median(queue_full_ms):.0f} ms"
    )
    assert float(accepted_ms.max()) <= timeout_ms + COMPUTE_MARGIN_MS
    # without the bound every request is queued, and the last ones wait for the whole backlog
    assert unbounded_ms.size == UNBOUNDED_BURST, Counter(status for _, status, *_ in unbounded)
    assert float(unbounded_ms.max()) > timeout_ms, f"unbounded queue, max wait {unbounded_ms.max():.0f} ms"
    indices = np.array([i for i, _ in accepted])
    expected = reliability_server.reference(MODEL, samples[indices, 0])
    np.testing.assert_allclose(np.concatenate([logits for _, logits in accepted]), expected, rtol=1e-4, atol=1e-5)


def test_every_served_model_has_its_specs_queue_policy(triton_server: object) -> None:
    """On the shared server, every model Triton batches (ensembles excepted: they schedule, not queue) has the
    queue policy its spec asks for: REJECT with the spec's bounds where the spec bounds the queue, none where it
    does not (the default; ModelSpec.max_queue_size says why). The CPU runtime view may not drop or add one."""
    import tritonclient.http as httpclient

    from attnserve.repository.entries import read_entry_spec

    client = httpclient.InferenceServerClient(triton_server.http_url)  # type: ignore[attr-defined]
    try:
        checked = []
        for name in triton_server.loaded:  # type: ignore[attr-defined]
            config = client.get_model_config(name)
            if config.get("platform") == "ensemble" or "dynamic_batching" not in config:
                continue
            spec_path = triton_server.repository / name  # type: ignore[attr-defined]
            if not (spec_path / "spec.json").is_file():
                continue  # python pre-processing entries carry no ModelSpec of their own
            spec = read_entry_spec(spec_path)
            policy = config["dynamic_batching"].get("default_queue_policy")
            if spec.serving.max_queue_size or spec.serving.queue_timeout_us:
                assert policy and policy["timeout_action"] == "REJECT", (name, policy)
                assert int(policy["max_queue_size"]) == spec.serving.max_queue_size, (name, policy)
                assert int(policy["default_timeout_microseconds"]) == spec.serving.queue_timeout_us, (name, policy)
            else:
                assert not policy or (
                    int(policy.get("max_queue_size", 0)) == 0
                    and int(policy.get("default_timeout_microseconds", 0)) == 0
                ), (name, policy)
            checked.append(name)
    finally:
        client.close()
    assert checked, "no batched model on the shared server"
