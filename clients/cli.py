"""`attnserve infer` and `attnserve loadtest` (heavy imports stay inside the command functions)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnserve.video import Timeline


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="host:port of Triton (default $ATTNSERVE_URL or 127.0.0.1:<port>)")
    parser.add_argument(
        "--protocol", choices=("grpc", "http"), default=None, help="wire protocol (default $ATTNSERVE_PROTOCOL or grpc)"
    )
    parser.add_argument("--timeout-s", type=float, default=None, help="per-request timeout in seconds")


def _settings(args: argparse.Namespace) -> Any:
    from attnserve.clients.settings import ClientSettings

    overrides = {
        key: value
        for key, value in (("url", args.url), ("protocol", args.protocol), ("timeout_s", args.timeout_s))
        if value is not None
    }
    return ClientSettings(**overrides)


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
    infer = subparsers.add_parser("infer", help="classify images/videos with a served model (top-k table)")
    infer.add_argument("--model", required=True, help="served model name (e.g. vit_digits)")
    infer.add_argument("files", nargs="+", type=Path, metavar="FILE", help="images or videos")
    infer.add_argument("--top-k", type=int, default=5)
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

    load = subparsers.add_parser("loadtest", help="measure latency/throughput (closed-loop sweep or open-loop rate)")
    load.add_argument("--model", required=True)
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", default=None, help="closed loop: comma list, e.g. 1,2,4,8,16,32")
    mode.add_argument("--rate", default=None, help="open loop: requests/s, one or a comma list")
    load.add_argument("--poisson", action="store_true", help="open loop with exponential gaps (Poisson arrivals)")
    load.add_argument("--batch-size", type=int, default=1)
    load.add_argument("--workers", type=int, default=1, help="load-generator processes")
    load.add_argument("--warmup-s", type=float, default=1.0)
    load.add_argument("--window-s", type=float, default=2.0, help="measurement window length")
    load.add_argument("--stability-pct", type=float, default=10.0)
    load.add_argument("--min-windows", type=int, default=3)
    load.add_argument("--max-windows", type=int, default=6)
    load.add_argument("--slo-p99-ms", type=float, default=None, help="find the highest level whose p99 is under this")
    load.add_argument("--input-file", type=Path, default=None, help="payload for models taking encoded bytes")
    load.add_argument("--out-dir", type=Path, default=Path("reports/loadtest"), help="JSON, CSV and PNG go here")
    load.add_argument("--name", default=None, help="file stem of the outputs (default MODEL-MODE)")
    _add_connection_options(load)
    load.set_defaults(func=run_loadtest_command)


# ---------------------------------------------------------------------------------------------------------
def run_infer(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from attnserve.clients.client import TritonClient
    from attnserve.clients.media import is_video_path
    from attnserve.spec import explain_name, pipeline_name

    console = Console()
    settings = _settings(args)
    with TritonClient(settings) as client:
        if args.timeline:
            for path in args.files:
                timeline = client.timeline(
                    args.model, path, window_s=args.window_s, stride_s=args.stride_s, top_k=args.top_k
                )
                console.print(timeline_table(timeline, f"{args.model} timeline of {path.name}"))
            return 0
        if args.pipeline:
            predictions = client.classify_encoded(
                pipeline_name(args.model),
                args.files,
                top_k=args.top_k,
            )
        else:
            predictions = client.classify(args.model, args.files, top_k=args.top_k)
        table = Table(title=f"{args.model} via {settings.protocol} at {settings.resolved_url}")
        table.add_column("file")
        table.add_column("label", style="bold")
        table.add_column("score", justify="right")
        table.add_column(f"top-{args.top_k}")
        table.add_column("latency ms", justify="right")
        for prediction in predictions:
            others = ", ".join(f"{item.label} {item.score:.3f}" for item in prediction.top_k)
            table.add_row(
                prediction.source, prediction.label, f"{prediction.score:.3f}", others, f"{prediction.latency_ms:.1f}"
            )
        console.print(table)
        if args.explain is not None:
            from attnserve.clients.heatmap import write_overlay

            first = args.files[0]
            prediction, attention_map = client.explain(args.model, first)
            info = client.model_info(explain_name(args.model))
            pixels = client.pixels_for(info, [first])[0]
            write_overlay(pixels, attention_map, prediction, args.explain)
            kind = "video frames" if is_video_path(first) else "image"
            console.print(f"attention heatmap over the {kind} of {first.name}: {args.explain}")
    return 0


def timeline_table(timeline: Timeline, title: str) -> Any:
    """A rich table: one row per segment (seconds, label, score, top-k), then the whole video and the changes."""
    from rich.table import Table

    table = Table(
        title=title,
        caption=f"{timeline.seconds:g} s at {timeline.fps:g} fps; label changes at "
        f"{', '.join(f'{t:g} s' for t in timeline.changes_s) or 'none'}",
    )
    for column in ("start s", "end s"):
        table.add_column(column, justify="right")
    table.add_column("label", style="bold")
    table.add_column("score", justify="right")
    table.add_column("top-k")
    for segment in timeline.segments:
        best = segment.top_k[0]
        others = ", ".join(f"{item.label} {item.score:.3f}" for item in segment.top_k)
        table.add_row(f"{segment.start_s:.2f}", f"{segment.end_s:.2f}", best.label, f"{best.score:.3f}", others)
    whole = ", ".join(f"{item.label} {item.score:.3f}" for item in timeline.video)
    table.add_row(
        "0.00", f"{timeline.seconds:.2f}", f"video: {timeline.video[0].label}", f"{timeline.video[0].score:.3f}", whole
    )
    return table


def run_loadtest_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from attnserve.clients.loadtest import WindowProgress, run_loadtest
    from attnserve.clients.loadtest_report import LevelResult

    console = Console()
    settings = _settings(args)
    levels: dict[str, Any] = (
        {"rates": _levels(args.rate, float)}
        if args.rate
        else {"concurrency": _levels(args.concurrency or "1,2,4,8", int)}
    )
    with console.status("starting load test ...") as status:

        def on_progress(window: WindowProgress) -> None:
            deviation = "-" if window.deviation_pct is None else f"{window.deviation_pct:.1f}%"
            status.update(
                f"{window.level} window {window.window + 1}: {window.rate:,.0f} req/s, "
                f"mean {window.mean_ms:.2f} ms, p99 {window.p99_ms:.2f} ms, deviation {deviation}"
            )

        def on_level(level: LevelResult) -> None:
            console.print(
                f"{level.label}: {level.achieved_rate:,.0f} req/s, p99 {level.latency.p99_ms:.2f} ms, "
                f"{'stable' if level.stable else 'not stable'} after {level.windows} windows"
            )

        report = run_loadtest(
            settings,
            args.model,
            **levels,
            poisson=args.poisson,
            batch_size=args.batch_size,
            workers=args.workers,
            warmup_s=args.warmup_s,
            window_s=args.window_s,
            stability_pct=args.stability_pct,
            min_windows=args.min_windows,
            max_windows=args.max_windows,
            slo_p99_ms=args.slo_p99_ms,
            input_file=args.input_file,
            on_progress=on_progress,
            on_level=on_level,
        )
    table = Table(title=f"{report.model} via {report.protocol}, batch {report.batch_size}, {report.workers} worker(s)")
    for column in (
        "level",
        "req/s",
        "target",
        "p50",
        "p90",
        "p95",
        "p99",
        "p99.9",
        "mean",
        "errors",
        "srv queue us",
        "srv infer us",
        "avg batch",
        "client==server",
        "stable",
    ):
        table.add_column(column, justify="right")
    for level in report.levels:
        latency = level.latency
        table.add_row(
            level.label,
            f"{level.achieved_rate:,.0f}",
            f"{level.target_rate:,.0f}" if level.target_rate else "-",
            *(
                f"{value:.2f}"
                for value in (
                    latency.p50_ms,
                    latency.p90_ms,
                    latency.p95_ms,
                    latency.p99_ms,
                    latency.p999_ms,
                    latency.mean_ms,
                )
            ),
            ", ".join(f"{k}={v}" for k, v in level.errors.items()) or "0",
            f"{level.server.queue_us:.0f}",
            f"{level.server.compute_infer_us:.0f}",
            f"{level.server.avg_batch_size:.1f}",
            f"{level.client_success}=={level.server_success}"
            if level.client_success == level.server_success
            else f"{level.client_success}!={level.server_success}",
            f"{level.stability_pct:.1f}%" + ("" if level.stable else " (cap)"),
        )
    console.print(table)
    if report.slo_p99_ms is not None:
        best = "none" if report.slo_best_level is None else f"{report.slo_best_level:g}"
        console.print(f"highest {report.mode} with p99 <= {report.slo_p99_ms} ms: {best}")
    stem = args.name or f"{report.model}-{report.mode}"
    paths = (
        report.write_json(args.out_dir / f"{stem}.json"),
        report.write_csv(args.out_dir / f"{stem}.csv"),
        report.write_plot(args.out_dir / f"{stem}.png"),
    )
    console.print("wrote " + ", ".join(str(path) for path in paths))
    return 0
