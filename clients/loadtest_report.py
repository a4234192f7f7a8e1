"""Typed results of a load test, and their outputs: JSON, perf_analyzer-style CSV, a latency-vs-throughput PNG."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

LoadMode = Literal["concurrency", "rate"]


class LatencyStats(BaseModel):
    """Latency percentiles in milliseconds over one measured span (open loop: from the intended send time)."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, latencies_s: Sequence[float] | np.ndarray) -> LatencyStats:
        values = np.asarray(latencies_s, dtype=np.float64) * 1e3
        if values.size == 0:
            return cls(count=0, mean_ms=0, p50_ms=0, p90_ms=0, p95_ms=0, p99_ms=0, p999_ms=0, max_ms=0)
        p50, p90, p95, p99, p999 = np.percentile(values, [50, 90, 95, 99, 99.9])
        return cls(
            count=int(values.size),
            mean_ms=float(values.mean()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p95_ms=float(p95),
            p99_ms=float(p99),
            p999_ms=float(p999),
            max_ms=float(values.max()),
        )


class ServerBreakdown(BaseModel):
    """Deltas of Triton's inference statistics over the measured span (per-request averages in microseconds)."""

    success_count: int = 0
    fail_count: int = 0
    inference_count: int = 0
    """Samples (a batch-of-4 request counts 4)."""
    execution_count: int = 0
    avg_batch_size: float = 0.0
    """Samples per model execution: > request batch size means dynamic batching merged requests."""
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0

    @classmethod
    def from_delta(cls, before: Mapping[str, Any], after: Mapping[str, Any]) -> ServerBreakdown:
        """Build from two `model_stats` entries (JSON of either protocol; gRPC writes int64 as strings)."""

        def value(stats: Mapping[str, Any], *path: str) -> int:
            node: Any = stats
            for key in path:
                node = node.get(key, {}) if isinstance(node, Mapping) else {}
            return int(node) if node not in ({}, None, "") else 0

        def delta(*path: str) -> int:
            return value(after, *path) - value(before, *path)

        def average_us(stage: str) -> float:
            count = delta("inference_stats", stage, "count")
            return delta("inference_stats", stage, "ns") / count / 1e3 if count else 0.0

        executions = delta("execution_count")
        inferences = delta("inference_count")
        return cls(
            success_count=delta("inference_stats", "success", "count"),
            fail_count=delta("inference_stats", "fail", "count"),
            inference_count=inferences,
            execution_count=executions,
            avg_batch_size=inferences / executions if executions else 0.0,
            queue_us=average_us("queue"),
            compute_input_us=average_us("compute_input"),
            compute_infer_us=average_us("compute_infer"),
            compute_output_us=average_us("compute_output"),
        )


class LevelResult(BaseModel):
    """One point of a sweep: a concurrency (closed loop) or a target rate (open loop)."""

    mode: LoadMode
    concurrency: int | None = None
    target_rate: float | None = None
    """Requests/s asked for (open loop)."""
    achieved_rate: float
    """Successful responses per second completed inside the measured windows."""
    send_rate: float
    """Requests actually sent per second inside the measured windows."""
    throughput_infer_s: float
    """Samples per second (achieved_rate x batch size)."""
    latency: LatencyStats
    windows: int
    stable: bool
    stability_pct: float
    """Largest deviation of the last windows' throughput and p99 from their mean, in percent."""
    measured_s: float
    client_success: int
    """Successful requests sent after the first statistics snapshot (all completed before the second)."""
    server_success: int
    """Triton's success-count delta over the same span."""
    errors: dict[str, int] = Field(default_factory=dict)
    """Failed requests by kind: rejected (UNAVAILABLE), connection, timeout, failed, client_overload."""
    server: ServerBreakdown = Field(default_factory=ServerBreakdown)
    client_cpu_us_per_request: float = 0.0
    """CPU time of the load generator (all its processes) per request sent."""
    window_rates: list[float] = Field(default_factory=list)

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.mode == "concurrency" else f"{self.target_rate:g}/s"


class LoadTestReport(BaseModel):
    """A whole load test: settings and one `LevelResult` per level."""

    model: str
    protocol: str
    url: str
    mode: LoadMode
    poisson: bool = False
    batch_size: int = 1
    workers: int = 1
    warmup_s: float
    window_s: float
    stability_target_pct: float
    levels: list[LevelResult] = Field(default_factory=list)
    slo_p99_ms: float | None = None
    slo_best_level: float | None = None
    """Highest concurrency / rate whose p99 met the SLO (None when none did or no SLO was given)."""
    note: str = ""

    # outputs -------------------------------------------------------------------------------------
    def write_json(self, path: Path) -> Path:
        """Write the report as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    def write_csv(self, path: Path) -> Path:
        """perf_analyzer-style CSV (latencies in microseconds).

        `Network+Server Send/Recv` is the mean client latency minus Triton's queue and compute times; this
        tool does not split client send/recv out of it, so those two columns are empty.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        first = "Concurrency" if self.mode == "concurrency" else "Request Rate"
        columns = [
            first,
            "Inferences/Second",
            "Client Send",
            "Network+Server Send/Recv",
            "Server Queue",
            "Server Compute Input",
            "Server Compute Infer",
            "Server Compute Output",
            "Client Recv",
            "p50 latency",
            "p90 latency",
            "p95 latency",
            "p99 latency",
            "Avg latency",
            "request/response",
            "response wait",
            "Avg Batch Size",
            "Errors",
        ]
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for level in self.levels:
                server = level.server
                server_us = (
                    server.queue_us + server.compute_input_us + server.compute_infer_us + server.compute_output_us
                )
                mean_us = level.latency.mean_ms * 1e3
                writer.writerow(
                    [
                        level.concurrency if self.mode == "concurrency" else level.target_rate,
                        round(level.throughput_infer_s, 2),
                        "",
                        round(max(mean_us - server_us, 0.0)),
                        round(server.queue_us),
                        round(server.compute_input_us),
                        round(server.compute_infer_us),
                        round(server.compute_output_us),
                        "",
                        round(level.latency.p50_ms * 1e3),
                        round(level.latency.p90_ms * 1e3),
                        round(level.latency.p95_ms * 1e3),
                        round(level.latency.p99_ms * 1e3),
                        round(mean_us),
                        level.latency.count,
                        "",
                        round(server.avg_batch_size, 2),
                        sum(level.errors.values()),
                    ]
                )
        return path

    def write_plot(self, path: Path) -> Path:
        """PNG of latency percentiles (p50/p90/p99) against achieved throughput, one point per level."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        throughput = [level.achieved_rate for level in self.levels]
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for key, style in (("p50_ms", "o-"), ("p90_ms", "s--"), ("p99_ms", "^-")):
            axes.plot(
                throughput, [getattr(level.latency, key) for level in self.levels], style, label=key.removesuffix("_ms")
            )
        for level, x in zip(self.levels, throughput):
            axes.annotate(level.label, (x, level.latency.p99_ms), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if self.slo_p99_ms is not None:
            axes.axhline(self.slo_p99_ms, color="red", linewidth=0.8, linestyle=":", label="p99 SLO")
        axes.set_xlabel("achieved requests/s")
        axes.set_ylabel("latency (ms)")
        axes.set_title(f"{self.model} over {self.protocol} ({self.mode} sweep, batch {self.batch_size})")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path
