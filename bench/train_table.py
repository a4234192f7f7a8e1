"""Training-to-accuracy table of the deployable models.

    python -m bench.train_table                      # all six, 5 minutes each, into runs/
    python -m bench.train_table --max-minutes 3 --names vit_digits,cnn_cbam_digits

Trains each model one after the other with `attnserve.models.train.train`, prints test accuracy against
its target, and writes `reports/train_table.json` (and a copy under `reports/bench/` for bench.run_all).
The CPU is shared: the load average before and after each run is recorded, because the same budget buys
fewer epochs on a busy machine, and timings are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from attnserve.defaults import REPORTS_DIR, RUNS_DIR
from bench import BENCH_REPORTS_DIR

TARGETS: dict[str, tuple[str, float]] = {
    "vit_digits": (">=", 0.97),
    "cnn_cbam_digits": (">=", 0.985),
    "vit_shapes": (">=", 0.95),
    "timesformer_motion": (">=", 0.95),
    "temporal_motion": (">=", 0.90),
    "spatial_motion": ("<=", 0.25 + 0.10),  # chance (4 classes) + 10 points: motion needs temporal attention
}


def _meets(accuracy: float, rule: tuple[str, float]) -> bool:
    comparison, bound = rule
    return accuracy >= bound if comparison == ">=" else accuracy <= bound


def train_row(name: str, args: argparse.Namespace) -> dict[str, object]:
    """Train `name` within the budget and print its line; the row records accuracy, target and machine load."""
    from attnserve.models.train import TrainOptions, train

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    metrics = train(
        TrainOptions(
            name,
            max_minutes=args.max_minutes,
            seed=args.seed,
            runs_dir=args.runs_dir,
            progress=False,
            threads=args.threads,
        )
    )
    rule = TARGETS[name]
    row = {
        "name": name,
        "test_accuracy": metrics.test_accuracy,
        "target": f"{rule[0]} {rule[1]:.3f}",
        "meets_target": _meets(metrics.test_accuracy, rule),
        "chance_accuracy": metrics.chance_accuracy,
        "epochs": metrics.epochs,
        "stopped_by": metrics.stopped_by,
        "train_seconds": metrics.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "samples_per_second": metrics.samples_per_second,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }
    print(
        f"{name:<20} acc {row['test_accuracy']:.4f} ({row['target']}: {'ok' if row['meets_target'] else 'MISSED'})"
        f"  {row['epochs']:.1f} ep in {row['train_seconds']:.0f} s, {row['samples_per_second']:.0f} samples/s,"
        f" load {load_before:.1f}->{row['load_average_after']:.1f}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument("--names", default=",".join(TARGETS), help="comma-separated deployable names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "train_table.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while training (1: see models/train.py)")
    args = parser.parse_args(argv)

    names = [name.strip() for name in args.names.split(",") if name.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        parser.error(f"unknown names {unknown}; expected some of {list(TARGETS)}")
    rows = [train_row(name, args) for name in names]
    report = {
        "max_minutes": args.max_minutes,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "note": "shared CPU: see load averages; budgets are wall-clock, so a busy machine buys fewer epochs",
        "rows": rows,
    }
    for path in (args.out, BENCH_REPORTS_DIR / "train_table.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(row["meets_target"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
