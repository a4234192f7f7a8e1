"""Dynamic batching on vs off: the same model, the same sweep, one server run; throughput ratio per concurrency.

For each model the repository gets two entries from one ONNX file: `NAME` (the spec's dynamic batching) and
`NAME_nobatch` (`spec.without_batching()`, rendered by the export package's
repository writer without `dynamic_batching`). One real Triton serves both; the load tester sweeps each with the
same concurrencies, then the ratio `batched / unbatched` is printed per concurrency. Also measured in the
same run: served p50 at concurrency 1 vs in-process p50 of the same ONNX file in the same CPU runtime the
server uses (batch 1), i.e. what Triton + the wire add to one request.

    python -m bench.batching                                    # vit_tiny_patch16_224 + trained runs found
    python -m bench.batching --models vit_digits --concurrency 1,4,16 --tiny

Writes reports/bench/batching.json. Ratios only mean something within one run on one machine; the 2 cores are
shared with the load generator (and with whatever else runs on the machine: the JSON records the load average).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from attnserve.defaults import RUNS_DIR
from attnserve.spec import nobatch_name
from bench import BENCH_REPORTS_DIR

log = logging.getLogger("bench.batching")

DEFAULT_MODELS = ("vit_tiny_patch16_224",)
TRAINED_CANDIDATES = ("vit_digits", "cnn_cbam_digits", "vit_shapes", "timesformer_motion")


def export_pair(name: str, repository: Path, scratch: Path, tiny: bool) -> tuple[Any, Path]:
    """Export `name` once and write the batching and no-batching entries; returns (spec, onnx path)."""
    from attnserve.catalogue import default_spec
    from attnserve.export.torch2onnx import export_onnx
    from attnserve.models.checkpoint import build_model, resolve
    from attnserve.models.registry import tiny_arch_overrides
    from attnserve.repository.entries import write_model_entry

    if tiny:
        spec = default_spec(name, **tiny_arch_overrides(name))
        model = build_model(spec).eval()
    else:
        model, spec = resolve(name, allow_untrained=True)  # speed does not depend on the weights
    onnx_path = scratch / f"{name}.onnx"
    export_onnx(model, spec, onnx_path)
    write_model_entry(spec, onnx_path, repository)
    nobatch = spec.without_batching()
    write_model_entry(nobatch, onnx_path, repository)
    return spec, onnx_path


def in_process_p50_ms(onnx_path: Path, spec: Any, repeats: int) -> float:
    """p50 of batch-1 runs of the ONNX file in the server's CPU runtime, with the server's thread count."""
    from attnserve.runtimes.session import intra_op_threads_for, open_session

    session = open_session(
        spec.runtime.cpu_runtime if spec.runtime.cpu_runtime != "auto" else "onnxruntime",
        onnx_path,
        intra_op_threads=intra_op_threads_for(spec.serving.instance_count),
    )
    pixels = np.random.default_rng(0).integers(0, 256, (1, *spec.io.input_shape), dtype=np.uint8)
    for _ in range(3):
        session.run({"pixels": pixels})
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run({"pixels": pixels})
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1e3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        default=None,
        help="comma list of deployables (default: vit_tiny_patch16_224 + one trained run in runs/)",
    )
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--max-windows", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="tiny architectures (a quick check of the script)")
    parser.add_argument("--in-process-repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "batching.json")
    return parser.parse_args(argv)


def model_names(models: str | None) -> list[str]:
    """The models asked for, or the default ones plus the first trained run found."""
    if models:
        return [n.strip() for n in models.split(",") if n.strip()]
    trained = [n for n in TRAINED_CANDIDATES if (RUNS_DIR / n / "spec.json").is_file()]
    return list(DEFAULT_MODELS) + trained[:1]


def sweep_pair(settings: Any, name: str, concurrency: list[int], args: argparse.Namespace) -> tuple[Any, Any]:
    """The load tester's sweeps of `name` and of its no-batching entry, in that order."""
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest

    sweeps = []
    for entry in (name, nobatch_name(name)):
        log.info("sweeping %s over concurrency %s", entry, concurrency)
        options = LoadTestOptions(
            concurrency=concurrency, warmup_s=args.warmup_s, window_s=args.window_s, max_windows=args.max_windows
        )
        sweeps.append(run_loadtest(settings, entry, options))
    return sweeps[0], sweeps[1]


def comparison_rows(on: Any, off: Any) -> list[dict[str, Any]]:
    """One row per concurrency: throughput, ratio, p99 and average batch with batching on and off."""
    rows = []
    for batched, unbatched in zip(on.levels, off.levels):
        rows.append(
            {
                "concurrency": batched.concurrency,
                "batching_req_s": round(batched.achieved_rate, 1),
                "no_batching_req_s": round(unbatched.achieved_rate, 1),
                "ratio": round(batched.achieved_rate / unbatched.achieved_rate, 3) if unbatched.achieved_rate else None,
                "batching_p99_ms": round(batched.latency.p99_ms, 2),
                "no_batching_p99_ms": round(unbatched.latency.p99_ms, 2),
                "batching_avg_batch": round(batched.server.avg_batch_size, 2),
                "no_batching_avg_batch": round(unbatched.server.avg_batch_size, 2),
                "counts_agree": batched.client_success == batched.server_success
                and unbatched.client_success == unbatched.server_success,
            }
        )
    return rows


def model_result(spec: Any, on: Any, off: Any, in_process: float, tiny: bool) -> dict[str, Any]:
    """The JSON record of one model: the sweep rows, served vs in-process p50 and both full reports."""
    served_p50 = off.levels[0].latency.p50_ms if off.levels[0].concurrency == 1 else None
    batched_p50 = on.levels[0].latency.p50_ms if on.levels[0].concurrency == 1 else None
    return {
        "trained": spec.trained,
        "input_shape": list(spec.io.input_shape),
        "tiny": tiny,
        "sweep": comparison_rows(on, off),
        "served_p50_c1_ms": {"batching": batched_p50, "no_batching": served_p50},
        "in_process_p50_ms": round(in_process, 3),
        "served_over_in_process_p50": round(served_p50 / in_process, 3) if served_p50 else None,
        "reports": {"batching": on.model_dump(), "no_batching": off.model_dump()},
    }


def print_model(name: str, spec: Any, protocol: str, result: dict[str, Any], in_process: float) -> None:
    print(f"\n{name} ({'trained' if spec.trained else 'untrained'}, input {spec.io.input_shape}, {protocol}):")
    print(
        f"  {'conc':>5} {'batch req/s':>12} {'no-batch req/s':>15} {'ratio':>7} {'avg batch':>10} {'p99 on/off ms':>16}"
    )
    for row in result["sweep"]:
        print(
            f"  {row['concurrency']:>5} {row['batching_req_s']:>12,.1f} {row['no_batching_req_s']:>15,.1f}"
            f" {row['ratio'] or 0:>7.2f} {row['batching_avg_batch']:>10.2f} "
            f"{row['batching_p99_ms']:>7.1f}/{row['no_batching_p99_ms']:<7.1f}"
        )
    served_p50 = result["served_p50_c1_ms"]["no_batching"]
    if served_p50:
        print(
            f"  served p50 at concurrency 1 (no batching delay): {served_p50:.2f} ms; in-process "
            f"{in_process:.2f} ms; ratio {served_p50 / in_process:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from attnserve.clients.settings import ClientSettings
    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer

    names = model_names(args.models)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, Any] = {
        "benchmark": "dynamic batching on vs off",
        "protocol": args.protocol,
        "concurrency": concurrency,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="attnserve-bench-batching-") as scratch_name:
        scratch = Path(scratch_name)
        repository = scratch / "model_repository"
        exported = {name: export_pair(name, repository, scratch, args.tiny) for name in names}
        view, loaded, _ = build_runtime_repository(repository, scratch / "runtime")
        with TritonServer(
            view, models=loaded, endpoints=TritonEndpoints.any_free(), work_dir=scratch / "server"
        ) as server:
            settings = ClientSettings(
                url=server.grpc_url if args.protocol == "grpc" else server.http_url, protocol=args.protocol
            )
            for name, (spec, onnx_path) in exported.items():
                on, off = sweep_pair(settings, spec.name, concurrency, args)
                in_process = in_process_p50_ms(onnx_path, spec, args.in_process_repeats)
                results["models"][name] = model_result(spec, on, off, in_process, args.tiny)
                print_model(name, spec, args.protocol, results["models"][name], in_process)
    results["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
