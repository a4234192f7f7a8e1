"""What the HAProxy edge costs: the project's load tester straight to one Triton replica vs through the replica
set's load balancer with that one replica behind it, in one run (gRPC, a light model, so the proxy's share shows).

    python -m bench.replicas [--window 2]                 # a linear model: the proxy's worst case
    python -m bench.replicas --model cnn_cbam_digits      # a deployable (random weights: timing only)

Measures p50 latency at concurrency 1 and throughput at concurrency 16, direct and through HAProxy, in two
interleaved passes (direct, edge, direct, edge) so a drifting machine load hits both sides alike; prints the
differences/ratios (targets: p50 <= +0.5 ms, throughput >= 0.95x) with the load average and writes
reports/bench/replicas.json (replicas_NAME.json with --model). The edge's per-replica limit is raised to 32
here: this measures the proxy hop, not admission control (tests/replicas cover that).

On one host the load generator, Triton and HAProxy share the cores, so at concurrency 16 (CPU-bound) the
proxy's CPU per request comes straight out of the served throughput: the smaller the model's own work, the
larger that share. The linear model (next to no compute) shows the worst case; `--model` shows it for a
deployable served with its default configuration (`attnserve export NAME --untrained`: random weights do
the same work as trained ones).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench import BENCH_REPORTS_DIR

SAMPLE_SHAPE = (3, 32, 32)
LABELS = ("a", "b", "c", "d")


def _linear_onnx(path: Path) -> Path:
    """A linear classifier on uint8 pixels (cheap: the request path dominates)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = int(np.prod(SAMPLE_SHAPE))
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.05, (features, len(LABELS))).astype(np.float32), "weight")
    shape = numpy_helper.from_array(np.array([0, features], dtype=np.int64), "flat_shape")
    nodes = [
        helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["as_float", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_linear",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", *SAMPLE_SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _repository(root: Path) -> tuple[Path, str]:
    from attnserve.repository.entries import write_model_entry
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.spec import ExportSection, IoSection, ModelSpec, ServingSection

    spec = ModelSpec(
        name="bench_linear",
        arch="synthetic_linear",
        kind="image",
        io=IoSection(layout="NCHW", input_shape=SAMPLE_SHAPE, mean=(0.5,) * 3, std=(0.5,) * 3, labels=LABELS),
        serving=ServingSection(max_batch_size=16, preferred_batch_sizes=(8, 16), max_queue_delay_us=0),
        export=ExportSection(opset=17),
    )
    write_model_entry(spec, _linear_onnx(root / "bench_linear.onnx"), root / "repository")
    view, loaded, skipped = build_runtime_repository(root / "repository", root / "view")
    if loaded != [spec.name]:
        raise SystemExit(f"the runtime view did not take the bench model: {skipped}")
    return view, spec.name


def _deployable_repository(root: Path, name: str) -> tuple[Path, str]:
    """A deployable exported with random weights (timing only), in a runtime view of its own."""
    from attnserve.errors import AttnserveError
    from attnserve.export.pipeline import ExportOptions, export_model
    from attnserve.serving.runtime_view import build_runtime_repository

    try:
        export_model(
            name, root / "repository", runs_dir=root / "runs", options=ExportOptions(explain=False), untrained=True
        )
    except AttnserveError as exc:  # e.g. an unknown name: the message lists the known ones
        raise SystemExit(f"bench.replicas --model {name}: {exc}") from None
    view, loaded, skipped = build_runtime_repository(root / "repository", root / "view", [name])
    if name not in loaded:
        raise SystemExit(f"the runtime view did not take {name}: {skipped}")
    return view, name


def _measure(url: str, model: str, concurrency: int, window_s: float) -> dict[str, Any]:
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest
    from attnserve.clients.settings import ClientSettings

    report = run_loadtest(
        ClientSettings(url=url, protocol="grpc"),
        model,
        LoadTestOptions(concurrency=[concurrency], warmup_s=1.0, window_s=window_s, min_windows=3, max_windows=5),
    )
    level = report.levels[0]
    return {
        "p50_ms": level.latency.p50_ms,
        "p99_ms": level.latency.p99_ms,
        "throughput_rps": level.achieved_rate,
        "requests": level.client_success,
        "client_cpu_us_per_request": level.client_cpu_us_per_request,
        "errors": level.errors,
    }


def _cpu_seconds(pid: int | None, group: bool = False) -> float:
    """User + system CPU seconds so far of a process, or with `group` of every live process in its process group
    (Triton and its python-backend stubs), from /proc; 0 when unknown."""
    if pid is None:
        return 0.0
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat") if group else [Path(f"/proc/{pid}/stat")]:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if not group or int(fields[2]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Means over the passes, the edge's added p50 at c=1 and its throughput ratio at c=16; printed too."""

    def mean(key: str, field: str) -> float:
        return float(np.mean([r[field] for r in results[key]]))

    summary: dict[str, Any] = {
        "p50_c1_direct_ms": mean("direct_c1", "p50_ms"),
        "p50_c1_edge_ms": mean("edge_c1", "p50_ms"),
        "p50_c1_added_ms": mean("edge_c1", "p50_ms") - mean("direct_c1", "p50_ms"),
        "throughput_c16_direct_rps": mean("direct_c16", "throughput_rps"),
        "throughput_c16_edge_rps": mean("edge_c16", "throughput_rps"),
        "throughput_c16_ratio": mean("edge_c16", "throughput_rps") / mean("direct_c16", "throughput_rps"),
        **{
            f"{part}_cpu_us_per_request_{side}_c16": mean(f"{side}_c16", f"{part}_cpu_us_per_request")
            for part in ("client", "triton", "haproxy")
            for side in ("direct", "edge")
        },  # fmt: skip
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    failed = {key: sum(sum(r["errors"].values()) for r in runs) for key, runs in results.items()}
    summary["failed_requests"] = failed
    if any(failed.values()):  # the figures count successes only: say so rather than print a clean ratio
        print(f"WARNING: requests failed during the measurement ({failed}); see the JSON's errors per run")
    cpu = {key: value for key, value in summary.items() if "cpu_us" in key}
    print(
        f"p50 at c=1: direct {summary['p50_c1_direct_ms']:.2f} ms, through HAProxy {summary['p50_c1_edge_ms']:.2f} ms "
        f"({summary['p50_c1_added_ms']:+.2f} ms; target <= +0.5 ms)\n"
        f"throughput at c=16, one replica: direct {summary['throughput_c16_direct_rps']:.0f}/s, through HAProxy "
        f"{summary['throughput_c16_edge_rps']:.0f}/s ({summary['throughput_c16_ratio']:.2f}x; target >= 0.95x)\n"
        f"CPU per request at c=16 (us, direct / through HAProxy): load generator "
        f"{cpu['client_cpu_us_per_request_direct_c16']:.0f} / {cpu['client_cpu_us_per_request_edge_c16']:.0f}, "
        f"Triton with its stubs {cpu['triton_cpu_us_per_request_direct_c16']:.0f} / "
        f"{cpu['triton_cpu_us_per_request_edge_c16']:.0f}, HAProxy {cpu['haproxy_cpu_us_per_request_edge_c16']:.0f}; "
        f"load average {summary['loadavg'][0]:.2f} on {summary['cpus']} cores"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=2.0, help="seconds per measurement window")
    parser.add_argument("--haproxy-threads", type=int, default=None, help="HAProxy's nbthread (default: per CPU)")
    parser.add_argument("--buffer-kb", type=int, default=64, help="HAProxy's tune.bufsize in KiB (default 64)")
    parser.add_argument(
        "--model", default=None, help="a deployable to serve instead of the linear model (e.g. cnn_cbam_digits)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON report (default: reports/bench/replicas[_MODEL].json)"
    )
    args = parser.parse_args(argv)
    out = args.out or BENCH_REPORTS_DIR / f"replicas{'_' + args.model if args.model else ''}.json"

    from attnserve.serving.haproxy import EdgeSettings
    from attnserve.serving.replicas import ReplicaSet

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="attnserve-bench-replicas-") as scratch:
        view, model = _deployable_repository(Path(scratch), args.model) if args.model else _repository(Path(scratch))
        edge = EdgeSettings(
            http_port=0,
            grpc_port=0,
            maxconn_per_replica=32,
            queue_timeout_ms=1000,
            threads=args.haproxy_threads,
            buffer_kb=args.buffer_kb,
        )
        with ReplicaSet(view, edge, replicas=1, models=[model], work_dir=Path(scratch) / "set") as replica_set:
            targets = {"direct": replica_set.servers[0].grpc_url, "edge": replica_set.grpc_url}
            # CPU per measured request of HAProxy and of Triton's process group (warm-up counts too: upper bounds)
            pids = {"haproxy": (replica_set.haproxy_pid, False), "triton": (replica_set.servers[0].pid, True)}
            for _ in range(2):  # interleaved passes
                for name, url in targets.items():
                    for concurrency in (1, 16):
                        cpu_before = {part: _cpu_seconds(*where) for part, where in pids.items()}
                        figures = _measure(url, model, concurrency, args.window)
                        for part, where in pids.items():
                            cpu_s = _cpu_seconds(*where) - cpu_before[part]
                            figures[f"{part}_cpu_us_per_request"] = cpu_s / max(figures["requests"], 1) * 1e6
                        results.setdefault(f"{name}_c{concurrency}", []).append(figures)
                        print(f"{name:6s} c={concurrency:<2d} {json.dumps(figures)}", flush=True)

    summary = _summary(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model, "summary": summary, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
