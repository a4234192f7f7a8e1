"""The load tester: closed-loop concurrency sweeps and open-loop (fixed or Poisson) request rates.

    report = run_loadtest(ClientSettings(url="127.0.0.1:8001"), "vit_digits", LoadTestOptions(concurrency=[1, 2, 4, 8]))

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
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeVar

import numpy as np

from attnserve.clients.client import AsyncTritonClient, build_request, call_kwargs
from attnserve.clients.loadtest_options import LoadTestOptions
from attnserve.clients.loadtest_report import LatencyStats, LevelResult, LoadMode, LoadTestReport, ServerBreakdown
from attnserve.clients.media import read_bytes
from attnserve.clients.model_info import ModelInfo
from attnserve.clients.settings import ClientSettings
from attnserve.clients.status import classify_exception
from attnserve.errors import UserInputError, WorkerError

__all__ = ["LoadGenerator", "LoadTestOptions", "run_loadtest", "run_loadtest_async", "settled_reading"]

log = logging.getLogger(__name__)
T = TypeVar("T")

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


class LoadPhase(NamedTuple):
    """How one generator loads the server for a while: its share of the level and the kind of load."""

    mode: LoadMode
    level: float
    """Closed loop: requests in flight; open loop: requests per second."""
    poisson: bool


@dataclass(frozen=True)
class GeneratorConfig:
    """What a `LoadGenerator` sends where (a spawned worker receives it pickled: secrets stay intact)."""

    settings: ClientSettings
    model: str
    batch_size: int = 1
    input_file: Path | None = None
    max_outstanding: int = 4096
    """Open loop: requests in flight beyond this are counted as `client_overload` instead of sent."""
    seed: int = 0
    connections: int = 128


# ---------------------------------------------------------------------------------------------------------
# the messages between the parent and a spawned worker (one per pipe message, pickled)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Warmup:
    """Parent -> worker: load for `seconds`, drain, record nothing; answered by `Warmed`."""

    phase: LoadPhase
    seconds: float


@dataclass(frozen=True)
class Measure:
    """Parent -> worker: the measure phase (see `LoadGenerator.measure`); answered by `Window`s, then `Measured`."""

    phase: LoadPhase
    start_at: float
    """time.monotonic() at which load starts (the same clock in every process)."""
    settle_s: float
    window_s: float


@dataclass(frozen=True)
class Decision:
    """Parent -> worker, after each `Window`: whether to measure another window."""

    keep_going: bool


@dataclass(frozen=True)
class Close:
    """Parent -> worker: stop and exit."""


@dataclass(frozen=True)
class Ready:
    """Worker -> parent: the model's metadata is read and the request tensors are built."""


@dataclass(frozen=True)
class Warmed:
    """Worker -> parent: the warm-up is over and drained."""


@dataclass(frozen=True)
class Window:
    """Worker -> parent: what it saw in one measurement window; the parent answers with a `Decision`."""

    sample: WindowSample


@dataclass(frozen=True)
class Measured:
    """Worker -> parent: its totals over the measure phase."""

    totals: PhaseTotals


# ---------------------------------------------------------------------------------------------------------
# load generation (one per process)
# ---------------------------------------------------------------------------------------------------------
class LoadGenerator:
    """Sends requests from one asyncio loop: `concurrency` closed loops, or an open-loop schedule."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.model = config.model
        self.max_outstanding = config.max_outstanding
        self.rng = np.random.default_rng(config.seed)
        self.client = AsyncTritonClient(config.settings, concurrency=config.connections)
        self.info: ModelInfo | None = None
        self._inputs: list[Any] = []
        self._outputs: list[Any] = []
        self._kwargs = call_kwargs(config.settings)
        self._records: list[tuple[float, str | None]] = []  # (latency_s, error kind or None)
        self._sent = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> ModelInfo:
        """Read the model's metadata and build the (reused) request tensors."""
        self.info = await self.client.model_info(self.model)
        inputs = make_inputs(self.info, self.config.batch_size, self.config.input_file, self.rng)
        self.info.validate_inputs(inputs)
        self._inputs, self._outputs = build_request(self.client.module, self.info, inputs)
        return self.info

    async def close(self) -> None:
        """Close the client's connections."""
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

    def _start(self, phase: LoadPhase) -> list[asyncio.Task[None]]:
        self._stopping = False
        if phase.level <= 0:
            return []
        if phase.mode == "concurrency":
            return [asyncio.create_task(self._closed_loop()) for _ in range(int(phase.level))]
        return [asyncio.create_task(self._open_loop(phase.level, phase.poisson))]

    async def _stop(self, loops: list[asyncio.Task[None]]) -> None:
        self._stopping = True
        await asyncio.gather(*loops)
        while self._tasks:  # open loop: requests already sent must finish (they are counted)
            await asyncio.gather(*list(self._tasks))

    # phases -----------------------------------------------------------------------------------------------
    async def warmup(self, warmup: Warmup) -> None:
        """Load for `warmup.seconds`, then drain; nothing is recorded (no warm-up at all when it is 0)."""
        if warmup.seconds <= 0:
            return
        loops = self._start(warmup.phase)
        await asyncio.sleep(warmup.seconds)
        await self._stop(loops)
        self._records.clear()

    async def measure(self, plan: Measure, decide: Callable[[WindowSample], Awaitable[bool]]) -> PhaseTotals:
        """Load from `plan.start_at` (time.monotonic); after `settle_s`, in windows until `decide(window)` is False.

        Requests of the settle period count in the totals (Triton counts them too) but in no window: the
        first window starts with the pipeline already full, so it does not miss the responses still on
        their way (which would understate the achieved rate by about latency / window).
        """
        self._records.clear()
        self._sent = 0
        cpu_started = time.process_time()
        await asyncio.sleep(max(0.0, plan.start_at - time.monotonic()))
        loops = self._start(plan.phase)
        start_at, window_s = plan.start_at + plan.settle_s, plan.window_s
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cut, sent_cut, index = len(self._records), self._sent, 0
        cut_at = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, start_at + (index + 1) * window_s - time.monotonic()))
            # a loaded machine wakes this task late: a window lasts from one cut to the next, as measured
            records, cut = self._records[cut:], len(self._records)
            sent, sent_cut = self._sent - sent_cut, self._sent
            window_started, cut_at = cut_at, time.monotonic()
            sample = WindowSample(
                index=index,
                duration_s=cut_at - window_started,
                sent=sent,
                latencies_s=np.fromiter((lat for lat, kind in records if kind is None), dtype=np.float64),
                errors=dict(Counter(kind for _, kind in records if kind is not None)),
            )
            keep_going = await decide(sample)
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
def _worker_main(connection: Any, config: GeneratorConfig) -> None:
    """Entry point of a spawned worker: obey the parent's commands over `connection`."""
    asyncio.run(_worker_loop(connection, config))


async def _worker_loop(connection: Any, config: GeneratorConfig) -> None:
    """Answer `Warmup` with `Warmed` and `Measure` with `Window`s and `Measured` until `Close`; report a failure."""
    loop = asyncio.get_running_loop()
    generator = LoadGenerator(config)

    async def decide(sample: WindowSample) -> bool:
        connection.send(Window(sample))
        reply = await loop.run_in_executor(None, connection.recv)
        if not isinstance(reply, Decision):
            raise RuntimeError(f"load-test worker protocol: expected a Decision, got {reply!r}")
        return reply.keep_going

    try:
        await generator.open()
        connection.send(Ready())
        while not isinstance(command := await loop.run_in_executor(None, connection.recv), Close):
            if isinstance(command, Warmup):
                await generator.warmup(command)
                connection.send(Warmed())
            elif isinstance(command, Measure):
                connection.send(Measured(await generator.measure(command, decide)))
            else:
                raise RuntimeError(f"load-test worker protocol: unexpected command {command!r}")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which logs the traceback and raises
        connection.send(WorkerFailure.from_exception(exc))
    finally:
        await generator.close()


@dataclass(frozen=True)
class WorkerFailure:
    """What a worker sends when it fails: the exception's type and message, whether it is the caller's
    mistake (a `UserInputError`, e.g. a batch size the model cannot take), and its traceback."""

    error_type: str
    message: str
    user_error: bool
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> WorkerFailure:
        """The failure of `exc`, with the traceback being handled."""
        return cls(type(exc).__name__, str(exc), isinstance(exc, UserInputError), traceback.format_exc())

    def raise_(self) -> NoReturn:
        """Log the worker's traceback and raise: `UserInputError` for the caller's mistake, else `WorkerError`."""
        log.error("load-test worker failed with %s: %s\n%s", self.error_type, self.message, self.traceback)
        if self.user_error:
            raise UserInputError(self.message)
        raise WorkerError(f"load-test worker failed: {self.error_type}: {self.message}")


class _WorkerProcess:
    """Parent-side handle of one spawned worker."""

    def __init__(self, context: Any, index: int, config: GeneratorConfig) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, name=f"attnserve-loadtest-{index}", daemon=True, args=(child, config)
        )
        self.process.start()

    def send(self, command: Warmup | Measure | Decision | Close) -> None:
        """Send one command to the worker."""
        self.connection.send(command)

    async def next_message(self) -> object:
        """The worker's next message; a `WorkerFailure` is raised instead (`WorkerFailure.raise_`)."""
        message = await asyncio.get_running_loop().run_in_executor(None, self.connection.recv)
        if isinstance(message, WorkerFailure):
            message.raise_()
        return message

    async def receive(self, expected: type[T]) -> T:
        """The worker's next message, which must be an `expected`; a `WorkerFailure` is raised."""
        message = await self.next_message()
        if not isinstance(message, expected):
            raise RuntimeError(f"load-test worker protocol: expected {expected.__name__}, got {message!r}")
        return message

    def close(self) -> None:
        """Ask the worker to stop; terminate it when it does not exit within 10 s."""
        try:
            self.send(Close())
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
        self, options: LoadTestOptions, label: str, on_progress: Callable[[WindowProgress], None] | None
    ) -> None:
        self.workers = options.workers
        self.stability_pct = options.stability_pct
        self.min_windows = options.min_windows
        self.max_windows = options.max_windows
        self.label = label
        self.on_progress = on_progress
        self.pending: dict[int, list[WindowSample]] = {}
        self.decisions: dict[int, asyncio.Future[bool]] = {}
        self.merged: list[WindowSample] = []
        self.stable = False
        self.deviation_pct = float("inf")

    async def submit(self, sample: WindowSample) -> bool:
        """Add one worker's window; once every worker's is in, whether to measure another (for all of them)."""
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
            duration_s=float(np.mean([sample.duration_s for sample in samples])),
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


async def settled_reading(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool] = lambda reading: True,
    *,
    timeout_s: float = _COUNTER_SETTLE_S,
    poll_s: float = 0.05,
) -> T:
    """Read Triton's statistics (or any reading) until two readings in a row agree and `done` holds for them.

    Triton updates its counters after it has sent the response (docs/measured.md#stats-settle): read at once,
    the last requests can be missing. Gives up after `timeout_s` and returns the last reading.
    """
    deadline = time.monotonic() + timeout_s
    reading = await read()
    while time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
        latest = await read()
        if latest == reading and done(latest):
            return latest
        reading = latest
    return reading


class _Runner:
    """Runs levels with local or process workers and builds `LevelResult`s."""

    def __init__(
        self,
        settings: ClientSettings,
        model: str,
        options: LoadTestOptions,
        on_progress: Callable[[WindowProgress], None] | None,
    ) -> None:
        self.settings, self.model, self.options, self.on_progress = settings, model, options, on_progress
        self.local: LoadGenerator | None = None
        self.processes: list[_WorkerProcess] = []
        self.stats_client = AsyncTritonClient(settings)

    async def open(self) -> None:
        """Start the generator (one local, or `workers` spawned processes) and wait until each is ready."""
        options = self.options
        config = GeneratorConfig(
            self.settings, self.model, options.batch_size, options.input_file, options.max_outstanding
        )
        if options.workers == 1:
            self.local = LoadGenerator(config)
            await self.local.open()
            return
        context = multiprocessing.get_context("spawn")  # fork + gRPC threads is unsafe
        share = replace(config, max_outstanding=options.max_outstanding // options.workers or 1)
        self.processes = [_WorkerProcess(context, i, replace(share, seed=i + 1)) for i in range(options.workers)]
        await asyncio.gather(*(p.receive(Ready) for p in self.processes))

    async def close(self) -> None:
        """Stop the generators and close the statistics client."""
        if self.local is not None:
            await self.local.close()
        for process in self.processes:
            process.close()
        await self.stats_client.close()

    async def _statistics(self) -> dict[str, Any]:
        return _model_stats(await self.stats_client.statistics(self.model), self.model)

    async def _settled_statistics(self, before: dict[str, Any], expected_success: int) -> dict[str, Any]:
        """Statistics after Triton has counted the last responses (it updates them after replying)."""
        return await settled_reading(
            self._statistics, lambda after: ServerBreakdown.from_delta(before, after).success_count >= expected_success
        )

    async def _quiescent_statistics(self) -> dict[str, Any]:
        """Statistics once they stop changing: after the warm-up drained, Triton may still be counting its last
        responses (it updates the counters after replying), which would otherwise land in the measured delta."""
        return await settled_reading(self._statistics)

    async def run_level(self, level: float) -> LevelResult:
        """Warm up, snapshot the statistics, measure until stable, snapshot again once they settle."""
        options = self.options
        label = f"c={int(level)}" if options.mode == "concurrency" else f"{level:g}/s"
        stability = _Stability(options, label, self.on_progress)
        shares = _shares(level, options.workers, options.mode)
        phases = [LoadPhase(options.mode, share, options.poisson) for share in shares]
        await self._warmup(phases)
        before = await self._quiescent_statistics()
        start_at = time.monotonic() + 0.05
        settle_s = min(options.warmup_s, options.window_s, _SETTLE_MAX_S)
        plans = [Measure(phase, start_at, settle_s, options.window_s) for phase in phases]
        if self.local is not None:
            totals = [await self.local.measure(plans[0], stability.submit)]
        else:
            for process, plan in zip(self.processes, plans):
                process.send(plan)
            totals = await asyncio.gather(*(self._relay(p, stability) for p in self.processes))
        ok = sum(t.ok for t in totals)
        after = await self._settled_statistics(before, ok)
        return self._result(level, stability, totals, ServerBreakdown.from_delta(before, after))

    async def _warmup(self, phases: list[LoadPhase]) -> None:
        """Every generator warms up on its share, then drains."""
        if self.local is not None:
            await self.local.warmup(Warmup(phases[0], self.options.warmup_s))
            return
        for process, phase in zip(self.processes, phases):
            process.send(Warmup(phase, self.options.warmup_s))
        await asyncio.gather(*(p.receive(Warmed) for p in self.processes))

    async def _relay(self, process: _WorkerProcess, stability: _Stability) -> PhaseTotals:
        """Pass a worker's windows to `stability` and its decisions back, until the worker's totals arrive."""
        while True:
            message = await process.next_message()
            if isinstance(message, Measured):
                return message.totals
            if not isinstance(message, Window):
                raise RuntimeError(f"load-test worker protocol: expected Window or Measured, got {message!r}")
            process.send(Decision(await stability.submit(message.sample)))

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
        mode = self.options.mode
        return LevelResult(
            mode=mode,
            concurrency=int(level) if mode == "concurrency" else None,
            target_rate=level if mode == "rate" else None,
            achieved_rate=achieved,
            send_rate=sum(w.sent for w in windows) / measured_s if measured_s else 0.0,
            throughput_infer_s=achieved * self.options.batch_size,
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
    options: LoadTestOptions,
    *,
    on_progress: Callable[[WindowProgress], None] | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
) -> LoadTestReport:
    """Asyncio form of `run_loadtest` (same arguments)."""
    report = LoadTestReport(
        model=model,
        protocol=settings.protocol,
        url=settings.resolved_url,
        mode=options.mode,
        poisson=options.poisson,
        batch_size=options.batch_size,
        workers=options.workers,
        warmup_s=options.warmup_s,
        window_s=options.window_s,
        stability_target_pct=options.stability_pct,
        slo_p99_ms=options.slo_p99_ms,
    )
    runner = _Runner(settings, model, options, on_progress)
    try:
        await runner.open()  # inside the try: a failed open (unknown model) still closes the HTTP sessions
        await _sweep(runner, report, options, on_level)
    finally:
        await runner.close()
    return report


async def _sweep(
    runner: _Runner, report: LoadTestReport, options: LoadTestOptions, on_level: Callable[[LevelResult], None] | None
) -> None:
    """Run the levels in order (stopping at the first SLO miss); an open-loop SLO search then bisects."""
    slo_p99_ms = options.slo_p99_ms

    async def run(level: float) -> bool:
        result = await runner.run_level(level)
        report.levels.append(result)
        if on_level is not None:
            on_level(result)
        return slo_p99_ms is not None and result.latency.p99_ms <= slo_p99_ms and not result.errors

    first_miss: float | None = None
    for level in options.levels:
        meets = await run(level)
        if slo_p99_ms is not None:
            if not meets:
                first_miss = level
                break
            report.slo_best_level = level
    if report.mode == "rate" and slo_p99_ms is not None and first_miss is not None:
        low, high = report.slo_best_level or 0.0, first_miss
        for _ in range(options.slo_refine_steps):  # bisect between the last rate that held and the first that did not
            middle = (low + high) / 2 if low else high / 2
            if await run(middle):
                low = report.slo_best_level = middle
            else:
                high = middle
    report.levels.sort(key=lambda r: float((r.concurrency if report.mode == "concurrency" else r.target_rate) or 0.0))


def run_loadtest(
    settings: ClientSettings,
    model: str,
    options: LoadTestOptions,
    *,
    on_progress: Callable[[WindowProgress], None] | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
) -> LoadTestReport:
    """Measure `model` under load; see the module docstring for the method.

    Args:
        settings: where the server is (protocol, URL, timeouts).
        model: the served model to load.
        options: the levels (`concurrency=[1, 2, 4]` closed loop, or `rates=[100.0]` open loop) and how each
            is measured (`LoadTestOptions`).
        on_progress: called after each merged measurement window.
        on_level: called with each finished level.

    Returns:
        The report (JSON/CSV/PNG writers on it).

    Raises:
        UserInputError: the model's inputs cannot be generated (e.g. a batch size it cannot take).
        WorkerError: a spawned worker failed (its traceback is logged).
        InferenceError: the server or model cannot be reached / described.
    """
    return asyncio.run(run_loadtest_async(settings, model, options, on_progress=on_progress, on_level=on_level))
