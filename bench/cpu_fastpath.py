"""CPU fast path: the runtime x precision table behind the accuracy gate, then the pick served against fp32.

1. For `vit_tiny_patch16_224` and every trained run found in `runs/`: `choose_for_deployable` (export through
   the export pipeline, variants, parity, held-out accuracy, in-process batch-1 latency and batch-16
   throughput, the gate and the pick). Tables go to `reports/cpu_variants/NAME.{json,md}`.
2. Served comparison (one model, default `vit_tiny_patch16_224`): one real Triton (embedded, CPU runner)
   serves `NAME` (the pick, written by `serve_pick`) and `NAME_fp32` (the fp32 ONNX Runtime entry) from the
   same export; the project's load tester drives each in turn, closed loop at concurrency 16 (batch-1
   requests, dynamic batching), alternating entries for `--rounds` rounds. In the same run, with the server
   up and idle, the in-process batch-16 throughput of each is measured again through the runner's session
   class, in every round just before that entry's load.
   Printed and recorded: served(pick) / served(fp32), served(pick) / in-process(pick), and where the time
   goes (Triton's queue / compute times per request, average batch, the load generator's CPU per request).

    python -m bench.cpu_fastpath                          # the whole thing (about 5-8 minutes)
    python -m bench.cpu_fastpath --models vit_digits --no-served --repeats 1

Writes reports/bench/cpu_fastpath.json. Only ratios measured within this run mean anything: the machine's cores
are shared (with the load generator, and with whatever else runs; the JSON records the load average).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from attnserve.defaults import REPORTS_DIR, RUNS_DIR
from bench import BENCH_REPORTS_DIR

log = logging.getLogger("bench.cpu_fastpath")

DEFAULT_MODEL = "vit_tiny_patch16_224"
FP32_SUFFIX = "_fp32"
ACCEPTANCE_SERVED_SPEEDUP = 1.8
ACCEPTANCE_SERVED_SHARE_OF_IN_PROCESS = 0.85


def trained_runs(runs_dir: Path) -> list[str]:
    """Deployables with a trained checkpoint under `runs_dir`."""
    from attnserve.catalogue import TRAINABLE_NAMES, get_deployable
    from attnserve.models.checkpoint import has_checkpoint

    return [
        name
        for name in TRAINABLE_NAMES
        if has_checkpoint(Path(runs_dir) / name) and get_deployable(name).kind != "detection"  # logits gate only
    ]


def in_process_meter(runtime: str, precision: str, model_path: Path, spec: Any, seconds: float) -> Any:
    """A callable `measure(batch_size=largest preferred) -> img/s` through the runner's session class with the
    server's thread count (opened once, measured in every round)."""
    from attnserve.export.cpu_choice import time_calls
    from attnserve.runtimes.session import intra_op_threads_for, open_session

    session = open_session(
        runtime,
        model_path,
        intra_op_threads=intra_op_threads_for(spec.serving.instance_count),
        options={"precision": precision},
    )
    all_pixels = np.random.default_rng(0).integers(
        0, 256, (spec.serving.max_batch_size, *spec.io.input_shape), dtype=np.uint8
    )
    session.run({"pixels": all_pixels[: spec.serving.opt_batch_size]})

    def measure(batch_size: int = spec.serving.opt_batch_size) -> float:
        pixels = all_pixels[: max(1, min(batch_size, spec.serving.max_batch_size))]
        durations = time_calls(lambda: session.run({"pixels": pixels}), min_seconds=seconds, min_calls=3)
        return len(pixels) * len(durations) / sum(durations)

    return measure


def served_level(settings: Any, entry: str, meter: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One round of one entry: in-process img/s just before, then the served level at `args.concurrency`."""
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest

    in_process_img_s = meter()  # same round, server idle, just before its load
    options = LoadTestOptions(
        concurrency=[args.concurrency],
        warmup_s=args.warmup_s,
        window_s=args.window_s,
        min_windows=min(3, args.max_windows),
        max_windows=args.max_windows,
    )
    level = run_loadtest(settings, entry, options).levels[0]
    # the same model in-process at the batch Triton actually formed: splits the gap to the
    # batch-16 figure into "smaller batches" and "serving overhead"
    served_batch = round(level.server.avg_batch_size) or 1
    return {
        "img_s": round(level.throughput_infer_s, 1),
        "in_process_img_s": round(in_process_img_s, 1),
        "in_process_at_served_batch_img_s": round(meter(served_batch), 1),
        "p50_ms": round(level.latency.p50_ms, 2),
        "p99_ms": round(level.latency.p99_ms, 2),
        "avg_batch": round(level.server.avg_batch_size, 2),
        "queue_us": round(level.server.queue_us, 1),
        "compute_input_us": round(level.server.compute_input_us, 1),
        "compute_infer_us": round(level.server.compute_infer_us, 1),
        "compute_output_us": round(level.server.compute_output_us, 1),
        "client_cpu_us_per_request": round(level.client_cpu_us_per_request, 1),
        "errors": level.errors,
        "counts_agree": level.client_success == level.server_success,
        "stable": level.stable,
    }


def served_rounds(report: Any, spec: Any, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Serve the pick and the fp32 entry from one Triton and load each in turn, alternating the order per round."""
    from attnserve.clients.settings import ClientSettings
    from attnserve.export.cpu_choice import serve_pick
    from attnserve.export.cpu_variants import FP32_FILENAME
    from attnserve.repository.entries import write_model_entry
    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer

    variants_dir = Path(report.variants_dir)
    picked_entry, fp32_entry = spec.name, f"{spec.name}{FP32_SUFFIX}"
    rounds: dict[str, list[dict[str, Any]]] = {picked_entry: [], fp32_entry: []}
    with tempfile.TemporaryDirectory(prefix="attnserve-bench-fastpath-") as scratch_name:
        scratch = Path(scratch_name)
        repository = scratch / "model_repository"
        serve_pick(spec, report, repository)
        fp32_spec = spec.replace(name=fp32_entry).with_runtime(cpu_runtime="onnxruntime", cpu_precision="fp32")
        write_model_entry(fp32_spec, variants_dir / FP32_FILENAME, repository)
        view, loaded, _ = build_runtime_repository(repository, scratch / "runtime")
        with TritonServer(
            view, models=loaded, endpoints=TritonEndpoints.any_free(), work_dir=scratch / "server"
        ) as server:
            picked_file = variants_dir / report.picked_model_file
            meters = {
                picked_entry: in_process_meter(
                    report.picked_runtime, report.picked_precision, picked_file, spec, args.min_seconds
                ),
                fp32_entry: in_process_meter(
                    "onnxruntime", "fp32", variants_dir / FP32_FILENAME, spec, args.min_seconds
                ),
            }
            settings = ClientSettings(url=server.grpc_url, protocol="grpc")
            for round_index in range(args.rounds):
                order = [picked_entry, fp32_entry] if round_index % 2 == 0 else [fp32_entry, picked_entry]
                for entry in order:
                    log.info("round %d: %s at concurrency %d", round_index + 1, entry, args.concurrency)
                    rounds[entry].append(served_level(settings, entry, meters[entry], args))
    return rounds


def served_ratios(rounds: dict[str, list[dict[str, Any]]], picked_entry: str, fp32_entry: str) -> dict[str, float]:
    """Paired per round (the machine's load moves between rounds): medians of the per-round ratios."""
    return {
        "speedup": statistics.median(
            p["img_s"] / f["img_s"] for p, f in zip(rounds[picked_entry], rounds[fp32_entry]) if f["img_s"]
        ),
        "share": statistics.median(
            r["img_s"] / r["in_process_img_s"] for r in rounds[picked_entry] if r["in_process_img_s"]
        ),
        "share_at_served_batch": statistics.median(
            r["img_s"] / r["in_process_at_served_batch_img_s"]
            for r in rounds[picked_entry]
            if r["in_process_at_served_batch_img_s"]
        ),
    }


def served_comparison(report: Any, spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Serve the pick and the fp32 entry from one Triton; load each in turn; ratios measured in this run."""
    picked_entry, fp32_entry = spec.name, f"{spec.name}{FP32_SUFFIX}"
    rounds = served_rounds(report, spec, args)

    def median(entry: str, key: str) -> float:
        return float(statistics.median(r[key] for r in rounds[entry]))

    served = {entry: median(entry, "img_s") for entry in rounds}
    in_process = {entry: median(entry, "in_process_img_s") for entry in rounds}
    # Where the time goes: the load generator runs on the same cores as the server; its CPU per request times
    # the served rate is the share of the cores it took away from the model.
    client_cores = {entry: median(entry, "client_cpu_us_per_request") * served[entry] / 1e6 for entry in rounds}
    ratios = served_ratios(rounds, picked_entry, fp32_entry)
    speedup, share = ratios["speedup"], ratios["share"]
    breakdown_keys = ("avg_batch", "queue_us", "compute_input_us", "compute_infer_us", "compute_output_us")
    return {
        "picked": report.picked,
        "entries": {picked_entry: report.picked, fp32_entry: "onnxruntime_fp32"},
        "concurrency": args.concurrency,
        "protocol": "grpc",
        "request_batch": 1,
        "rounds": rounds,
        "served_img_s": {k: round(v, 1) for k, v in served.items()},
        "in_process_b_img_s": {k: round(v, 1) for k, v in in_process.items()},
        "in_process_batch": spec.serving.opt_batch_size,
        "load_generator_cores": {k: round(v, 2) for k, v in client_cores.items()},
        "median_server_breakdown": {
            entry: {key: round(median(entry, key), 2) for key in (*breakdown_keys, "p50_ms", "p99_ms")}
            for entry in rounds
        },
        "served_speedup_vs_fp32": round(speedup, 3) if speedup else None,
        "served_share_of_in_process": round(share, 3) if share else None,
        "served_share_of_in_process_at_served_batch": round(ratios["share_at_served_batch"], 3),
        "ratios": "median over rounds of per-round ratios (pick and fp32 of one round are neighbours in time)",
        "targets": {
            "served_speedup_vs_fp32": ACCEPTANCE_SERVED_SPEEDUP,
            "served_share_of_in_process": ACCEPTANCE_SERVED_SHARE_OF_IN_PROCESS,
        },
        "targets_met": {
            "served_speedup_vs_fp32": bool(speedup and speedup >= ACCEPTANCE_SERVED_SPEEDUP),
            "served_share_of_in_process": bool(share and share >= ACCEPTANCE_SERVED_SHARE_OF_IN_PROCESS),
        },
    }


def table_summary(report: Any) -> dict[str, Any]:
    """The columns of the table that the README quotes, per variant."""
    keep = (
        "status",
        "reason",
        "max_abs_diff",
        "top1_agreement",
        "cosine_mean",
        "accuracy_percent",
        "accuracy_drop_points",
        "latency_b1_ms",
        "throughput_img_s",
        "speedup_vs_fp32",
        "within_gate",
        "picked",
        "why",
    )
    return {
        "gate": report.gate_rule,
        "picked": report.picked,
        "batch_size": report.batch_size,
        "rows": {row.variant: {key: getattr(row, key) for key in keep} for row in report.rows},
        "table": str(Path(report.variants_dir) / "cpu_variants.json"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        default=None,
        help=f"comma list of deployables (default: {DEFAULT_MODEL} + every trained run in runs/)",
    )
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR / "cpu_variants")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds of the table")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least seconds per throughput measurement")
    parser.add_argument("--served-model", default=DEFAULT_MODEL, help="model of the served comparison")
    parser.add_argument("--no-served", action="store_true", help="skip the served comparison")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating load rounds per entry")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--window-s", type=float, default=4.0)
    parser.add_argument("--max-windows", type=int, default=4)
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "cpu_fastpath.json")
    return parser.parse_args(argv)


def print_served(served: dict[str, Any], rounds: int) -> None:
    print(
        f"\nserved, closed loop c={served['concurrency']} (grpc, batch-1 requests, dynamic batching), "
        f"median of {rounds} alternating rounds:"
    )
    for entry, variant in served["entries"].items():
        print(
            f"  {entry:<32} {variant:<26} served {served['served_img_s'][entry]:7.1f} img/s   "
            f"in-process b{served['in_process_batch']} {served['in_process_b_img_s'][entry]:7.1f} img/s   "
            f"load generator {served['load_generator_cores'][entry]} cores   "
            f"avg batch {served['median_server_breakdown'][entry]['avg_batch']}"
        )
    print(
        f"  pick / fp32 served: {served['served_speedup_vs_fp32']}x (target >= {ACCEPTANCE_SERVED_SPEEDUP}); "
        f"pick served / in-process: {served['served_share_of_in_process']} "
        f"(target >= {ACCEPTANCE_SERVED_SHARE_OF_IN_PROCESS}); at the batch Triton formed: "
        f"{served['served_share_of_in_process_at_served_batch']} (medians of per-round ratios)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for logger_name in ("bench", "attnserve"):  # our progress lines, not the exporter's per-initializer chatter
        logging.getLogger(logger_name).setLevel(logging.INFO)

    from attnserve.export.cpu_choice import ChoiceSettings, choose_for_deployable, machine_facts, render_markdown
    from attnserve.models.checkpoint import resolve

    names = (
        [n.strip() for n in args.models.split(",") if n.strip()]
        if args.models
        else [DEFAULT_MODEL, *trained_runs(args.runs_dir)]
    )
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "CPU fast path: runtime x precision behind the accuracy gate; pick vs fp32 served",
        "machine": machine_facts(),
        "note": "Shared machine: other processes load the same cores. Compare ratios within this run only.",
        "models": {},
    }
    reports = {}
    for name in names:
        log.info("optimizing %s", name)
        report = choose_for_deployable(
            name,
            runs_dir=args.runs_dir,
            reports_dir=args.reports_dir,
            settings=ChoiceSettings(repeats=args.repeats, min_seconds=args.min_seconds),
        )
        reports[name] = report
        results["models"][name] = table_summary(report)
        print(render_markdown(report), flush=True)

    if not args.no_served:
        if args.served_model not in reports:
            raise SystemExit(f"--served-model {args.served_model!r} must be one of the optimized models {names}")
        _, spec = resolve(args.served_model, args.runs_dir)
        results["served"] = served_comparison(reports[args.served_model], spec, args)
        print_served(results["served"], args.rounds)

    results["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
