"""One `attnserve tune` run: a server (embedded, or one reachable at a URL), the search, the report, the apply."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnserve.defaults import REPORTS_DIR, REPOSITORY_DIR, RUNS_DIR
from attnserve.errors import UserInputError
from attnserve.tune.apply import apply_candidate
from attnserve.tune.candidates import Candidate, Grid, gated_variants, thread_layouts
from attnserve.tune.control import ModelControl
from attnserve.tune.report import TuneReport
from attnserve.tune.search import (
    CONFIRM_LEADERS,
    CandidateResult,
    Measurement,
    Mode,
    Tuner,
    confirm,
    exhaustive,
    hill_climb,
    rank_key,
)

logger = logging.getLogger(__name__)


@dataclass
class Target:
    """Where the candidates are served: the HTTP endpoint (model control), the load tester's settings."""

    control: ModelControl
    settings: Any
    description: str


@dataclass
class TuneOptions:
    """Everything one run needs besides the model name (the CLI's flags)."""

    repository: Path = REPOSITORY_DIR
    slo_p99_ms: float = 10.0
    levels: Sequence[float] = (1, 4, 16)
    traffic: str = "concurrency"
    mode: Mode = "quick"
    budget_s: float = 300.0
    grid: Grid | None = None
    start: Candidate | None = None
    url: str | None = None
    grpc_url: str | None = None
    admin_token: str | None = None
    out_dir: Path = REPORTS_DIR / "tune"
    runs_dir: Path = RUNS_DIR
    apply: bool = True
    confirm: bool = True
    """Measure the leading candidates again before choosing (`confirm`); off only in tests of the search."""
    verify: bool = False
    """Measure the applied winner again on a freshly started embedded server (outside the budget)."""
    measurement: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def serve_target(name: str, options: TuneOptions) -> Iterator[Target]:
    """The embedded Triton with only `name` loaded, or the server at `options.url` (model control + token)."""
    from attnserve.clients.settings import ClientSettings

    if options.url is not None:
        token = options.admin_token or os.environ.get("ATTNSERVE_ADMIN_TOKEN", "")
        if not token:
            raise UserInputError("--url needs the server's admin token (--admin-token or $ATTNSERVE_ADMIN_TOKEN)")
        load_url, protocol = (options.grpc_url, "grpc") if options.grpc_url else (options.url, "http")
        yield Target(ModelControl(options.url, token), ClientSettings(url=load_url, protocol=protocol), options.url)
        return
    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer

    with tempfile.TemporaryDirectory(prefix="attnserve-tune-") as scratch:
        view, loaded, _ = build_runtime_repository(options.repository, Path(scratch), [name])
        server = TritonServer(view, models=loaded, endpoints=TritonEndpoints.any_free(), work_dir=Path(scratch) / "s")
        with server:
            settings = ClientSettings(url=server.grpc_url, protocol="grpc")
            yield Target(ModelControl(server.http_url, server.admin_token), settings, "embedded")


def default_grid(spec: Any, variants_dir: Path, cores: int | None = None) -> Grid:
    """The grid for `spec` on this machine: layouts from the core count, the gated CPU variants."""
    from attnserve.runtimes.session import available_cores

    cores = cores or available_cores()
    preferred = tuple(b for b in spec.serving.preferred_batch_sizes if b <= spec.serving.max_batch_size)
    variants = gated_variants(variants_dir)
    return Grid(
        preferred_batch_sizes=tuple(dict.fromkeys([(), preferred or (spec.serving.max_batch_size,)])),
        max_batch_size=tuple(dict.fromkeys([spec.serving.max_batch_size, max(8, spec.serving.max_batch_size // 2)])),
        layouts=tuple(thread_layouts(cores)),
        variants=(None, *[v for v in variants if v.name != f"{spec.runtime.cpu_runtime}_{spec.runtime.cpu_precision}"]),
    )


def starting_point(spec: Any) -> Candidate:
    """Hill climbing starts from what the spec serves today, with its thread count made explicit."""
    from attnserve.runtimes.session import intra_op_threads_for

    start = Candidate.from_spec(spec)
    threads = start.intra_op_threads or intra_op_threads_for(start.instance_count)
    return start.model_copy(update={"intra_op_threads": threads})


def progress_printer(
    echo: Callable[[str], None], tuner_ref: list[Tuner]
) -> Callable[[CandidateResult, int | None], None]:
    """Prints `[m/n] #i candidate: figures | best so far: ...` after each measurement.

    `m` counts measurements (a candidate measured again in the confirmation round is one more), `n` is the number
    of measurements planned so far (it moves when hill climbing finds another pass worth running, or when the
    budget ends the search early), and `#i` is the candidate's own number in the report, the CSV and the table.
    """

    def report(result: CandidateResult, planned: int | None) -> None:
        tuner = tuner_ref[0] if tuner_ref else None
        done = tuner.measurements_made if tuner is not None else result.index
        total = f"/{max(planned, done)}" if planned else ""
        if result.status != "ok":
            figures = f"FAILED to load/measure: {result.reason[:160]}"
        else:
            figures = ", ".join(f"{f.level:g}: {f.throughput:,.0f}/s p99 {f.p99_ms:.2f} ms" for f in result.levels)
            figures += " (meets SLO)" if result.meets_slo else " (misses SLO)"
        again = f", measured {result.measurements} times" if result.measurements > 1 else ""
        echo(f"[{done}{total}] #{result.index} {result.name}: {figures} ({result.seconds:.0f} s{again})")
        best = tuner.best() if tuner is not None else None
        if best is not None and best.status == "ok":
            verdict = "meets" if best.meets_slo else "misses"
            echo(f"      best so far: #{best.index} {best.name} ({verdict} SLO, score {best.score:,.0f} req/s)")

    return report


def tune(name: str, options: TuneOptions, echo: Callable[[str], None] = print) -> TuneReport:
    """Search serving configurations of `name` under the SLO; write the report; apply the winner.

    Raises:
        UserInputError: no repository entry, bad options, or no admin token for `--url`.
        ServerError: the server could not start or be reached.
    """
    from attnserve.repository.entries import read_entry_spec

    entry = options.repository / name
    spec = read_entry_spec(entry)
    grid = options.grid or default_grid(spec, options.runs_dir / name / "cpu_variants")
    measurement = Measurement(levels=list(options.levels), slo_p99_ms=options.slo_p99_ms, mode=options.traffic)
    for key, value in options.measurement.items():
        setattr(measurement, key, value)
    started = time.monotonic()
    report = TuneReport(
        model=name,
        mode=options.mode,
        traffic=options.traffic,
        levels=[float(v) for v in options.levels],
        slo_p99_ms=options.slo_p99_ms,
        budget_s=options.budget_s,
        seconds=0.0,
        server=options.url or "embedded",
        load_average=list(os.getloadavg()),
        machine={"cores": os.cpu_count()},
    )
    tuner_ref: list[Tuner] = []
    with serve_target(name, options) as target:
        tuner = Tuner(target.control, target.settings, name, measurement, progress_printer(echo, tuner_ref))
        tuner_ref.append(tuner)
        deadline = started + options.budget_s
        echo(
            f"tuning {name} on {target.description}: {options.mode} search, SLO p99 <= {options.slo_p99_ms:g} ms at "
            f"{options.traffic} {', '.join(f'{v:g}' for v in options.levels)}, budget {options.budget_s:.0f} s"
        )
        if options.mode == "exhaustive":
            exhaustive(tuner, grid)
        else:
            hill_climb(tuner, grid, options.start or starting_point(spec), deadline)
        if tuner.planned is not None and tuner.planned > tuner.measurements_made:
            echo(f"search stopped by the budget after {tuner.measurements_made} of {tuner.planned} measurements")
        if options.confirm:
            echo(
                f"confirmation round: measuring the {CONFIRM_LEADERS} leading candidates again (one measurement's p99 "
                "varies from run to run; each leader keeps the mean throughput and the worst p99 of its measurements)"
            )
            confirm(tuner, deadline if options.mode == "quick" else None)
        report.candidates = sorted(tuner.results.values(), key=lambda r: r.index)
        winner = next((r for r in sorted(report.candidates, key=rank_key) if r.meets_slo), None)
        _finish(report, winner, name, options, tuner, echo, current=starting_point(spec))
    report.seconds = time.monotonic() - started
    if options.verify and (report.applied or report.unchanged) and options.url is None:
        verify_applied(report, name, options, measurement, echo)
    _write(report, options.out_dir, echo)
    return report


def _finish(
    report: TuneReport,
    winner: CandidateResult | None,
    name: str,
    options: TuneOptions,
    tuner: Tuner,
    echo: Callable[[str], None],
    current: Candidate,
) -> None:
    """Name the winner (or the closest), apply it unless it is what the entry serves already, restore a server."""
    if winner is None:
        measured = [r for r in report.candidates if r.status == "ok"]
        closest = min(measured, key=lambda r: r.worst_p99_ms, default=None)
        report.closest = closest.name if closest else None
        echo(f"no candidate met p99 <= {options.slo_p99_ms:g} ms at every level; nothing applied")
        if closest is not None:
            echo(f"closest: {closest.name} (worst p99 {closest.worst_p99_ms:.2f} ms)")
        if options.url is not None:
            tuner.restore()
        return
    report.winner = winner.name
    echo(f"winner: #{winner.index} {winner.name} (score {winner.score:,.0f} req/s)")
    changes = knob_changes(current, winner.candidate)
    if options.apply and not changes:
        report.unchanged = True
        echo(f"unchanged: {options.repository / name} already serves the winner; nothing written")
    elif options.apply:
        written = apply_candidate(options.repository, name, winner.candidate, options.runs_dir)
        report.applied, report.applied_to = True, [str(p) for p in written]
        echo(f"applied {', '.join(changes)} to {', '.join(report.applied_to)}")
    if options.url is not None:  # the server keeps serving the winner (or what it served before)
        if options.apply:
            from attnserve.tune.control import candidate_config

            tuner.control.load(name, candidate_config(tuner.base_config, winner.candidate))
        else:
            tuner.restore()


def knob_changes(current: Candidate, winner: Candidate) -> list[str]:
    """`knob old -> new` for each knob the winner changes (empty: the entry serves the winner already)."""
    current, winner = current.normalized(), winner.normalized()
    changes = []
    for knob in Candidate.model_fields:
        before, after = getattr(current, knob), getattr(winner, knob)
        if knob == "variant":  # None: the variant the entry serves today
            before = before.name if before is not None else "the entry's own"
            after = after.name if after is not None else before
        if after != before:
            changes.append(f"{knob} {before} -> {after}")
    return changes


def verify_applied(
    report: TuneReport, name: str, options: TuneOptions, measurement: Measurement, echo: Callable[[str], None]
) -> None:
    """Start a fresh embedded server on the repository as applied and measure the model again at every level."""
    from attnserve.clients.loadtest import run_loadtest
    from attnserve.tune.search import CandidateResult, summarize

    echo(f"verifying on a freshly started server: {name} as applied, {options.traffic} {list(options.levels)}")
    longer = dataclasses.replace(  # one measurement, not a search: the load tester's full windows
        measurement, window_s=max(2.0, measurement.window_s), min_windows=max(3, measurement.min_windows)
    )
    longer.max_windows = max(longer.max_windows, longer.min_windows)
    with serve_target(name, options) as target:
        load_report = run_loadtest(target.settings, name, longer.loadtest_options())
    winner = next(r for r in report.candidates if r.name == report.winner)
    again = summarize(
        CandidateResult(index=0, name=winner.name, candidate=winner.candidate), load_report, options.slo_p99_ms
    )
    report.verification, report.verification_meets_slo = again.levels, again.meets_slo
    figures = ", ".join(f"{f.level:g}: {f.throughput:,.0f}/s p99 {f.p99_ms:.2f} ms" for f in again.levels)
    echo(f"fresh server: {figures} -> {'holds' if again.meets_slo else 'MISSES'} the SLO at every level")


def _write(report: TuneReport, out_dir: Path, echo: Callable[[str], None]) -> None:
    echo("\n" + report.table())
    paths = [
        report.write_json(out_dir / f"{report.model}.json"),
        report.write_csv(out_dir / f"{report.model}.csv"),
        report.write_plot(out_dir / f"{report.model}.png"),
    ]
    echo(
        f"\n{len(report.candidates)} candidates in {report.seconds:.0f} s (budget {report.budget_s:.0f} s); "
        f"wrote {', '.join(map(str, paths))}"
    )
