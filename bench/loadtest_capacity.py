"""Capacity of the load tester itself: requests/s against a model that does nothing (python-backend identity).

A load tester can only measure a server slower than itself. This runs `attnserve.clients.loadtest` against the
`identity` model (bench.identity_model) on a real Triton on the same machine, closed loop, over gRPC and HTTP,
with 1 and 2 load-generator processes, and reports requests/s, the client's CPU time per request (the cost
that bounds it) and whether the client's success count equals Triton's.

    python -m bench.loadtest_capacity            # writes reports/bench/loadtest_capacity.json

On these 2 shared cores the server and the load generator compete for the same CPU: the JSON records the
load average before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from bench import BENCH_REPORTS_DIR
from bench.identity_model import IDENTITY_MODEL, write_identity_model


def capacity_rows(server: Any, protocol: str, workers: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One sweep of the identity model over `protocol` with `workers` load-generator processes, printed as it goes."""
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest
    from attnserve.clients.settings import ClientSettings

    url = server.grpc_url if protocol == "grpc" else server.http_url
    options = LoadTestOptions(
        concurrency=[int(c) for c in args.concurrency.split(",")],
        workers=workers,
        warmup_s=1.0,
        window_s=args.window_s,
        max_windows=args.max_windows,
    )
    report = run_loadtest(ClientSettings(url=url, protocol=protocol), IDENTITY_MODEL, options)
    rows = []
    for level in report.levels:
        row = {
            "protocol": protocol,
            "workers": workers,
            "concurrency": level.concurrency,
            "req_s": round(level.achieved_rate, 1),
            "p50_ms": round(level.latency.p50_ms, 3),
            "p99_ms": round(level.latency.p99_ms, 3),
            "client_cpu_us_per_request": round(level.client_cpu_us_per_request, 1),
            "server_avg_batch": round(level.server.avg_batch_size, 2),
            "client_success": level.client_success,
            "server_success": level.server_success,
            "stable": level.stable,
        }
        rows.append(row)
        print(
            f"{protocol:>4} workers={workers} c={level.concurrency}: {row['req_s']:>9,.0f} req/s, "
            f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, client CPU "
            f"{row['client_cpu_us_per_request']:.0f} us/request, avg batch "
            f"{row['server_avg_batch']:.1f}, client {level.client_success} == server "
            f"{level.server_success}: {level.client_success == level.server_success}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="64")
    parser.add_argument("--workers", default="1,2", help="comma list of load-generator process counts")
    parser.add_argument("--protocols", default="grpc,http")
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--max-windows", type=int, default=4)
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "loadtest_capacity.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.server import TritonServer

    runs: list[dict[str, Any]] = []
    results: dict[str, Any] = {
        "benchmark": "load-tester capacity against a python-backend identity model",
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "runs": runs,
    }
    with tempfile.TemporaryDirectory(prefix="attnserve-bench-capacity-") as scratch_name:
        scratch = Path(scratch_name)
        write_identity_model(scratch / "repository")
        with TritonServer(
            scratch / "repository",
            models=[IDENTITY_MODEL],
            endpoints=TritonEndpoints.any_free(),
            work_dir=scratch / "server",
        ) as server:
            for protocol in args.protocols.split(","):
                for workers in (int(w) for w in args.workers.split(",")):
                    runs.extend(capacity_rows(server, protocol, workers, args))
    results["load_average_after"] = os.getloadavg()
    best = max(runs, key=lambda r: r["req_s"]) if runs else None
    results["best"] = best
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if best:
        print(f"best: {best['req_s']:,.0f} req/s ({best['protocol']}, {best['workers']} worker(s)); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
