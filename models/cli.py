"""`attnserve models` (deployables and architectures, with their training status) and `attnserve train NAME`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnserve.defaults import RUNS_DIR

if TYPE_CHECKING:
    from attnserve.models.metrics import TrainingMetrics


def _models(args: argparse.Namespace) -> int:
    from attnserve.catalogue import DEPLOYABLES, TRAINABLE_NAMES
    from attnserve.models.checkpoint import has_checkpoint, load_metrics
    from attnserve.models.registry import list_models, model_family

    runs_dir = Path(args.runs_dir)
    print(f"Deployable models (runs in {runs_dir}/):")
    print(f"  {'name':<22} {'architecture':<28} {'input':<16} {'status'}")
    for name, entry in DEPLOYABLES.items():
        run_dir = runs_dir / name
        if has_checkpoint(run_dir):
            metrics = load_metrics(run_dir)
            status = f"trained (test accuracy {metrics.test_accuracy:.2%})" if metrics is not None else "trained"
            if metrics is not None and metrics.coco_map is not None:
                status = f"trained (mAP@[.5:.95] {metrics.coco_map:.3f}, mAP@.5 {metrics.coco_map50:.3f})"
        elif name in TRAINABLE_NAMES:
            status = f"not trained (attnserve train {name})"
        else:
            status = "untrained architecture (benchmark model, random weights)"
        shape = "x".join(str(d) for d in entry.io.input_shape)
        print(f"  {name:<22} {entry.arch:<28} {shape:<16} {status}")
    own = _own_runs(runs_dir, set(DEPLOYABLES))
    if own:
        print(f"\nYour models (runs in {runs_dir}/):")
        for line in own:
            print(f"  {line}")
    print("\nArchitectures (attnserve.models.create_model):")
    for arch in list_models():
        print(f"  {arch:<28} {model_family(arch)}")
    return 0


def _own_runs(runs_dir: Path, presets: set[str]) -> list[str]:
    """One line per run folder under a name of its own: `train NAME --arch` runs and `train NAME --from-hf` folders."""
    from attnserve.errors import DataError
    from attnserve.models.checkpoint import has_checkpoint, load_metrics

    lines = []
    for run_dir in sorted(path for path in runs_dir.glob("*") if path.is_dir() and path.name not in presets):
        fine_tuned = (run_dir / "config.json").is_file()
        if not fine_tuned and not has_checkpoint(run_dir):
            continue
        try:
            metrics = load_metrics(run_dir)
        except DataError:
            metrics = None
        status = f"test accuracy {metrics.test_accuracy:.2%}" if metrics is not None else "trained"
        export = f"attnserve export --hf {run_dir}" if fine_tuned else f"attnserve export {run_dir.name}"
        source = "fine-tuned (Hugging Face)" if fine_tuned else (metrics.arch if metrics else "")
        lines.append(f"{run_dir.name:<22} {source:<28} {status}; serve with `{export}`")
    return lines


def _train(args: argparse.Namespace) -> int:
    import re

    from attnserve.errors import UserInputError
    from attnserve.models.train import TrainOptions, train

    if not re.fullmatch(r"[a-z][a-z0-9_]*", args.name):
        raise UserInputError(
            f"NAME must be lowercase letters, digits and _ starting with a letter (it becomes the served model's "
            f"name), got {args.name!r}"
        )
    common = dict(max_minutes=args.max_minutes, epochs=args.epochs, seed=args.seed, runs_dir=args.runs_dir,
                  progress=not args.no_progress, threads=args.threads, strict=args.strict, augment=args.augment)  # fmt: skip
    if args.from_hf is not None:
        metrics = _finetune(args, common)
    else:
        options = TrainOptions(
            args.name, data_dir=args.data, preset=args.arch, image_size=args.image_size, resize=args.resize, **common
        )
        metrics = train(options)
    for line in _data_notes(metrics, args.arch or args.name):
        print(line)
    if metrics.coco_map is not None:  # a detector: COCO mAP on held-out scenes, not an accuracy
        print(
            f"{args.name}: held-out mAP@[.5:.95] {metrics.coco_map:.3f}, mAP@.5 {metrics.coco_map50:.3f} (pycocotools) "
            f"on {metrics.test_samples} scenes; {metrics.steps} steps in {metrics.train_seconds:.0f} s; written to "
            f"{Path(args.runs_dir) / args.name}/"
        )
        return 0
    print(
        f"{args.name}: test accuracy {metrics.test_accuracy:.2%} (chance {metrics.chance_accuracy:.0%}) on "
        f"{metrics.test_samples} held-out samples; {metrics.epochs:.1f} epochs in {metrics.train_seconds:.0f} s "
        f"({metrics.samples_per_second:.0f} samples/s); written to {Path(args.runs_dir) / args.name}/"
    )
    return 0


def _finetune(args: argparse.Namespace, common: dict[str, Any]) -> TrainingMetrics:
    from attnserve.errors import UserInputError
    from attnserve.models.hf_finetune import finetune_hf

    if args.data is None:
        raise UserInputError("--from-hf fine-tunes on your class folders: give --data DIR")
    given = [option for option, value in (("--arch", args.arch), ("--image-size", args.image_size),
                                          ("--resize", args.resize)) if value is not None]  # fmt: skip
    if given:
        raise UserInputError(
            f"{', '.join(given)} cannot go with --from-hf: the checkpoint's architecture and its processor's "
            "preprocessing_config.json fix the model and how images are fitted"
        )
    return finetune_hf(args.name, args.from_hf, args.data, **common)


def _data_notes(metrics: TrainingMetrics, preset: str = "") -> list[str]:
    """What the run left out or picked, in words (class-folder data)."""
    notes = []
    skipped = metrics.skipped_files
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable file(s) (--strict aborts instead):")
        notes += [f"  {item}" for item in skipped[:10]] + (
            [f"  ... and {len(skipped) - 10} more"] if len(skipped) > 10 else []
        )
    if metrics.empty_classes:
        notes.append(f"left out empty class folder(s): {', '.join(metrics.empty_classes)}")
    if metrics.tiny_classes:
        notes.append(f"warning: too few training files to learn class(es) reliably: {', '.join(metrics.tiny_classes)}")
    if metrics.validation_accuracy is not None:
        notes.append(
            f"kept the weights of step {metrics.best_step} of {metrics.steps} (validation accuracy "
            f"{metrics.validation_accuracy:.2%} on {metrics.validation_samples} held-out training files)"
        )
    return notes + _augment_hint(metrics, preset or metrics.name)


def _augment_hint(metrics: TrainingMetrics, preset: str) -> list[str]:
    """A weak image model trained with the default shift only: say which option helped such folders."""
    from attnserve.catalogue import DEPLOYABLES

    weak = metrics.test_accuracy < min(0.9, 2 * metrics.chance_accuracy)
    kind = DEPLOYABLES[preset].kind if preset in DEPLOYABLES else "image"  # --from-hf: image classifiers
    if not weak or metrics.augment != "shift" or kind != "image":
        return []
    return [
        "hint: if your classes do not depend on orientation, mirroring or colour (shapes, cells, textures), "
        "--augment rotate-colour trains on rotated, mirrored and recoloured copies (3 classes x 30 shape images, "
        "1 minute: 39% -> 76% on 600 more images)"
    ]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `models` and `train` subcommands."""

    models_parser = subparsers.add_parser(
        "models",
        help="list deployable models and architectures",
        description="List the deployable models "
        "(with their status: trained in the runs folder or not) and the registered architectures.",
    )
    models_parser.add_argument(
        "--runs-dir", type=Path, default=RUNS_DIR, help="folder of training runs (default: runs)"
    )
    models_parser.set_defaults(func=_models)

    _register_train(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    from attnserve.catalogue import TRAINABLE_NAMES

    train_parser = subparsers.add_parser(
        "train",
        help="train a model on CPU (a preset, your own model from a preset, or fine-tune a pretrained checkpoint)",
        description="Train a model (AdamW, warm-up + cosine schedule), evaluate it on held-out data and "
        "write RUNS_DIR/NAME/ (model.safetensors, spec.json, metrics.json). The schedule fits itself into "
        "--max-minutes. With --data DIR (one folder per class) the run lasts --max-minutes (unless --epochs), "
        "keeps the best weights on a validation part of the training files, and names skipped files and empty "
        "classes. NAME is a preset, or any new name with --arch PRESET or --from-hf DIR: "
        "`--from-hf DIR --data DATA` fine-tunes a local Hugging Face *ForImageClassification save_pretrained "
        "folder (new head for your classes, its processor's preprocessing) and writes a folder that "
        "`attnserve export --hf RUNS_DIR/NAME` serves as NAME.",
    )
    train_parser.add_argument(
        "name", metavar="NAME", help=f"a preset ({', '.join(TRAINABLE_NAMES)}) or a new name with --arch / --from-hf"
    )
    _add_own_model_options(train_parser)
    train_parser.add_argument("--max-minutes", type=float, default=5.0, help="time budget of the training loop")
    train_parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="planned epochs (default: the model's recipe; with --data, sized from the data and --max-minutes)",
    )
    train_parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="train on your own class folders (images, or videos for *_motion) instead of the built-in dataset",
    )
    train_parser.add_argument("--seed", type=int, default=0, help="seed of weights, shuffling and procedural data")
    train_parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="parent folder of the run folder")
    train_parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is fastest for these small models on shared cores (measured 10x over 2 under load)",
    )
    train_parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (there is none anyway when stderr is not a terminal)",
    )
    train_parser.add_argument(
        "--strict",
        action="store_true",
        help="with --data: abort on an unreadable file or an empty class folder instead of leaving it out",
    )
    train_parser.add_argument(
        "--augment",
        choices=("shift", "rotate-colour"),
        default="shift",
        help="training-only image augmentation (default: shift, up to 2 pixels on class folders); rotate-colour "
        "also rotates, mirrors, zooms, permutes and inverts colours: for classes that do not depend on orientation "
        "or colour (shapes, cells, textures); it helps small folders most",
    )
    train_parser.set_defaults(func=_train)


def _add_own_model_options(parser: argparse.ArgumentParser) -> None:
    """`train`'s options for a model of one's own: a new name from a preset, its input size and fit, fine-tuning."""
    from attnserve.catalogue import TRAINABLE_NAMES
    from attnserve.models.constants import RESIZE_MODES

    parser.add_argument(
        "--arch",
        choices=TRAINABLE_NAMES,
        metavar="PRESET",
        default=None,
        help=f"train NAME as a new model from this preset's architecture and recipe ({', '.join(TRAINABLE_NAMES)}); "
        "the preset itself is left as it is",
    )
    parser.add_argument(
        "--from-hf",
        type=Path,
        default=None,
        metavar="DIR",
        help="fine-tune this local save_pretrained *ForImageClassification folder on --data (needs transformers)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PIXELS",
        help="with --data: square input side in pixels (default: the preset's), recorded in spec.json",
    )
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=None,
        help="with --data: how images are fitted to the input: squash (whole image, aspect not kept; the "
        "default), letterbox (whole image, padded) or crop (aspect kept, centre cropped); recorded in spec.json "
        "and applied the same way by the client and the served pipeline",
    )
