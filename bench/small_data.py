"""Training on a user's small class folder: does `train --max-minutes M` use its budget?

    python -m bench.small_data                       # 3 classes x 30 images, 1 minute, seed 0
    python -m bench.small_data --seeds 0,1,2         # three training runs, mean accuracy
    python -m bench.small_data --seeds 0,1,2 --augment rotate-colour
    python -m bench.small_data --max-minutes 0.5 --per-class 20
    python -m bench.pretrain && python -m bench.small_data --seeds 0,1,2 --augment rotate-colour \
        --from-hf reports/pretrained/vit_procedural       # from scratch vs fine-tuned, same folder and seeds

Writes a folder of procedural shapes (circle, square, triangle: `--per-class` PNGs each, 48x48, so the
model's 32x32 input is a resize), one corrupt `.png` and one empty class folder (`cross/`), then runs
`attnserve train MODEL --data DIR --max-minutes M --seed S` as a subprocess per seed and records its exit
code, wall time, held-out accuracy and what it said about the corrupt file and the empty class.

The train command's own held-out part of such a folder is small (6 images per class at 30 per class: one
image moves the figure by 5.6 points), so each trained run is also scored on `--eval-per-class` more images
per class from the same generator (another seed, the same PNG round trip and the model's preprocessing):
`eval_accuracy`. JSON goes to `reports/bench/small_data.json`. The CPU is shared: the load average is
recorded beside the figures.

With `--from-hf DIR` each seed also fine-tunes that pretrained checkpoint (`attnserve train small_data_ft --from-hf
DIR --data ...`, same budget, augmentation and seed) and scores it on the same extra images (`from_hf`), so the
from-scratch and fine-tuned figures come from one run.
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
from bench import BENCH_REPORTS_DIR

CLASSES = ("circle", "square", "triangle")
MODEL = "vit_shapes"
TRAIN_DATA_SEED, EVAL_DATA_SEED = 7, 1007
FINE_TUNED = "small_data_ft"
"""The name `--from-hf` runs train under (a new name: the preset's run is left alone)."""


def write_dataset(root: Path, per_class: int, seed: int = TRAIN_DATA_SEED, clean: bool = False) -> Path:
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


def eval_accuracy(run_dir: Path, data: Path) -> float:
    """Accuracy of a trained run on every image of a clean class folder (labels matched by name)."""
    import torch

    from attnserve.models.checkpoint import load_run
    from attnserve.models.folders import class_files, decode_items
    from attnserve.models.train import predict

    if (run_dir / "config.json").is_file():  # a `train --from-hf` folder
        from attnserve.export.hf_import import load_hf_classifier

        model, spec = load_hf_classifier(run_dir)
    else:
        model, spec = load_run(run_dir)
    labels, train_items, test_items = class_files(data, spec.kind)
    items = [(path, spec.io.labels.index(labels[label])) for path, label in train_items + test_items]
    pixels, targets, _ = decode_items(items, spec.kind, spec.io.input_shape, spec.io.preprocessing)
    predicted = predict(model, torch.from_numpy(pixels))
    return float((predicted == torch.from_numpy(targets)).float().mean())


def run_train(
    data: Path,
    runs_dir: Path,
    max_minutes: float,
    model: str = MODEL,
    seed: int = 0,
    augment: str = "shift",
    from_hf: Path | None = None,
) -> dict[str, object]:
    """One `attnserve train` run as a subprocess: exit code, seconds, output and the run's metrics."""
    command = [sys.executable, "-m", "attnserve.cli", "train", model, "--data", str(data), "--seed", str(seed)]
    command += ["--augment", augment] + (["--from-hf", str(from_hf)] if from_hf else [])
    command += ["--max-minutes", str(max_minutes), "--runs-dir", str(runs_dir), "--no-progress"]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    metrics = TrainingMetrics.load(runs_dir / model) if result.returncode == 0 else None
    return {
        "seed": seed,
        "returncode": result.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_seconds": metrics.train_seconds if metrics else None,
        "test_accuracy": metrics.test_accuracy if metrics else None,
        "test_samples": metrics.test_samples if metrics else None,
        "steps": metrics.steps if metrics else None,
        "epochs": metrics.epochs if metrics else None,
        "skipped_files": metrics.skipped_files if metrics else None,
        "empty_classes": metrics.empty_classes if metrics else None,
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "output_tail": (result.stdout + result.stderr).strip().splitlines()[-8:],
    }


def _mean(values: list[object]) -> float | None:
    numbers = [float(value) for value in values if isinstance(value, (int, float))]
    return round(sum(numbers) / len(numbers), 4) if numbers else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-minutes", type=float, default=1.0, help="training budget (default: 1)")
    parser.add_argument("--per-class", type=int, default=30, help="images per non-empty class (default: 30)")
    parser.add_argument("--clean", action="store_true", help="no corrupt file and no empty class")
    parser.add_argument("--model", default=MODEL, help=f"image deployable to train (default: {MODEL})")
    parser.add_argument("--augment", default="shift", help="passed to `attnserve train --augment` (default: shift)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds, one run each (default: 0)")
    parser.add_argument(
        "--eval-per-class", type=int, default=200, help="extra evaluation images per class; 0: none (default: 200)"
    )
    parser.add_argument(
        "--from-hf", type=Path, default=None, metavar="DIR", help="also fine-tune this pretrained checkpoint per seed"
    )
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "small_data.json", help="JSON report")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="attnserve-small-data-") as scratch:
        data = write_dataset(Path(scratch) / "data", args.per_class, clean=args.clean)
        evaluation = Path(scratch) / "eval"
        if args.eval_per_class > 0:
            write_dataset(evaluation, args.eval_per_class, seed=EVAL_DATA_SEED, clean=True)
        for seed in seeds:
            result = run_train(data, Path(scratch) / f"runs-{seed}", args.max_minutes, args.model, seed, args.augment)
            if args.eval_per_class > 0 and result["returncode"] == 0:
                result["eval_accuracy"] = eval_accuracy(Path(scratch) / f"runs-{seed}" / args.model, evaluation)
            if args.from_hf is not None:
                runs_dir = Path(scratch) / f"runs-hf-{seed}"
                tuned = run_train(data, runs_dir, args.max_minutes, FINE_TUNED, seed, args.augment, args.from_hf)
                if args.eval_per_class > 0 and tuned["returncode"] == 0:
                    tuned["eval_accuracy"] = eval_accuracy(runs_dir / FINE_TUNED, evaluation)
                result["from_hf"] = tuned
            runs.append(result)
            print(json.dumps({key: value for key, value in result.items() if key != "output_tail"}), flush=True)
    summary = {
        "model": args.model,
        "augment": args.augment,
        "max_minutes": args.max_minutes,
        "per_class": args.per_class,
        "clean": args.clean,
        "eval_samples": args.eval_per_class * len(CLASSES),
        "mean_test_accuracy": _mean([run["test_accuracy"] for run in runs]),
        "mean_eval_accuracy": _mean([run.get("eval_accuracy") for run in runs]),
        "from_hf": str(args.from_hf) if args.from_hf else None,
        "mean_eval_accuracy_from_hf": _mean([dict(run.get("from_hf") or {}).get("eval_accuracy") for run in runs]),
        "load_average_1min_end": os.getloadavg()[0],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({key: value for key, value in summary.items() if key != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
