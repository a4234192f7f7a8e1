"""The load tester against the real server: its counts equal Triton's, open-loop rates are achieved.

Short runs (well under a second of load per window) on a tiny deployable of the shared `triton_server`.
"""

from __future__ import annotations

import csv
import json
from typing import Any

import pytest

from attnserve.clients.loadtest import LoadTestOptions, run_loadtest
from attnserve.clients.settings import ClientSettings
from attnserve.errors import UserInputError

pytestmark = pytest.mark.triton

MODEL = "cnn_cbam_digits"
SHORT = {"warmup_s": 0.3, "window_s": 0.5, "min_windows": 2, "max_windows": 3}


def grpc_settings(server: Any) -> ClientSettings:
    return ClientSettings(url=server.grpc_url, protocol="grpc")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_closed_loop_success_count_equals_triton_delta(triton_server: Any, protocol: str) -> None:
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    report = run_loadtest(
        ClientSettings(url=url, protocol=protocol), MODEL, LoadTestOptions(concurrency=[1, 6], **SHORT)
    )
    assert [level.concurrency for level in report.levels] == [1, 6]
    for level in report.levels:
        assert level.errors == {}
        assert level.client_success > 0
        assert level.client_success == level.server_success  # exact: both snapshots bracket drained phases
        assert level.server.execution_count > 0 and level.latency.count > 0
        assert level.latency.p50_ms <= level.latency.p99_ms <= level.latency.max_ms
    # with 6 requests in flight the dynamic batcher merges some of them
    assert report.levels[1].server.avg_batch_size > report.levels[0].server.avg_batch_size


def test_open_loop_achieves_a_sustainable_rate(triton_server: Any) -> None:
    target = 200.0
    report = run_loadtest(
        grpc_settings(triton_server),
        MODEL,
        LoadTestOptions(rates=[target], warmup_s=0.3, window_s=1.0, min_windows=3, max_windows=3),
    )
    level = report.levels[0]
    assert level.errors == {}
    assert abs(level.achieved_rate - target) / target <= 0.02, level.window_rates
    assert abs(level.send_rate - target) / target <= 0.02
    assert level.client_success == level.server_success


def test_worker_processes_split_the_load_and_still_agree(triton_server: Any) -> None:
    report = run_loadtest(grpc_settings(triton_server), MODEL, LoadTestOptions(concurrency=[4], workers=2, **SHORT))
    level = report.levels[0]
    assert report.workers == 2 and level.errors == {}
    assert level.client_success == level.server_success > 0


def test_slo_search_stops_at_the_first_miss_and_outputs_are_written(triton_server: Any, tmp_path) -> None:
    generous = run_loadtest(
        grpc_settings(triton_server), MODEL, LoadTestOptions(concurrency=[1, 2], slo_p99_ms=60_000, **SHORT)
    )
    assert generous.slo_best_level == 2 and len(generous.levels) == 2
    impossible = run_loadtest(
        grpc_settings(triton_server), MODEL, LoadTestOptions(concurrency=[1, 2], slo_p99_ms=1e-6, **SHORT)
    )
    assert impossible.slo_best_level is None and len(impossible.levels) == 1

    json_path = generous.write_json(tmp_path / "report.json")
    csv_path = generous.write_csv(tmp_path / "report.csv")
    png_path = generous.write_plot(tmp_path / "report.png")
    assert json.loads(json_path.read_text())["levels"][1]["concurrency"] == 2
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["Concurrency"] for row in rows] == ["1", "2"]
    assert float(rows[0]["Inferences/Second"]) > 0 and int(rows[0]["p99 latency"]) > 0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_options_are_refused_before_any_load(triton_server: Any) -> None:
    with pytest.raises(UserInputError, match="exactly one of concurrency"):
        run_loadtest(grpc_settings(triton_server), MODEL, LoadTestOptions(concurrency=[1], rates=[10.0]))
    with pytest.raises(UserInputError, match=r"batch size must be 1\.\.16"):
        run_loadtest(grpc_settings(triton_server), MODEL, LoadTestOptions(concurrency=[1], batch_size=99, **SHORT))


def test_a_failing_worker_is_not_a_user_error(triton_server: Any) -> None:
    """Regression: any failure of a spawned worker surfaced as `UserInputError` ("you got it wrong")."""
    from attnserve.errors import WorkerError
    from attnserve.serving.server import free_port

    # the caller's mistake, found inside the workers, stays the caller's mistake
    with pytest.raises(UserInputError, match=r"batch size must be 1\.\.16"):
        run_loadtest(
            grpc_settings(triton_server), MODEL, LoadTestOptions(concurrency=[2], batch_size=99, workers=2, **SHORT)
        )
    # a server that is not there is a failure of the run, not of the request
    nowhere = ClientSettings(url=f"127.0.0.1:{free_port()}", protocol="grpc", retries=0, retry_budget_s=0.5)
    with pytest.raises(WorkerError, match="load-test worker failed") as failed:
        run_loadtest(nowhere, MODEL, LoadTestOptions(concurrency=[2], workers=2, **SHORT))
    assert not isinstance(failed.value, UserInputError)
