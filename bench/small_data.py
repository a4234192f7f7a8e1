"""Training on a user's small class folder (issue 14): does `train --max-minutes M` use its budget?

    python -m bench.small_data                       # 3 classes x 30 images, 1 minute
    python -m bench.small_data --max-minutes 0.5 --per-class 20

Writes a folder of procedural shapes (circle, square, triangle: `--per-class` PNGs each, 48x48, so the
model's 32x32 input is a resize), one corrupt `.png` and one empty class folder (`cross/`), then runs
`attnserve train vit_shapes --data DIR --max-minutes M` as a subprocess and records its exit code, wall time,
held-out accuracy and what it said about the corrupt file and the empty class. JSON goes to
`reports/bench/small_data.json`. The CPU is shared: the load average is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attnserve.models.metrics import TrainingMetrics

CLASSES = ("circle", "square", "triangle")
MODEL = "vit_shapes"


def write_dataset(root: Path, per_class: int, seed: int = 7, clean: bool = False) -> Path:
    """`per_class` PNGs of each class in `root/CLASS/`, a corrupt file in `square/`, an empty `cross/`
    (neither of the last two when `clean`)."""
    from attnserve.models.folders import write_png
    from attnserve.models.synthetic import shapes_arrays

    pixels, labels = shapes_arrays(per_class * 8, seed, size=48)
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for count, sample in enumerate(pixels[labels == index][:per_class]):
            write_png(sample, root / name / f"{count:03d}.png")
    if clean:
        return root
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    (root / "cross").mkdir(exist_ok=True)  # an empty class
    return root


def run_train(data: Path, runs_dir: Path, max_minutes: float) -> dict[str, object]:
    """One `attnserve train` run as a subprocess: exit code, seconds, output and the run's metrics."""
    command = [sys.executable, "-m", "attnserve.cli", "train", MODEL, "--data", str(data)]
    command += ["--max-minutes", str(max_minutes), "--runs-dir", str(runs_dir), "--no-progress"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    metrics = TrainingMetrics.load(runs_dir / MODEL) if result.returncode == 0 else None
    return {
        "returncode": result.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_seconds": metrics.train_seconds if metrics else None,
        "test_accuracy": metrics.test_accuracy if metrics else None,
        "epochs": metrics.epochs if metrics else None,
        "skipped_files": metrics.skipped_files if metrics else None,
        "empty_classes": metrics.empty_classes if metrics else None,
        "output_tail": (result.stdout + result.stderr).strip().splitlines()[-8:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-minutes", type=float, default=1.0, help="training budget")
    parser.add_argument("--per-class", type=int, default=30, help="images per non-empty class")
    parser.add_argument("--clean", action="store_true", help="no corrupt file and no empty class")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/small_data.json"), help="JSON report")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="attnserve-small-data-") as scratch:
        data = write_dataset(Path(scratch) / "data", args.per_class, clean=args.clean)
        load_before = os.getloadavg()[0]
        result = run_train(data, Path(scratch) / "runs", args.max_minutes)
    result.update(
        max_minutes=args.max_minutes, per_class=args.per_class, clean=args.clean, load_average_1min=[load_before]
    )
    result["load_average_1min"].append(os.getloadavg()[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
