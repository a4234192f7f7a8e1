"""`attnserve infer` and `attnserve loadtest` (heavy imports stay inside the command functions)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnserve.defaults import REPORTS_DIR

if TYPE_CHECKING:
    from collections.abc import Callable

    from attnserve.clients.loadtest import WindowProgress
    from attnserve.clients.loadtest_options import LoadTestOptions
    from attnserve.clients.loadtest_report import LevelResult, LoadTestReport
    from attnserve.clients.settings import ClientSettings
    from attnserve.video import Timeline


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="host:port of Triton (default $ATTNSERVE_URL or 127.0.0.1:<port>)")
    parser.add_argument(
        "--protocol", choices=("grpc", "http"), default=None, help="wire protocol (default $ATTNSERVE_PROTOCOL or grpc)"
    )
    parser.add_argument("--timeout-s", type=float, default=None, help="per-request timeout in seconds")


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from attnserve.clients.settings import ClientSettings
    from attnserve.errors import UserInputError, validation_summary

    overrides = {
        key: value
        for key, value in (("url", args.url), ("protocol", args.protocol), ("timeout_s", args.timeout_s))
        if value is not None
    }
    try:
        return ClientSettings(**overrides)
    except ValidationError as exc:  # read from the options and $ATTNSERVE_* variables
        raise UserInputError(f"invalid client settings (options or $ATTNSERVE_*): {validation_summary(exc)}") from exc


def _levels(text: str, kind: type) -> list:
    from attnserve.errors import UserInputError

    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise UserInputError(f"expected a comma-separated list of numbers like 1,2,4, got {text!r}") from exc
    if not values:
        raise UserInputError(f"expected at least one level, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `infer` and `loadtest` subcommands."""
    infer = subparsers.add_parser(
        "infer",
        help="classify images/videos with a served model (top-k table)",
        description=(
            "Classify image or video files with a model served by a running `attnserve serve` (or any Triton). "
            "By default the client decodes each file and sends uint8 pixels, transformed the way the model's "
            "spec declares (the same transform as training); --pipeline sends the encoded bytes to NAME_pipeline "
            "and lets the server decode them. Prints a table (or JSON with --json); says so when the model "
            "serves untrained weights."
        ),
    )
    infer.add_argument("--model", required=True, help="served model name (e.g. vit_digits)")
    infer.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="images (PNG, JPEG, ...) or videos (MP4, ...)"
    )
    infer.add_argument("--top-k", type=int, default=5, help="how many labels to list per file")
    infer.add_argument(
        "--pipeline",
        action="store_true",
        help="send encoded bytes to NAME_pipeline (server-side decoding) instead of pixels",
    )
    infer.add_argument(
        "--explain",
        type=Path,
        metavar="OUT.png",
        help="also write the first file with its attention heatmap (from NAME_explain)",
    )
    infer.add_argument("--json", action="store_true", help="print the predictions as JSON on stdout (no table)")
    infer.add_argument(
        "--boxes",
        type=Path,
        metavar="OUT.png",
        help="detectors: draw the labelled boxes on the original image (several files: OUT_1.png, ...); a detector "
        "answers through NAME_pipeline (its boxes in each file's own pixels), --json prints COCO-style results",
    )
    infer.add_argument(
        "--timeline",
        action="store_true",
        help="videos of any length: label sliding windows with NAME_timeline (per-segment top-k + whole video)",
    )
    infer.add_argument(
        "--window-s",
        type=float,
        default=None,
        help="--timeline window in seconds (default: the model's frames at the video's rate; 0 = whole video)",
    )
    infer.add_argument(
        "--stride-s", type=float, default=None, help="--timeline step between windows (default: half the window)"
    )
    _add_connection_options(infer)
    infer.set_defaults(func=run_infer)
    _register_loadtest(subparsers)


def _register_loadtest(subparsers: argparse._SubParsersAction) -> None:
    load = subparsers.add_parser(
        "loadtest",
        help="measure latency/throughput (closed-loop sweep or open-loop rate)",
        description=(
            "Load-test a served model: a closed-loop sweep over --concurrency levels (default 1,2,4,8) or "
            "open-loop request rates (--rate, optionally Poisson). Each level runs measurement windows until "
            "throughput is stable within --stability-pct (between --min-windows and --max-windows). Prints a "
            "table (latencies in ms, server times in us) or JSON, and writes JSON, CSV and a PNG to --out-dir."
        ),
    )
    load.add_argument("--model", required=True, help="served model name (e.g. vit_digits, or NAME_pipeline)")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument(
        "--concurrency", default=None, help="closed loop: comma list, e.g. 1,2,4,8,16,32 (default 1,2,4,8)"
    )
    mode.add_argument("--rate", default=None, help="open loop: requests/s, one or a comma list")
    load.add_argument("--poisson", action="store_true", help="open loop with exponential gaps (Poisson arrivals)")
    load.add_argument("--batch-size", type=int, default=1, help="samples per request")
    load.add_argument("--workers", type=int, default=1, help="load-generator processes")
    load.add_argument("--warmup-s", type=float, default=1.0, help="seconds of unmeasured warm-up per level")
    load.add_argument("--window-s", type=float, default=2.0, help="measurement window length in seconds")
    load.add_argument(
        "--stability-pct", type=float, default=10.0, help="windows count as stable within this throughput deviation"
    )
    load.add_argument(
        "--min-windows",
        type=int,
        default=None,
        help="least measurement windows per level (default: 3, or --max-windows when that is lower)",
    )
    load.add_argument("--max-windows", type=int, default=6, help="most measurement windows per level")
    load.add_argument("--slo-p99-ms", type=float, default=None, help="find the highest level whose p99 is under this")
    load.add_argument("--input-file", type=Path, default=None, help="payload for models taking encoded bytes")
    load.add_argument("--out-dir", type=Path, default=REPORTS_DIR / "loadtest", help="JSON, CSV and PNG go here")
    load.add_argument("--name", default=None, help="file stem of the outputs (default MODEL-MODE)")
    load.add_argument("--json", action="store_true", help="print the report as JSON on stdout (no table)")
    _add_connection_options(load)
    load.set_defaults(func=run_loadtest_command)


# ---------------------------------------------------------------------------------------------------------
def run_infer(args: argparse.Namespace) -> int:
    from attnserve.clients.client import ModelNotFoundError, TritonClient
    from attnserve.console import make_console, print_json
    from attnserve.spec import pipeline_name

    console = make_console()
    settings = _settings(args)
    with TritonClient(settings) as client:
        if args.timeline:
            return _run_timeline(client, args, console)
        if args.boxes is not None or _is_detector(client, args.model):
            return _run_detect(client, args, console)
        model = pipeline_name(args.model) if args.pipeline else args.model
        try:
            if args.pipeline:
                predictions = client.classify_encoded(model, args.files, top_k=args.top_k)
            else:
                predictions = client.classify(model, args.files, top_k=args.top_k)
        except ModelNotFoundError as exc:
            raise _with_served_models(client, exc) from exc
        trained = client.model_info(model).trained
        if args.json:
            print_json(_infer_json(model, settings, trained, predictions))
        else:
            _print_predictions(console, f"{model} via {settings.protocol} at {settings.resolved_url}", predictions)
        if trained is False:
            note = f"note: {model} serves UNTRAINED (random) weights: its labels are not meaningful"
            make_console(stderr=True).print(note)
        if args.explain is not None:
            _write_explain(client, args, console)
    return 0


def _is_detector(client: Any, model: str) -> bool:
    """Whether the served `model` is a detector (its spec says so; the metadata is cached for the classify path)."""
    from attnserve.errors import AttnserveError

    try:
        return client.model_info(model).spec.get("kind") == "detection"
    except AttnserveError:  # no such model: the classifier path names the served ones
        return False


def _run_detect(client: Any, args: argparse.Namespace, console: Any) -> int:
    """`infer` on a detector: a table per file (or COCO-style JSON), and the boxes drawn with --boxes."""
    from rich.table import Table

    from attnserve.clients.drawing import write_detections
    from attnserve.console import print_json
    from attnserve.spec import pipeline_name

    labels = tuple(client.model_info(pipeline_name(args.model)).spec_io.get("labels", ()))
    answers = client.detect(args.model, args.files)
    if args.json:
        print_json([{"image_id": index, "file": str(path), "category_id": labels.index(d["label"]),
                     "label": d["label"], "score": d["score"],
                     "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]]}
                    for index, (path, found) in enumerate(zip(args.files, answers, strict=True)) for d in found])  # fmt: skip
    else:
        for path, found in zip(args.files, answers, strict=True):
            table = Table(title=f"{path}: {len(found)} detection(s) by {args.model}")
            for column in ("label", "score", "box [x0, y0, x1, y1] (pixels of the file)"):
                table.add_column(column)
            for d in found:
                table.add_row(d["label"], f"{d['score']:.3f}", ", ".join(f"{v:.1f}" for v in d["box"]))
            console.print(table)
    if args.explain is not None:
        _write_detection_explain(client, args, console)
    if args.boxes is not None:
        for index, (path, found) in enumerate(zip(args.files, answers, strict=True)):
            out = args.boxes if len(args.files) == 1 else args.boxes.with_name(f"{args.boxes.stem}_{index + 1}.png")
            write_detections(path, found, out, labels)
            if not args.json:
                console.print(f"boxes drawn on {path}: {out}")
    return 0


def _write_detection_explain(client: Any, args: argparse.Namespace, console: Any) -> None:
    """`infer --explain OUT.png` on a DETR-style detector: each detection of the first file over its attention."""
    from PIL import Image

    from attnserve.boxes import BoxMapping
    from attnserve.clients.drawing import write_detection_attention
    from attnserve.console import make_console
    from attnserve.spec import explain_name

    first = args.files[0]
    found, maps = client.explain_detections(args.model, first)
    info = client.model_info(explain_name(args.model))
    with Image.open(first) as image:
        mapping = BoxMapping.for_image(image.width, image.height, info.image_size[1], info.image_size[0],
                                       info.preprocessing)  # fmt: skip
    write_detection_attention(
        first, found, maps, mapping, info.image_size, args.explain, info.spec_io.get("labels", ())
    )
    message = f"cross-attention of {len(found)} detection(s) in {first.name}: {args.explain}"
    (make_console(stderr=True) if args.json else console).print(message)


def _run_timeline(client: Any, args: argparse.Namespace, console: Any) -> int:
    """`infer --timeline`: one table (or JSON object) per video."""
    from attnserve.console import print_json

    for path in args.files:
        timeline = client.timeline(args.model, path, window_s=args.window_s, stride_s=args.stride_s, top_k=args.top_k)
        if args.json:
            print_json({"model": args.model, "file": str(path), **timeline.model_dump()})
        else:
            console.print(timeline_table(timeline, f"{args.model} timeline of {path.name}"))
    return 0


def timeline_table(timeline: Timeline, title: str) -> Any:
    """A rich table: one row per segment (seconds, label, probability, top-k), then the whole video."""
    from rich.table import Table

    changes = ", ".join(f"{t:g} s" for t in timeline.changes_s) or "none"
    table = Table(title=title, caption=f"{timeline.seconds:g} s at {timeline.fps:g} fps; label changes at {changes}")
    for column in ("start (s)", "end (s)"):
        table.add_column(column, justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("top-k (label probability)")
    for segment in timeline.segments:
        best = segment.top_k[0]
        others = ", ".join(f"{item.label} {item.score:.3f}" for item in segment.top_k)
        table.add_row(f"{segment.start_s:.2f}", f"{segment.end_s:.2f}", best.label, f"{best.score:.3f}", others)
    whole = ", ".join(f"{item.label} {item.score:.3f}" for item in timeline.video)
    video = timeline.video[0]
    table.add_row("0.00", f"{timeline.seconds:.2f}", f"video: {video.label}", f"{video.score:.3f}", whole)
    return table


def _with_served_models(client: Any, error: Exception) -> Exception:
    """The not-found error, with the names the server does serve (from its statistics, not a restricted API)."""
    from attnserve.clients.client import ModelNotFoundError
    from attnserve.errors import AttnserveError

    try:
        stats = client.statistics("")
        served = sorted({str(entry["name"]) for entry in stats.get("model_stats", [])})
    except (AttnserveError, KeyError, TypeError, AttributeError):  # the list is a courtesy: the error stands alone
        return error
    return ModelNotFoundError(f"{getattr(error, 'detail', error)}; served models: {', '.join(served) or '(none)'}")


def _infer_json(model: str, settings: Any, trained: bool | None, predictions: list[Any]) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "model": model,
        "protocol": settings.protocol,
        "url": settings.resolved_url,
        "trained": trained,
        "predictions": [asdict(prediction) for prediction in predictions],
    }


def _print_predictions(console: Any, title: str, predictions: list[Any]) -> None:
    from rich.table import Table

    batched = any(prediction.batch_size > 1 for prediction in predictions)
    caption = "several files per request: the latency is the whole request's, shared by its batch" if batched else None
    table = Table(title=title, caption=caption)
    for column, justify in (("file", "left"), ("label", "left"), ("probability", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("top-k (label probability)")
    table.add_column("latency (ms)", justify="right")
    for prediction in predictions:
        others = ", ".join(f"{item.label} {item.score:.3f}" for item in prediction.top_k)
        latency = f"{prediction.latency_ms:.1f}"
        latency += f" (batch of {prediction.batch_size})" if prediction.batch_size > 1 else ""
        table.add_row(prediction.source, prediction.label, f"{prediction.score:.3f}", others, latency)
    console.print(table)


def _write_explain(client: Any, args: argparse.Namespace, console: Any) -> None:
    from attnserve.clients.heatmap import write_overlay
    from attnserve.clients.media import is_video_path
    from attnserve.spec import explain_name

    first = args.files[0]
    prediction, attention_map = client.explain(args.model, first)
    info = client.model_info(explain_name(args.model))
    pixels = client.pixels_for(info, [first])[0]
    write_overlay(pixels, attention_map, prediction, args.explain)
    kind = "video frames" if is_video_path(first) else "image"
    message = f"attention heatmap over the {kind} of {first.name}: {args.explain}"
    from attnserve.console import make_console

    (make_console(stderr=True) if args.json else console).print(message)  # stdout stays pure JSON with --json


LOADTEST_COLUMNS = (
    "level",
    "req/s",
    "target req/s",
    "p50 (ms)",
    "p90 (ms)",
    "p95 (ms)",
    "p99 (ms)",
    "p99.9 (ms)",
    "mean (ms)",
    "errors",
    "server queue (us)",
    "server infer (us)",
    "avg batch",
    "client==server",
    "stability",
)
"""Columns of the load-test table, with units (latencies in ms, server-side times in microseconds)."""


def _window_counts(args: argparse.Namespace) -> tuple[int, int]:
    from attnserve.errors import UserInputError

    min_windows = args.min_windows if args.min_windows is not None else min(3, args.max_windows)
    if args.max_windows < 1 or min_windows < 1 or args.max_windows < min_windows:
        raise UserInputError(
            f"expected 1 <= --min-windows <= --max-windows, got --min-windows {min_windows} and "
            f"--max-windows {args.max_windows}"
        )
    return min_windows, args.max_windows


def run_loadtest_command(args: argparse.Namespace) -> int:
    from attnserve.clients.loadtest import LoadTestOptions
    from attnserve.console import make_console, print_json, status

    console = make_console(stderr=args.json)  # with --json, stdout carries only the JSON
    settings = _settings(args)
    min_windows, max_windows = _window_counts(args)  # names and numbers checked before any work
    levels: dict[str, Any] = (
        {"rates": _levels(args.rate, float)}
        if args.rate
        else {"concurrency": _levels(args.concurrency or "1,2,4,8", int)}
    )
    options = LoadTestOptions(
        **levels,
        poisson=args.poisson,
        batch_size=args.batch_size,
        workers=args.workers,
        warmup_s=args.warmup_s,
        window_s=args.window_s,
        stability_pct=args.stability_pct,
        min_windows=min_windows,
        max_windows=max_windows,
        slo_p99_ms=args.slo_p99_ms,
        input_file=args.input_file,
    )
    with status(console, f"load test of {args.model} ...") as spinner:

        def on_progress(window: WindowProgress) -> None:
            deviation = "-" if window.deviation_pct is None else f"{window.deviation_pct:.1f}%"
            spinner.update(
                f"{window.level} window {window.window + 1}: {window.rate:,.0f} req/s, "
                f"mean {window.mean_ms:.2f} ms, p99 {window.p99_ms:.2f} ms, deviation {deviation}"
            )

        def on_level(level: LevelResult) -> None:
            console.print(
                f"{level.label}: {level.achieved_rate:,.0f} req/s, p99 {level.latency.p99_ms:.2f} ms, "
                f"{'stable' if level.stable else 'not stable'} after {level.windows} windows"
            )

        report = _run_loadtest_or_explain(settings, args.model, options, on_progress=on_progress, on_level=on_level)
    stem = args.name or f"{report.model}-{report.mode}"
    paths = (
        report.write_json(args.out_dir / f"{stem}.json"),
        report.write_csv(args.out_dir / f"{stem}.csv"),
        report.write_plot(args.out_dir / f"{stem}.png"),
    )
    if args.json:
        print_json(report.model_dump(mode="json"))
    else:
        _print_loadtest_table(console, report)
    console.print("wrote " + ", ".join(str(path) for path in paths))
    return 0


def _run_loadtest_or_explain(
    settings: ClientSettings,
    model: str,
    options: LoadTestOptions,
    *,
    on_progress: Callable[[WindowProgress], None],
    on_level: Callable[[LevelResult], None],
) -> LoadTestReport:
    """`run_loadtest`; an unknown model's error lists the served ones."""
    from attnserve.clients.client import ModelNotFoundError, TritonClient
    from attnserve.clients.loadtest import run_loadtest

    try:
        return run_loadtest(settings, model, options, on_progress=on_progress, on_level=on_level)
    except ModelNotFoundError as exc:
        with TritonClient(settings) as client:
            raise _with_served_models(client, exc) from exc


def _level_row(level: Any) -> list[str]:
    latency = level.latency
    millis = (latency.p50_ms, latency.p90_ms, latency.p95_ms, latency.p99_ms, latency.p999_ms, latency.mean_ms)
    same = level.client_success == level.server_success
    return [
        level.label,
        f"{level.achieved_rate:,.0f}",
        f"{level.target_rate:,.0f}" if level.target_rate else "-",
        *(f"{value:.2f}" for value in millis),
        ", ".join(f"{k}={v}" for k, v in level.errors.items()) or "0",
        f"{level.server.queue_us:.0f}",
        f"{level.server.compute_infer_us:.0f}",
        f"{level.server.avg_batch_size:.1f}",
        f"{level.client_success}{'==' if same else '!='}{level.server_success}",
        f"{level.stability_pct:.1f}%" + ("" if level.stable else " (cap)"),
    ]


def _print_loadtest_table(console: Any, report: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{report.model} via {report.protocol}, batch {report.batch_size}, {report.workers} worker(s)")
    for column in LOADTEST_COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    for level in report.levels:
        table.add_row(*_level_row(level))
    console.print(table)
    if report.slo_p99_ms is not None:
        best = "none" if report.slo_best_level is None else f"{report.slo_best_level:g}"
        console.print(f"highest {report.mode} with p99 <= {report.slo_p99_ms} ms: {best}")
