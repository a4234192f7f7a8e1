"""`attnserve serve` start-up: seconds from launch to READY with every deployable model, full size.

Exports every deployable at full size with the product CLI (`attnserve export --untrained --no-optimize`:
untrained weights unless `runs/NAME/` exists, with its explain model; then `attnserve pipelines`) into a repository
(reused when it already holds entries), then launches the real CLI `attnserve serve` on free loopback ports, waits for its READY line, and stops it with SIGTERM (as Ctrl-C /
`docker stop` would). Prints and writes `reports/bench/serve_ready.json`: READY seconds, stop seconds, model
count, load average. One run on the shared 2 cores: the figure moves with what else runs (load average kept).

    python -m bench.serve_ready                           # all deployables into reports/bench/serve_repository
    python -m bench.serve_ready --models vit_tiny_patch16_224,timesformer_motion
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import BENCH_REPORTS_DIR

TARGET_READY_S = 60.0


def _export(repository: Path, names: list[str]) -> None:
    """Export `names` at full size into `repository` with their pipeline entries, through the product CLI."""
    cli = [sys.executable, "-m", "attnserve.cli"]
    subprocess.run(
        [*cli, "export", *names, "--repository", str(repository), "--untrained", "--no-optimize"], check=True
    )
    subprocess.run([*cli, "pipelines", "--repository", str(repository)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=BENCH_REPORTS_DIR / "serve_repository")
    parser.add_argument("--models", default="", help="comma-separated deployables (default: all)")
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for READY")
    args = parser.parse_args(argv)

    from attnserve.catalogue import DEPLOYABLE_NAMES
    from attnserve.serving.cli import serve_command

    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(DEPLOYABLE_NAMES)
    if not args.repository.is_dir() or not any(args.repository.iterdir()):
        started = time.perf_counter()
        _export(args.repository, names)
        print(f"exported {len(names)} deployables (full size) in {time.perf_counter() - started:.0f} s", flush=True)

    command = serve_command(args.repository, ready_timeout_s=args.timeout)
    launched = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    ready_s = None
    ready_line = ""
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith("Triton READY"):
            ready_s = time.perf_counter() - launched
            ready_line = line.strip()
            break
    stop_started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    exit_code = process.wait(timeout=120)
    stop_s = time.perf_counter() - stop_started

    result = {
        "models": names,
        "served_entries": ready_line.split(" models: ")[-1].split(", ") if ready_line else [],
        "ready_s": round(ready_s, 2) if ready_s is not None else None,
        "target_ready_s": TARGET_READY_S,
        "stop_s": round(stop_s, 2),
        "exit_code": exit_code,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_ready.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = "within" if ready_s is not None and ready_s <= TARGET_READY_S else "NOT within"
    print(
        f"READY in {result['ready_s']} s with {len(result['served_entries'])} entries ({verdict} the "
        f"{TARGET_READY_S:.0f} s target); stopped in {stop_s:.1f} s (exit {exit_code}); "
        f"load average {result['load_average_1m']} on {result['cpu_count']} cores"
    )
    return 0 if ready_s is not None and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
