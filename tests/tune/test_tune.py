"""`attnserve tune` on a real Triton: the applied winner is what the server serves, an impossible SLO applies
nothing and names the closest candidate, and a candidate that fails to load is reported while the search goes on.

No timing is asserted: the SLOs are chosen so that every candidate meets one and none meets the other.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from attnserve.tune.candidates import Grid, Variant
from attnserve.tune.control import served_knobs
from attnserve.tune.run import TuneOptions, tune

pytestmark = [pytest.mark.triton, pytest.mark.slow]

MODEL = "cnn_cbam_digits"
BROKEN = Variant(
    name="broken_variant",
    runtime="onnxruntime",
    precision="fp32",
    model_file="absent.onnx",
    path="/nonexistent/absent.onnx",
)
TWO_POINTS: dict = {
    "dynamic_batching": (True,),
    "max_queue_delay_us": (0, 100),
    "preferred_batch_sizes": ((),),
    "max_batch_size": (8,),
    "layouts": ((1, 1),),
    "allow_spinning": (False,),
}
QUICK = {"warmup_s": 0.2, "window_s": 0.3, "min_windows": 1, "max_windows": 2}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support.deployables import build_deployables_repository

    repository = tmp_path_factory.mktemp("tune") / "model_repository"
    build_deployables_repository(repository, [MODEL], tiny=True, explain=False)
    return repository


def _options(repository: Path, tmp_path: Path, slo_p99_ms: float, grid: Grid) -> TuneOptions:
    return TuneOptions(
        repository=repository,
        slo_p99_ms=slo_p99_ms,
        levels=(1, 2),
        mode="exhaustive",
        grid=grid,
        out_dir=tmp_path / "reports",
        runs_dir=tmp_path / "runs",
        measurement=dict(QUICK),
    )


def test_applied_winner_is_what_the_server_serves_and_a_broken_candidate_does_not_stop_the_search(
    repository: Path, tmp_path: Path
) -> None:
    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer

    lines: list[str] = []
    grid = Grid(**TWO_POINTS, variants=(None, BROKEN))
    options = _options(repository, tmp_path, 60_000.0, grid)
    options.verify = True
    report = tune(MODEL, options, echo=lines.append)

    assert len(report.candidates) == 4  # 2 knob points x (own file, broken variant)
    failed = [r for r in report.candidates if r.status == "failed"]
    assert len(failed) == 2 and all("broken_variant" in r.name for r in failed)
    assert any("broken_variant" in line and "FAILED" in line for line in lines)
    assert report.candidates[-1].status == "failed" and report.candidates[2].status == "ok"  # went on after one
    measured = [r for r in report.candidates if r.status == "ok"]
    assert all(r.meets_slo and all(f.counts_agree for f in r.levels) for r in measured)
    assert all(r.measurements == 2 for r in measured)  # the confirmation round measured both leaders again
    assert any(line.startswith("confirmation round") for line in lines)
    assert report.winner is not None and report.applied
    assert report.verification_meets_slo and [f.level for f in report.verification] == [1.0, 2.0]  # fresh server
    assert {p.suffix for p in (tmp_path / "reports").iterdir()} == {".json", ".csv", ".png"}

    winner = next(r.candidate for r in report.candidates if r.name == report.winner)
    view, loaded, _ = build_runtime_repository(repository, tmp_path / "serve", [MODEL])
    server = TritonServer(view, models=loaded, endpoints=TritonEndpoints.any_free(), work_dir=tmp_path / "s")
    with server, urllib.request.urlopen(f"http://{server.http_url}/v2/models/{MODEL}/config") as response:
        served = served_knobs(json.loads(response.read()))
    expected = {knob: getattr(winner, knob) for knob in served if hasattr(winner, knob)}
    assert {knob: served[knob] for knob in expected} == expected


def test_an_slo_no_candidate_meets_applies_nothing_and_names_the_closest(repository: Path, tmp_path: Path) -> None:
    config_path = repository / MODEL / "config.pbtxt"
    before = config_path.read_text()
    lines: list[str] = []
    options = _options(repository, tmp_path, 1e-6, Grid(**TWO_POINTS))
    options.levels = (1,)  # one level is enough to miss
    report = tune(MODEL, options, echo=lines.append)

    assert report.winner is None and not report.applied
    assert config_path.read_text() == before
    assert report.closest in {r.name for r in report.candidates}
    assert any(line.startswith("closest: " + report.closest) for line in lines)
    assert any("nothing applied" in line for line in lines)


def test_a_second_measurement_keeps_the_worst_p99_and_the_mean_throughput() -> None:
    from attnserve.tune.candidates import Candidate
    from attnserve.tune.search import CandidateResult, LevelFigures, merge_measurements

    def result(throughput: float, p99_ms: float) -> CandidateResult:
        figures = LevelFigures(
            level=1.0, throughput=throughput, p50_ms=1.0, p99_ms=p99_ms, errors=0, avg_batch=1.0, queue_us=0.0,
            compute_infer_us=100.0, counts_agree=True,
        )  # fmt: skip
        return CandidateResult(index=1, name="c", candidate=Candidate(), levels=[figures])

    first, again = result(300.0, 8.0), result(100.0, 12.0)
    first.meets_slo, first.score, first.worst_p99_ms = True, 300.0, 8.0  # what one lucky measurement said
    merged = merge_measurements(first, again, slo_p99_ms=10.0)
    assert merged.measurements == 2
    assert merged.levels[0].throughput == 200.0 and merged.levels[0].p99_ms == 12.0
    assert not merged.meets_slo and merged.worst_p99_ms == 12.0 and merged.score == pytest.approx(200.0)


def test_a_winner_the_entry_serves_already_is_unchanged_and_the_counter_counts_measurements(
    repository: Path, tmp_path: Path
) -> None:
    import re

    from attnserve.repository.entries import read_entry_spec
    from attnserve.tune.run import starting_point

    entry = repository / MODEL
    before = {path.name: path.read_bytes() for path in (entry / "config.pbtxt", entry / "spec.json")}
    start = starting_point(read_entry_spec(entry))
    only_the_start = Grid(
        dynamic_batching=(start.dynamic_batching,),
        max_queue_delay_us=(start.max_queue_delay_us,),
        preferred_batch_sizes=(start.preferred_batch_sizes,),
        max_batch_size=(start.max_batch_size,),
        layouts=((start.instance_count, start.intra_op_threads),),
        allow_spinning=(start.allow_spinning,),
    )
    lines: list[str] = []
    options = _options(repository, tmp_path, 60_000.0, only_the_start)
    options.mode, options.levels = "quick", (1,)
    report = tune(MODEL, options, echo=lines.append)  # the search measures the start, the confirmation again

    assert report.winner is not None and report.unchanged and not report.applied and not report.applied_to
    assert any(line.startswith("unchanged: ") for line in lines) and not any("applied" in line for line in lines)
    assert {path.name: path.read_bytes() for path in (entry / "config.pbtxt", entry / "spec.json")} == before
    counters = [tuple(map(int, m.groups())) for line in lines if (m := re.match(r"\[(\d+)/(\d+)\] #1 ", line))]
    assert [done for done, _ in counters] == [1, 2] and all(done <= total for done, total in counters), lines
    assert "score: throughput averaged over the levels" in report.table()


def test_tune_help_explains_its_words_and_lists_choices_once(capsys) -> None:
    from attnserve.cli import main

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = capsys.readouterr().out
    assert "{on,off,on,off}" not in text and "on|off|on,off" in text
    assert "score" in text and "geometric mean" in text and "confirmation" in text and "unchanged" in text
