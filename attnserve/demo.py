"""`attnserve demo`: the whole product end to end on a CPU, in one command.

    train (if runs/ has no checkpoint) -> export (verified ONNX, explain, fp16, TensorRT: skipped without GPU)
    -> serve (the real embedded Triton) -> classify sample images and a video over HTTP and gRPC
    -> one attention heatmap -> detection on held-out scene files (served mAP, a picture with boxes)
    -> load-test sweep with dynamic batching on and off -> stop -> reports/demo.md

Every figure in the report comes from this run (training metrics from the run that produced the checkpoint).
This module only orchestrates: training, export, serving and clients each live in their own package.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnserve.catalogue import HANDPICKED_SERVING, NOBATCH_SERVING, handpicked_twin
from attnserve.defaults import REPORTS_DIR, REPOSITORY_DIR, RUNS_DIR
from attnserve.demo_report import (
    CONFIG_LABELS,
    BatchingComparison,
    CpuVariantRow,
    CpuVariantSummary,
    DemoReport,
    DetectionSummary,
    ExportSummary,
    HeatmapSummary,
    InferenceSummary,
    LoadLevel,
    Machine,
    MapScores,
    ProtocolResult,
    ServingSummary,
    TrainingSummary,
    pct,
    render_markdown,
    render_results_table,
    update_readme,
)
from attnserve.spec import explain_name, nobatch_name, pipeline_name

if TYPE_CHECKING:
    from attnserve.clients.settings import ClientSettings
    from attnserve.detection import Detection
    from attnserve.export.pipeline import ExportReport
    from attnserve.export.reports import ParityReport
    from attnserve.export.stages import StageResult
    from attnserve.models.metrics import TrainingMetrics
    from attnserve.serving.server import TritonServer

__all__ = [
    "DemoOptions",
    "DemoReport",
    "register",
    "render_markdown",
    "render_results_table",
    "run_demo",
    "update_readme",
]

logger = logging.getLogger(__name__)

DEMO_TRAINED: tuple[str, ...] = ("vit_digits", "cnn_cbam_digits", "timesformer_motion")
"""Classifiers the demo trains (when `runs/` has no checkpoint) and serves."""
DEMO_DETECTOR = "det_shapes"
"""The detector the demo trains (when `runs/` has no checkpoint), serves through its pipeline and scores."""
DETECTOR_MINUTES = 1.5
"""The detector's training budget: unlike the classifiers (which stop at their planned epochs, in about a minute)
it trains until the budget runs out (docs/detection.md has its curve)."""
DETECTION_FILES = 300
"""Held-out scenes the demo writes as files and detects over each protocol (the same files as
`bench.detection_served`'s default)."""
BENCH_MODEL = "vit_tiny_patch16_224"
"""The standard ViT-Tiny/16 architecture (untrained): the performance model."""
BATCHING_MODELS: tuple[str, ...] = ("vit_digits", BENCH_MODEL)
"""Models measured with dynamic batching on and off."""
HANDPICKED_SUFFIX = "_handpicked"
OPTIMIZE_MODEL = "vit_digits"
"""Model whose CPU variants (runtime x precision) the demo measures; trained, so the gate is on accuracy."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train -> export -> serve -> infer, detect -> load test, end to end on CPU; writes reports/demo.md",
        description=(
            f"The whole product end to end on a CPU: train the demo models (unless {RUNS_DIR}/ has their checkpoints), "
            "export them (verified ONNX, explain, fp16; TensorRT skipped without a GPU), serve them with the real "
            "embedded Triton, classify sample images and a video over HTTP and gRPC, write an attention heatmap, "
            "detect shapes in held-out PNG/JPEG files through det_shapes_pipeline (COCO mAP, a picture with boxes), "
            "load-test the tuned default configuration against batching off and the old hand-picked 2 ms one, stop "
            f"the server and write {REPORTS_DIR}/demo.md (+ demo.json, "
            f"PNG plots). Only {REPORTS_DIR}/, {RUNS_DIR}/ and the repository are written; README.md only with "
            "--update-readme."
        ),
    )
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="training runs (default: runs/)")
    parser.add_argument("--repository", type=Path, default=REPOSITORY_DIR, help="Triton model repository")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where demo.md/json/png go")
    parser.add_argument("--train-minutes", type=float, default=2.0, help="training budget per classifier (default 2)")
    parser.add_argument(
        "--detector-minutes",
        type=float,
        default=DETECTOR_MINUTES,
        help=f"training budget of the detector (default {DETECTOR_MINUTES:g})",
    )
    parser.add_argument("--window-s", type=float, default=1.5, help="load-test measurement window (default 1.5 s)")
    parser.add_argument(
        "--concurrency", default="1,4,16", help="load-test concurrency sweep, comma-separated (default 1,4,16)"
    )
    parser.add_argument("--retrain", action="store_true", help="train even when runs/ has a checkpoint")
    parser.add_argument(
        "--update-readme",
        type=Path,
        nargs="?",
        const=Path("README.md"),
        default=None,
        metavar="README",
        help="also regenerate the results block of this README from the run (bare flag: README.md; "
        "default: leave every tracked file alone)",
    )
    parser.set_defaults(func=_run_from_args)


def _run_from_args(args: argparse.Namespace) -> int:
    concurrency = [int(level) for level in str(args.concurrency).split(",") if level.strip()]
    options = DemoOptions(
        runs_dir=args.runs_dir,
        repository=args.repository,
        reports_dir=args.reports_dir,
        train_minutes=args.train_minutes,
        detector_minutes=args.detector_minutes,
        window_s=args.window_s,
        concurrency=concurrency,
        retrain=args.retrain,
        readme=args.update_readme,
    )
    report = run_demo(options, echo=print)
    print(f"\nreport: {args.reports_dir / 'demo.md'} (and demo.json, PNG plots beside it)")
    print(f"total: {report.seconds:.0f} s")
    return 0


@contextmanager
def _step(title: str, timings: dict[str, float], echo: Callable[[str], None]) -> Iterator[None]:
    echo(f"==> {title}")
    started = time.perf_counter()
    yield
    timings[title] = round(time.perf_counter() - started, 1)
    echo(f"    done in {timings[title]:.1f} s")


@dataclass(frozen=True)
class DemoOptions:
    """Where the demo works and how long it trains and measures (`attnserve demo`'s flags)."""

    runs_dir: Path = RUNS_DIR
    """Training runs; a model with a checkpoint there is not retrained (unless `retrain`)."""
    repository: Path = REPOSITORY_DIR
    """The Triton model repository the models are exported into."""
    reports_dir: Path = REPORTS_DIR
    """Output folder of the report."""
    train_minutes: float = 2.0
    """Training budget per classifier."""
    detector_minutes: float = DETECTOR_MINUTES
    """Training budget of the detector."""
    window_s: float = 1.5
    """Load-test measurement window."""
    concurrency: Sequence[int] = (1, 4, 16)
    """Closed-loop concurrency sweep."""
    retrain: bool = False
    """Train even when a checkpoint exists."""
    readme: Path | None = None
    """README whose generated results block is refreshed (None: leave it)."""


def run_demo(options: DemoOptions | None = None, echo: Callable[[str], None] = logger.info) -> DemoReport:
    """Run the end-to-end demo and write `reports_dir/demo.{md,json}` plus plots.

    Args:
        options: folders, budgets and the load-test sweep (default: `DemoOptions()`).
        echo: progress sink (the CLI prints).

    Returns:
        The report (also written as `demo.json`).
    """
    from attnserve.clients.settings import ClientSettings

    started = time.perf_counter()
    options = options or DemoOptions()
    runs_dir, repository, reports_dir = Path(options.runs_dir), Path(options.repository), Path(options.reports_dir)
    train_minutes, detector_minutes, retrain = options.train_minutes, options.detector_minutes, options.retrain
    reports_dir.mkdir(parents=True, exist_ok=True)
    work_dir = runs_dir / "demo"
    timings: dict[str, float] = {}
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    with _step(_train_title(runs_dir, retrain), timings, echo):
        training = _train_all(runs_dir, train_minutes, retrain, echo)
        detector = _train_detector(runs_dir, detector_minutes, retrain, echo)
    with _step("export: verified ONNX, explain, pipelines, fp16, TensorRT", timings, echo):
        exports = _export_all(runs_dir, repository, echo)
        _write_nobatch_entries(repository, work_dir / "nobatch_repository", exports)

    with _step(f"cpu-variants: CPU variants of {OPTIMIZE_MODEL} behind the accuracy gate", timings, echo):
        optimize = _optimize(runs_dir, reports_dir, echo)

    with _step("serve: start the embedded Triton", timings, echo):
        server, serving = _start_server(repository, work_dir)
    serving.ready_s = timings["serve: start the embedded Triton"]
    try:
        http = ClientSettings(url=server.http_url, protocol="http")
        grpc = ClientSettings(url=server.grpc_url, protocol="grpc")
        with _step("infer: sample images and a video over HTTP and gRPC", timings, echo):
            inference = _classify_samples(http, grpc, work_dir / "samples", echo)
        with _step("explain: attention heatmap", timings, echo):
            heatmap = _write_heatmap(grpc, work_dir / "samples", reports_dir, echo)
        with _step(f"detect: {DETECTION_FILES} held-out scene files, in-process, HTTP and gRPC", timings, echo):
            detection = _detect_scenes((http, grpc), runs_dir, reports_dir, detector, echo)
        with _step("load test: tuned default vs batching off vs hand-picked 2 ms", timings, echo):
            loadtest = _loadtest_batching(grpc, options.concurrency, options.window_s, reports_dir, echo)
    finally:
        with _step("stop the server", timings, echo):
            server.stop()
    report = DemoReport(
        generated_at=generated_at, machine=_machine(), timings_s=timings, training=training, export=exports,
        optimize=optimize, serving=serving, inference=inference, heatmap=heatmap, loadtest=loadtest,
        detection=detection, seconds=round(time.perf_counter() - started, 1),
    )  # fmt: skip
    _write_reports(report, reports_dir, options.readme)
    return report


# ------------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------------
def _train_title(runs_dir: Path, retrain: bool) -> str:
    """Says what the training step will do: reuse the checkpoints it finds, train the others."""
    from attnserve.models.checkpoint import has_checkpoint

    trained = (*DEMO_TRAINED, DEMO_DETECTOR)
    reused = [] if retrain else [name for name in trained if has_checkpoint(runs_dir / name)]
    if not reused:
        return f"train {', '.join(trained)}"
    if len(reused) == len(trained):
        return f"train: reusing every checkpoint in {runs_dir}/"
    return f"train: reusing {', '.join(reused)} from {runs_dir}/, training the others"


def _start_server(repository: Path, work_dir: Path) -> tuple[TritonServer, ServingSummary]:
    """The embedded Triton on the runtime view of the demo's models, their explain and pipeline entries and
    the batching twins; returns the ready server and what it loaded / left out."""
    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer

    served = [*DEMO_TRAINED, BENCH_MODEL]
    serve_names = served + [explain_name(name) for name in served] + [pipeline_name(name) for name in DEMO_TRAINED]
    serve_names.append(pipeline_name(DEMO_DETECTOR))  # the ensemble pulls in the model and its two python steps
    view, loaded, skipped = build_runtime_repository(repository, work_dir / "triton", serve_names)
    _add_entries(view, work_dir / "nobatch_repository", work_dir / "triton_nobatch")
    loaded += [twin for name in BATCHING_MODELS for twin in (nobatch_name(name), f"{name}{HANDPICKED_SUFFIX}")]
    server = TritonServer(view, models=loaded, endpoints=TritonEndpoints.any_free(), work_dir=work_dir / "server")
    server.start()
    try:
        server.wait_ready(timeout=180)
    except BaseException:
        server.stop()
        raise
    return server, ServingSummary(loaded=sorted(loaded), skipped=skipped)


def _write_reports(report: DemoReport, reports_dir: Path, readme: Path | None) -> None:
    """`demo.json`, `demo.md` and (when given) the README's generated results block."""
    (reports_dir / "demo.json").write_text(report.model_dump_json(indent=2) + "\n")
    (reports_dir / "demo.md").write_text(render_markdown(report))
    if readme is not None and Path(readme).is_file():
        update_readme(Path(readme), render_results_table(report))


def _reuse_or_train(
    name: str, runs_dir: Path, train_minutes: float, retrain: bool, echo: Callable[[str], None]
) -> tuple[TrainingMetrics | None, bool]:
    """The run's metrics, from its checkpoint when one exists (unless `retrain`) or from a new training run; and
    whether the checkpoint was reused."""
    from attnserve.models.checkpoint import has_checkpoint, load_metrics
    from attnserve.models.train import TrainOptions, train

    run_dir = runs_dir / name
    if has_checkpoint(run_dir) and not retrain:
        echo(f"    {name}: checkpoint in {run_dir}, not retrained")
        return load_metrics(run_dir), True
    echo(f"    {name}: training for up to {train_minutes:g} min")
    return train(TrainOptions(name, max_minutes=train_minutes, runs_dir=runs_dir)), False


def _train_all(
    runs_dir: Path, train_minutes: float, retrain: bool, echo: Callable[[str], None]
) -> dict[str, TrainingSummary]:
    results: dict[str, TrainingSummary] = {}
    for name in DEMO_TRAINED:
        metrics, reused = _reuse_or_train(name, runs_dir, train_minutes, retrain, echo)
        results[name] = TrainingSummary(
            reused_checkpoint=reused,
            test_accuracy=metrics.test_accuracy if metrics else None,
            chance_accuracy=metrics.chance_accuracy if metrics else None,
            train_seconds=round(metrics.train_seconds, 1) if metrics else 0.0,
            epochs=metrics.epochs if metrics else None,
        )
        echo(f"    {name}: test accuracy {pct(results[name].test_accuracy)}")
    return results


def _train_detector(
    runs_dir: Path, train_minutes: float, retrain: bool, echo: Callable[[str], None]
) -> tuple[TrainingMetrics | None, bool]:
    """Train the detector unless its checkpoint exists; returns its run's metrics and whether it was reused."""
    metrics, reused = _reuse_or_train(DEMO_DETECTOR, runs_dir, train_minutes, retrain, echo)
    if metrics is not None and metrics.coco_map is not None and metrics.coco_map50 is not None:
        echo(f"    {DEMO_DETECTOR}: held-out mAP@.5 {metrics.coco_map50:.3f}, mAP@[.5:.95] {metrics.coco_map:.3f}")
    return metrics, reused


def _export_all(runs_dir: Path, repository: Path, echo: Callable[[str], None]) -> dict[str, ExportSummary]:
    from attnserve.errors import ExportError
    from attnserve.export.pipeline import ExportOptions, export_model
    from attnserve.serving.pipelines import write_pipeline_entries

    results: dict[str, ExportSummary] = {}
    for name in (*DEMO_TRAINED, DEMO_DETECTOR, BENCH_MODEL):
        # The detector has no attention map to explain (a dense head, no object queries), and the fp16 stage
        # compares classifier logits: both are left out for it.
        detector = name == DEMO_DETECTOR
        # Version 1 every time: a demo re-run replaces its own export instead of piling up versions.
        options = ExportOptions(tensorrt=True, version=1, explain=not detector, fp16=False if detector else None)
        export_report = export_model(name, repository, runs_dir=runs_dir, options=options)
        if name != BENCH_MODEL:
            write_pipeline_entries(export_report.spec, repository)
        summary = results[name] = _export_summary(export_report)
        echo(
            f"    {name}: {'ok' if export_report.ok else 'FAILED'}; Attention nodes {summary.attention_nodes}, "
            f"parity max abs diff {summary.parity_max_abs_diff}, TensorRT: {summary.tensorrt}"
        )
        if not export_report.ok:
            raise ExportError(f"export of {name} failed: {summary.stages}")
    return results


def _export_summary(export_report: ExportReport) -> ExportSummary:
    """The demo's view of one export report (its typed sub-reports and stage records)."""
    from attnserve.export.stages import ExportStage

    onnx, parity, fp16 = export_report.onnx, export_report.parity, export_report.fp16
    return ExportSummary(
        onnx_path=str(onnx.onnx_path) if onnx else None,
        exporter=onnx.exporter if onnx else None,
        attention_nodes=onnx.attention_nodes if onnx else None,
        parity_max_abs_diff=_max_diff(parity),
        parity_ok=parity.ok if parity else None,
        ort_optimisation=_stage_text(export_report.stage(ExportStage.ORT_OPTIMIZE)),
        fp16_max_abs_diff=fp16.max_abs_diff if fp16 else None,
        fp16_top1_agreement=fp16.top1_agreement if fp16 else None,
        tensorrt=_stage_text(export_report.stage(ExportStage.ONNX2TRT)),
        stages={stage.stage: stage.status for stage in export_report.stages},
        seconds=round(export_report.seconds, 1),
        spec=export_report.spec,
    )


def _optimize(runs_dir: Path, reports_dir: Path, echo: Callable[[str], None]) -> CpuVariantSummary:
    """The CPU fast-path table for one trained model (not served here: the demo serves fp32 everywhere so
    batching on/off compare like with like)."""
    from attnserve.export.cpu_choice import ChoiceSettings, choose_for_deployable

    optimize_report = choose_for_deployable(
        OPTIMIZE_MODEL,
        runs_dir=runs_dir,
        repository=None,
        reports_dir=reports_dir / "optimize",
        settings=ChoiceSettings(repeats=2, min_seconds=0.5),
    )
    echo(f"    {OPTIMIZE_MODEL}: picked {optimize_report.picked} ({optimize_report.gate_rule})")
    return CpuVariantSummary(
        model=optimize_report.model,
        gate_rule=optimize_report.gate_rule,
        batch_size=optimize_report.batch_size,
        picked=optimize_report.picked,
        rows=[
            CpuVariantRow.model_validate(row.model_dump(include=set(CpuVariantRow.model_fields)))
            for row in optimize_report.rows
        ],
    )


def _write_nobatch_entries(repository: Path, nobatch_repository: Path, exports: dict[str, ExportSummary]) -> None:
    """`NAME_nobatch` (batching off) and `NAME_handpicked` (the old 2 ms configuration): the same ONNX and spec
    with other serving knobs, compared with the tuned default in the load-test section."""
    from attnserve.repository.entries import read_entry_spec, write_model_entry

    shutil.rmtree(nobatch_repository, ignore_errors=True)
    for name in BATCHING_MODELS:
        spec = read_entry_spec(repository / name)
        for twin_name, serving in (
            (nobatch_name(name), NOBATCH_SERVING),
            (f"{name}{HANDPICKED_SUFFIX}", HANDPICKED_SERVING),
        ):
            twin = handpicked_twin(spec, twin_name, serving)
            onnx_path = exports[name].onnx_path
            if onnx_path is None:
                raise ValueError(f"the export of {name} names no ONNX file")
            write_model_entry(twin, Path(onnx_path), nobatch_repository, version=1)


def _add_entries(view: Path, source: Path, work_dir: Path) -> None:
    """Add the runtime view of `source`'s entries to an existing runtime view folder."""
    from attnserve.serving.runtime_view import build_runtime_repository

    extra_view, _, _ = build_runtime_repository(source, work_dir)
    for entry in extra_view.iterdir():
        target = view / entry.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(entry, target, symlinks=True)


def _classify_samples(
    http: ClientSettings, grpc: ClientSettings, samples_dir: Path, echo: Callable[[str], None]
) -> dict[str, InferenceSummary]:
    from attnserve.clients.client import TritonClient
    from attnserve.models.data import write_samples

    results: dict[str, InferenceSummary] = {}
    for name in DEMO_TRAINED:
        count = 2 if name == "timesformer_motion" else 8
        files = write_samples(name, samples_dir / name, count)
        truth = [path.stem.split("_", 1)[1] for path in files]
        per_protocol: dict[str, ProtocolResult] = {}
        for protocol, settings in (("http", http), ("grpc", grpc)):
            with TritonClient(settings) as client:
                predictions = client.classify(name, files, top_k=3)
                pipeline = client.classify_encoded(pipeline_name(name), files, top_k=3)
            per_protocol[protocol] = ProtocolResult(
                correct=sum(p.label == t for p, t in zip(predictions, truth)),
                pipeline_correct=sum(p.label == t for p, t in zip(pipeline, truth)),
                pipeline_agrees=sum(a.label == b.label for a, b in zip(predictions, pipeline)),
                mean_latency_ms=round(sum(p.latency_ms for p in predictions) / len(predictions), 2),
                labels=[p.label for p in predictions],
            )
        served = results[name] = InferenceSummary(samples=len(files), truth=truth, **per_protocol)
        echo(
            f"    {name}: {served.http.correct}/{len(files)} correct over HTTP, {served.grpc.correct}/{len(files)} "
            f"over gRPC, pipeline (bytes in) {served.grpc.pipeline_correct}/{len(files)}"
        )
    return results


def _write_heatmap(
    grpc: ClientSettings, samples_dir: Path, reports_dir: Path, echo: Callable[[str], None]
) -> HeatmapSummary:
    from attnserve.clients.client import TritonClient
    from attnserve.clients.heatmap import write_overlay

    image = sorted((samples_dir / "vit_digits").glob("*.png"))[0]
    with TritonClient(grpc) as client:
        info = client.model_info(explain_name("vit_digits"))
        prediction, attention_map = client.explain("vit_digits", image)
        pixels = client.pixels_for(info, [image])[0]
    path = write_overlay(pixels, attention_map, prediction, reports_dir / "attention_vit_digits.png")
    echo(f"    wrote {path} (predicted {prediction.label}, map {tuple(attention_map.shape)})")
    return HeatmapSummary(image=str(image), png=str(path), label=prediction.label, map_shape=list(attention_map.shape))


def _detect_scenes(
    settings: tuple[ClientSettings, ClientSettings],
    runs_dir: Path,
    reports_dir: Path,
    detector: tuple[TrainingMetrics | None, bool],
    echo: Callable[[str], None],
) -> DetectionSummary:
    """Held-out scenes as non-square PNG/JPEG files, detected in-process and through `NAME_pipeline` over HTTP
    and gRPC, all scored by pycocotools against boxes in each file's pixels; one file drawn with its boxes."""
    from attnserve.clients.client import TritonClient
    from attnserve.clients.drawing import write_detections
    from attnserve.detection import DEFAULT_SCORE_THRESHOLD, coco_map, coco_results_of
    from attnserve.models.checkpoint import resolve
    from attnserve.models.detection_train import detect_files
    from attnserve.models.scenes import FILE_SIZES, write_scene_files

    metrics, reused = detector
    files_dir = runs_dir / "demo" / "scenes"
    shutil.rmtree(files_dir, ignore_errors=True)
    files, truth = write_scene_files(files_dir, DETECTION_FILES)
    model, spec = resolve(DEMO_DETECTOR, runs_dir)
    answers = {"in_process": detect_files(model, spec, files, DEFAULT_SCORE_THRESHOLD)}
    for protocol, client_settings in zip(("http", "grpc"), settings, strict=True):
        with TritonClient(client_settings) as client:
            answers[protocol] = client.detect(DEMO_DETECTOR, files)
    scores = {
        where: MapScores(**coco_map(truth, coco_results_of(found, spec.io.labels))) for where, found in answers.items()
    }
    shown = _busy_scene(truth, answers["grpc"][:20])
    picture = write_detections(
        files[shown], answers["grpc"][shown], reports_dir / f"detections_{DEMO_DETECTOR}.png", spec.io.labels
    )
    echo(f"    {DEMO_DETECTOR}: mAP@.5 served {scores['http'].map50:.3f} (HTTP) {scores['grpc'].map50:.3f} (gRPC), "
         f"in-process {scores['in_process'].map50:.3f} on the same files; wrote {picture}")  # fmt: skip
    held_out = None
    if metrics is not None and metrics.coco_map is not None:
        held_out = MapScores(map=metrics.coco_map, map50=metrics.coco_map50 or 0.0, map75=metrics.coco_map75 or 0.0)
    return DetectionSummary(
        model=DEMO_DETECTOR,
        reused_checkpoint=reused,
        train_seconds=round(metrics.train_seconds, 1) if metrics else 0.0,
        steps=metrics.steps if metrics else None,
        held_out=held_out,
        held_out_scenes=metrics.test_samples if metrics else None,
        files=len(files),
        sizes=[list(size) for size in FILE_SIZES],
        score_threshold=DEFAULT_SCORE_THRESHOLD,
        picture=str(picture),
        picture_detections=len(answers["grpc"][shown]),
        **scores,
    )


def _busy_scene(truth: dict[str, Any], answers: Sequence[Sequence[Detection]]) -> int:
    """The picture's scene: among `answers`, the one with the most objects (then the widest file) whose answer
    counts as many detections as it has objects (a busy scene, shown as served); the first one when none matches."""
    objects = Counter(annotation["image_id"] for annotation in truth["annotations"])
    widths = {image["id"]: image["width"] for image in truth["images"]}
    matching = [index for index, found in enumerate(answers) if len(found) == objects[index]]
    return max(matching, key=lambda index: (objects[index], widths[index]), default=0)


def _loadtest_batching(
    grpc: ClientSettings, concurrency: Sequence[int], window_s: float, reports_dir: Path, echo: Callable[[str], None]
) -> dict[str, BatchingComparison]:
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest

    options = LoadTestOptions(
        concurrency=list(concurrency), warmup_s=1.0, window_s=window_s, min_windows=2, max_windows=3
    )
    results: dict[str, BatchingComparison] = {}
    for name in BATCHING_MODELS:
        per_mode: dict[str, list[LoadLevel]] = {}
        configs = (
            ("batching_on", name),
            ("batching_off", nobatch_name(name)),
            ("handpicked", f"{name}{HANDPICKED_SUFFIX}"),
        )
        for mode, model in configs:
            load_report = run_loadtest(grpc, model, options)
            load_report.write_json(reports_dir / f"loadtest_{model}.json")
            load_report.write_csv(reports_dir / f"loadtest_{model}.csv")
            load_report.write_plot(reports_dir / f"loadtest_{model}.png")
            per_mode[mode] = [
                LoadLevel(
                    concurrency=level.concurrency,
                    throughput=round(level.throughput_infer_s, 1),
                    p50_ms=round(level.latency.p50_ms, 2),
                    p99_ms=round(level.latency.p99_ms, 2),
                    avg_batch=round(level.server.avg_batch_size, 2),
                    client_success=level.client_success,
                    server_success=level.server_success,
                    errors=level.errors,
                )
                for level in load_report.levels
            ]
        ratios = _throughput_ratios(per_mode["batching_on"], per_mode["batching_off"])
        handpicked = _throughput_ratios(per_mode["batching_on"], per_mode["handpicked"])
        plot = _plot_configs(name, per_mode, reports_dir / f"loadtest_{name}_configs.png")
        results[name] = BatchingComparison(
            **per_mode,
            throughput_ratio_on_vs_off=ratios,
            throughput_ratio_tuned_vs_handpicked=handpicked,
            plot=str(plot),
        )
        echo(f"    {name}: throughput tuned/batching-off {ratios}, tuned/hand-picked {handpicked}")
    return results


def _throughput_ratios(levels: list[LoadLevel], baseline: list[LoadLevel]) -> dict[str, float | None]:
    """Concurrency (as text) -> throughput of `levels` / throughput of `baseline` (None when it served nothing)."""
    return {
        str(level.concurrency): round(level.throughput / base.throughput, 2) if base.throughput else None
        for level, base in zip(levels, baseline)
    }


def _plot_configs(name: str, per_mode: dict[str, list[LoadLevel]], path: Path) -> Path:
    """Throughput and p99 against concurrency for the three configurations of one model, on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, levels in per_mode.items():
        concurrency = [level.concurrency for level in levels]
        left.plot(concurrency, [level.throughput for level in levels], marker="o", label=CONFIG_LABELS[mode])
        right.plot(concurrency, [level.p99_ms for level in levels], marker="o", label=CONFIG_LABELS[mode])
    for axis, ylabel in ((left, "throughput (infer/s)"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    figure.suptitle(f"{name}: serving configurations, one server run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# ------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------
def _machine() -> Machine:
    """What the figures were measured on: CPU model and core count (figures differ between machines)."""
    import os

    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return Machine(platform=platform.platform(), processor=f"{cpu}, {os.cpu_count()} cores")


def _max_diff(parity: ParityReport | None) -> float | None:
    if parity is None:
        return None
    return float(f"{parity.max_abs_diff():.3g}")


def _stage_text(stage: StageResult | None) -> str:
    if stage is None:
        return "not run"
    return stage.status + (f": {stage.reason}" if stage.reason else "")
