"""Measure candidates with the project's load tester and search the grid (exhaustive or hill climbing).

Each candidate is loaded (model control, config override), warmed up and swept over the traffic levels by
`attnserve.clients.loadtest` (its windows, stability rule, server-side breakdown, and the client's success
count checked against Triton's statistics). A candidate that fails to load is recorded with Triton's reason
and the search goes on.

Ranking (`score`): candidates whose p99 meets the SLO at every level come first, by the geometric mean of
their throughput over the levels (a configuration must serve the lone request and the crowd, not one of
them); the others follow, closest to the SLO first (smallest worst p99 / SLO).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from attnserve.errors import AttnserveError, ServerError
from attnserve.tune.candidates import Candidate, Grid, build
from attnserve.tune.control import ModelControl, candidate_config, served_knobs

if TYPE_CHECKING:
    from attnserve.clients.loadtest_options import LoadTestOptions

logger = logging.getLogger(__name__)

Mode = Literal["quick", "exhaustive"]


class LevelFigures(BaseModel):
    """One traffic level of one candidate (a summary of the load tester's `LevelResult`)."""

    level: float
    throughput: float
    """Samples per second."""
    p50_ms: float
    p99_ms: float
    errors: int
    avg_batch: float
    queue_us: float
    compute_infer_us: float
    counts_agree: bool
    """The client's success count equals Triton's success delta over the same span."""


class CandidateResult(BaseModel):
    """A measured (or failed) candidate."""

    index: int
    name: str
    candidate: Candidate
    status: Literal["ok", "failed", "skipped"] = "ok"
    reason: str = ""
    levels: list[LevelFigures] = Field(default_factory=list)
    seconds: float = 0.0
    meets_slo: bool = False
    score: float = 0.0
    """Geometric mean of throughput over the levels (0 when failed)."""
    worst_p99_ms: float = math.inf
    measurements: int = 1
    """How many times it was measured: the confirmation round measures the leaders again and keeps, per level,
    the mean throughput and the worst p99 (a verdict from one lucky window does not win)."""

    def figures(self, level: float) -> LevelFigures | None:
        return next((f for f in self.levels if f.level == level), None)


@dataclass
class Measurement:
    """How each candidate is measured: the traffic, the load tester's windows, the SLO."""

    levels: Sequence[float]
    slo_p99_ms: float
    mode: str = "concurrency"
    warmup_s: float = 0.5
    window_s: float = 1.0
    min_windows: int = 2
    max_windows: int = 4

    def loadtest_options(self) -> LoadTestOptions:
        """The load test of one measurement at every level."""
        from attnserve.clients.loadtest_options import LoadTestOptions

        if self.mode == "concurrency":
            concurrency, rates = [int(v) for v in self.levels], None
        else:
            concurrency, rates = None, [float(v) for v in self.levels]
        return LoadTestOptions(
            concurrency=concurrency,
            rates=rates,
            warmup_s=self.warmup_s,
            window_s=self.window_s,
            min_windows=self.min_windows,
            max_windows=self.max_windows,
        )


def rank_key(result: CandidateResult) -> tuple[int, float]:
    """Sort key, best first: SLO-meeting by throughput, then the rest by closeness to the SLO, failures last."""
    if result.status != "ok":
        return (3, 0.0)
    if result.meets_slo:
        return (0, -result.score)
    return (1, result.worst_p99_ms)


def summarize(result: CandidateResult, report: Any, slo_p99_ms: float) -> CandidateResult:
    """Fill `result` from a `LoadTestReport`: per-level figures, SLO verdict, score."""
    for level in report.levels:
        result.levels.append(
            LevelFigures(
                level=float(level.concurrency if level.concurrency is not None else level.target_rate),
                throughput=level.throughput_infer_s,
                p50_ms=level.latency.p50_ms,
                p99_ms=level.latency.p99_ms,
                errors=sum(level.errors.values()),
                avg_batch=level.server.avg_batch_size,
                queue_us=level.server.queue_us,
                compute_infer_us=level.server.compute_infer_us,
                counts_agree=level.client_success == level.server_success,
            )
        )
    _verdict(result, slo_p99_ms)
    return result


def _verdict(result: CandidateResult, slo_p99_ms: float) -> None:
    """Score (geometric mean throughput), worst p99 and the SLO verdict from `result.levels`."""
    throughputs = [max(f.throughput, 1e-9) for f in result.levels]
    result.score = math.exp(sum(math.log(t) for t in throughputs) / len(throughputs)) if throughputs else 0.0
    result.worst_p99_ms = max((f.p99_ms for f in result.levels), default=math.inf)
    result.meets_slo = bool(result.levels) and all(f.p99_ms <= slo_p99_ms and not f.errors for f in result.levels)


def merge_measurements(first: CandidateResult, again: CandidateResult, slo_p99_ms: float) -> CandidateResult:
    """`first` updated with a second measurement of the same candidate: per level the mean throughput, batch,
    queue and compute times, the worst p50 and p99, the summed errors; then the verdict again."""
    if again.status != "ok":
        first.status, first.reason = again.status, f"failed when measured again: {again.reason}"
        first.meets_slo, first.score = False, 0.0
        return first
    n = first.measurements
    merged = []
    for old in first.levels:
        new = again.figures(old.level) or old

        def mean(a: float, b: float) -> float:
            return (a * n + b) / (n + 1)

        merged.append(
            old.model_copy(
                update={
                    "throughput": mean(old.throughput, new.throughput),
                    "p50_ms": max(old.p50_ms, new.p50_ms),
                    "p99_ms": max(old.p99_ms, new.p99_ms),
                    "errors": old.errors + new.errors,
                    "avg_batch": mean(old.avg_batch, new.avg_batch),
                    "queue_us": mean(old.queue_us, new.queue_us),
                    "compute_infer_us": mean(old.compute_infer_us, new.compute_infer_us),
                    "counts_agree": old.counts_agree and new.counts_agree,
                }
            )
        )
    first.levels, first.measurements = merged, n + 1
    first.seconds += again.seconds
    _verdict(first, slo_p99_ms)
    return first


class Tuner:
    """Loads and measures candidates on one server, remembering every result.

    Args:
        control: model control on the server.
        settings: the load tester's client settings for the same server.
        model: the served model name.
        measurement: traffic levels, windows, SLO.
        on_result: called after each candidate (progress output).
    """

    def __init__(
        self,
        control: ModelControl,
        settings: Any,
        model: str,
        measurement: Measurement,
        on_result: Callable[[CandidateResult, int | None], None] | None = None,
    ) -> None:
        self.control, self.settings, self.model, self.measurement = control, settings, model, measurement
        self.base_config = control.config(model)
        self.results: dict[Candidate, CandidateResult] = {}
        self.on_result = on_result
        self.planned: int | None = None
        """Measurements planned so far (the progress output's total; the search revises it as it goes)."""
        self.measurements_made = 0
        """Measurements made so far, a candidate measured again counting once more."""

    def measure(self, candidate: Candidate) -> CandidateResult:
        """Load and measure `candidate` (once: a second call returns the first result)."""
        if candidate in self.results:
            return self.results[candidate]
        result = self._load_and_measure(candidate, index=len(self.results) + 1)
        self.results[candidate] = result
        self.measurements_made += 1
        if self.on_result is not None:
            self.on_result(result, self.planned)
        return result

    def measure_again(self, candidate: Candidate) -> CandidateResult:
        """Load and measure a measured `candidate` once more; its result becomes the merge of all measurements."""
        first = self.results[candidate]
        again = self._load_and_measure(candidate, index=first.index)
        merge_measurements(first, again, self.measurement.slo_p99_ms)
        self.measurements_made += 1
        if self.on_result is not None:
            self.on_result(first, self.planned)
        return first

    def _load_and_measure(self, candidate: Candidate, index: int) -> CandidateResult:
        from attnserve.clients.loadtest import run_loadtest

        started = time.monotonic()
        result = CandidateResult(index=index, name=candidate.name, candidate=candidate)
        try:
            self.control.load(self.model, candidate_config(self.base_config, candidate))
            report = run_loadtest(self.settings, self.model, self.measurement.loadtest_options())
            self._check_still_served(candidate)
            summarize(result, report, self.measurement.slo_p99_ms)
        except AttnserveError as exc:
            result.status, result.reason = "failed", str(exc).splitlines()[0][:400]
            logger.warning("candidate %s failed: %s", candidate.name, result.reason)
        result.seconds = time.monotonic() - started
        return result

    def _check_still_served(self, candidate: Candidate) -> None:
        """Raise ServerError when the server no longer serves `candidate`'s knobs after its measurement (e.g. a
        stub watchdog reloaded the model from its repository): those figures would belong to another config."""
        expected = served_knobs(candidate_config(self.base_config, candidate))
        served = served_knobs(self.control.config(self.model))
        differing = {knob: served[knob] for knob in expected if served[knob] != expected[knob]}
        if differing:
            raise ServerError(
                f"the server stopped serving this candidate during its measurement (now {differing}): something "
                "reloaded the model from its repository, such as the stub watchdog of `attnserve serve`"
            )

    def best(self) -> CandidateResult | None:
        ranked = sorted(self.results.values(), key=rank_key)
        return ranked[0] if ranked else None

    def restore(self) -> None:
        """Serve the configuration the model had before the search."""
        self.control.load(self.model, self.base_config)


def exhaustive(tuner: Tuner, grid: Grid, deadline: float | None = None) -> None:
    """Measure every candidate of the grid (stops early only past `deadline`)."""
    candidates = grid.candidates()
    tuner.planned = tuner.measurements_made + len(candidates)
    for candidate in candidates:
        if deadline is not None and time.monotonic() > deadline:
            logger.warning("budget spent: %d of %d candidates measured", len(tuner.results), len(candidates))
            break
        tuner.measure(candidate)


def hill_climb(tuner: Tuner, grid: Grid, start: Candidate, deadline: float) -> None:
    """Quick mode: coordinate ascent from `start`, one knob at a time, keeping each improvement.

    Passes over the knobs repeat until a pass changes nothing or the next candidate would likely end past
    `deadline` (estimated from the mean time of the candidates measured so far).
    """
    dimensions = grid.dimensions()
    current = _knobs_of(start)
    tuner.planned = tuner.measurements_made + 1 + sum(max(len(v) - 1, 0) for v in dimensions.values())
    best = tuner.measure(start)
    improved = True
    while improved:
        improved = False
        for knob, values in dimensions.items():
            for value in values:
                if value == current[knob]:
                    continue
                candidate = build({**current, knob: value})
                if candidate is None or candidate in tuner.results:
                    continue
                if not _time_left(tuner, deadline, candidates=1 + CONFIRM_LEADERS):  # the confirmation round's share
                    return
                result = tuner.measure(candidate)
                if rank_key(result) < rank_key(best):
                    best, current, improved = result, {**current, knob: value}, True
        if improved:
            tuner.planned = tuner.measurements_made + sum(max(len(v) - 1, 0) for v in dimensions.values())


def _time_left(tuner: Tuner, deadline: float, candidates: int = 1) -> bool:
    """Whether `candidates` more measurements likely end before `deadline` (from the mean so far)."""
    spent = [r.seconds / r.measurements for r in tuner.results.values()]
    estimate = sum(spent) / len(spent) if spent else 0.0
    return time.monotonic() + candidates * estimate <= deadline


CONFIRM_LEADERS = 3
"""How many leading candidates the confirmation round measures again."""


def confirm(tuner: Tuner, deadline: float | None = None, leaders: int = CONFIRM_LEADERS) -> list[CandidateResult]:
    """The confirmation round: measure the `leaders` best candidates again (as long as `deadline` allows) and
    merge each one's figures (mean throughput, worst p99), so the winner is chosen on two measurements.

    On 2 shared cores one window's p99 moves by a factor of 2 between runs of the same config; hill climbing
    keeps whichever measurement looked best, which favours the luckiest, not the best.
    """
    confirmed: list[CandidateResult] = []
    # Until the `leaders` best are all measured twice: a second measurement can drop a leader below a candidate
    # measured once, which then has to be measured again too (at most twice the leaders in all).
    while len(confirmed) < 2 * leaders:
        ranked = [r for r in sorted(tuner.results.values(), key=rank_key) if r.status == "ok"][:leaders]
        pending = [r for r in ranked if r.measurements == 1]
        if not pending:
            break
        tuner.planned = tuner.measurements_made + len(pending)  # counted on from the search's measurements
        if deadline is not None and not _time_left(tuner, deadline):
            logger.warning("budget spent: %d leaders measured again, %d not", len(confirmed), len(pending))
            break
        confirmed.append(tuner.measure_again(pending[0].candidate))
    return confirmed


def _knobs_of(candidate: Candidate) -> dict[str, object]:
    return {
        "dynamic_batching": candidate.dynamic_batching,
        "max_queue_delay_us": candidate.max_queue_delay_us,
        "layout": (candidate.instance_count, candidate.intra_op_threads),
        "allow_spinning": candidate.allow_spinning,
        "preferred_batch_sizes": candidate.preferred_batch_sizes,
        "max_batch_size": candidate.max_batch_size,
        "variant": candidate.variant,
    }
