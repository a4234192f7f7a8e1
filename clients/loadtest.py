"""The load tester: closed-loop concurrency sweeps and open-loop (fixed or Poisson) request rates.

    report = run_loadtest(ClientSettings(url="127.0.0.1:8001"), "vit_digits", concurrency=[1, 2, 4, 8])

How one level is measured (the same for every mode):
1. warm-up: load for `warmup_s`, then stop issuing and wait for every request in flight;
2. snapshot Triton's statistics for the model, once they stop changing (Triton counts after replying);
3. measure: load again; after a short settle (so the first window starts with the pipeline full), in
   windows of `window_s`; after each window, the throughput and mean latency of the last `min_windows`
   windows are compared (perf_analyzer's stability rule); stop when they agree
   within `stability_pct` or after `max_windows`;
4. stop issuing, wait for every request in flight, wait until Triton's counters settle, snapshot again.
   Rates come from the windows; latency percentiles cover the windows *and* the drain, so requests that
   were still queued when issuing stopped (the slowest ones, under overload) are not left out.
Every request counted between the snapshots was sent after the first and finished before the second, so
the client's success count and Triton's success delta describe the same requests (a test checks equality).

Open loop: request i is due at t0 + i/rate (or after exponential gaps with `poisson`), is sent then even if
earlier ones are still waiting, and its latency runs from that **intended** time, so a slow server cannot
hide its queueing by slowing the sender (no coordinated omission). `achieved_rate` (responses per second)
and `send_rate` are reported beside the target.

Worker processes (`workers > 1`, spawned) split the concurrency or the rate; windows stay aligned on the
shared monotonic clock and the parent decides stability on the merged windows.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnserve.clients.client import AsyncTritonClient, build_request, call_kwargs
from attnserve.clients.loadtest_report import LatencyStats, LevelResult, LoadMode, LoadTestReport, ServerBreakdown
from attnserve.clients.media import read_bytes
from attnserve.clients.model_info import ModelInfo
from attnserve.clients.settings import ClientSettings
from attnserve.clients.status import classify_exception
from attnserve.errors import UserInputError

log = logging.getLogger(__name__)

_SETTLE_MAX_S = 0.5
"""Load runs this long (at most) after the statistics snapshot before the first window opens."""
_COUNTER_SETTLE_S = 3.0
"""Longest wait for Triton's statistics to count the last responses (it updates them after replying)."""


@dataclass
class WindowSample:
    """What one worker saw in one measurement window."""

    index: int
    duration_s: float
    sent: int
    latencies_s: np.ndarray
    """Latencies of the successful requests that completed in the window."""
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class PhaseTotals:
    """One worker's totals over a whole measure phase (including requests completed while draining)."""

    ok: int
    sent: int
    errors: dict[str, int]
    cpu_s: float
    drain_latencies_s: list[float] = field(default_factory=list)
    """Successful requests that completed after the last window, while draining. They count in the latency
    percentiles: under overload they are the slowest, and leaving them out would understate the tail."""


@dataclass(frozen=True)
class WindowProgress:
    """Passed to `on_progress` after each merged window."""

    level: str
    window: int
    rate: float
    mean_ms: float
    p99_ms: float
    deviation_pct: float | None


# ---------------------------------------------------------------------------------------------------------
# load generation (one per process)
# ---------------------------------------------------------------------------------------------------------
class LoadGenerator:
    """Sends requests from one asyncio loop: `concurrency` closed loops, or an open-loop schedule."""

    def __init__(
        self,
        settings: ClientSettings,
        model: str,
        batch_size: int = 1,
        input_file: Path | None = None,
        max_outstanding: int = 4096,
        seed: int = 0,
        connections: int = 128,
    ) -> None:
        self.settings = settings
        self.model = model
        self.batch_size = batch_size
        self.input_file = input_file
        self.max_outstanding = max_outstanding
        self.rng = np.random.default_rng(seed)
        self.client = AsyncTritonClient(settings, concurrency=connections)
        self.info: ModelInfo | None = None
        self._inputs: list[Any] = []
        self._outputs: list[Any] = []
        self._kwargs = call_kwargs(settings)
        self._records: list[tuple[float, str | None]] = []  # (latency_s, error kind or None)
        self._sent = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> ModelInfo:
        """Read the model's metadata and build the (reused) request tensors."""
        self.info = await self.client.model_info(self.model)
        inputs = make_inputs(self.info, self.batch_size, self.input_file, self.rng)
        self.info.validate_inputs(inputs)
        self._inputs, self._outputs = build_request(self.client.module, self.info, inputs)
        return self.info

    async def close(self) -> None:
        await self.client.close()

    # one request ----------------------------------------------------------------------------------------
    async def _send(self, intended: float) -> None:
        self._sent += 1
        kind = None
        try:
            await self.client.transport.infer(self.model, self._inputs, outputs=self._outputs, **self._kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is counted by kind, none stops the test
            kind = classify_exception(exc)
        self._records.append((time.perf_counter() - intended, kind))

    async def _closed_loop(self) -> None:
        while not self._stopping:
            await self._send(time.perf_counter())

    async def _open_loop(self, rate: float, poisson: bool) -> None:
        due = time.perf_counter()
        while not self._stopping:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
                if self._stopping:
                    break
            if len(self._tasks) >= self.max_outstanding:
                self._sent += 1
                self._records.append((0.0, "client_overload"))
            else:
                task = asyncio.create_task(self._send(due))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            due += float(self.rng.exponential(1.0 / rate)) if poisson else 1.0 / rate

    def _start(self, mode: LoadMode, level: float, poisson: bool) -> list[asyncio.Task[None]]:
        self._stopping = False
        if level <= 0:
            return []
        if mode == "concurrency":
            return [asyncio.create_task(self._closed_loop()) for _ in range(int(level))]
        return [asyncio.create_task(self._open_loop(level, poisson))]

    async def _stop(self, loops: list[asyncio.Task[None]]) -> None:
        self._stopping = True
        await asyncio.gather(*loops)
        while self._tasks:  # open loop: requests already sent must finish (they are counted)
            await asyncio.gather(*list(self._tasks))

    # phases -----------------------------------------------------------------------------------------------
    async def warmup(self, mode: LoadMode, level: float, poisson: bool, seconds: float) -> None:
        """Load for `seconds`, then drain; nothing is recorded (no warm-up at all when `seconds` is 0)."""
        if seconds <= 0:
            return
        loops = self._start(mode, level, poisson)
        await asyncio.sleep(seconds)
        await self._stop(loops)
        self._records.clear()

    async def measure(
        self,
        mode: LoadMode,
        level: float,
        poisson: bool,
        start_at: float,
        settle_s: float,
        window_s: float,
        decide: Callable[[WindowSample], Any],
    ) -> PhaseTotals:
        """Load from `start_at` (time.monotonic); after `settle_s`, in windows until `decide(window)` is False.

        Requests of the settle period count in the totals (Triton counts them too) but in no window: the
        first window starts with the pipeline already full, so it does not miss the responses still on
        their way (which would understate the achieved rate by about latency / window).
        """
        self._records.clear()
        self._sent = 0
        cpu_started = time.process_time()
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        loops = self._start(mode, level, poisson)
        start_at += settle_s
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cut, sent_cut, index = len(self._records), self._sent, 0
        while True:
            await asyncio.sleep(max(0.0, start_at + (index + 1) * window_s - time.monotonic()))
            records, cut = self._records[cut:], len(self._records)
            sent, sent_cut = self._sent - sent_cut, self._sent
            sample = WindowSample(
                index=index,
                duration_s=window_s,
                sent=sent,
                latencies_s=np.fromiter((lat for lat, kind in records if kind is None), dtype=np.float64),
                errors=dict(Counter(kind for _, kind in records if kind is not None)),
            )
            keep_going = decide(sample)
            if asyncio.iscoroutine(keep_going):
                keep_going = await keep_going
            index += 1
            if not keep_going:
                break
        await self._stop(loops)
        drained = [latency for latency, kind in self._records[cut:] if kind is None]
        errors = Counter(kind for _, kind in self._records if kind is not None)
        ok = sum(1 for _, kind in self._records if kind is None)
        return PhaseTotals(
            ok=ok,
            sent=self._sent,
            errors=dict(errors),
            cpu_s=time.process_time() - cpu_started,
            drain_latencies_s=drained,
        )


def make_inputs(
    info: ModelInfo, batch_size: int, input_file: Path | None, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Request tensors for `info`: random data of the model's shape, or `input_file`'s bytes for BYTES inputs."""
    if info.max_batch_size > 0 and not 1 <= batch_size <= info.max_batch_size:
        raise UserInputError(f"batch size must be 1..{info.max_batch_size} for model {info.name!r}, got {batch_size}")
    inputs = {}
    for tensor in info.inputs:
        sample = [d if d > 0 else 1 for d in info.sample_shape(tensor)]
        shape = ([batch_size] if info.max_batch_size > 0 else []) + sample
        if tensor.datatype == "BYTES":
            if input_file is None:
                raise UserInputError(f"model {info.name!r} takes encoded bytes ({tensor.name!r}); pass an input file")
            payload = read_bytes(input_file)
            inputs[tensor.name] = np.full(shape, payload, dtype=np.object_)
        elif np.issubdtype(np.dtype(tensor.numpy_dtype), np.integer):
            limits = np.iinfo(tensor.numpy_dtype)
            inputs[tensor.name] = rng.integers(
                max(limits.min, 0), min(limits.max, 255), shape, dtype=tensor.numpy_dtype, endpoint=True
            )
        else:
            inputs[tensor.name] = rng.random(shape).astype(tensor.numpy_dtype)
    return inputs


# ---------------------------------------------------------------------------------------------------------
# worker processes
# ---------------------------------------------------------------------------------------------------------
def _worker_main(
    connection: Any,
    settings_json: str,
    model: str,
    batch_size: int,
    input_file: str | None,
    max_outstanding: int,
    seed: int,
) -> None:
    """Entry point of a spawned worker: obey the parent's commands over `connection`."""
    asyncio.run(
        _worker_loop(
            connection,
            ClientSettings.model_validate_json(settings_json),
            model,
            batch_size,
            Path(input_file) if input_file else None,
            max_outstanding,
            seed,
        )
    )


async def _worker_loop(
    connection: Any,
    settings: ClientSettings,
    model: str,
    batch_size: int,
    input_file: Path | None,
    max_outstanding: int,
    seed: int,
) -> None:
    loop = asyncio.get_running_loop()
    generator = LoadGenerator(settings, model, batch_size, input_file, max_outstanding, seed)
    try:
        await generator.open()
        connection.send(("ready", None))
        while True:
            command, *arguments = await loop.run_in_executor(None, connection.recv)
            if command == "close":
                break
            if command == "warmup":
                await generator.warmup(*arguments)
                connection.send(("warmed", None))
            elif command == "measure":

                async def decide(sample: WindowSample) -> bool:
                    connection.send(("window", sample))
                    return bool((await loop.run_in_executor(None, connection.recv))[1])

                totals = await generator.measure(*arguments, decide=decide)
                connection.send(("measured", totals))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        await generator.close()


class _WorkerProcess:
    """Parent-side handle of one spawned worker."""

    def __init__(
        self,
        context: Any,
        index: int,
        settings: ClientSettings,
        model: str,
        batch_size: int,
        input_file: Path | None,
        max_outstanding: int,
    ) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main,
            name=f"attnserve-loadtest-{index}",
            daemon=True,
            args=(
                child,
                settings.model_dump_json(),
                model,
                batch_size,
                str(input_file) if input_file else None,
                max_outstanding,
                index + 1,
            ),
        )
        self.process.start()

    async def receive(self, expected: str) -> Any:
        kind, payload = await asyncio.get_running_loop().run_in_executor(None, self.connection.recv)
        if kind == "error":
            raise UserInputError(f"load-test worker failed: {payload}")
        if kind != expected:
            raise RuntimeError(f"load-test worker protocol: expected {expected!r}, got {kind!r}")
        return payload

    def close(self) -> None:
        try:
            self.connection.send(("close",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


# ---------------------------------------------------------------------------------------------------------
# the controller
# ---------------------------------------------------------------------------------------------------------
class _Stability:
    """Merges the workers' windows and decides when to stop (perf_analyzer's stability rule)."""

    def __init__(
        self,
        workers: int,
        stability_pct: float,
        min_windows: int,
        max_windows: int,
        label: str,
        on_progress: Callable[[WindowProgress], None] | None,
    ) -> None:
        self.workers = workers
        self.stability_pct = stability_pct
        self.min_windows = min_windows
        self.max_windows = max_windows
        self.label = label
        self.on_progress = on_progress
        self.pending: dict[int, list[WindowSample]] = {}
        self.decisions: dict[int, asyncio.Future[bool]] = {}
        self.merged: list[WindowSample] = []
        self.stable = False
        self.deviation_pct = float("inf")

    async def submit(self, sample: WindowSample) -> bool:
        future = self.decisions.setdefault(sample.index, asyncio.get_running_loop().create_future())
        self.pending.setdefault(sample.index, []).append(sample)
        if len(self.pending[sample.index]) == self.workers:
            future.set_result(self._decide(self.pending.pop(sample.index)))
        return await future

    def _decide(self, samples: list[WindowSample]) -> bool:
        errors: Counter[str] = Counter()
        for sample in samples:
            errors.update(sample.errors)
        merged = WindowSample(
            index=samples[0].index,
            duration_s=samples[0].duration_s,
            sent=sum(s.sent for s in samples),
            latencies_s=np.concatenate([s.latencies_s for s in samples]),
            errors=dict(errors),
        )
        self.merged.append(merged)
        deviation = None
        if len(self.merged) >= self.min_windows:
            recent = self.merged[-self.min_windows :]
            rates = np.array([w.latencies_s.size / w.duration_s for w in recent])
            means = np.array([w.latencies_s.mean() if w.latencies_s.size else 0.0 for w in recent])
            deviation = max(_deviation_pct(rates), _deviation_pct(means))
            self.deviation_pct = deviation
            self.stable = deviation <= self.stability_pct
        if self.on_progress is not None:
            stats = LatencyStats.from_seconds(merged.latencies_s)
            self.on_progress(
                WindowProgress(
                    self.label,
                    merged.index,
                    merged.latencies_s.size / merged.duration_s,
                    stats.mean_ms,
                    stats.p99_ms,
                    deviation,
                )
            )
        return not self.stable and len(self.merged) < self.max_windows


def _deviation_pct(values: np.ndarray) -> float:
    mean = float(values.mean())
    if mean == 0:
        return 0.0 if float(np.abs(values).max()) == 0 else float("inf")
    return float(np.abs(values - mean).max() / mean * 100)


def _shares(level: float, workers: int, mode: LoadMode) -> list[float]:
    """Split a concurrency (integers) or a rate (evenly) over the workers."""
    if mode == "rate":
        return [level / workers] * workers
    whole = int(level)
    return [float(whole // workers + (1 if i < whole % workers else 0)) for i in range(workers)]


def _model_stats(statistics: dict[str, Any], model: str) -> dict[str, Any]:
    """The model's entry of Triton's statistics, summed over versions."""
    entries = [entry for entry in statistics.get("model_stats", []) if entry.get("name") == model]
    if not entries:
        raise UserInputError(f"Triton returned no statistics for model {model!r}")
    if len(entries) == 1:
        return entries[0]
    total: dict[str, Any] = {"execution_count": 0, "inference_count": 0, "inference_stats": {}}
    for entry in entries:
        total["execution_count"] += int(entry.get("execution_count", 0))
        total["inference_count"] += int(entry.get("inference_count", 0))
        for stage, values in entry.get("inference_stats", {}).items():
            slot = total["inference_stats"].setdefault(stage, {"count": 0, "ns": 0})
            slot["count"] += int(values.get("count", 0))
            slot["ns"] += int(values.get("ns", 0))
    return total


class _Runner:
    """Runs levels with local or process workers and builds `LevelResult`s."""

    def __init__(
        self,
        settings: ClientSettings,
        model: str,
        mode: LoadMode,
        poisson: bool,
        batch_size: int,
        workers: int,
        warmup_s: float,
        window_s: float,
        stability_pct: float,
        min_windows: int,
        max_windows: int,
        input_file: Path | None,
        max_outstanding: int,
        on_progress: Callable[[WindowProgress], None] | None,
    ) -> None:
        self.settings, self.model, self.mode, self.poisson = settings, model, mode, poisson
        self.batch_size, self.workers, self.warmup_s, self.window_s = batch_size, workers, warmup_s, window_s
        self.stability_pct, self.min_windows, self.max_windows = stability_pct, min_windows, max_windows
        self.input_file, self.max_outstanding, self.on_progress = input_file, max_outstanding, on_progress
        self.local: LoadGenerator | None = None
        self.processes: list[_WorkerProcess] = []
        self.stats_client = AsyncTritonClient(settings)

    async def open(self) -> None:
        if self.workers == 1:
            self.local = LoadGenerator(
                self.settings, self.model, self.batch_size, self.input_file, self.max_outstanding
            )
            await self.local.open()
            return
        context = multiprocessing.get_context("spawn")  # fork + gRPC threads is unsafe
        self.processes = [
            _WorkerProcess(
                context,
                i,
                self.settings,
                self.model,
                self.batch_size,
                self.input_file,
                self.max_outstanding // self.workers or 1,
            )
            for i in range(self.workers)
        ]
        await asyncio.gather(*(p.receive("ready") for p in self.processes))

    async def close(self) -> None:
        if self.local is not None:
            await self.local.close()
        for process in self.processes:
            process.close()
        await self.stats_client.close()

    async def _statistics(self) -> dict[str, Any]:
        return _model_stats(await self.stats_client.statistics(self.model), self.model)

    async def _settled_statistics(self, before: dict[str, Any], expected_success: int) -> dict[str, Any]:
        """Statistics after Triton has counted the last responses (it updates them after replying)."""
        deadline = time.monotonic() + _COUNTER_SETTLE_S
        after = await self._statistics()
        unchanged = 0
        while time.monotonic() < deadline:
            success = ServerBreakdown.from_delta(before, after).success_count
            if success >= expected_success and unchanged >= 1:
                break
            await asyncio.sleep(0.05)
            latest = await self._statistics()
            unchanged = unchanged + 1 if latest == after else 0
            after = latest
        return after

    async def _quiescent_statistics(self) -> dict[str, Any]:
        """Statistics once they stop changing: after the warm-up drained, Triton may still be counting its last
        responses (it updates the counters after replying), which would otherwise land in the measured delta."""
        deadline = time.monotonic() + _COUNTER_SETTLE_S
        before = await self._statistics()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            latest = await self._statistics()
            if latest == before:
                break
            before = latest
        return before

    async def run_level(self, level: float) -> LevelResult:
        label = f"c={int(level)}" if self.mode == "concurrency" else f"{level:g}/s"
        stability = _Stability(
            self.workers, self.stability_pct, self.min_windows, self.max_windows, label, self.on_progress
        )
        shares = _shares(level, self.workers, self.mode)
        if self.local is not None:
            await self.local.warmup(self.mode, shares[0], self.poisson, self.warmup_s)
        else:
            for process, share in zip(self.processes, shares):
                process.connection.send(("warmup", self.mode, share, self.poisson, self.warmup_s))
            await asyncio.gather(*(p.receive("warmed") for p in self.processes))

        before = await self._quiescent_statistics()
        start_at = time.monotonic() + 0.05
        settle_s = min(self.warmup_s, self.window_s, _SETTLE_MAX_S)
        if self.local is not None:
            totals = [
                await self.local.measure(
                    self.mode, shares[0], self.poisson, start_at, settle_s, self.window_s, stability.submit
                )
            ]
        else:
            for process, share in zip(self.processes, shares):
                process.connection.send(("measure", self.mode, share, self.poisson, start_at, settle_s, self.window_s))
            totals = await asyncio.gather(*(self._relay(p, stability) for p in self.processes))
        ok = sum(t.ok for t in totals)
        after = await self._settled_statistics(before, ok)
        return self._result(level, stability, totals, ServerBreakdown.from_delta(before, after))

    async def _relay(self, process: _WorkerProcess, stability: _Stability) -> PhaseTotals:
        loop = asyncio.get_running_loop()
        while True:
            kind, payload = await loop.run_in_executor(None, process.connection.recv)
            if kind == "window":
                process.connection.send(("decision", await stability.submit(payload)))
            elif kind == "measured":
                return payload
            elif kind == "error":
                raise UserInputError(f"load-test worker failed: {payload}")

    def _result(
        self, level: float, stability: _Stability, totals: Sequence[PhaseTotals], server: ServerBreakdown
    ) -> LevelResult:
        windows = stability.merged
        measured_s = sum(w.duration_s for w in windows)
        latencies = np.concatenate([w.latencies_s for w in windows]) if windows else np.empty(0)
        drained = np.array([latency for total in totals for latency in total.drain_latencies_s], dtype=np.float64)
        errors: Counter[str] = Counter()
        for total in totals:
            errors.update(total.errors)
        sent = sum(t.sent for t in totals)
        achieved = latencies.size / measured_s if measured_s else 0.0
        return LevelResult(
            mode=self.mode,
            concurrency=int(level) if self.mode == "concurrency" else None,
            target_rate=level if self.mode == "rate" else None,
            achieved_rate=achieved,
            send_rate=sum(w.sent for w in windows) / measured_s if measured_s else 0.0,
            throughput_infer_s=achieved * self.batch_size,
            latency=LatencyStats.from_seconds(np.concatenate([latencies, drained])),
            windows=len(windows),
            stable=stability.stable,
            stability_pct=stability.deviation_pct if np.isfinite(stability.deviation_pct) else 100.0,
            measured_s=measured_s,
            client_success=sum(t.ok for t in totals),
            server_success=server.success_count,
            errors=dict(errors),
            server=server,
            client_cpu_us_per_request=sum(t.cpu_s for t in totals) / sent * 1e6 if sent else 0.0,
            window_rates=[w.latencies_s.size / w.duration_s for w in windows],
        )


# ---------------------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------------------
async def run_loadtest_async(
    settings: ClientSettings,
    model: str,
    *,
    concurrency: Sequence[int] | None = None,
    rates: Sequence[float] | None = None,
    poisson: bool = False,
    batch_size: int = 1,
    workers: int = 1,
    warmup_s: float = 1.0,
    window_s: float = 2.0,
    stability_pct: float = 10.0,
    min_windows: int = 3,
    max_windows: int = 6,
    slo_p99_ms: float | None = None,
    slo_refine_steps: int = 2,
    input_file: Path | None = None,
    max_outstanding: int = 8192,
    on_progress: Callable[[WindowProgress], None] | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
) -> LoadTestReport:
    """Asyncio form of `run_loadtest` (same arguments)."""
    if (concurrency is None) == (rates is None):
        raise UserInputError("give exactly one of concurrency (closed loop) or rates (open loop)")
    mode: LoadMode = "concurrency" if concurrency is not None else "rate"
    levels = sorted(float(v) for v in (concurrency if concurrency is not None else rates or []))
    if not levels or min(levels) <= 0:
        raise UserInputError(f"levels must be positive numbers, got {levels}")
    if workers < 1 or min_windows < 1 or max_windows < min_windows or window_s <= 0 or warmup_s < 0:
        raise UserInputError(
            f"expected workers >= 1, 1 <= min_windows <= max_windows, window_s > 0, warmup_s >= 0; got "
            f"workers={workers}, min_windows={min_windows}, max_windows={max_windows}, window_s={window_s}, "
            f"warmup_s={warmup_s}"
        )
    report = LoadTestReport(
        model=model,
        protocol=settings.protocol,
        url=settings.resolved_url,
        mode=mode,
        poisson=poisson,
        batch_size=batch_size,
        workers=workers,
        warmup_s=warmup_s,
        window_s=window_s,
        stability_target_pct=stability_pct,
        slo_p99_ms=slo_p99_ms,
    )
    runner = _Runner(
        settings,
        model,
        mode,
        poisson,
        batch_size,
        workers,
        warmup_s,
        window_s,
        stability_pct,
        min_windows,
        max_windows,
        input_file,
        max_outstanding,
        on_progress,
    )

    def meets_slo(result: LevelResult) -> bool:
        return slo_p99_ms is not None and result.latency.p99_ms <= slo_p99_ms and not result.errors

    try:
        await runner.open()  # inside the try: a failed open (unknown model) still closes the HTTP sessions
        first_miss: float | None = None
        for level in levels:
            result = await runner.run_level(level)
            report.levels.append(result)
            if on_level is not None:
                on_level(result)
            if slo_p99_ms is not None:
                if meets_slo(result):
                    report.slo_best_level = level
                else:
                    first_miss = level
                    break
        if mode == "rate" and slo_p99_ms is not None and first_miss is not None:
            low, high = report.slo_best_level or 0.0, first_miss
            for _ in range(slo_refine_steps):  # bisect between the last rate that held and the first that did not
                middle = (low + high) / 2 if low else high / 2
                result = await runner.run_level(middle)
                report.levels.append(result)
                if on_level is not None:
                    on_level(result)
                if meets_slo(result):
                    low = report.slo_best_level = middle
                else:
                    high = middle
        report.levels.sort(key=lambda r: r.concurrency if mode == "concurrency" else r.target_rate or 0.0)
    finally:
        await runner.close()
    return report


def run_loadtest(settings: ClientSettings, model: str, **options: Any) -> LoadTestReport:
    """Measure `model` under load; see the module docstring for the method.

    Args:
        settings: where the server is (protocol, URL, timeouts).
        model: the served model to load.
        **options: `concurrency=[1, 2, 4]` (closed loop) or `rates=[100.0]` (open loop, `poisson=True` for
            exponential gaps); `batch_size`, `workers` (processes), `warmup_s`, `window_s`, `stability_pct`,
            `min_windows`, `max_windows`, `slo_p99_ms` (stop at the first level whose p99 exceeds it; rates
            are then bisected `slo_refine_steps` times), `input_file` (payload for BYTES inputs),
            `max_outstanding`, `on_progress(WindowProgress)`, `on_level(LevelResult)`.

    Returns:
        The report (JSON/CSV/PNG writers on it).

    Raises:
        UserInputError: bad options, or the model's inputs cannot be generated.
        InferenceError: the server or model cannot be reached / described.
    """
    return asyncio.run(run_loadtest_async(settings, model, **options))
