"""What the replica-set tests share: per-replica Triton counters, a real Prometheus, bounded load loops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_VALUES = ROOT / "deploy" / "kubernetes" / "prometheus-adapter-values.yaml"
CHART_VALUES = ROOT / "deploy" / "kubernetes" / "attnserve" / "values.yaml"


# ---------------------------------------------------------------------------------------------------------
# Triton's own counters, read on each replica directly (never through the load balancer)
# ---------------------------------------------------------------------------------------------------------
def success_count(http_url: str, model: str) -> int:
    """Triton's successful-request counter for `model` on one server (its HTTP statistics API)."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=5) as response:
        stats = json.load(response)
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def settled_counts(http_urls: list[str], model: str, timeout_s: float = 5.0) -> list[int]:
    """Each server's success count once two reads 0.2 s apart agree (Triton counts after replying)."""
    deadline = time.monotonic() + timeout_s
    last = [success_count(url, model) for url in http_urls]
    while time.monotonic() < deadline:
        time.sleep(0.2)
        latest = [success_count(url, model) for url in http_urls]
        if latest == last:
            return latest
        last = latest
    return last


# ---------------------------------------------------------------------------------------------------------
# Prometheus (the Debian binary) scraping every replica
# ---------------------------------------------------------------------------------------------------------
RECORDING_RULES = ROOT / "deploy" / "kubernetes" / "attnserve" / "files" / "recording_rules.yaml"
SCRAPE_S = 1
WINDOW_S = 2
"""The rules' 1m windows (4 scrapes at the chart's 15 s) read as 2 s here (2 scrapes at 1 s): short enough to sit
inside the tests' 3 s overload burst."""


def hpa_query() -> str:
    """prometheus-adapter's metricsQuery from the chart's adapter values, placeholders filled as the adapter does:
    `<<.Series>>` is the recorded series its seriesQuery names, `<<.LabelMatchers>>` selects the namespace,
    `<<.GroupBy>>` is the pod (each replica is scraped with namespace/pod labels, as the ServiceMonitor does)."""
    rule = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"][0]
    series = rule["seriesQuery"].split("{")[0].strip("'\" ")
    query = rule["metricsQuery"].replace("<<.Series>>", series)
    return query.replace("<<.LabelMatchers>>", 'namespace="local"').replace("<<.GroupBy>>", "pod")


def hpa_target() -> float:
    """The HPA's target average value from the chart's values (a Kubernetes quantity such as "600m")."""
    quantity = str(yaml.safe_load(CHART_VALUES.read_text())["autoscaling"]["targetAverageValue"])
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@dataclass
class Prometheus:
    """A real Prometheus process scraping `targets` every second (loopback, free port, its own data folder)."""

    binary: str
    targets: list[str]
    work_dir: Path
    port: int
    job: str = "attnserve"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # the chart's recording rules, windows shortened with the scrape interval (WINDOW_S)
        rules = self.work_dir / "recording_rules.yaml"
        rules.write_text(RECORDING_RULES.read_text().replace("[1m", f"[{WINDOW_S}s"))
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "static_configs": [
                        {"targets": [target], "labels": {"namespace": "local", "pod": target}}
                        for target in self.targets
                    ],
                }
            ],
        }
        (self.work_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        with open(self.work_dir / "prometheus.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.work_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.work_dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.work_dir / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"Prometheus not ready in {timeout_s} s")

    def query(self, promql: str, at: float | None = None) -> dict[str, float]:
        """Instant query through Prometheus's HTTP API (at a past unix time `at`, else now): {pod or instance: value}."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, **({"time": at} if at else {})})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return {
            r["metric"].get("pod", r["metric"].get("instance", "")): float(r["value"][1])
            for r in body["data"]["result"]
        }

    def wait_scraped(self, samples: int = 3, timeout_s: float = 30.0) -> None:
        """Until every target has `samples` scrapes of Triton's queue counter."""
        deadline = time.monotonic() + timeout_s
        promql = f'count_over_time(nv_inference_queue_duration_us{{job="{self.job}"}}[1m])'
        while time.monotonic() < deadline:
            counts: dict[str, float] = {}
            for instance, value in self.query(promql).items():
                counts[instance] = min(counts.get(instance, value), value)
            if len(counts) == len(self.targets) and min(counts.values()) >= samples:
                return
            time.sleep(0.5)
        raise AssertionError(f"Prometheus did not scrape {self.targets} {samples} times in {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# ---------------------------------------------------------------------------------------------------------
# bounded load loops (asyncio, tritonclient through the project's transport)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    latency_s: float
    kind: str | None  # None = success; else classify_exception's kind
    logits: np.ndarray | None = None


async def closed_loop(client: Any, model: str, pixels: np.ndarray, requests: int, concurrency: int) -> list[Outcome]:
    """`requests` requests from `concurrency` loops with the project's AsyncTritonClient (its retries included)."""
    from attnserve.clients.status import classify_exception

    outcomes: list[Outcome] = []
    remaining = iter(range(requests))

    async def loop() -> None:
        for _ in remaining:
            started = time.perf_counter()
            try:
                result = await client.infer(model, {"pixels": pixels})
                outcomes.append(Outcome(time.perf_counter() - started, None, np.asarray(result["logits"])))
            except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
                outcomes.append(Outcome(time.perf_counter() - started, classify_exception(exc)))

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return outcomes


async def open_loop(transport: Any, module: Any, model: str, pixels: np.ndarray, rate: float, seconds: float):
    """Requests due at t0 + i/rate for `seconds` (sent on time even if earlier ones wait; no retries); the latency
    of each runs from its due time. Returns (outcomes, achieved send rate)."""
    from attnserve.clients.status import classify_exception

    infer_input = module.InferInput("pixels", list(pixels.shape), "UINT8")
    infer_input.set_data_from_numpy(pixels)
    outcomes: list[Outcome] = []

    async def one(due: float) -> None:
        try:
            await transport.infer(model, [infer_input], client_timeout=30)
            outcomes.append(Outcome(time.perf_counter() - due, None))
        except Exception as exc:  # noqa: BLE001
            outcomes.append(Outcome(time.perf_counter() - due, classify_exception(exc)))

    total = int(rate * seconds)
    tasks = []
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    send_rate = total / max(time.perf_counter() - started, 1e-9)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    return outcomes, send_rate
