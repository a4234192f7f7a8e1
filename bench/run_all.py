"""Run every benchmark in one go and collect their JSON into `reports/bench/summary.json`.

    python -m bench.run_all            # export speed, batching on/off, CPU fast path
    python -m bench.run_all --train    # also the training-to-accuracy table (about 20 minutes)

Each benchmark is its own module with its own `--help`; they run here as separate processes, one after
the other (never in parallel: they measure the same 2 cores), and each prints ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import BENCH_REPORTS_DIR

# (module, what it measures). Order: cheap first, so a partial run still says something.
BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("bench.export_bench", "ONNX Runtime (optimised) vs PyTorch eager, vit_tiny_patch16_224, batch 1 and 16"),
    ("bench.batching", "served throughput with dynamic batching on vs off, same sweep, one server run"),
    ("bench.loadtest_capacity", "load-tester capacity: req/s and client CPU per request against an identity model"),
    ("bench.queue_policy", "sequential latency with and without a bounded Triton queue policy (why it is opt-in)"),
    ("bench.replicas", "the HAProxy edge's cost: p50 at c=1 and throughput at c=16, direct vs through the edge"),
    ("bench.hpa_replay", "the HPA's signal: candidate signals on a recorded load profile, replayed through the HPA"),
    ("bench.serve_ready", "attnserve serve with every deployable at full size: seconds to READY"),
    ("bench.cpu_fastpath", "runtime x precision table and the pick behind the accuracy gate"),
)
TRAIN_BENCHMARK = ("bench.train_table", "training-to-accuracy table of the deployable models")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="also run the training table (long)")
    parser.add_argument("--only", default="", help="comma-separated module names to run (e.g. bench.batching)")
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR, help="folder for summary.json")
    args = parser.parse_args(argv)

    selected = list(BENCHMARKS) + ([TRAIN_BENCHMARK] if args.train else [])
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        selected = [entry for entry in selected if entry[0] in wanted]
    summary: dict[str, dict] = {}
    for module, purpose in selected:
        print(f"\n=== {module}: {purpose}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-m", module], check=False)
        summary[module] = {
            "purpose": purpose,
            "exit_code": completed.returncode,
            "seconds": round(time.perf_counter() - started, 1),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    for json_path in sorted(args.out.glob("*.json")):
        if json_path.name != "summary.json":
            summary.setdefault("results", {})[json_path.stem] = json.loads(json_path.read_text())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [module for module, entry in summary.items() if module != "results" and entry["exit_code"] != 0]
    print(f"\nwrote {args.out / 'summary.json'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
